"""The repository: ``.veml/`` on disk, its stores opened from the URLs in ``config.toml``.

Faces (CLI, server) and users' scripts go through :class:`Repository`; it is the one place that
knows both the configuration and the version modules, so everything below stays independent of
where the data lives.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from veml.entities import DataVersion, InferenceVersion, ModelVersion, Node, Run, TrainingVersion
from veml.errors import InvalidInput, RepositoryExists, RepositoryNotFound, StorageError
from veml.store import open_artifact_store, open_embedding_store, open_graph_store, open_sample_store
from veml.compute import RepoLocation, open_executor
from veml.versions import integrity
from veml.versions.context import Stores
from veml.lifecycle.drift import Drift
from veml.lifecycle.monitor import Monitor
from veml.lifecycle.rebuild import Rebuild
from veml.lifecycle.similarity import Similarity
from veml.lifecycle.transfer import Transfer
from veml.versions.aliases import Aliases
from veml.versions.coresets import CoreSets
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions
from veml.versions.lifecycles import Lifecycles
from veml.versions.lineage import LineageAPI
from veml.versions.model import ModelVersions
from veml.versions.registry import Registry
from veml.versions.runs import ActiveRun, Runs
from veml.versions.training import TrainingVersions

DIRNAME = ".veml"
CONFIG = "config.toml"
DEFAULTS = {"metadata_url": "sqlite:///meta.db", "storage_url": "data", "artifacts_url": "artifacts",
            "embeddings_url": "embeddings"}


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.dir = self.root / DIRNAME
        cfg_path = self.dir / CONFIG
        try:
            self.config: dict[str, Any] = {**DEFAULTS, **tomllib.loads(cfg_path.read_text())}
        except FileNotFoundError:
            raise RepositoryNotFound(f"no VeML repository at {self.root} (run 'veml init')") from None
        except tomllib.TOMLDecodeError as exc:
            raise StorageError(f"{cfg_path}: malformed config: {exc}") from None
        self.stores = Stores(
            graph=open_graph_store(self.config["metadata_url"], self.dir),
            samples=open_sample_store(self.config["storage_url"], self.dir, s3=self.config.get("s3")),
            artifacts=open_artifact_store(self.config["artifacts_url"], self.dir, s3=self.config.get("s3")),
            embeddings=open_embedding_store(self.config["embeddings_url"], self.dir, s3=self.config.get("s3")),
            location=RepoLocation.of(self.config, self.dir), compute=open_executor(self.config),
        )
        self.data = DataVersions(self.stores)
        self.models = ModelVersions(self.stores)
        self.training = TrainingVersions(self.stores, self.data, self.models)
        self.registry = Registry(self.stores, self.data, self.models, self.training)
        self.runs = Runs(self.stores, self.data, self.models, self.training, self.registry)
        self.inference = InferenceVersions(self.stores, self.data, self.models, self.training)
        self.lifecycles = Lifecycles(self.stores, self.training)
        self.lineage = LineageAPI(self.stores)
        self.aliases = Aliases(self.stores)
        self.coresets = CoreSets(self.stores, self.data, self.training)
        self.similarity = Similarity(self.stores, self.data, self.coresets, self.lifecycles, self.inference)
        self.drift = Drift(self.stores, self.data, self.coresets, self.inference, self.training)
        self.rebuild = Rebuild(self.stores, self.data, self.training, self.inference, self.coresets)
        self.monitor = Monitor(self.data, self.inference, self.drift, self.rebuild)
        self.transfer = Transfer(self.stores, self.data, self.training, self.inference, self.lifecycles, self.similarity)

    def get(self, ref: str | int):
        """Any version of any kind, by id, name, tag or alias."""
        return self.stores.graph.resolve(ref)

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
        g = self.stores.graph
        return g.list(kinds=kinds, limit=limit, offset=offset), g.count(kinds)

    def verify(self, deep: bool = False) -> integrity.VerifyReport:
        return integrity.verify(self.stores, deep=deep)

    def gc(self, grace_s: float = integrity.DEFAULT_GRACE_S) -> integrity.GcReport:
        return integrity.gc(self.stores, grace_s)

    def close(self) -> None:
        self.stores.graph.close()

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
