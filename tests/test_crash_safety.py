"""kill -9 at a random point of a real process never loses or corrupts a version (DESIGN.md section 7).

Each trial copies a prepared repository (data imported, a torch and a scikit-learn model trained,
plus rows a killed import left behind), starts ``crash_worker.py`` doing one kind of operation
over and over (import, add/update, filter, merge+tag, gc, training, deployment), and SIGKILLs it
after a delay drawn from the measured duration of that operation, so kills land inside the work.
Then:

- the repository opens and ``veml verify`` exits 0;
- every version the process printed before it died exists, under its name and parents, with the
  id set (count and digest) it printed, each of its rows stored once; a training it printed is
  finished with that checkpoint, a deployment has that artifact, both intact;
- at most one version appeared that it did not print (the one whose commit landed just before the
  kill), whole; a training cut short reads as failed (never running, never finished without a
  checkpoint) and cannot be deployed;
- a following import gets ids no row in the store has (an id range is never handed out twice,
  even to rows a killed import appended), reads back exactly its own rows, and a filter over it
  works; ``veml gc --grace 0`` then reclaims exactly the rows no version references and verify
  passes again.

The trials' operations are a seeded shuffle of a fixed mix (so every kind is covered) and each
kill delay is a seeded fraction of the measured duration; ``VEML_CRASH_SEED`` picks another
schedule, and every assertion message names the seed, operation and delay to replay it.  Some
trials use a repository whose graph is in PostgreSQL (a database copied from a template).

What a broken implementation does to fail this: a version node committed before its rows are
appended (or rows appended under ids a crash can hand out again) fails verify or the read-back;
an id counter that is only advanced with the version lets the next import reuse the ids of a
killed import's rows (duplicate rows, content hash mismatches); an artifact written in place
leaves a truncated file a version points at; a training marked finished before its checkpoint is
stored, or a "running" run that stays running after its process died, fails the status checks; a
gc that is not safe to interrupt leaves verify failing or rows it can no longer reclaim.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
import tomli_w

import veml
from conftest import run_cli
from crash_worker import write_csv
from pg_cluster import PostgresUnavailable, pg_cluster
from veml.datasets import Domain, generate_driving_coco
from veml.errors import InvalidInput
from veml.schemas import ID_SPACE, SCHEMAS
from veml.store.idsets import BitMap

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

WORKER = Path(__file__).with_name("crash_worker.py")
SEED = int(os.environ.get("VEML_CRASH_SEED", "20240611"))
# the mix of operations per back-end (shuffled by SEED); torch runs only on the SQLite copies
SQLITE_MIX = {"import": 7, "add": 5, "filter": 7, "merge": 6, "gc": 5, "train-sk": 3, "deploy-sk": 3, "train": 2, "deploy": 2}
PG_MIX = {"import": 3, "add": 2, "filter": 3, "merge": 2, "gc": 2, "train-sk": 2, "deploy-sk": 2}
# seconds one operation takes before anything is measured, and how many operations a kill spans
DEFAULT_EST = {"import": 0.15, "add": 0.15, "filter": 0.03, "merge": 0.02, "gc": 0.5, "train-sk": 0.1, "deploy-sk": 0.05,
               "train": 4.0, "deploy": 4.0}
SPAN = {"import": 3.0, "add": 3.0, "filter": 4.0, "merge": 4.0, "gc": 1.2, "train-sk": 3.0, "deploy-sk": 3.0,
        "train": 1.3, "deploy": 1.3}
MB = {"adapter": "torch", "task": "classification", "architecture": "mobilenet_v3_small",
      "parameters": {"image_size": 32, "label_column": "time_of_day"}}
LOCAL_STORES = {"storage_url": "data", "artifacts_url": "artifacts", "embeddings_url": "embeddings"}
LOGREG = {"adapter": "sklearn", "task": "tabular-classification", "architecture": "logistic_regression"}


def _schedule(mix: dict[str, int], salt: int) -> list[str]:
    ops = [op for op, n in mix.items() for _ in range(n)]
    random.Random(SEED * 7 + salt).shuffle(ops)
    return ops


SCHEDULE = [("sqlite", op) for op in _schedule(SQLITE_MIX, 1)] + [("postgres", op) for op in _schedule(PG_MIX, 2)]
_measured: dict[str, list[float]] = {}  # per-operation durations seen in this process's trials


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "VEML_REPO"}, "PYTHONHASHSEED": "0"}


# ----------------------------------------------------------------------------- base state


def _sources(src: Path) -> Path:
    """The data every base repository imports, and what the workers import again."""
    if (src / "big.json").exists():
        return src
    generate_driving_coco(src / "day", 40, seed=7)
    generate_driving_coco(src / "night", 24, seed=8, file_prefix="night",
                          domain=Domain(city="tokyo", time_of_day="night", weather="rain"))
    big = generate_driving_coco(src / "big", 60, seed=11, file_prefix="big")
    shutil.move(str(big.parent / "images"), str(src / "images"))
    shutil.move(str(big), str(src / "big.json"))
    day = json.loads((src / "day" / "annotations.json").read_text())
    day["annotations"] = [a for a in day["annotations"] if a["category_id"] % 2 == 0]  # new labels, same images
    (src / "day-relabel.json").write_text(json.dumps(day))
    write_csv(src / "tab.csv", 3, 60)
    return src


def _build_base(root: Path, src: Path, metadata_url: str | None, with_torch: bool) -> None:
    # the back-end under test, and local folders for the rest, whatever $VEML_*_URL / VEML_TEST_STORES say
    with veml.init(root, metadata_url=metadata_url or "sqlite:///meta.db", **LOCAL_STORES) as repo:
        for name in ("day", "night"):
            repo.data.import_("coco", src / name / "annotations.json", name, images=src / name / "images")
        repo.data.merge(["day", "night"], "both")
        repo.data.filter("day", "category = 'car'", "day-cars")
        repo.data.filter("night", "area > 50", "night-big")
        repo.data.import_("table", src / "tab.csv", "tab", label="y")
        repo.models.add("logreg", LOGREG)
        repo.training.train("tab", "logreg", sets={"seed": 1}, name="lr")
        if with_torch:
            repo.models.add("mb", MB)
            repo.training.train("both", "mb", sets={"batch_size": 8, "max_steps": 3, "seed": 1}, name="cls")
    # rows of an import killed between its append and its commit: what gc trials reclaim
    subprocess.run([sys.executable, str(WORKER), str(root), "orphan", "0", str(src), str(root.parent / "orphan")],
                   check=True, capture_output=True, env=_env())
    res = run_cli("verify", "--json", "--repo", root)
    assert res.code == 0, res.out + res.err


@pytest.fixture(scope="module")
def sqlite_base(tmp_path_factory, worker_id) -> tuple[Path, Path]:
    """One prepared SQLite repository for all xdist workers (built by the first, under a file lock)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    base = shared / "crash-base"
    with FileLock(str(shared / "crash-base.lock")):
        if not (base / "done").exists():
            shutil.rmtree(base, ignore_errors=True)
            src = _sources(base / "src")
            _build_base(base / "repo", src, None, with_torch=True)
            (base / "done").touch()
    return base / "repo", base / "src"


@pytest.fixture(scope="module")
def pg():
    try:
        with pg_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def pg_base(pg, tmp_path_factory, sqlite_base) -> tuple[Path, Path, object]:
    """A prepared repository whose graph is the PostgreSQL database ``crash_base`` (a template)."""
    src = sqlite_base[1]
    root = tmp_path_factory.mktemp("pg-base") / "repo"
    _build_base(root, src, pg.create_database("crash_base"), with_torch=False)
    return root, src, pg


def _copy(base_root: Path, dest: Path, pg=None, db: str | None = None) -> Path:
    shutil.copytree(base_root, dest)
    if pg is not None:
        import psycopg

        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}" TEMPLATE crash_base')
        cfg_path = dest / ".veml" / "config.toml"
        cfg = tomllib.loads(cfg_path.read_text())
        cfg["metadata_url"] = pg.url(db)
        cfg_path.write_text(tomli_w.dumps(cfg))
    return dest


# ----------------------------------------------------------------------------- one trial


class Reader(threading.Thread):
    """Collects the worker's complete stdout lines as they arrive (what it said before it died)."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.lines, self.ready = stream, [], threading.Event()

    def run(self) -> None:
        for line in self.stream:
            if not line.endswith("\n"):
                break  # cut off by the kill: never a promise
            doc = json.loads(line)
            if doc.get("ready"):
                self.ready.set()
            else:
                self.lines.append(doc)
        self.ready.set()


def _snapshot(repo) -> tuple[dict[int, object], BitMap, BitMap]:
    s = repo.stores.samples
    ann = BitMap()
    for table in SCHEMAS:
        if ID_SPACE[table] == "ann":
            ann |= s.keys(table)
    return {n.id: n for n in repo.stores.graph.list()}, s.keys("samples"), ann


def _learn(op: str, lines: list[dict]) -> None:
    ts = [d["t"] for d in lines if d.get("t") is not None]  # after ready (the warm-up operation reports null)
    if op == "gc":
        ts = ts[:1]  # the first gc does the work; the later ones find nothing to reclaim
    durations = [b - a for a, b in zip([0.0, *ts], ts)]
    _measured.setdefault(op, []).extend(durations)


def _estimate(op: str) -> float:
    seen = _measured.get(op)
    return float(np.median(seen)) if seen else DEFAULT_EST[op]


def run_trial(index: int, tmp_path: Path, sqlite_base, request) -> None:
    backend, op = SCHEDULE[index]
    seed = SEED * 1000 + index
    rng = random.Random(seed)
    if backend == "postgres":
        base_root, src, pg = request.getfixturevalue("pg_base")
        root = _copy(base_root, tmp_path / "repo", pg, f"trial_{index}")
    else:
        base_root, src = sqlite_base
        root = _copy(base_root, tmp_path / "repo")
    with veml.open(root) as repo:
        before, keys_before_run, _ = _snapshot(repo)

    fraction = rng.random()
    delay = fraction * SPAN[op] * _estimate(op)
    where = f"[seed {seed} (VEML_CRASH_SEED={SEED}), trial {index}, {backend}, op {op}, kill {delay:.3f}s after ready]"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(root), op, str(seed), str(src), str(tmp_path / "work")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    reader = Reader(proc.stdout)
    reader.start()
    try:
        assert reader.ready.wait(120), f"{where} the worker never got ready"
        assert proc.poll() is None, f"{where} the worker died before it was killed: {proc.stderr.read()[-3000:]}"
        time.sleep(delay)
        died_by_itself = proc.poll() is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(30)
    err = proc.stderr.read()
    assert not died_by_itself and proc.returncode == -signal.SIGKILL, f"{where} exited {proc.returncode}: {err[-3000:]}"
    reported = reader.lines
    _learn(op, reported)

    # --- the repository opens, verify passes ----------------------------------------------------
    res = run_cli("verify", "--json", "--repo", root)
    assert res.code == 0 and res.json["ok"], f"{where} verify failed after the kill: {res.out} {res.err}"

    with veml.open(root) as repo:
        g = repo.stores.graph
        nodes, keys_now, ann_now = _snapshot(repo)
        # --- every version it reported is there, exactly as reported ----------------------------
        versions = [d for d in reported if "id" in d]
        for d in versions:
            node = nodes.get(d["id"])
            assert node is not None, f"{where} reported version lost: {d}"
            assert (node.name, node.kind, list(node.parents)) == (d["name"], d["kind"], d["parents"]), f"{where} {d} != {node}"
            if node.kind == "DataVersion":
                s, a = g.idset_ref(node.id, "samples"), g.idset_ref(node.id, "annotations")
                got = (s.count, s.digest, a.count, a.digest)
                assert got == (d["samples"], d["digest"], d["annotations"], d["ann_digest"]), where
                rows = repo.stores.samples.read("samples", repo.data.ids(node), columns=["data_id"])["data_id"].to_numpy()
                assert len(rows) == len(np.unique(rows)) == s.count, f"{where} {node.name}: rows missing or stored twice"
            elif node.kind == "TrainingVersion":
                t = repo.training.describe(node)
                assert t["status"] == "finished" and t["checkpoint"] == d["checkpoint"], f"{where} {t}"
                assert repo.stores.artifacts.verify(d["checkpoint"]), where
            elif node.kind == "InferenceVersion":
                assert node.props["artifact"] == d["artifact"] and repo.stores.artifacts.verify(d["artifact"]), where
        for d in reported:
            if "tag" in d:
                assert g.resolve(d["tag"]).name == d["name"], f"{where} tag {d['tag']} lost"
        # --- at most the one version in flight appeared unreported; a cut-short run is failed ----
        new = [n for i, n in nodes.items() if i not in before and i not in {d["id"] for d in versions}]
        assert len(new) <= 1, f"{where} unreported versions appeared: {[(n.id, n.kind, n.name) for n in new]}"
        for n in new:
            assert n.name.startswith(f"{op}-{seed}-"), f"{where} unexpected version {n}"
            if n.kind == "TrainingVersion":
                t = repo.training.describe(n)
                assert t["status"] in ("failed", "finished"), f"{where} a dead run reads as {t['status']}"
                steps = [row["step"] for row in repo.training.logs(n.id) if row["key"] in ("loss", "train_score")]
                assert steps == sorted(set(steps)), f"{where} its log rows are out of order or doubled: {steps}"
                if t["status"] == "failed":
                    assert t.get("metrics") is None and "checkpoint" not in t, f"{where} {t}"
                    with pytest.raises(InvalidInput, match="failed"):
                        repo.inference.deploy(n.id, "onnx" if op == "train" else "skops", "none")
                else:
                    assert repo.stores.artifacts.verify(t["checkpoint"]), where

        referenced = BitMap()
        for _, bm, _ in g.iter_idsets("samples"):
            referenced |= bm
        print(f"{where}: {len(versions)} versions reported, {len(new)} more committed unreported, "
              f"{len(keys_now - referenced)} unreferenced rows")
        # --- the next import gets fresh ids and reads back its own rows; a filter over it works ---
        csv = write_csv(tmp_path / "after.csv", seed, 30)
        after = repo.data.import_("table", csv, "after-crash", label="y")
        ids, ann = repo.data.ids(after), repo.data.annotation_ids(after)
        assert len(ids) == 30 and not ids & keys_now, f"{where} the next import reused ids of stored rows: {ids & keys_now}"
        assert not ann & ann_now, f"{where} the next import reused annotation ids"
        view = repo.data.checkout(after).to_arrow()
        src_rows = pacsv.read_csv(csv).to_pydict()
        assert view["a"].to_pylist() == src_rows["a"] and view["b"].to_pylist() == src_rows["b"], where
        pos = repo.data.filter("after-crash", "a > 0", "after-crash-pos")
        assert len(repo.data.ids(pos)) == sum(1 for v in src_rows["a"] if v > 0), where

    # --- gc reclaims what no version references (and only that); verify passes again ------------
    if op == "gc" or index % 3 == 0:
        res = run_cli("gc", "--grace", "0", "--json", "--repo", root)
        assert res.code == 0, f"{where} gc after the kill failed: {res.err}"
        with veml.open(root) as repo:
            referenced = BitMap()
            for _, bm, _ in repo.stores.graph.iter_idsets("samples"):
                referenced |= bm
            assert repo.stores.samples.keys("samples") == referenced, f"{where} gc left orphans or took live rows"
        res = run_cli("verify", "--json", "--repo", root)
        assert res.code == 0, f"{where} verify failed after gc: {res.out} {res.err}"
    assert keys_before_run <= keys_now or op == "gc", f"{where} rows of existing versions disappeared"


# Two classes, so that ``--dist loadscope`` runs the two halves on two workers at once.
_EVEN = [i for i in range(len(SCHEDULE)) if i % 2 == 0]
_ODD = [i for i in range(len(SCHEDULE)) if i % 2 == 1]


def _ids(indices):
    return [f"{i}-{SCHEDULE[i][0]}-{SCHEDULE[i][1]}" for i in indices]


class TestKillHalfA:
    @pytest.mark.parametrize("index", _EVEN, ids=_ids(_EVEN))
    def test_kill_minus_nine(self, index, tmp_path, sqlite_base, request):
        run_trial(index, tmp_path, sqlite_base, request)


class TestKillHalfB:
    @pytest.mark.parametrize("index", _ODD, ids=_ids(_ODD))
    def test_kill_minus_nine(self, index, tmp_path, sqlite_base, request):
        run_trial(index, tmp_path, sqlite_base, request)


def test_schedule_covers_every_operation_and_both_backends():
    assert len(SCHEDULE) >= 50 and sum(1 for b, _ in SCHEDULE if b == "postgres") >= 10
    assert {op for _, op in SCHEDULE} == set(DEFAULT_EST)


# ------------------------------------------------------------------ kills at a chosen point

_KILL_AT_FIRST_EVENT = """
import os, signal, sys
import veml.store.sql_graph as g
def append_event(self, *a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # dies at its first run-event write after the run node
g.SqlGraphStore.append_event = append_event
from veml.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_killed_before_its_first_event_reads_failed(sqlite_base, tmp_path):
    """Regression: the run node and its "running" event were two commits, and a kill between them
    left a run with no event at all, reported as status "unknown" for ever (neither failed nor
    running).  The node now commits with its first event, so a dead run always reads as failed."""
    root = _copy(sqlite_base[0], tmp_path / "repo")
    script = tmp_path / "killer.py"
    script.write_text(_KILL_AT_FIRST_EVENT)
    proc = subprocess.run([sys.executable, str(script), "train", "--data", "tab", "--model", "logreg", "--name", "cut",
                           "--json", "--repo", str(root)], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    shown = run_cli("train", "show", "cut", "--json", "--repo", root)
    assert shown.code == 0, shown.err
    assert shown.json["status"] == "failed" and shown.json["metrics"] is None and "checkpoint" not in shown.json
    assert {t["name"]: t["status"] for t in run_cli("train", "list", "--json", "--repo", root).json}["cut"] == "failed"
    with veml.open(root) as repo:  # those opens recorded it: one failed event, the run node's first
        assert [e["status"] for e in repo.stores.graph.events(repo.get("cut").id)] == ["failed"]
    res = run_cli("deploy", "cut", "--format", "skops", "--json", "--repo", root)
    assert res.code == 1 and res.out == "" and len(res.err.splitlines()) == 1 and "failed" in res.err
    assert run_cli("verify", "--repo", root).code == 0
