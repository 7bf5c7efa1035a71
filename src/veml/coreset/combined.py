"""One permutation test over several statistics: what ``bbsd`` runs on a classifier.

Why: no single statistic sees every harmful shift.  A kernel two-sample test (MMD) on the model's
softmax catches label shift (the mix of predicted classes moves) better than per-output KS tests;
per-output KS and an MMD on the input pixels catch covariate shift — noise, blur, rotation — that
leaves the predicted mix alone.  Bonferroni over separate tests pays for every test added, so the
statistics are instead computed on *one* set of permutations of the pooled reference and test rows
and combined (non-parametric combination, Pesarin 2001):

* each statistic is standardised against its own permutation distribution, and a family's statistic
  is the sum of its members' standardised values (bbsd's families hold one statistic each);
* each family gets a permutation p-value, and the batch's statistic is the weighted Tippett minimum
  ``min_f p_f / w_f`` — whose own p-value comes from the same permutations.

Every statistic is a function of the pooled rows and a split of them (the MMD bandwidth is the median
distance over the *pooled* rows), and the families' shares of the level depend on the batch size alone,
so under "no shift" the observed split is one more random split: the p-value is exact at any n.  That
needs the random splits drawn afresh for each batch (here from the seed and a digest of the batch's
rows, so a test is reproducible): one fixed set of splits reused for every batch is not a group, and on
the digit suite it made a single reference's false-positive rate at n = 10 run from 0.02 to 0.18
(BENCHMARKS.md).  A test reads at most ``cap`` reference rows and ``cap`` test rows (chosen by the
seed), which bounds the kernel matrix at (2 cap)² entries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from veml.coreset.distance import pairwise_sq
from veml.coreset.twosample import MIN_SAMPLES, DriftResult, _informative, _matrix
from veml.errors import InvalidInput

KINDS = ("ks", "mmd")
#: bbsd's share of the level for label shift (softmax MMD); the rest goes to covariate shift.  On image data the
#: share grows with the test batch's size n as LABEL_SHIFT_WEIGHT * n / (n + LABEL_SHIFT_RAMP): a batch of 10 holds
#: too few samples for its class mix to say much (0.53 of the level), one of 500 enough (0.78)
LABEL_SHIFT_WEIGHT = 0.8
LABEL_SHIFT_RAMP = 5.0
#: bbsd's fixed share for label shift where the covariate family reads the outputs too (no image pixels)
LABEL_SHIFT_WEIGHT_OUTPUTS = 0.6
#: the pixel MMD's kernel width, as a share of the median pooled squared distance
PIXEL_KERNEL_SCALE = 0.25


@dataclass(frozen=True)
class Statistic:
    name: str
    kind: str  # ks: the largest per-column Kolmogorov-Smirnov distance; mmd: Gaussian-kernel MMD² (biased)
    block: str  # the feature block it reads
    scale: float = 1.0  # mmd: kernel exp(-|x - y|² / (scale * the median pooled squared distance))


@dataclass(frozen=True)
class Family:
    name: str
    statistics: tuple[Statistic, ...]
    weight: float
    #: > 0: the family's share of the level at a test batch of n rows is weight * n / (n + ramp), and the families
    #: without a ramp share what is left in proportion to their weights.  n is the same on every split of the pooled
    #: rows, so the test stays exact.
    ramp: float = 0.0


def black_box(images: bool) -> tuple[Family, ...]:
    """bbsd on a classifier: label shift (MMD on the softmax) and covariate shift (for image data an MMD on pixel
    thumbnails with a kernel a quarter as wide, which sees blur and noise the softmax hides; otherwise KS on each
    output).  Kernel widths and weights were chosen on six seeds of the issue-15 suite (BENCHMARKS.md)."""
    label = Statistic("softmax mmd", "mmd", "softmax", 1.0)
    if images:
        return (Family("label shift", (label,), LABEL_SHIFT_WEIGHT, LABEL_SHIFT_RAMP),
                Family("covariate shift", (Statistic("pixel mmd", "mmd", "pixels", PIXEL_KERNEL_SCALE),), 1.0))
    return (Family("label shift", (label,), LABEL_SHIFT_WEIGHT_OUTPUTS),
            Family("covariate shift", (Statistic("softmax ks", "ks", "softmax"),), 1.0 - LABEL_SHIFT_WEIGHT_OUTPUTS))


def _subsample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


@dataclass(frozen=True)
class Combined:
    families: tuple[Family, ...]
    alpha: float = 0.05
    n_permutations: int = 200
    seed: int = 0
    cap: int = 1000
    method: str = "bbsd"

    def weights(self, n: int) -> tuple[float, ...]:
        """Each family's share of the level at a test batch of ``n`` rows (they sum to 1)."""
        ramped = [f.weight * n / (n + f.ramp) if f.ramp > 0 else 0.0 for f in self.families]
        flat = sum(f.weight for f in self.families if f.ramp <= 0)
        left = 1.0 - sum(ramped)
        if flat <= 0 or left <= 0:  # every family ramps (or the ramps take it all): shares in proportion
            total = sum(ramped)
            return tuple(r / total for r in ramped)
        return tuple(r if f.ramp > 0 else left * f.weight / flat for r, f in zip(ramped, self.families))

    def blocks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.block for f in self.families for s in f.statistics))

    def _check(self) -> None:
        if not self.families or any(not f.statistics for f in self.families):
            raise InvalidInput("a combined drift test needs at least one family of at least one statistic")
        if any(not f.weight > 0 for f in self.families):
            raise InvalidInput("every family of a combined drift test needs a positive weight")
        if any(not f.ramp >= 0 for f in self.families):
            raise InvalidInput("a family's ramp must be 0 (a fixed weight) or positive")
        bad = [s.kind for f in self.families for s in f.statistics if s.kind not in KINDS]
        if bad:
            raise InvalidInput(f"unknown statistic kind {bad[0]!r}: use one of {', '.join(KINDS)}")
        if any(not s.scale > 0 for f in self.families for s in f.statistics):
            raise InvalidInput("every statistic's kernel scale must be positive")
        if not 0 < self.alpha < 1:
            raise InvalidInput(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.n_permutations < 10 or self.cap < MIN_SAMPLES["bbsd"]:
            raise InvalidInput("a combined drift test needs at least 10 permutations and a cap of at least "
                               f"{MIN_SAMPLES['bbsd']} rows")

    def _rows(self, data: Mapping[str, np.ndarray], what: str, dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{what} must map each feature block ({', '.join(self.blocks())}) to a matrix")
        missing = [b for b in self.blocks() if b not in data]
        if missing:
            raise InvalidInput(f"{what} lacks the feature block {missing[0]!r}")
        out = {b: _matrix(data[b], f"{what}'s {b} block", None if dims is None else dims[b]) for b in self.blocks()}
        if len({len(v) for v in out.values()}) != 1:
            raise InvalidInput(f"{what}'s feature blocks hold different numbers of rows: each row is one sample")
        return out

    def fit(self, reference: Mapping[str, np.ndarray]) -> "FittedCombined":
        self._check()
        ref = self._rows(reference, "the reference")
        n = len(next(iter(ref.values())))
        if n < MIN_SAMPLES["bbsd"]:
            raise InvalidInput(f"the reference has {n} samples; the {self.method} drift test needs at least {MIN_SAMPLES['bbsd']}")
        for block in ref.values():
            _informative(block)
        keep = _subsample(n, self.cap, self.seed)
        ref = {b: np.ascontiguousarray(v[keep]) for b, v in ref.items()}
        mmd_blocks = {s.block for f in self.families for s in f.statistics if s.kind == "mmd"}
        sq = {b: pairwise_sq(ref[b].astype(np.float64), ref[b].astype(np.float64)) for b in mmd_blocks}
        return FittedCombined(self, ref, sq, n)


@dataclass(frozen=True)
class FittedCombined:
    params: Combined
    reference: Mapping[str, np.ndarray]  # the (capped) reference rows, per block
    ref_sq: Mapping[str, np.ndarray]  # squared distances among them, per block an MMD reads
    n_reference_all: int

    @property
    def method(self) -> str:
        return self.params.method

    def _splits(self, m: int, n: int, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """(P + 1, m + n) float: 1 where a row is on the reference side; row 0 is the observed split.

        The permutations are drawn afresh for each batch, from a generator seeded by the detector's seed and a digest
        of the batch's rows (in any order): a test is reproducible, and no set of permutations is shared by every
        batch (a fixed set is not a group, so the rank of the observed split among its splits is only approximately
        uniform)."""
        p = self.params
        blocks = [np.ascontiguousarray(batch[name]).reshape(n, -1).view(np.uint8) for name in sorted(batch)]
        rows = sorted(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in np.concatenate(blocks, axis=1))
        salt = int.from_bytes(hashlib.blake2b(b"".join(rows), digest_size=8).digest(), "little")
        rng = np.random.default_rng([p.seed + 1, salt])
        sides = np.zeros((p.n_permutations + 1, m + n), np.float64)
        sides[0, :m] = 1.0
        for i in range(1, p.n_permutations + 1):
            sides[i, rng.permutation(m + n)[:m]] = 1.0
        return sides

    @staticmethod
    def _ks(pooled: np.ndarray, sides: np.ndarray, m: int, n: int) -> np.ndarray:
        best = np.zeros(len(sides))
        for j in range(pooled.shape[1]):
            order = np.argsort(pooled[:, j], kind="stable")
            values = pooled[order, j]
            ends = np.flatnonzero(np.append(values[1:] != values[:-1], True))  # the last row of each run of ties
            s = sides[:, order]
            on_ref = np.cumsum(s, axis=1)[:, ends]  # reference rows at or below each distinct value
            on_test = (ends + 1)[None, :] - on_ref
            best = np.maximum(best, np.abs(on_ref / m - on_test / n).max(1))
        return best

    def _mmd(self, block: str, x: np.ndarray, sides: np.ndarray, m: int, n: int, scale: float = 1.0) -> tuple[np.ndarray, float]:
        r = self.reference[block].astype(np.float64)
        t = x.astype(np.float64)
        rt, tt = pairwise_sq(r, t), pairwise_sq(t, t)
        d = np.block([[self.ref_sq[block], rt], [rt.T, tt]])
        med = float(np.median(d[np.triu_indices(len(d), 1)]))
        k = np.exp(-d / (scale * (med if med > 0 else 1.0)))
        ka = sides @ k
        aka = (ka * sides).sum(1)
        arow = sides @ k.sum(1)
        akb = arow - aka
        bkb = k.sum() - 2.0 * arow + aka
        return aka / m ** 2 + bkb / n ** 2 - 2.0 * akb / (m * n), float(np.sqrt(scale * med / 2.0))  # the kernel's sigma

    def test(self, batch: Mapping[str, np.ndarray]) -> DriftResult:
        p = self.params
        x = p._rows(batch, "the test batch", {b: v.shape[1] for b, v in self.reference.items()})
        n_all = len(next(iter(x.values())))
        if n_all < MIN_SAMPLES["bbsd"]:
            raise InvalidInput(f"the test batch has {n_all} samples; the {p.method} drift test needs at least {MIN_SAMPLES['bbsd']}")
        keep = _subsample(n_all, p.cap, p.seed + 2)
        x = {b: v[keep] for b, v in x.items()}
        m, n = len(next(iter(self.reference.values()))), len(keep)
        sides = self._splits(m, n, x)
        values: dict[str, np.ndarray] = {}
        bandwidths: dict[str, float] = {}
        for f in p.families:
            for s in f.statistics:
                if s.name in values:
                    continue
                if s.kind == "ks":
                    pooled = np.concatenate([self.reference[s.block], x[s.block]]).astype(np.float64)
                    values[s.name] = self._ks(pooled, sides, m, n)
                else:
                    values[s.name], bandwidths[s.name] = self._mmd(s.block, x[s.block], sides, m, n, s.scale)
        # everything below treats the P + 1 splits alike (the observed one is one of them), so under "no shift"
        # the observed split's rank among them is uniform and the p-value exact
        z = {}
        for name, v in values.items():
            sd = float(v.std())
            z[name] = (v - float(v.mean())) / (sd if sd > 0 else 1.0)
        P = p.n_permutations
        weights = p.weights(n)
        fam_p, fam_rows = [], []
        for f, w in zip(p.families, weights):
            stat = np.sum([z[s.name] for s in f.statistics], axis=0)
            ranked = np.sort(stat)
            pv = (P + 1 - np.searchsorted(ranked, stat, side="left")) / (P + 1)  # share of splits at least as extreme
            fam_p.append(pv)
            fam_rows.append({"name": f.name, "weight": w, "p_value": float(pv[0]), "drifted": bool(pv[0] < p.alpha * w),
                             "statistics": [{"name": s.name, "kind": s.kind, "block": s.block,
                                             "value": float(values[s.name][0]), "z": float(z[s.name][0])}
                                            for s in f.statistics]})
        tippett = np.min([pv / w for pv, w in zip(fam_p, weights)], axis=0)
        p_value = float(np.sum(tippett <= tippett[0]) / (P + 1))
        details: dict[str, Any] = {"test": "combined", "permutations": P, "reference_rows": m, "test_rows": n,
                                   "families": fam_rows, "bandwidths": bandwidths}
        return DriftResult(p.method, p_value < p.alpha, p_value, float(tippett[0]), p.alpha, p.alpha,
                           self.n_reference_all, n_all, details)
