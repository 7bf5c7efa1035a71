"""k-center greedy core sets: the answer of a brute-force reference, pruning that changes nothing but
the speed, the ``already`` pool of active learning, the composable version, bad input, and memory
that stays O(N) (no N x k matrix)."""

from __future__ import annotations

import contextlib
import tracemalloc

import numpy as np
import pytest

from veml.coreset.kcenter import KCenterResult, covering_radius, k_center_greedy, k_center_partitioned
from veml.errors import InvalidInput


def blobs(n: int, d: int, n_blobs: int, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_blobs, d)) * 3
    sigma = rng.uniform(0.1, 0.5, n_blobs)
    lab = rng.integers(n_blobs, size=n)
    return (means[lab] + rng.standard_normal((n, d)) * sigma[lab, None] + offset).astype(np.float32)


def duplicated(n: int, d: int, copies: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = blobs(n, d, 10, seed)
    return np.ascontiguousarray(np.tile(base, (copies, 1))[rng.permutation(n * copies)])


def brute(X: np.ndarray, k: int, first: int | None = None, already: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    """Farthest-first on the full float64 distance matrix; also asserts the data has no near-ties,
    so that comparing with float32 arithmetic is a fair test."""
    X64 = X.astype(np.float64)
    D = np.sqrt(((X64[:, None, :] - X64[None, :, :]) ** 2).sum(-1))
    if already is not None and len(already):
        md, chosen = D[already].min(0), []
    else:
        md, chosen = D[first].copy(), [first]
    while len(chosen) < k:
        top2 = np.sort(md)[-2:]
        assert top2[1] - top2[0] > 1e-4 * top2[1], "near-tie in the reference data; pick another seed"
        chosen.append(int(md.argmax()))
        md = np.minimum(md, D[chosen[-1]])
    return chosen, md


@pytest.mark.parametrize("seed, chunk_rows", [(1, 7), (2, 64), (3, 16384)])
def test_matches_brute_force_reference(seed, chunk_rows):
    X = np.random.default_rng(seed + 10).standard_normal((300, 8)).astype(np.float32)
    first = int(np.random.default_rng(seed).integers(300))
    ref, md = brute(X, 40, first)
    for prune in (False, True):
        r = k_center_greedy(X, 40, seed=seed, prune=prune, chunk_rows=chunk_rows)
        assert isinstance(r, KCenterResult)
        assert r.indices.dtype == np.int64 and r.assign.dtype == np.int64 and r.min_dist.dtype == np.float32
        assert r.indices.tolist() == ref
        np.testing.assert_allclose(r.min_dist, md, rtol=1e-4, atol=2e-3)
        assert r.radius == pytest.approx(md.max(), rel=1e-5)
        assert r.radius == pytest.approx(float(r.min_dist.max()))
        # every point is assigned to the chosen centre it is nearest to
        D = np.linalg.norm(X[:, None, :].astype(np.float64) - X[r.indices][None].astype(np.float64), axis=-1)
        np.testing.assert_allclose(D[np.arange(300), r.assign], D.min(1), rtol=1e-4, atol=2e-3)
        assert (r.assign[r.indices] == np.arange(40)).all() and (r.min_dist[r.indices] == 0).all()


DATASETS = {
    "gaussian": lambda: np.random.default_rng(5).standard_normal((3000, 16)).astype(np.float32),
    "blobs": lambda: blobs(4000, 32, 20, 6),
    "blobs-high-d": lambda: blobs(2000, 256, 30, 7),
    "blobs-far-from-origin": lambda: blobs(3000, 64, 15, 8, offset=300.0),  # float32 cancellation is large
    "duplicates": lambda: duplicated(600, 16, 3, 9),
    "duplicates-64-d": lambda: duplicated(400, 64, 4, 10),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_pruning_changes_nothing_but_rows_read(name):
    X = DATASETS[name]()
    k = 120
    plain = k_center_greedy(X, k, seed=3, prune=False, chunk_rows=500)
    pruned = k_center_greedy(X, k, seed=3, prune=True, chunk_rows=500)
    assert pruned.indices.tolist() == plain.indices.tolist()
    assert pruned.radius == pytest.approx(plain.radius, rel=1e-6)
    # squared: near 0 (duplicates of centres) a distance is the square root of rounding noise
    np.testing.assert_allclose(pruned.min_dist**2, plain.min_dist**2, rtol=1e-5, atol=1e-3 * plain.radius**2)
    assert plain.stats["rows_read"] == len(X) * k
    assert pruned.stats["rows_read"] <= plain.stats["rows_read"]
    if name.startswith("blobs") or name == "duplicates":
        assert pruned.stats["rows_read"] < 0.6 * plain.stats["rows_read"], pruned.stats  # pruning did work
    assert len(set(pruned.indices.tolist())) == k


def test_pruning_is_exact_on_the_triangle_boundary():
    """a, x = a + v, c = a + 2v: d(c, a) = 2 d(x, a) exactly, so only float32 rounding decides whether
    x moves to c.  Far from the origin that rounding is large; the pruned run must still make the
    same call as the plain one for every x (1-row chunks: both use the same kernel per row)."""
    T, d = 40, 8
    rng = np.random.default_rng(0)
    a = rng.standard_normal((T, d)) * 30 + 1000.0
    v = rng.standard_normal((T, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    X = np.concatenate([a, a + v, a + 2 * v]).astype(np.float32)
    plain = k_center_greedy(X, T, already=np.arange(T), prune=False, chunk_rows=1)
    pruned = k_center_greedy(X, T, already=np.arange(T), prune=True, chunk_rows=1)
    assert sorted(plain.indices.tolist()) == list(range(2 * T, 3 * T))
    assert 0 < (plain.assign[T : 2 * T] >= 0).sum() < T  # rounding sent some x to c, not all
    np.testing.assert_array_equal(pruned.assign, plain.assign)
    np.testing.assert_array_equal(pruned.min_dist, plain.min_dist)


@pytest.mark.parametrize("prune", [False, True])
def test_near_ties_go_to_the_truly_farther_point(prune):
    """Two candidates 2e-5 apart at distance 3, 1000 from the origin: float32 cannot tell them
    apart, float64 can; whichever of the two has the lower index, the farther one is chosen."""
    for t in range(12):
        rng = np.random.default_rng(t)
        a = np.full(16, 1000.0)
        u = rng.standard_normal((2, 16))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        near = a + rng.standard_normal((30, 16)) * 0.5
        X = np.concatenate([a[None], a + 3.0 * u[:1], a + (3.0 + 2e-5) * u[1:], near]).astype(np.float32)
        if t % 2:
            X[[1, 2]] = X[[2, 1]]
        exact = np.linalg.norm(X.astype(np.float64) - X[0].astype(np.float64), axis=1)
        r = k_center_greedy(X, 1, already=np.array([0]), prune=prune)
        assert r.indices[0] == np.argmax(exact), t


def test_duplicates_are_never_chosen_twice():
    X = duplicated(50, 4, 4, 1)  # 50 distinct points, 200 rows
    r = k_center_greedy(X, 120)
    assert len(set(r.indices.tolist())) == 120
    assert r.radius == pytest.approx(0.0, abs=1e-2)


def test_deterministic_by_seed_and_seed_picks_first_centre():
    X = blobs(2000, 16, 10, 2)
    a, b = k_center_greedy(X, 25, seed=4), k_center_greedy(X, 25, seed=4)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_array_equal(a.min_dist, b.min_dist)
    firsts = {int(k_center_greedy(X, 1, seed=s).indices[0]) for s in range(4)}
    assert firsts == {int(np.random.default_rng(s).integers(2000)) for s in range(4)} and len(firsts) > 1
    assert k_center_greedy(X, 25, seed=5).indices[0] != a.indices[0]


def test_float64_input_gives_the_float32_answer():
    X = blobs(1000, 8, 5, 4)
    assert k_center_greedy(X.astype(np.float64), 20).indices.tolist() == k_center_greedy(X, 20).indices.tolist()


@pytest.mark.parametrize("prune", [False, True])
def test_already_labelled_pool(prune):
    X = np.random.default_rng(11).standard_normal((300, 6)).astype(np.float32)
    already = np.array([3, 17, 250, 99])
    ref, md = brute(X, 25, already=already)
    r = k_center_greedy(X, 25, already=already, prune=prune, chunk_rows=70)
    assert r.indices.tolist() == ref
    assert not set(r.indices.tolist()) & set(already.tolist())
    assert (r.min_dist[already] == 0).all() and (r.assign[already] == -1).all()
    np.testing.assert_allclose(r.min_dist, md, rtol=1e-4, atol=2e-3)
    near_new = r.assign >= 0
    D = np.linalg.norm(X[near_new, None, :] - X[r.indices][None], axis=-1)
    np.testing.assert_allclose(D[np.arange(near_new.sum()), r.assign[near_new]], r.min_dist[near_new], rtol=1e-4, atol=2e-3)
    # with everything but k points labelled, those k are the answer
    rest = k_center_greedy(X, 5, already=np.arange(5, 300))
    assert sorted(rest.indices.tolist()) == [0, 1, 2, 3, 4] and rest.radius == 0.0


def test_partitioned_composes():
    X = blobs(6000, 16, 25, 12)
    parts = [X[:1000], X[1000:2500], X[2500:4000], X[4000:]]
    single = k_center_greedy(X, 30)
    part = k_center_partitioned(parts, 30, per_part=40)
    assert part.indices.shape == (30,) and len(set(part.indices.tolist())) == 30
    assert part.indices.min() >= 0 and part.indices.max() < len(X)
    assert part.radius <= 2 * single.radius
    assert part.radius == pytest.approx(covering_radius(X, X[part.indices]), rel=1e-5)
    assert part.radius == pytest.approx(float(part.min_dist.max()))
    assert (part.min_dist[part.indices] == 0).all() and (part.assign[part.indices] == np.arange(30)).all()
    D = np.linalg.norm(X[:, None, :] - X[part.indices][None], axis=-1)
    np.testing.assert_allclose(part.min_dist, D.min(1), rtol=1e-4, atol=2e-3)
    one = k_center_partitioned([X], 30)  # one part, per_part = k: the same centres, re-ordered
    assert sorted(one.indices.tolist()) == sorted(single.indices.tolist())


def test_covering_radius_matches_brute_force():
    rng = np.random.default_rng(13)
    X, C = rng.standard_normal((500, 5)).astype(np.float32), rng.standard_normal((7, 5)).astype(np.float32)
    want = np.linalg.norm(X[:, None, :].astype(np.float64) - C[None], axis=-1).min(1).max()
    assert covering_radius(X, C, chunk_rows=33) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("call", [
    lambda X: k_center_greedy(X, 0),
    lambda X: k_center_greedy(X, 51),
    lambda X: k_center_greedy(X, 48, already=np.arange(3)),
    lambda X: k_center_greedy(X, 2, already=np.array([60])),
    lambda X: k_center_greedy(X, 2, already=np.array([0.5])),
    lambda X: k_center_greedy(np.where(np.arange(50)[:, None] == 7, np.nan, X), 3),
    lambda X: k_center_greedy(np.where(np.arange(50)[:, None] == 7, np.inf, X), 3),
    lambda X: k_center_greedy(np.empty((0, 4), np.float32), 1),
    lambda X: k_center_greedy(X[:, 0], 2),
    lambda X: k_center_greedy(X[None], 2),
    lambda X: k_center_partitioned([], 2),
    lambda X: k_center_partitioned([X, X[:, :2]], 2),
    lambda X: k_center_partitioned([X[:3], X[3:6]], 5, per_part=2),
    lambda X: covering_radius(X, X[:2, :2]),
])
def test_bad_input_raises_invalid_input(call):
    X = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with pytest.raises(InvalidInput):
        call(X)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional dependency (scikit-learn's); without it, just run
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@pytest.mark.parametrize("prune", [False, True])
def test_memory_is_linear_in_n(prune):
    n, d, k = 200_000, 64, 50
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    tracemalloc.start()
    try:
        with _one_blas_thread():  # 350 small matvecs: on a busy 2-core machine threads only wait
            r = k_center_greedy(X, k, prune=prune)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(r.indices) == k
    assert peak < n * k * 4 / 4, f"peak {peak / 2**20:.1f} MiB: an N x k matrix (or a copy of X) was allocated"
