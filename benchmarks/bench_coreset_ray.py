#!/usr/bin/env python
"""Core set of 1,000,000 embeddings: locally vs on Ray with 2 workers (issue 7, scale figures).

The embeddings (a mixture of 64 Gaussian clusters, ``--dim`` floats each, seeded) are written to a
fresh repository's embedding cache (Lance), the way ``veml coreset`` finds them after embedding.
Then, side by side in one run:

* **local greedy**: ``k_center_greedy`` on the whole matrix, what ``veml coreset`` runs without Ray;
* **local partitioned**: ``veml.compute.coreset_tasks.k_center`` with the ``LocalExecutor`` on
  ``--parts`` partitions (each partition read from the cache, greedy per part, greedy on the union,
  covering radius per part) — the Ray algorithm without Ray;
* **Ray partitioned**: the same call with a ``RayExecutor`` on a local Ray cluster of ``--workers``
  CPUs (``ray.init(num_cpus=workers)``), one task per partition.

The partitioned core set is an approximation of the greedy one (DESIGN.md section 4: the core set
of per-partition core sets); its covering radius is reported next to the greedy radius.

    .venv/bin/python benchmarks/bench_coreset_ray.py                 # N=1,000,000, d=256, k=1000
    .venv/bin/python benchmarks/bench_coreset_ray.py --n 50000       # smoke

Results: ``OUT/coreset_ray.json`` and ``.md`` (also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_info  # noqa: E402

import veml  # noqa: E402
from veml.compute import coreset_tasks  # noqa: E402
from veml.compute.executor import LocalExecutor, RayExecutor  # noqa: E402
from veml.coreset.kcenter import k_center_greedy  # noqa: E402

KEY = "bench-mixture"


def mixture(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (64, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x[s:e] = centres[rng.integers(0, 64, e - s)] + rng.normal(0, 1, (e - s, d)).astype(np.float32)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--parts", type=int, default=2, help="partitions (one Ray task each)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "scale")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="veml-coreset-ray-"))
    res: dict = {"machine": {**machine_info(), "loadavg": os.getloadavg()[0]}, "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        x = mixture(args.n, args.dim)
        ids = np.arange(args.n, dtype=np.int64)
        repo = veml.init(work / "repo")
        t0 = time.perf_counter()
        repo.stores.embeddings.put(KEY, ids, x)
        res["cache_write_s"] = time.perf_counter() - t0
        loc = repo.stores.location
        parts = np.array_split(ids, args.parts)

        t0 = time.perf_counter()
        g = k_center_greedy(x, args.k, seed=0)
        res["local_greedy"] = {"seconds": time.perf_counter() - t0, "radius": float(g.radius)}
        print(f"local greedy: {res['local_greedy']}", file=sys.stderr)

        t0 = time.perf_counter()
        lp = coreset_tasks.k_center(LocalExecutor(), loc, KEY, parts, args.k, seed=0)
        res["local_partitioned"] = {"seconds": time.perf_counter() - t0, "radius": lp.radius, "union": lp.union}
        print(f"local partitioned: {res['local_partitioned']}", file=sys.stderr)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        res["ray_start_s"] = time.perf_counter() - t0
        ex = RayExecutor()
        ex.connect()
        coreset_tasks.k_center(ex, loc, KEY, [p[:5000] for p in parts], min(args.k, 100), seed=0)  # warm the workers (imports)
        t0 = time.perf_counter()
        rp = coreset_tasks.k_center(ex, loc, KEY, parts, args.k, seed=0)
        res["ray_partitioned"] = {"seconds": time.perf_counter() - t0, "radius": rp.radius, "union": rp.union,
                                  "same_ids_as_local_partitioned": bool(np.array_equal(rp.ids, lp.ids))}
        print(f"ray partitioned: {res['ray_partitioned']}", file=sys.stderr)
        ray.shutdown()
        repo.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lg, lp_, rp_ = res["local_greedy"], res["local_partitioned"], res["ray_partitioned"]
    md = "\n".join([
        f"Core set of {args.n:,} embeddings (d={args.dim}, k={args.k}), {args.parts} partitions, Ray with {args.workers} workers "
        f"(load avg at start {res['machine']['loadavg']:.1f}):", "",
        "| method | seconds | covering radius | vs local greedy |", "|---|---|---|---|",
        f"| local greedy (`veml coreset` without Ray) | {lg['seconds']:.1f} | {lg['radius']:.3f} | 1.00× |",
        f"| local partitioned (same algorithm as Ray, one process) | {lp_['seconds']:.1f} | {lp_['radius']:.3f} | {lg['seconds'] / lp_['seconds']:.2f}× |",
        f"| Ray partitioned, {args.workers} workers | {rp_['seconds']:.1f} | {rp_['radius']:.3f} | {lg['seconds'] / rp_['seconds']:.2f}× |",
        "", f"Ray vs local partitioned: {lp_['seconds'] / rp_['seconds']:.2f}×; same centres: {rp_['same_ids_as_local_partitioned']}; "
        f"cache write {res['cache_write_s']:.1f} s; Ray start {res['ray_start_s']:.1f} s (not in the Ray time).",
    ])
    (args.out / "coreset_ray.json").write_text(json.dumps(res, indent=2))
    (args.out / "coreset_ray.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
