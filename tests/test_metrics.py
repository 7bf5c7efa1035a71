"""Metrics checked against numbers worked out by hand, so a wrong formula cannot pass.

Every expected value below is derived in a comment from the inputs, not copied from the code's own
output.  Detection cases use axis-aligned boxes sharing an edge with the gt so IoU is a simple
ratio of heights (gt [0,0,10,10] vs pred [0,0,10,h] -> IoU = h/10, exact in floating point).
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from veml.errors import InvalidInput
from veml.metrics import (
    IOU_THRESHOLDS,
    box_iou,
    classification_report,
    detection_report,
    forecasting_report,
    regression_report,
    worst_classification,
    worst_detection,
    worst_forecasting,
)

GT_BOX = [0.0, 0.0, 10.0, 10.0]


def _plain_json(value: object) -> None:
    """Everything must be a builtin JSON type -- np.float64 slips through json.dumps, np.int64 not."""
    json.dumps(value)
    if isinstance(value, dict):
        for v in value.values():
            _plain_json(v)
    elif isinstance(value, list):
        for v in value:
            _plain_json(v)
    else:
        assert type(value) in (int, float, str, bool, type(None)), type(value)


def _img(gt_boxes, gt_labels, pred_boxes, scores, pred_labels):
    gt = (np.array(gt_boxes, float).reshape(-1, 4), np.array(gt_labels, int))
    pred = (np.array(pred_boxes, float).reshape(-1, 4), np.array(scores, float), np.array(pred_labels, int))
    return gt, pred


def _report(images, names=("a",)):
    gt, pred = zip(*images)
    return detection_report(list(gt), list(pred), list(names))


# ------------------------------------------------------------------------------ classification


def test_classification_three_classes_by_hand():
    # Confusion matrix (rows true, cols pred): [[3,1,0],[0,2,0],[2,1,1]]
    cm = [[3, 1, 0], [0, 2, 0], [2, 1, 1]]
    y_true, y_pred = [], []
    for t, row in enumerate(cm):
        for p, n in enumerate(row):
            y_true += [t] * n
            y_pred += [p] * n
    r = classification_report(y_true, y_pred, ["cat", "dog", "eel"])
    assert r["confusion_matrix"] == cm
    assert r["classes"] == ["cat", "dog", "eel"]
    assert r["accuracy"] == pytest.approx(6 / 10)
    # precision = diag / column sums (5, 4, 1); recall = diag / row sums (4, 2, 4)
    # F1: cat 2*.6*.75/1.35 = 2/3, dog 2*.5*1/1.5 = 2/3, eel 2*1*.25/1.25 = 0.4
    expected = {"cat": (0.6, 0.75, 2 / 3, 4), "dog": (0.5, 1.0, 2 / 3, 2), "eel": (1.0, 0.25, 0.4, 4)}
    for name, (p, rc, f1, support) in expected.items():
        got = r["per_class"][name]
        assert got["precision"] == pytest.approx(p)
        assert got["recall"] == pytest.approx(rc)
        assert got["f1"] == pytest.approx(f1)
        assert got["support"] == support
    assert r["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.4) / 3)  # 26/45
    assert "log_loss" not in r
    _plain_json(r)


def test_classification_never_predicted_and_absent_classes():
    # class 1 present but never predicted -> precision 0.0 (documented), recall 0, F1 0;
    # class 2 neither present nor predicted -> reported as zeros but left out of macro_f1.
    r = classification_report([0, 0, 1], [0, 0, 0], ["a", "b", "c"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_class"]["c"]["support"] == 0
    # a: P = 2/3, R = 1 -> F1 = 0.8; macro over {a, b} = 0.4 (not 0.8/3)
    assert r["macro_f1"] == pytest.approx(0.4)


def test_classification_log_loss():
    scores = np.array([[0.5, 0.5], [0.75, 0.25]])
    r = classification_report([0, 1], [0, 0], ["x", "y"], scores=scores)
    # p_true = 0.5 and 0.25 -> (ln 2 + ln 4) / 2 = 1.5 ln 2
    assert r["log_loss"] == pytest.approx(1.5 * math.log(2))
    _plain_json(r)


def test_worst_classification_order_and_ties():
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    worst = worst_classification([0, 0, 1, 0, 1], scores, k=3)
    # p_true: 0.9, 0.4, 0.8, 0.4, 0.5 -> 1 and 3 tie at 0.4 (index order), then 4
    assert [w["index"] for w in worst] == [1, 3, 4]
    assert worst[0] == {"index": 1, "true": 0, "pred": 1, "p_true": 0.4}
    assert worst_classification([0, 1], np.eye(2), k=10) == [
        {"index": 0, "true": 0, "pred": 0, "p_true": 1.0},
        {"index": 1, "true": 1, "pred": 1, "p_true": 1.0},
    ]
    _plain_json(worst)


# ----------------------------------------------------------------------------------- detection


def test_box_iou_values_and_shape():
    a = np.array([[0, 0, 2, 2]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], float)
    # overlap 1x1 = 1, union 4 + 4 - 1 = 7
    assert box_iou(a, b) == pytest.approx(np.array([[1 / 7, 1.0, 0.0]]))
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_iou_thresholds_are_ten():
    assert len(IOU_THRESHOLDS) == 10
    assert IOU_THRESHOLDS[0] == 0.5 and IOU_THRESHOLDS[4] == 0.7 and IOU_THRESHOLDS[-1] == 0.95


def test_perfect_detection():
    boxes = [[0, 0, 10, 10], [20, 20, 40, 30], [5, 5, 8, 9]]
    images = [
        _img(boxes, [0, 1, 1], boxes, [0.9, 0.8, 0.7], [0, 1, 1]),
        _img(boxes[:1], [1], boxes[:1], [0.95], [1]),
    ]
    r = _report(images, ("a", "b"))
    assert r["map50"] == 1.0 and r["map"] == 1.0
    assert r["images"] == 2
    assert r["per_class"]["b"] == {"ap50": 1.0, "ap": 1.0, "precision50": 1.0, "recall50": 1.0, "gt": 3}
    _plain_json(r)


def test_false_positive_ranked_above_true_positive():
    # 2 gt; predictions by score: TP (0.9), FP (0.8), TP (0.7)
    #   cumulative recall    = 0.5, 0.5, 1.0
    #   cumulative precision = 1/1, 1/2, 2/3  -> envelope 1, 2/3, 2/3
    # 101-point: r = 0.00..0.50 (51 points) first reached at detection 1 -> 1.0;
    #            r = 0.51..1.00 (50 points) first reached at detection 3 -> 2/3
    # AP = (51 * 1 + 50 * 2/3) / 101 = 84.333.../101 = 0.83498...
    far = [50, 50, 60, 60]
    other = [20, 20, 30, 30]
    r = _report([_img([GT_BOX, other], [0, 0], [GT_BOX, far, other], [0.9, 0.8, 0.7], [0, 0, 0])])
    expected = (51 + 50 * 2 / 3) / 101
    assert r["map50"] == pytest.approx(expected)
    assert r["map"] == pytest.approx(expected)  # exact boxes: same at every threshold
    assert r["per_class"]["a"]["precision50"] == pytest.approx(2 / 3)
    assert r["per_class"]["a"]["recall50"] == 1.0


def test_recall_never_reaching_one():
    # 2 gt, one perfect prediction: recall 0.5 with precision 1 -> points 0.00..0.50 = 51 of 101
    r = _report([_img([GT_BOX, [20, 20, 30, 30]], [0, 0], [GT_BOX], [0.9], [0])])
    assert r["map50"] == pytest.approx(51 / 101)
    assert r["per_class"]["a"]["recall50"] == 0.5


@pytest.mark.parametrize(("height", "matched"), [(4.9, False), (5.0, True), (5.1, True)])
def test_iou_around_half_flips_the_match(height, matched):
    # IoU = height / 10: 0.49 misses, exactly 0.50 matches (>=, as COCO), 0.51 matches
    pred = [0, 0, 10, height]
    assert box_iou(np.array([GT_BOX]), np.array([pred]))[0, 0] == pytest.approx(height / 10)
    r = _report([_img([GT_BOX], [0], [pred], [0.9], [0])])
    assert r["map50"] == (1.0 if matched else 0.0)
    assert worst_detection(*zip(*[_img([GT_BOX], [0], [pred], [0.9], [0])]), k=5) == (
        [] if matched else [{"index": 0, "missed": 1, "false_positives": 1}]
    )


def test_gt_matched_only_once():
    # Two predictions on the same gt plus one on a second gt: the duplicate (0.8) is a false
    # positive, so this is the TP, FP, TP case above: AP = (51 + 50*2/3)/101.
    other = [20, 20, 30, 30]
    dup = [0, 0, 10, 9]  # IoU 0.9 with GT_BOX
    r = _report([_img([GT_BOX, other], [0, 0], [GT_BOX, dup, other], [0.9, 0.8, 0.7], [0, 0, 0])])
    assert r["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert r["per_class"]["a"]["precision50"] == pytest.approx(2 / 3)


def test_matching_is_by_score_not_by_iou():
    # One gt; pred A IoU 0.6 score 0.9, pred B IoU 1.0 score 0.8.
    # t in {0.50, 0.55, 0.60}: A takes the gt (higher score first), B is FP after full recall -> AP 1
    # t in {0.65 .. 0.95} (7 thresholds): A is FP, B is TP -> precision 0, 1/2; envelope 1/2 -> AP 0.5
    # map = (3 * 1 + 7 * 0.5) / 10 = 0.65
    r = _report([_img([GT_BOX], [0], [[0, 0, 10, 6], GT_BOX], [0.9, 0.8], [0, 0])])
    assert r["map50"] == 1.0
    assert r["map"] == pytest.approx(0.65)
    assert worst_detection(*zip(*[_img([GT_BOX], [0], [[0, 0, 10, 6], GT_BOX], [0.9, 0.8], [0, 0])]),
                           k=1) == [{"index": 0, "missed": 0, "false_positives": 1}]


def test_second_prediction_falls_back_to_next_best_unmatched_gt():
    # gt1 [0,0,10,10], gt2 [0,0,10,8]. p1 = gt1 (0.9) takes gt1 (IoU 1 vs 0.8).
    # p2 [0,0,10,9.5] (0.8): IoU 0.95 with gt1 (taken) and 8/9.5 = 0.842 with gt2 -> matches gt2
    # for t <= 0.80 (7 thresholds, AP 1); for t in {0.85, 0.90, 0.95} p2 is FP, gt2 missed:
    # recall 0.5 at precision 1 -> AP 51/101.  map = (7 + 3 * 51/101) / 10
    gts = [GT_BOX, [0, 0, 10, 8]]
    r = _report([_img(gts, [0, 0], [GT_BOX, [0, 0, 10, 9.5]], [0.9, 0.8], [0, 0])])
    assert r["map50"] == 1.0
    assert r["map"] == pytest.approx((7 + 3 * 51 / 101) / 10)


def test_map_over_thresholds_with_iou_exactly_070():
    # IoU = 7/10 = 0.7 exactly: matched at 0.50, 0.55, 0.60, 0.65, 0.70 (5 thresholds, AP 1),
    # unmatched at 0.75, 0.80, 0.85, 0.90, 0.95 (5 thresholds, AP 0) -> map = 5/10
    r = _report([_img([GT_BOX], [0], [[0, 0, 10, 7]], [0.9], [0])])
    assert r["map50"] == 1.0
    assert r["map"] == pytest.approx(0.5)
    assert r["per_class"]["a"]["ap"] == pytest.approx(0.5)


def test_classes_without_gt_are_excluded_from_mean():
    # a: perfect (AP 1). b: no gt, one prediction (a pure false positive). c: nothing at all.
    r = _report([_img([GT_BOX], [0], [GT_BOX, [30, 30, 40, 40]], [0.9, 0.9], [0, 1])], ("a", "b", "c"))
    assert r["map50"] == 1.0 and r["map"] == 1.0  # not 1/3 or 1/2
    assert r["per_class"]["b"] == {"ap50": None, "ap": None, "precision50": 0.0, "recall50": None, "gt": 0}
    assert r["per_class"]["c"]["gt"] == 0 and r["per_class"]["c"]["ap"] is None
    # a class with gt but no prediction counts as AP 0
    r2 = _report([_img([GT_BOX, GT_BOX], [0, 1], [GT_BOX], [0.9], [0])], ("a", "b"))
    assert r2["map50"] == pytest.approx(0.5)
    _plain_json(r)
    assert _report([_img([], [], [], [], [])])["map"] is None


def test_precision50_ignores_low_scores():
    # TP at 0.9, FP at 0.3: the FP counts for AP (after full recall: no effect) but not at score 0.5
    r = _report([_img([GT_BOX], [0], [GT_BOX, [30, 30, 40, 40]], [0.9, 0.3], [0, 0])])
    assert r["per_class"]["a"]["precision50"] == 1.0
    assert r["map50"] == 1.0


def test_worst_detection_ordering():
    other = [20, 20, 30, 30]
    far = [50, 50, 60, 60]
    images = [
        _img([GT_BOX], [0], [], [], []),  # 1 missed
        _img([GT_BOX, other], [0, 0], [far, [70, 70, 80, 80], GT_BOX], [0.9, 0.8, 0.7], [0, 0, 0]),
        _img([GT_BOX], [0], [GT_BOX, far], [0.9, 0.2], [0, 0]),  # perfect above 0.5: not listed
        _img([GT_BOX], [0], [GT_BOX], [0.9], [1]),  # wrong class: 1 missed + 1 false positive
    ]
    gt, pred = zip(*images)
    worst = worst_detection(list(gt), list(pred), k=10)
    assert worst == [
        {"index": 1, "missed": 1, "false_positives": 2},
        {"index": 3, "missed": 1, "false_positives": 1},
        {"index": 0, "missed": 1, "false_positives": 0},
    ]
    assert worst_detection(list(gt), list(pred), k=1) == worst[:1]
    # a looser IoU does not rescue anything here, a strict one breaks nothing that was exact
    assert worst_detection(list(gt), list(pred), k=10, iou=0.95) == worst


def _coco_map(images, n_classes):
    """(map, map50) from pycocotools or faster_coco_eval, whichever is importable."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def load(ds):
            coco = COCO()
            coco.dataset = ds
            coco.createIndex()
            return coco
    except ImportError:
        try:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval

            load = COCO
        except ImportError:
            pytest.skip("neither pycocotools nor faster_coco_eval is installed")
    anns, dets = [], []
    for i, ((gb, gl), (pb, ps, pl)) in enumerate(images):
        for b, c in zip(gb, gl):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            # ids from 1: pycocotools stores the matched gt id and treats 0 as "unmatched"
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(pb, ps, pl):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    coco_gt = load({"images": [{"id": i + 1} for i in range(len(images))], "annotations": anns,
                    "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


def test_cross_check_against_coco_implementation():
    rng = np.random.default_rng(7)
    n_images, n_classes = 6, 3
    # gt counts per class coprime to 10, so no recall k/n lands exactly on a 0.01 grid point where
    # pycocotools' float-noisy linspace and our exact decimals could round differently.
    gt_labels = [[] for _ in range(n_images)]
    for c, count in enumerate((7, 11, 13)):
        for i in rng.integers(0, n_images, size=count):
            gt_labels[i].append(c)
    images = []
    for labels in gt_labels:
        xy = rng.uniform(0, 80, size=(len(labels), 2))
        wh = rng.uniform(5, 30, size=(len(labels), 2))
        gb = np.hstack([xy, xy + wh])
        jitter = rng.normal(0, 3, size=gb.shape)
        extra_xy = rng.uniform(0, 80, size=(3, 2))
        pb = np.vstack([gb + jitter, np.hstack([extra_xy, extra_xy + 15])])
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        pl = np.concatenate([labels, rng.integers(0, n_classes, size=3)]).astype(int)
        flip = rng.random(len(pl)) < 0.15
        pl[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
        ps = rng.uniform(0.05, 1.0, size=len(pl))
        images.append(((gb, np.array(labels, int)), (pb, ps, pl)))
    coco_map, coco_map50 = _coco_map(images, n_classes)
    r = _report(images, ("a", "b", "c"))
    assert r["map"] == pytest.approx(coco_map, abs=1e-9)
    assert r["map50"] == pytest.approx(coco_map50, abs=1e-9)


# --------------------------------------------------------------------------------- forecasting

# (N=2, horizon=2, sensors=2); zeros in the truth are missing readings
Y_TRUE = np.array([[[1.0, 0.0], [2.0, 4.0]], [[0.0, 5.0], [3.0, 0.0]]])
Y_PRED = np.array([[[2.0, 9.0], [2.0, 2.0]], [[9.0, 4.0], [6.0, 9.0]]])


def test_forecasting_masks_missing_values():
    # valid (truth, error): (1, +1) (2, 0) (4, -2) (5, -1) (3, +3)
    r = forecasting_report(Y_TRUE, Y_PRED)
    assert r["mae"] == pytest.approx(7 / 5)
    assert r["rmse"] == pytest.approx(math.sqrt(15 / 5))
    assert r["mape"] == pytest.approx((1 / 1 + 0 / 2 + 2 / 4 + 1 / 5 + 3 / 3) / 5)  # 0.54
    step1, step2 = r["per_horizon"]
    # step 1: (1, +1), (5, -1); step 2: (2, 0), (4, -2), (3, +3)
    assert step1 == pytest.approx({"step": 1, "mae": 1.0, "rmse": 1.0, "mape": (1 + 0.2) / 2})
    assert step2 == pytest.approx({"step": 2, "mae": 5 / 3, "rmse": math.sqrt(13 / 3), "mape": 0.5})
    _plain_json(r)


def test_forecasting_keep_all_and_nan_truth():
    # missing_value=None keeps the three zero readings (errors 9 each); MAPE still skips zeros
    r = forecasting_report(Y_TRUE, Y_PRED, missing_value=None)
    assert r["mae"] == pytest.approx((7 + 27) / 8)
    assert r["mape"] == pytest.approx(0.54)
    # NaN in the truth is always missing; NaN as missing_value works the same way
    nan_true = np.where(Y_TRUE == 0, np.nan, Y_TRUE)
    for mv in (None, float("nan"), 0.0):
        assert forecasting_report(nan_true, Y_PRED, missing_value=mv)["mae"] == pytest.approx(7 / 5)
    # everything missing: undefined, not 0
    empty = forecasting_report(np.zeros((1, 2, 1)), np.ones((1, 2, 1)))
    assert empty["mae"] is None and empty["per_horizon"][1]["rmse"] is None


def test_per_horizon_length():
    y = np.ones((3, 12, 5))
    steps = forecasting_report(y, y * 1.1)["per_horizon"]
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert all(s["mae"] == pytest.approx(0.1) for s in steps)


def test_worst_forecasting_order():
    # sample 0: errors 1, 0, 2 -> MAE 1; sample 1: errors 1, 3 -> MAE 2
    assert worst_forecasting(Y_TRUE, Y_PRED, k=5) == [{"index": 1, "mae": 2.0}, {"index": 0, "mae": 1.0}]
    assert worst_forecasting(Y_TRUE, Y_PRED, k=1) == [{"index": 1, "mae": 2.0}]
    # a sample with nothing valid is skipped, not reported as perfect
    y = np.concatenate([Y_TRUE, np.zeros((1, 2, 2))])
    assert [w["index"] for w in worst_forecasting(y, np.ones_like(y), k=5)] == [1, 0]


def test_regression_report():
    # errors 0, 0, 0, 1: MAE 1/4, RMSE sqrt(1/4); SS_tot = 2.25+0.25+0.25+2.25 = 5 -> R² = 1 - 1/5
    r = regression_report(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0]))
    assert r == pytest.approx({"mae": 0.25, "rmse": 0.5, "r2": 0.8})
    assert regression_report(np.ones(3), np.array([1.0, 2.0, 3.0]))["r2"] is None
    _plain_json(r)


# ----------------------------------------------------------------------------------- bad input

_GOOD_GT = [(np.array([GT_BOX]), np.array([0]))]
_GOOD_PRED = [(np.array([GT_BOX]), np.array([0.9]), np.array([0]))]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: classification_report([0, 1], [0], ["a", "b"]), "y_true has 2 labels but y_pred has 1"),
        (lambda: classification_report([0, 2], [0, 1], ["a", "b"]), r"y_true\[1\] = 2 is out of range"),
        (lambda: classification_report([0, -1], [0, 1], ["a", "b"]), "out of range"),
        (lambda: classification_report([0, 1], [0, 1.5], ["a", "b"]), "non-integral"),
        (lambda: classification_report([0, 1], [0, float("nan")], ["a", "b"]), "NaN"),
        (lambda: classification_report([[0, 1]], [[0, 1]], ["a", "b"]), "must be 1-D"),
        (lambda: classification_report([0], [0], ["a", "a"]), "duplicates"),
        (lambda: classification_report([], [], ["a"]), "empty"),
        (lambda: classification_report([0], [0], ["a", "b"], scores=np.ones((1, 3)) / 3), "shape"),
        (lambda: classification_report([0], [0], ["a", "b"], scores=np.array([[2.0, -1.0]])), "logits"),
        (lambda: classification_report([0], [0], ["a", "b"], scores=np.array([[0.2, 0.2]])), "sum to 1"),
        (lambda: worst_classification([0], np.array([[np.nan, 1.0]]), 1), "NaN"),
        (lambda: worst_classification([0], np.array([[0.5, 0.5]]), -1), "non-negative"),
        (lambda: box_iou(np.zeros((2, 3)), np.zeros((1, 4))), r"shape \(n, 4\)"),
        (lambda: box_iou(np.array([[10, 10, 5, 5]]), np.zeros((1, 4))), "x2 < x1"),
        (lambda: detection_report(_GOOD_GT, _GOOD_PRED * 2, ["a"]), "gt has 1 images but pred has 2"),
        (lambda: detection_report([(np.array([GT_BOX]), np.array([3]))], _GOOD_PRED, ["a"]),
         r"gt\[0\] labels\[0\] = 3 is out of range"),
        (lambda: detection_report(_GOOD_GT, [(np.array([GT_BOX]), np.array([np.nan]), np.array([0]))], ["a"]),
         "NaN"),
        (lambda: detection_report(_GOOD_GT, [(np.array([GT_BOX]), np.array([0.5, 0.6]), np.array([0]))], ["a"]),
         "1 boxes, 2 scores, 1 labels"),
        (lambda: detection_report(_GOOD_GT, [(np.array([GT_BOX]), np.array([0.5]))], ["a"]), "boxes, scores, labels"),
        (lambda: worst_detection(_GOOD_GT, _GOOD_PRED, 1, iou=0.0), "iou must be"),
        (lambda: forecasting_report(np.ones((2, 3)), np.ones((2, 3))), r"\(N, horizon, sensors\)"),
        (lambda: forecasting_report(np.ones((2, 3, 1)), np.ones((2, 4, 1))), "y_pred has"),
        (lambda: forecasting_report(np.ones((1, 1, 1)), np.full((1, 1, 1), np.nan)), "y_pred contains NaN"),
        (lambda: worst_forecasting(np.ones((1, 1, 1)), np.full((1, 1, 1), np.inf), 1), "y_pred contains"),
        (lambda: regression_report(np.ones(3), np.ones(4)), "shape"),
        (lambda: regression_report(np.ones(2), np.array([1.0, np.nan])), "y_pred contains NaN"),
        (lambda: regression_report(np.array(["a"]), np.ones(1)), "not numeric"),
    ],
)
def test_bad_input_raises_one_line(call, match):
    with pytest.raises(InvalidInput, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_detection_analysis_of_stored_rows_matches_the_report():
    """The UI's detection analysis reads box rows in image pixels (xywh); its AP per class, curve end and
    per-image errors are the report's ap50 / worst_detection computed on the model's 64-px xyxy boxes."""
    import pyarrow as pa

    from veml.versions import detection_analysis as D

    rng = np.random.default_rng(3)
    names = ["car", "pedestrian", "sign"]
    sizes = {10 + i: (int(rng.integers(80, 400)), int(rng.integers(60, 300))) for i in range(12)}
    gt_rows, pred_rows, gt64, pred64 = [], [], [], []
    for did, (w, h) in sizes.items():
        g, p = [], []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
            g.append((did, str(rng.choice(names[:2])), x, y, rng.uniform(5, w * 0.3), rng.uniform(5, h * 0.3)))
        for _, cat, x, y, bw, bh in g:  # a jittered hit (or a clear miss), sometimes the wrong class
            shift = rng.uniform(0, 0.6) * bw
            p.append((did, cat if rng.random() < 0.8 else "sign", x + shift, y, bw, bh, float(rng.random())))
        p += [(did, str(rng.choice(names)), rng.uniform(0, w / 2), rng.uniform(0, h / 2), 20.0, 20.0, float(rng.random())) for _ in range(2)]
        gt_rows += g
        pred_rows += p
        sx, sy = 64 / w, 64 / h
        gt64.append((np.array([[r[2] * sx, r[3] * sy, (r[2] + r[4]) * sx, (r[3] + r[5]) * sy] for r in g], np.float32).reshape(-1, 4),
                     np.array([names.index(r[1]) for r in g], np.int64)))
        pred64.append((np.array([[r[2] * sx, r[3] * sy, (r[2] + r[4]) * sx, (r[3] + r[5]) * sy] for r in p], np.float32).reshape(-1, 4),
                       np.array([r[6] for r in p]), np.array([names.index(r[1]) for r in p], np.int64)))
    cols = ("data_id", "category", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "score")
    truth = pa.table({k: [r[i] for r in gt_rows] for i, k in enumerate(cols[:6])})
    preds = pa.table({k: [r[i] for r in pred_rows] for i, k in enumerate(cols)})
    b = D.boxes(names, list(sizes)[::-1], truth, preds)
    report = detection_report(gt64, pred64, names)
    curves = {c["class"]: c for c in D.pr_curves(b)}
    assert {k: c["ap"] for k, c in curves.items()} == pytest.approx({k: v["ap50"] for k, v in report["per_class"].items()}, abs=1e-9)
    assert 0 < report["map50"] < 1 and curves["sign"]["ap"] is None and curves["sign"]["positives"] == 0
    for k, v in report["per_class"].items():  # the curve ends at the recall of every box, whatever its score
        assert curves[k]["positives"] == v["gt"]
        assert curves[k]["thresholds"] == sorted(curves[k]["thresholds"], reverse=True)
    page = D.page(b, limit=100)
    worst = {w["index"] + 10: (w["false_positives"], w["missed"]) for w in worst_detection(gt64, pred64, 100)}
    assert {i["data_id"]: (i["fp"], i["fn"]) for i in page.items if i["errors"]} == worst
    assert [i["errors"] for i in page.items] == sorted((i["errors"] for i in page.items), reverse=True)
    assert sum(c["fn"] + c["tp"] for c in page.per_class.values()) == len(gt_rows)
    fp_car = D.page(b, "car", "fp", limit=100)
    assert fp_car.total == page.per_class["car"]["fp_images"] and all(i["fp"] for i in fp_car.items)
    low = D.page(b, threshold=0.0, sort="confidence", descending=False, limit=100)
    assert [i["confidence"] for i in low.items] == sorted(i["confidence"] for i in low.items)
    assert sum(i["predicted"] for i in low.items) == len(pred_rows)
    with pytest.raises(InvalidInput, match="unknown class"):
        D.page(b, "bus")
    with pytest.raises(InvalidInput, match="sort must be"):
        D.page(b, sort="loss")
