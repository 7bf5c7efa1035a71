"""One conformance suite, two back-ends: the graph store on SQLite and on a private PostgreSQL.

The store-level tests of ``test_graph_store.py`` are imported here and run against a ``graph``
fixture parametrised over ``sqlite`` and ``postgres``; the tests below add what that file does not
cover (pagination, tags, events, logs, concurrent allocation, name races, big ids) on both, and an
end-to-end repository whose graph lives in PostgreSQL (import, filter, merge, lineage, verify,
four concurrent writer processes).

PostgreSQL is a real server started by ``pg_cluster.py`` (``initdb`` + ``pg_ctl`` on a loopback
port) for this module only.  Missing PostgreSQL binaries fail these tests with a message saying
what to install; they are never skipped.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

import veml
from conftest import images_dir
from pg_cluster import PostgresUnavailable, pg_cluster
from test_graph_store import (  # noqa: F401 - collected here, run with this module's fixtures
    test_allocations_are_disjoint_and_claimed,
    test_concurrent_writers_lose_no_version,
    test_exports_dot_and_cypher,
    test_idsets_round_trip_and_digest,
    test_lineage_up_down_hops,
    test_record_is_atomic_on_conflict,
    test_record_with_unknown_parent_commits_nothing,
    test_resolve_by_id_name_tag,
)
from veml.errors import AmbiguousName, Conflict, InvalidInput, NotFound, StorageError
from veml.store import open_graph_store
from veml.store.idsets import BitMap
from veml.store.sql_graph import SqlGraphStore

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="module")
def pg():
    """The private PostgreSQL cluster, shared by this module's tests (one fresh database each)."""
    try:
        with pg_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}", pytrace=False)


def _url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'g.db'}"
    return request.getfixturevalue("pg").create_database()


@pytest.fixture(params=BACKENDS)
def graph_url(request, tmp_path) -> str:
    """A URL for an empty graph database on each back-end."""
    return _url(request, tmp_path)


@pytest.fixture
def graph(graph_url, tmp_path):
    g = open_graph_store(graph_url, tmp_path)
    yield g
    g.close()


@pytest.fixture
def repo(pg, tmp_path):
    """Overrides conftest's ``repo``: a repository whose metadata/graph is PostgreSQL."""
    r = veml.init(tmp_path / "repo", metadata_url=pg.create_database())
    yield r
    r.close()


# --- back-end specific counterparts of test_graph_store.py's SQLite-only tests -------------------


@pytest.mark.parametrize("ref", [str(2**63), 2**70, "\u00b2", "\u0661", str(2**63 - 1), str(2**40), "a\x00b"])
def test_digit_references_sql_cannot_hold_are_just_unknown(graph, ref):
    graph.record("DataVersion", "v", {})
    with pytest.raises(NotFound):
        graph.resolve(ref)


def test_schema_newer_than_code_is_refused(graph_url, tmp_path):
    open_graph_store(graph_url, tmp_path).close()
    g = open_graph_store(graph_url, tmp_path)
    import sqlalchemy as sa

    with g.engine.begin() as conn:
        conn.execute(sa.text("UPDATE veml_meta SET value = '99' WHERE key = 'schema_version'"))
    g.close()
    with pytest.raises(StorageError, match="newer"):
        open_graph_store(graph_url, tmp_path)


def test_unreachable_postgres_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="cannot open metadata database"):
        SqlGraphStore("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


# --- further conformance -------------------------------------------------------------------------


def test_list_count_kinds_and_pagination(graph):
    made = [graph.record("DataVersion" if i % 3 else "ModelVersion", f"v{i}", {"i": i, "nested": {"a": [1, 2]}}) for i in range(10)]
    assert graph.count() == 10
    assert graph.count(["ModelVersion"]) == 4 and graph.count(["DataVersion", "ModelVersion"]) == 10
    assert [n.id for n in graph.list()] == [n.id for n in made]
    assert [n.name for n in graph.list(limit=3)] == ["v0", "v1", "v2"]
    assert [n.name for n in graph.list(limit=3, offset=8)] == ["v8", "v9"]
    assert [n.name for n in graph.list(["ModelVersion"], limit=2, offset=1)] == ["v3", "v6"]
    assert graph.list(offset=20) == []
    got = graph.get(made[4].id)
    assert got.props == {"i": 4, "nested": {"a": [1, 2]}} and got.kind == "DataVersion" and got.name == "v4"
    assert got.created_at == pytest.approx(made[4].created_at)
    with pytest.raises(NotFound):
        graph.get(2**40)


def test_names_tags_untag_and_ambiguity(graph):
    a = graph.record("DataVersion", "a", {})
    b = graph.record("DataVersion", "b", {})
    graph.tag(a.id, "gold")
    graph.tag(a.id, "best")
    assert graph.get(a.id).tags == ("best", "gold")
    assert graph.name_taken("gold") and graph.name_taken("a") and not graph.name_taken("zzz")
    with pytest.raises(Conflict):
        graph.tag(b.id, "gold")
    with pytest.raises(Conflict):
        graph.record("ModelVersion", "gold", {})
    graph.untag("gold")
    with pytest.raises(NotFound):
        graph.untag("gold")
    with pytest.raises(NotFound):
        graph.resolve("gold")
    graph.tag(b.id, "gold")
    assert graph.resolve("gold").id == b.id
    # a tag inserted behind the store's back that equals another version's name: ambiguous, not a guess
    from veml.store.sql_graph import tags_t

    with graph.engine.begin() as conn:
        conn.execute(tags_t.insert().values(tag="a", node_id=b.id, created_at=0.0))
    with pytest.raises(AmbiguousName):
        graph.resolve("a")
    assert graph.resolve(str(a.id)).name == "a"
    with pytest.raises(InvalidInput):
        graph.tag(a.id, "42")
    with pytest.raises(InvalidInput):
        graph.record("DataVersion", "x" * 256, {})
    with pytest.raises(InvalidInput):
        graph.record("DataVersion", "nul\x00name", {})


@pytest.mark.parametrize("taken, typed", [("Straße", "STRASSE"), ("a\u00a0b", "a b")])
def test_names_differing_by_unicode_case_or_spaces_clash(graph, taken, typed):
    """name_key decides on both back-ends: casefold() (ß is ss), str.split() (a no-break space)."""
    node = graph.record("DataVersion", taken, {})
    graph.tag(node.id, "t-" + taken)
    assert graph.name_taken(typed) and graph.name_taken("t-" + typed)
    with pytest.raises(Conflict):
        graph.record("DataVersion", typed, {})
    with pytest.raises(Conflict):
        graph.tag(node.id, "t-" + typed)
    assert [n.name for n in graph.list()] == [taken]


def test_events_latest_wins_and_logs_after_id(graph):
    run = graph.record("TrainingRun", "run", {})
    other = graph.record("TrainingRun", "other", {})
    graph.append_event(run.id, "queued")
    graph.append_event(run.id, "running", {"pid": 7})
    graph.append_event(other.id, "failed", {"error": "x" * 300})
    graph.append_event(run.id, "succeeded-with-a-long-status-name", {"metric": 0.5})
    assert [e["status"] for e in graph.events(run.id)] == ["queued", "running", "succeeded-with-a-long-status-name"]
    latest = graph.latest_events([run.id, other.id, 2**40])
    assert latest[run.id]["status"] == "succeeded-with-a-long-status-name" and latest[run.id]["metric"] == 0.5
    assert latest[other.id]["status"] == "failed" and set(latest) == {run.id, other.id}

    graph.append_logs(run.id, [(s, s // 10, "loss", 1.0 / (s + 1), 100.0 + s) for s in range(25)])
    graph.append_logs(other.id, [(0, 0, "a-very-long-metric-key/" * 5, 1.5, 1.0)])
    graph.append_logs(run.id, [(2**40, 3, "acc", 0.9, 200.0)])
    graph.append_logs(run.id, [])
    rows = graph.read_logs(run.id)
    assert len(rows) == 26 and [r["step"] for r in rows[:3]] == [0, 1, 2] and rows[-1]["step"] == 2**40
    assert rows[0]["value"] == pytest.approx(1.0) and rows[0]["key"] == "loss" and rows[24]["epoch"] == 2
    page = graph.read_logs(run.id, after_id=rows[9]["id"], limit=5)
    assert [r["id"] for r in page] == [r["id"] for r in rows[10:15]]
    assert graph.read_logs(run.id, after_id=rows[-1]["id"]) == []
    assert graph.read_logs(other.id)[0]["key"] == "a-very-long-metric-key/" * 5


def test_pending_and_dropped_allocations(graph):
    a1, s1 = graph.allocate("data", 10)
    a2, s2 = graph.allocate("data", 0)
    a3, s3 = graph.allocate("annotations", 5)
    assert (s1, s2, s3) == (0, 10, 0)
    pending = graph.pending_allocations()
    assert [(p[0], p[1], p[2], p[3]) for p in pending] == [(a1, "data", 0, 10), (a2, "data", 10, 0), (a3, "annotations", 0, 5)]
    graph.drop_allocations([a1, a3])
    graph.drop_allocations([])
    assert [p[0] for p in graph.pending_allocations()] == [a2]
    assert graph.allocate("data", 1)[1] == 10  # dropping never hands ids out again
    with pytest.raises(InvalidInput):
        graph.allocate("data", -1)
    with pytest.raises(StorageError, match="exhausted"):
        graph.allocate("data", 2**32)
    assert graph.allocate("data", 2)[1] == 11  # the refused allocation consumed nothing


def test_concurrent_allocations_from_threads_are_disjoint(graph_url, tmp_path):
    stores = [open_graph_store(graph_url, tmp_path) for _ in range(4)]
    got: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(store, size):
        try:
            for _ in range(25):
                alloc_id, start = store.allocate("data", size)
                with lock:
                    got.append((alloc_id, start, size))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, i + 1)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in stores:
        s.close()
    assert not errors, errors
    assert len(got) == 100 and len({a for a, _, _ in got}) == 100
    spans = sorted((start, start + size) for _, start, size in got)
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # disjoint and gap-free


_ALLOCATOR = textwrap.dedent(
    """
    import sys
    from veml.store.sql_graph import SqlGraphStore
    g = SqlGraphStore(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        print(*g.allocate("data", int(sys.argv[3])))
    g.close()
    """
)


def test_concurrent_allocations_from_processes_are_disjoint(graph_url, tmp_path):
    url = graph_url.replace("postgresql://", "postgresql+psycopg://", 1)
    script = tmp_path / "alloc.py"
    script.write_text(_ALLOCATOR)
    procs = [subprocess.Popen([sys.executable, str(script), url, "30", str(7 + w)], stdout=subprocess.PIPE, text=True)
             for w in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    spans = sorted((int(line.split()[1]), int(line.split()[1]) + 7 + w)
                   for w, out in enumerate(outs) for line in out.splitlines())
    assert len(spans) == 120 and spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_racing_name_and_tag_leave_one_winner(graph_url, tmp_path):
    """A version named X and a tag X created at once: exactly one wins, every reference stays unique."""
    g = open_graph_store(graph_url, tmp_path)
    base = g.record("DataVersion", "base", {})
    stores = [open_graph_store(graph_url, tmp_path) for _ in range(4)]
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def work(i, store):
        barrier.wait()
        try:
            if i % 2:
                store.tag(base.id, "contested")
            else:
                store.record("DataVersion", "contested", {})
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "ok"]
    g.resolve("contested")  # neither ambiguous nor missing
    for s in stores:
        s.close()
    g.close()


def test_big_idsets_and_wide_lineage(graph):
    big = BitMap(range(0, 2_000_000, 3))
    n = graph.record("DataVersion", "big", {}, idsets={"samples": big, "annotations": BitMap([2**32 - 1])})
    assert graph.idset(n.id, "samples") == big
    assert graph.idset(n.id, "annotations") == BitMap([2**32 - 1])
    assert [(i, len(b)) for i, b, _ in graph.iter_idsets("samples")] == [(n.id, len(big))]
    kids = [graph.record("DataVersion", f"k{i}", {}, parents=[(n.id, "FILTER_DATA", {})]).id for i in range(30)]
    top = graph.record("DataVersion", "top", {}, parents=[(k, "MERGE_DATA", {}) for k in kids])
    lin = graph.lineage(top.id, "up")
    assert len(lin.nodes) == 32 and len(lin.edges) == 60
    assert len(graph.lineage(n.id, "down", hops=0).nodes) == 1
    assert len(graph.edges_of([n.id, *kids[:5]])) == 5
    e = graph.add_edge(kids[0], kids[1], "RELATED", {"w": 1})
    assert e.props == {"w": 1} and graph.get(kids[1]).parents == (n.id, kids[0])
    with pytest.raises(NotFound):
        graph.add_edge(kids[0], 2**40, "RELATED")


# --- end to end: a repository whose graph is PostgreSQL -------------------------------------------


def test_repository_on_postgres_end_to_end(pg, tmp_path, driving_small):
    url = pg.create_database()
    repo = veml.init(tmp_path / "repo", metadata_url=url)
    day = repo.data.import_("coco", driving_small, "day", images=images_dir(driving_small))
    peds = repo.data.filter("day", "category = 'pedestrian'", "peds")
    big = repo.data.filter("day", "area > 40", "big")
    both = repo.data.merge(["peds", "big"], "both")
    assert 0 < len(repo.data.ids(peds)) <= len(repo.data.ids(day))
    assert repo.data.ids(both) == repo.data.ids(peds) | repo.data.ids(big)
    repo.data.tag("both", "release")
    repo.close()

    again = veml.open(tmp_path / "repo")
    assert again.config["metadata_url"] == url
    assert again.get("release").name == "both"
    lin = again.lineage.query("both", "up")
    assert {n.name for n in lin.nodes} == {"day", "peds", "big", "both"} and len(lin.edges) == 4
    assert {n.name for n in again.lineage.query("day", "down", hops=1).nodes} == {"day", "peds", "big"}
    report = again.verify()
    assert report.ok, report.problems
    assert report.versions == 4
    again.close()
    assert not (tmp_path / "repo" / ".veml" / "meta.db").exists()  # nothing went to SQLite


def test_open_runs_and_an_append_only_while_the_judged_event_is_latest(graph):
    """What the reaper at every open reads, and its guard: a run resumed meanwhile is not marked failed."""
    silent = graph.record("TrainingVersion", "silent", {"started_by": {"pid": 1}})
    run = graph.record("TrainingVersion", "run", {})
    done = graph.record("TrainingVersion", "done", {})
    graph.append_event(run.id, "running", {"pid": 7})
    graph.append_event(done.id, "running")
    graph.append_event(done.id, "finished")
    running, no_event = graph.open_runs()
    assert set(running) == {run.id} and running[run.id][1]["pid"] == 7 and [n.name for n in no_event] == ["silent"]
    judged = running[run.id][0]
    graph.append_event(run.id, "running", {"pid": 8})  # resumed by another process meanwhile
    assert graph.append_event(run.id, "failed", {}, if_latest=judged) is False
    assert graph.append_event(run.id, "failed", {}, if_latest=graph.open_runs()[0][run.id][0]) is True
    assert graph.append_event(silent.id, "failed", {}, if_latest=0) is True
    assert graph.append_event(silent.id, "failed", {}, if_latest=0) is False  # a second reaper: nothing more
    assert graph.open_runs() == ({}, [])
