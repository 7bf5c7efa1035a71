"""What a run logged with the SDK records about where it ran: the git tree, the environment, and the
machine's load sampled in the background (CPU, memory, GPU when torch has initialised CUDA).

Nothing here may fail a run: git missing, a directory outside any repository, a GPU that cannot be
queried all simply record less.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from veml.versions.training import libraries

#: packages whose versions a run records when the script has imported them (besides ``libraries()``'s)
KEY_PACKAGES = ("pandas", "scipy", "lightning", "pytorch_lightning", "transformers", "tensorflow", "jax",
                "xgboost", "lightgbm", "mlflow")
SYSTEM_PREFIX = "system/"
_GIT_TIMEOUT_S = 10


def _git(cwd: Path, *args: str) -> bytes | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def source_dir() -> Path:
    """Where the running script lives (its directory), else the working directory."""
    main = Path(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c", "-m") else None
    return main.resolve().parent if main is not None and main.is_file() else Path.cwd()


def git_state(where: Path | None = None) -> dict[str, Any] | None:
    """``{"root", "commit", "branch", "dirty", "diff_sha256"}`` of the git tree holding ``where``; None outside one."""
    where = where or source_dir()
    root = _git(where, "rev-parse", "--show-toplevel")
    commit = _git(where, "rev-parse", "HEAD")
    if root is None or commit is None:
        return None
    branch = _git(where, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(where, "status", "--porcelain") or b""
    diff = _git(where, "diff", "HEAD", "--no-color", "--no-ext-diff") or b""
    dirty = bool(status.strip())
    return {"root": root.decode(errors="replace").strip(), "commit": commit.decode().strip(),
            "branch": (branch or b"").decode(errors="replace").strip() or None, "dirty": dirty,
            "diff_sha256": hashlib.sha256(diff).hexdigest() if dirty else None}


def environment() -> dict[str, Any]:
    """``{"python", "platform", "packages"}``: the interpreter and the versions of the key packages loaded."""
    packages = {k: v for k, v in libraries().items() if k != "python"}
    for mod in KEY_PACKAGES:
        m = sys.modules.get(mod)
        version = getattr(m, "__version__", None) if m is not None else None
        if isinstance(version, str):
            packages[mod] = version
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages}


def _gpu_sample() -> dict[str, float]:
    """Memory (and utilisation, where ``pynvml`` is installed) of each GPU torch has initialised; never
    initialises CUDA itself (that would take a GPU context from a CPU-only run)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    out: dict[str, float] = {}
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out[f"{SYSTEM_PREFIX}gpu{i}_memory_used_mb"] = (total - free) / 2**20
        out[f"{SYSTEM_PREFIX}gpu{i}_memory_percent"] = 100.0 * (total - free) / total if total else 0.0
        try:
            out[f"{SYSTEM_PREFIX}gpu{i}_utilization_percent"] = float(torch.cuda.utilization(i))
        except Exception:  # noqa: BLE001 - needs pynvml / an NVIDIA driver: utilisation is simply not recorded
            pass
    return out


class SystemSampler:
    """A daemon thread logging the machine's load every ``interval_s`` through ``log(step, epoch, values)``
    (its own buffered logger), as ``system/…`` metrics: CPU %, memory used (MB, %), this process's RSS (MB),
    and GPU memory and utilisation when the run uses CUDA."""

    def __init__(self, log: Callable[[int, int, Mapping[str, float]], None], flush: Callable[[], None],
                 interval_s: float) -> None:
        import psutil

        self._psutil, self._log, self._flush, self._interval = psutil, log, flush, interval_s
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._step = 0
        self._proc.cpu_percent(None)  # the first reading only starts the measurement
        psutil.cpu_percent(None)
        self._thread = threading.Thread(target=self._loop, name="veml-system-metrics", daemon=True)

    def start(self, first_step: int = 0) -> None:
        self._step = first_step
        self._thread.start()

    def sample(self) -> dict[str, float]:
        vm = self._psutil.virtual_memory()
        out = {f"{SYSTEM_PREFIX}cpu_percent": self._psutil.cpu_percent(None),
               f"{SYSTEM_PREFIX}memory_used_mb": (vm.total - vm.available) / 2**20,
               f"{SYSTEM_PREFIX}memory_percent": vm.percent,
               f"{SYSTEM_PREFIX}process_rss_mb": self._proc.memory_info().rss / 2**20,
               f"{SYSTEM_PREFIX}process_cpu_percent": self._proc.cpu_percent(None)}
        out.update(_gpu_sample())
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._log(self._step, 0, self.sample())
                self._flush()
            except Exception:  # noqa: BLE001 - a failed sample (or write) must not end the run; the next one retries
                continue
            self._step += 1

    def stop(self) -> None:
        """Stop sampling and write what was sampled."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._flush()


__all__ = ["SystemSampler", "git_state", "environment", "source_dir", "SYSTEM_PREFIX"]
