"""``veml gc`` never reclaims the rows of an import that is still at work (issue 13, point 7).

An import reserves an id range, appends its rows, then commits its version, which claims the
range.  Between the append and the commit only the writer knows the rows are wanted.  Real
``veml`` processes race here: imports paused in exactly that window (``gc_hold_cli.py``) while
``veml gc --grace 0`` runs, an import and a gc SIGKILLed at their worst moments, free imports
racing a gc loop.  Afterwards every committed version reads back byte for byte, ``veml verify``
passes, and the killed import's rows are reclaimed by a later gc.  A writer on another host
(simulated by its owner field) is protected by its lease while it renews it, and loses its range
only once it stalls past the lease; its commit then fails whole, with one ``error:`` line.

What the code before this fix did to fail it: gc took every reservation older than ``--grace``,
so the paused imports' rows were deleted and their versions committed with rows missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

import veml
from conftest import VEML_BIN, run_cli
from veml.errors import Conflict, StorageError
from veml.store.idsets import BitMap
from veml.store.sql_graph import allocations_t

HOLD = Path(__file__).parent / "gc_hold_cli.py"
N_IMAGES = 120  # per import: enough rows that a lost one shows, small enough to stay quick


def _images(root: Path, seed: int) -> tuple[Path, list[str]]:
    """An image-folder source of N_IMAGES tiny distinct PNGs; the sorted sha256 of its files."""
    rng = np.random.default_rng(seed)
    digests = []
    for i in range(N_IMAGES):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(buf, "PNG")
        (root / ("cat" if i % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        (root / ("cat" if i % 2 else "dog") / f"{seed}-{i}.png").write_bytes(buf.getvalue())
        digests.append(hashlib.sha256(buf.getvalue()).hexdigest())
    return root, sorted(digests)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """Whatever happens, no paused, stopped or running writer outlives its test."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Held:
    """A real ``veml`` process that pauses at one point (see gc_hold_cli.py) until released."""

    def __init__(self, hold_dir: Path, point: str, *args, env: dict[str, str] | None = None) -> None:
        self.dir = hold_dir
        self.proc = subprocess.Popen([sys.executable, str(HOLD), str(hold_dir), point, *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        _STARTED.append(self.proc)
        self.pid = self.proc.pid

    def wait_held(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / f"held-{self.pid}").exists():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"process exited ({self.proc.returncode}) before its hold point: {out} {err}")
            assert time.monotonic() < deadline, "never reached its hold point"
            time.sleep(0.02)

    def release(self) -> None:
        (self.dir / f"go-{self.pid}").touch()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()  # reaped: no zombie left for gc to wonder about

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def _gc(root: Path) -> dict:
    """``veml gc --grace 0`` (the CLI, in this test's process: a process apart from every writer)."""
    res = run_cli("gc", "--grace", "0", "--json", "--repo", root)
    assert res.code == 0 and "Traceback" not in res.err, res.err
    return res.json


def _import(root: Path, src: Path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([VEML_BIN, "data", "import", "images", str(src), "--name", name, "--json", "--repo", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    return proc


def _assert_whole(root: Path, expected: dict[str, list[str]]) -> None:
    """Each version holds exactly its source's images, byte for byte; verify passes; the sample
    table holds exactly the rows the versions reference (nothing orphaned, nothing lost)."""
    res = run_cli("verify", "--json", "--repo", root)
    assert res.code == 0, res.out + res.err
    with veml.open(root) as repo:
        g, samples = repo.stores.graph, repo.stores.samples
        for name, digests in expected.items():
            rows = samples.read("samples", g.idset(g.resolve(name).id, "samples"), columns=["payload"])
            assert sorted(hashlib.sha256(p).hexdigest() for p in rows["payload"].to_pylist()) == digests, name
        referenced = BitMap()
        for _, bm, _ in g.iter_idsets("samples"):
            referenced |= bm
        assert samples.keys("samples") == referenced
        assert g.pending_allocations() == []


def test_gc_grace_0_keeps_running_imports_rows_and_survives_kill_9_of_either(tmp_path: Path):
    root = tmp_path / "repo"
    veml.init(root).close()
    hold = tmp_path / "hold"
    hold.mkdir()
    src = {k: _images(tmp_path / k, seed) for seed, k in enumerate("abcd")}

    # two imports paused between their append and their commit
    a = Held(hold, "record", "--repo", root, "data", "import", "images", src["a"][0], "--name", "a", "--json")
    b = Held(hold, "record", "--repo", root, "data", "import", "images", src["b"][0], "--name", "b", "--json")
    a.wait_held()
    b.wait_held()
    first = _gc(root)
    assert (first["samples_reclaimed"], first["allocations_released"]) == (0, 0), first  # both alive: nothing taken

    # kill -9 the import b after its append; then a gc that drops b's reservation is killed -9 just
    # before it deletes b's rows (so a later gc must find them without any reservation left)
    b.kill9()
    g = Held(hold, "reclaim", "--repo", root, "gc", "--grace", "0", "--json")
    g.wait_held()
    g.kill9()

    # free imports race a gc loop, while a still waits
    racers = {k: _import(root, src[k][0], k) for k in "cd"}
    reclaimed = [_gc(root)]
    while any(p.poll() is None for p in racers.values()):
        reclaimed.append(_gc(root))
    for k, p in racers.items():
        out, err = p.communicate()
        assert p.returncode == 0, (k, err)

    # a commits after all those gcs ran, and is whole
    a.release()
    code, out, err = a.finish()
    assert code == 0 and json.loads(out)["samples"] == N_IMAGES, err
    reclaimed.append(_gc(root))
    assert sum(r["samples_reclaimed"] for r in reclaimed) == N_IMAGES  # exactly the killed import's rows

    _assert_whole(root, {k: src[k][1] for k in "acd"})
    assert run_cli("data", "show", "b", "--json", "--repo", root).code == 1


def _writers_idle(graph) -> bool:
    """No transaction holds the allocations (so a stopped writer is not stopped mid-heartbeat)."""
    if graph.is_sqlite:
        con = sqlite3.connect(sa.engine.make_url(graph.url).database, timeout=0.3, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            con.close()
    try:
        with graph.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '300ms'")
            conn.execute(sa.select(allocations_t.c.id).with_for_update())
        return True
    except sa.exc.DBAPIError:
        return False


def test_a_writer_on_another_host_is_kept_while_its_lease_runs_and_fails_whole_after(tmp_path: Path):
    root = tmp_path / "repo"
    veml.init(root).close()
    hold = tmp_path / "hold"
    hold.mkdir()
    src, _ = _images(tmp_path / "w", 5)
    w = Held(hold, "record", "--repo", root, "data", "import", "images", src, "--name", "w", "--json",
             env={"VEML_ALLOCATION_LEASE_S": "1"})
    w.wait_held()
    with veml.open(root) as repo:  # as if it ran on another machine: gc cannot ask its kernel
        g = repo.stores.graph
        with g.engine.begin() as conn:
            conn.execute(allocations_t.update().values(owner=f"elsewhere:{w.pid}:1:-"))
        time.sleep(1.5)  # past the lease: only its heartbeat keeps the range
        kept = _gc(root)
        assert (kept["samples_reclaimed"], kept["allocations_released"]) == (0, 0), kept

        # the writer stalls (SIGSTOP) past its lease: a gc may now take its range
        for _ in range(50):
            os.kill(w.pid, signal.SIGSTOP)
            if _writers_idle(g):
                break
            os.kill(w.pid, signal.SIGCONT)
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while any(p[6] is None or p[6] > 0 for p in g.pending_allocations()):
            assert time.monotonic() < deadline, g.pending_allocations()
            time.sleep(0.1)
        reserved = len(g.pending_allocations())  # its samples' range and its labels' range
    taken = _gc(root)
    assert (taken["samples_reclaimed"], taken["allocations_released"]) == (N_IMAGES, reserved), taken

    # it wakes up and tries to commit: refused whole, one clean error line, nothing recorded
    os.kill(w.pid, signal.SIGCONT)
    w.release()
    code, out, err = w.finish()
    assert code == 1 and out == "" and "Traceback" not in err, (code, out, err)
    assert err.splitlines() == [err.strip()] and err.startswith("error: ") and "released by 'veml gc'" in err, err
    assert run_cli("data", "show", "w", "--json", "--repo", root).code == 1
    _assert_whole(root, {})


def test_a_dropped_reservations_id_is_never_handed_out_again(tmp_path: Path):
    """Otherwise a stalled writer whose range gc dropped would claim the next writer's range (and
    commit a version whose rows gc deleted): SQLite reused the highest deleted rowid."""
    with veml.init(tmp_path / "repo") as repo:
        g = repo.stores.graph
        first, _ = g.allocate("data", 3)
        assert g.drop_allocations([first]) == [first]
        second, _ = g.allocate("data", 3)
        assert second != first
        g.record("DataVersion", "v", {}, idsets={"samples": BitMap()}, allocations=[second])
        assert g.drop_allocations([second]) == []  # claimed: gc can no longer drop it
        with pytest.raises(StorageError, match="released by 'veml gc'"):
            g.record("DataVersion", "w", {}, idsets={"samples": BitMap()}, allocations=[first])
        assert not g.name_taken("w")
        # a write that fails at its commit gives its range up at once: no live process pins it
        third, _ = g.allocate("data", 3)
        with pytest.raises(Conflict):
            g.record("DataVersion", "v", {}, idsets={"samples": BitMap()}, allocations=[third])
        assert g.pending_allocations() == []


def test_a_reused_pid_does_not_keep_a_dead_writers_range(tmp_path: Path):
    """The owner names the writer's start time: a later process with its pid is not the writer."""
    with veml.init(tmp_path / "repo") as repo:
        g = repo.stores.graph
        g.allocate("data", 4)  # this very process: alive, so kept whatever the grace
        assert run_cli("gc", "--grace", "0", "--json", "--repo", repo.root).json["allocations_released"] == 0
        (owner,) = [p[5] for p in g.pending_allocations()]
        host, pid, ns, start = owner.split(":")
        with g.engine.begin() as conn:  # as if a writer that started earlier had held this pid
            conn.execute(allocations_t.update().values(owner=f"{host}:{pid}:{ns}:{int(start) - 1}"))
        assert run_cli("gc", "--grace", "0", "--json", "--repo", repo.root).json["allocations_released"] == 1
