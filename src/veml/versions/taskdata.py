"""Turn a checked-out data version into the arrays one task trains on (adapters never see a repository).

Class order is part of a trained model: it comes from the training data version (its category
ids, or the sorted values of the label column) and is stored in the checkpoint, so predicting on
another version maps categories by name, not by position.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from veml.adapters.base import ModelSpec, TaskData
from veml.errors import InvalidInput
from veml.versions.checkout import DataView
from veml.versions.context import Stores
from veml.versions.pixels import pixel_array

MODALITY = {"classification": "image", "detection": "image", "forecasting": "series",
             "tabular-classification": "table", "tabular-regression": "table"}


def class_names_for(spec: ModelSpec, view: DataView) -> tuple[str, ...]:
    return label_classes(view, spec.parameters.get("label_column") if spec.task == "classification" else None)


def label_classes(view: DataView, label_column: str | None = None) -> tuple[str, ...]:
    """Class names in index order: the sorted values of ``label_column``, else the version's categories."""
    if label_column:
        return tuple(sorted({v for v in column_labels(view, label_column) if v is not None}))
    return view.class_names()


def column_labels(view: DataView, label_column: str) -> list[str | None]:
    """One class label per sample from a typed column (a COCO image key such as ``time_of_day``)."""
    if label_column not in view.node.props.get("columns", {}):
        raise InvalidInput(f"label_column {label_column!r} is not a column of {view.node.name!r}")
    return [None if v is None else str(v) for v in view.column(label_column)]


def class_indices(spec: ModelSpec, view: DataView, names: Sequence[str], pos: np.ndarray,
                  require_labels: bool = False) -> np.ndarray:
    """A classifier's class index (in ``names`` order; -1: no label, or a class it lacks) for the samples at ``pos``,
    read from the version's labels without decoding an image."""
    col = spec.parameters.get("label_column")
    if col and (require_labels or col in view.node.props.get("columns", {})):
        raw = column_labels(view, col)
        labels_raw = [raw[i] for i in pos]
    elif col:  # predicting on data that lacks the label column: no labels, no metrics
        labels_raw = [None] * len(pos)
    else:
        all_labels = view.labels()
        labels_raw = [all_labels[i] for i in pos]
    if require_labels and all(l is None for l in labels_raw):
        raise InvalidInput(f"data version {view.node.name!r} has no class labels to train on")
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(l, -1) if l is not None else -1 for l in labels_raw], dtype=np.int64)


def task_data(stores: Stores, spec: ModelSpec, view: DataView, class_names: Sequence[str] | None = None,
              require_labels: bool = True, positions: np.ndarray | None = None) -> TaskData:
    """Arrays for ``spec.task`` from ``view`` (optionally only the samples at ``positions``)."""
    modality = view.node.props.get("modality")
    if modality != MODALITY[spec.task]:
        raise InvalidInput(f"a {spec.task} model needs {MODALITY[spec.task]} data; {view.node.name!r} holds {modality} data")
    if len(view) == 0:
        raise InvalidInput(f"data version {view.node.name!r} is empty")
    names = tuple(class_names) if class_names is not None else class_names_for(spec, view)
    index = {n: i for i, n in enumerate(names)}
    pos = np.arange(len(view)) if positions is None else np.asarray(positions)
    ids = view.data_ids[pos]
    if spec.task in ("classification", "detection"):
        size = int(spec.parameters["image_size"])
        images = pixel_array(stores, view, pos, (size, size))  # from the pixel cache where built
        if spec.task == "classification":
            labels = class_indices(spec, view, names, pos, require_labels)
            if require_labels and (labels < 0).any():
                keep = labels >= 0  # samples without a (known) label cannot teach a classifier
                images, labels, ids = images[keep], labels[keep], ids[keep]
            return TaskData("classification", names, ids, images=images, labels=labels)
        boxes_t = view.annotations().get("boxes")
        if require_labels and (boxes_t is None or boxes_t.num_rows == 0):
            raise InvalidInput(f"data version {view.node.name!r} has no boxes to train a detector on")
        per_image = _boxes(view, pos, size, boxes_t, index)
        return TaskData("detection", names, ids, images=images, boxes=per_image)
    if spec.task == "forecasting":
        series = np.stack([view[int(i)].value for i in pos]).astype(np.float32)
        adj = None
        digest = view.node.props.get("adjacency")
        if digest:
            blob = stores.artifacts.get_verified(digest, f"adjacency matrix {digest[:12]} of {view.node.name!r}")
            adj = np.load(io.BytesIO(blob), allow_pickle=False)
        return TaskData("forecasting", (), ids, series=series, adjacency=adj,
                        missing_value=float(view.node.props.get("missing_value", 0.0)))
    table = view.to_numpy()[pos]
    if spec.task == "tabular-classification":
        all_labels = view.labels()
        labels = np.array([index.get(all_labels[i], -1) if all_labels[i] is not None else -1 for i in pos], np.int64)
        if require_labels and (labels < 0).all():
            raise InvalidInput(f"data version {view.node.name!r} has no class labels to train on")
        keep = labels >= 0 if require_labels else np.ones(len(labels), bool)
        return TaskData(spec.task, names, ids[keep], table=table[keep], labels=labels[keep])
    values = view.label_values()
    targets = np.array([values[i] for i in pos], dtype=np.float64)
    if require_labels and np.isnan(targets).all():
        raise InvalidInput(f"data version {view.node.name!r} has no regression targets to train on")
    keep = ~np.isnan(targets) if require_labels else np.ones(len(targets), bool)
    return TaskData(spec.task, (), ids[keep], table=table[keep], targets=targets[keep])


def _boxes(view: DataView, pos: np.ndarray, size: int, boxes_t: Any, index: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    meta = view.metadata()
    widths, heights = meta["width"].to_numpy(), meta["height"].to_numpy()
    by_id: dict[int, list[tuple[float, float, float, float, int]]] = {}
    if boxes_t is not None:
        for did, cat, x, y, w, h in zip(boxes_t["data_id"].to_pylist(), boxes_t["category"].to_pylist(),
                                        boxes_t["bbox_x"].to_pylist(), boxes_t["bbox_y"].to_pylist(),
                                        boxes_t["bbox_w"].to_pylist(), boxes_t["bbox_h"].to_pylist()):
            if cat in index:
                by_id.setdefault(did, []).append((x, y, x + w, y + h, index[cat]))
    out = []
    ids = view.data_ids
    for i in pos:
        sx, sy = size / widths[i], size / heights[i]
        rows = by_id.get(int(ids[i]), [])
        b = np.array([[r[0] * sx, r[1] * sy, r[2] * sx, r[3] * sy] for r in rows], np.float32).reshape(-1, 4)
        out.append((b, np.array([r[4] for r in rows], np.int64)))
    return out
