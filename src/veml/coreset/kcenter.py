"""k-center greedy core sets (Sener & Savarese 2018), bounded by memory bandwidth, not by Python.

Why this file exists: the greedy 2-approximation picks k points so that every embedding lies close
to one of them, and it is the core set both active learning and the dataset distances use.  The
textbook loop (``pairwise_distances(X, X[[c]])`` then ``np.minimum``) allocates two N-vectors per
step and upcasts to float64, so it runs far below what the machine can stream.  Here each step is
one pass over float32 rows in chunks, ``|x-mu|^2 - 2 x.(c-mu) + const`` with the norms computed
once (about the column mean mu, so embeddings far from the origin keep their small distances) and a
BLAS matrix-vector product writing into buffers allocated before the loop: the plain pass is as fast
as reading X once per centre.

To go *below* that limit without changing the answer we use the triangle inequality: a point whose
nearest centre ``a`` satisfies ``d(c, a) >= 2 d(x, a)`` cannot get closer to the new centre ``c``,
so its row need not be read.  Centre-to-centre distances are k x d work; once a few centres cover
the clusters most rows are ruled out from N-length arrays alone.  Margins sized to float32 rounding
keep the pruned run identical to the plain one.  Which point is farthest is decided in float64
among the few whose float32 distances are within rounding of the largest, so the two runs (whose
float32 values can differ by a few ulps) pick the same point, and exact ties go to the lowest index.

Memory is O(N + chunk x d + k x d): never an N x k or N x N matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from veml.errors import InvalidInput

_U = 2.0**-24  # float32 unit round-off
_DENSE_FRACTION = 0.3  # a chunk with more candidates is read whole: gathering rows streams ~3x slower
_GATHER_BYTES = 1 << 20  # gathered rows go through a buffer this big so the matvec reads them from cache
_BLOCK_FLOATS = 1 << 24  # cap on the rows x centres block of the many-centres pass (64 MiB)
_REL = 1e-5  # relative safety margin of the pruning test
_SHORTLIST = 256  # at most this many float32 near-ties are re-checked in float64 per step


@dataclass(frozen=True)
class KCenterResult:
    """A core set and how well it covers X; ``assign`` lets callers weigh centres by cluster size.

    ``stats`` says what the run cost: ``rows_read`` (row distances computed), ``passes`` (k),
    ``read_fraction`` (rows_read / (N k), below 1 only when pruning skipped rows).
    """

    indices: np.ndarray  # int64 (k,), positions into X in selection order
    radius: float  # max over X of the distance to the nearest centre (``already`` points count as centres)
    min_dist: np.ndarray  # float32 (N,), 0 for centres (and for ``already`` points)
    assign: np.ndarray  # int64 (N,), index into ``indices``; -1 where an ``already`` point is nearest
    stats: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prepared:
    """X as float32 with what every pass needs, computed once.

    Distances are taken relative to the column mean ``mu``: ``|x-c|^2 = |x-mu|^2 - 2 x.(c-mu) +
    (|c-mu|^2 + 2 mu.(c-mu))``.  Same single matvec per centre, but embeddings far from the origin
    (ReLU features all share a large positive mean) no longer lose their distances to float32
    cancellation, which would otherwise swamp the small distances late in the run.
    """

    X: np.ndarray  # float32 C-contiguous: the caller's array when it already is one
    mu: np.ndarray  # float32 (d,)
    xx: np.ndarray  # float32 (N,), |x - mu|^2
    window: float  # float32 squared distances this close to the largest are re-checked in float64
    err: float  # worst-case error of one computed squared distance

    def centred(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows - mu, the per-row constant of the distance formula) for centre vectors."""
        cm = (rows - self.mu).astype(np.float32)
        return cm, (np.einsum("ij,ij->i", cm, cm) + 2.0 * (cm @ self.mu)).astype(np.float32)


def _prepare(X: np.ndarray, name: str = "X") -> _Prepared:
    """Validate, convert once, and centre; the norms double as the NaN/inf check (one bad value
    makes its row's norm non-finite, as does a value whose square overflows float32)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise InvalidInput(f"{name} must be a 2-D (points x features) array, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidInput(f"{name} is empty (shape {X.shape}); k-center needs at least one point")
    X = np.ascontiguousarray(X, dtype=np.float32)
    with np.errstate(all="ignore"):
        mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        xx = np.empty(len(X), np.float32)
        step = max(1, (1 << 18) // X.shape[1])  # a 1 MiB temporary, not a centred copy of X
        for a in range(0, len(X), step):
            t = X[a : a + step] - mu
            np.einsum("ij,ij->i", t, t, out=xx[a : a + step])
    if not (np.isfinite(xx).all() and np.isfinite(mu).all()):
        raise InvalidInput(f"{name} holds NaN or infinite values (or values too large for float32 distances)")
    # Error of |x-mu|^2 - 2 x.(c-mu) + const: each term is a d-term dot product of vectors no
    # longer than R = max|x-mu| and R + |mu|, at worst d * u * scale.  Two BLAS kernels summing
    # the same row in different orders were measured to disagree by < 0.5 u * scale, and a float32
    # value from its float64 one by a few times that; the float64 shortlist window is wider still.
    r = float(np.sqrt(xx.max()))
    scale = 4.0 * r * (r + float(np.linalg.norm(mu))) + 1e-30
    d = X.shape[1]
    return _Prepared(X, mu, xx, window=max(8.0, np.sqrt(d)) * _U * scale, err=d * _U * scale)


def _nearest(P: _Prepared, C: np.ndarray, chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance of each row to its nearest row of C, and which; a few rows x m at a time."""
    cm, off = P.centred(C)
    rows = int(max(1, min(chunk_rows, _BLOCK_FLOATS // max(len(C), 1))))
    n = len(P.X)
    buf = np.empty((min(rows, n), len(C)), np.float32)
    d2, arg = np.empty(n, np.float32), np.empty(n, np.int64)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        blk = buf[: b - a]
        np.dot(P.X[a:b], cm.T, out=blk)
        blk *= -2.0
        blk += P.xx[a:b, None]
        blk += off
        arg[a:b] = blk.argmin(axis=1)
        d2[a:b] = np.take_along_axis(blk, arg[a:b, None], axis=1)[:, 0]
    np.maximum(d2, 0.0, out=d2)
    return d2, arg


class _Greedy:
    """The state one greedy run carries: per point its nearest centre so far and how far it is."""

    def __init__(self, P: _Prepared, n_centres: int, chunk_rows: int, prune: bool) -> None:
        n, d = P.X.shape
        self.P, self.X, self.xx, self.chunk, self.prune = P, P.X, P.xx, max(1, int(chunk_rows)), prune
        self.md2 = np.full(n, np.inf, np.float32)  # -inf marks chosen centres: never chosen again
        self.assign = np.full(n, -1, np.int64)
        self.C = np.empty((n_centres, d), np.float32)  # centred centre vectors
        self.cn = np.empty(n_centres, np.float32)  # their |c - mu|^2
        self.pos = np.empty(n_centres, np.int64)  # their rows in X
        rows = min(self.chunk, n)
        self.dots, self.d2, self.less = np.empty(rows, np.float32), np.empty(rows, np.float32), np.empty(rows, bool)
        self.mask = np.empty(n, bool)
        if prune:
            self.gather = np.empty((max(1, min(rows, _GATHER_BYTES // (4 * d))), d), np.float32)
            self.f1, self.f2 = np.empty(n, np.float32), np.empty(n, np.float32)
        self.rows_read = self.dense_chunks = self.sparse_chunks = 0

    def add(self, i: int, j: int) -> None:
        """Make row i centre number j and update every point that can get closer to it."""
        c = self.C[j]
        np.subtract(self.X[i], self.P.mu, out=c)
        self.pos[j] = i
        self.cn[j] = self.xx[i]
        off = np.float32(self.xx[i] + 2.0 * float(c @ self.P.mu))
        if self.prune and j > 0:
            self._pruned_pass(c, off, j)
        else:
            for a in range(0, len(self.X), self.chunk):
                self._dense_chunk(c, off, j, a, min(a + self.chunk, len(self.X)))
        self.md2[i], self.assign[i] = -np.inf, j

    def farthest(self) -> int:
        """The point farthest from its centre, decided in float64 among the float32 near-ties."""
        np.greater_equal(self.md2, self.md2.max() - self.P.window, out=self.mask)
        cand = np.flatnonzero(self.mask)
        if len(cand) > _SHORTLIST:  # largest float32 values first, ties by index: deterministic
            cand = np.sort(cand[np.lexsort((cand, -self.md2[cand]))[:_SHORTLIST]])
        if len(cand) == 1:
            return int(cand[0])
        diff = self.X[cand].astype(np.float64) - self.X[self.pos[self.assign[cand]]]
        return int(cand[np.argmax(np.einsum("ij,ij->i", diff, diff))])  # first maximum: lowest index

    def _dense_chunk(self, c: np.ndarray, off: np.float32, j: int, a: int, b: int) -> None:
        n = b - a
        dots, d2, less = self.dots[:n], self.d2[:n], self.less[:n]
        np.dot(self.X[a:b], c, out=dots)
        np.multiply(dots, -2.0, out=d2)
        d2 += self.xx[a:b]
        d2 += off
        np.maximum(d2, 0.0, out=d2)
        np.less(d2, self.md2[a:b], out=less)
        np.copyto(self.md2[a:b], d2, where=less)
        np.copyto(self.assign[a:b], j, where=less)
        self.rows_read += n
        self.dense_chunks += 1

    def _sparse_rows(self, c: np.ndarray, off: np.float32, j: int, idx: np.ndarray) -> None:
        """Only the candidate rows, gathered through a cache-sized buffer the matvec then reads."""
        step = len(self.gather)
        for s in range(0, len(idx), step):
            ids = idx[s : s + step]
            g, dots = self.gather[: len(ids)], self.dots[: len(ids)]
            np.take(self.X, ids, axis=0, out=g, mode="clip")
            np.dot(g, c, out=dots)
            d2 = self.xx[ids] - 2.0 * dots + off
            np.maximum(d2, 0.0, out=d2)
            closer = d2 < self.md2[ids]
            self.md2[ids[closer]] = d2[closer]
            self.assign[ids[closer]] = j
        self.rows_read += len(idx)

    def _pruned_pass(self, c: np.ndarray, off: np.float32, j: int) -> None:
        """Skip x when d(c,a)^2 >= 4 (1+rel) d(x,a)^2 + 6 err, a its centre: then d(x,c) >= d(x,a)
        by the triangle inequality, with room for the rounding of all three computed distances."""
        dcc = np.maximum(self.cn[:j] - 2.0 * (self.C[:j] @ c) + self.cn[j], 0.0).astype(np.float32)
        np.take(dcc, self.assign, out=self.f1, mode="clip")
        np.multiply(self.md2, 4.0 * (1.0 + _REL), out=self.f2)
        self.f2 += 6.0 * self.P.err
        np.less(self.f1, self.f2, out=self.mask)
        starts = np.arange(0, len(self.X), self.chunk)
        counts = np.add.reduceat(self.mask, starts, dtype=np.int64)
        dense = counts > _DENSE_FRACTION * np.diff(np.append(starts, len(self.X)))
        for a in starts[dense].tolist():
            b = min(a + self.chunk, len(self.X))
            self._dense_chunk(c, off, j, a, b)
            self.mask[a:b] = False
        if counts[~dense].any():
            self._sparse_rows(c, off, j, np.flatnonzero(self.mask))
            self.sparse_chunks += int(np.count_nonzero(counts[~dense]))


def _already(value: np.ndarray | None, n: int) -> np.ndarray:
    if value is None:
        return np.empty(0, np.int64)
    arr = np.asarray(value)
    if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInput(f"already must be a 1-D array of integer positions, got dtype {arr.dtype}, shape {arr.shape}")
    arr = np.unique(arr.astype(np.int64))
    if arr.size and (arr[0] < 0 or arr[-1] >= n):
        raise InvalidInput(f"already holds positions outside 0..{n - 1}")
    return arr


def _check_k(k: int, most: int, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= most:
        raise InvalidInput(f"k must be an integer between 1 and {most} ({what}), got {k!r}")
    return int(k)


def k_center_greedy(X: np.ndarray, k: int, *, seed: int = 0, already: np.ndarray | None = None,
                    chunk_rows: int = 16384, prune: bool = True) -> KCenterResult:
    """Farthest-first traversal: k new centres, each the point farthest from all chosen so far.

    With ``already`` (the labelled pool of active learning) the traversal starts from it, so the
    k returned centres are the ones that best complete it; otherwise the seed picks the first.
    ``prune`` changes only the speed, never the result (see the module docstring).
    """
    P = _prepare(X)
    n = len(P.X)
    pre = _already(already, n)
    m = len(pre)
    k = _check_k(k, n - m, f"N={n} points, {m} already chosen")
    st = _Greedy(P, m + k, chunk_rows, prune)
    if m:
        st.C[:m], st.cn[:m], st.pos[:m] = P.X[pre] - P.mu, P.xx[pre], pre
        st.md2, st.assign = _nearest(P, P.X[pre], st.chunk)
        st.md2[pre], st.assign[pre] = -np.inf, np.arange(m)
        st.rows_read += n
        chosen = [st.farthest()]
    else:
        chosen = [int(np.random.default_rng(seed).integers(n))]
    st.add(chosen[0], m)
    for j in range(m + 1, m + k):
        chosen.append(st.farthest())
        st.add(chosen[-1], j)
    md2, assign = st.md2, st.assign
    np.sqrt(np.maximum(md2, 0.0, out=md2), out=md2)
    if m:
        assign -= m
        assign[assign < 0] = -1
    stats = {"rows_read": float(st.rows_read), "passes": float(k), "rows_total": float(n) * k,
             "read_fraction": st.rows_read / (float(n) * k), "dense_chunks": float(st.dense_chunks),
             "sparse_chunks": float(st.sparse_chunks)}
    return KCenterResult(np.asarray(chosen, np.int64), float(md2.max()), md2, assign, stats)


def covering_radius(X: np.ndarray, centres: np.ndarray, chunk_rows: int = 16384) -> float:
    """Largest distance from a row of X to its nearest centre: the quality measure of a core set."""
    P = _prepare(X)
    C = _prepare(centres, "centres").X
    if C.shape[1] != P.X.shape[1]:
        raise InvalidInput(f"centres have {C.shape[1]} features but X has {P.X.shape[1]}")
    return float(np.sqrt(_nearest(P, C, chunk_rows)[0].max()))


def coverage(X: np.ndarray, centres: np.ndarray, chunk_rows: int = 16384) -> np.ndarray:
    """How many rows of X each centre is nearest to (int64, one count per centre): a core set's weights."""
    P = _prepare(X)
    C = _prepare(centres, "centres").X
    if C.shape[1] != P.X.shape[1]:
        raise InvalidInput(f"centres have {C.shape[1]} features but X has {P.X.shape[1]}")
    return np.bincount(_nearest(P, C, chunk_rows)[1], minlength=len(C)).astype(np.int64)


def k_center_partitioned(parts: Sequence[np.ndarray], k: int, *, seed: int = 0,
                         per_part: int | None = None) -> KCenterResult:
    """Composable core set: greedy per part, then greedy over the union of the part centres.

    Each part can run on a different worker and only per_part x d floats travel; the result is
    still a constant-factor approximation.  Indices refer to the concatenation of ``parts``.
    """
    if len(parts) == 0:
        raise InvalidInput("k_center_partitioned needs at least one part")
    preps = [_prepare(p, f"part {i}") for i, p in enumerate(parts)]
    if len({P.X.shape[1] for P in preps}) != 1:
        raise InvalidInput("all parts must have the same number of features")
    total = sum(len(P.X) for P in preps)
    k = _check_k(k, total, "points over all parts")
    per = int(per_part or k)
    if per < 1:
        raise InvalidInput(f"per_part must be at least 1, got {per_part!r}")
    picked, vectors, offset, rows = [], [], 0, 0.0
    for p, P in enumerate(preps):
        r = k_center_greedy(P.X, min(per, len(P.X)), seed=seed + p)
        picked.append(r.indices + offset)
        vectors.append(P.X[r.indices])
        offset += len(P.X)
        rows += r.stats["rows_read"]
    union = np.concatenate(picked)
    if len(union) < k:  # parts smaller than per_part: the union is all they could offer
        raise InvalidInput(f"the parts yield only {len(union)} centres for k={k}; raise per_part")
    U = np.concatenate(vectors)
    top = k_center_greedy(U, k, seed=seed)
    indices, C = union[top.indices], U[top.indices]
    md2, assign = np.empty(total, np.float32), np.empty(total, np.int64)
    offset = 0
    for P in preps:  # one part at a time: the parts are never concatenated
        md2[offset : offset + len(P.X)], assign[offset : offset + len(P.X)] = _nearest(P, C, 16384)
        offset += len(P.X)
    md2[indices], assign[indices] = 0.0, np.arange(k)
    stats = {"rows_read": rows + top.stats["rows_read"] + total, "passes": float(k), "union": float(len(union)),
             "parts": float(len(preps))}
    return KCenterResult(indices, float(np.sqrt(md2.max())), np.sqrt(md2), assign, stats)
