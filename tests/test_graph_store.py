"""The SQL version graph: atomic records, resolution, lineage walks, exports, allocation."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import veml
from conftest import images_dir
from veml.errors import Conflict, InvalidInput, NotFound
from veml.store.idsets import BitMap, digest, from_array, runs
from veml.store.sql_graph import SqlGraphStore
from veml.versions.lineage import to_cypher, to_dot


@pytest.fixture
def graph(tmp_path):
    g = SqlGraphStore(f"sqlite:///{tmp_path / 'g.db'}")
    yield g
    g.close()


def _chain(g, n, prefix="n"):
    ids = []
    for i in range(n):
        parents = [(ids[-1], "FILTER_DATA", {"where": f"x > {i}"})] if ids else []
        ids.append(g.record("DataVersion", f"{prefix}{i}", {"i": i}, parents=parents).id)
    return ids


def test_record_is_atomic_on_conflict(graph):
    graph.record("DataVersion", "a", {}, idsets={"samples": BitMap([1, 2, 3])})
    with pytest.raises(Conflict):
        graph.record("DataVersion", "a", {}, idsets={"samples": BitMap([4])})
    assert graph.count() == 1
    with pytest.raises(InvalidInput):
        graph.record("DataVersion", "123", {})
    with pytest.raises(InvalidInput):
        graph.record("DataVersion", "  ", {})


def test_record_with_unknown_parent_commits_nothing(graph):
    with pytest.raises(Exception):
        graph.record("DataVersion", "orphan", {}, parents=[(999, "FILTER_DATA", {})], idsets={"samples": BitMap([1])})
    assert graph.count() == 0 and not graph.name_taken("orphan")


def test_resolve_by_id_name_tag(graph):
    a = graph.record("DataVersion", "a", {})
    m = graph.record("ModelVersion", "m", {})
    graph.tag(a.id, "gold")
    assert graph.resolve(str(a.id)).name == "a"
    assert graph.resolve("a").id == a.id
    assert graph.resolve("gold").id == a.id
    assert graph.get(a.id).tags == ("gold",)
    with pytest.raises(NotFound, match="data version"):
        graph.resolve("m", kinds=["DataVersion"])
    with pytest.raises(NotFound):
        graph.resolve("999")
    with pytest.raises(Conflict):
        graph.tag(m.id, "a")  # a tag may not shadow a name
    graph.record("DataVersion", "b", {})
    graph.tag(m.id, "x")
    assert graph.resolve("x").id == m.id
    with pytest.raises(Conflict):  # nor may a new name shadow a tag: every reference stays unambiguous
        graph.record("DataVersion", "x", {})


def test_lineage_up_down_hops(graph):
    ids = _chain(graph, 6)
    side = graph.record("DataVersion", "side", {}, parents=[(ids[2], "FILTER_DATA", {})])
    merged = graph.record("DataVersion", "merged", {}, parents=[(ids[5], "MERGE_DATA", {}), (side.id, "MERGE_DATA", {})])
    up = graph.lineage(merged.id, "up")
    assert {n.name for n in up.nodes} == {f"n{i}" for i in range(6)} | {"side", "merged"}
    assert len(up.edges) == 5 + 1 + 2
    assert {n.name for n in graph.lineage(merged.id, "up", hops=1).nodes} == {"merged", "n5", "side"}
    down = graph.lineage(ids[2], "down")
    assert {n.name for n in down.nodes} == {"n2", "n3", "n4", "n5", "side", "merged"}
    both = graph.lineage(ids[2], "both", hops=1)
    assert {n.name for n in both.nodes} == {"n1", "n2", "n3", "side"}
    assert graph.get(merged.id).parents == (ids[5], side.id)
    with pytest.raises(InvalidInput):
        graph.lineage(merged.id, "sideways")


def test_exports_dot_and_cypher(graph):
    ids = _chain(graph, 3)
    lin = graph.lineage(ids[-1], "up")
    dot = to_dot(lin)
    assert dot.startswith("digraph veml {") and dot.count("->") == 2 and 'label="FILTER_DATA"' in dot
    cy = to_cypher(lin)
    assert cy.count("MERGE (n:VemlVersion {veml_id: ") == 3 and cy.count("SET n:DataVersion, n += ") == 3
    assert "MERGE (a)-[r:FILTER_DATA]->(b) SET r += {`where`: 'x > 1'}" in cy
    assert json.loads(json.dumps(lin.to_json()))["root"] == ids[-1]


def test_idsets_round_trip_and_digest(graph):
    bm = from_array(list(range(10, 20)) + [100, 101, 5000])
    n = graph.record("DataVersion", "s", {}, idsets={"samples": bm})
    assert graph.idset(n.id, "samples") == bm
    ref = graph.idset_ref(n.id, "samples")
    assert ref.count == 13 and ref.digest == digest(bm)
    assert runs(bm) == [(10, 20), (100, 102), (5000, 5001)]
    assert graph.idset(n.id, "annotations") == BitMap()


def test_allocations_are_disjoint_and_claimed(graph):
    a1, s1 = graph.allocate("data", 100)
    a2, s2 = graph.allocate("data", 50)
    assert (s1, s2) == (0, 100)
    assert {p[0] for p in graph.pending_allocations()} == {a1, a2}
    graph.record("DataVersion", "x", {}, allocations=[a1])
    assert [p[0] for p in graph.pending_allocations()] == [a2]


def test_schema_newer_than_code_is_refused(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'g.db'}"
    SqlGraphStore(url).close()
    con = sqlite3.connect(tmp_path / "g.db")
    con.execute("UPDATE veml_meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    from veml.errors import StorageError

    with pytest.raises(StorageError, match="newer"):
        SqlGraphStore(url)


_WRITER = textwrap.dedent(
    """
    import sys, veml
    root, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repo = veml.open(root)
    for i in range(n):
        repo.data.filter("base", f"data_id % {n} = {i} OR data_id < {worker}", f"w{worker}-{i}")
    ann = sys.argv[4]
    repo.data.import_("coco", ann, f"import-{worker}", images=ann.rsplit("/", 1)[0] + "/images")
    repo.close()
    """
)


def test_concurrent_writers_lose_no_version(repo, driving_small, tmp_path):
    """Four real processes create versions at once: every one lands, names stay unique, verify passes."""
    repo.data.import_("coco", driving_small, "base", images=images_dir(driving_small))
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    n = 15
    procs = [subprocess.Popen([sys.executable, str(script), str(repo.root), str(w), str(n), str(driving_small)]) for w in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    again = veml.open(repo.root)
    names = [v.name for v in again.data.list()]
    assert len(names) == 1 + 4 * n + 4 and len(set(names)) == len(names)
    # the four concurrent imports appended to the same Lance tables: disjoint id ranges, all rows there
    imports = [again.data.ids(f"import-{w}") for w in range(4)]
    assert all(len(i) == 40 for i in imports)
    assert len(imports[0] | imports[1] | imports[2] | imports[3]) == 160
    assert again.verify().ok
    again.close()


@pytest.mark.parametrize("ref", [str(2**63), 2**70, "\u00b2", "\u0661"])  # too big for SQL; Unicode digits
def test_digit_references_sql_cannot_hold_are_just_unknown(tmp_path, ref):
    g = SqlGraphStore(f"sqlite:///{tmp_path / 'g.db'}")
    g.record("DataVersion", "v", {})
    with pytest.raises(NotFound):
        g.resolve(ref)
    g.close()


_READER = textwrap.dedent("""
    import sys
    from veml.store.sql_graph import SqlGraphStore
    g = SqlGraphStore(sys.argv[1])
    print(g.read_only, [n.name for n in g.list()], flush=True)
    sys.stdin.readline()
    print([n.name for n in g.list()], flush=True)
""")


def test_another_users_reader_sees_what_the_owner_writes_meanwhile(tmp_path_factory):
    """A reader that cannot write the SQLite file (another user) while its owner is still writing:
    opened ``mode=ro`` through the live ``-shm`` (not ``immutable``), so it sees the owner's new versions."""
    import os
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to read as another user")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    if subprocess.run([*as_nobody, "-c", "import veml"], capture_output=True).returncode != 0:
        pytest.skip(f"another user cannot import veml from {Path(veml.__file__).parent} (e.g. a checkout under a 0700 dir)")
    base = tempfile.mkdtemp(prefix="veml-shared-")  # under /tmp, which the other user can reach (pytest's tmp is 0700)
    try:
        os.chmod(base, 0o755)
        url = f"sqlite:///{base}/g.db"
        owner = SqlGraphStore(url)
        owner.record("DataVersion", "a", {})
        with owner.engine.connect() as conn:  # an empty -wal (as after a checkpoint); the owner keeps the file open
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        reader = subprocess.Popen([*as_nobody, "-c", _READER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            assert reader.stdout.readline().strip() == "True ['a']", reader.stderr.read() if reader.poll() is not None else ""
            owner.record("DataVersion", "b", {})
            out, err = reader.communicate("\n", timeout=60)
        finally:
            if reader.poll() is None:
                reader.kill()
        assert reader.returncode == 0, err
        assert out.strip() == "['a', 'b']"
        owner.close()
    finally:
        shutil.rmtree(base)


def test_the_stdlib_reader_reads_what_the_store_does(graph, tmp_path):
    """``veml data list`` on SQLite reads through sqlite3 (no SQLAlchemy): the same nodes, pages and counts."""
    from veml.store.sql_read import SqliteGraphReader

    ids = _chain(graph, 4)
    graph.tag(ids[1], "best")
    graph.record("ModelVersion", "m", {"x": [1, 2]}, parents=[(ids[0], "USES", {})])
    reader = SqliteGraphReader.open(tmp_path / "g.db")
    try:
        for kinds, limit, offset in ((None, None, 0), (["DataVersion"], None, 0), (["DataVersion"], 2, 1), (None, 1, 4)):
            assert reader.list(kinds, limit, offset) == graph.list(kinds, limit, offset)
            assert reader.count(kinds) == graph.count(kinds)
        assert reader.open_runs() == graph.open_runs() and not reader.read_only
    finally:
        reader.close()
    assert SqliteGraphReader.open(tmp_path / "missing.db") is None  # the full store creates it, not the reader
