"""``veml import mlflow``: an MLflow tracking store's runs, registered models and aliases into the graph.

What each MLflow thing becomes:

- a run (finished, failed or killed) becomes a training version holding its params, its metrics with
  every step of their history (the run's log, as ``veml train log`` shows it), its final metrics, status
  and start/end times, and its artifact files, copied into VeML's artifact store (``"artifacts"``:
  path -> sha256).  It is linked to a data version when the run names one (a tag ``veml.data``, or a
  logged dataset input whose name is a data version's), and to a model version by a tag
  ``veml.model``; otherwise it is recorded without.  It has no checkpoint: what the run logged is
  kept, not a model VeML can run.  A run still going is left for a later import;
- a registered model version becomes a registered training version (``veml model register`` on the
  first file of its artifacts that VeML reads: skops scikit-learn, torch weights, TorchScript, ONNX),
  derived from its run's training version (``FINETUNE_FROM``) when that run was imported;
- a model alias becomes the VeML alias ``MODEL@ALIAS`` on that version, moved when MLflow moved it.

The MLflow experiment is not a node: each training version records it under ``"origin"`` with the
store (its label: no password), run id, run name, user, tags and datasets.  The origin is also what
makes an import idempotent: a run whose id a training version already records, a model version
already registered from the same store, and an alias already pointing where MLflow's does are
counted as ``skipped``; so are runs that ``veml export mlflow`` wrote from this repository.
Things that cannot be brought (a model version with no file VeML reads, an artifact over the size
cap, a run still going) are listed in ``"warnings"`` and the rest is imported.
"""

from __future__ import annotations

import math
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from veml.adapters import imports
from veml.entities import RESERVED_PREFIXES, Node, iso
from veml.errors import InvalidInput, NotFound, VemlError
from veml.formats.paths import ReadPolicy, read_regular
from veml.interop import mlflow_store
from veml.interop.mlflow_store import PAGE, TrackingStore, pages
from veml.versions.aliases import Aliases
from veml.versions.data import DataVersions
from veml.versions.model import ModelVersions
from veml.versions.registry import Registry
from veml.versions.runs import EndedRun, Runs
from veml.versions.training import TrainingVersions

SYSTEM = "mlflow"
FINISHED = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed"}
TEST_CONTEXTS = ("eval", "evaluation", "test", "testing", "validation")
NOT_MODEL_FILES = {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt", "input_example.json",
                   "serving_input_example.json", "registered_model_meta"}


@dataclass(frozen=True)
class Brought:
    """One version an import made (or an alias it set)."""

    kind: str  # run | model | alias
    id: int
    name: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "source": self.source}


@dataclass(frozen=True)
class ImportReport:
    """What ``veml import mlflow`` brought: the counts of README's "Coming from MLflow" and each version."""

    tracking_uri: str
    experiments: int
    runs: int
    metrics: int
    artifacts: int
    models: int
    aliases: int
    skipped: int
    brought: tuple[Brought, ...]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiments": self.experiments, "runs": self.runs,
                "metrics": self.metrics, "artifacts": self.artifacts, "models": self.models, "aliases": self.aliases,
                "skipped": self.skipped, "versions": [b.to_json() for b in self.brought], "warnings": list(self.warnings)}


@dataclass
class _Tally:
    experiments: set[str] = field(default_factory=set)
    metrics: int = 0
    artifacts: int = 0
    skipped: int = 0
    brought: list[Brought] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self, label: str) -> ImportReport:
        count = {k: sum(1 for b in self.brought if b.kind == k) for k in ("run", "model", "alias")}
        return ImportReport(label, len(self.experiments), count["run"], self.metrics, self.artifacts, count["model"],
                            count["alias"], self.skipped, tuple(self.brought), tuple(self.warnings))


class MlflowImport:
    """Writes through the version APIs only: runs as :meth:`Runs.record_ended` records them, models as
    ``veml model register`` does, aliases as ``veml alias set``."""

    def __init__(self, runs: Runs, data: DataVersions, models: ModelVersions, training: TrainingVersions,
                 registry: Registry, aliases: Aliases, identity: str) -> None:
        self._runs, self._data, self._models, self._training = runs, data, models, training
        self._registry, self._aliases = registry, aliases
        self._identity = identity  # this repository, as export tags the runs it writes

    def run(self, uri: str, experiment: str | None = None) -> ImportReport:
        store = mlflow_store.parse(uri)
        mlflow_store.check(store, write=False)
        tally = _Tally()
        runs, models, unfinished = self._known(store.label)
        with mlflow_store.session(store) as client, tempfile.TemporaryDirectory(prefix="veml-mlflow-") as tmp:
            selected: set[str] = set()
            for exp in self._experiments(client, store, experiment):
                for run in pages(lambda t, e=exp.experiment_id: client.search_runs(
                        [e], max_results=PAGE, order_by=["attributes.start_time ASC"], page_token=t)):
                    selected.add(run.info.run_id)
                    known = runs.get(run.info.run_id)
                    if known is not None and known.id in unfinished:
                        self._finish(client, known, run, tally)  # an import killed between the node and its event
                        continue
                    if known is not None or run.data.tags.get("veml.repository") == self._identity:
                        tally.skipped += 1
                        continue
                    node = self._run(client, store, exp, run, Path(tmp), tally)
                    if node is not None:
                        runs[run.info.run_id] = node
                        tally.experiments.add(exp.experiment_id)
            for mv in pages(lambda t: client.search_model_versions(max_results=PAGE, page_token=t)):
                if experiment is not None and mv.run_id not in selected:
                    continue
                key = (mv.name, str(mv.version))
                if key in models:
                    tally.skipped += 1
                    continue
                node = self._model_version(client, store, mv, runs.get(mv.run_id), Path(tmp), tally)
                if node is not None:
                    models[key] = node
            for rm in pages(lambda t: client.search_registered_models(max_results=PAGE, page_token=t)):
                for alias, version in sorted((rm.aliases or {}).items()):
                    self._alias(rm.name, alias, str(version), models, tally, filtered=experiment is not None)
        return tally.report(store.label)

    # --- what is already here ---------------------------------------------------------------------
    def _known(self, label: str) -> tuple[dict[str, Node], dict[tuple[str, str], Node], set[int]]:
        """(run id -> its training version, (model, version) -> its registered version) already imported,
        and the ids of the runs whose import was cut short before their end was recorded.

        Runs are matched by id alone (MLflow's run ids are unique, and survive a migration from a file
        store to a database); model versions by store, name and number."""
        runs: dict[str, Node] = {}
        models: dict[tuple[str, str], Node] = {}
        unfinished: set[int] = set()
        for node, ended in self._runs.recorded_from(SYSTEM):
            origin = node.props["origin"]
            if "model" in origin:
                if origin.get("tracking_uri") == label:
                    models[(str(origin["model"]), str(origin["version"]))] = node
            elif origin.get("run_id"):
                runs[str(origin["run_id"])] = node
                if not ended:
                    unfinished.add(node.id)
        return runs, models, unfinished

    @staticmethod
    def _experiments(client: Any, store: TrackingStore, name: str | None) -> list[Any]:
        if name is None:
            return list(pages(lambda t: client.search_experiments(max_results=PAGE, page_token=t)))
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            known = sorted(e.name for e in pages(lambda t: client.search_experiments(max_results=PAGE, page_token=t)))
            raise NotFound(f"no MLflow experiment {name!r} at {store.label} (it has: {', '.join(map(repr, known)) or 'none'})")
        return [exp]

    # --- runs ---------------------------------------------------------------------------------------
    def _run(self, client: Any, store: TrackingStore, exp: Any, run: Any, tmp: Path, tally: _Tally) -> Node | None:
        info, data = run.info, run.data
        label = f"run {info.run_id} ({info.run_name or 'unnamed'}) of experiment {exp.name!r}"
        status = FINISHED.get(info.status)
        if status is None:
            tally.warnings.append(f"{label} is {info.status}: not imported yet; import again once it has ended")
            return None
        artifacts = self._run_artifacts(client, info.run_id, tmp / info.run_id, label, tally)
        links = self._links(run)
        datasets = [{"name": d.dataset.name, "digest": d.dataset.digest, "context": _context(d)}
                    for d in (run.inputs.dataset_inputs if run.inputs else [])]
        origin = {"system": SYSTEM, "tracking_uri": store.label, "experiment_id": exp.experiment_id,
                  "experiment": exp.name, "run_id": info.run_id, "run_name": info.run_name, "status": info.status,
                  "user": info.user_id, "start_time": _iso_ms(info.start_time), "end_time": _iso_ms(info.end_time),
                  "tags": {k: v for k, v in sorted(data.tags.items())}, "datasets": datasets}
        name = self._runs.unused_name(_name(f"mlflow-{exp.name}-{info.run_name or info.run_id[:12]}"))
        node = self._finish(client, None, run, tally, name=name, origin=origin, artifacts=artifacts, **links)
        tally.artifacts += len(artifacts)
        tally.brought.append(Brought("run", node.id, node.name, label))
        return node

    def _finish(self, client: Any, node: Node | None, run: Any, tally: _Tally, name: str = "",
                origin: Mapping[str, Any] | None = None, artifacts: Mapping[str, str] | None = None,
                **links: Node | None) -> Node:
        """Record the run whole (``node`` None), or finish a node an import killed earlier left without its end:
        its metric history (written only if none of it was), then its end."""
        info, data = run.info, run.data
        history = []
        for key in sorted(data.metrics):
            for m in client.get_metric_history(info.run_id, key):
                if m.value is not None and math.isfinite(float(m.value)):
                    history.append((int(m.step or 0), key, float(m.value), (m.timestamp or 0) / 1000))
        metrics = {k: float(v) for k, v in sorted(data.metrics.items()) if v is not None and math.isfinite(float(v))}
        ended = EndedRun(
            name=name, status=FINISHED[info.status], origin=origin or {}, params=dict(sorted(data.params.items())),
            artifacts=artifacts or {}, history=tuple(history), metrics=metrics,
            ended_at=(info.end_time or info.start_time or 0) / 1000,
            duration_s=(info.end_time - info.start_time) / 1000 if info.start_time and info.end_time else None,
            error=f"the MLflow run ended {info.status}" if FINISHED[info.status] == "failed" else None, **links)
        node, written = self._runs.record_ended(ended, into=node)
        tally.metrics += written
        return node

    def _run_artifacts(self, client: Any, run_id: str, dest: Path, label: str, tally: _Tally) -> dict[str, str]:
        """The run's artifact files, copied into the artifact store: {path inside the run: sha256}."""
        if not client.list_artifacts(run_id):
            return {}
        dest.mkdir(parents=True)
        root = Path(client.download_artifacts(run_id, "", str(dest)))
        return self._store_files(root, label, tally)

    def _store_files(self, root: Path, label: str, tally: _Tally) -> dict[str, str]:
        policy = ReadPolicy.from_options()
        out: dict[str, str] = {}
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file():
                continue
            try:
                raw = read_regular(path, f"{label}: artifact {rel}", policy)
            except InvalidInput as exc:
                tally.warnings.append(f"{exc}: not copied")
                continue
            out[rel] = self._runs.store_file(raw)
        return out

    def _links(self, run: Any) -> dict[str, Node | None]:
        """The data (train and test) and model versions the run names, where they are found here."""
        tags = run.data.tags
        train = [tags["veml.data"]] if tags.get("veml.data") else []
        test = [tags["veml.test"]] if tags.get("veml.test") else []
        for d in run.inputs.dataset_inputs if run.inputs else []:
            (test if _context(d) in TEST_CONTEXTS else train).append(d.dataset.name)
        data, test_node = _first_found(self._data.get, train), _first_found(self._data.get, test)
        if data is not None and test_node is not None and test_node.id == data.id:
            test_node = None  # one version is not both: it is the training data
        model = _first_found(self._models.get, [tags["veml.model"]] if tags.get("veml.model") else [])
        return {"data": data, "test": test_node, "model": model}

    # --- registered models and aliases --------------------------------------------------------------
    def _model_version(self, client: Any, store: TrackingStore, mv: Any, run: Node | None, tmp: Path,
                       tally: _Tally) -> Node | None:
        import mlflow.artifacts

        label = f"model {mv.name!r} version {mv.version}"
        dest = tmp / f"model-{len(tally.brought)}-{mv.version}"
        dest.mkdir(parents=True)
        source = client.get_model_version_download_uri(mv.name, str(mv.version))
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=store.uri))
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file() and not p.is_symlink()
                                                        and p.name not in NOT_MODEL_FILES)
        cap = ReadPolicy.from_options().max_file_bytes
        origin = {"system": SYSTEM, "tracking_uri": store.label, "model": mv.name, "version": str(mv.version),
                  "run_id": mv.run_id, "source": mv.source}
        name = self._runs.unused_name(_name(f"{mv.name}-v{mv.version}"))
        reason = "its artifacts hold no files"
        for path in files:
            rel = path.name if path == local else path.relative_to(local).as_posix()
            try:
                imports.sniff(read_regular(path, rel, ReadPolicy.from_options()), cap)
                made = self._registry.register(path, name, data=run.props.get("data") if run else None,
                                               training=run.id if run else None, origin={**origin, "file": rel})
            except InvalidInput as exc:
                reason = str(exc)
                continue
            node = self._training.get(made["id"])
            tally.brought.append(Brought("model", node.id, node.name, f"{label} ({rel})"))
            return node
        tally.warnings.append(f"{label}: not imported, no file VeML can read as a model ({reason}); "
                              "VeML reads skops scikit-learn models, torch state dicts, TorchScript and ONNX")
        return None

    def _alias(self, model: str, alias: str, version: str, models: Mapping[tuple[str, str], Node], tally: _Tally,
               filtered: bool) -> None:
        target = models.get((model, version))
        name = _name(f"{model}@{alias}")
        if target is None:
            if not filtered:
                tally.warnings.append(f"alias {name!r}: not set, {model!r} version {version} was not imported")
            return
        try:
            _, changed = self._aliases.point(name, target.id)
        except VemlError as exc:  # the name is a version's or a tag's
            tally.warnings.append(f"alias {name!r}: not set ({exc})")
            return
        if not changed:
            tally.skipped += 1
            return
        tally.brought.append(Brought("alias", target.id, name, f"alias {alias!r} of model {model!r} -> version {version}"))


def _context(dataset_input: Any) -> str:
    return next((t.value for t in dataset_input.tags or [] if t.key == "mlflow.data.context"), "") or ""


def _first_found(get: Any, refs: list[str]) -> Node | None:
    for ref in refs:
        try:
            return get(ref)
        except VemlError:  # not a version here (or ambiguous): recorded without the link
            continue
    return None


def _name(text: str) -> str:
    """A version or alias name from MLflow's text: no control characters, at most 200 characters,
    never one of VeML's reserved prefixes."""
    clean = " ".join("".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).split())[:200]
    if not clean or clean.lower().startswith(RESERVED_PREFIXES):
        clean = f"mlflow-{clean}"
    return clean


def _iso_ms(ms: int | None) -> str | None:
    return iso(ms / 1000) if ms else None


__all__ = ["MlflowImport", "ImportReport", "Brought"]
