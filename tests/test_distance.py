"""Dataset distances on embeddings (veml.coreset.distance): values, invariances, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from veml.coreset import distance as D
from veml.coreset.kcenter import coverage, k_center_greedy
from veml.errors import InvalidInput


def blobs(n: int, d: int, centres: np.ndarray, seed: int, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(len(centres), size=n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def test_mean_pairwise_is_the_centred_mean_of_every_cross_distance():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((20, 5)) + 1
    mean = lambda x, y: np.mean([[np.linalg.norm(p - q) for q in y] for p in x])  # noqa: E731
    assert D.cross_mean(a, b) == pytest.approx(mean(a, b), rel=1e-6)
    centred = mean(a, b) - (mean(a, a) + mean(b, b)) / 2
    assert D.mean_pairwise(a, b) == pytest.approx(centred, rel=1e-6)
    assert D.mean_pairwise(a, b) == pytest.approx(D.mean_pairwise(b, a), rel=1e-9)


def test_a_dataset_is_at_distance_zero_from_itself_under_every_label_free_method():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 6)) * 3
    for method in ("mean_pairwise", "mmd", "gromov_wasserstein"):
        assert D.distance(method, a, a) == pytest.approx(0.0, abs=1e-6), method
        assert D.distance(method, a, a[::-1].copy()) == pytest.approx(0.0, abs=1e-6), method  # order does not matter
    assert D.cross_mean(a, a) > 1.0  # the paper's raw cross mean is not zero against itself


def test_coverage_weights_make_a_core_set_estimate_the_full_distance():
    # a target that is mostly one tight cluster plus a few far outliers: k-center picks the outliers,
    # so unweighted centres over-represent them; weighting each centre by the samples it covers does not
    rng = np.random.default_rng(6)
    bulk = rng.standard_normal((1900, 8)) * 0.3
    outliers = rng.standard_normal((100, 8)) * 0.3 + rng.choice([-8.0, 8.0], size=(100, 8))
    target = np.concatenate([bulk, outliers]).astype(np.float32)
    source = (rng.standard_normal((2000, 8)) * 0.3 + 0.5).astype(np.float32)
    full = D.mean_pairwise(target[::2], source[::2])
    result = k_center_greedy(target, 40)
    core, weights = target[result.indices], np.bincount(result.assign, minlength=40)
    assert weights.sum() == len(target) and (weights >= 1).all()
    assert np.array_equal(weights, coverage(target, core))  # the same counts from the centres alone
    src = k_center_greedy(source, 40)
    score, src_w = source[src.indices], np.bincount(src.assign, minlength=40)
    weighted = D.mean_pairwise(core, score, weights, src_w)
    unweighted = D.mean_pairwise(core, score)
    assert abs(weighted - full) < 0.5 * abs(unweighted - full)
    with pytest.raises(InvalidInput, match="coverage weights"):
        D.mean_pairwise(core, score, weights[:-1], src_w)
    with pytest.raises(InvalidInput, match="coverage weights"):
        D.mmd(core, score, wa=-weights, wb=src_w)


def test_mmd_is_zero_on_identical_sets_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((80, 8))
    assert D.mmd(a, a) == pytest.approx(0.0, abs=1e-7)
    near, far = D.mmd(a, rng.standard_normal((80, 8)) + 0.3), D.mmd(a, rng.standard_normal((80, 8)) + 3.0)
    assert 0 < near < far


def test_gromov_wasserstein_sees_shape_level_and_scale_across_network_sizes():
    """Series core sets: one row per sample, one column per sensor reading; networks may differ in size."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 6)) * np.array([5.0, 4.0, 1.0, 1.0, 0.2, 0.2]) + 50.0
    reordered = a[:, rng.permutation(6)]  # the same network, sensors listed in another order
    doubled = np.concatenate([a, a], axis=1)  # a network twice the size reading the same values
    same = max(D.gromov_wasserstein(a, reordered), D.gromov_wasserstein(a, doubled))
    assert same < 1e-3
    slower = a - 3 * a.mean(1).std()  # every sample's level three spreads lower: the shape alone is unchanged
    louder = (a - 50.0) * 3 + 50.0  # the same level, three times the spread
    other = rng.standard_normal((40, 6)) + 50.0  # round, not elongated
    for shifted in (slower, louder, other):
        assert D.gromov_wasserstein(a, shifted) > 10 * max(same, 1e-4)
    assert D.gromov_wasserstein(a, slower, alpha=1.0) < 1e-3  # the structure term alone is blind to level
    with pytest.raises(InvalidInput):
        D.gromov_wasserstein(a, a, alpha=2.0)


def test_label_ot_sees_labels_that_no_longer_follow_the_features():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal((30, 4)), rng.standard_normal((30, 4)) + 6])
    labels = ["car"] * 30 + ["sign"] * 30
    renamed = ["truck"] * 30 + ["light"] * 30  # other names, same look: class summaries match
    scrambled = ["car", "sign"] * 30  # same features, labels unrelated to them
    same = D.label_ot(x, labels, x, labels)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert D.label_ot(x, labels, x, renamed) == pytest.approx(same, abs=1e-6)
    assert D.label_ot(x, labels, x, scrambled) > 0.3  # mean_pairwise(x, x) cannot tell these apart


def test_standardize_pair_uses_pooled_statistics():
    a, b = np.array([[0.0, 100.0], [2.0, 300.0]]), np.array([[4.0, 500.0], [6.0, 700.0]])
    sa, sb = D.standardize_pair(a, b)
    z = np.concatenate([sa, sb])
    assert np.allclose(z.mean(0), 0) and np.allclose(z.std(0), 1)
    assert sb[:, 0].mean() > sa[:, 0].mean()  # the shift between the two survives


def test_core_set_distance_ranks_datasets_like_the_full_distance():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((10, 16)) * 4
    target = blobs(2000, 16, centres, 10)
    sources = [blobs(2000, 16, centres + shift, 20 + i) for i, shift in enumerate((0.0, 0.5, 1.5, 3.0, 6.0))]
    full = [D.mean_pairwise(target[::4], s[::4]) for s in sources]
    core = lambda x: x[k_center_greedy(x, 100).indices]  # noqa: E731
    on_core = [D.mean_pairwise(core(target), core(s)) for s in sources]
    assert np.argsort(full).tolist() == np.argsort(on_core).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("a, b, needle", [
    (np.zeros((0, 3)), np.ones((2, 3)), "empty"),
    (np.full((2, 3), np.nan), np.ones((2, 3)), "NaN"),
    (np.ones((2, 3)), np.ones((2, 4)), "dimension"),
    (np.ones(3), np.ones((2, 3)), "2-D"),
])
def test_bad_embeddings_are_refused(a, b, needle):
    with pytest.raises(InvalidInput, match=needle):
        D.distance("mean_pairwise", a, b)


def test_unknown_method_and_missing_labels_are_refused():
    x = np.ones((3, 2))
    with pytest.raises(InvalidInput, match="unknown distance method"):
        D.distance("cosine", x, x)
    with pytest.raises(InvalidInput, match="labels"):
        D.distance("label_ot", x, x)
    with pytest.raises(InvalidInput, match="labels on both"):
        D.label_ot(x, ["a", None, "b"], x, ["a", "b", "b"])
