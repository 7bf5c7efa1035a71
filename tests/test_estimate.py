"""Label-free accuracy estimation (issue 15 part 3): ATC and agreement with the nearest training neighbour.

The arithmetic is checked against hand-built cases and against scikit-learn's own nearest-neighbour search; the
estimators' quality is measured in benchmarks/lifecycle_eval/estimators.py, not here.
"""

from __future__ import annotations

import numpy as np
import pytest

from veml.errors import InvalidInput
from veml.lifecycle.estimate import AGREEMENT_RATIO, FittedAgreement, FittedATC, nearest_labels, with_rotations


def _onehot(pred: np.ndarray, classes: int = 3, conf: float | np.ndarray = 0.9) -> np.ndarray:
    conf = np.broadcast_to(np.asarray(conf, np.float64), (len(pred),))
    s = np.repeat(((1 - conf) / (classes - 1))[:, None], classes, axis=1)
    s[np.arange(len(pred)), pred] = conf
    return s


def test_nearest_labels_match_scikit_learns_cosine_search() -> None:
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    ref, x = rng.random((300, 12)), rng.random((97, 12))
    labels = rng.integers(0, 5, 300)
    nn = NearestNeighbors(n_neighbors=1, metric="cosine").fit(ref)
    expected = labels[nn.kneighbors(x, return_distance=False)[:, 0]]
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert (nearest_labels(unit.astype(np.float32), labels, x, chunk=10) == expected).all()


def test_agreement_is_scaled_to_be_exact_on_the_held_out_split() -> None:
    # reference: class k sits on axis k; held-out: 20 samples, the model right on 18, agreeing with the neighbour on 16
    ref, ref_labels = np.eye(3), np.arange(3)
    truth = np.array([0, 1, 2] * 6 + [0, 1])
    feats = np.eye(3)[truth].copy()
    pred = truth.copy()
    pred[:2] = (truth[:2] + 1) % 3  # 2 wrong (and so disagreeing with the neighbour, who holds the truth)
    feats[2:4] = np.eye(3)[(truth[2:4] + 1) % 3]  # 2 right, but their neighbour says otherwise
    fitted = FittedAgreement.fit(ref, ref_labels, _onehot(pred), truth, feats)
    assert fitted.reference_accuracy == pytest.approx(0.9) and fitted.agree.mean() == pytest.approx(0.8)
    assert fitted.ratio == pytest.approx(0.9 / 0.8)
    on_held = fitted.estimate(_onehot(pred), feats)
    assert on_held["value"] == pytest.approx(0.9) and on_held["method"] == "agreement-1nn-pixels"
    assert on_held["low"] <= on_held["value"] <= on_held["high"] <= 1.0 and on_held["reference_agreement"] == 0.8
    from scipy.stats import binomtest

    assert on_held["reference_low"] == pytest.approx(binomtest(18, 20).proportion_ci(0.95).low)  # Clopper-Pearson
    # a batch where the model predicts class 0 for everything while the neighbour sees classes 0, 1, 2 evenly
    batch = np.eye(3)[np.arange(30) % 3]
    est = fitted.estimate(_onehot(np.zeros(30, np.int64)), batch)
    assert est["value"] == pytest.approx(min(1.0, (10 / 30) * 0.9 / 0.8))
    # the same batch, predicted more confidently than anything held out: ATC sees no harm at all
    atc = FittedATC.fit(_onehot(pred, conf=np.linspace(0.5, 0.9, 20)), truth)
    assert atc.estimate(_onehot(np.zeros(30, np.int64), conf=0.99))["value"] == 1.0


def test_agreement_refuses_bad_input() -> None:
    ref, labels = np.eye(3), np.arange(3)
    with pytest.raises(InvalidInput, match="at least 10"):
        FittedAgreement.fit(ref, labels, _onehot(np.zeros(5, np.int64)), np.zeros(5, np.int64), np.eye(3)[np.zeros(5, int)])
    with pytest.raises(InvalidInput, match="labelled training samples"):
        FittedAgreement.fit(np.zeros((0, 3)), np.zeros(0, np.int64), _onehot(np.zeros(10, np.int64)), np.zeros(10, np.int64),
                            np.eye(3)[np.zeros(10, int)])
    fitted = FittedAgreement.fit(ref, labels, _onehot(np.zeros(10, np.int64)), np.zeros(10, np.int64), np.eye(3)[np.zeros(10, int)])
    with pytest.raises(InvalidInput, match="same samples"):
        fitted.estimate(_onehot(np.zeros(4, np.int64)), np.eye(3)[:3])
    with pytest.raises(InvalidInput, match="at least one sample"):
        fitted.estimate(np.zeros((0, 3)), np.zeros((0, 3)))


def test_a_reference_that_disagrees_with_a_correct_model_is_not_used() -> None:
    # the neighbour is wrong where the model is right on half the held-out split: accuracy / agreement = 2
    truth = np.array([0, 1] * 10)
    feats = np.eye(3)[np.where(np.arange(20) < 10, truth, 2)]
    fitted = FittedAgreement.fit(np.eye(3), np.arange(3), _onehot(truth), truth, feats)
    assert fitted.ratio == pytest.approx(2.0) and not fitted.ratio <= AGREEMENT_RATIO
    nothing = FittedAgreement.fit(np.eye(3), np.arange(3), _onehot(truth), truth, np.eye(3)[np.full(20, 2)])
    assert nothing.ratio == float("inf")


def test_the_reference_holds_each_thumbnail_rotated_as_pil_rotates_it() -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    img = np.zeros((16, 16, 3), np.float32)
    img[3:13, 6:9] = rng.random((10, 3, 3))  # an off-centre bar: every rotation moves it
    x, labels = with_rotations(img.reshape(1, -1), np.array([7]), (-15.0, 15.0))
    assert x.shape == (3, 16 * 16 * 3) and labels.tolist() == [7, 7, 7]
    assert np.array_equal(x[0], img.reshape(-1))
    for angle in (-15.0, 15.0):  # each copy matches one of PIL's rotations by +-angle far better than the original
        pil = [np.concatenate([np.asarray(Image.fromarray(img[..., c]).rotate(a, resample=Image.BILINEAR))[..., None]
                               for c in range(3)], axis=2).reshape(-1) for a in (angle, -angle)]
        best = max(range(1, 3), key=lambda i: max(np.corrcoef(x[i], p)[0, 1] for p in pil))
        assert max(np.corrcoef(x[best], p)[0, 1] for p in pil) > 0.9 > np.corrcoef(x[0], pil[0])[0, 1]
    odd, same = with_rotations(np.ones((2, 10)), np.array([1, 2]))  # not square RGB thumbnails: left as they are
    assert odd.shape == (2, 10) and same.tolist() == [1, 2]
