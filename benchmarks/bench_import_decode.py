#!/usr/bin/env python
"""What the import-time decode check costs: COCO import throughput with and without it.

Every image is decoded once at import by default (``im.load()``: a corrupt payload behind a valid
header is refused there instead of failing in training); ``--no-decode-check`` skips that and
leaves the check to ``veml verify --deep``.  This times ``repo.data.import_("coco", …)`` (the
API the CLI wraps) on generated driving scenes, into a fresh repository per run, alternating the
two settings run by run, and reports images/s for each and the ratio (with / without) as a mean
with a 95% t-interval over the paired runs.  Warm cache: the files were just written.

    .venv/bin/python benchmarks/bench_import_decode.py                       # 500 images, 64 px and 256 px, 5 repeats
    .venv/bin/python benchmarks/bench_import_decode.py --images 200 --repeats 3 --sizes 64
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, machine_line, md_table  # noqa: E402

import veml  # noqa: E402
from veml.datasets import generate_driving_coco  # noqa: E402


def t95(n: int) -> float:
    """Two-sided 95% Student t quantile for n-1 degrees of freedom."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, n - 1))
    except ImportError:  # the few values a benchmark run uses
        return {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)


def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan"), float("nan")
    half = t95(len(xs)) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - half, m + half


def one_import(work: Path, ann: Path, decode_check: bool, run: int) -> float:
    root = work / f"repo-{run}-{int(decode_check)}"
    repo = veml.init(root)
    try:
        t0 = time.perf_counter()
        repo.data.import_("coco", ann, f"v{run}", images=ann.parent / "images", decode_check=decode_check)
        return time.perf_counter() - t0
    finally:
        repo.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        work = Path(tmp)
        for size in args.sizes:
            ann = generate_driving_coco(work / f"gen{size}", args.images, seed=11, size=(size, size))
            one_import(work, ann, True, -1)  # warm-up: imports, caches, thread pool
            with_s, without_s = [], []
            for run in range(args.repeats):
                order = (True, False) if run % 2 == 0 else (False, True)
                for check in order:
                    (with_s if check else without_s).append(one_import(work, ann, check, run))
            ips_with = [args.images / s for s in with_s]
            ips_without = [args.images / s for s in without_s]
            ratio = [w / wo for w, wo in zip(ips_with, ips_without)]
            m, lo, hi = mean_ci(ratio)
            rows.append([f"{size}x{size}", args.images, args.repeats,
                         f"{statistics.median(ips_with):.0f}", f"{statistics.median(ips_without):.0f}",
                         f"{m:.3f} [{lo:.3f}, {hi:.3f}]"])
    print(md_table(["images", "count", "repeats", "img/s with decode check (median)",
                    "img/s without (median)", "throughput ratio with/without, mean [95% CI]"], rows))
    print()
    print(machine_line(machine_info()))


if __name__ == "__main__":
    main()
