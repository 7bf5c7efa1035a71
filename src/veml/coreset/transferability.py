"""Transferability estimators: how well will a stored source lifecycle transfer to a new target?

``veml similar`` has to pick, among stored source lifecycles, the one whose model transfers best to a
new target.  These are the baselines an ML reviewer expects it to be measured against, each a pure
function (arrays in, a number out) computed on the *target's* few labelled samples passed through the
*source's* model:

- :func:`leep` — source softmax outputs + target labels; higher = better.
- :func:`logme` — source features + target labels (or regression targets); higher = better.
- :func:`hscore` — source features + target labels; higher = better.
- :func:`knn_probe` — source features + target labels; higher = better.
- :func:`mean_embedding_distance` — source and target embeddings, no labels; **lower** = closer.

:func:`rank_sources`, :func:`spearman`, :func:`top1_regret`, :func:`top1_hit` and :func:`hit_rate`
score a method against measured transfer gains in the evaluation harness.

Bad input (mismatched lengths, empty arrays, NaN/inf, wrong shapes) raises
:class:`veml.errors.InvalidInput`.  Numpy and scipy only: this module is part of the pure
``veml.coreset`` layer.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from veml.errors import InvalidInput

__all__ = [
    "leep", "logme", "logme_evidence", "hscore", "knn_probe", "mean_embedding_distance",
    "rank_sources", "spearman", "top1_regret", "top1_hit", "hit_rate",
]


# --------------------------------------------------------------------------------------------------
# input checks


def _matrix(x, what: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be a numeric matrix: {exc}") from None
    if arr.ndim != 2:
        raise InvalidInput(f"{what} must be a 2-D matrix (samples x features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput(f"{what} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{what} holds NaN or infinite values")
    return arr


def _labels(y, n: int, what: str = "target_labels") -> tuple[np.ndarray, int]:
    """Class labels (any sortable values) -> integer codes 0..C-1 and C."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidInput(f"{what} must be a 1-D array (one label per sample), got shape {arr.shape}")
    if len(arr) == 0:
        raise InvalidInput(f"{what} is empty")
    if len(arr) != n:
        raise InvalidInput(f"{what} has {len(arr)} entries but there are {n} samples: one label per sample is needed")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{what} holds NaN or infinite values")
    elif arr.dtype.kind == "O":
        if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in arr):
            raise InvalidInput(f"{what} holds missing (None/NaN) labels")
    elif arr.dtype.kind not in "iubUS":
        raise InvalidInput(f"{what} must hold integer or string class labels, got dtype {arr.dtype}")
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise InvalidInput(f"{what} mixes label types that cannot be compared: {exc}") from None
    return codes.reshape(-1), len(classes)


# --------------------------------------------------------------------------------------------------
# LEEP


def leep(source_probs, target_labels) -> float:
    """Log Expected Empirical Prediction (Nguyen, Hassner, Seeger & Archambeau, ICML 2020).

    ``source_probs`` (n, Cs) holds the source model's softmax output θ(x_i) on each target sample;
    ``target_labels`` (n,) the target classes.  With the empirical joint
    P̂(y, z) = 1/n Σ_i θ(x_i)_z [y_i = y] and conditional P̂(y | z) = P̂(y, z) / P̂(z), the score is

        LEEP = 1/n Σ_i log Σ_z P̂(y_i | z) θ(x_i)_z,

    the average log-likelihood of the "expected empirical predictor".  It is ≤ 0, **higher = better
    transfer**, and 0 exactly when the source's predictions determine the target label.  It does not
    depend on the order of the source classes.  Rows must be probability vectors (non-negative,
    summing to 1 within 1e-3; they are renormalised): apply a softmax to logits first.
    """
    theta = _matrix(source_probs, "source_probs")
    n = theta.shape[0]
    y, c = _labels(target_labels, n)
    if (theta < 0).any():
        raise InvalidInput("source_probs holds negative values: pass the softmax of the source model's logits")
    sums = theta.sum(axis=1)
    if np.abs(sums - 1.0).max() > 1e-3:
        raise InvalidInput("source_probs rows must each sum to 1 (softmax outputs); "
                           f"found a row summing to {sums[np.argmax(np.abs(sums - 1.0))]:.6g}")
    theta = theta / sums[:, None]
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0
    joint = onehot.T @ theta / n                                  # (C, Cs): P̂(y, z)
    pz = joint.sum(axis=0)                                        # P̂(z)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P̂(y | z); unused z get 0
    eep = np.einsum("iz,iz->i", theta, cond[y])                   # Σ_z P̂(y_i | z) θ(x_i)_z
    # eep_i ≥ θ_iz P̂(y_i|z) > 0 for some z, since P̂(y_i, z) ≥ θ_iz / n; the floor only guards underflow
    return float(np.mean(np.log(np.maximum(eep, np.finfo(np.float64).tiny))))


# --------------------------------------------------------------------------------------------------
# LogME


def _evidence_fixed_point(u: np.ndarray, s2: np.ndarray, d: int, y: np.ndarray,
                          max_iter: int = 100, tol: float = 1e-9) -> tuple[float, float, float]:
    """Maximise the Bayesian-linear-regression evidence of one target column over (alpha, beta).

    Model: y = F w + ε, w ~ N(0, α⁻¹ I_d), ε ~ N(0, β⁻¹ I_n).  With F = U diag(s) Vᵀ (thin SVD,
    r non-zero singular values, ``s2`` = s²) and z = Uᵀ y, everything is diagonal in the singular basis:
    the posterior mean is m = V diag(β s / (α + β s²)) z and log|A| = Σ log(α + β s²) + (d - r) log α
    where A = α I + β FᵀF.  MacKay's fixed point (as in LogME): γ = Σ β s² / (α + β s²),
    α = γ / |m|², β = (n - γ) / |y - F m|².

    The iteration converges linearly and sometimes slowly (or drifts to α → ∞ when the features
    explain nothing); if it has not settled after ``max_iter`` steps, the same stationarity
    condition is solved with Brent's method on the profile evidence in log λ (λ = α / β, β = n / Q(λ)),
    bracketed from the last iterate; λ is kept within [1e-12, 1e12] × s_max².
    Returns (log evidence / n, α, β).
    """
    from scipy.optimize import brentq

    n = len(y)
    r = len(s2)
    z2 = (u.T @ y) ** 2
    yy = float(y @ y)
    perp = max(yy - float(z2.sum()), 0.0)        # part of y outside F's column space: never fitted
    lam_lo, lam_hi = 1e-12 * s2.max(), 1e12 * s2.max()

    def parts(lam: float) -> tuple[float, float, float]:
        shrink = s2 + lam
        gamma = float((s2 / shrink).sum())                    # effective number of parameters
        m2 = float((s2 * z2 / (shrink * shrink)).sum())       # |m|²
        res = perp + float((lam * lam * z2 / (shrink * shrink)).sum())  # |y - F m|²
        return gamma, m2, res

    def slope(log_lam: float) -> float:
        """d(log evidence at β = n/Q)/d(log λ), up to a positive factor: γ Q - n λ |m|²."""
        lam = math.exp(log_lam)
        gamma, m2, res = parts(lam)
        return gamma * (res + lam * m2) - n * lam * m2

    lam, converged = 1.0 * float(np.mean(s2)), False
    for _ in range(max_iter):
        gamma, m2, res = parts(lam)
        if m2 <= 0.0 or res <= 0.0 or gamma >= n:
            break
        new = ((gamma / m2) * res) / (n - gamma)               # α / β
        new = min(max(new, lam_lo), lam_hi)
        if abs(new - lam) <= tol * lam:
            lam, converged = new, True
            break
        lam = new
    if not converged:
        t = math.log(min(max(lam, lam_lo), lam_hi))
        t_lo, t_hi = math.log(lam_lo), math.log(lam_hi)
        g = slope(t)
        step = math.log(10.0) * (1.0 if g > 0 else -1.0)
        a = t
        while g != 0.0:
            b = min(max(a + step, t_lo), t_hi)
            gb = slope(b)
            if (gb > 0) != (g > 0) or gb == 0.0:
                t = brentq(slope, min(a, b), max(a, b), xtol=1e-12, rtol=1e-12)
                break
            if b in (t_lo, t_hi):                              # evidence still rising at the bound
                t = b
                break
            a, g = b, gb
        lam = math.exp(t)
    gamma, m2, res = parts(lam)
    beta = n / max(res + lam * m2, 1e-300)
    alpha = lam * beta
    log_det_a = float(np.log(alpha + beta * s2).sum()) + (d - r) * math.log(alpha)
    evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * log_det_a
                - beta / 2 * res - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
    return evidence / n, alpha, beta


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero squared singular values s² of x (n, d) with the matching left and right singular vectors.

    Computed from the eigendecomposition of the smaller Gram matrix (x xᵀ when n ≤ d, xᵀ x otherwise),
    so the cost is O(min(n, d)² max(n, d)); directions with s² ≤ 1e-12 s²_max are dropped (they
    carry nothing: x has no extent there).
    """
    n, d = x.shape
    small = x @ x.T if n <= d else x.T @ x
    vals, vecs = np.linalg.eigh(small)
    keep = vals > 1e-12 * max(vals.max(), 0.0)
    s2, vecs = vals[keep], vecs[:, keep]
    if len(s2) == 0:
        return s2, np.zeros((n, 0)), np.zeros((d, 0))
    s = np.sqrt(s2)
    if n <= d:
        return s2, vecs, (x.T @ vecs) / s                    # V = xᵀ U / s
    return s2, (x @ vecs) / s, vecs                            # U = x V / s


def _targets(features, targets, regression: bool | None) -> tuple[np.ndarray, np.ndarray]:
    f = _matrix(features, "features")
    n = f.shape[0]
    t = np.asarray(targets)
    if regression is None:
        regression = t.ndim == 2
    if not regression:
        codes, c = _labels(t, n)
        ys = np.zeros((n, c))
        ys[np.arange(n), codes] = 1.0                            # one-vs-rest 0/1 targets
        return f, ys
    if t.ndim == 1:
        t = t[:, None]
    ys = _matrix(t, "targets")
    if len(ys) != n:
        raise InvalidInput(f"targets has {len(ys)} rows but features has {n}: one target per sample is needed")
    if (np.abs(ys).max(axis=0) == 0).any():
        raise InvalidInput("a regression target column is all zero: its evidence is unbounded")
    return f, ys


def logme_evidence(features, targets, *, regression: bool | None = None) -> list[tuple[float, float, float]]:
    """Per target column, ``(log evidence / n, alpha, beta)`` at LogME's fixed point (see :func:`logme`)."""
    f, ys = _targets(features, targets, regression)
    s2, u, _ = _spectrum(f)
    if len(s2) == 0:
        raise InvalidInput("features are all zero: there is nothing to regress the targets on")
    return [_evidence_fixed_point(u, s2, f.shape[1], ys[:, k]) for k in range(ys.shape[1])]


def logme(features, targets, *, regression: bool | None = None) -> float:
    """LogME: the maximum log evidence of a linear model on the features (You, Liu, Wang & Long, ICML 2021).

    For each target column y (classification: the one-vs-rest 0/1 indicator of each class;
    regression: each column of the float ``targets`` (n, k)), Bayesian linear regression
    y = F w + ε with w ~ N(0, α⁻¹ I) and ε ~ N(0, β⁻¹ I) has the closed-form marginal likelihood
    p(y | F, α, β); LogME maximises it over (α, β) by MacKay's fixed-point iteration and divides
    its log by n.  The score is the average over columns: **higher = better transfer**.

    The iteration runs in the singular basis of the features (obtained from the eigendecomposition
    of the smaller Gram matrix), so it costs O(min(n, d)² max(n, d)) and
    works for n < d (few labelled target samples, wide features) as for n > d.  ``targets``:
    1-D class labels (classification) or a 2-D float matrix (regression, inferred from ndim);
    ``regression=True`` treats a 1-D float array as a single regression target.
    """
    return float(np.mean([e for e, _, _ in logme_evidence(features, targets, regression=regression)]))


# --------------------------------------------------------------------------------------------------
# H-score


def _ledoit_wolf_shrinkage(x: np.ndarray, s2: np.ndarray) -> float:
    """Ledoit & Wolf (2004) shrinkage of the centred ``x`` towards μ I (as in sklearn's ``ledoit_wolf``)."""
    n, d = x.shape
    frob2 = float((s2 * s2).sum()) / (n * n)                    # |S|_F², S = xᵀx / n
    mu = float(s2.sum()) / (n * d)                               # tr(S) / d
    delta = (frob2 - d * mu * mu) / d                             # |S - μI|_F² / d
    row4 = float(((x * x).sum(axis=1) ** 2).sum())               # Σ_k |x_k|⁴
    beta = (row4 / n - frob2) / (d * n)
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else beta / delta


def hscore(features, target_labels) -> float:
    """Regularised H-score: tr(cov_α(f)⁻¹ (1 - α) cov(E[f | y])).

    The H-score of Bao, Li, Huang, Wang & Tong (ICIP 2019) is tr(cov(f)⁺ cov(E[f | y])): how much of
    the feature variance lies between the target classes.  Its empirical covariance is singular or
    ill-conditioned when n ≲ d, so this is the *regularised* H-score of Ibrahim, Ponomareva &
    Mazumder ("Newer is not always better: rethinking transferability metrics, their peculiarities,
    stability and performance", arXiv:2110.06893, ECML-PKDD 2022): cov(f) is replaced by the
    Ledoit–Wolf shrinkage estimate cov_α(f) = (1 - α) S + α (tr S / d) I and the class-mean covariance
    is scaled by (1 - α).  Both covariances use the 1/n normalisation.  **Higher = better transfer**.

    Invariance: the score is unchanged by a global rescaling of the features, by orthogonal rotations
    and by translations.  Unlike the unregularised H-score it is *not* invariant to per-feature
    (anisotropic) scaling, because the shrinkage target is isotropic.  Computed in the row space of
    the centred features (eigendecomposition of the smaller Gram matrix), so it costs O(min(n, d)² max(n, d)).
    """
    f = _matrix(features, "features")
    n, d = f.shape
    y, c = _labels(target_labels, n)
    x = f - f.mean(axis=0)
    s2, _, v = _spectrum(x)
    if len(s2) == 0:
        return 0.0                                                # constant features carry no information
    alpha = _ledoit_wolf_shrinkage(x, s2)
    mu = float(s2.sum()) / (n * d)
    lam = (1.0 - alpha) * s2 / n + alpha * mu                     # eigenvalues of cov_α in x's row space
    counts = np.bincount(y, minlength=c).astype(np.float64)
    means = np.zeros((c, d))
    np.add.at(means, y, x)
    means /= counts[:, None]                                      # class means of the centred features
    w = means @ v                                                 # they lie in the row space of x
    between = (counts / n) @ (w * w / lam)                  # Σ_c p_c Σ_i w_ci² / λ_i
    return float((1.0 - alpha) * between.sum())


# --------------------------------------------------------------------------------------------------
# k-NN probe


def knn_probe(features, target_labels, k: int = 5, folds: int | None = None) -> float:
    """Accuracy of a cosine k-nearest-neighbour classifier on the target's labelled samples.

    A probe of how well the source features cluster the target classes, after the k-NN evaluation
    of self-supervised features (Wu et al. CVPR 2018; Caron et al. ICCV 2021).  ``folds=None``:
    leave-one-out; an integer: stratified k-fold, sample i of class c (in input order) going to fold
    (its rank within c) mod ``folds``.  Each held-out sample takes the majority label of its ``k``
    most cosine-similar training samples (fewer if the training fold is smaller); a tied vote goes
    to the class with the larger summed similarity, then to the smaller label.  Neighbour ties go to
    the earlier sample, so the result is deterministic.  A class with a single example cannot be
    predicted when that example is held out; it counts as an error (as it would in practice).
    Zero vectors have similarity 0 to everything.  **Higher = better transfer**; chance is about
    the majority-class rate.
    """
    f = _matrix(features, "features")
    n = f.shape[0]
    y, c = _labels(target_labels, n)
    if n < 2:
        raise InvalidInput("knn_probe needs at least 2 labelled samples")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    unit = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)
    sim = unit @ unit.T
    if folds is None:
        fold = np.arange(n)                                       # leave-one-out
    else:
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= n:
            raise InvalidInput(f"folds must be an integer between 2 and {n} (or None for leave-one-out), got {folds!r}")
        fold = np.empty(n, dtype=np.int64)
        for cls in range(c):
            idx = np.flatnonzero(y == cls)
            fold[idx] = np.arange(len(idx)) % folds
    correct = 0
    for i in range(n):
        train = np.flatnonzero(fold != fold[i])
        if len(train) == 0:
            continue
        order = train[np.argsort(-sim[i, train], kind="stable")][:k]
        votes = np.bincount(y[order], minlength=c)
        weight = np.bincount(y[order], weights=sim[i, order], minlength=c)
        best = np.flatnonzero(votes == votes.max())
        pred = best[np.argmax(weight[best])]                      # argmax takes the first (smaller label) on ties
        correct += int(pred == y[i])
    return correct / n


# --------------------------------------------------------------------------------------------------
# mean-embedding distance


def mean_embedding_distance(a, b) -> float:
    """Squared Euclidean distance between the mean embeddings of two datasets, |mean(a) - mean(b)|².

    The trivial baseline (the linear-kernel MMD², Gretton et al. JMLR 2012): it needs no labels and
    no source model outputs.  **Lower = closer** (a distance, not a transferability score: rank with
    ``higher_is_better=False``).  Symmetric, and 0 for identical datasets.
    """
    a = _matrix(a, "the first embedding matrix")
    b = _matrix(b, "the second embedding matrix")
    if a.shape[1] != b.shape[1]:
        raise InvalidInput(f"embeddings differ in dimension ({a.shape[1]} vs {b.shape[1]})")
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(diff @ diff)


# --------------------------------------------------------------------------------------------------
# evaluation helpers


def _finite_scores(scores: Mapping[str, float], what: str) -> dict[str, float]:
    if not isinstance(scores, Mapping):
        raise InvalidInput(f"{what} must map source names to numbers, got {type(scores).__name__}")
    if not scores:
        raise InvalidInput(f"{what} is empty: there are no sources to rank")
    out = {}
    for name, v in scores.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise InvalidInput(f"{what}[{name!r}] is not a number: {v!r}") from None
        if not math.isfinite(fv):
            raise InvalidInput(f"{what}[{name!r}] is {fv}: scores and gains must be finite")
        out[name] = fv
    return out


def _paired(scores, gains) -> tuple[np.ndarray, np.ndarray, list]:
    """Align a method's scores and measured gains per source (mappings by name, sequences by position)."""
    if isinstance(scores, Mapping) or isinstance(gains, Mapping):
        s = _finite_scores(scores, "scores")
        g = _finite_scores(gains, "gains")
        if set(s) != set(g):
            only_s, only_g = sorted(map(str, set(s) - set(g))), sorted(map(str, set(g) - set(s)))
            raise InvalidInput(f"scores and gains name different sources (only in scores: {only_s}; only in gains: {only_g})")
        names = sorted(s, key=str)
        return np.array([s[k] for k in names]), np.array([g[k] for k in names]), names
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gains, dtype=np.float64)
    if s.ndim != 1 or g.ndim != 1:
        raise InvalidInput("scores and gains must be 1-D sequences or mappings from source names")
    if len(s) == 0:
        raise InvalidInput("scores is empty: there are no sources to rank")
    if len(s) != len(g):
        raise InvalidInput(f"scores has {len(s)} sources but gains has {len(g)}")
    if not (np.isfinite(s).all() and np.isfinite(g).all()):
        raise InvalidInput("scores and gains must be finite (found NaN or infinity)")
    return s, g, list(range(len(s)))


def rank_sources(scores: Mapping[str, float], higher_is_better: bool = True) -> list[str]:
    """Source names ordered best first; equal scores keep name order so the ranking is deterministic."""
    s = _finite_scores(scores, "scores")
    sign = -1.0 if higher_is_better else 1.0
    return sorted(s, key=lambda name: (sign * s[name], str(name)))


def spearman(scores, gains, higher_is_better: bool = True) -> float:
    """Spearman ρ between a method's scores and the measured transfer gains of the same sources, for one target.

    ``scores``/``gains``: mappings from source name (aligned by name) or equal-length sequences.
    Ties get average ranks (``scipy.stats.spearmanr``).  For a lower-is-better method (a distance)
    pass ``higher_is_better=False``: the scores are negated so that ρ = 1 still means "ranks the
    sources exactly by gain".  If either side is constant (or there is one source) the ranking
    carries no information and ρ is undefined; 0.0 is returned, the expected ρ of a random ranking.
    """
    from scipy.stats import spearmanr

    s, g, _ = _paired(scores, gains)
    if not higher_is_better:
        s = -s
    if len(s) < 2 or np.ptp(s) == 0 or np.ptp(g) == 0:
        return 0.0
    return float(spearmanr(s, g).statistic)


def _top_set(s: np.ndarray, higher_is_better: bool) -> np.ndarray:
    best = s.max() if higher_is_better else s.min()
    return np.flatnonzero(s == best)


def top1_regret(scores, gains, higher_is_better: bool = True) -> float:
    """Best gain minus the gain of the source the method ranks first (≥ 0; 0 = picked the best).

    When several sources tie for the top score the pick is ambiguous; the regret is the mean over
    the tied sources (the expected regret of breaking the tie at random).
    """
    s, g, _ = _paired(scores, gains)
    return float(g.max() - g[_top_set(s, higher_is_better)].mean())


def top1_hit(scores, gains, higher_is_better: bool = True) -> float:
    """1.0 if the source the method ranks first has the best gain, else 0.0, for one target.

    Any source whose gain equals the maximum counts as best; with ties for the top score the result
    is the fraction of the tied sources that are best (the expected hit of a random tie-break).
    """
    s, g, _ = _paired(scores, gains)
    top = _top_set(s, higher_is_better)
    return float(np.mean(g[top] == g.max()))


def hit_rate(per_target: Iterable[tuple[Mapping[str, float] | Sequence[float], Mapping[str, float] | Sequence[float]]],
             higher_is_better: bool = True) -> float:
    """Fraction of targets whose top-ranked source is the best one: the mean of :func:`top1_hit`.

    ``per_target``: one ``(scores, gains)`` pair per target.
    """
    hits = [top1_hit(s, g, higher_is_better) for s, g in per_target]
    if not hits:
        raise InvalidInput("hit_rate needs at least one target")
    return float(np.mean(hits))
