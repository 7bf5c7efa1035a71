"""Per-image analysis of a detection prediction version: error counts and precision-recall curves.

What the web UI's prediction page reads for a detector (``repo.inference.detection_outcomes_page`` /
``repo.inference.pr_curves``): per image, its true positives, false positives and missed ground truth
at IoU 0.5 among the boxes scored at or above a confidence threshold, with its highest box score;
sortable by errors (FP + FN) or that confidence, and filterable to the images where one class has a
false positive or a miss (a detector's confusion cell); and per class the precision-recall curve of
its boxes ranked by score with its AP at IoU 0.5.  Matching and AP are :mod:`veml.metrics`' own, on
the stored rows in image pixels, so AP here is the version's stored ``ap50``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from veml import metrics
from veml.errors import InvalidInput
from veml.versions.prediction_analysis import ranked

SORTS = ("errors", "confidence", "data_id")
ERRORS = ("fp", "fn")
IOU = 0.5
CURVE_POINTS = 101


@dataclass(frozen=True)
class Boxes:
    """A detection prediction version's images, in data_id order, as :mod:`veml.metrics` takes them."""

    classes: tuple[str, ...]
    data_ids: np.ndarray  # int64
    gt: list[tuple[np.ndarray, np.ndarray]]  # per image: xyxy boxes, class indices
    pred: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per image: xyxy boxes, scores, class indices


@dataclass(frozen=True)
class DetectionPage:
    items: tuple[dict[str, Any], ...]  # data_id, gt, predicted, tp, fp, fn, errors, confidence
    total: int  # images matching the filter
    classes: tuple[str, ...]
    per_class: dict[str, dict[str, int]]  # class -> tp, fp, fn, and images with a fp / fn, over every image


def _by_image(table: pa.Table | None, index: dict[str, int], scored: bool) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    if table is None or table.num_rows == 0:
        return out
    cols = [table[k].to_pylist() for k in ("data_id", "category", "bbox_x", "bbox_y", "bbox_w", "bbox_h")]
    scores = table["score"].to_pylist() if scored else [None] * table.num_rows
    for (did, cat, x, y, w, h), s in zip(zip(*cols), scores):
        if cat in index and None not in (x, y, w, h) and (s is not None or not scored):
            out.setdefault(int(did), []).append((x, y, x + w, y + h, index[cat], s))
    return out


def boxes(classes: Sequence[str], data_ids: Sequence[int], truth: pa.Table | None, predictions: pa.Table) -> Boxes:
    """The images of ``data_ids`` with their ground-truth boxes (``truth``, the data version's box rows) and
    predicted boxes (the prediction version's rows), both ``bbox_*`` in image pixels; rows of another class are left out."""
    classes = tuple(str(c) for c in classes)
    index = {c: i for i, c in enumerate(classes)}
    ids = np.sort(np.asarray(list(data_ids), np.int64))
    g, p = _by_image(truth, index, False), _by_image(predictions, index, True)
    gt, pred = [], []
    for did in ids.tolist():
        rows = g.get(did, [])
        gt.append((np.array([r[:4] for r in rows], np.float64).reshape(-1, 4), np.array([r[4] for r in rows], np.int64)))
        rows = p.get(did, [])
        pred.append((np.array([r[:4] for r in rows], np.float64).reshape(-1, 4), np.array([r[5] for r in rows], np.float64),
                     np.array([r[4] for r in rows], np.int64)))
    return Boxes(classes, ids, gt, pred)


def pr_curves(b: Boxes, points: int = CURVE_POINTS) -> list[dict[str, Any]]:
    """Per class at IoU 0.5: precision and recall down the ranked boxes (thinned to ``points``) and the AP."""
    out = []
    for c in metrics.detection_pr_curves(b.gt, b.pred, b.classes, IOU):
        n = len(c["recall"])
        pick = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int)).tolist() if n else []
        out.append({**c, **{k: [c[k][i] for i in pick] for k in ("recall", "precision", "thresholds")}})
    return out


def page(b: Boxes, cls: str | None = None, error: str | None = None, threshold: float = metrics.SCORE_THRESHOLD,
         sort: str = "errors", descending: bool = True, limit: int = 50, offset: int = 0) -> DetectionPage:
    """One page of images: only those where ``cls`` has a false positive (``error`` fp) or a miss (fn), or any
    error of ``cls`` when ``error`` is None; sorted by ``sort`` (images with no box last for confidence, ties by data_id)."""
    if sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    if error is not None and error not in ERRORS:
        raise InvalidInput(f"error must be one of {', '.join(ERRORS)}, not {error!r}")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"threshold must be in [0, 1], not {threshold}")
    if cls is not None and cls not in b.classes:
        raise InvalidInput(f"unknown class {cls!r}; classes: {', '.join(b.classes)}")
    counts = metrics.detection_errors(b.gt, b.pred, len(b.classes), IOU, score_threshold=threshold)  # images x classes x (tp, fp, fn)
    keep = np.ones(len(b.data_ids), bool)
    if cls is not None:
        c = b.classes.index(cls)
        keep = counts[:, c, {"fp": 1, "fn": 2}[error]] > 0 if error else counts[:, c, 1:].sum(-1) > 0
    elif error is not None:
        keep = counts[:, :, {"fp": 1, "fn": 2}[error]].sum(-1) > 0
    total = counts.sum(1)
    conf = np.array([p[1].max() if len(p[1]) else np.nan for p in b.pred], np.float64)
    rows = np.flatnonzero(keep)
    key = {"errors": (total[:, 1] + total[:, 2]).astype(np.float64), "confidence": conf,
           "data_id": b.data_ids.astype(np.float64)}[sort]
    rows = ranked(rows, key, b.data_ids, descending)
    items = []
    for i in rows[offset:offset + limit]:
        tp, fp, fn = (int(x) for x in total[i])
        items.append({"data_id": int(b.data_ids[i]), "gt": len(b.gt[i][1]), "predicted": int((b.pred[i][1] >= threshold).sum()),
                      "tp": tp, "fp": fp, "fn": fn, "errors": fp + fn,
                      "confidence": None if np.isnan(conf[i]) else float(conf[i])})
    per_class = {name: {"tp": int(counts[:, c, 0].sum()), "fp": int(counts[:, c, 1].sum()), "fn": int(counts[:, c, 2].sum()),
                        "fp_images": int((counts[:, c, 1] > 0).sum()), "fn_images": int((counts[:, c, 2] > 0).sum())}
                 for c, name in enumerate(b.classes)}
    return DetectionPage(tuple(items), int(len(rows)), b.classes, per_class)
