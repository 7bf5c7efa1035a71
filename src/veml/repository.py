"""The repository: ``.veml/`` on disk, its stores opened from the URLs in ``config.toml``.

Faces (CLI, server) and users' scripts go through :class:`Repository`; it is the one place that
knows both the configuration and the version modules, so everything below stays independent of
where the data lives.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import shutil
import threading
import tomllib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veml.entities import DataVersion, InferenceVersion, ModelVersion, Node, Run, TrainingVersion
from veml.errors import InvalidInput, RepositoryExists, RepositoryNotFound, StorageError
from veml.compute.target import compute_target
from veml.store import check_store_urls, open_artifact_store, open_embedding_store, open_graph_reader, open_graph_store
from veml.store import open_sample_store
from veml.versions.run_status import reap_quietly

if TYPE_CHECKING:
    from veml.interop.mlflow_bridge import MlflowBridge
    from veml.lifecycle.drift import Drift
    from veml.lifecycle.monitor import Monitor
    from veml.lifecycle.rebuild import Rebuild
    from veml.lifecycle.similarity import Similarity
    from veml.lifecycle.transfer import Transfer
    from veml.store import GraphReader, GraphStore
    from veml.versions.aliases import Aliases
    from veml.versions.context import Stores
    from veml.versions.coresets import CoreSets
    from veml.versions.data import DataVersions
    from veml.versions.inference import InferenceVersions
    from veml.versions.integrity import GcReport, VerifyReport
    from veml.versions.lifecycles import Lifecycles
    from veml.versions.lineage import LineageAPI
    from veml.versions.model import ModelVersions
    from veml.versions.registry import Registry
    from veml.versions.reports import Reports
    from veml.versions.runs import ActiveRun, Runs
    from veml.versions.training import TrainingVersions

DIRNAME = ".veml"
CONFIG = "config.toml"
DEFAULTS = {"metadata_url": "sqlite:///meta.db", "storage_url": "data", "artifacts_url": "artifacts",
            "embeddings_url": "embeddings"}


class _on_first_use(cached_property):
    """A :func:`functools.cached_property` built under the repository's lock: server threads that
    touch ``repo.data`` at once share one instance."""

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        with instance._lock:
            return super().__get__(instance, owner)


def _api(target: str, *needs: str) -> _on_first_use:
    """A version API ``module:Class`` built on first use as ``Class(*(repo.<need> for need in needs))``."""
    module, _, cls = target.partition(":")

    def build(repo: "Repository") -> Any:
        return getattr(importlib.import_module(module), cls)(*(getattr(repo, n) for n in needs))

    prop = _on_first_use(build)
    prop.__doc__ = f"The :class:`{target.replace(':', '.')}` API (built on first use)."
    return prop


class Repository:
    """The metadata database opens with the repository (a missing or outdated one fails here); the
    other stores and each version API open on first use, so a command pays only for what it touches
    (``veml data list`` never imports the sample store's Arrow/Lance stack, nor SQLAlchemy on SQLite).

    Opening also records as failed the runs of this host whose process died while they ran
    (:func:`veml.versions.run_status.reap_dead_runs`): two indexed queries when nothing is running."""

    def __init__(self, root: Path) -> None:
        self._lock = threading.RLock()
        self.root = Path(root).resolve()
        self.dir = self.root / DIRNAME
        cfg_path = self.dir / CONFIG
        try:
            self.config: dict[str, Any] = {**DEFAULTS, **tomllib.loads(cfg_path.read_text())}
        except FileNotFoundError:
            raise RepositoryNotFound(f"no VeML repository at {self.root} (run 'veml init')") from None
        except tomllib.TOMLDecodeError as exc:
            raise StorageError(f"{cfg_path}: malformed config: {exc}") from None
        check_store_urls(self.config, self.dir)
        compute_target(self.config)  # a bad compute_url / $VEML_COMPUTE fails here, before any command runs
        # SQLite at this schema: read without SQLAlchemy, the full store opens on the first write or lookup
        self._reader: GraphReader | None = open_graph_reader(self.config["metadata_url"], self.dir)
        self._store: GraphStore | None = None
        if self._reader is None:
            self._store = open_graph_store(self.config["metadata_url"], self.dir)
        if not self._listing.read_only:
            reap_quietly(self._listing, lambda: self._graph)

    @property
    def _graph(self) -> GraphStore:
        """The metadata store (opened now if only its reader was)."""
        with self._lock:
            if self._store is None:
                self._store = open_graph_store(self.config["metadata_url"], self.dir)
            return self._store

    @property
    def _listing(self) -> GraphReader:
        return self._reader if self._reader is not None else self._graph

    @_on_first_use
    def stores(self) -> Stores:
        from veml.compute import RepoLocation, open_executor
        from veml.versions.context import Stores

        s3 = self.config.get("s3")
        return Stores(
            graph=self._graph,
            samples=open_sample_store(self.config["storage_url"], self.dir, s3=s3),
            artifacts=open_artifact_store(self.config["artifacts_url"], self.dir, s3=s3),
            embeddings=open_embedding_store(self.config["embeddings_url"], self.dir, s3=s3),
            location=RepoLocation.of(self.config, self.dir), compute=open_executor(self.config),
        )

    # Each version API is built on first use from its module and the attributes it needs.
    data: DataVersions = _api("veml.versions.data:DataVersions", "stores")
    models: ModelVersions = _api("veml.versions.model:ModelVersions", "stores")
    training: TrainingVersions = _api("veml.versions.training:TrainingVersions", "stores", "data", "models")
    registry: Registry = _api("veml.versions.registry:Registry", "stores", "data", "models", "training")
    runs: Runs = _api("veml.versions.runs:Runs", "stores", "data", "models", "training", "registry")
    inference: InferenceVersions = _api("veml.versions.inference:InferenceVersions", "stores", "data", "models", "training")
    lifecycles: Lifecycles = _api("veml.versions.lifecycles:Lifecycles", "stores", "training")
    lineage: LineageAPI = _api("veml.versions.lineage:LineageAPI", "stores")
    aliases: Aliases = _api("veml.versions.aliases:Aliases", "stores")
    coresets: CoreSets = _api("veml.versions.coresets:CoreSets", "stores", "data", "training")
    reports: Reports = _api("veml.versions.reports:Reports", "stores")
    similarity: Similarity = _api("veml.lifecycle.similarity:Similarity", "stores", "data", "coresets", "lifecycles", "inference",
                                  "training", "reports")
    drift: Drift = _api("veml.lifecycle.drift:Drift", "stores", "data", "coresets", "inference", "training", "reports")
    rebuild: Rebuild = _api("veml.lifecycle.rebuild:Rebuild", "stores", "data", "training", "inference", "coresets")
    monitor: Monitor = _api("veml.lifecycle.monitor:Monitor", "data", "inference", "drift", "rebuild")
    transfer: Transfer = _api("veml.lifecycle.transfer:Transfer", "stores", "data", "training", "inference", "lifecycles",
                              "similarity")

    @_on_first_use
    def mlflow(self) -> "MlflowBridge":
        """MLflow interop (``veml import mlflow`` / ``veml export mlflow``); mlflow itself loads only when they run."""
        from veml.interop.mlflow_bridge import MlflowBridge, repository_identity

        return MlflowBridge(self.data, self.models, self.training, self.registry, self.runs, self.aliases,
                            self.inference, self.lineage, repository_identity(str(self.root), str(self.config["metadata_url"])))

    def get(self, ref: str | int):
        """Any version of any kind, by id, name, tag or alias."""
        return self._graph.resolve(ref)

    def version(self, ref: str | int) -> DataVersion | ModelVersion | TrainingVersion | InferenceVersion | Node:
        """Any version by id, name, tag or alias, as the typed entity of its kind (a Node for the other kinds)."""
        node = self.get(ref)
        if node.kind == "TrainingVersion":
            return TrainingVersion.from_description(self.training.describe(self.training.get(node.id)))
        typed = {"DataVersion": DataVersion, "ModelVersion": ModelVersion, "InferenceVersion": InferenceVersion}.get(node.kind)
        return typed.from_node(node) if typed is not None else node

    def start_run(self, name: str | None = None, data: str | int | None = None, model: str | int | None = None,
                  params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                  resume: str | int | None = None, system_metrics_s: float | None = None) -> ActiveRun:
        """Log training that runs outside VeML (README: "Python SDK"): a training version linked to ``data``
        and ``model`` when given; ``resume`` continues the run of that name from this process."""
        return self.runs.start(name=name, data=data, model=model, params=params, tags=tags, resume=resume,
                               system_metrics_s=system_metrics_s)

    def get_run(self, ref: str | int) -> Run:
        """A run logged with the SDK, as recorded now."""
        return self.runs.get(ref)

    def versions(self, kinds: list[str] | None = None, limit: int | None = None, offset: int = 0):
        """One page of versions of these kinds (oldest first) and how many there are in all."""
        g = self._listing
        return g.list(kinds=kinds, limit=limit, offset=offset), g.count(kinds)

    def data_versions(self, role: str | None = None) -> list[Node]:
        """As ``repo.data.list(role)``, from the metadata database alone (no sample store is opened)."""
        from veml.versions.data_listing import list_data_versions

        return list_data_versions(self._listing, role)

    def verify(self, deep: bool = False) -> VerifyReport:
        from veml.versions import integrity

        return integrity.verify(self.stores, deep=deep)

    def gc(self, grace_s: float | None = None) -> GcReport:
        """``grace_s`` defaults to :data:`veml.versions.integrity.DEFAULT_GRACE_S`."""
        from veml.versions import integrity

        return integrity.gc(self.stores, integrity.DEFAULT_GRACE_S if grace_s is None else grace_s)

    def close(self) -> None:
        for opened in (self._reader, self._store):
            if opened is not None:
                opened.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Team defaults for ``veml init``: export these once (in a shell profile, a CI job) and every new
# repository lands on the team's servers.  ``{repo}`` becomes a name unique to the new repository
# (its directory name plus random hex), so one PostgreSQL database and one bucket hold many.
ENV_DEFAULTS = {"metadata_url": "VEML_METADATA_URL", "storage_url": "VEML_STORAGE_URL",
                "artifacts_url": "VEML_ARTIFACTS_URL", "embeddings_url": "VEML_EMBEDDINGS_URL"}


def _repo_slug(root: Path) -> str:
    """A name for ``{repo}``: valid as a PostgreSQL schema and as an S3 key part."""
    base = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_")[:40] or "repo"
    if base[0].isdigit():
        base = "r" + base
    return f"{base}_{secrets.token_hex(4)}"


def init(path: str | Path = ".", metadata_url: str | None = None, storage_url: str | None = None,
         artifacts_url: str | None = None, embeddings_url: str | None = None) -> Repository:
    """A new repository at ``path``.  A URL not given comes from ``$VEML_METADATA_URL``,
    ``$VEML_STORAGE_URL``, ``$VEML_ARTIFACTS_URL``, ``$VEML_EMBEDDINGS_URL``, else the embedded default
    (SQLite and folders inside ``.veml/``)."""
    root = Path(path).resolve()
    vdir = root / DIRNAME
    if (vdir / CONFIG).exists():
        raise RepositoryExists(f"{root} already holds a VeML repository")
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    config = dict(DEFAULTS)
    slug = _repo_slug(root)
    given = {"metadata_url": metadata_url, "storage_url": storage_url, "artifacts_url": artifacts_url,
             "embeddings_url": embeddings_url}
    for key, value in given.items():
        value = value or os.environ.get(ENV_DEFAULTS[key]) or None
        if value:
            config[key] = value.replace("{repo}", slug)
    created_dir = not vdir.exists()
    vdir.mkdir(parents=True, exist_ok=True)
    # Create the stores first and write config.toml last: a repository exists once its config does.
    try:
        open_graph_store(config["metadata_url"], vdir).close()
        open_sample_store(config["storage_url"], vdir).create()
        open_artifact_store(config["artifacts_url"], vdir).exists("0" * 64)  # reachable? (a missing bucket fails here)
    except BaseException:
        if created_dir:  # nothing half-made is left behind (an unreachable server, a missing bucket)
            shutil.rmtree(vdir, ignore_errors=True)
        raise
    import tomli_w

    tmp = vdir / (CONFIG + ".tmp")
    tmp.write_text(tomli_w.dumps(config))
    os.replace(tmp, vdir / CONFIG)
    return Repository(root)


def upgrade(path: str | Path | None = None) -> dict[str, Any]:
    """Migrate the repository's metadata database to this VeML's schema (``veml upgrade``).

    Works on a repository that :class:`Repository` refuses to open because its schema is older;
    idempotent, so running it on an up-to-date repository changes nothing."""
    root = find_root(path)
    config = {**DEFAULTS, **tomllib.loads((root / DIRNAME / CONFIG).read_text())}
    graph = open_graph_store(config["metadata_url"], root / DIRNAME, check_schema=False)
    try:
        before, after = graph.upgrade()
    finally:
        graph.close()
    return {"path": str(root), "from": before, "to": after, "upgraded": before != after}


def find_root(start: str | Path | None = None) -> Path:
    """The nearest directory upward (from ``start`` or the working directory) holding ``.veml/``;
    failing that, ``$VEML_REPO`` (DESIGN.md section 8: "the nearest .veml/ upward, or $VEML_REPO")."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / DIRNAME / CONFIG).exists():
            return candidate
    env = os.environ.get("VEML_REPO")
    if start is None and env:
        if not (Path(env) / DIRNAME / CONFIG).exists():
            raise RepositoryNotFound(f"$VEML_REPO={env} holds no VeML repository")
        return Path(env).resolve()
    raise RepositoryNotFound(f"no VeML repository at {here} or above it (run 'veml init')")


def open(path: str | Path | None = None) -> Repository:  # noqa: A001 - mirrors veml.open in DESIGN.md
    return Repository(find_root(path))


def start_run(name: str | None = None, data: str | int | None = None, model: str | int | None = None,
              params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None, resume: str | int | None = None,
              system_metrics_s: float | None = None, repo: str | Path | None = None) -> ActiveRun:
    """``veml.start_run(...)``: :meth:`Repository.start_run` on the repository found as the CLI finds it
    (``repo``, else the nearest ``.veml/`` upward from the working directory, else ``$VEML_REPO``); the
    repository is closed when the run ends."""
    opened = open(repo)
    try:
        return opened.runs.start(name=name, data=data, model=model, params=params, tags=tags, resume=resume,
                                 system_metrics_s=system_metrics_s, on_end=opened.close)
    except BaseException:
        opened.close()
        raise
