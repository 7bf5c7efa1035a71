#!/usr/bin/env python
"""Dataset similarity: the distance on k-center core sets against the same distance on all samples.

Issue 4, "Speed": rank >= 8 stored datasets by their distance to a target dataset, once with the
distance on every sample of both sides (what ``veml similar`` would have to do without core sets)
and once on k-center core sets (what it does), for N = 10k, 50k and the largest N at which the
all-sample ranking still finishes within ``--limit-s`` (10 minutes); d = 1280.  Reported per N: the
time of each ranking, their ratio, Kendall tau between the two rankings and whether the nearest
dataset agrees.

Data.  Nine small driving-scene datasets of different domains (city, weather, time of day, camera,
pixel noise/blur) from ``veml.datasets.generate_driving_coco`` (64x64 PNG), embedded with the real
EfficientNet-Lite0 ImageNet embedder ``veml.coreset.embed.lite0_imagenet()`` (1280-d).  One domain is
the target, eight are the stored datasets.  To reach N samples per dataset each domain's real
embeddings are *bootstrapped*: N rows drawn with replacement plus Gaussian jitter of
``--jitter`` (5 %) of that domain's per-feature standard deviation.  ``--images`` real images per
domain (500) is deliberately larger than k, so a core set is a real compression of the distinct
embeddings and not simply all of them.

All-sample ranking (the baseline, made as fast as this machine allows): the image default
``mean_pairwise`` (mean Euclidean distance over all N x N cross pairs), both sides centred on the
target's mean (distances unchanged; avoids float32 cancellation of ReLU features), then tiles of
|a|^2 + |b|^2 - 2 a.b by one float32 GEMM each, clamp, sqrt and a float64 sum, in tiles that fit the
cache, on every core.  The backend (torch or numpy/OpenBLAS) and tile shape are picked by a short
calibration in the same run; the result is checked against ``veml.coreset.distance.mean_pairwise``
(float64) on a 2,000 x 2,000 subset.  Optionally (``--mmd-full``, on by default at the smallest N)
also MMD on all samples, blockwise, with the median-heuristic bandwidth taken on a random 2,000-row
subsample of the pooled pair (the exact median over N^2 pairs does not fit in memory).

Core-set ranking: ``veml.coreset.kcenter.k_center_greedy(X, k)`` per dataset (k = 200 as in
``veml.versions.coresets.DEFAULT_K``), then ``veml.coreset.distance.mean_pairwise`` on the core
sets.  Timed three ways: (i) the distances on stored core sets only (VeML computes a core set once
per data version and reuses it for every later query), (ii) computing all nine core sets from
scratch plus (i), (iii) only the target's core set plus (i) (a new query dataset against stored
versions).  A cluster-size-weighted variant (each centre weighted by the number of samples it
covers, from ``KCenterResult.assign``) is reported next to it as a diagnostic; VeML's distance is
the unweighted one.

A second table compares all four methods of ``veml.coreset.distance`` on the real embeddings at
their native size (``--images`` per domain, no bootstrap): the all-sample ranking against the
core-set ranking.  ``label_ot`` uses one label per image, its most frequent box category (the rule
``veml.versions.coresets`` uses), "none" for an image without boxes.

    .venv/bin/python benchmarks/bench_similarity.py                # N = 10k, 50k, N_max; ~25 min
    .venv/bin/python benchmarks/bench_similarity.py --quick        # smoke run, < 1 min
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, machine_info, machine_line, md_table, median, publish, verdict  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from veml.coreset import distance as D  # noqa: E402
from veml.coreset.embed import lite0_imagenet  # noqa: E402
from veml.coreset.kcenter import k_center_greedy  # noqa: E402
from veml.datasets import Domain, generate_driving_coco  # noqa: E402

# (name, domain); the first is the target, the rest are the stored datasets
DOMAINS: list[tuple[str, Domain]] = [
    ("target: amsterdam clear day front", Domain()),
    ("amsterdam clear day front (other seed)", Domain()),
    ("amsterdam clear day tele", Domain(camera="tele")),
    ("amsterdam rain day", Domain(weather="rain")),
    ("amsterdam clear dusk", Domain(time_of_day="dusk")),
    ("amsterdam clear day, noise 0.06 + blur 0.8", Domain(noise=0.06, blur=0.8)),
    ("tokyo clear day", Domain(city="tokyo")),
    ("phoenix fog day", Domain(city="phoenix", weather="fog")),
    ("mumbai snow night wide", Domain(city="mumbai", weather="snow", time_of_day="night", camera="wide")),
]
CATEGORY = {1: "car", 2: "pedestrian", 3: "sign"}


# --- data -----------------------------------------------------------------------------------------
def scenes(work: Path, n: int, seed: int) -> tuple[list[np.ndarray], list[list[str]], float]:
    """Per domain: n images (uint8 64x64x3) and per-image labels (most frequent box category)."""
    images, labels = [], []
    t0 = time.perf_counter()
    for j, (_, dom) in enumerate(DOMAINS):
        out = work / f"domain{j}"
        ann = json.loads(generate_driving_coco(out, n, seed=seed * 1000 + j, domain=dom).read_text())
        per: dict[int, Counter] = {}
        for a in ann["annotations"]:
            per.setdefault(a["image_id"], Counter())[CATEGORY[a["category_id"]]] += 1
        imgs, labs = [], []
        for im in ann["images"]:
            with Image.open(out / "images" / im["file_name"]) as f:
                imgs.append(np.asarray(f.convert("RGB")))
            c = per.get(im["id"])
            labs.append(min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] if c else "none")
        images.append(np.stack(imgs))
        labels.append(labs)
        shutil.rmtree(out)
    return images, labels, time.perf_counter() - t0


def embed_all(images: list[np.ndarray]) -> tuple[list[np.ndarray], float, str]:
    emb = lite0_imagenet()
    emb.embed(list(images[0][:4]))  # warm-up
    t0 = time.perf_counter()
    out = []
    for imgs in images:
        rows = [emb.embed(list(imgs[a:a + emb.batch_size])) for a in range(0, len(imgs), emb.batch_size)]
        out.append(np.ascontiguousarray(np.concatenate(rows), np.float32))
    return out, time.perf_counter() - t0, emb.key


def bootstrap(E: np.ndarray, n: int, jitter: float, seed: int) -> np.ndarray:
    """n rows of E drawn with replacement, plus N(0, (jitter * per-feature std)^2) noise; float32."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(E), size=n)
    sd = (jitter * E.std(0, dtype=np.float64)).astype(np.float32)
    X = np.empty((n, E.shape[1]), np.float32)
    for a in range(0, n, 8192):
        b = min(a + 8192, n)
        rng.standard_normal((b - a, E.shape[1]), dtype=np.float32, out=X[a:b])
        X[a:b] *= sd
        X[a:b] += E[idx[a:b]]
    return X


# --- all-sample distances (the baseline) -------------------------------------------------------------
def _rowsq(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


class Full:
    """Blockwise all-pairs sums of f(|a-b|^2) over float32 tiles; backend 'torch' or 'numpy'."""

    def __init__(self, backend: str, rows: int, cols: int) -> None:
        self.backend, self.rows, self.cols = backend, rows, cols

    def describe(self) -> str:
        return f"{self.backend}, tiles {self.rows}x{self.cols}"

    def pair_sum(self, A: np.ndarray, na: np.ndarray, B: np.ndarray, nb: np.ndarray, kind: str = "sqrt",
                 gamma: float = 0.0, symmetric: bool = False) -> float:
        """sum over rows a of A, b of B of sqrt(d2) (kind 'sqrt') or exp(-gamma d2) (kind 'rbf').

        ``symmetric`` (A is B): only tiles on and above the diagonal, off-diagonal ones counted twice
        (square tiles then)."""
        R, C = (self.rows, self.rows) if symmetric else (self.rows, self.cols)
        total = 0.0
        if self.backend == "torch":
            At, Bt, nat, nbt = (torch.from_numpy(x) for x in (A, B, na, nb))
            for j in range(0, len(B), C):
                Bj, nbj = Bt[j:j + C], nbt[j:j + C]
                for i in range(0, (j + C) if symmetric else len(A), R):
                    if symmetric and i > j:
                        break
                    t = torch.addmm(nbj[None, :], At[i:i + R], Bj.T, beta=1, alpha=-2)
                    t.add_(nat[i:i + R, None]).clamp_min_(0)
                    if kind == "sqrt":
                        t.sqrt_()
                    else:
                        t.mul_(-gamma).exp_()
                    s = float(t.sum(dtype=torch.float64))
                    total += s * (2.0 if symmetric and i != j else 1.0)
            return total
        flat = np.empty(min(R, len(A)) * min(C, len(B)), np.float32)  # a partial tile must stay C-contiguous
        for j in range(0, len(B), C):
            Bj, nbj = B[j:j + C], nb[j:j + C]
            for i in range(0, (j + C) if symmetric else len(A), R):
                if symmetric and i > j:
                    break
                Ai = A[i:i + R]
                t = flat[: len(Ai) * len(Bj)].reshape(len(Ai), len(Bj))
                np.dot(Ai, Bj.T, out=t)
                t *= -2.0
                t += na[i:i + R, None]
                t += nbj
                np.maximum(t, 0.0, out=t)
                if kind == "sqrt":
                    np.sqrt(t, out=t)
                else:
                    t *= -gamma
                    np.exp(t, out=t)
                s = float(t.sum(axis=1).sum(dtype=np.float64))
                total += s * (2.0 if symmetric and i != j else 1.0)
        return total

    def mean_pairwise_ranking(self, T: np.ndarray, stored: Sequence[np.ndarray]) -> list[float]:
        """mean_pairwise(T, X) for every stored X, on all samples; everything it needs is computed here."""
        mu = T.mean(0, dtype=np.float64).astype(np.float32)
        Tc = T - mu
        nt = _rowsq(Tc)
        out = []
        for X in stored:
            Xc = X - mu
            out.append(self.pair_sum(Tc, nt, Xc, _rowsq(Xc)) / (len(T) * len(X)))
            del Xc
        return out

    def mmd_ranking(self, T: np.ndarray, stored: Sequence[np.ndarray], seed: int, sub: int = 2000,
                    bandwidth: float | None = None) -> list[float]:
        """sqrt of the biased MMD^2 with an RBF kernel, per stored X, on all samples; the bandwidth is the
        median heuristic of ``distance.median_bandwidth`` on a random ``sub``-row subsample of the pool."""
        rng = np.random.default_rng(seed)
        mu = T.mean(0, dtype=np.float64).astype(np.float32)
        Tc = T - mu
        nt = _rowsq(Tc)
        out = []
        for X in stored:
            Xc = X - mu
            nx = _rowsq(Xc)
            pool = np.concatenate([Tc[rng.choice(len(Tc), min(sub // 2, len(Tc)), replace=False)],
                                   Xc[rng.choice(len(Xc), min(sub // 2, len(Xc)), replace=False)]]).astype(np.float64)
            s = bandwidth or D.median_bandwidth(pool[: len(pool) // 2], pool[len(pool) // 2:])
            g = 1.0 / (2.0 * s * s)
            kxx = self.pair_sum(Tc, nt, Tc, nt, "rbf", g, symmetric=True) / len(Tc) ** 2
            kyy = self.pair_sum(Xc, nx, Xc, nx, "rbf", g, symmetric=True) / len(Xc) ** 2
            kxy = self.pair_sum(Tc, nt, Xc, nx, "rbf", g) / (len(Tc) * len(Xc))
            out.append(float(np.sqrt(max(kxx + kyy - 2.0 * kxy, 0.0))))
            del Xc
        return out


def calibrate(A: np.ndarray, B: np.ndarray) -> tuple[Full, dict[str, float]]:
    """Time each candidate kernel on the same A x B block (best of 2); the fastest is the baseline."""
    na, nb = _rowsq(A), _rowsq(B)
    cands = [Full("torch", 2048, 4096), Full("torch", 1024, 2048), Full("torch", 4096, 4096),
             Full("numpy", 2048, 8192), Full("numpy", 1024, 4096)]
    times = {}
    for f in cands:
        f.pair_sum(A[:512], na[:512], B[:1024], nb[:1024])
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            f.pair_sum(A, na, B, nb)
            best = min(best, time.perf_counter() - t0)
        times[f.describe()] = best
    best = min(cands, key=lambda f: times[f.describe()])
    return best, times


# --- core sets ---------------------------------------------------------------------------------------
def core_sets(datasets: Sequence[np.ndarray], k: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """(core-set matrices, per-centre weights = share of samples each covers, seconds per dataset)."""
    cores, weights, secs = [], [], []
    for X in datasets:
        t0 = time.perf_counter()
        r = k_center_greedy(X, k, seed=seed)
        C = X[r.indices]
        secs.append(time.perf_counter() - t0)
        cores.append(C)
        a = np.asarray(r.assign)
        weights.append(np.bincount(a[a >= 0], minlength=len(r.indices)).astype(np.float64) / max(1, int((a >= 0).sum())))
    return cores, weights, secs


def weighted_mean_pairwise(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(wa @ np.sqrt(D.pairwise_sq(a, b)) @ wb)


def timed_ranking(fn: Callable[[], list[float]], repeats: int) -> tuple[list[float], float]:
    """Median time of ``repeats`` runs of a cheap ranking, and its result."""
    ts, res = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        ts.append(time.perf_counter() - t0)
    return res, median(ts)


def compare(full: Sequence[float], core: Sequence[float]) -> dict[str, Any]:
    tau = kendalltau(full, core)
    return {"tau": float(tau.statistic), "p": float(tau.pvalue), "top1_full": int(np.argmin(full)),
            "top1_core": int(np.argmin(core)), "top1_agree": bool(np.argmin(full) == np.argmin(core)),
            "rank_full": np.argsort(np.argsort(full)).tolist(), "rank_core": np.argsort(np.argsort(core)).tolist()}


# --- one size -----------------------------------------------------------------------------------------
def run_size(n: int, emb: list[np.ndarray], a: argparse.Namespace, full: Full, subset: int | None,
             do_mmd: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = [bootstrap(E, n, a.jitter, a.seed * 7919 + 31 * j + n) for j, E in enumerate(emb)]
    R: dict[str, Any] = {"n": n, "bootstrap_s": time.perf_counter() - t0, "stored": len(data) - 1}
    print(f"N={n:,}: bootstrapped {len(data)} x {data[0].shape} float32 in {R['bootstrap_s']:.1f} s", flush=True)
    T, stored = data[0], data[1:]

    # core sets (all nine from scratch), then the distances on them
    cores, weights, secs = core_sets(data, a.k, a.seed)
    R["kcenter_s"] = secs
    core_d, R["core_distance_s"] = timed_ranking(lambda: [D.mean_pairwise(cores[0], c) for c in cores[1:]], a.core_repeats)
    core_w, R["core_weighted_s"] = timed_ranking(
        lambda: [weighted_mean_pairwise(cores[0], weights[0], c, w) for c, w in zip(cores[1:], weights[1:])], a.core_repeats)
    R["core"], R["core_weighted"] = core_d, core_w
    print(f"  core sets: k-center {sum(secs):.1f} s for {len(data)} datasets (target {secs[0]:.2f} s); "
          f"distances {R['core_distance_s'] * 1e3:.1f} ms", flush=True)

    # the all-sample ranking
    m = len(stored) if subset is None else subset
    t0 = time.perf_counter()
    full_d = full.mean_pairwise_ranking(T, stored[:m])
    measured = time.perf_counter() - t0
    R["full_measured_s"], R["full_datasets_measured"] = measured, m
    R["full_s"] = measured * len(stored) / m
    R["extrapolated"] = m < len(stored)
    R["full"] = full_d
    print(f"  all-sample mean_pairwise ranking: {measured:.1f} s for {m} of {len(stored)} datasets"
          + (f" -> {R['full_s']:.1f} s extrapolated" if R["extrapolated"] else ""), flush=True)
    if not R["extrapolated"]:
        R["compare"] = compare(full_d, core_d)
        R["compare_weighted"] = compare(full_d, core_w)
        print(f"  Kendall tau {R['compare']['tau']:.3f} (weighted {R['compare_weighted']['tau']:.3f}), top-1 "
              f"{'agrees' if R['compare']['top1_agree'] else 'differs'}", flush=True)
    else:  # only the measured subset can be compared
        R["compare_subset"] = compare(full_d, core_d[:m])
    if do_mmd:
        t0 = time.perf_counter()
        mf = full.mmd_ranking(T, stored, a.seed)
        R["mmd_full_s"] = time.perf_counter() - t0
        mc, R["mmd_core_s"] = timed_ranking(lambda: [D.mmd(cores[0], c) for c in cores[1:]], a.core_repeats)
        R["mmd_full"], R["mmd_core"], R["mmd_compare"] = mf, mc, compare(mf, mc)
        print(f"  all-sample MMD ranking {R['mmd_full_s']:.1f} s, core sets {R['mmd_core_s'] * 1e3:.1f} ms, "
              f"tau {R['mmd_compare']['tau']:.3f}", flush=True)
    return R  # the N x d matrices go with this frame


# --- native size, four methods --------------------------------------------------------------------------
def native(emb: list[np.ndarray], labels: list[list[str]], k: int, seed: int) -> dict[str, Any]:
    res = [k_center_greedy(E, k, seed=seed).indices for E in emb]
    cores = [E[i] for E, i in zip(emb, res)]
    core_labels = [[labs[j] for j in i.tolist()] for labs, i in zip(labels, res)]
    out: dict[str, Any] = {"k": k, "n": [len(E) for E in emb], "methods": {}}
    for method in D.METHODS:
        r: dict[str, Any] = {}
        for side, (xs, ls) in (("full", (emb, labels)), ("core", (cores, core_labels))):
            t0 = time.perf_counter()
            try:
                r[side] = [D.distance(method, xs[0], x, ls[0] if method in D.NEEDS_LABELS else None,
                                      l if method in D.NEEDS_LABELS else None) for x, l in zip(xs[1:], ls[1:])]
            except Exception as exc:  # noqa: BLE001 - a method that fails is a result
                r[side + "_error"] = f"{type(exc).__name__}: {exc}"[:300]
            r[side + "_s"] = time.perf_counter() - t0
        if "full" in r and "core" in r:
            r["compare"] = compare(r["full"], r["core"])
        out["methods"][method] = r
        print(f"  native {method}: full {r['full_s']:.2f} s, core {r['core_s']:.3f} s, tau "
              f"{r['compare']['tau'] if 'compare' in r else float('nan'):.3f}", flush=True)
    counts = Counter(l for labs in labels for l in labs)
    out["label_counts"] = dict(counts)
    return out


# --- report ---------------------------------------------------------------------------------------------
def fmt_s(s: float) -> str:
    if s < 0.1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:,.1f} s" if s < 1000 else f"{s:,.0f} s"


def fmt_x(x: float) -> str:
    return f"{x:,.0f}×" if x >= 100 else f"{x:,.1f}×"


def report(R: dict[str, Any]) -> str:
    a = R["args"]
    names = [n for n, _ in DOMAINS]
    L = [f"## Dataset similarity: core-set distance vs all-sample distance (d = {R['d']})", "",
         "```", f".venv/bin/python benchmarks/bench_similarity.py {' '.join(R['machine']['argv'][1:])}".rstrip(), "```", "",
         f"Machine: {R['machine_line']}; numpy {np.__version__}, torch {torch.__version__} ({R['torch_threads']} threads), "
         f"BLAS {R['blas_threads']}. {R['load_line']}", ""]
    L += [f"**Data.** {len(DOMAINS)} generated driving-scene datasets of different domains, {a['images']} images each "
          f"(64×64), embedded with the real EfficientNet-Lite0 ImageNet embedder (`{R['embedder']}`, {R['d']}-d; "
          f"{R['embed_s']:.0f} s for {a['images'] * len(DOMAINS):,} images). Target: {names[0][8:]}; stored: "
          + "; ".join(f"({i + 1}) {n}" for i, n in enumerate(names[1:])) + ". "
          f"**The N-sample datasets are a bootstrap of real embeddings**: N rows drawn with replacement from the "
          f"domain's {a['images']} real embeddings plus Gaussian jitter of {a['jitter'] * 100:.0f} % of the domain's "
          f"per-feature standard deviation — real feature geometry, but not N distinct images.", "",
          f"**All-sample ranking** (baseline): `mean_pairwise` (the image default) over all N×N cross pairs of the "
          f"target and each of the {len(DOMAINS) - 1} stored datasets, float32 GEMM tiles of |a|²+|b|²−2a·b after "
          f"centring on the target mean, clamp, sqrt, float64 sums; kernel chosen by calibration in this run: "
          f"**{R['full_kernel']}** (" + ", ".join(f"{k} {v:.2f} s" for k, v in R["calibration"].items())
          + f" on a {R['calibration_shape']} block). Checked against `distance.mean_pairwise` (float64) on "
          f"2,000×2,000 samples: relative difference {R['full_check_rel']:.1e}. "
          f"**Core-set ranking**: `k_center_greedy(X, k={a['k']})` per dataset, then `distance.mean_pairwise` on the "
          f"core sets. Times: (i) distances on stored core sets only (median of {a['core_repeats']}; VeML computes a "
          f"core set once per data version and reuses it), (ii) all {len(DOMAINS)} core sets from scratch + (i), "
          f"(iii) the target's core set only + (i) (a new query against stored versions). τ = Kendall τ-b between "
          f"the two distance vectors over the {len(DOMAINS) - 1} stored datasets.", ""]
    rows = []
    for S in R["sizes"]:
        ks = S["kcenter_s"]
        t1 = S["core_distance_s"]
        t2, t3 = sum(ks) + t1, ks[0] + t1
        full = S["full_s"]
        ext = S["extrapolated"]
        fl = fmt_s(full) + (f" (extrapolated from {S['full_datasets_measured']} datasets, {fmt_s(S['full_measured_s'])})"
                            if ext else "")
        if ext:
            tau = f"n/a (τ over the {S['full_datasets_measured']} measured: {S['compare_subset']['tau']:.3f})"
            top, tw = "n/a", "n/a"
        else:
            c = S["compare"]
            tau, top = f"{c['tau']:.3f}", "yes" if c["top1_agree"] else f"no ({c['top1_full'] + 1} vs {c['top1_core'] + 1})"
            tw = f"{S['compare_weighted']['tau']:.3f}"
        rows.append([f"{S['n']:,}" + (" (N_max)" if S.get("is_max") else ""), fl, fmt_s(t1), fmt_s(t2), fmt_s(t3),
                     fmt_x(full / t1), fmt_x(full / t2), fmt_x(full / t3), tau, top, tw])
    L += [md_table(["N per dataset", "all-sample ranking", "core (i) distances", "core (ii) +all core sets",
                    "core (iii) +target core set", "ratio (i)", "ratio (ii)", "ratio (iii)", "Kendall τ", "top-1 agrees",
                    "τ, weighted core sets*"], rows), ""]
    for S in R["sizes"]:
        ks = S["kcenter_s"]
        L.append(f"- N={S['n']:,}: k-center per dataset {min(ks):.2f}–{max(ks):.2f} s (sum {sum(ks):.1f} s); "
                 f"bootstrap generation {S['bootstrap_s']:.1f} s (not timed in either ranking).")
    nm = R["n_max"]
    L += ["", f"**N_max.** All-sample time scales as N² (exponent measured between N={nm['n0']:,} and "
          f"N={nm['from_n']:,}: {nm['exponent']:.2f}); from the N={nm['from_n']:,} time the ranking takes {a['limit_s']:.0f} s at "
          f"N ≈ {nm['estimate']:,.0f}, rounded down to **N_max = {nm['n']:,}** " + nm["note"], ""]
    big = [S for S in R["sizes"] if not S["extrapolated"]][-1]
    rk = [[f"({i + 1}) {names[i + 1]}", f"{big['full'][i]:.4f}", big["compare"]["rank_full"][i] + 1,
           f"{big['core'][i]:.4f}", big["compare"]["rank_core"][i] + 1, big["compare_weighted"]["rank_core"][i] + 1]
          for i in range(len(big["full"]))]
    L += [f"Rankings at N = {big['n']:,} (the largest N with every dataset measured):", "",
          md_table(["stored dataset", "all-sample mean_pairwise", "rank", "core-set mean_pairwise", "rank",
                    "rank, weighted*"], rk), ""]
    L += ["\\* weighted core sets: each centre weighted by the share of the dataset's samples it covers "
          "(`KCenterResult.assign`); a diagnostic, not what `veml similar` computes.", ""]
    mm = [S for S in R["sizes"] if "mmd_full" in S]
    for S in mm:
        c = S["mmd_compare"]
        L.append(f"**MMD on all samples** at N = {S['n']:,} (bandwidth: median heuristic on a 2,000-row subsample of "
                 f"each pooled pair): ranking {fmt_s(S['mmd_full_s'])} vs {fmt_s(S['mmd_core_s'])} for `distance.mmd` on "
                 f"stored core sets ({fmt_x(S['mmd_full_s'] / S['mmd_core_s'])}); Kendall τ {c['tau']:.3f}, top-1 "
                 f"{'agrees' if c['top1_agree'] else 'differs'}.")
    L.append("")
    Nv = R["native"]
    L += [f"**All four methods on the real embeddings at native size** ({a['images']} per dataset, no bootstrap; core "
          f"sets k = {Nv['k']} = min(--k, images/3), so a core set keeps at most a third of a dataset). Labels for `label_ot`: per image its most frequent box category (counts over all "
          f"images: " + ", ".join(f"{k} {v}" for k, v in sorted(Nv["label_counts"].items())) + ").", ""]
    rows = []
    for m, r in Nv["methods"].items():
        if "compare" in r:
            c = r["compare"]
            rows.append([f"`{m}`", fmt_s(r["full_s"]), fmt_s(r["core_s"]), f"{c['tau']:.3f}",
                         "yes" if c["top1_agree"] else f"no ({c['top1_full'] + 1} vs {c['top1_core'] + 1})",
                         " ".join(str(x + 1) for x in np.argsort(r["full"])), " ".join(str(x + 1) for x in np.argsort(r["core"]))])
        else:
            rows.append([f"`{m}`", fmt_s(r["full_s"]), fmt_s(r["core_s"]), "failed", "",
                         r.get("full_error", "") or "", r.get("core_error", "") or ""])
    L += [md_table(["method", "all-sample ranking", "core-set ranking", "Kendall τ", "top-1 agrees",
                    "order, all samples (nearest first)", "order, core sets"], rows), ""]
    # verdicts
    last = next((S for S in R["sizes"] if S.get("is_max")), R["sizes"][-1])
    r1 = last["full_s"] / last["core_distance_s"]
    r2 = last["full_s"] / (sum(last["kcenter_s"]) + last["core_distance_s"])
    r3 = last["full_s"] / (last["kcenter_s"][0] + last["core_distance_s"])
    taus = {S["n"]: S["compare"]["tau"] for S in R["sizes"] if not S["extrapolated"]}
    L += ["**Targets** (issue 4):",
          f"- time ratio ≥ 100× at the largest N ({last['n']:,}{', N_max' if last.get('is_max') else ''}): with stored core sets (i) {verdict(r1 >= 100)} "
          f"({fmt_x(r1)}); a new target's core set included (iii) {verdict(r3 >= 100)} ({fmt_x(r3)}); every core set "
          f"computed from scratch (ii) {verdict(r2 >= 100)} ({fmt_x(r2)}).",
          f"- Kendall τ ≥ 0.9 over {len(DOMAINS) - 1} stored datasets: "
          + "; ".join(f"N={n:,} {verdict(t >= 0.9)} ({t:.3f})" for n, t in taus.items()) + ".", ""]
    return "\n".join(L) + "\n"


# --- main -------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="N per dataset before N_max (default 10000 50000; "
                   "2000 5000 with --quick)")
    p.add_argument("--images", type=int, default=None, help="real images per domain (default 500; 40 with --quick)")
    p.add_argument("--k", type=int, default=None, help="core-set size (default 200; 50 with --quick)")
    p.add_argument("--jitter", type=float, default=0.05, help="bootstrap jitter, fraction of per-feature std")
    p.add_argument("--limit-s", type=float, default=None, help="N_max: largest N whose all-sample ranking fits this "
                   "(default 600; 3 with --quick)")
    p.add_argument("--round", type=int, default=None, help="N_max is rounded down to a multiple of this (default 5000)")
    p.add_argument("--budget-min", type=float, default=None, help="if measuring N_max in full would end the run later "
                   "than this many minutes after the start, time a subset of the stored datasets and extrapolate "
                   "(default 30; 1.5 with --quick)")
    p.add_argument("--no-nmax", action="store_true", help="only the --sizes")
    p.add_argument("--no-mmd-full", action="store_true", help="skip MMD on all samples at the smallest N")
    p.add_argument("--core-repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="smoke run: N 2000 and 5000, 40 images per domain, k = 50")
    a = p.parse_args()
    q = a.quick
    a.sizes = a.sizes or ([2000, 5000] if q else [10_000, 50_000])
    a.images = a.images or (40 if q else 500)
    a.k = a.k or (50 if q else 200)
    a.limit_s = a.limit_s or (3.0 if q else 600.0)
    a.round = a.round or (1000 if q else 5000)
    a.budget_min = a.budget_min or (1.5 if q else 30.0)

    out = Path(a.out)
    work = out / "similarity_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    info = machine_info()
    from threadpoolctl import threadpool_info

    blas = ",".join(f"{t['internal_api']}:{t['num_threads']}" for t in threadpool_info() if t["user_api"] == "blas")
    R: dict[str, Any] = {"args": vars(a), "machine": info, "machine_line": machine_line(info), "blas_threads": blas,
                         "torch_threads": torch.get_num_threads(), "domains": [[n, repr(d)] for n, d in DOMAINS]}
    print(R["machine_line"], flush=True)
    start = time.perf_counter()
    with LoadSampler() as load:
        images, labels, R["generate_s"] = scenes(work, a.images, a.seed)
        emb, R["embed_s"], R["embedder"] = embed_all(images)
        R["d"] = int(emb[0].shape[1])
        print(f"{len(emb)} domains x {a.images} images: generated in {R['generate_s']:.1f} s, embedded "
              f"({R['embedder']}, d={R['d']}) in {R['embed_s']:.1f} s", flush=True)
        del images

        print("native size, four methods", flush=True)
        R["native"] = native(emb, labels, min(a.k, a.images // 3), a.seed)

        # pick and check the baseline kernel
        cal = [bootstrap(E, 4096 if q else 8192, a.jitter, 99 + j) for j, E in enumerate(emb[:2])]
        mu = cal[0].mean(0, dtype=np.float64).astype(np.float32)
        full, R["calibration"] = calibrate(cal[0] - mu, cal[1] - mu)
        R["calibration_shape"] = f"{len(cal[0]):,}×{len(cal[1]):,}"
        R["full_kernel"] = full.describe()
        got = full.mean_pairwise_ranking(cal[0][:2000], [cal[1][:2000]])[0]
        want = D.mean_pairwise(cal[0][:2000], cal[1][:2000])
        R["full_check_rel"] = abs(got - want) / want
        print(f"baseline kernel: {R['full_kernel']} ({ {k: round(v, 3) for k, v in R['calibration'].items()} }); "
              f"check vs distance.mean_pairwise: rel. diff {R['full_check_rel']:.1e}", flush=True)
        del cal
        k_center_greedy(emb[0], min(a.k, len(emb[0]) // 2), seed=a.seed)  # warm-up

        R["sizes"] = []
        for i, n in enumerate(a.sizes):
            R["sizes"].append(run_size(n, emb, a, full, None, do_mmd=(i == 0 and not a.no_mmd_full)))
            gc.collect()
        # N_max from the measured all-sample times (~N^2)
        S0, S1 = R["sizes"][0], R["sizes"][-1]
        expo = (math.log(S1["full_s"] / S0["full_s"]) / math.log(S1["n"] / S0["n"])) if S1["n"] != S0["n"] else 2.0
        c = S1["full_s"] / S1["n"] ** 2
        est = math.sqrt(a.limit_s / c)
        n_max = int(est // a.round * a.round)
        nm: dict[str, Any] = {"exponent": expo, "n0": S0["n"], "from_n": S1["n"], "estimate": est, "n": n_max, "note": ""}
        if a.no_nmax:
            nm["note"] = "(not measured: --no-nmax)."
        elif n_max in [S["n"] for S in R["sizes"]] or n_max < S0["n"]:
            nm["note"] = "— a size already measured (or below the smallest), so no further size."
        else:
            elapsed = time.perf_counter() - start
            per_ds = c * n_max ** 2 / S1["stored"]
            kc = sum(S1["kcenter_s"]) * n_max / S1["n"]  # k-center is ~linear in N
            left = a.budget_min * 60 - elapsed - kc - 30
            subset = None
            if c * n_max ** 2 > left:
                subset = max(2, min(S1["stored"], int(left // per_ds)))
                if subset >= S1["stored"]:
                    subset = None
            pred = c * n_max ** 2
            nm["predicted_full_s"] = pred
            S = run_size(n_max, emb, a, full, subset, do_mmd=False)
            S["is_max"] = True
            R["sizes"].append(S)
            R["sizes"].sort(key=lambda x: x["n"])
            nm["note"] = (f"(predicted all-sample ranking {pred:.0f} s, measured {S['full_s']:.0f} s"
                          + (f"; measured on {subset} of {S['stored']} stored datasets and extrapolated linearly, because "
                             f"the full measurement would have ended the run after the {a.budget_min:g}-minute budget"
                             if subset else "") + ").")
        R["n_max"] = nm
    R["load"] = load.summary()
    R["load_line"] = load_line(R["load"], info["nproc"])
    R["total_s"] = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    publish(out, "similarity", R, report(R))


if __name__ == "__main__":
    main()
