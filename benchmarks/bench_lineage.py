#!/usr/bin/env python
"""Lineage queries on a large version graph: ``repo.lineage.query(node, "up", hops)``.

A fresh repository's SQLite graph store is filled with a synthetic DAG by bulk inserts through
SQLAlchemy Core (``veml.store.sql_graph.nodes_t`` / ``edges_t``, ``executemany`` in large
batches): node i gets 1 or 2 parents drawn from the ``--window`` nodes before it, plus, with
probability ``--p-long``, one long-range parent drawn from all earlier nodes; a few nodes
(``--p-root``) start new lineages with no parent.  Then ~200 random nodes are queried through the
public API, with ``hops=10`` and with ``hops=None`` (all ancestors).

All-ancestors queries that run past ``--timeout`` seconds are interrupted (an SQLite progress
handler installed on the store's engine by this script) and reported as such.  As a diagnostic,
the size of each true ancestor set is also computed with a plain id-only recursive CTE run
directly on the database file (not VeML's API) so that "the answer is huge" and "the query is
slow" can be told apart.

    .venv/bin/python benchmarks/bench_lineage.py                  # 1,000,000 nodes
    .venv/bin/python benchmarks/bench_lineage.py --quick          # 20,000 nodes smoke run
    .venv/bin/python benchmarks/bench_lineage.py --reuse --paging-only --postgres   # ids and pages only

The faces' paths are timed on the same nodes (``--paging-only`` times nothing else):
``repo.lineage.ids(node, "up")`` (every ancestor id) and ``repo.lineage.page(node, "up",
limit=--page-limit)`` (the first page, and the page starting at the middle of the answer), each
on a freshly opened repository ("cold": what one ``veml lineage`` process pays, the edge table
read included) and on one repository kept open ("warm": what a server pays).  Beside them the
other strategy for the walk: the id-only recursive CTE through the same SQLAlchemy engine, every
id fetched.  ``--postgres`` repeats this on a private PostgreSQL cluster (``tests/pg_cluster.py``)
holding a copy of the graph (``COPY`` from the SQLite file, then ``VACUUM ANALYZE``).

Results: ``OUT/lineage.json`` and ``OUT/lineage.md`` (also printed).  Warm cache: the graph is
queried right after it is built, and one warm-up query of each kind runs first.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, publish, machine_info, machine_line, md_table, median, ms, percentile, tree_bytes, verdict, write_json  # noqa: E402

import veml  # noqa: E402
from veml.store.sql_graph import edges_t, nodes_t  # noqa: E402

KINDS = [("DataVersion", 0.45), ("ModelVersion", 0.05), ("TrainingVersion", 0.2), ("InferenceVersion", 0.1),
         ("PredictionVersion", 0.1), ("CoreSet", 0.05), ("DriftReport", 0.05)]
EDGE_KINDS = ["FILTER_DATA", "MERGE_DATA", "ADD_DATA", "DATA_TRAINING", "MODEL_TRAINING", "DEPLOY", "PREDICT_ON", "CORESET_OF"]
BATCH = 100_000

_IDS_ONLY = """
WITH RECURSIVE walk(id) AS (SELECT ? UNION SELECT e.src FROM edges e JOIN walk w ON e.dst = w.id)
SELECT count(*) - 1 FROM walk
"""
_WITH_DEPTH = """
WITH RECURSIVE walk(id, depth) AS (
    SELECT ?, 0 UNION SELECT e.src, w.depth + 1 FROM edges e JOIN walk w ON e.dst = w.id WHERE w.depth < 1000000
) SELECT count(*), count(DISTINCT id) - 1 FROM walk
"""
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def build_graph(root: Path, n: int, window: int, p_two: float, p_long: float, p_root: float, seed: int) -> dict[str, Any]:
    import shutil

    if root.exists():
        shutil.rmtree(root)
    repo = veml.init(root)
    engine = repo.stores.graph.engine
    rng = np.random.default_rng(seed)
    kinds = [k for k, _ in KINDS]
    kind_idx = rng.choice(len(kinds), size=n, p=[w for _, w in KINDS])
    t0 = time.perf_counter()
    n_edges = 0
    base_time = time.time() - n
    for lo in range(1, n + 1, BATCH):
        hi = min(n, lo + BATCH - 1)
        ids = np.arange(lo, hi + 1)
        rows = [{"id": int(i), "kind": kinds[kind_idx[i - 1]], "name": f"n{i}", "created_at": base_time + float(i),
                 "props": json.dumps({"samples": int(i % 50_000), "role": "train"})} for i in ids]
        # parents: one or two among the `window` previous nodes, maybe one long-range, none for roots
        m = len(ids)
        span = np.minimum(ids - 1, window)
        first = ids - 1 - (rng.random(m) * span).astype(np.int64)
        second = ids - 1 - (rng.random(m) * span).astype(np.int64)
        two = rng.random(m) < p_two
        longr = (rng.random(m) * (ids - 1)).astype(np.int64) + 1
        has_long = rng.random(m) < p_long
        root_mask = (rng.random(m) < p_root) | (ids == 1)
        ekind = rng.integers(0, len(EDGE_KINDS), size=(m, 3))
        edges = []
        for j, i in enumerate(ids.tolist()):
            if root_mask[j]:
                continue
            ps = {int(first[j])}
            if two[j]:
                ps.add(int(second[j]))
            if has_long[j]:
                ps.add(int(longr[j]))
            for c, p in enumerate(sorted(ps)):
                edges.append({"src": p, "dst": i, "kind": EDGE_KINDS[ekind[j, c]], "props": "{}"})
        with engine.begin() as conn:
            conn.execute(nodes_t.insert(), rows)
            conn.execute(edges_t.insert(), edges)
        n_edges += len(edges)
        log(f"inserted nodes {lo:,}..{hi:,} ({n_edges:,} edges so far)")
    build_s = time.perf_counter() - t0
    repo.close()
    con = sqlite3.connect(root / ".veml" / "meta.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return {"nodes": n, "edges": n_edges, "build_s": build_s, "rows_per_s": (n + n_edges) / build_s,
            "db_bytes": tree_bytes(root / ".veml")["apparent"]}


class Deadline:
    """An SQLite progress handler on every connection of an engine: interrupts past the deadline."""

    def __init__(self, engine: sa.Engine) -> None:
        self.t: float | None = None
        event.listen(engine, "connect", self._on_connect)
        engine.dispose()  # pooled connections predate the listener

    def _on_connect(self, dbapi_conn, _record) -> None:
        dbapi_conn.set_progress_handler(self._check, 10_000)

    def _check(self) -> int:
        return 1 if self.t is not None and time.perf_counter() > self.t else 0


def time_queries(repo, nodes: Sequence[int], hops: int | None, timeout: float | None,
                 deadline: Deadline | None) -> list[dict[str, Any]]:
    out = []
    for k, nid in enumerate(nodes):
        if deadline is not None:
            deadline.t = time.perf_counter() + timeout if timeout else None
        t0 = time.perf_counter()
        try:
            lin = repo.lineage.query(int(nid), "up", hops=hops)
            out.append({"node": int(nid), "s": time.perf_counter() - t0, "ancestors": len(lin.nodes) - 1,
                        "edges": len(lin.edges), "timeout": False})
        except sa.exc.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            out.append({"node": int(nid), "s": time.perf_counter() - t0, "ancestors": None, "edges": None, "timeout": True})
        finally:
            if deadline is not None:
                deadline.t = None
        if hops is None and (k + 1) % 25 == 0:
            done = [r for r in out if not r["timeout"]]
            log(f"all-ancestors: {k + 1}/{len(nodes)} queried, {len(out) - len(done)} ran past {timeout}s")
    return out


def raw_sql(db: Path, sql: str, node: int, timeout: float) -> tuple[float, tuple | None]:
    con = sqlite3.connect(db)
    deadline = time.perf_counter() + timeout
    con.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 10_000)
    t0 = time.perf_counter()
    try:
        row = con.execute(sql, (node,)).fetchone()
        return time.perf_counter() - t0, row
    except sqlite3.OperationalError as exc:
        if "interrupted" not in str(exc):
            raise
        return time.perf_counter() - t0, None
    finally:
        con.close()


_CTE_IDS = sa.text("WITH RECURSIVE walk(id) AS (SELECT CAST(:root AS BIGINT) UNION "
                   "SELECT e.src FROM edges e JOIN walk w ON e.dst = w.id) SELECT id FROM walk")
FAST_COLUMNS = [("ids_cold_s", "`repo.lineage.ids(node, \"up\")`, fresh repository (one CLI call)"),
                ("ids_warm_s", "`repo.lineage.ids(node, \"up\")`, repository kept open (a server)"),
                ("page_cold_s", "first page, fresh repository"),
                ("page_warm_s", "first page, repository kept open"),
                ("page_mid_warm_s", "page at the middle of the answer, repository kept open"),
                ("cte_s", "the other strategy: id-only recursive CTE, every id fetched (SQLAlchemy)")]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_fast_paths(open_repo, nodes: Sequence[int], warm_node: int, limit: int, label: str) -> list[dict[str, Any]]:
    """ids and pages, cold (a repository opened for the call) and warm (one kept open), plus the CTE."""
    warm = open_repo()
    warm.lineage.ids(warm_node, "up")  # reads the edge table once
    rows = []
    for k, nid in enumerate(nodes):
        row: dict[str, Any] = {"node": int(nid)}
        with open_repo() as r:
            row["ids_cold_s"], found = _timed(lambda: r.lineage.ids(int(nid), "up"))
        with open_repo() as r:
            row["page_cold_s"], first = _timed(lambda: r.lineage.page(int(nid), "up", limit=limit))
        row["ids_warm_s"], again = _timed(lambda: warm.lineage.ids(int(nid), "up"))
        row["page_warm_s"], _ = _timed(lambda: warm.lineage.page(int(nid), "up", limit=limit))
        middle = str(found.ids[len(found.ids) // 2])
        row["page_mid_warm_s"], mid = _timed(lambda: warm.lineage.page(int(nid), "up", limit=limit, cursor=middle))
        with warm.stores.graph.engine.connect() as conn:
            row["cte_s"], cte = _timed(lambda: conn.execute(_CTE_IDS, {"root": int(nid)}).all())
        assert found.ids == again.ids and len(cte) == found.total and first.total == mid.total == found.total
        row.update(ancestors=found.total - 1, page_nodes=len(first.nodes), page_edges=len(first.edges),
                   page_boundary_edges=len(first.boundary_edges))
        rows.append(row)
        if (k + 1) % 10 == 0:
            log(f"{label} ids/pages: {k + 1}/{len(nodes)}; last: {row['ancestors']:,} ancestors, ids cold "
                f"{ms(row['ids_cold_s'])} ms / warm {ms(row['ids_warm_s'])} ms, CTE {ms(row['cte_s'])} ms")
    warm.close()
    return rows


def summarise_fast(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"queries": len(rows)}
    for key, _ in FAST_COLUMNS:
        xs = [r[key] for r in rows]
        out[key] = {"p50_s": median(xs), "p99_s": percentile(xs, 99), "max_s": max(xs)}
    anc = [r["ancestors"] for r in rows]
    out["ancestors"] = {"p50": median(anc), "p99": percentile(anc, 99), "max": max(anc)}
    out["page"] = {"nodes_p50": median([r["page_nodes"] for r in rows]), "edges_p50": median([r["page_edges"] for r in rows]),
                   "boundary_edges_p50": median([r["page_boundary_edges"] for r in rows])}
    return out


def postgres_copy(stack, sqlite_db: Path, root: Path) -> Path:
    """A repository whose metadata lives in a private PostgreSQL cluster, filled with the SQLite graph."""
    import shutil

    import psycopg

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pg_cluster import pg_cluster

    cluster = stack.enter_context(pg_cluster())
    url = cluster.create_database("lineage")
    if root.exists():
        shutil.rmtree(root)
    veml.init(root, metadata_url=url).close()
    src = sqlite3.connect(sqlite_db)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for table, cols in (("nodes", "id, kind, name, created_at, props"), ("edges", "id, src, dst, kind, props")):
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in src.execute(f"SELECT {cols} FROM {table}"):
                    cp.write_row(row)
        cur.execute("VACUUM ANALYZE")
    src.close()
    log(f"PostgreSQL copy of the graph: {time.perf_counter() - t0:.0f} s")
    return root


def summarise(rows: list[dict[str, Any]], timeout: float | None) -> dict[str, Any]:
    done = [r for r in rows if not r["timeout"]]
    times = [r["s"] for r in rows]  # timed-out queries count at the time they were stopped (a lower bound)
    anc = [r["ancestors"] for r in done]
    return {"queries": len(rows), "completed": len(done), "timeouts": len(rows) - len(done),
            "p50_s": median(times), "p99_s": percentile(times, 99), "max_s": max(times),
            "p50_completed_s": median([r["s"] for r in done]) if done else None,
            "ancestors_p50": median(anc) if anc else None, "ancestors_p99": percentile(anc, 99) if anc else None,
            "ancestors_max": max(anc) if anc else None, "timeout_s": timeout}


def render(R: dict[str, Any]) -> str:
    g, a = R["graph"], R["args"]
    lines = [f"Machine: {machine_line(R['machine'])}. Warm cache (graph queried right after the build; one warm-up query per kind). "
             + load_line(R["load"], R["machine"]["nproc"]),
             f"Graph: {g['nodes']:,} nodes, {g['edges']:,} edges (1–2 parents among the previous {a['window']} nodes, "
             f"p(two parents) = {a['p_two']}, p(long-range parent) = {a['p_long']}, p(new root) = {a['p_root']}); "
             f"bulk insert {g['build_s']:.0f} s ({g['rows_per_s']:,.0f} rows/s); meta.db {g['db_bytes'] / 2**20:,.0f} MiB.",
             ""]
    fast = [(name, R[key]) for name, key in (("SQLite", "fast_sqlite"), ("PostgreSQL", "fast_postgres")) if key in R]
    if fast:
        lim = a["page_limit"]
        lines.append(f"**All ancestors as ids, and in pages of {lim:,}** (`{a['queries']}` random nodes, direction `up`, no hop "
                     "limit; a fresh repository is opened for each cold call, its opening not timed):\n")
        frows = []
        for name, f in fast:
            for key, label in FAST_COLUMNS:
                frows.append([name, label, ms(f[key]["p50_s"]), ms(f[key]["p99_s"]), ms(f[key]["max_s"])])
        lines.append(md_table(["back-end", "call", "p50 ms", "p99 ms", "max ms"], frows))
        f = fast[0][1]
        lines.append(f"\nAncestors per node p50 / p99 / max: {f['ancestors']['p50']:,.0f} / {f['ancestors']['p99']:,.0f} / "
                     f"{f['ancestors']['max']:,}; a first page held {f['page']['nodes_p50']:,.0f} versions, "
                     f"{f['page']['edges_p50']:,.0f} edges within it and {f['page']['boundary_edges_p50']:,.0f} from other pages (p50).")
        for name, f in fast:
            worst = max(f["ids_cold_s"]["p99_s"], f["ids_warm_s"]["p99_s"])
            lines.append(f"Target every ancestor id in ≤ 1 s ({name}): {verdict(worst <= 1.0)} (p99 cold "
                         f"{ms(f['ids_cold_s']['p99_s'])} ms, warm {ms(f['ids_warm_s']['p99_s'])} ms).")
        lines.append("")
    if "hops10" not in R:
        return "\n".join(lines) + "\n"
    rows = []
    for label, key in (("`hops=10`", "hops10"), (f"`hops=None` (all ancestors; stopped after {a['timeout']} s; answer sizes of the completed ones)", "all")):
        s = R[key]
        p50 = ms(s["p50_s"])
        p99 = ms(s["p99_s"])
        if s["timeouts"]:
            p99 = f"> {a['timeout'] * 1000:,.0f} (stopped)" if s["timeouts"] > len(R[key + "_rows"]) * 0.01 else p99
            if s["timeouts"] >= s["queries"] / 2:
                p50 = f"> {a['timeout'] * 1000:,.0f} (stopped)"
        anc = (f"{s['ancestors_p50']:,.0f} / {s['ancestors_p99']:,.0f} / {s['ancestors_max']:,}" if s["completed"] else "n/a")
        rows.append([label, s["queries"], p50, p99, s["timeouts"], anc])
    d = R["ids_only"]
    rows.append([f"diagnostic: plain id-only CTE, raw SQL, count only (stopped after {a['diag_timeout']} s)", d["queries"],
                 ms(d["p50_s"]), ms(d["p99_s"]), d["timeouts"],
                 f"{d['ancestors_p50']:,.0f} / {d['ancestors_p99']:,.0f} / {d['ancestors_max']:,}" if d["completed"] else "n/a"])
    lines.append(md_table(["query (`repo.lineage.query(node, \"up\", hops)`)", "nodes queried", "p50 ms", "p99 ms",
                           "stopped", "ancestors returned p50 / p99 / max"], rows))
    h = R["hops10"]
    lines.append(f"\nTarget p50 < 20 ms: `hops=10` {verdict(h['p50_s'] < 0.020)} ({ms(h['p50_s'])} ms); "
                 f"`hops=None` {verdict(R['all']['p50_s'] < 0.020 and R['all']['timeouts'] < R['all']['queries'] / 2)}.")
    m = R.get("materialise")
    if m:
        lines.append(f"\nHanding back a big answer costs even after a cheap walk: `SqlGraphStore.edges_of()` on the id list "
                     f"took {m['edges_of_s']:.2f} s for the {m['ids']:,} ancestors of n{m['node']} "
                     f"({m['edges']:,} edges), before any node row is read.")
    ex = R["explosion"]
    if ex:
        lines += ["", "Diagnostic: a walk that carries a depth column (as VeML's unbounded walk did before it was changed to "
                  "carry ids only) lets `UNION` keep one row per (id, depth), so a node reached by paths of many lengths "
                  "is produced once per length (raw SQL on the same file):", "",
                  md_table(["root node", "rows the CTE produces", "distinct ancestors", "rows per ancestor", "ms"],
                           [[f"n{e['node']}", f"{e['rows']:,}" if e["rows"] is not None else "stopped",
                             f"{e['ancestors']:,}" if e["ancestors"] is not None else "n/a",
                             f"{e['rows'] / max(1, e['ancestors']):,.1f}" if e["rows"] is not None else "n/a",
                             ms(e["s"])] for e in ex])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=None, help="graph size (default 1,000,000; 20,000 with --quick)")
    p.add_argument("--queries", type=int, default=200, help="random nodes to query (default 200)")
    p.add_argument("--window", type=int, default=100, help="parents are drawn from this many previous nodes (default 100)")
    p.add_argument("--p-two", type=float, default=0.5, help="probability of a second recent parent (default 0.5)")
    p.add_argument("--p-long", type=float, default=0.02, help="probability of a long-range parent (default 0.02)")
    p.add_argument("--p-root", type=float, default=0.0005, help="probability that a node starts a new lineage (default 0.0005)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds before an all-ancestors query is stopped (default 2)")
    p.add_argument("--diag-timeout", type=float, default=10.0, help="seconds for each diagnostic raw-SQL query (default 10)")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run on 20,000 nodes")
    p.add_argument("--reuse", action="store_true", help="reuse OUT/lineage_repo if it was built with the same parameters")
    p.add_argument("--paging-only", action="store_true", help="time only repo.lineage.ids / page (and the CTE beside them)")
    p.add_argument("--page-limit", type=int, default=1000, help="versions per page (default 1000)")
    p.add_argument("--postgres", action="store_true", help="also time ids and pages on a private PostgreSQL copy of the graph")
    args = p.parse_args(argv)
    args.nodes = args.nodes or (20_000 if args.quick else 1_000_000)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = out / "lineage_repo"
    R: dict[str, Any] = {"args": vars(args), "machine": machine_info()}
    load = LoadSampler().__enter__()
    params = {k: getattr(args, k) for k in ("nodes", "window", "p_two", "p_long", "p_root", "seed")}
    manifest = root / "graph.json"
    if args.reuse and manifest.exists() and json.loads(manifest.read_text()).get("params") == params:
        R["graph"] = json.loads(manifest.read_text())["graph"]
        log(f"reusing the graph in {root}")
    else:
        log(f"building a graph of {args.nodes:,} nodes")
        R["graph"] = build_graph(root, args.nodes, args.window, args.p_two, args.p_long, args.p_root, args.seed)
        write_json(manifest, {"params": params, "graph": R["graph"]})
    log(f"graph: {R['graph']}")

    rng = random.Random(args.seed)
    nodes = [rng.randint(1, args.nodes) for _ in range(args.queries)]
    warm = rng.randint(1, args.nodes)
    R["fast_sqlite_rows"] = time_fast_paths(lambda: veml.open(root), nodes, warm, args.page_limit, "SQLite")
    R["fast_sqlite"] = summarise_fast(R["fast_sqlite_rows"])
    if args.postgres:
        from contextlib import ExitStack

        with ExitStack() as stack:
            pg_root = postgres_copy(stack, root / ".veml" / "meta.db", out / "lineage_pg_repo")
            R["fast_postgres_rows"] = time_fast_paths(lambda: veml.open(pg_root), nodes, warm, args.page_limit, "PostgreSQL")
            R["fast_postgres"] = summarise_fast(R["fast_postgres_rows"])
    if args.paging_only:
        load.__exit__(None, None, None)
        R["load"] = load.summary()
        publish(out, "lineage", R, render(R))
        return 0

    repo = veml.open(root)
    repo.lineage.query(warm, "up", hops=10)
    R["hops10_rows"] = time_queries(repo, nodes, 10, None, None)
    R["hops10"] = summarise(R["hops10_rows"], None)
    log(f"hops=10: p50 {ms(R['hops10']['p50_s'])} ms, p99 {ms(R['hops10']['p99_s'])} ms")

    deadline = Deadline(repo.stores.graph.engine)
    time_queries(repo, [warm], None, args.timeout, deadline)
    R["all_rows"] = time_queries(repo, nodes, None, args.timeout, deadline)
    R["all"] = summarise(R["all_rows"], args.timeout)
    log(f"hops=None: p50 {ms(R['all']['p50_s'])} ms, {R['all']['timeouts']} stopped")
    repo.close()

    db = root / ".veml" / "meta.db"
    diag = []
    for k, nid in enumerate(nodes):
        s, row = raw_sql(db, _IDS_ONLY, nid, args.diag_timeout)
        diag.append({"node": nid, "s": s, "ancestors": row[0] if row else None, "timeout": row is None})
        if (k + 1) % 50 == 0:
            log(f"diagnostic id-only CTE: {k + 1}/{len(nodes)}")
    R["ids_only_rows"] = diag
    R["ids_only"] = summarise(diag, args.diag_timeout)

    # What returning a big answer costs even once the walk is cheap: VeML's own edges_of() on the
    # ancestor ids of the median-sized diagnostic answer (lineage() calls it after the walk).
    done = sorted((d for d in diag if not d["timeout"]), key=lambda d: d["ancestors"])
    if done:
        mid = done[len(done) // 2]
        con = sqlite3.connect(db)
        ids = [r[0] for r in con.execute(_IDS_ONLY.replace("SELECT count(*) - 1 FROM walk", "SELECT id FROM walk"), (mid["node"],))]
        con.close()
        repo = veml.open(root)
        t0 = time.perf_counter()
        edges = repo.stores.graph.edges_of(ids)
        R["materialise"] = {"node": mid["node"], "ids": len(ids), "edges": len(edges), "edges_of_s": time.perf_counter() - t0}
        repo.close()
        log(f"edges_of on {len(ids):,} ids: {R['materialise']['edges_of_s']:.2f}s")

    explosion = []
    for nid in (100, 300, 1_000, 2_000, 5_000, 10_000, 30_000, 100_000):
        if nid > args.nodes:
            break
        s, row = raw_sql(db, _WITH_DEPTH, nid, args.diag_timeout)
        explosion.append({"node": nid, "s": s, "rows": row[0] if row else None, "ancestors": row[1] if row else None})
        if row is None:
            _, r2 = raw_sql(db, _IDS_ONLY, nid, args.diag_timeout)
            explosion[-1]["ancestors"] = r2[0] if r2 else None
            break
    R["explosion"] = explosion

    load.__exit__(None, None, None)
    R["load"] = load.summary()
    publish(out, "lineage", R, render(R))
    return 0


if __name__ == "__main__":
    sys.exit(main())
