"""Inference versions (deployments) and prediction versions (a deployment run over a data version).

A deployment is only recorded after the exported artifact has been run side by side with the
trained model on a sample batch; its latency, size and agreement are properties of the node.
Predictions are rows of the insert-only ``predictions`` table, referenced by the prediction
version's id set exactly as a data version references its annotations.

With a distributed executor a data version is predicted in partitions, one task each
(:func:`predict_partition`): a task reopens the stores from the repository's location, reads
only its samples, loads the deployed artifact from the artifact store and returns its
predictions with the labels they are scored against (not the images, which stay where they were
read).  The driver concatenates the parts in data-id order, so metrics and prediction rows are
computed and recorded exactly as for a run in this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from veml.adapters import get_adapter, onnx_run
from veml.adapters.base import ModelSpec, Predictions, TaskData
from veml.compute import RepoLocation, partition
from veml.entities import ExportedModel, Node
from veml.errors import InvalidInput
from veml.progress import ProgressLike, as_progress
from veml.store.idsets import BitMap
from veml.versions import detection_analysis, evaluation, prediction_analysis, prediction_file
from veml.versions.context import Stores, stores_at
from veml.versions.data import DataVersions
from veml.versions.model import ModelVersions, spec_of
from veml.versions.taskdata import class_indices, class_names_for, task_data
from veml.versions.training import TrainingVersions

KIND = "InferenceVersion"
PREDICTION = "PredictionVersion"
TARGETS = ("triton",)


class InferenceVersions:
    def __init__(self, stores: Stores, data: DataVersions, models: ModelVersions, training: TrainingVersions) -> None:
        self._s, self._data, self._models, self._training = stores, data, models, training

    def list(self) -> list[Node]:
        """Every inference version, oldest first."""
        return self._s.graph.list(kinds=[KIND])

    def get(self, ref: str | int) -> Node:
        return self._s.graph.resolve(ref, kinds=[KIND])

    def get_prediction(self, ref: str | int) -> Node:
        return self._s.graph.resolve(ref, kinds=[PREDICTION])

    def _spec(self, tnode: Node):
        return spec_of(self._models.get(tnode.props["model"]))

    def deploy(self, training: str | int, fmt: str = "onnx", quantize: str = "none", device: str = "cpu",
               target: str | None = None, out: Path | str | None = None, name: str | None = None,
               extra_parents: list[tuple[int, str, Mapping[str, Any]]] | None = None) -> Node:
        tnode = self._training.get(training)
        if target is not None and target not in TARGETS:
            raise InvalidInput(f"--target must be one of {', '.join(TARGETS)}")
        if target is not None and out is None:
            raise InvalidInput("--target triton needs --out DIR")
        if target is not None and fmt not in ("onnx", "torchscript"):
            raise InvalidInput(f"--target {target} serves --format onnx or torchscript deployments, not {fmt}")
        if out is not None and Path(out).exists() and any(Path(out).iterdir()):
            raise InvalidInput(f"{out}: output directory is not empty")
        spec, adapter, checkpoint, meta, sample = self._check_batch(tnode)
        name = name or self._auto_name(f"{tnode.name}-{fmt}-{quantize}")
        self._s.graph.check_new_name(name)
        outcome = adapter.export(spec, checkpoint, fmt, quantize, sample, device)
        digest = self._s.artifacts.put_bytes(outcome.artifact)
        props: dict[str, Any] = {
            "training": tnode.id, "task": spec.task, "format": outcome.format, "quantize": outcome.quantize, "device": device,
            "artifact": digest, "size_bytes": outcome.size_bytes, "latency_ms": round(outcome.latency_ms, 4),
            "original_latency_ms": round(outcome.original_latency_ms, 4), "max_abs_diff": outcome.max_abs_diff,
            "tolerance": outcome.tolerance, "agreement": outcome.agreement, "input_shape": list(outcome.input_shape),
            "input_names": list(outcome.input_names), "output_names": list(outcome.output_names),
            "class_names": meta.get("class_names", []), "check_samples": len(sample),
            # what running it needs of the checkpoint, so that predict/drift on it never load the checkpoint (torch)
            "runtime_meta": {k: meta[k] for k in onnx_run.RUNTIME_META if k in meta},
        }
        if target == "triton":
            props["triton"] = str(self._write_triton(Path(out), name, outcome, spec.task))
        return self._s.graph.record(KIND, name, props, parents=[(tnode.id, "DEPLOY", {"format": fmt, "quantize": quantize}),
                                                           *(extra_parents or [])])

    def export_file(self, training: str | int, out: Path | str, fmt: str = "onnx") -> ExportedModel:
        """``training``'s model as a plain file at ``out`` (no inference version is recorded).

        Checked as a deployment is: run side by side with the trained model on up to 16 samples of its
        test (or training) data, and refused when they disagree; written to a temporary name, then renamed."""
        if fmt != "onnx":
            raise InvalidInput(f"veml export writes onnx, not {fmt!r} (for other formats: veml deploy T --format …)")
        tnode = self._training.get(training)
        out = Path(out)
        if out.is_dir():
            raise InvalidInput(f"{out}: is a directory; give the file to write")
        if not out.parent.is_dir():
            raise InvalidInput(f"{out.parent}: no such directory")
        spec, adapter, checkpoint, meta, sample = self._check_batch(tnode)
        if spec.adapter == "sklearn":
            raise InvalidInput(f"{tnode.name!r} is a scikit-learn model: it exports as skops (veml deploy T --format skops)")
        outcome = adapter.export(spec, checkpoint, "onnx", "none", sample)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(outcome.artifact)
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InvalidInput(f"{out}: cannot write: {exc.strerror}") from None
        return ExportedModel(str(out.resolve()), tnode.id, "onnx", hashlib.sha256(outcome.artifact).hexdigest(),
                             outcome.size_bytes, outcome.max_abs_diff, outcome.agreement, len(sample),
                             tuple(outcome.input_names), tuple(outcome.input_shape), tuple(outcome.output_names),
                             tuple(meta.get("class_names") or ()))

    def _check_batch(self, tnode: Node) -> tuple[ModelSpec, Any, bytes, dict[str, Any], TaskData]:
        """(spec, adapter, checkpoint, its meta, up to 16 samples of the run's test or training data): what an
        export is run on side by side with the trained model."""
        checkpoint = self._training.checkpoint(tnode)  # refuses failed runs and damaged checkpoints
        spec = self._spec(tnode)
        adapter = get_adapter(spec.adapter)
        meta = adapter.checkpoint_meta(checkpoint)
        ref = tnode.props.get("test") or tnode.props.get("data")
        if ref is None:
            raise InvalidInput(f"{tnode.name!r} was registered without --data: an export is checked against the model "
                               "on real samples, so register the model again with --data D")
        view = self._data.checkout(self._data.get(ref))
        sample = task_data(self._s, spec, view, meta.get("class_names"), require_labels=False,
                           positions=np.arange(min(len(view), 16)))
        return spec, adapter, checkpoint, meta, sample

    def _write_triton(self, out: Path, name: str, outcome: Any, task: str) -> Path:
        from veml.adapters.torch_export import triton_config

        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        model_dir = out / safe / "1"
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / ("model.onnx" if outcome.format == "onnx" else "model.pt")).write_bytes(outcome.artifact)
        (out / safe / "config.pbtxt").write_text(triton_config(safe, outcome.format, task, outcome.input_shape, outcome.output_names))
        return out / safe

    def artifact(self, inode: Node) -> bytes:
        digest = inode.props["artifact"]
        return self._s.artifacts.get_verified(digest, f"deployed artifact {digest[:12]} of {inode.name!r}")

    def run(self, inference: str | int, data: str | int, data_ids: np.ndarray | None = None,
            progress: ProgressLike | None = None) -> tuple[Node, Node, TaskData, Predictions]:
        """Run a deployment over a data version without recording anything (drift, monitoring, the server).

        ``data_ids`` limits the run to those samples of the version (read alone, on this process).
        With a distributed executor and no ``data_ids`` the returned TaskData holds labels and ids but no images."""
        inode, dnode = self.get(inference), self._data.get(data)
        tnode = self._training.get(inode.props["training"])
        spec = self._spec(tnode)
        meta = self._runtime_meta(inode, tnode, spec)
        if self._s.distributed and data_ids is None:
            td, preds = self._run_partitioned(inode, dnode, spec, meta)
            return inode, dnode, td, preds
        view = self._data.checkout(dnode) if data_ids is None else self._data.checkout_samples(dnode, data_ids)
        td = task_data(self._s, spec, view, meta.get("class_names"), require_labels=False)
        preds = predict_exported(spec, self.artifact(inode), inode.props["format"], meta, td, inode.props.get("device", "cpu"),
                                 progress)
        return inode, dnode, td, preds

    def class_labels(self, inference: str | int, data: str | int, data_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(data ids, class index in the deployment's class order; -1 where a sample has no label the model knows)
        of a classifier's data version, read without decoding an image or running the model."""
        inode, dnode = self.get(inference), self._data.get(data)
        tnode = self._training.get(inode.props["training"])
        spec = self._spec(tnode)
        if spec.task != "classification":
            raise InvalidInput(f"deployment {inode.name!r} is a {spec.task} model, not an image classifier")
        view = self._data.checkout(dnode) if data_ids is None else self._data.checkout_samples(dnode, data_ids)
        names = self._runtime_meta(inode, tnode, spec).get("class_names") or class_names_for(spec, view)
        return view.data_ids.astype(np.int64), class_indices(spec, view, names, np.arange(len(view)))

    def forecast_inputs(self, inference: str | int, data: str | int, data_ids: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(raw input windows (n_windows, history, sensors), the data's missing-value marker) of a forecaster over a
        data version's samples, in the order ``run`` returns its forecasts; read without running the model."""
        inode, dnode = self.get(inference), self._data.get(data)
        spec = self._spec(self._training.get(inode.props["training"]))
        if spec.task != "forecasting":
            raise InvalidInput(f"deployment {inode.name!r} is a {spec.task} model, not a forecaster")
        view = self._data.checkout(dnode) if data_ids is None else self._data.checkout_samples(dnode, data_ids)
        td = task_data(self._s, spec, view, None, require_labels=False)
        x, _, _ = onnx_run.raw_forecast_windows(spec, td, int(spec.parameters["horizon"]))
        return x[..., 0], td.missing_value

    def _runtime_meta(self, inode: Node, tnode: Node, spec: ModelSpec) -> dict[str, Any]:
        """What running the deployment needs of its checkpoint's meta: recorded with an ONNX deployment
        (running one then loads neither the checkpoint nor torch), else read from the checkpoint."""
        recorded = inode.props.get("runtime_meta")
        if recorded is not None and inode.props["format"] == "onnx":
            return dict(recorded)
        return get_adapter(spec.adapter).checkpoint_meta(self._training.checkpoint(tnode))

    def _run_partitioned(self, inode: Node, dnode: Node, spec: ModelSpec,
                         meta: Mapping[str, Any]) -> tuple[TaskData, Predictions]:
        """One executor task per partition of the data version, merged back in data-id order."""
        self.artifact(inode)  # a damaged artifact is reported once, here, not by every task
        view = self._data.checkout(dnode)
        if len(view) == 0:
            raise InvalidInput(f"data version {dnode.name!r} is empty")
        # class order comes from the whole version (a partition may lack a class), as task_data would take it
        names = tuple(meta["class_names"]) if meta.get("class_names") is not None else class_names_for(spec, view)
        tasks = [PredictTask(self._s.location, dnode, p, spec, names, inode.props["artifact"], inode.props["format"],
                             dict(meta), inode.props.get("device", "cpu"))
                 for p in partition(view.data_ids, self._s.compute.partition_size)]
        parts = self._s.compute.map(predict_partition, tasks)
        return _merge_task_data([td for td, _ in parts]), _merge_predictions(parts)

    def predict(self, inference: str | int, data: str | int, name: str | None = None, out: Path | str | None = None,
                force: bool = False, progress: ProgressLike | None = None) -> Node:
        """A prediction version of ``inference`` over ``data``; with ``out`` (.jsonl or .parquet) the per-sample
        predictions are also written there (see :mod:`veml.versions.prediction_file`; an existing file only
        with ``force``).  Every check on ``out`` is made before any work."""
        inode = self.get(inference)
        target = prediction_file.check_target(out, force) if out is not None else None
        name = name or self._auto_name(f"{inode.name}-on-{self._data.get(data).name}")
        self._s.graph.check_new_name(name)
        inode, dnode, td, preds = self.run(inference, data, progress=progress)
        report, worst = evaluation.evaluate(td, preds)
        spec = self._spec(self._training.get(inode.props["training"]))
        rows = _prediction_rows(td, preds, self._data.checkout(dnode), int(spec.parameters.get("image_size", 1)))
        ids = BitMap()
        alloc = None
        if rows.num_rows:
            alloc, start = self._s.graph.allocate("ann", rows.num_rows)
            rows = rows.append_column("ann_id", pa.array(np.arange(start, start + rows.num_rows), pa.int64()))
            try:
                self._s.samples.append("predictions", rows)
            except BaseException:  # give the range up at once: a long-lived server must not pin it
                with contextlib.suppress(Exception):
                    self._s.graph.drop_allocations([alloc])
                raise
            ids = BitMap(range(start, start + rows.num_rows))
        metric_name, metric = evaluation.key_metric(inode.props["task"], report)
        props = {"inference": inode.id, "data": dnode.id, "task": inode.props["task"], "metrics": report, "worst": worst,
                 "predictions": rows.num_rows, "samples": len(td), "annotation_tables": ["predictions"],
                 "key_metric": {"name": metric_name, "value": metric}}
        node = self._s.graph.record(PREDICTION, name, props,
                                    parents=[(inode.id, "PREDICT_ON", {}), (dnode.id, "PREDICT_ON", {"role": "data"})],
                                    idsets={"annotations": ids}, allocations=[alloc] if alloc is not None else [])
        if target is not None:
            meta = self._data.checkout(dnode).metadata()
            names = dict(zip(meta["data_id"].to_pylist(), meta["file_name"].to_pylist()))
            records = prediction_file.sample_rows(rows, [int(d) for d in td.data_ids], names, inode.props["task"])
            prediction_file.write(target, records)
        return node

    def predictions(self, ref: str | int) -> pa.Table:
        node = self.get_prediction(ref)
        return self._s.samples.read("predictions", self._s.graph.idset(node.id, "annotations"))

    def outcomes_page(self, ref: str | int, true: str | None = None, pred: str | None = None, sort: str = "loss",
                      descending: bool = True, limit: int = 50, offset: int = 0) -> prediction_analysis.OutcomePage:
        """A classification prediction version's samples with their true and predicted class, confidence and
        loss; only one confusion-matrix cell when ``true``/``pred`` are given; sorted by loss or confidence."""
        return prediction_analysis.page(self._outcomes(ref), true, pred, sort, descending, limit, offset)

    def pr_curves(self, ref: str | int) -> list[dict[str, Any]]:
        """Per class of a classification prediction version: its one-vs-rest precision-recall curve and AP;
        of a detection one: the curve of its boxes ranked by score, matched at IoU 0.5, and its AP50."""
        if self.get_prediction(ref).props.get("task") == "detection":
            return detection_analysis.pr_curves(self._boxes(ref))
        return prediction_analysis.pr_curves(self._outcomes(ref))

    def detection_outcomes_page(self, ref: str | int, cls: str | None = None, error: str | None = None,
                                threshold: float = detection_analysis.metrics.SCORE_THRESHOLD, sort: str = "errors",
                                descending: bool = True, limit: int = 50, offset: int = 0) -> detection_analysis.DetectionPage:
        """A detection prediction version's images with their true/false positives and misses at IoU 0.5 among the
        boxes scored >= ``threshold``; only those where ``cls`` has a false positive or miss (``error`` fp/fn) when given."""
        return detection_analysis.page(self._boxes(ref), cls, error, threshold, sort, descending, limit, offset)

    def _boxes(self, ref: str | int) -> detection_analysis.Boxes:
        node = self.get_prediction(ref)
        if node.props.get("task") != "detection":
            raise InvalidInput(f"{node.name!r} holds {node.props.get('task')} predictions, not detection")
        spec = self._spec(self._training.get(self.get(node.props["inference"]).props["training"]))
        view = self._data.checkout(node.props["data"])
        names = class_names_for(spec, view)  # and the model's classes the data lacks, as the metrics have them
        names += tuple(k for k in (node.props.get("metrics") or {}).get("per_class", {}) if k not in names)
        return detection_analysis.boxes(names, view.data_ids.tolist(),
                                        view.annotations().get("boxes"), self.predictions(node.id))

    def _outcomes(self, ref: str | int) -> prediction_analysis.Outcomes:
        node = self.get_prediction(ref)
        task = node.props.get("task", "")
        if task not in prediction_analysis.TASKS:
            raise InvalidInput(f"{node.name!r} holds {task} predictions: per-sample outcomes and curves are for classification")
        spec = self._spec(self._training.get(self.get(node.props["inference"]).props["training"]))
        view = self._data.checkout(node.props["data"])
        column = spec.parameters.get("label_column") if task == "classification" else None
        if column and column in view.node.props.get("columns", {}):
            labels = [None if x is None else str(x) for x in view.column(column)]
        elif column:
            labels = [None] * len(view)
        else:
            labels = view.labels()
        truth = dict(zip(view.data_ids.tolist(), labels))
        classes = (node.props.get("metrics") or {}).get("classes") or class_names_for(spec, view)
        return prediction_analysis.outcomes(task, classes, self.predictions(node.id), truth)

    def _auto_name(self, base: str) -> str:
        name, i = base, 1
        while self._s.graph.name_taken(name):
            i += 1
            name = f"{base}-{i}"
        return name


@dataclass(frozen=True)
class PredictTask:
    """One partition of a data version to predict with a deployed artifact (sent to an executor)."""

    location: RepoLocation
    data: Node
    ids: np.ndarray
    spec: ModelSpec
    class_names: tuple[str, ...]
    artifact: str  # digest in the artifact store
    format: str
    meta: Mapping[str, Any]
    device: str


def predict_partition(task: PredictTask) -> tuple[TaskData, Predictions]:
    """Predictions for one partition, with its TaskData minus the images (an executor task; writes nothing)."""
    stores = stores_at(task.location)
    try:
        view = DataVersions(stores).checkout_samples(task.data, task.ids)
        td = task_data(stores, task.spec, view, task.class_names, require_labels=False)
        artifact = stores.artifacts.get_verified(task.artifact, f"deployed artifact {task.artifact[:12]}")
        preds = predict_exported(task.spec, artifact, task.format, task.meta, td, task.device)
        return replace(td, images=None), preds
    finally:
        stores.graph.close()


def predict_exported(spec: ModelSpec, artifact: bytes, fmt: str, meta: Mapping[str, Any], td: TaskData,
                     device: str, progress: ProgressLike | None = None) -> Predictions:
    """A deployed artifact's predictions: ONNX through onnxruntime and numpy alone (no adapter, so no torch),
    other formats through their adapter (progress then reported once, at the end)."""
    if fmt == "onnx":
        return onnx_run.predict(spec, artifact, meta, td, device, progress=progress)
    bar = as_progress(progress)
    bar.add_total(len(td))
    preds = get_adapter(spec.adapter).predict_exported(spec, artifact, fmt, meta, td, device)
    bar.advance(len(td))
    return preds


def _concat(parts: Sequence[Any]) -> Any:
    return None if any(p is None for p in parts) else np.concatenate(parts)


def _merge_task_data(parts: Sequence[TaskData]) -> TaskData:
    """The partitions' TaskData as one, in partition (= data id) order."""
    first = parts[0]
    boxes = None if first.boxes is None else [b for p in parts for b in (p.boxes or [])]
    return replace(first, data_ids=np.concatenate([p.data_ids for p in parts]), images=None,
                   labels=_concat([p.labels for p in parts]), boxes=boxes, series=_concat([p.series for p in parts]),
                   table=_concat([p.table for p in parts]), targets=_concat([p.targets for p in parts]))


def _merge_predictions(parts: Sequence[tuple[TaskData, Predictions]]) -> Predictions:
    """The partitions' predictions as one; forecast owners shift by the samples of the parts before them."""
    preds = [p for _, p in parts]
    first = preds[0]
    detections = None if first.detections is None else [d for p in preds for d in (p.detections or [])]
    owners, offset = [], 0
    for td, p in parts:
        if p.forecast_sample is not None:
            owners.append(np.asarray(p.forecast_sample) + offset)
        offset += len(td)
    return replace(first, scores=_concat([p.scores for p in preds]), detections=detections,
                   forecasts=_concat([p.forecasts for p in preds]), forecast_targets=_concat([p.forecast_targets for p in preds]),
                   forecast_sample=np.concatenate(owners) if first.forecast_sample is not None else None,
                   values=_concat([p.values for p in preds]))


def _prediction_rows(td: TaskData, preds: Predictions, view, image_size: int) -> pa.Table:
    """Predictions as annotation rows in the data version's own coordinates (boxes scaled from ``image_size``)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("data_id", "category", "score", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "values")}

    def add(did: int, cat: str | None, score: float | None, box: tuple | None, values: list[float] | None) -> None:
        cols["data_id"].append(int(did))
        cols["category"].append(cat)
        cols["score"].append(None if score is None else float(score))
        for k, v in zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), box or (None,) * 4):
            cols[k].append(None if v is None else float(v))
        cols["values"].append(values)

    names = list(td.class_names)
    if preds.task in ("classification", "tabular-classification"):
        for did, p in zip(td.data_ids, preds.scores):
            k = int(np.argmax(p))
            add(did, names[k] if k < len(names) else str(k), p[k], None, [float(v) for v in p])
    elif preds.task == "detection":
        meta = view.metadata()
        sizes = dict(zip(meta["data_id"].to_pylist(), zip(meta["width"].to_pylist(), meta["height"].to_pylist())))
        size = image_size
        for did, (boxes, scores, labels) in zip(td.data_ids, preds.detections):
            w, h = sizes[int(did)]
            sx, sy = w / size, h / size
            for b, s, l in zip(boxes, scores, labels):
                add(did, names[int(l)] if 0 <= int(l) < len(names) else str(int(l)), s,
                    (b[0] * sx, b[1] * sy, (b[2] - b[0]) * sx, (b[3] - b[1]) * sy), None)
    elif preds.task == "forecasting":
        for owner, f in zip(preds.forecast_sample, preds.forecasts):
            add(td.data_ids[int(owner)], None, None, None, [float(v) for v in np.asarray(f).ravel()])
    else:
        for did, v in zip(td.data_ids, preds.values):
            add(did, None, float(v), None, None)
    return pa.table({
        "data_id": pa.array(cols["data_id"], pa.int64()), "category": pa.array(cols["category"], pa.string()),
        "score": pa.array(cols["score"], pa.float64()),
        **{k: pa.array(cols[k], pa.float64()) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")},
        "values": pa.array(cols["values"], pa.list_(pa.float32())),
    })
