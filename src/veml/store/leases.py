"""Leases on id reservations: the heartbeat that tells ``veml gc`` a writer is still at work.

A writer reserves an id range (``allocate``), appends its rows, then records its version, which
claims the range.  Until then only the writer knows the rows are wanted.  On its own host gc asks
the kernel whether the writer's process is alive; on another host (a team's PostgreSQL) it cannot,
so the writer keeps a lease: a background thread pushes the reservation's ``lease_until`` forward
(by the database's clock) every quarter of the lease while the writer works, and gc reclaims a
reservation from another host only once its lease ran out.  A writer stalled for longer than its
lease (suspended, frozen) may lose its range; its commit then fails whole (the claim finds the
range gone), never commits a version with rows missing.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from typing import Callable, Iterable

from veml.errors import InvalidInput

#: How long a reservation stays protected from a gc on another host without a heartbeat.
DEFAULT_LEASE_S = 120.0
LEASE_ENV = "VEML_ALLOCATION_LEASE_S"

log = logging.getLogger(__name__)


def lease_seconds() -> float:
    """The lease of a new reservation: ``$VEML_ALLOCATION_LEASE_S``, else :data:`DEFAULT_LEASE_S`."""
    raw = os.environ.get(LEASE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{LEASE_ENV}={raw!r}: expected a positive number of seconds")
    return value


class LeaseKeeper:
    """Renews the leases of this process's open reservations from one daemon thread.

    ``renew(ids, lease_s)`` is the store's write; the thread runs only while something is held,
    and a forked child starts afresh (its parent's thread and reservations are not its own)."""

    def __init__(self, renew: Callable[[list[int], float], None]) -> None:
        self._renew = renew
        self._closed = False
        self._after_fork()
        _KEEPERS.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, float] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def hold(self, alloc_id: int, lease_s: float) -> None:
        with self._lock:
            self._held[alloc_id] = lease_s
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="veml-lease", daemon=True)
                self._thread.start()

    def release(self, alloc_ids: Iterable[int]) -> None:
        with self._lock:
            for a in alloc_ids:
                self._held.pop(a, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed or not self._held:
                    self._thread = None
                    return
                interval = min(self._held.values()) / 4
            if self._wake.wait(interval):
                continue  # closing: the loop head ends the thread
            with self._lock:
                by_lease: dict[float, list[int]] = {}
                for a, lease in self._held.items():
                    by_lease.setdefault(lease, []).append(a)
            for lease, ids in by_lease.items():
                try:
                    self._renew(ids, lease)
                except Exception as exc:  # the database away for a moment: the next beat retries
                    log.warning("cannot renew the lease of id reservations %s: %s", ids, exc)


_KEEPERS: "weakref.WeakSet[LeaseKeeper]" = weakref.WeakSet()


def _reset_in_child() -> None:
    for keeper in list(_KEEPERS):
        keeper._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
