"""bbsd's combined permutation test (veml.coreset.combined): calibration, power on each kind of shift, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from veml.coreset.combined import LABEL_SHIFT_RAMP, LABEL_SHIFT_WEIGHT, Combined, Family, Statistic, black_box
from veml.errors import InvalidInput


def softmax_rows(classes: np.ndarray, n_classes: int, seed: int, sharp: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(classes), n_classes))
    logits[np.arange(len(classes)), classes] += sharp
    e = np.exp(logits)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def blocks(classes: np.ndarray, seed: int, noise: float = 0.0, sharp: float = 4.0) -> dict[str, np.ndarray]:
    """Softmax rows plus 48-d 'pixels' whose level depends on the class (images of digits differ by class)."""
    rng = np.random.default_rng(seed + 7)
    pixels = 0.3 + 0.05 * classes[:, None] + 0.1 * rng.standard_normal((len(classes), 48)) + noise * rng.standard_normal((len(classes), 48))
    return {"softmax": softmax_rows(classes, 10, seed, sharp), "pixels": pixels.astype(np.float32)}


def fitted(n_permutations: int = 100):
    rng = np.random.default_rng(0)
    return Combined(black_box(True), n_permutations=n_permutations).fit(blocks(rng.integers(0, 10, 400), 1))


def test_no_shift_gives_uniform_p_values_at_small_and_large_n():
    rng = np.random.default_rng(1)
    for n in (10, 100):  # a fresh reference per batch: the p-value is uniform over reference and batch together
        p_values = np.array([Combined(black_box(True), n_permutations=50, seed=i).fit(blocks(rng.integers(0, 10, 200), 10_000 + 2 * i))
                             .test(blocks(rng.integers(0, 10, n), 50_000 + 2 * i)).p_value for i in range(150)])
        assert np.mean(p_values < 0.05) <= 0.10, n  # alpha 0.05; 150 batches give about +-0.035 of noise
        assert 0.35 <= np.mean(p_values < 0.5) <= 0.65, n  # spread over (0, 1], not piled at either end


def test_label_shift_is_caught_by_its_family_and_covariate_shift_by_the_other():
    f = fitted()
    rng = np.random.default_rng(2)
    skew = np.where(rng.random(150) < 0.7, rng.integers(0, 3, 150), rng.integers(0, 10, 150))
    label = f.test(blocks(skew, 3))
    assert label.drift
    fams = {x["name"]: x for x in label.details["families"]}
    assert fams["label shift"]["drifted"] and fams["label shift"]["weight"] == pytest.approx(LABEL_SHIFT_WEIGHT * 150 / (150 + LABEL_SHIFT_RAMP))
    assert fams["label shift"]["weight"] + fams["covariate shift"]["weight"] == pytest.approx(1.0)
    noisy = f.test(blocks(rng.integers(0, 10, 150), 4, noise=0.3))  # inputs change, predicted mix does not
    fams = {x["name"]: x for x in noisy.details["families"]}
    assert noisy.drift and fams["covariate shift"]["drifted"] and not fams["label shift"]["drifted"]
    assert [s["name"] for s in fams["covariate shift"]["statistics"]] == ["pixel mmd"]


def test_on_images_the_label_share_of_the_level_grows_with_the_batch():
    """A batch of 10 says little about its class mix, one of 500 much: the label family's share ramps from 0.53 to
    0.78 of the level (BENCHMARKS.md, issue 15), and the shares always sum to 1."""
    params = Combined(black_box(True))
    shares = {n: params.weights(n) for n in (10, 50, 100, 500)}
    assert shares[10] == pytest.approx((0.8 * 10 / 15, 1 - 0.8 * 10 / 15)) and shares[500][0] == pytest.approx(0.8 * 500 / 505)
    assert all(sum(w) == pytest.approx(1.0) for w in shares.values())
    assert [w[0] for w in shares.values()] == sorted(w[0] for w in shares.values())
    assert Combined(black_box(False)).weights(10) == Combined(black_box(False)).weights(500) == pytest.approx((0.6, 0.4))
    f = fitted()
    rng = np.random.default_rng(8)
    for n in (10, 200):  # the report carries the shares the test used
        fams = f.test(blocks(rng.integers(0, 10, n), 20 + n)).details["families"]
        assert [x["weight"] for x in fams] == pytest.approx(params.weights(n))
    with pytest.raises(InvalidInput, match="ramp must be"):
        Combined((Family("x", (Statistic("a", "ks", "softmax"),), 0.5, -1.0),)).fit(blocks(np.arange(40) % 10, 0))


def test_each_batch_draws_its_own_permutations_and_its_order_does_not_matter():
    """The permutations come from the detector's seed and a digest of the batch's rows: the same rows in another
    order give the same p-value, another batch other permutations (no set of them is shared by every batch)."""
    f = fitted(50)
    rng = np.random.default_rng(9)
    batch = blocks(rng.integers(0, 10, 30), 31)
    order = rng.permutation(30)
    shuffled = {k: v[order] for k, v in batch.items()}
    assert f.test(shuffled).p_value == f.test(batch).p_value
    other = blocks(rng.integers(0, 10, 30), 32)
    assert not np.array_equal(f._splits(len(f.reference["softmax"]), 30, batch),
                              f._splits(len(f.reference["softmax"]), 30, other))


def test_less_confident_outputs_are_caught_without_any_input_block():
    assert [s.name for f in black_box(False) for s in f.statistics] == ["softmax mmd", "softmax ks"]
    f = Combined(black_box(False), n_permutations=100).fit({"softmax": softmax_rows(np.random.default_rng(0).integers(0, 10, 300), 10, 1)})
    classes = np.random.default_rng(5).integers(0, 10, 100)
    assert f.test({"softmax": softmax_rows(classes, 10, 6, sharp=1.5)}).drift
    assert not f.test({"softmax": softmax_rows(classes, 10, 7)}).drift


def test_a_test_is_deterministic_and_leaves_the_detector_unchanged():
    f = fitted()
    batch = blocks(np.random.default_rng(3).integers(0, 10, 60), 9)
    before = {k: v.copy() for k, v in f.reference.items()}
    a, b = f.test(batch), f.test(batch)
    assert a == b
    assert all(np.array_equal(before[k], f.reference[k]) for k in before)


def test_large_inputs_are_capped():
    rng = np.random.default_rng(4)
    f = Combined(black_box(True), n_permutations=20, cap=150).fit(blocks(rng.integers(0, 10, 400), 1))
    r = f.test(blocks(rng.integers(0, 10, 500), 2))
    assert r.details["reference_rows"] == 150 and r.details["test_rows"] == 150
    assert r.n_reference == 400 and r.n_test == 500


@pytest.mark.parametrize("batch, message", [
    ({"softmax": np.zeros((20, 10), np.float32)}, "lacks the feature block 'pixels'"),
    ({"softmax": np.full((20, 10), 0.1, np.float32), "pixels": np.zeros((20, 47), np.float32)}, "differ in shape"),
    ({"softmax": np.full((20, 10), 0.1, np.float32), "pixels": np.zeros((19, 48), np.float32)}, "different numbers of rows"),
    ({"softmax": np.full((20, 10), np.nan, np.float32), "pixels": np.zeros((20, 48), np.float32)}, "NaN"),
    ({"softmax": np.full((3, 10), 0.1, np.float32), "pixels": np.zeros((3, 48), np.float32)}, "at least 5"),
    (np.zeros((20, 10), np.float32), "must map each feature block"),
])
def test_bad_batches_are_refused(batch, message):
    with pytest.raises(InvalidInput, match=message):
        fitted(20).test(batch)


def test_bad_settings_are_refused():
    ref = blocks(np.arange(40) % 10, 0)
    with pytest.raises(InvalidInput, match="unknown statistic kind"):
        Combined((Family("x", (Statistic("a", "chi2", "softmax"),), 1.0),)).fit(ref)
    with pytest.raises(InvalidInput, match="kernel scale must be positive"):
        Combined((Family("x", (Statistic("a", "mmd", "softmax", 0.0),), 1.0),)).fit(ref)
    with pytest.raises(InvalidInput, match="positive weight"):
        Combined((Family("x", (Statistic("a", "ks", "softmax"),), 0.0),)).fit(ref)
    with pytest.raises(InvalidInput, match="same features"):
        Combined(black_box(True)).fit({"softmax": np.full((40, 10), 0.1, np.float32), "pixels": ref["pixels"]})
