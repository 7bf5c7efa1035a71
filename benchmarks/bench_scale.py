#!/usr/bin/env python
"""Scale figures (issue 7): a repository of 1,000,000 small generated images and 10,000 versions.

What it does, in this order, through VeML's public Python API (the code the CLI runs):

1. **import**: ``--samples`` 16x16 PNG images (10 classes, one sub-folder each) are generated in
   batches of ``--batch`` into a scratch folder, each batch imported with
   ``repo.data.import_("images", …)`` (one version per batch, as data arriving day by day) and
   the scratch folder deleted.  Generation and import are timed apart; import is what is reported.
2. **versions**: one merge of every batch (the whole set), ``--filters`` filters (``category = 'cK'``
   on a batch, a few on the whole set), then merges of random earlier versions until the
   repository holds ``--versions`` data versions.  Each operation is timed.
3. **checkout** of two 100k-sample versions: one import batch (one contiguous id range) and a
   filter of the whole set (ids scattered over every batch): reading the encoded payloads
   (``samples_table()``) and decoding every image to one uint8 array (``to_numpy()``).
4. **lineage** latency on SQLite, ``--queries`` random versions, up and down, all hops.
5. **PostgreSQL** (``--pg``): a private PostgreSQL 15 cluster is started on loopback
   (tests/pg_cluster.py), the graph tables are copied into it unchanged, and a second repository
   whose ``metadata_url`` is that database and whose ``storage_url`` is the first repository's
   Lance folder runs the same lineage queries plus ``--pg-ops`` merges and filters, so SQLite and
   PostgreSQL are compared on the same graph and the same samples.
6. **disk**: Lance folder, SQLite file, PostgreSQL database size; bytes per sample and per version.
7. **projection** to 100M samples from the measured per-sample and per-version costs.

    .venv/bin/python benchmarks/bench_scale.py --pg                     # the full figure (~1 h on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --samples 20000 --batch 5000 --versions 300 --pg   # smoke

Results: ``OUT/scale.json`` and ``OUT/scale.md`` (also printed).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, human_bytes, machine_info, median, percentile, tree_bytes  # noqa: E402

import veml  # noqa: E402

CLASSES = [f"c{k}" for k in range(10)]


def write_batch(folder: Path, start: int, n: int, seed: int) -> float:
    """``n`` 16x16 PNGs: a class colour, a gradient and noise, so each file is distinct and small."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (folder / c).mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 60, 16, dtype=np.float32)[None, :, None]
    for i in range(start, start + n):
        k = i % len(CLASSES)
        base = np.array([25 * k, 255 - 25 * k, (80 * k) % 256], np.float32)[None, None, :]
        img = np.clip(base + ramp + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        (folder / CLASSES[k] / f"s{i:08d}.png").write_bytes(buf.getvalue())
    return time.perf_counter() - t0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median_ms": 1e3 * median(xs), "p95_ms": 1e3 * percentile(xs, 95),
            "max_ms": 1e3 * max(xs), "total_s": sum(xs)}


def lineage_latency(repo, ids: list[int]) -> dict[str, dict[str, float]]:
    out = {}
    for direction in ("up", "down"):
        repo.lineage.query(ids[0], direction)  # warm-up
        times, sizes = [], []
        for i in ids:
            dt, lin = timed(lambda: repo.lineage.query(i, direction))
            times.append(dt)
            sizes.append(len(lin.nodes))
        out[direction] = {**stats(times), "median_nodes": median(sizes), "max_nodes": max(sizes)}
    return out


def build(args, repo_dir: Path, log) -> dict[str, Any]:
    res: dict[str, Any] = {}
    repo = veml.init(repo_dir)
    scratch = Path(tempfile.mkdtemp(prefix="veml-scale-", dir=args.scratch))
    gen_s, imp = 0.0, []
    batches = []
    try:
        for b, start in enumerate(range(0, args.samples, args.batch)):
            n = min(args.batch, args.samples - start)
            folder = scratch / f"b{b}"
            gen_s += write_batch(folder, start, n, seed=b)
            dt, node = timed(lambda: repo.data.import_("images", folder, name=f"batch-{b:03d}"))
            imp.append(dt)
            batches.append(node)
            shutil.rmtree(folder)
            log(f"import batch {b}: {n} images in {dt:.1f} s ({n / dt:,.0f}/s)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res["import"] = {"samples": args.samples, "batches": len(batches), "seconds": sum(imp),
                     "samples_per_s": args.samples / sum(imp), "per_batch_s": imp, "generate_s": gen_s}

    names = [b.name for b in batches]
    ops: dict[str, list[float]] = {"merge_all": [], "filter_batch": [], "filter_all": [], "merge": []}
    if len(batches) > 1:
        dt, whole = timed(lambda: repo.data.merge(names, name="all"))
    else:
        whole = batches[0]
        dt = 0.0
    ops["merge_all"].append(dt)
    rng = random.Random(7)
    versions = [whole.name, *names]
    n_all = max(1, args.filters // 20)
    for f in range(args.filters):
        on_all = f < n_all
        base = whole.name if on_all else rng.choice(names)
        cls = CLASSES[f % len(CLASSES)]
        dt, node = timed(lambda: repo.data.filter(base, f"category = '{cls}'", name=f"f{f:05d}"))
        ops["filter_all" if on_all else "filter_batch"].append(dt)
        versions.append(node.name)
    log(f"{args.filters} filters: median {1e3 * median(ops['filter_batch']):.0f} ms on a batch, "
        f"{1e3 * median(ops['filter_all']):.0f} ms on the whole set")
    total = len(versions)
    m = 0
    while total < args.versions:
        a, b = rng.sample(versions, 2)
        dt, node = timed(lambda: repo.data.merge([a, b], name=f"m{m:05d}"))
        ops["merge"].append(dt)
        versions.append(node.name)
        total += 1
        m += 1
        if m % 1000 == 0:
            log(f"{total} versions (merge median {1e3 * median(ops['merge'][-1000:]):.1f} ms)")
    res["versions"] = {"data_versions": repo.stores.graph.count(["DataVersion"]),
                       **{k: stats(v) for k, v in ops.items() if v}}

    # checkout: one contiguous batch, and a filter of the whole set (scattered ids)
    scattered = next(v for v in versions if v.startswith("f")) if n_all else versions[-1]
    res["checkout"] = {}
    for label, ref in (("contiguous", batches[min(3, len(batches) - 1)].name), ("scattered", scattered)):
        view = repo.data.checkout(ref)
        dt_read, table = timed(view.samples_table)
        view = repo.data.checkout(ref)
        dt_np, arr = timed(view.to_numpy)
        res["checkout"][label] = {"version": ref, "samples": len(view), "read_payloads_s": dt_read,
                                  "decode_to_numpy_s": dt_np, "array_shape": list(arr.shape),
                                  "payload_bytes": int(table["payload"].nbytes) if "payload" in table.column_names else None}
        log(f"checkout {label} {ref}: {len(view)} samples, read {dt_read:.2f} s, decoded {dt_np:.2f} s")

    ids = [n.id for n in repo.stores.graph.list(["DataVersion"])]
    res["query_ids"] = random.Random(11).sample(ids, min(args.queries, len(ids)))
    res["lineage_sqlite"] = lineage_latency(repo, res["query_ids"])
    sqlite_files = [repo.dir / f for f in ("meta.db", "meta.db-wal", "meta.db-shm")]
    res["disk"] = {"lance": tree_bytes(repo.dir / "data")["disk"],
                   "sqlite": sum(f.stat().st_blocks * 512 for f in sqlite_files if f.exists())}
    repo.close()
    return res


def postgres(args, repo_dir: Path, res: dict[str, Any], log) -> dict[str, Any]:
    """Copy the graph into a private PostgreSQL, then time the same queries and some writes there."""
    import sqlalchemy as sa

    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import pg_cluster

    from veml.store.sql_graph import metadata

    out: dict[str, Any] = {}
    with pg_cluster() as cluster:
        url = cluster.create_database("scale")
        pg_repo_dir = repo_dir.parent / "pg-repo"
        (pg_repo_dir / ".veml").mkdir(parents=True)
        (pg_repo_dir / ".veml" / "config.toml").write_text(
            f'metadata_url = "{url}"\nstorage_url = "{repo_dir / ".veml" / "data"}"\n'
            f'artifacts_url = "{repo_dir / ".veml" / "artifacts"}"\nembeddings_url = "{repo_dir / ".veml" / "embeddings"}"\n')
        veml.open(pg_repo_dir).close()  # creates the schema at head
        src = sa.create_engine(f"sqlite:///{repo_dir / '.veml' / 'meta.db'}")
        dst = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        t0 = time.perf_counter()
        with src.connect() as s, dst.begin() as d:
            for table in metadata.sorted_tables:
                if table.name == "veml_meta":
                    continue
                d.execute(table.delete())
                rows = [dict(r._mapping) for r in s.execute(sa.select(table))]
                for i in range(0, len(rows), 5000):
                    d.execute(table.insert(), rows[i:i + 5000])
                if "id" in table.c:
                    d.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                      f"(SELECT COALESCE(MAX(id), 1) FROM {table.name}))")
            d.exec_driver_sql("ANALYZE")
        out["copy_s"] = time.perf_counter() - t0
        log(f"graph copied to PostgreSQL in {out['copy_s']:.1f} s")
        with veml.open(pg_repo_dir) as repo:
            out["lineage"] = lineage_latency(repo, res["query_ids"])
            out["versions"] = write_ops(repo, args.pg_ops, "pg")
        with dst.connect() as d:
            out["database_bytes"] = int(d.exec_driver_sql("SELECT pg_database_size('scale')").scalar_one())
        src.dispose()
        dst.dispose()
    return out


def write_ops(repo, n_ops: int, prefix: str) -> dict[str, Any]:
    """``n_ops`` merges of two random versions and ``n_ops // 20`` filters of an import batch, seeded
    alike, so SQLite and PostgreSQL time the same writes."""
    rng = random.Random(13)
    names = [n.name for n in repo.stores.graph.list(["DataVersion"])]
    batches = [n for n in names if n.startswith("batch-")]
    ops: dict[str, list[float]] = {"merge": [], "filter_batch": []}
    for i in range(n_ops):
        a, b = rng.sample(names, 2)
        ops["merge"].append(timed(lambda: repo.data.merge([a, b], name=f"{prefix}-m{i}"))[0])
    for i in range(max(1, n_ops // 20)):
        base = rng.choice(batches)
        ops["filter_batch"].append(timed(lambda: repo.data.filter(base, f"category = '{CLASSES[i % 10]}'", name=f"{prefix}-f{i}"))[0])
    return {k: stats(v) for k, v in ops.items()}


def project(res: dict[str, Any], target: int = 100_000_000) -> dict[str, Any]:
    """Linear projection from measured per-sample and per-version costs (see the markdown for the assumptions)."""
    n = res["import"]["samples"]
    v = res["versions"]["data_versions"]
    per_sample_s = res["import"]["seconds"] / n
    lance_per_sample = res["disk"]["lance"] / n
    meta_per_version = res["disk"]["sqlite"] / v
    return {
        "samples": target,
        "import_core_hours": per_sample_s * target / 3600,
        "import_hours_on_32_workers": per_sample_s * target / 3600 / 32,
        "lance_bytes": lance_per_sample * target,
        "metadata_bytes_per_version": meta_per_version,
        "checkout_100k_s": res["checkout"]["contiguous"]["read_payloads_s"],
    }


def markdown(res: dict[str, Any]) -> str:
    imp, ver, chk = res["import"], res["versions"], res["checkout"]
    lines = [f"Scale run: {imp['samples']:,} samples in {imp['batches']} imports, {ver['data_versions']:,} data versions "
             f"(load avg at start {res['machine'].get('loadavg', '?')}).", "",
             "| operation | figure |", "|---|---|",
             f"| import (image folder, PNG 16x16) | {imp['seconds']:.0f} s in all, {imp['samples_per_s']:,.0f} samples/s |"]
    for key, label in (("merge_all", "merge of every batch (whole set)"), ("filter_batch", f"filter of one import batch ({imp['samples'] // imp['batches']:,} samples)"),
                       ("filter_all", "filter of the whole set"), ("merge", "merge of two versions")):
        if key in ver:
            s = ver[key]
            lines.append(f"| {label} (n={s['n']}) | median {s['median_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms |")
    for label, c in chk.items():
        lines.append(f"| checkout {c['samples']:,} samples, {label} ids | read {c['read_payloads_s']:.2f} s, "
                     f"decode to numpy {c['decode_to_numpy_s']:.2f} s |")
    for backend, key in (("SQLite", "lineage_sqlite"), ("PostgreSQL", "pg_lineage")):
        if key in res:
            for d, s in res[key].items():
                lines.append(f"| lineage {d}, all hops, {backend} (n={s['n']}, median {s['median_nodes']:.0f} nodes, max {s['max_nodes']}) "
                             f"| median {s['median_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms |")
    if "pg" in res:
        for backend, ops in (("SQLite", res["sqlite_ops"]), ("PostgreSQL", res["pg"]["versions"])):
            for k, s in ops.items():
                lines.append(f"| {k.replace('_', ' ')} on {backend} (n={s['n']}) | median {s['median_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms |")
    d = res["disk"]
    lines.append(f"| disk: Lance samples | {human_bytes(d['lance'])} ({d['lance'] / imp['samples']:.0f} B/sample) |")
    lines.append(f"| disk: SQLite graph | {human_bytes(d['sqlite'])} ({d['sqlite'] / ver['data_versions']:,.0f} B/version) |")
    if "pg" in res:
        lines.append(f"| disk: PostgreSQL graph | {human_bytes(res['pg']['database_bytes'])} |")
    p = res["projection"]
    lines += ["", f"Projection to {p['samples']:,} samples: import {p['import_core_hours']:,.0f} core-hours "
              f"({p['import_hours_on_32_workers']:,.1f} h on 32 import workers), Lance {human_bytes(p['lance_bytes'])}, "
              f"metadata {p['metadata_bytes_per_version']:,.0f} B per version."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--filters", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--pg", action="store_true", help="also PostgreSQL (private cluster on loopback)")
    ap.add_argument("--pg-ops", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "scale")
    ap.add_argument("--scratch", default=None, help="where generated images are written before import")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="veml-scale-repo-", dir=args.scratch))

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    try:
        res: dict[str, Any] = {"machine": {**machine_info(), "loadavg": os.getloadavg()[0]}, "args": {k: str(v) for k, v in vars(args).items()}}
        res.update(build(args, work / "repo", log))
        if args.pg:  # copied before the SQLite-side writes, so both back-ends answer on the same graph
            pg = postgres(args, work / "repo", res, log)
            res["pg"] = pg
            res["pg_lineage"] = pg["lineage"]
            with veml.open(work / "repo") as repo:
                res["sqlite_ops"] = write_ops(repo, args.pg_ops, "sq")
        res["projection"] = project(res)
        (args.out / "scale.json").write_text(json.dumps(res, indent=2, default=float))
        md = markdown(res)
        (args.out / "scale.md").write_text(md + "\n")
        print(md)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
