"""Two-sample tests for drift: is this batch drawn from the reference distribution?

One interface (after alibi-detect): a detector is *fitted* on the reference once, which returns a
frozen fitted detector; ``test(batch)`` on it may be called for any number of batches and never
changes it (the permutation generator is seeded per call), so a monitor can share one.

Core-set MMD.  Comparing two core sets point-to-point is not a valid permutation test (k-center
points are not exchangeable: each core set is spread out by construction).  Instead the core set
plays the part it is good at — covering the reference — as the landmarks of a Nyström feature map
φ(x) = K(x, C) K(C, C)^-1/2 with an RBF kernel whose bandwidth is the median distance within C.
The MMD² between the means of φ over reference and test is then a k-dimensional computation, and
its permutation test is batched into one matrix product.  The landmarks and bandwidth come from a
part of the reference the test never uses, so reference and test rows stay exchangeable under
"no drift" and the p-value is exact; cost is O((m+n)·k·d) instead of O((m+n)²·d).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from veml.coreset.distance import pairwise_sq
from veml.coreset.kcenter import k_center_greedy
from veml.errors import InvalidInput

#: the fewest test samples each method accepts (below that its p-values mean little)
MIN_SAMPLES = {"mmd": 10, "ks": 5, "cvm": 5, "bbsd": 5}


@dataclass(frozen=True)
class DriftResult:
    method: str
    drift: bool
    p_value: float
    statistic: float
    threshold: float  # the statistic above which drift is declared (mmd), or the corrected p-value bound (ks/cvm/bbsd)
    alpha: float
    n_reference: int
    n_test: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"drift": self.drift, "p_value": self.p_value, "statistic": self.statistic, "threshold": self.threshold,
                "method": self.method, "alpha": self.alpha, "n_reference": self.n_reference, "n_test": self.n_test,
                "details": dict(self.details)}


def _matrix(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise InvalidInput(f"{what} must be a 2-D matrix (samples x features), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise InvalidInput(f"{what} has {x.shape[1]} features but the reference has {dim}: "
                           "reference and test differ in shape (other modality or sensor count?)")
    if not np.isfinite(x).all():
        raise InvalidInput(f"{what} holds NaN or infinite values")
    return np.ascontiguousarray(x)


def _informative(ref: np.ndarray) -> None:
    """Constant features (a dead embedder: e.g. an ImageNet CNN fed 32-pixel images) would test as "no drift"."""
    if len(ref) > 1 and float(np.ptp(ref, axis=0).max()) == 0.0:
        raise InvalidInput("every reference sample has the same features: the embedder or model sees nothing in this data "
                           "(too small an input size?), so a drift test on them would mean nothing")


def _check_n(method: str, n: int, what: str) -> None:
    if n < MIN_SAMPLES[method]:
        raise InvalidInput(f"{what} has {n} samples; the {method} drift test needs at least {MIN_SAMPLES[method]}")


# --- core-set MMD ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoreSetMMD:
    alpha: float = 0.05
    k: int = 200
    n_permutations: int = 100
    seed: int = 0
    landmark_fraction: float = 0.2  # of the reference, held apart to choose landmarks and bandwidth

    def fit(self, reference: np.ndarray) -> "FittedCoreSetMMD":
        ref = _matrix(reference, "the reference")
        n = len(ref)
        if n < 2 * MIN_SAMPLES["mmd"]:
            raise InvalidInput(f"the reference has {n} samples; core-set MMD needs at least {2 * MIN_SAMPLES['mmd']}")
        _informative(ref)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        n_land = int(min(max(self.landmark_fraction * n, min(self.k, n // 2)), n // 2))
        land, rest = ref[np.sort(order[:n_land])], ref[np.sort(order[n_land:])]
        k = min(self.k, len(land))
        centres = land[k_center_greedy(land, k, seed=self.seed).indices].astype(np.float64)
        d = pairwise_sq(centres, centres)
        med = float(np.sqrt(np.median(d[np.triu_indices(k, 1)]))) if k > 1 else 1.0
        gamma = 1.0 / (2.0 * (med if med > 0 else 1.0) ** 2)
        kcc = np.exp(-gamma * d)
        w, v = np.linalg.eigh(kcc)
        keep = w > 1e-8 * w.max()
        whiten = v[:, keep] / np.sqrt(w[keep])  # K_CC^-1/2 on its well-conditioned span
        fitted = FittedCoreSetMMD(self, centres.astype(np.float32), float(gamma), whiten.astype(np.float32),
                                  np.zeros((0, 0), np.float32), med)
        return FittedCoreSetMMD(self, fitted.centres, fitted.gamma, fitted.whiten, fitted.features(rest), med)


@dataclass(frozen=True)
class FittedCoreSetMMD:
    params: CoreSetMMD
    centres: np.ndarray
    gamma: float
    whiten: np.ndarray
    ref_features: np.ndarray  # φ of the reference rows the tests use
    bandwidth: float

    method = "mmd"

    def features(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        out = np.empty((len(x), self.whiten.shape[1]), np.float32)
        cc = (self.centres * self.centres).sum(1)
        for a in range(0, len(x), chunk):
            b = x[a:a + chunk]
            d = np.maximum((b * b).sum(1)[:, None] - 2.0 * b @ self.centres.T + cc[None, :], 0.0)
            out[a:a + chunk] = np.exp(-self.gamma * d) @ self.whiten
        return out

    def test(self, batch: np.ndarray) -> DriftResult:
        x = _matrix(batch, "the test batch", self.centres.shape[1])
        _check_n("mmd", len(x), "the test batch")
        p = self.params
        fx, fr = self.features(x), self.ref_features
        m, n = len(fr), len(fx)
        pooled = np.concatenate([fr, fx]).astype(np.float64)
        total = pooled.sum(0)
        stat = float(np.sum((fr.mean(0, dtype=np.float64) - fx.mean(0, dtype=np.float64)) ** 2))
        rng = np.random.default_rng(p.seed + 1)
        sel = np.zeros((p.n_permutations, m + n), np.float32)  # 1 where a row goes to the "reference" side
        for i in range(p.n_permutations):
            sel[i, rng.permutation(m + n)[:m]] = 1.0
        ref_sums = sel @ pooled
        null = np.sum((ref_sums / m - (total - ref_sums) / n) ** 2, axis=1)
        p_value = float((1 + np.sum(null >= stat)) / (p.n_permutations + 1))
        threshold = float(np.quantile(null, 1 - p.alpha))
        return DriftResult("mmd", p_value < p.alpha, p_value, stat, threshold, p.alpha, m, n,
                           {"landmarks": len(self.centres), "bandwidth": self.bandwidth, "permutations": p.n_permutations})


# --- univariate tests (tables, series, black-box model outputs) ---------------------------------------------
@dataclass(frozen=True)
class Univariate:
    """Per-feature KS or Cramér–von Mises tests, Bonferroni-corrected; ``bbsd`` is KS on a model's outputs
    (a detector's or forecaster's; a classifier's go to :mod:`veml.coreset.combined`)."""

    alpha: float = 0.05
    test_name: str = "ks"  # ks | cvm
    method: str = "ks"  # what reports call it (bbsd when the features are a model's outputs)

    def fit(self, reference: np.ndarray) -> "FittedUnivariate":
        if self.test_name not in ("ks", "cvm"):
            raise InvalidInput(f"unknown univariate test {self.test_name!r}: use ks or cvm")
        ref = _matrix(reference, "the reference")
        if len(ref) < MIN_SAMPLES[self.test_name]:
            raise InvalidInput(f"the reference has {len(ref)} samples; the {self.test_name} test needs at least "
                               f"{MIN_SAMPLES[self.test_name]}")
        _informative(ref)
        return FittedUnivariate(self, ref)


@dataclass(frozen=True)
class FittedUnivariate:
    params: Univariate
    reference: np.ndarray

    @property
    def method(self) -> str:
        return self.params.method

    def test(self, batch: np.ndarray) -> DriftResult:
        from scipy import stats

        x = _matrix(batch, "the test batch", self.reference.shape[1])
        _check_n(self.params.method if self.params.method in MIN_SAMPLES else "ks", len(x), "the test batch")
        d = x.shape[1]
        stat_v, p_v = np.zeros(d), np.ones(d)
        for j in range(d):
            a, b = self.reference[:, j], x[:, j]
            if np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0]:
                continue  # a constant feature, the same on both sides: no evidence either way
            if self.params.test_name == "ks":
                # the exact distribution costs ~1.5 ms a feature; from 50 samples a side the asymptotic one is as good
                r = stats.ks_2samp(a, b, method="asymp" if min(len(a), len(b)) >= 50 else "auto")
            else:
                r = stats.cramervonmises_2samp(a, b)
            stat_v[j], p_v[j] = float(r.statistic), float(r.pvalue)
        alpha = self.params.alpha
        details: dict[str, Any] = {"test": self.params.test_name, "features": d}
        p_value = float(min(1.0, p_v.min() * d))  # Bonferroni: the family-wise p-value
        bound = alpha / d
        worst = int(np.argmin(p_v))
        details.update(worst_feature=worst, features_drifted=int(np.sum(p_v < bound)))
        return DriftResult(self.params.method, p_value < alpha, p_value, float(stat_v[worst]), bound, alpha,
                           len(self.reference), len(x), details)
