"""Evaluation metrics for the three task families VeML versions: classification, detection, forecasting.

Why a hand-written module instead of scikit-learn / pycocotools: metrics are stored next to model
versions and compared across them for years, so the exact definition must live in this repository,
be readable in one sitting, and not shift with a third-party upgrade.  Everything is pure numpy and
every result is a plain dict of JSON values (``float``/``int``/``str``/``None``/lists), because
results are written straight into version metadata and printed by the CLI.

Conventions worth knowing before reading a number:

* An undefined metric is ``None`` (JSON ``null``), never ``nan`` -- ``nan`` is not valid JSON and
  silently poisons averages.  Exception: precision of a class with no predictions is ``0.0`` (the
  scikit-learn ``zero_division=0`` convention), because "never predicted" is a real failure.
* Detection follows COCO bbox evaluation (greedy matching, precision envelope, 101 recall points),
  without COCO's ``maxDets`` cap, crowd regions or area ranges.  IoU thresholds and recall points
  are the exact decimals 0.50, 0.55, ... and 0.00, 0.01, ...; pycocotools uses raw ``linspace``
  values (e.g. 0.8999999999999999), which only differs when an IoU or recall lands exactly on one.
* Forecasting MAPE is a fraction (0.07), not a percentage (7.0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from veml.errors import InvalidInput

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.50 + 0.05 * i, 2) for i in range(10))
"""COCO's IoU thresholds 0.50:0.95 step 0.05 -- ten of them."""

SCORE_THRESHOLD = 0.5
"""Confidence above which a detection counts as 'shown to a user' for precision50/recall50/worst."""

_RECALL_POINTS = np.round(np.linspace(0.0, 1.0, 101), 2)
_PROB_EPS = 1e-15


# ------------------------------------------------------------------------------------ helpers


def _num(x: float) -> float | None:
    """A JSON-safe float: numpy scalars become ``float``; NaN (undefined) becomes ``None``."""
    x = float(x)
    return None if math.isnan(x) else x


def _class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in class_names]
    if not names:
        raise InvalidInput("class_names is empty")
    if len(set(names)) != len(names):
        raise InvalidInput("class_names contains duplicates; per-class results are keyed by name")
    return names


def _labels(values: object, name: str, n_classes: int | None) -> np.ndarray:
    """A 1-D int64 array of class indices in ``[0, n_classes)`` (``None``: no upper bound);
    integral floats are accepted because labels often round-trip through float arrays."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise InvalidInput(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{name} contains NaN or infinite values")
        if (arr != np.round(arr)).any():
            raise InvalidInput(f"{name} must hold integer class indices, got non-integral floats")
    out = arr.astype(np.int64)
    bad = (out < 0) | (out >= (n_classes if n_classes is not None else np.iinfo(np.int64).max))
    if bad.any():
        i = int(np.argmax(bad))
        upper = n_classes if n_classes is not None else "inf"
        raise InvalidInput(f"{name}[{i}] = {int(out[i])} is out of range [0, {upper})")
    return out


def _floats(values: object, name: str, *, allow_nan: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} is not numeric: {exc}") from None
    finite = np.isfinite(arr) | (np.isnan(arr) if allow_nan else False)
    if not np.all(finite):
        raise InvalidInput(f"{name} contains NaN or infinite values")
    return arr


def _probabilities(scores: object, n: int, n_classes: int) -> np.ndarray:
    """Validate an (N, C) softmax matrix.  Rows must sum to ~1 so that logits passed by mistake
    fail loudly instead of producing a plausible-looking but meaningless log-loss."""
    p = _floats(scores, "scores")
    if p.ndim != 2 or p.shape != (n, n_classes):
        raise InvalidInput(f"scores must have shape ({n}, {n_classes}), got {p.shape}")
    if (p < 0).any() or (p > 1).any():
        raise InvalidInput("scores must be probabilities in [0, 1] (softmax output, not logits)")
    if n and not np.allclose(p.sum(axis=1), 1.0, atol=1e-2):
        raise InvalidInput("scores rows must sum to 1 (softmax output, not logits)")
    return p


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InvalidInput(f"k must be a non-negative integer, got {k!r}")
    return int(k)


# ------------------------------------------------------------------------------ classification


def classification_report(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
) -> dict:
    """Accuracy, macro-F1, confusion matrix (rows = true, cols = predicted) and per-class P/R/F1.

    ``macro_f1`` averages F1 over the classes that occur in ``y_true`` *or* ``y_pred`` (the
    scikit-learn default): a class that is neither present nor predicted carries no evidence either
    way and would otherwise drag the mean towards 0 on small evaluation sets.  Precision of a class
    that is never predicted, and recall of a class with no support, are 0.0.  With ``scores`` (an
    (N, C) softmax) the result also holds ``log_loss`` (natural log, probabilities clipped at 1e-15
    so a confident mistake costs ~34.5 rather than infinity).
    """
    names = _class_names(class_names)
    n_classes = len(names)
    yt = _labels(y_true, "y_true", n_classes)
    yp = _labels(y_pred, "y_pred", n_classes)
    if len(yt) != len(yp):
        raise InvalidInput(f"y_true has {len(yt)} labels but y_pred has {len(yp)}")
    if len(yt) == 0:
        raise InvalidInput("y_true is empty; metrics are undefined")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (yt, yp), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    report: dict = {
        "accuracy": float(tp.sum() / len(yt)),
        "macro_f1": float(f1[present].mean()),
        "confusion_matrix": cm.tolist(),
        "classes": names,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
    }
    if scores is not None:
        p = _probabilities(scores, len(yt), n_classes)
        p_true = np.clip(p[np.arange(len(yt)), yt], _PROB_EPS, 1.0)
        report["log_loss"] = float(-np.log(p_true).mean())
    return report


def worst_classification(y_true: Sequence[int], scores: np.ndarray, k: int) -> list[dict]:
    """The ``k`` samples whose true class got the lowest probability -- the ones to look at first.

    Ranking by ``p_true`` rather than by "wrong or not" also surfaces correct-but-unsure samples
    and orders mistakes by how confidently wrong they are.  Ties keep index order.
    """
    k = _check_k(k)
    p = _floats(scores, "scores")
    if p.ndim != 2:
        raise InvalidInput(f"scores must have shape (N, C), got {p.shape}")
    yt = _labels(y_true, "y_true", p.shape[1])
    p = _probabilities(p, len(yt), p.shape[1])
    p_true = p[np.arange(len(yt)), yt]
    order = np.argsort(p_true, kind="stable")[:k]
    pred = p.argmax(axis=1)
    return [
        {"index": int(i), "true": int(yt[i]), "pred": int(pred[i]), "p_true": float(p_true[i])}
        for i in order
    ]


# ----------------------------------------------------------------------------------- detection


def _boxes(values: object, name: str) -> np.ndarray:
    b = _floats(values, name)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InvalidInput(f"{name} must have shape (n, 4) xyxy, got {b.shape}")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise InvalidInput(f"{name} has a box with x2 < x1 or y2 < y1 (expected xyxy, not xywh?)")
    return b


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU without validation; zero-area unions give 0 rather than a division warning."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M); continuous coordinates (no +1)."""
    return _iou(_boxes(a, "a"), _boxes(b, "b"))


Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _check_detection(gt: Sequence, pred: Sequence, n_classes: int | None) -> list[Image]:
    """Normalise to (gt_boxes, gt_labels, pred_boxes, pred_scores, pred_labels) per image."""
    if len(gt) != len(pred):
        raise InvalidInput(f"gt has {len(gt)} images but pred has {len(pred)}")
    images: list[Image] = []
    for i, (g, p) in enumerate(zip(gt, pred)):
        if len(g) != 2:
            raise InvalidInput(f"gt[{i}] must be (boxes, labels)")
        if len(p) != 3:
            raise InvalidInput(f"pred[{i}] must be (boxes, scores, labels)")
        gb, gl = _boxes(g[0], f"gt[{i}] boxes"), _labels(g[1], f"gt[{i}] labels", n_classes)
        pb, pl = _boxes(p[0], f"pred[{i}] boxes"), _labels(p[2], f"pred[{i}] labels", n_classes)
        ps = _floats(p[1], f"pred[{i}] scores").reshape(-1)
        if len(gb) != len(gl):
            raise InvalidInput(f"gt[{i}] has {len(gb)} boxes but {len(gl)} labels")
        if not len(pb) == len(ps) == len(pl):
            raise InvalidInput(f"pred[{i}] has {len(pb)} boxes, {len(ps)} scores, {len(pl)} labels")
        images.append((gb, gl, pb, ps, pl))
    return images


def _greedy_match(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """COCO matching for one image and class; ``iou`` rows are predictions by descending score.

    Each prediction, best first, takes the still-unmatched gt with the highest IoU if that IoU is
    >= threshold (on equal IoU the later gt wins, exactly as pycocotools' loop does), so a gt is
    matched at most once and a lower-scored duplicate becomes a false positive.
    """
    n_pred, n_gt = iou.shape
    tp = np.zeros(n_pred, dtype=bool)
    used = np.zeros(n_gt, dtype=bool)
    if n_gt == 0:
        return tp, used
    for d in range(n_pred):
        cand = np.where(used, -1.0, iou[d])[::-1]
        g = n_gt - 1 - int(np.argmax(cand))
        if iou[d, g] >= threshold and not used[g]:
            tp[d] = used[g] = True
    return tp, used


def _per_class(image: Image, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ``c`` of one image: (pred scores, descending; IoU matrix pred x gt in that order).
    The stable sort keeps input order among equal scores, as pycocotools does."""
    gb, gl, pb, ps, pl = image
    sel = pl == c
    order = np.argsort(-ps[sel], kind="mergesort")
    return ps[sel][order], _iou(pb[sel][order], gb[gl == c])


def _average_precision(tp_sorted: np.ndarray, n_gt: int) -> float:
    """101-point interpolated AP of detections already sorted by descending score.

    The precision envelope (running max from the right) makes precision monotone in recall, then
    precision is read at the first detection whose recall reaches each of 0.00, 0.01, ..., 1.00;
    recall levels never reached contribute 0.
    """
    if tp_sorted.size == 0:
        return 0.0
    tp = np.cumsum(tp_sorted)
    fp = np.cumsum(~tp_sorted)
    recall = tp / n_gt
    precision = tp / (tp + fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    q = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(q.mean())


def _ranked(images: list[Image], c: int, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Class ``c`` over all images: every prediction's score, descending; whether it is a true positive
    at each IoU threshold (thresholds x predictions); and the number of gt boxes."""
    scores, tps, n_gt = [], [], 0
    for image in images:
        if not ((image[1] == c).any() or (image[4] == c).any()):
            continue
        s, iou = _per_class(image, c)
        n_gt += iou.shape[1]
        scores.append(s)
        tps.append(np.stack([_greedy_match(iou, t)[0] for t in thresholds]).reshape(len(thresholds), -1))
    s_all = np.concatenate(scores) if scores else np.zeros(0)
    tp_all = np.concatenate(tps, axis=1) if tps else np.zeros((len(thresholds), 0), dtype=bool)
    order = np.argsort(-s_all, kind="mergesort")
    return s_all[order], tp_all[:, order], n_gt


def _image_errors(image: Image, c: int, iou: float, score_threshold: float) -> tuple[int, int, int]:
    """(true positives, false positives, missed gt) of class ``c`` in one image, counting only the
    predictions with score >= ``score_threshold``, matched at IoU >= ``iou``."""
    s, ious = _per_class(image, c)
    tp, used = _greedy_match(ious[s >= score_threshold], float(iou))
    return int(tp.sum()), int((~tp).sum()), int((~used).sum())


def detection_report(
    gt: Sequence[tuple[np.ndarray, np.ndarray]],
    pred: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    *,
    score_threshold: float = SCORE_THRESHOLD,
) -> dict:
    """COCO-style mAP@0.5 and mAP@[0.5:0.95] plus per-class AP, precision and recall.

    AP uses every prediction whatever its score (as COCO does -- low-confidence detections can
    only add recall).  ``precision50``/``recall50`` instead describe the detector as deployed:
    IoU 0.5 and only predictions with score >= ``score_threshold``; precision is 0.0 when nothing
    passes the threshold.  Classes with no gt get ``ap50``/``ap``/``recall50`` = None and are left
    out of the means (with nothing to find, AP is undefined; their false positives still show in
    ``precision50`` and ``worst_detection``).  ``map50``/``map`` are None when no class has any gt.
    """
    names = _class_names(class_names)
    images = _check_detection(gt, pred, len(names))
    n_t = len(IOU_THRESHOLDS)
    per_class: dict[str, dict] = {}
    ap50s: list[float] = []
    aps: list[float] = []
    for c, name in enumerate(names):
        s_all, tp_all, n_gt = _ranked(images, c, IOU_THRESHOLDS)
        shown = tp_all[0][s_all >= score_threshold]
        entry: dict = {
            "ap50": None,
            "ap": None,
            "precision50": float(shown.mean()) if shown.size else 0.0,
            "recall50": None,
            "gt": int(n_gt),
        }
        if n_gt:
            per_t = [_average_precision(tp_all[t], n_gt) for t in range(n_t)]
            entry.update(ap50=per_t[0], ap=float(np.mean(per_t)), recall50=float(shown.sum() / n_gt))
            ap50s.append(per_t[0])
            aps.append(entry["ap"])
        per_class[name] = entry
    return {
        "map50": float(np.mean(ap50s)) if ap50s else None,
        "map": float(np.mean(aps)) if aps else None,
        "per_class": per_class,
        "images": len(images),
    }


def worst_detection(
    gt: Sequence[tuple[np.ndarray, np.ndarray]],
    pred: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    k: int,
    iou: float = 0.5,
    *,
    score_threshold: float = SCORE_THRESHOLD,
) -> list[dict]:
    """Up to ``k`` images with the most errors: missed gt + false positives among predictions with
    score >= ``score_threshold``, matched per class at IoU >= ``iou``.

    Images without a single error are never listed -- a "worst" list padded with perfect images
    would send a reviewer looking for problems that are not there.  Ties keep index order.
    """
    k = _check_k(k)
    if not 0.0 < float(iou) <= 1.0:
        raise InvalidInput(f"iou must be in (0, 1], got {iou}")
    images = _check_detection(gt, pred, None)
    rows = []
    for index, image in enumerate(images):
        missed = false_pos = 0
        for c in np.union1d(image[1], image[4]):
            _, fp, fn = _image_errors(image, int(c), iou, score_threshold)
            missed += fn
            false_pos += fp
        if missed + false_pos:
            rows.append({"index": index, "missed": missed, "false_positives": false_pos})
    rows.sort(key=lambda r: -(r["missed"] + r["false_positives"]))
    return rows[:k]


def detection_pr_curves(
    gt: Sequence[tuple[np.ndarray, np.ndarray]],
    pred: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    iou: float = IOU_THRESHOLDS[0],
) -> list[dict]:
    """Per class, the precision-recall curve of its predictions ranked by score, matched at IoU >= ``iou``
    exactly as :func:`detection_report` matches them: one point per prediction (``recall``,
    ``precision``, ``thresholds`` the score there), ``positives`` the gt boxes and ``ap`` the
    101-point AP (at the default IoU 0.5, the report's ``ap50``; None for a class with no gt)."""
    names = _class_names(class_names)
    images = _check_detection(gt, pred, len(names))
    out = []
    for c, name in enumerate(names):
        s, tp, n_gt = _ranked(images, c, (float(iou),))
        hits = tp[0]
        cum = np.cumsum(hits)
        precision = cum / np.arange(1, len(hits) + 1)
        recall = cum / n_gt if n_gt else np.zeros(len(hits))
        out.append({"class": name, "positives": int(n_gt), "ap": _average_precision(hits, n_gt) if n_gt else None,
                    "recall": recall.tolist(), "precision": precision.tolist(), "thresholds": s.tolist()})
    return out


def detection_errors(
    gt: Sequence[tuple[np.ndarray, np.ndarray]],
    pred: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_classes: int,
    iou: float = 0.5,
    *,
    score_threshold: float = SCORE_THRESHOLD,
) -> np.ndarray:
    """Per image and class, (true positives, false positives, missed gt) as :func:`worst_detection`
    counts them: an (images, classes, 3) int64 array."""
    if not 0.0 < float(iou) <= 1.0:
        raise InvalidInput(f"iou must be in (0, 1], got {iou}")
    images = _check_detection(gt, pred, n_classes)
    out = np.zeros((len(images), n_classes, 3), np.int64)
    for i, image in enumerate(images):
        for c in np.union1d(image[1], image[4]):
            out[i, int(c)] = _image_errors(image, int(c), iou, score_threshold)
    return out


# --------------------------------------------------------------------------------- forecasting


def _forecast_arrays(
    y_true: np.ndarray, y_pred: np.ndarray, missing_value: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (N, horizon, sensors) arrays and return (truth, prediction, valid mask).

    NaN in ``y_true`` always counts as missing (several traffic data sets use it instead of 0);
    NaN in ``y_pred`` is a model bug and raises rather than vanishing into a mask.
    """
    yt = _floats(y_true, "y_true", allow_nan=True)
    yp = _floats(y_pred, "y_pred")
    if yt.ndim != 3:
        raise InvalidInput(f"y_true must have shape (N, horizon, sensors), got {yt.shape}")
    if yt.shape != yp.shape:
        raise InvalidInput(f"y_true has shape {yt.shape} but y_pred has {yp.shape}")
    valid = ~np.isnan(yt)
    if missing_value is not None and not math.isnan(float(missing_value)):
        valid &= yt != float(missing_value)
    return yt, yp, valid


def _errors(yt: np.ndarray, yp: np.ndarray, valid: np.ndarray) -> dict:
    """MAE/RMSE over ``valid`` entries; MAPE also skips true zeros (division), as a fraction."""
    if not valid.any():
        return {"mae": None, "rmse": None, "mape": None}
    err = (yp - yt)[valid]
    truth = yt[valid]
    nonzero = truth != 0
    mape = float(np.mean(np.abs(err[nonzero] / truth[nonzero]))) if nonzero.any() else None
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": mape,
    }


def forecasting_report(
    y_true: np.ndarray, y_pred: np.ndarray, missing_value: float | None = 0.0
) -> dict:
    """Masked MAE / RMSE / MAPE overall and per horizon step (METR-LA / DCRNN convention).

    Entries whose truth equals ``missing_value`` are sensor dropouts, not zero traffic, so they are
    excluded from every metric; ``None`` keeps all entries.  The masked mean is over valid entries
    (not a per-sample mean), so every real measurement weighs the same.  A step with no valid entry
    reports None.
    """
    yt, yp, valid = _forecast_arrays(y_true, y_pred, missing_value)
    report = _errors(yt, yp, valid)
    report["per_horizon"] = [
        {"step": h + 1, **_errors(yt[:, h], yp[:, h], valid[:, h])} for h in range(yt.shape[1])
    ]
    return report


def worst_forecasting(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, missing_value: float | None = 0.0
) -> list[dict]:
    """The ``k`` samples with the highest masked MAE; samples with no valid entry are skipped
    (their error is unknown, not zero).  Ties keep index order."""
    k = _check_k(k)
    yt, yp, valid = _forecast_arrays(y_true, y_pred, missing_value)
    count = valid.reshape(len(yt), -1).sum(axis=1)
    total = np.where(valid, np.abs(yp - np.nan_to_num(yt)), 0.0).reshape(len(yt), -1).sum(axis=1)
    idx = np.flatnonzero(count > 0)
    mae = total[idx] / count[idx]
    order = np.argsort(-mae, kind="stable")[:k]
    return [{"index": int(idx[i]), "mae": float(mae[i])} for i in order]


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, RMSE and R² over all entries (any shape, flattened).

    R² is None when the truth is constant: 1 - SS_res/SS_tot divides by zero, and reporting 1.0
    or 0.0 there (as some libraries do) would make an uninformative test set look meaningful.
    """
    yt = _floats(y_true, "y_true")
    yp = _floats(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise InvalidInput(f"y_true has shape {yt.shape} but y_pred has {yp.shape}")
    if yt.size == 0:
        raise InvalidInput("y_true is empty; metrics are undefined")
    err = (yp - yt).ravel()
    ss_tot = float(np.sum((yt - yt.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": _num(1.0 - float(np.sum(err**2)) / ss_tot) if ss_tot > 0 else None,
    }
