"""Helpers the benchmark scripts share: timing statistics, sizes on disk, the machine, tables.

Nothing here imports VeML, so the helpers also serve the DVC and Lance sides of a comparison.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]


# --- statistics -------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100), the usual definition for latency p99."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def geomean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


# --- sizes --------------------------------------------------------------------------------------
def tree_bytes(path: Path | str) -> dict[str, int]:
    """Bytes under ``path``: ``apparent`` (sum of file sizes) and ``disk`` (allocated blocks).

    Each inode is counted once, so hard links inside the tree (DVC's link cache type) are not
    double-counted.  Missing paths count as zero.
    """
    seen: set[tuple[int, int]] = set()
    apparent = disk = files = 0
    path = Path(path)
    if not path.exists():
        return {"apparent": 0, "disk": 0, "files": 0}
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            apparent += st.st_size
            disk += st.st_blocks * 512
            files += 1
    return {"apparent": apparent, "disk": disk, "files": files}


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def ms(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    v = seconds * 1000
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


# --- the machine -------------------------------------------------------------------------------
def _cmd_out(args: Sequence[str]) -> str:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in _cmd_out(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("lance", "pyarrow", "duckdb", "sqlalchemy", "pyroaring"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional module is just not reported
            pass
    fs = _cmd_out(["df", "-T", str(ROOT)]).splitlines()
    return {
        "nproc": os.cpu_count(),
        "nproc_cmd": _cmd_out(["nproc"]),
        "cpu": cpu,
        "mem_gib": mem_gib,
        "free_g": _cmd_out(["free", "-g"]),
        "filesystem": fs[-1].split()[1] if len(fs) > 1 else "",
        "kernel": platform.release(),
        "versions": versions,
        "git": _cmd_out(["git", "--version"]),
        "argv": sys.argv,
    }


def machine_line(info: dict[str, Any]) -> str:
    v = info["versions"]
    return (
        f"{info['nproc_cmd'] or info['nproc']} cores ({info['cpu'] or 'unknown CPU'}), {info['mem_gib']} GiB RAM, "
        f"{info['filesystem'] or '?'} filesystem, Python {v.get('python')}, lance {v.get('lance', '?')}, "
        f"pyarrow {v.get('pyarrow', '?')}, duckdb {v.get('duckdb', '?')}"
    )


# --- tools --------------------------------------------------------------------------------------
def find_dvc() -> tuple[str | None, str]:
    """``<repo>/.venv-bench/bin/dvc`` first, then ``dvc`` on PATH; (path, version) or (None, why)."""
    candidates = [ROOT / ".venv-bench" / "bin" / "dvc"]
    on_path = shutil.which("dvc")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.exists():
            out = subprocess.run([str(c), "--version"], capture_output=True, text=True)
            if out.returncode == 0:
                return str(c), out.stdout.strip()
    return None, (
        "DVC not found (looked for .venv-bench/bin/dvc and dvc on PATH); install it with "
        "`python3.11 -m venv .venv-bench && .venv-bench/bin/pip install dvc==3.67.1`"
    )


def veml_cli() -> str:
    for c in (ROOT / ".venv" / "bin" / "veml", Path(sys.executable).with_name("veml")):
        if c.exists():
            return str(c)
    found = shutil.which("veml")
    if not found:
        raise SystemExit("cannot find the veml command (install the project: pip install -e .)")
    return found


# --- output -------------------------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def publish(out: Path, stem: str, results: Any, markdown: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out`` and print the Markdown."""
    write_json(out / f"{stem}.json", results)
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"results in {out / (stem + '.json')} and {out / (stem + '.md')}", file=sys.stderr, flush=True)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


class LoadSampler:
    """Samples the 1-minute load average every few seconds in a thread, to show whether the machine
    was shared with other work during a run (the benchmark itself accounts for about 1)."""

    def __init__(self, every_s: float = 5.0) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self._every)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(s) / len(s), 2), "max": round(max(s), 2), "samples": len(s)}


def load_line(load: dict[str, float], nproc: int | None) -> str:
    busy = ("other work shared the cores for part or all of the run, so timings are noisier than on an idle machine"
            if load["mean"] > 1.3 else "the machine was otherwise mostly idle")
    return (f"1-minute load average during the run: mean {load['mean']}, max {load['max']} on {nproc} cores, of which the "
            f"benchmark itself accounts for about 1 ({busy}).")
