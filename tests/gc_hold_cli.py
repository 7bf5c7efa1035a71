"""The real ``veml`` CLI, paused at one chosen point so a test can line other processes up against it.

Usage: ``python gc_hold_cli.py HOLD_DIR POINT veml-args...`` where POINT is

- ``record``: an import stops once its rows are appended and its id ranges reserved, just before
  its version commits (the window in which ``veml gc`` must keep its rows);
- ``reclaim``: ``veml gc`` stops once it has judged the reservations and dropped the stale ones,
  just before it deletes the first rows (the window a kill -9 of gc hits hardest).

At the point it creates ``HOLD_DIR/held-PID`` and waits for ``HOLD_DIR/go-PID`` (at most two
minutes), then carries on.  Nothing else changes: the command runs as ``veml`` would run it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _hold(hold_dir: Path) -> None:
    (hold_dir / f"held-{os.getpid()}").touch()
    go, deadline = hold_dir / f"go-{os.getpid()}", time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> int:
    hold_dir, point, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    from veml.cli.main import main as veml_main
    from veml.store.lance_samples import LanceSampleStore
    from veml.store.sql_graph import SqlGraphStore

    if point == "record":
        original = SqlGraphStore.record

        def record(self, *args, **kwargs):
            if kwargs.get("allocations"):
                _hold(hold_dir)
            return original(self, *args, **kwargs)

        SqlGraphStore.record = record
    elif point == "reclaim":
        original_reclaim = LanceSampleStore.reclaim
        held = []

        def reclaim(self, table, ids):
            if len(ids) and not held:
                held.append(True)
                _hold(hold_dir)
            return original_reclaim(self, table, ids)

        LanceSampleStore.reclaim = reclaim
    else:
        raise SystemExit(f"unknown hold point {point!r}")
    return veml_main(argv)


if __name__ == "__main__":
    sys.exit(main())
