"""``veml export mlflow``: the repository's training and inference versions as runs of an MLflow experiment.

Each training version becomes a run named like it: its hyper-parameters as params, every logged metric
with its step history, its final (evaluation) metrics, its status and start/end times, and tags that
carry VeML's side: ``veml.id``, ``veml.name``, ``veml.kind``, ``veml.data``, ``veml.model``,
``veml.parents`` (JSON: each parent's id, name, kind and edge) and ``veml.repository`` (which
repository wrote it).  Each inference version becomes a run nested under its training's run
(``mlflow.parentRunId``), with its deployment settings as params and its size, latency and agreement
with the trained model as metrics.  Checkpoints and deployed files stay in VeML (nothing is copied
into MLflow's artifact store).

Idempotent: a version whose run the experiment already holds (the same ``veml.id`` and
``veml.repository``) is skipped, and so is a training version that was imported from this very
store.  A run still going is left for a later export.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from veml.entities import Node
from veml.errors import InvalidInput
from veml.interop import mlflow_store
from veml.interop.mlflow_store import PAGE, pages
from veml.versions.inference import InferenceVersions
from veml.versions.lineage import LineageAPI
from veml.versions.training import TrainingVersions

STATUS = {"finished": "FINISHED", "failed": "FAILED"}
INFERENCE_METRICS = ("size_bytes", "latency_ms", "original_latency_ms", "max_abs_diff", "agreement")
INFERENCE_PARAMS = ("format", "quantize", "device", "task")
MAX_PARAM = 6000  # MLflow's limit on a param value
MAX_TAG = 5000
BATCH = 900  # under MLflow's 1000 entities per log_batch


@dataclass(frozen=True)
class ExportReport:
    """What ``veml export mlflow`` wrote (README's "Coming from MLflow" documents the keys)."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    training: int
    inference: int
    metrics: int
    skipped: int
    runs: tuple[tuple[int, str, str, str], ...]  # (version id, name, kind, MLflow run id)
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "experiment_id": self.experiment_id,
                "training": self.training, "inference": self.inference, "metrics": self.metrics,
                "skipped": self.skipped, "runs": [{"id": i, "name": n, "kind": k, "run_id": r} for i, n, k, r in self.runs],
                "warnings": list(self.warnings)}


class MlflowExport:
    """Reads through the version APIs only (training, inference, lineage)."""

    def __init__(self, training: TrainingVersions, inference: InferenceVersions, lineage: LineageAPI,
                 identity: str) -> None:
        self._training, self._inference, self._lineage, self._identity = training, inference, lineage, identity

    def run(self, uri: str, experiment: str = "veml") -> ExportReport:
        if not experiment or experiment != experiment.strip() or any(ord(c) < 32 for c in experiment):
            raise InvalidInput(f"malformed MLflow experiment name {experiment!r}")
        store = mlflow_store.parse(uri)
        mlflow_store.check(store, write=True)
        runs: list[tuple[int, str, str, str]] = []
        warnings: list[str] = []
        skipped = metrics = 0
        with mlflow_store.session(store) as client:
            exp_id = self._experiment(client, experiment)
            done = {r.data.tags["veml.id"]: r.info.run_id
                    for r in pages(lambda t: client.search_runs([exp_id], max_results=PAGE, page_token=t))
                    if r.data.tags.get("veml.repository") == self._identity and r.data.tags.get("veml.id")}
            for t in self._training.list():
                origin = t.get("origin") or {}
                if str(t["id"]) in done:
                    skipped += 1
                    continue
                if origin.get("system") == "mlflow" and origin.get("tracking_uri") == store.label:
                    done[str(t["id"])] = origin.get("run_id")  # it came from this store: its deployments nest under it
                    skipped += 1
                    continue
                if t["status"] not in STATUS:
                    warnings.append(f"training {t['name']!r} is {t['status']}: not exported yet; export again once it has ended")
                    continue
                run_id, n = self._training_run(client, exp_id, t)
                done[str(t["id"])] = run_id
                metrics += n
                runs.append((t["id"], t["name"], "training", run_id))
            for node in self._inference.list():
                if str(node.id) in done:
                    skipped += 1
                    continue
                run_id, n = self._inference_run(client, exp_id, node, done.get(str(node.props.get("training"))))
                metrics += n
                runs.append((node.id, node.name, "inference", run_id))
        kinds = [r[2] for r in runs]
        return ExportReport(store.label, experiment, exp_id, kinds.count("training"), kinds.count("inference"), metrics,
                            skipped, tuple(runs), tuple(warnings))

    def _experiment(self, client: Any, name: str) -> str:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return client.create_experiment(name, tags={"veml.repository": self._identity})
        if exp.lifecycle_stage != "active":
            raise InvalidInput(f"the MLflow experiment {name!r} is deleted: restore it in MLflow or give another --experiment")
        return exp.experiment_id

    def _tags(self, node: Node, kind: str) -> dict[str, str]:
        up = self._lineage.query(node.id, "up", 1)
        names = {n.id: n for n in up.nodes}
        parents = [{"id": e.src, "name": names[e.src].name, "kind": names[e.src].to_json()["kind"], "edge": e.kind}
                   for e in up.edges if e.dst == node.id and e.src in names]
        tags = {"veml.repository": self._identity, "veml.id": str(node.id), "veml.name": node.name, "veml.kind": kind,
                "veml.parents": json.dumps(parents), "mlflow.source.name": "veml"}
        for p in parents:
            if p["edge"] == "DATA_TRAINING" and "veml.data" not in tags:
                tags["veml.data"] = p["name"]
            if p["edge"] == "MODEL_TRAINING":
                tags["veml.model"] = p["name"]
            if p["edge"] == "DEPLOY":
                tags["veml.training"] = p["name"]
        return {k: v[:MAX_TAG] for k, v in tags.items()}

    def _training_run(self, client: Any, exp_id: str, t: Mapping[str, Any]) -> tuple[str, int]:
        from mlflow.entities import Metric, Param

        node = self._training.get(t["id"])
        run = client.create_run(exp_id, start_time=_ms(node.created_at), tags=self._tags(node, "training"),
                                run_name=node.name)
        run_id = run.info.run_id
        logs = self._training.logs(node.id)
        metrics = [Metric(_key(r["key"]), r["value"], _ms(r["at"]), int(r["step"])) for r in logs]
        logged = {r["key"] for r in logs}
        end = float(t.get("finished_at") or node.created_at)
        last_step = max((int(r["step"]) for r in logs), default=0)
        metrics += [Metric(_key(k), v, _ms(end), last_step) for k, v in _numbers(t.get("metrics")) if k not in logged]
        params = [Param(_key(k), _text(v)) for k, v in sorted((t.get("params") or {}).items())]
        _log(client, run_id, metrics, params)
        client.set_terminated(run_id, STATUS[t["status"]], end_time=_ms(end))
        return run_id, len(metrics)

    def _inference_run(self, client: Any, exp_id: str, node: Node, parent_run: str | None) -> tuple[str, int]:
        from mlflow.entities import Metric, Param

        tags = self._tags(node, "inference")
        if parent_run is not None:
            tags["mlflow.parentRunId"] = parent_run  # shown nested under the training's run
        run = client.create_run(exp_id, start_time=_ms(node.created_at), tags=tags, run_name=node.name)
        metrics = [Metric(k, v, _ms(node.created_at), 0) for k, v in _numbers({k: node.props.get(k) for k in INFERENCE_METRICS})]
        params = [Param(k, _text(node.props[k])) for k in INFERENCE_PARAMS if node.props.get(k) is not None]
        _log(client, run.info.run_id, metrics, params)
        client.set_terminated(run.info.run_id, "FINISHED", end_time=_ms(node.created_at))
        return run.info.run_id, len(metrics)


def _log(client: Any, run_id: str, metrics: list[Any], params: list[Any]) -> None:
    """Params (at most 100 a call) and metrics, in batches under MLflow's limits."""
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH])


def _numbers(values: Mapping[str, Any] | None) -> Iterable[tuple[str, float]]:
    """The finite numbers of a metrics mapping (nested reports, lists and NaN are left out)."""
    for k, v in sorted((values or {}).items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            yield str(k), float(v)


def _key(key: str) -> str:
    """A metric or param name MLflow accepts (letters, digits, ``_ - . : /`` and spaces)."""
    return re.sub(r"[^\w\-.:/ ]", "_", str(key))[:250] or "_"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:MAX_PARAM]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


__all__ = ["MlflowExport", "ExportReport"]
