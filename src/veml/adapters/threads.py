"""How many threads a training run gives torch.

torch's default is one thread per core, whatever else the machine is doing; on a busy machine that
oversubscribes the cores (a 2-core machine under load trained 8x slower).  Unless the user chose
(``$VEML_THREADS``, or ``$OMP_NUM_THREADS`` which torch itself honours), a run takes the cores this
process may use (``os.sched_getaffinity``) less the current load (the 1-minute load average), at
least one.  The choice is recorded in the training version's profile (``threads``, ``threads_source``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from veml.errors import InvalidInput

THREADS_ENV = "VEML_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: leave torch's own choice ($OMP_NUM_THREADS)
    source: str  # VEML_THREADS | OMP_NUM_THREADS | load
    cores: int
    load: float | None

    def to_json(self) -> dict[str, object]:
        return {"threads": self.threads, "source": self.source, "cores": self.cores, "load": self.load}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_threads() -> ThreadChoice:
    cores = available_cores()
    given = os.environ.get(THREADS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise InvalidInput(f"${THREADS_ENV} must be a positive whole number of threads, not {given!r}")
        return ThreadChoice(int(given), THREADS_ENV, cores, None)
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(None, "OMP_NUM_THREADS", cores, None)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return ThreadChoice(max(1, min(cores, int(cores - load))), "load", cores, round(load, 2))


__all__ = ["ThreadChoice", "choose_threads", "available_cores", "THREADS_ENV"]
