"""What every seeded suite of the harness does after parsing its arguments: run each seed in a scratch folder, report,
publish."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from _common import machine_info, publish  # noqa: E402

RunSeed = Callable[[int, argparse.Namespace, Path], Any]
Report = Callable[[list[Any], argparse.Namespace, float], tuple[str, dict[str, Any]]]


def run_and_publish(run_seed: RunSeed, report: Report, a: argparse.Namespace, prefix: str, name: str) -> None:
    """Seeds ``a.first_seed`` .. ``a.first_seed + a.seeds - 1``; the scratch folder is removed whatever happens."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    t0 = time.perf_counter()
    try:
        runs = [run_seed(seed, a, work) for seed in range(a.first_seed, a.first_seed + a.seeds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md, res = report(runs, a, time.perf_counter() - t0)
    res["machine"] = machine_info()
    publish(a.out, name, res, md)
