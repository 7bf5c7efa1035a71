#!/usr/bin/env python
"""k-center greedy core sets: VeML's pass against the original loop and the memory-bandwidth limit.

One run, one set of clustered synthetic embeddings (Gaussian blobs of different sizes and spreads
in d dimensions, float32, seeded; the shape CNN embeddings of a labelled image set have, not uniform
noise), four measurements side by side:

(a) the reference loop of Sener & Savarese's code: per step ``sklearn.metrics.pairwise_distances(X,
    X[[c]])`` and ``np.minimum`` (float32 in, sklearn upcasts chunks to float64);
(b) the memory-bandwidth limit: the streaming read rate of X measured in the same run (best of 5 of
    ``X.sum(axis=0)`` and of ``X @ ones`` with the same BLAS threads, measured before (c), between
    (c) and (d) and after (d); the best rate seen is used, both kinds are reported), limit =
    N * d * 4 bytes * k / rate, i.e. reading X once per centre;
(b') for context, the limit's workload itself: k back-to-back ``X @ ones``, timed end to end under
    the run's own conditions (on a shared machine it shows how far the best-of-5 rate was from
    what a long run actually gets);
(c) ``veml.coreset.kcenter.k_center_greedy(prune=False)``: one chunked float32 matvec pass per centre;
(d) ``k_center_greedy(prune=True)``: the same selection, reading only the rows the triangle
    inequality cannot rule out.

All variants start from the same seeded first centre.  Reported: seconds, ratios, covering radius
of each core set (all recomputed by ``covering_radius`` on the same float32 X), rows read, whether
the selections agree, and the peak resident set of the process during each variant (VmHWM, reset
before each through /proc/self/clear_refs; it includes X itself).

    .venv/bin/python benchmarks/bench_kcenter.py                 # N=100,000, d=1280, k=1000
    .venv/bin/python benchmarks/bench_kcenter.py --quick         # N=20,000, d=256, k=100
    .venv/bin/python benchmarks/bench_kcenter.py --reference-steps 200   # (a) on 200 steps, extrapolated
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, machine_info, machine_line, md_table, publish, verdict  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.metrics import pairwise_distances  # noqa: E402

from veml.coreset.kcenter import covering_radius, k_center_greedy  # noqa: E402


# --- data ---------------------------------------------------------------------------------------
def blobs(n: int, d: int, n_blobs: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Blob means ~ N(0, I_d); blob sizes ~ Dirichlet(2); per-blob spread sigma ~ U(0.15, 0.45) per
    coordinate; rows shuffled (storage order says nothing about the class).  Built in float32 chunks."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_blobs, d)).astype(np.float32)
    sigma = rng.uniform(0.15, 0.45, n_blobs).astype(np.float32)
    label = rng.choice(n_blobs, size=n, p=rng.dirichlet(np.full(n_blobs, 2.0)))
    X = np.empty((n, d), np.float32)
    for a in range(0, n, 8192):
        b = min(a + 8192, n)
        X[a:b] = rng.standard_normal((b - a, d), dtype=np.float32)
        X[a:b] *= sigma[label[a:b], None]
        X[a:b] += means[label[a:b]]
    desc = {"kind": "gaussian blobs", "blobs": n_blobs, "mean": "N(0, I_d)", "sigma": "U(0.15, 0.45)",
            "sizes": "Dirichlet(2)", "seed": seed}
    return X, desc


# --- (a) the reference loop ------------------------------------------------------------------------
def reference(X: np.ndarray, k: int, seed: int, steps: int) -> tuple[np.ndarray, float, int]:
    """Sener & Savarese's update; returns (indices, seconds, steps run)."""
    t0 = time.perf_counter()
    first = int(np.random.default_rng(seed).integers(len(X)))
    min_d = pairwise_distances(X, X[[first]], metric="euclidean")
    chosen = [first]
    for _ in range(1, steps):
        c = int(np.argmax(min_d))
        dist = pairwise_distances(X, X[[c]], metric="euclidean")
        min_d = np.minimum(min_d, dist)
        chosen.append(c)
    return np.asarray(chosen, np.int64), time.perf_counter() - t0, steps


# --- (b) streaming read rate -----------------------------------------------------------------------
def read_rates(X: np.ndarray, repeats: int = 5) -> dict[str, float]:
    """Bytes per second reading X once, two ways; best of ``repeats`` each."""
    ones = np.ones(X.shape[1], np.float32)
    out = np.empty(X.shape[0], np.float32)
    rates = {}
    for name, fn in (("X.sum(axis=0)", lambda: X.sum(axis=0)),
                     ("X @ ones (BLAS matvec)", lambda: np.dot(X, ones, out=out))):
        fn()
        best = min(_timed(fn) for _ in range(repeats))
        rates[name] = X.nbytes / best
    return rates


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- peak memory -----------------------------------------------------------------------------------
def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def agree_steps(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading selections two runs share."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


# --- report ------------------------------------------------------------------------------------------
def report(R: dict[str, Any]) -> str:
    a, n, d, k = R["args"], R["n"], R["d"], R["k"]
    V, lim = R["variants"], R["limit"]
    ref, plain, pruned = V.get("reference"), V["plain"], V["pruned"]
    gib = n * d * 4 / 2**30
    lines = [f"## k-center greedy core sets (N={n:,}, d={d}, k={k})", "",
             "```", f".venv/bin/python benchmarks/bench_kcenter.py {' '.join(R['machine']['argv'][1:])}".rstrip(), "```", "",
             f"Data: {R['data']['blobs']} Gaussian blobs in {d} dims (means N(0, I), per-blob sigma U(0.15, 0.45), sizes "
             f"Dirichlet(2), rows shuffled), float32, seed {a['seed']}: X is {gib:.2f} GiB. All variants start from the "
             f"same seeded first centre.", "",
             f"Machine: {R['machine_line']}; numpy {np.__version__}, scikit-learn {sklearn.__version__}, BLAS threads "
             f"{R['blas_threads']}. {R['load_line']}", "",
             "Streaming read rate of X (best of 5, measured before (c), between (c) and (d), after (d); best seen): "
             + ", ".join(f"`{k_}` {v / 1e9:.2f} GB/s" for k_, v in lim["rates"].items())
             + f"; the limit uses `{lim['used']}`: N·d·4·k / rate = {lim['seconds']:.2f} s.", ""]
    rows = []
    if ref:
        how = ("measured" if not ref["extrapolated"]
               else f"{ref['steps']} steps measured ({ref['measured_s']:.1f} s), ×{k / ref['steps']:.1f} extrapolated")
        rows.append(["(a) reference: `pairwise_distances` + `np.minimum`", f"{ref['seconds']:.2f} ({how})",
                     f"{ref['seconds'] / lim['seconds']:.2f}×", f"{ref['radius']:.4f}", "1.000 (all, per step)",
                     f"{ref['peak_rss_mib']:,.0f} (+{ref['peak_rise_mib']:,.0f})"])
    rows.append(["(b) bandwidth limit (read X once per centre)", f"{lim['seconds']:.2f}", "1.00×", "—", "1.000", "—"])
    rows.append(["(b′) context: k back-to-back `X @ ones`, timed", f"{R['back_to_back_s']:.2f}",
                 f"{R['back_to_back_s'] / lim['seconds']:.2f}×", "—", "1.000", "—"])
    for key, label in (("plain", "(c) `k_center_greedy(prune=False)`"), ("pruned", "(d) `k_center_greedy(prune=True)`")):
        v = V[key]
        rows.append([label, f"{v['seconds']:.2f}", f"{v['seconds'] / lim['seconds']:.2f}×", f"{v['radius']:.4f}",
                     f"{v['read_fraction']:.3f}", f"{v['peak_rss_mib']:,.0f} (+{v['peak_rise_mib']:,.0f})"])
    header = ["variant", "seconds", "vs limit (b)", "covering radius", "rows read / (N·k)", "peak RSS MiB (rise during the call)"]
    lines += [md_table(header, rows), ""]
    ratio_rad = pruned["radius"] / plain["radius"]
    same = R["pruned_equals_plain"]
    lines.append(f"Peak RSS is the process's high-water mark during each variant (it includes X, {gib * 1024:,.0f} MiB, and "
                 f"the interpreter with numpy and scikit-learn loaded); in brackets its rise over the RSS just before the call"
                 f"{'' if R['peak_reset'] else ' (VmHWM could not be reset between variants: cumulative)'}.")
    same_txt = "yes" if same else f"no (first difference at step {R['pruned_agree_steps']})"
    lines.append(f"(d) selected the same {k} indices as (c): {same_txt}; "
                 f"radius (d)/(c) = {ratio_rad:.6f}. (d) computed {pruned['rows_read']:,.0f} row distances of {n * k:,} "
                 f"({pruned['dense_chunks']:,.0f} whole chunks, {pruned['sparse_chunks']:,.0f} gathered).")
    if ref:
        lines.append(f"(a) and (c) agree on the first {R['reference_agree_steps']} of {ref['steps']} selections "
                     "((a) works in float64, (c) in float32, so a near-tie can send them different ways; the radii show "
                     "whether that matters).")
    lines += ["", "Targets:"]
    ratios = [f"(c)/(b) = {plain['seconds'] / lim['seconds']:.2f}×", f"(b)/(d) = {lim['seconds'] / pruned['seconds']:.2f}×"]
    if ref:
        ratios.insert(0, f"(a)/(c) = {ref['seconds'] / plain['seconds']:.1f}×")
    lines[-1] = "Ratios: " + ", ".join(ratios) + f", radius (d)/(c) = {pruned['radius'] / plain['radius']:.4f}. Targets:"
    if ref:
        s = ref["seconds"] / plain["seconds"]
        lines.append(f"- (c) ≥ 10× faster than (a): {verdict(s >= 10)} ({s:.1f}×{', (a) extrapolated' if ref['extrapolated'] else ''}).")
    c_b = plain["seconds"] / lim["seconds"]
    b_d = lim["seconds"] / pruned["seconds"]
    lines.append(f"- (c) within 1.2× of the bandwidth limit (b): {verdict(c_b <= 1.2)} ({c_b:.2f}×).")
    lines.append(f"- (d) beats the limit (b) by ≥ 2× with radius within 5% of float32 (c): "
                 f"{verdict(b_d >= 2 and ratio_rad <= 1.05)} ({b_d:.2f}× faster than (b); radius ratio {ratio_rad:.4f}).")
    return "\n".join(lines) + "\n"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_variant(name: str, fn: Callable[[], Any]) -> tuple[Any, float, dict[str, float]]:
    """Result, seconds, and memory: peak RSS during the call and its rise over the RSS before it."""
    reset_peak()
    before = rss_mib()
    t0 = time.perf_counter()
    res = fn()
    dt = time.perf_counter() - t0
    peak = peak_rss_mib()
    print(f"  {name}: {dt:.2f} s, peak RSS {peak:,.0f} MiB (+{peak - before:,.0f})", flush=True)
    return res, dt, {"peak_rss_mib": peak, "rss_before_mib": before, "peak_rise_mib": peak - before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="points (default 100,000; 20,000 with --quick)")
    p.add_argument("--d", type=int, default=None, help="dimensions (default 1280; 256 with --quick)")
    p.add_argument("--k", type=int, default=None, help="centres (default 1000; 100 with --quick)")
    p.add_argument("--blobs", type=int, default=None,
                   help="Gaussian blobs (default 200; 20 with --quick, so that k=100 exceeds it and pruning shows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reference", action="store_true", help="do not run (a)")
    p.add_argument("--reference-steps", type=int, default=0,
                   help="run (a) for this many steps only and extrapolate linearly to k (default 0: all k steps)")
    p.add_argument("--threads", type=int, default=0,
                   help="limit BLAS threads (threadpoolctl) for every measurement; default 0: the library default")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="smoke run: N=20,000, d=256, k=100")
    a = p.parse_args()
    n = a.n or (20_000 if a.quick else 100_000)
    d = a.d or (256 if a.quick else 1280)
    k = a.k or (100 if a.quick else 1000)
    a.blobs = a.blobs or (20 if a.quick else 200)
    info = machine_info()
    from threadpoolctl import threadpool_info, threadpool_limits

    if a.threads > 0:
        threadpool_limits(a.threads, user_api="blas")
    blas = ",".join(f"{t['internal_api']}:{t['num_threads']}" for t in threadpool_info() if t["user_api"] == "blas")
    R: dict[str, Any] = {"args": vars(a), "n": n, "d": d, "k": k, "machine": info, "machine_line": machine_line(info),
                         "blas_threads": blas, "variants": {}}
    print(R["machine_line"], flush=True)
    with LoadSampler() as load:
        t0 = time.perf_counter()
        X, R["data"] = blobs(n, d, a.blobs, a.seed)
        print(f"data: {X.shape} float32, {X.nbytes / 2**20:,.0f} MiB in {time.perf_counter() - t0:.1f} s", flush=True)
        k_center_greedy(X[: min(n, 2000)], min(k, 10), seed=a.seed)  # warm up imports and BLAS threads
        R["peak_reset"] = reset_peak()
        samples = [read_rates(X)]  # measured again after each variant: the best rate seen sets the limit
        for key, prune in (("plain", False), ("pruned", True)):
            res, dt, mem = run_variant(key, lambda: k_center_greedy(X, k, seed=a.seed, prune=prune))
            R["variants"][key] = {"seconds": dt, "radius": covering_radius(X, X[res.indices]), "own_radius": res.radius,
                                  **mem, **res.stats, "indices": res.indices.tolist()}
            samples.append(read_rates(X))
        ones, out = np.ones(d, np.float32), np.empty(n, np.float32)
        (_, dt, _) = run_variant("k back-to-back X @ ones", lambda: [np.dot(X, ones, out=out) for _ in range(k)])
        R["back_to_back_s"] = dt  # the limit's workload itself, timed under the run's own conditions
        rates = {name: max(s_[name] for s_ in samples) for name in samples[0]}
        used = max(rates, key=rates.get)
        R["limit"] = {"rates": rates, "used": used, "seconds": X.nbytes * k / rates[used], "samples": samples}
        print(f"read rates (best of {len(samples)} rounds of 5): { {k_: round(v / 1e9, 2) for k_, v in rates.items()} } GB/s; "
              f"limit {R['limit']['seconds']:.2f} s", flush=True)
        pl, pr = R["variants"]["plain"], R["variants"]["pruned"]
        R["pruned_agree_steps"] = agree_steps(np.array(pl["indices"]), np.array(pr["indices"]))
        R["pruned_equals_plain"] = R["pruned_agree_steps"] == k

        if not a.skip_reference:
            steps = min(k, a.reference_steps) if a.reference_steps > 0 else k
            (idx, secs, steps), _, mem = run_variant(f"reference ({steps} steps)", lambda: reference(X, k, a.seed, steps))
            ref = {"steps": steps, "measured_s": secs, "extrapolated": steps < k, "seconds": secs * k / steps,
                   **mem, "indices": idx.tolist()}
            ref["radius"] = covering_radius(X, X[idx]) if steps == k else float("nan")
            R["variants"]["reference"] = ref
            R["reference_agree_steps"] = agree_steps(idx, np.array(pl["indices"]))
    R["load"] = load.summary()
    R["load_line"] = load_line(R["load"], info["nproc"])
    publish(Path(a.out), "kcenter", R, report(R))


if __name__ == "__main__":
    main()
