"""Lineage at any size: all ids at once (``repo.lineage.ids``) and nodes + edges in pages
(``repo.lineage.page``, ``veml lineage --limit/--cursor/--ids-only``, ``GET /lineage/{ref}``).

A 41-node DAG with diamonds, several roots and one edge added late (from a newer node to an older
one) is walked every way and compared with ``repo.lineage.query``, which materialises the whole
answer.  The store walks small answers in SQL and large ones in memory over the whole edge table
(``veml.store.sql_graph._PROBE`` rows decide); with the threshold at 0 the small graph takes the
in-memory path, so both are checked against the same answers on every back-end the suite runs.
"""

from __future__ import annotations

import json
import re
import random

import pytest

import veml
import veml.store.sql_graph as sql_graph
from conftest import assert_failed_cleanly, ok, run_cli
from live_server import LiveServer
from veml.errors import InvalidInput, NotFound
from veml.versions.lineage import MAX_PAGE

KINDS = ("ADD_DATA", "FILTER_DATA", "MERGE_DATA", "DATA_TRAINING")


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    root = tmp_path_factory.mktemp("paging") / "repo"
    repo = veml.init(root)
    graph = repo.stores.graph
    rng = random.Random(3)
    ids: list[int] = []
    for i in range(40):
        count = 0 if i in (0, 7, 20) else rng.choice((1, 1, 2, 3))
        parents = rng.sample(ids, min(count, len(ids)))
        ids.append(graph.record("DataVersion", f"v{i:02d}", {"role": "train"},
                                [(p, rng.choice(KINDS), {"step": i}) for p in parents]).id)
    late = graph.record("DataVersion", "late-root", {"role": "train"}).id
    graph.add_edge(late, ids[3], "ADD_DATA", {"late": True})  # src > dst: a parent on a later page
    yield {"root": root, "repo": repo, "refs": [ids[0], ids[3], ids[25], ids[39], late]}
    repo.close()


def _edge(e) -> tuple:
    return e.src, e.dst, e.kind, json.dumps(dict(e.props), sort_keys=True)


def _pages(repo, ref, direction, hops, limit):
    cursor, pages = None, []
    while True:
        page = repo.lineage.page(ref, direction, hops, limit=limit, cursor=cursor)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


@pytest.mark.parametrize("probe", [None, 0], ids=["sql-walk", "in-memory-walk"])
def test_ids_and_pages_give_the_whole_answer_once(dag, monkeypatch, probe):
    if probe is not None:
        monkeypatch.setattr(sql_graph, "_PROBE", probe)
    repo = dag["repo"]
    for ref in dag["refs"]:
        for direction in ("up", "down", "both"):
            for hops in (None, 0, 2):
                full = repo.lineage.query(ref, direction, hops)
                want = [n.id for n in full.nodes]
                got = repo.lineage.ids(ref, direction, hops)
                assert (got.root, got.direction, got.ids, got.total) == (ref, direction, tuple(want), len(want))
                pages = _pages(repo, ref, direction, hops, limit=4)
                seen, edges = [], []
                for page in pages:
                    here = {n.id for n in page.nodes}
                    assert 1 <= len(page.nodes) <= 4 and page.total == len(want) and page.root == ref
                    assert all(e.src in here and e.dst in here for e in page.edges)
                    assert all(e.dst in here and e.src not in here and e.src in want for e in page.boundary_edges)
                    seen += [n.to_json() for n in page.nodes]
                    edges += [_edge(e) for e in page.edges + page.boundary_edges]
                assert seen == [n.to_json() for n in full.nodes]  # every node once, in id order, same fields
                assert sorted(edges) == sorted(_edge(e) for e in full.edges)  # every edge once
                assert len(pages) == -(-len(want) // 4)
    one_each = _pages(repo, dag["refs"][1], "up", None, 1)  # the late root (newest id) is the last page
    assert one_each[-1].nodes[0].id == dag["refs"][4] and one_each[-1].edges == one_each[-1].boundary_edges == ()
    [own] = [p for p in one_each if p.nodes[0].id == dag["refs"][1]]
    assert {"late": True} in [dict(e.props) for e in own.boundary_edges] and own.edges == ()


def test_in_memory_walk_sees_new_edges(tmp_path, monkeypatch):
    monkeypatch.setattr(sql_graph, "_PROBE", 0)
    with veml.init(tmp_path / "repo") as repo:
        graph = repo.stores.graph
        a = graph.record("DataVersion", "a", {}).id
        b = graph.record("DataVersion", "b", {}, [(a, "ADD_DATA", {})]).id
        assert repo.lineage.ids(a, "down").ids == (a, b)
        c = graph.record("DataVersion", "c", {}, [(b, "FILTER_DATA", {})]).id  # the edge table grew: read again
        assert repo.lineage.ids(a, "down").ids == (a, b, c)
        assert repo.lineage.ids(c, "up", hops=1).ids == (b, c)
        lone = graph.record("DataVersion", "lone", {}).id  # a node with no edge, newer than every edge
        assert repo.lineage.ids(lone, "both").ids == (lone,)


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE + 1, True, 2.0, "10"])
def test_api_refuses_a_bad_page_size(dag, limit):
    with pytest.raises(InvalidInput, match="page size"):
        dag["repo"].lineage.page(dag["refs"][1], limit=limit)


@pytest.mark.parametrize("cursor", ["abc", "-1", "", "1.5", " 7", "9" * 19, "\u0661\u0662", "1" * 41])
def test_api_refuses_a_bad_cursor(dag, cursor):
    with pytest.raises(InvalidInput, match="cursor"):
        dag["repo"].lineage.page(dag["refs"][1], cursor=cursor)


def test_api_refuses_unknown_versions_and_bad_walks(dag):
    repo = dag["repo"]
    for call in (repo.lineage.ids, repo.lineage.page):
        with pytest.raises(NotFound):
            call("no-such-version")
        with pytest.raises(InvalidInput, match="direction"):
            call(dag["refs"][1], "sideways")
        with pytest.raises(InvalidInput, match="hop"):
            call(dag["refs"][1], "up", -1)


def test_cli_pages_and_ids(dag):
    root, ref = dag["root"], str(dag["refs"][1])
    full = ok("lineage", ref, "--both", "--limit", str(MAX_PAGE), "--repo", root)
    assert full["next_cursor"] is None and full["total"] == len(full["nodes"]) > 5 and full["limit"] == MAX_PAGE
    assert ok("lineage", ref, "--both", "--repo", root)["limit"] == 1000  # the default page
    ids = ok("lineage", ref, "--both", "--ids-only", "--repo", root)
    assert ids == {"root": int(ref), "direction": "both", "total": full["total"], "ids": [n["id"] for n in full["nodes"]]}
    cursor, nodes, edges = None, [], []
    while True:
        page = ok("lineage", ref, "--both", "--limit", "3", *(["--cursor", cursor] if cursor else []), "--repo", root)
        assert set(page) >= {"root", "direction", "nodes", "edges", "boundary_edges", "total", "limit", "next_cursor"}
        nodes += page["nodes"]
        edges += page["edges"] + page["boundary_edges"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert nodes == full["nodes"] and sorted(map(json.dumps, edges)) == sorted(map(json.dumps, full["edges"]))
    dot = ok("lineage", ref, "--both", "--limit", "2", "--format", "dot", "--repo", root)
    assert dot["text"].startswith("digraph") and dot["total"] == full["total"] and dot["next_cursor"]
    text = run_cli("lineage", ref, "--both", "--limit", "2", "--repo", root)
    assert text.code == 0 and f"of {full['total']}; the next page: --cursor {dot['next_cursor']}" in text.err
    # DOT and Cypher pages: loaded in any order, the Cypher pages build every version and every edge once
    cursor, merged, linked, dashed = None, [], [], 0
    while True:
        more = ["--cursor", cursor] if cursor else []
        cy = ok("lineage", ref, "--both", "--limit", "2", "--format", "cypher", *more, "--repo", root)
        dt = ok("lineage", ref, "--both", "--limit", "2", "--format", "dot", *more, "--repo", root)
        page = ok("lineage", ref, "--both", "--limit", "2", *more, "--repo", root)
        dashed += dt["text"].count("style=dashed]")
        assert dt["text"].count("style=dashed]") == len(page["boundary_edges"])
        merged += [int(m) for m in re.findall(r"^MERGE \(n:VemlVersion \{veml_id: (\d+)\}\) SET n:\w+, ", cy["text"], re.M)]
        linked += [(int(a), int(b), k) for a, b, k in re.findall(
            r"^MERGE \(a:VemlVersion \{veml_id: (\d+)\}\) MERGE \(b:VemlVersion \{veml_id: (\d+)\}\) MERGE \(a\)-\[r:(\w+)\]", cy["text"], re.M)]
        cursor = cy["next_cursor"]
        if cursor is None:
            break
    assert sorted(merged) == sorted(n["id"] for n in full["nodes"]) and dashed > 0
    assert sorted(linked) == sorted((e["src"], e["dst"], e["kind"]) for e in full["edges"])
    listed = run_cli("lineage", ref, "--both", "--ids-only", "--repo", root)
    assert listed.out.split() == [str(i) for i in ids["ids"]]


@pytest.mark.parametrize("args,needle", [
    (["--limit", "0"], "--limit"), (["--limit", "-5"], "--limit"), (["--limit", str(MAX_PAGE + 1)], "--limit"),
    (["--limit", "many"], "--limit"), (["--cursor", "abc"], "--cursor"), (["--cursor", "-1"], "--cursor"),
    (["--ids-only", "--format", "dot"], "not allowed with"),
], ids=["zero", "negative", "huge", "word", "garbage-cursor", "negative-cursor", "ids-and-format"])
def test_cli_bad_paging_is_a_usage_error(dag, args, needle):
    res = run_cli("lineage", str(dag["refs"][1]), *args, "--json", "--repo", dag["root"])
    assert res.code == 2 and res.out == "" and res.err.startswith("usage: veml"), res
    assert needle in res.err.splitlines()[-1] and "Traceback" not in res.err


def test_cli_bad_lineage_requests_fail_cleanly(dag):
    root = dag["root"]
    assert_failed_cleanly(run_cli("lineage", "no-such-version", "--limit", "5", "--json", "--repo", root), "no-such-version")
    assert_failed_cleanly(run_cli("lineage", "no-such-version", "--ids-only", "--json", "--repo", root), "no-such-version")
    assert_failed_cleanly(run_cli("lineage", str(dag["refs"][1]), "--ids-only", "--limit", "5", "--json", "--repo", root),
                          "--ids-only")


def test_server_pages_like_the_cli(dag):
    root, ref = dag["root"], dag["refs"][1]
    srv = LiveServer(root)
    try:
        api = srv.http
        first = api.get(f"/lineage/{ref}", params={"direction": "both", "limit": 3})
        assert first.status_code == 200 and first.json() == ok("lineage", ref, "--both", "--limit", "3", "--repo", root)
        cursor, nodes = None, []
        while True:
            page = api.get(f"/lineage/{ref}", params={"direction": "both", "limit": 3, **({"cursor": cursor} if cursor else {})}).json()
            nodes += [n["id"] for n in page["nodes"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        ids = api.get(f"/lineage/{ref}/ids", params={"direction": "both"}).json()
        assert ids == ok("lineage", ref, "--both", "--ids-only", "--repo", root) and ids["ids"] == nodes
        assert api.get(f"/lineage/{ref}").json()["limit"] == 1000
        for params, status in (({"limit": 0}, 422), ({"limit": MAX_PAGE + 1}, 422), ({"limit": -1}, 422),
                               ({"cursor": "abc"}, 400), ({"cursor": "-4"}, 400), ({"cursor": "1" * 41}, 422)):
            bad = api.get(f"/lineage/{ref}", params=params)
            assert bad.status_code == status and "error" in bad.json(), (params, bad.text)
        assert api.get("/lineage/no-such-version", params={"limit": 5}).status_code == 404
        assert api.get("/lineage/no-such-version/ids").status_code == 404
        assert api.get(f"/lineage/{ref}/ids", params={"hops": -1}).status_code == 422
    finally:
        srv.stop()
