"""Many real processes writing one repository at once lose no version and corrupt none (DESIGN.md section 7).

On each back-end (the embedded SQLite default, and a private PostgreSQL started by ``pg_cluster.py``)
one repository is written at the same time by:

- four ``concurrency_worker.py`` processes (``veml.open()``), each creating ~50 versions: CSV and
  COCO imports, ``data add``, filters, merges, tags, model versions and scikit-learn trainings
  (a run node, its events and its log rows), and racing each other for the same names and tags;
- a real ``veml train`` process: a tiny torch classifier logging a loss row every step (SQLite),
  a scikit-learn model (PostgreSQL, sparing a second torch import);
- a real ``veml serve`` process on a loopback port, answering filter / merge / tag POSTs sent by
  two client threads of this test;
- real ``veml data import`` processes SIGKILLed once they have reserved their ids (so mid-append
  or just before their commit), and a process running ``veml gc --grace 8`` over and over, which
  reclaims the rows those kills leave while the other imports are in flight.

Afterwards every version any of them reported exists exactly once, under its name, with its
parents and the very id set (count and digest) its creator saw, and with the right content: an
import reads back the rows of its own source file, a filter holds exactly the samples of its base
that match, a merge exactly the union of its parents.  No two imports share a ``data_id``, the
sample table holds each id once, nothing exists that nobody reported, every race has one winner,
a killed import's version exists only if its commit landed and is then whole, ``veml gc --grace 0``
afterwards leaves exactly the rows the versions reference, and ``veml verify`` exits 0.

What a broken implementation does to fail this: a writer that gives up on a locked database
(``database is locked``, a serialisation failure) exits with a traceback; two allocations that
overlap make two imports share ids (the disjointness and read-back checks); a lost commit or a
version recorded twice is a reported id missing or a name/count mismatch; a name check outside
the writer lock lets two racers both win; a gc that deletes rows of an import that commits while
it runs leaves a version whose rows are gone (read-back and ``veml verify``; this one was real:
gc read the live versions before the stored keys, see ``integrity.gc``).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pyarrow.csv as pacsv
import pytest

import veml
from conftest import VEML_BIN, sample_table
from pg_cluster import PostgresUnavailable, pg_cluster
from veml.datasets import Domain, generate_driving_coco
from veml.store.idsets import BitMap, from_array

HERE = Path(__file__).parent
WORKER = HERE / "concurrency_worker.py"
N_WORKERS = 4
ROUNDS = 10
N_KILLED = 4  # imports SIGKILLed part-way while everything else runs
KILLED_ROWS = 3000
GC_GRACE_S = 8.0  # the gc loop reclaims their rows once they are this old (no live import takes that long)
SERVER_FILTERS = 14  # per client thread (two threads), plus a merge after every second filter
MB = {"adapter": "torch", "task": "classification", "architecture": "mobilenet_v3_small",
      "parameters": {"image_size": 32, "label_column": "time_of_day"}}

LOCAL_STORES = {"storage_url": "data", "artifacts_url": "artifacts", "embeddings_url": "embeddings"}
_PARTS = ("Architecture", "Backbone", "Neck", "Head")  # shared model-part nodes (versions.model)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture(scope="module")
def pg():
    try:
        with pg_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}", pytrace=False)


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "VEML_REPO"}, "PYTHONHASHSEED": "0"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ServerClients:
    """Two threads POSTing filters, merges and tags to ``veml serve`` while the workers write."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.created: list[dict] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(300)

    def _post(self, http: httpx.Client, path: str, body: dict, expect: dict) -> dict | None:
        res = http.post(path, json=body)
        if res.status_code not in (200, 201):
            with self._lock:
                self.failures.append(f"POST {path} {body}: {res.status_code} {res.text}")
            return None
        doc = res.json()
        with self._lock:
            self.created.append({**expect, "response": doc})
        return doc

    def _run(self, client: int) -> None:
        try:
            with httpx.Client(base_url=f"{self.base_url}/api/v1", timeout=120) as http:
                made: list[int] = []
                for i in range(SERVER_FILTERS):
                    threshold = round(-1.5 + 0.2 * i + 0.1 * client, 2)
                    where = f"a > {threshold}"
                    doc = self._post(http, "/data/base-table/filter", {"where": where, "name": f"srv{client}-f{i}"},
                                     {"op": "filter", "where": where, "base_name": "base-table"})
                    if doc is None:
                        continue
                    made.append(doc["id"])
                    if len(made) >= 2 and i % 2:
                        self._post(http, "/data/merge", {"versions": made[-2:], "name": f"srv{client}-m{i}"},
                                   {"op": "merge", "merged": made[-2:]})
                    if i % 4 == 0:
                        res = http.post(f"/versions/{doc['id']}/tags", json={"tag": f"srv{client}-tag{i}"})
                        if res.status_code not in (200, 201):
                            with self._lock:
                                self.failures.append(f"tag: {res.status_code} {res.text}")
        except Exception as exc:  # reported by the test, not swallowed
            with self._lock:
                self.failures.append(f"client {client}: {type(exc).__name__}: {exc}")


def _start_server(root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([VEML_BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--repo", str(root)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env())
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/api/v1/versions?limit=1", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"veml serve exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"veml serve did not answer: {log.read_text()}"
        time.sleep(0.2)


def _setup(tmp_path: Path, metadata_url: str | None) -> tuple[Path, Path, dict[str, int]]:
    """The repository every process writes: a base table, two COCO sets and their union, two models."""
    from concurrency_worker import write_csv

    day = generate_driving_coco(tmp_path / "day", 40, seed=7)
    night = generate_driving_coco(tmp_path / "night", 24, seed=8, file_prefix="night",
                                  domain=Domain(city="tokyo", time_of_day="night", weather="rain"))
    root = tmp_path / "repo"
    # the back-end under test, and local folders for the rest, whatever $VEML_*_URL / VEML_TEST_STORES say
    with veml.init(root, metadata_url=metadata_url or "sqlite:///meta.db", **LOCAL_STORES) as repo:
        base = repo.data.import_("table", write_csv(tmp_path / "base.csv", 1, 60), "base-table", label="y")
        d = repo.data.import_("coco", day, "day", images=day.parent / "images")
        n = repo.data.import_("coco", night, "night", images=night.parent / "images")
        both = repo.data.merge(["day", "night"], "both")
        logreg = repo.models.add("logreg", {"adapter": "sklearn", "task": "tabular-classification",
                                            "architecture": "logistic_regression"})
        setup_ids = {v.name: v.id for v in (base, d, n, both, logreg)}
        setup_ids.update({v.name: v.id for v in repo.stores.graph.list() if v.kind in _PARTS})
    (tmp_path / "mb.json").write_text(json.dumps(MB))
    return root, day, setup_ids


def _crash_imports(root: Path, tmp_path: Path, out: list[dict]) -> None:
    """Real ``veml data import`` processes SIGKILLed part-way: the rows they leave are what gc reclaims.

    The kill is aimed at the import's own window: once its id range is reserved (a pending
    allocation of its size shows up) it is appending rows and about to commit."""
    from concurrency_worker import write_csv

    rng = random.Random(11)
    seen: set[int] = set()
    with veml.open(root) as repo:
        for i in range(N_KILLED):
            csv = write_csv(tmp_path / f"killed-{i}.csv", 900 + i, KILLED_ROWS)
            proc = subprocess.Popen([VEML_BIN, "data", "import", "table", str(csv), "--label", "y", "--name", f"killed-{i}",
                                     "--json", "--repo", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=_env())
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                mine = {a[0] for a in repo.stores.graph.pending_allocations() if a[1] == "data" and a[3] == KILLED_ROWS}
                if mine - seen:
                    seen |= mine
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.kill()  # SIGKILL; a no-op when the import already finished (its version must then be whole, below)
            stdout, stderr = proc.communicate(timeout=60)
            out.append({"name": f"killed-{i}", "code": proc.returncode, "out": stdout, "err": stderr, "csv": str(csv)})


def _run_everything(tmp_path: Path, root: Path, day: Path,
                    torch: bool) -> tuple[list[list[dict]], ServerClients, dict, list[dict]]:
    src = tmp_path / "src"
    server, base_url = _start_server(root, tmp_path / "server.log")
    procs: list[subprocess.Popen] = []
    try:
        clients = ServerClients(base_url)
        if torch:  # model add + train in one shell line: the tiny torch run logs a loss row per step meanwhile
            line = (f"{VEML_BIN} model add --name mb --config {tmp_path / 'mb.json'} --repo {root} --json > /dev/null && "
                    f"{VEML_BIN} train --data both --model mb --set batch_size=8 --set max_steps=8 --set seed=1 "
                    f"--name cli-train --json --repo {root}")
        else:  # the same CLI path with a scikit-learn model (torch's import would double this test's time)
            line = f"{VEML_BIN} train --data base-table --model logreg --set seed=1 --name cli-train --json --repo {root}"
        train = subprocess.Popen(line, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        procs.append(train)
        workers = [subprocess.Popen([sys.executable, str(WORKER), str(root), str(w), str(ROUNDS), str(src), str(day)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
                   for w in range(N_WORKERS)]
        procs.extend(workers)
        clients.start()
        stop = tmp_path / "stop-gc"
        gc_loop = subprocess.Popen([sys.executable, str(WORKER), str(root), "gc", str(stop), str(GC_GRACE_S)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        procs.append(gc_loop)
        killed: list[dict] = []
        crasher = threading.Thread(target=_crash_imports, args=(root, tmp_path, killed), daemon=True)
        crasher.start()
        outs = [p.communicate(timeout=600) for p in workers]
        train_out, train_err = train.communicate(timeout=600)
        clients.join()
        crasher.join(300)
        stop.touch()
        gc_out, gc_err = gc_loop.communicate(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    for w, ((out, err), p) in enumerate(zip(outs, workers)):
        assert p.returncode == 0 and "Traceback" not in err, f"worker {w} failed ({p.returncode}):\n{err[-3000:]}"
        assert _lines(out)[-1] == {"op": "done", "worker": w}
    assert gc_loop.returncode == 0 and "Traceback" not in gc_err, gc_err[-3000:]
    gc_reports = _lines(gc_out)
    assert len(gc_reports) >= 2, gc_out  # it ran again and again while the others wrote
    print(f"gc passes {len(gc_reports)}, rows reclaimed meanwhile {sum(r['samples_reclaimed'] for r in gc_reports)}, "
          f"killed imports' exit codes {[k['code'] for k in killed]}")
    assert len(killed) == N_KILLED and all("Traceback" not in k["err"] for k in killed), killed
    assert train.returncode == 0 and "Traceback" not in train_err, train_err[-3000:]
    assert not clients.failures, clients.failures[:5]
    assert "Traceback" not in (tmp_path / "server.log").read_text(), (tmp_path / "server.log").read_text()[-3000:]
    return [_lines(out) for out, _ in outs], clients, json.loads(train_out), killed


def _stored_ids(root: Path) -> np.ndarray:
    return sample_table(root).to_table(columns=["data_id"])["data_id"].to_numpy()


def _table_values(view) -> dict[int, tuple[float, float, float]]:
    t = view.to_arrow()
    return {int(d): (a, b, c) for d, a, b, c in zip(t["data_id"].to_pylist(), t["a"].to_pylist(), t["b"].to_pylist(),
                                                     t["c"].to_pylist())}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_writers_lose_and_corrupt_nothing(backend, request, tmp_path):
    url = request.getfixturevalue("pg").create_database() if backend == "postgres" else None
    root, day, setup_ids = _setup(tmp_path, url)
    worker_reports, clients, cli_train, killed = _run_everything(tmp_path, root, day, torch=backend == "sqlite")

    reported = [r for rows in worker_reports for r in rows if "id" in r and r["op"] != "tag"]
    assert len(reported) + len(clients.created) + 1 >= 200, "fewer versions than the test means to create"
    # each creation got its own node: two processes never both believe they made the same id or name
    all_ids = [r["id"] for r in reported] + [c["response"]["id"] for c in clients.created] + [cli_train["id"]]
    dup = [i for i, n in Counter(all_ids).items() if n > 1]
    assert not dup, f"ids reported created by two writers: {dup}"

    repo = veml.open(root)
    try:
        g = repo.stores.graph
        nodes = {n.id: n for n in g.list()}
        names = Counter(n.name for n in nodes.values())
        assert [n for n, c in names.items() if c > 1] == []
        # nothing lost: every reported version is there, as reported ...
        for r in reported:
            node = nodes.get(r["id"])
            assert node is not None, f"version lost: {r}"
            assert (node.name, node.kind, list(node.parents)) == (r["name"], r["kind"], r["parents"]), (r, node)
            if node.kind == "DataVersion":
                s, a = g.idset_ref(node.id, "samples"), g.idset_ref(node.id, "annotations")
                assert (s.count, s.digest, a.count, a.digest) == (r["samples"], r["digest"], r["annotations"], r["ann_digest"]), r
        for c in clients.created:
            doc = c["response"]
            node = nodes[doc["id"]]
            assert node.name == doc["name"] and node.props["samples"] == doc["samples"] and list(node.parents) == doc["parents"]
        # a killed import's version exists only if its commit landed, and then whole (read back below)
        for k in killed:
            if k["code"] == 0:
                assert json.loads(k["out"])["name"] == k["name"]
                assert k["name"] in names, f"{k['name']} finished before its kill but is lost"
        survivors = {k["name"]: k for k in killed if k["name"] in names}
        # ... and nothing exists that nobody reported (a half-done or doubled version would show here)
        known = set(all_ids) | {repo.data.get(n).id for n in survivors} | set(setup_ids.values())
        if backend == "sqlite":
            known.add(repo.models.get("mb").id)  # added by the CLI train line
        extra = [(n.id, n.kind, n.name) for n in nodes.values() if n.id not in known and n.kind not in _PARTS]
        assert extra == []
        # a shared model part is one node, however many processes asked for it at once
        arch = Counter(n.name for n in nodes.values() if n.kind in _PARTS)
        assert arch["architecture:random_forest"] == 1 and max(arch.values()) == 1, arch

        # --- content ---------------------------------------------------------------------------
        values: dict[int, tuple[float, float, float]] = {}
        cats: dict[int, set[str]] = {}
        imports: dict[str, BitMap] = {}
        for name in ("base-table", "day", "night"):
            imports[name] = repo.data.ids(name)
        values.update(_table_values(repo.data.checkout("base-table")))
        for name, k in survivors.items():
            ids = repo.data.ids(name)
            got = _table_values(repo.data.checkout(name))
            src = pacsv.read_csv(k["csv"]).to_pydict()
            assert [got[i] for i in ids] == list(zip(src["a"], src["b"], src["c"])), f"killed import {name} is not whole"
            imports[name] = ids
        for r in reported:
            if r["op"] in ("import_table", "add"):
                ids = repo.data.ids(r["id"])
                base = repo.data.ids(r["base"]) if r["op"] == "add" else BitMap()
                assert base <= ids, r  # an added version keeps every sample of its base ...
                new = ids - base
                view = repo.data.checkout_samples(r["id"], list(new))
                got = _table_values(view)
                src = pacsv.read_csv(r["source"]).to_pydict()
                # ... plus exactly the rows of its own file, in order (never another import's rows)
                assert [got[i] for i in new] == list(zip(src["a"], src["b"], src["c"])), r
                labels = {row["data_id"]: row["category"] for row in view.annotations("labels").to_pylist()}
                assert [labels[i] for i in new] == src["y"], r
                imports[r["name"]] = new
                values.update(got)
            elif r["op"] == "import_coco":
                view = repo.data.checkout(r["id"])
                doc = json.loads(Path(r["source"]).read_text())
                samples = view.samples_table()
                assert samples["file_name"].to_pylist() == [im["file_name"] for im in doc["images"]], r
                for fname, payload in zip(samples["file_name"].to_pylist(), samples["payload"].to_pylist()):
                    assert payload == (day.parent / "images" / fname).read_bytes(), r  # the file's bytes, as they came
                boxes = view.annotations("boxes")
                assert boxes.num_rows == len(doc["annotations"]), r
                for did, cat in zip(boxes["data_id"].to_pylist(), boxes["category"].to_pylist()):
                    cats.setdefault(did, set()).add(cat)
                imports[r["name"]] = repo.data.ids(r["id"])
        for r in reported:
            ids = repo.data.ids(r["id"]) if r["kind"] == "DataVersion" else None
            if r["op"] == "filter":
                base = repo.data.ids(r["base"])
                if r["where"] == "category = 'car'":
                    expect = {i for i in base if "car" in cats.get(i, ())}
                else:
                    col, op, t = r["where"].split()
                    k = "abc".index(col)
                    expect = {i for i in base if (values[i][k] > float(t) if op == ">" else values[i][k] < float(t))}
                assert set(ids) == expect, r
                assert repo.data.annotation_ids(r["id"]) <= repo.data.annotation_ids(r["base"])
            elif r["op"] == "merge":
                assert ids == repo.data.ids(r["merged"][0]) | repo.data.ids(r["merged"][1]), r
            elif r["op"] == "train":
                t = repo.training.describe(g.get(r["id"]))
                assert t["status"] == r["status"] == "finished" and t["checkpoint"] == r["checkpoint"]
                assert [e["status"] for e in g.events(r["id"])] == ["running", "finished"]
                assert [row["key"] for row in repo.training.logs(r["id"])] == ["train_score"]
        base_values = {i: values[i] for i in repo.data.ids("base-table")}
        for c in clients.created:
            doc = c["response"]
            if c["op"] == "filter":
                t = float(c["where"].split()[-1])
                assert set(repo.data.ids(doc["id"])) == {i for i, v in base_values.items() if v[0] > t}, c
            else:
                assert repo.data.ids(doc["id"]) == repo.data.ids(c["merged"][0]) | repo.data.ids(c["merged"][1])
        # the CLI run that logged while everyone wrote: finished, each step logged exactly once
        t = repo.training.describe(repo.training.get("cli-train"))
        assert t["status"] == "finished" and repo.stores.artifacts.verify(t["checkpoint"])
        assert [e["status"] for e in g.events(t["id"])] == ["running", "finished"]
        if backend == "sqlite":
            steps = [row["step"] for row in repo.training.logs("cli-train") if row["key"] == "loss"]
            assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 8, steps
        else:
            assert [row["key"] for row in repo.training.logs("cli-train")] == ["train_score"]

        # --- imports never share a data_id; the sample table holds every id exactly once ---------
        seen = BitMap()
        for name, ids in imports.items():
            assert len(ids & seen) == 0, f"import {name} shares data ids with another import"
            seen |= ids
        stored = _stored_ids(root)
        assert len(stored) == len(np.unique(stored)), "a data id stored twice"
        assert seen <= from_array(stored)  # the rest: rows of killed imports that gc has not reached yet

        # --- races: exactly one winner each, and the name / tag resolves to it --------------------
        for r in range(ROUNDS):
            won = [x for rows in worker_reports for x in rows if x.get("name") == f"race-{r}" and x["op"] == "filter"]
            lost = [x for rows in worker_reports for x in rows if x == {"op": "lost", "name": f"race-{r}"}]
            assert len(won) == 1 and len(lost) == N_WORKERS - 1, (r, won, lost)
            assert g.resolve(f"race-{r}").id == won[0]["id"]
            tagged = [x for rows in worker_reports for x in rows if x.get("tag") == f"hot-{r}"]
            assert len(tagged) == 1 and g.resolve(f"hot-{r}").id == tagged[0]["id"]
        for rows in worker_reports:
            for x in rows:
                if x["op"] == "tag":
                    assert x["tag"] in g.get(x["id"]).tags
    finally:
        repo.close()
    # once the writers are gone, gc --grace 0 leaves exactly the rows the versions reference
    res = subprocess.run([VEML_BIN, "gc", "--grace", "0", "--json", "--repo", str(root)], capture_output=True, text=True,
                         env=_env())
    assert res.returncode == 0, res.stderr
    stored = _stored_ids(root)
    assert len(stored) == len(np.unique(stored)) and from_array(stored) == seen, "gc left orphans or took live rows"
    res = subprocess.run([VEML_BIN, "verify", "--json", "--repo", str(root)], capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and report["problems"] == []
    assert report["versions"] >= 200
