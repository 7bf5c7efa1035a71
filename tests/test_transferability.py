"""Transferability estimators (veml.coreset.transferability): mathematical properties on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veml.coreset.transferability import (
    hit_rate, hscore, knn_probe, leep, logme, logme_evidence, mean_embedding_distance, rank_sources, spearman,
    top1_hit, top1_regret,
)
from veml.errors import InvalidInput


def _clustered(rng: np.random.Generator, n_per: int = 10, classes: int = 3, d: int = 10, noise: float = 0.1):
    """Each class sits on its own axis: features that linearly separate the labels."""
    labels = np.repeat(np.arange(classes), n_per)
    x = rng.normal(size=(len(labels), d)) * noise
    x[np.arange(len(labels)), labels] += 3.0
    return x, labels


# ---------------------------------------------------------------------------------------------- LEEP


def test_leep_hand_computed():
    theta = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    y = np.array([0, 1, 0])
    # P(y, z) * 3: y=0 -> (1.3, 0.7), y=1 -> (0.3, 0.7); P(y|z): z0 -> (13/16, 3/16), z1 -> (1/2, 1/2)
    eep = [0.8 * 13 / 16 + 0.2 * 0.5, 0.3 * 3 / 16 + 0.7 * 0.5, 0.5 * 13 / 16 + 0.5 * 0.5]
    assert eep == pytest.approx([0.75, 0.40625, 0.65625])
    assert leep(theta, y) == pytest.approx(np.mean(np.log(eep)), abs=1e-12)
    assert leep(theta, np.array(["cat", "dog", "cat"])) == pytest.approx(leep(theta, y))


def test_leep_is_zero_for_a_deterministic_one_to_one_map():
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    mapping = np.array([2, 0, 1])                  # target class c <- source class mapping[c]
    theta = np.eye(3)[mapping[y]]
    assert leep(theta, y) == pytest.approx(0.0, abs=1e-12)
    soft = 0.9 * theta + 0.1 / 3                   # any uncertainty costs likelihood
    assert leep(soft, y) < 0.0


def test_leep_invariant_to_permuting_source_classes():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(20, 5))
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 3, 20)
    perm = np.array([3, 0, 4, 1, 2])
    assert leep(theta[:, perm], y) == pytest.approx(leep(theta, y), abs=1e-12)


# ---------------------------------------------------------------------------------------------- LogME


def _dense_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, β⁻¹ I + α⁻¹ F Fᵀ) / n: the marginal likelihood of Bayesian linear regression, densely."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (logdet + y @ np.linalg.solve(cov, y) + n * math.log(2 * math.pi)) / n)


@pytest.mark.parametrize("n,d", [(40, 8), (8, 40), (15, 15)])
def test_logme_matches_dense_evidence_at_its_fixed_point(n, d):
    rng = np.random.default_rng(n * 100 + d)
    f = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    labels = (f @ w + 0.5 * rng.normal(size=n) > 0).astype(int) + (f[:, 0] > 1)  # 3 classes, some signal
    fits = logme_evidence(f, labels)
    assert len(fits) == len(np.unique(labels))
    for cls, (evidence, alpha, beta) in zip(np.unique(labels), fits):
        y = (labels == cls).astype(float)
        dense = _dense_log_evidence(f, y, alpha, beta)
        assert evidence == pytest.approx(dense, abs=1e-6)
        # the fixed point maximises the evidence: moving alpha or beta alone cannot raise it
        for a, b in ((alpha * 1.05, beta), (alpha / 1.05, beta), (alpha, beta * 1.05), (alpha, beta / 1.05)):
            assert _dense_log_evidence(f, y, a, b) <= dense + 1e-9
    assert logme(f, labels) == pytest.approx(np.mean([e for e, _, _ in fits]))


@pytest.mark.parametrize("n,d", [(30, 10), (12, 40)])
def test_logme_prefers_separating_features(n, d):
    rng = np.random.default_rng(7)
    sep, labels = _clustered(rng, n_per=n // 3, d=d)
    noise = rng.normal(size=sep.shape)
    assert logme(sep, labels) > logme(noise, labels)


def test_logme_regression_targets():
    rng = np.random.default_rng(11)
    f = rng.normal(size=(50, 6))
    targets = np.stack([f @ rng.normal(size=6), f @ rng.normal(size=6)], axis=1) + 0.1 * rng.normal(size=(50, 2))
    score = logme(f, targets)                                    # 2-D float -> regression
    per_col = [logme(f, targets[:, k], regression=True) for k in range(2)]
    assert score == pytest.approx(np.mean(per_col))
    (ev, alpha, beta), = logme_evidence(f, targets[:, 0], regression=True)
    assert ev == pytest.approx(_dense_log_evidence(f, targets[:, 0], alpha, beta), abs=1e-6)
    assert score > logme(rng.normal(size=(50, 6)), targets)


# ---------------------------------------------------------------------------------------------- H-score


def test_hscore_higher_for_separable_features_than_noise():
    rng = np.random.default_rng(5)
    sep, labels = _clustered(rng)
    assert hscore(sep, labels) > hscore(rng.normal(size=sep.shape), labels)
    assert hscore(sep, labels) > 0.0


def test_hscore_invariant_to_global_scale_rotation_and_shift():
    rng = np.random.default_rng(6)
    x, labels = _clustered(rng, noise=1.0)
    rot, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    base = hscore(x, labels)
    assert hscore(x * 37.5, labels) == pytest.approx(base, rel=1e-9)
    assert hscore(x @ rot + 4.0, labels) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("n,d", [(25, 40), (60, 5)])
def test_hscore_matches_dense_ledoit_wolf_formula(n, d):
    covariance = pytest.importorskip("sklearn.covariance")      # reference only; the module itself avoids sklearn
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)) * np.linspace(1, 3, d)
    labels = rng.integers(0, 4, n)
    lw = covariance.LedoitWolf().fit(x)
    xc = x - x.mean(0)
    g = np.zeros_like(xc)
    for c in np.unique(labels):
        g[labels == c] = xc[labels == c].mean(0)
    expected = np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * g.T @ g / n))
    assert hscore(x, labels) == pytest.approx(expected, rel=1e-8)


# ---------------------------------------------------------------------------------------------- kNN probe


def test_knn_probe_perfect_on_clustered_data():
    rng = np.random.default_rng(8)
    x, labels = _clustered(rng)
    assert knn_probe(x, labels, k=3) == 1.0
    assert knn_probe(x, labels, k=3, folds=5) == 1.0


def test_knn_probe_on_noise_is_deterministic_and_near_chance():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 16))
    labels = np.repeat(np.arange(3), 20)
    loo = knn_probe(x, labels, k=5)
    assert loo == knn_probe(x.copy(), labels.copy(), k=5)       # deterministic
    assert loo == 17 / 60                                        # chance is 20/60; exact values for this seed
    assert knn_probe(x, labels, k=5, folds=4) == 21 / 60


def test_knn_probe_singleton_class_and_hand_example():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, -1.0]])
    labels = np.array(["a", "a", "b", "b", "c"])                 # "c" has one example: unpredictable when held out
    assert knn_probe(x, labels, k=1) == 4 / 5
    assert knn_probe(x * 10.0, labels, k=1) == 4 / 5             # cosine: scale-free
    assert knn_probe(x, labels, k=1, folds=2) == 4 / 5


# ---------------------------------------------------------------------------------------------- mean embedding


def test_mean_embedding_distance():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(7, 4)), rng.normal(size=(11, 4)) + 1.0
    assert mean_embedding_distance(a, a) == 0.0
    assert mean_embedding_distance(a, b) == mean_embedding_distance(b, a)
    assert mean_embedding_distance(np.zeros((2, 2)), np.array([[3.0, 4.0]])) == 25.0


# ---------------------------------------------------------------------------------------------- evaluation


def test_rank_sources_orders_and_breaks_ties_by_name():
    scores = {"b": 0.5, "a": 0.5, "c": 0.9, "d": -1.0}
    assert rank_sources(scores, higher_is_better=True) == ["c", "a", "b", "d"]
    assert rank_sources(scores, higher_is_better=False) == ["d", "a", "b", "c"]


def test_spearman_hand_examples():
    gains = {"a": 0.1, "b": 0.2, "c": 0.3}
    assert spearman({"a": 1, "b": 2, "c": 3}, gains) == pytest.approx(1.0)
    assert spearman({"a": 3, "b": 2, "c": 1}, gains) == pytest.approx(-1.0)
    assert spearman({"a": 3, "b": 2, "c": 1}, gains, higher_is_better=False) == pytest.approx(1.0)
    # ties get average ranks: (1.5, 1.5, 3) vs (1, 2, 3) -> 1.5 / sqrt(1.5 * 2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert spearman([5, 5, 5], [1, 2, 3]) == 0.0                 # a constant method ranks nothing


def test_top1_regret_and_hits():
    gains = {"a": 0.2, "b": 0.5, "c": 0.3}
    assert top1_regret({"a": 0.9, "b": 0.5, "c": 0.1}, gains) == pytest.approx(0.3)
    assert top1_hit({"a": 0.9, "b": 0.5, "c": 0.1}, gains) == 0.0
    assert top1_regret({"a": 0.9, "b": 0.1, "c": 0.5}, gains, higher_is_better=False) == 0.0
    assert top1_hit({"a": 0.9, "b": 0.1, "c": 0.5}, gains, higher_is_better=False) == 1.0
    tied = {"a": 1.0, "b": 1.0, "c": 0.0}                        # expected value over the tied top pair
    assert top1_regret(tied, gains) == pytest.approx(0.15)
    assert top1_hit(tied, gains) == 0.5
    assert top1_hit({"a": 1.0, "b": 0.0}, {"a": 0.4, "b": 0.4}) == 1.0   # tied gains: both are best
    assert hit_rate([({"a": 2, "b": 1}, {"a": 1, "b": 0}), ({"a": 2, "b": 1}, {"a": 0, "b": 1})]) == 0.5


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call,message", [
    (lambda: leep(np.full((3, 2), 0.5), [0, 1]), "3 samples"),
    (lambda: leep(np.empty((0, 2)), []), "empty"),
    (lambda: leep(np.array([[0.5, np.nan], [0.5, 0.5]]), [0, 1]), "NaN"),
    (lambda: leep(np.array([[2.0, 1.0]]), [0]), "sum to 1"),
    (lambda: leep(np.array([[1.5, -0.5]]), [0]), "negative"),
    (lambda: logme(np.ones((4, 3)), [0, 1, 0]), "4 samples"),
    (lambda: logme(np.zeros((4, 3)), [0, 1, 0, 1]), "all zero"),
    (lambda: logme(np.ones(4), [0, 1, 0, 1]), "2-D"),
    (lambda: logme(np.ones((4, 3)), np.array([[1.0], [np.nan], [0.0], [1.0]])), "NaN"),
    (lambda: logme(np.ones((4, 3)), np.ones((3, 1))), "3 rows"),
    (lambda: hscore(np.ones((4, 3)), [0.0, 1.0, np.nan, 1.0]), "NaN"),
    (lambda: hscore(np.ones((4, 0)), [0, 1, 0, 1]), "empty"),
    (lambda: knn_probe(np.ones((4, 3)), [0, 1, 0]), "4 samples"),
    (lambda: knn_probe(np.ones((4, 3)), [0, 1, 0, 1], k=0), "k must"),
    (lambda: knn_probe(np.ones((4, 3)), [0, 1, 0, 1], folds=5), "folds"),
    (lambda: knn_probe(np.ones((1, 3)), [0]), "at least 2"),
    (lambda: mean_embedding_distance(np.ones((2, 3)), np.ones((2, 4))), "dimension"),
    (lambda: mean_embedding_distance(np.ones((2, 3)), np.empty((0, 3))), "empty"),
    (lambda: rank_sources({}), "empty"),
    (lambda: rank_sources({"a": float("nan")}), "finite"),
    (lambda: spearman({"a": 1.0}, {"b": 1.0}), "different sources"),
    (lambda: spearman([1.0, 2.0], [1.0]), "2 sources"),
    (lambda: top1_regret([1.0, np.nan], [1.0, 2.0]), "finite"),
    (lambda: hit_rate([]), "at least one"),
])
def test_bad_input_raises_invalid_input(call, message):
    with pytest.raises(InvalidInput, match=message):
        call()


def test_mean_ranks_average_each_scores_rank_with_ties_shared_and_non_finite_last():
    from veml.lifecycle.model_scores import mean_ranks

    parts = [{"a": 3.0, "b": 0.1}, {"a": 1.0, "b": 0.9}, {"a": 1.0, "b": float("nan")}]
    # a: 3.0 first, the two 1.0 share ranks 2 and 3; b: 0.9 first, 0.1 second, NaN last
    assert mean_ranks(parts, ("a", "b")).tolist() == [1.5, 1.75, 2.75]
    assert mean_ranks([], ("a",)).tolist() == []
