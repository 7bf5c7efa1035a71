#!/usr/bin/env python
"""CLI start-up: ``veml --help``, ``veml --version`` and ``veml data list`` on a small repository.

Each command runs ``--runs`` times (default 15) in a fresh process (``python -m veml.cli.main``, the
interpreter this script runs under, with this checkout's ``src`` first on ``PYTHONPATH``); the figure
is the median wall time per command, target 0.3 s (issue 16).  The repository holds one data version of
six 8x8 images, built once in a temporary directory.  Also recorded: which heavy modules each command
imported (``-X importtime``), since a stray top-level import is what makes start-up slow.

    .venv/bin/python benchmarks/bench_cli_startup.py            # writes bench-out/cli_startup.{json,md}
    .venv/bin/python benchmarks/bench_cli_startup.py --runs 30 --out /tmp/b
    .venv/bin/python benchmarks/bench_cli_startup.py --src ../main/src --out /tmp/base   # a baseline checkout
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, LoadSampler, load_line, machine_info, machine_line, md_table, median, publish  # noqa: E402

TARGET_S = 0.3
COMMANDS = {"veml --help": ["--help"], "veml --version": ["--version"], "veml data list": ["data", "list"]}
HEAVY = ("numpy", "pandas", "pyarrow", "duckdb", "sqlalchemy", "lance", "PIL", "torch", "sqlglot", "scipy")


SRC = ROOT / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return env


def _veml(args: list[str], cwd: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *extra, "-m", "veml.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=True)


def _small_repo(where: Path) -> Path:
    from PIL import Image

    for c in ("cat", "dog"):
        (where / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(where / "imgs" / c / f"{i}.png")
    _veml(["init", "repo"], where)
    _veml(["data", "import", "images", str(where / "imgs"), "--name", "small"], where / "repo")
    return where / "repo"


def _imported(args: list[str], cwd: Path) -> list[str]:
    err = _veml(args, cwd, ("-X", "importtime")).stderr
    names = {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:") and "|" in line}
    return sorted(h for h in HEAVY if h in names)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15, help="fresh processes per command (median reported; at least 10)")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--src", type=Path, help="time another checkout's src/ (a baseline) instead of this one's")
    args = p.parse_args()
    global SRC
    SRC = (args.src or SRC).resolve()
    runs = max(10, args.runs)
    with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
        repo = _small_repo(Path(tmp))
        results = {}
        for label, cmd in COMMANDS.items():
            _veml(cmd, repo)  # warm the file cache once
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                _veml(cmd, repo)
                times.append(time.perf_counter() - t0)
            results[label] = {"median_s": round(median(times), 4), "min_s": round(min(times), 4), "max_s": round(max(times), 4),
                              "runs": runs, "heavy_imports": _imported(cmd, repo), "met": median(times) <= TARGET_S}
    info = machine_info()
    R = {"src": str(SRC), "target_s": TARGET_S, "commands": results, "load": load.summary(), "machine": info}
    rows = [(k, f"{v['median_s']:.3f}", f"{v['min_s']:.3f}-{v['max_s']:.3f}", ", ".join(v["heavy_imports"]) or "none",
             "yes" if v["met"] else "no") for k, v in results.items()]
    md = "\n\n".join([
        f"## CLI start-up of {SRC} (median of {runs} fresh processes; target {TARGET_S} s)",
        md_table(["command", "median s", "range s", "heavy modules imported", f"<= {TARGET_S} s"], rows),
        load_line(R["load"], info.get("nproc")), machine_line(info),
    ])
    publish(Path(args.out), "cli_startup", R, md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
