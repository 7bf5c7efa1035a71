"""Dataset distances on embeddings (veml.coreset.distance): values, invariances, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from veml.coreset import distance as D
from veml.coreset.kcenter import k_center_greedy
from veml.errors import InvalidInput


def blobs(n: int, d: int, centres: np.ndarray, seed: int, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(len(centres), size=n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def test_mean_pairwise_is_the_mean_of_every_cross_distance():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((20, 5)) + 1
    brute = np.mean([[np.linalg.norm(x - y) for y in b] for x in a])
    assert D.mean_pairwise(a, b) == pytest.approx(brute, rel=1e-6)
    assert D.mean_pairwise(a, b) == pytest.approx(D.mean_pairwise(b, a), rel=1e-9)


def test_mmd_is_zero_on_identical_sets_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((80, 8))
    assert D.mmd(a, a) == pytest.approx(0.0, abs=1e-7)
    near, far = D.mmd(a, rng.standard_normal((80, 8)) + 0.3), D.mmd(a, rng.standard_normal((80, 8)) + 3.0)
    assert 0 < near < far


def test_gromov_wasserstein_ignores_rotation_and_dimension_but_sees_shape():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 3)) * np.array([5.0, 1.0, 0.2])
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rotated = a @ q.T + 7.0  # an isometry: same shape
    padded = np.concatenate([rotated, np.zeros((40, 4))], axis=1)  # the same cloud in a 7-d space
    other = rng.standard_normal((40, 3))  # round, not elongated
    same = D.gromov_wasserstein(a, rotated)
    assert same < 1e-3
    assert D.gromov_wasserstein(a, padded) < 1e-3
    assert D.gromov_wasserstein(a, other) > 10 * max(same, 1e-4)


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
