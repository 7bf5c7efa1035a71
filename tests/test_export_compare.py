"""How an exported detector is judged against the trained one (boxes near the score threshold may flip)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from veml.adapters.torch_export import _compare_detection  # noqa: E402


def _dets(boxes, scores, labels):
    return [np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(labels, np.int64)]


def test_identical_detections_agree_fully():
    d = _dets([[0, 0, 10, 10], [20, 20, 30, 40]], [0.9, 0.6], [0, 1])
    assert _compare_detection(d, d) == (0.0, 1.0)


def test_a_box_near_the_threshold_may_appear_on_one_side_only():
    ref = _dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.31], [0, 2])
    got = _dets([[0.0001, 0, 10, 10]], [0.9], [0])
    diff, agreement = _compare_detection(ref, got)
    assert agreement == 1.0 and diff == pytest.approx(1e-4, abs=1e-6)


def test_a_confident_box_missing_or_relabelled_is_disagreement():
    ref = _dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 2])
    missing = _dets([[0, 0, 10, 10]], [0.9], [0])
    assert _compare_detection(ref, missing)[1] == pytest.approx(2 / 3)  # 2 strong ref boxes + 1 strong got box, 2 matched
    relabelled = _dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 1])
    assert _compare_detection(ref, relabelled)[1] == pytest.approx(0.5)
    moved = _dets([[0, 0, 10, 10], [53, 50, 63, 60]], [0.9, 0.8], [0, 2])  # IoU 0.54: not the same box
    assert _compare_detection(ref, moved)[1] == pytest.approx(0.5)
