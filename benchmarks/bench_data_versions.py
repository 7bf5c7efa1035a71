#!/usr/bin/env python
"""Data versions: VeML against DVC (git + DVC link cache) and Lance's own dataset versioning.

One run, one set of generated data (64x64 PNG driving scenes with boxes, generated once into
``OUT/gen``), one schedule of data versions made by import / add / filter / merge, replayed
into all three systems so that every version holds the same samples and annotations:

* VeML: ``repo.data.import_/add/filter/merge`` (the API the CLI wraps), in ``OUT/veml_repo``;
* DVC: a git repository whose ``data/`` directory (``images/`` + the version's COCO
  ``annotations.json``) is ``dvc add``-ed, committed and tagged once per version, with
  ``cache.type hardlink,symlink``, in ``OUT/dvc_repo``;
* Lance: two datasets (``samples``, ``boxes``) where dataset version k holds exactly the rows of
  data version k (restore the parent's dataset version, then delete / append), in ``OUT/lance``.

It measures import throughput, the time to create derived versions (at ~10, N and M versions),
checkout into memory, bytes per derived version, total sizes, and checkout of version 1 with 10
versus M versions.  Results go to ``OUT/data_versions.json`` and ``OUT/data_versions.md``; the
Markdown is also printed.  Every figure is warm-cache (the files were just written; no root to
drop the page cache).

    .venv/bin/python benchmarks/bench_data_versions.py                 # 20,000 images, 200 versions
    .venv/bin/python benchmarks/bench_data_versions.py --quick         # ~1,000 images smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    LoadSampler,
    load_line,
    find_dvc,
    geomean,
    human_bytes,
    machine_info,
    machine_line,
    md_table,
    median,
    ms,
    tree_bytes,
    veml_cli,
    verdict,
    publish,
    write_json,
)

import veml  # noqa: E402
from veml.datasets import CITIES, TIMES_OF_DAY, WEATHERS, Domain, generate_driving_coco  # noqa: E402
from veml.store.idsets import runs, to_numpy  # noqa: E402

N_CHUNKS = 20  # the images are generated in 20 chunks of different domains
BASE_CHUNKS = 12  # chunks 0..11 form the first import; each later chunk is one `add`
CAMERA_OF = ("front", "front", "front", "wide", "tele")

# Filters the schedule draws from: sample columns, annotation columns, random splits.
FILTERS = [
    "weather = 'rain'",
    "weather IN ('rain', 'snow')",
    "weather <> 'fog'",
    "time_of_day = 'night'",
    "time_of_day <> 'night'",
    "category = 'pedestrian'",
    "category = 'car' AND area > 40",
    "category = 'sign'",
    "city IN ('tokyo', 'mumbai')",
    "city = 'phoenix' OR weather = 'clear'",
    "bbox_w >= 6 AND bbox_h >= 6",
    "camera = 'wide'",
    "data_id % 2 = 0",
    "data_id % 3 <> 0",
]
PROBE_FILTERS = ["category = 'car' AND area > 40", "weather IN ('rain', 'fog')"]

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(args: Sequence[Any], cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, args))}\n{p.stdout}\n{p.stderr}")
    return p


def timed_run(args: Sequence[Any], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    run(args, cwd)
    return time.perf_counter() - t0


def rmtree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def checkpoint(root: Path) -> None:
    """Fold SQLite's WAL into meta.db so that sizes on disk are comparable between versions."""
    db = root / ".veml" / "meta.db"
    if db.exists():
        con = sqlite3.connect(db)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()


def veml_bytes(root: Path) -> dict[str, int]:
    checkpoint(root)
    return tree_bytes(root / ".veml")


# --- data ---------------------------------------------------------------------------------------
def chunk_domain(k: int) -> Domain:
    return Domain(city=CITIES[k % len(CITIES)], camera=CAMERA_OF[k % 5], weather=WEATHERS[(k // 5) % len(WEATHERS)],
                  time_of_day=TIMES_OF_DAY[k % len(TIMES_OF_DAY)])


def generate(gen: Path, n_images: int, seed: int) -> dict[str, Any]:
    """20 chunks sharing ``gen/images``; ``all.json`` covers every image, ``base.json`` chunks 0..11."""
    params = {"n_images": n_images, "seed": seed, "chunks": N_CHUNKS, "base_chunks": BASE_CHUNKS, "size": [64, 64]}
    manifest = gen / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m.get("params") == params and (gen / "all.json").exists():
            log(f"reusing generated data in {gen}")
            return m
    rmtree(gen)
    sizes = [n_images // N_CHUNKS + (1 if k < n_images % N_CHUNKS else 0) for k in range(N_CHUNKS)]
    docs, chunks = [], []
    image_start = ann_start = 1
    t0 = time.perf_counter()
    for k, size in enumerate(sizes):
        dom = chunk_domain(k)
        p = generate_driving_coco(gen, size, seed=seed + k, domain=dom, image_id_start=image_start,
                                  file_prefix=f"c{k:02d}", annotation_id_start=ann_start)
        doc = json.loads(p.read_text())
        os.replace(p, gen / f"chunk_{k:02d}.json")
        docs.append(doc)
        chunks.append({"file": f"chunk_{k:02d}.json", "images": size, "annotations": len(doc["annotations"]),
                       "domain": dataclasses.asdict(dom)})
        image_start += size
        ann_start += len(doc["annotations"])
    gen_s = time.perf_counter() - t0

    def combine(ds: list[dict]) -> dict:
        return {"images": [im for d in ds for im in d["images"]], "annotations": [a for d in ds for a in d["annotations"]],
                "categories": ds[0]["categories"]}

    (gen / "all.json").write_text(json.dumps(combine(docs)))
    (gen / "base.json").write_text(json.dumps(combine(docs[:BASE_CHUNKS])))
    m = {"params": params, "generate_s": gen_s, "images": tree_bytes(gen / "images"), "n_images": n_images,
         "n_annotations": ann_start - 1, "chunks": chunks}
    write_json(manifest, m)
    log(f"generated {n_images} images ({human_bytes(m['images']['apparent'])}) in {gen_s:.1f}s")
    return m


# --- DVC ----------------------------------------------------------------------------------------
def dvc_init(ws: Path, dvc: str) -> None:
    rmtree(ws)
    ws.mkdir(parents=True)
    run(["git", "init", "-q"], ws)
    for k, v in (("user.email", "bench@example.com"), ("user.name", "bench"), ("commit.gpgsign", "false"),
                 ("tag.gpgsign", "false"), ("gc.auto", "0")):
        run(["git", "config", k, v], ws)
    run([dvc, "init", "-q"], ws)
    run([dvc, "config", "core.analytics", "false"], ws)
    run([dvc, "config", "core.check_update", "false"], ws)
    run([dvc, "config", "cache.type", "hardlink,symlink"], ws)
    run(["git", "add", "-A"], ws)
    run(["git", "commit", "-q", "-m", "init"], ws)


def dvc_sizes(ws: Path) -> dict[str, int]:
    cache, git = tree_bytes(ws / ".dvc" / "cache"), tree_bytes(ws / ".git")
    return {"cache": cache["apparent"], "git": git["apparent"], "apparent": cache["apparent"] + git["apparent"],
            "disk": cache["disk"] + git["disk"]}


# --- 1. import throughput -----------------------------------------------------------------------
def bench_import(gen: Path, work: Path, repeats: int, dvc: str | None) -> dict[str, Any]:
    images, ann = gen / "images", gen / "all.json"
    n = sum(1 for _ in os.scandir(images))
    cli = veml_cli()
    res: dict[str, Any] = {"n_images": n, "cp_s": [], "veml_s": [], "dvc_add_s": [], "dvc_commit_s": []}
    # warm-up: one untimed copy, so every timed run starts from a warm page cache
    timed_run(["cp", "-r", images, work / "warm"])
    rmtree(work / "warm")
    for r in range(repeats):
        dst = work / "cp_images"
        rmtree(dst)
        os.sync()  # every timed run starts with no dirty pages from the previous one
        res["cp_s"].append(timed_run(["cp", "-r", images, dst]))
        rmtree(dst)

        repo_dir = work / "import_repo"
        rmtree(repo_dir)
        veml.init(repo_dir).close()
        os.sync()
        res["veml_s"].append(timed_run([cli, "--repo", repo_dir, "data", "import", "coco", ann, "--images", images,
                                        "--name", "all", "--json"]))
        res["veml_repo_bytes"] = veml_bytes(repo_dir)
        rmtree(repo_dir)

        if dvc:
            ws = work / "dvc_import"
            dvc_init(ws, dvc)
            (ws / "data").mkdir()
            run(["cp", "-r", images, ws / "data" / "images"])
            shutil.copyfile(ann, ws / "data" / "annotations.json")
            os.sync()
            res["dvc_add_s"].append(timed_run([dvc, "add", "-q", "data"], ws))
            t0 = time.perf_counter()
            run(["git", "add", "data.dvc", ".gitignore"], ws)
            run(["git", "commit", "-q", "-m", "import"], ws)
            res["dvc_commit_s"].append(time.perf_counter() - t0)
            res["dvc_repo_bytes"] = dvc_sizes(ws)
            rmtree(ws)
        log(f"import round {r + 1}/{repeats}: cp {res['cp_s'][-1]:.2f}s veml {res['veml_s'][-1]:.2f}s"
            + (f" dvc add {res['dvc_add_s'][-1]:.2f}s" if dvc else ""))
    return res


# --- 2. the VeML versions -----------------------------------------------------------------------
def time_checkout(repo, name: str, repeats: int) -> list[float]:
    out = []
    for i in range(repeats + 1):
        dt, _ = _timed(lambda: _veml_read(repo, name))
        if i:  # the first one is the warm-up
            out.append(dt)
    return out


def creation_probe(root: Path, base: str, n: int, cli_n: int) -> dict[str, Any]:
    """On a copy of the repository: n filters of ``base``, n merges of two fixed versions, via API and CLI."""
    snap = root.parent / (root.name + "-probe")
    rmtree(snap)
    snap.mkdir()
    checkpoint(root)
    shutil.copytree(root / ".veml", snap / ".veml")
    repo = veml.open(snap)
    before = repo.stores.graph.count(["DataVersion"])
    a = repo.data.filter(base, "weather = 'rain'", "probe-a")  # also the warm-up
    b = repo.data.filter(base, "time_of_day = 'night'", "probe-b")
    repo.data.merge(["probe-a", "probe-b"], "probe-warm")
    res: dict[str, Any] = {"versions_before": before, "base": base, "base_samples": repo.data.get(base).props["samples"],
                           "merge_samples": [a.props["samples"], b.props["samples"]],
                           "filter_s": [], "merge_s": [], "cli_filter_s": [], "cli_merge_s": [], "cli_list_s": []}
    for i in range(n):
        t0 = time.perf_counter()
        repo.data.filter(base, PROBE_FILTERS[i % len(PROBE_FILTERS)], f"probe-f{i}")
        res["filter_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        repo.data.merge(["probe-a", "probe-b"], f"probe-m{i}")
        res["merge_s"].append(time.perf_counter() - t0)
    repo.close()
    cli = veml_cli()
    for i in range(cli_n):
        res["cli_filter_s"].append(timed_run([cli, "--repo", snap, "data", "filter", base, "--where",
                                              PROBE_FILTERS[i % len(PROBE_FILTERS)], "--name", f"probe-cf{i}", "--json"]))
        res["cli_merge_s"].append(timed_run([cli, "--repo", snap, "data", "merge", "probe-a", "probe-b",
                                             "--name", f"probe-cm{i}", "--json"]))
        res["cli_list_s"].append(timed_run([cli, "--repo", snap, "data", "show", base, "--json"]))
    rmtree(snap)
    log(f"creation probe at {before} versions: filter {ms(median(res['filter_s']))} ms, "
        f"merge {ms(median(res['merge_s']))} ms, CLI filter {ms(median(res['cli_filter_s']))} ms")
    return res


def pick_base(rng: random.Random, ops: list[dict], main: str, min_base: int) -> str:
    cands = [o["name"] for o in ops if o["samples"] >= min_base]
    return main if rng.random() < 0.3 or not cands else rng.choice(cands)


def build_veml(root: Path, gen: Path, n_versions: int, seed: int, min_base: int,
               at_count: Callable[[Any, int], None]) -> list[dict[str, Any]]:
    rmtree(root)
    repo = veml.init(root)
    rng = random.Random(seed)
    ops: list[dict[str, Any]] = []
    add_chunks = list(range(BASE_CHUNKS, N_CHUNKS))
    add_at = {}
    for i, chunk in enumerate(add_chunks):
        pos = max(2, round(n_versions * (i + 1) / (len(add_chunks) + 1)))
        while pos in add_at and pos < n_versions:
            pos += 1
        if pos <= n_versions:
            add_at[pos] = chunk
    main = ""
    size0 = veml_bytes(root)["apparent"]
    for idx in range(1, n_versions + 1):
        name = f"v{idx:04d}"
        rec: dict[str, Any] = {"index": idx, "versions_before": idx - 1}
        t0 = time.perf_counter()
        if idx == 1:
            rec.update(op="import", parents=[], name=name + "-import")
            t0 = time.perf_counter()
            node = repo.data.import_("coco", gen / "base.json", rec["name"], images=gen / "images")
        elif idx in add_at:
            chunk = add_at[idx]
            rec.update(op="add", parents=[main], name=name + "-add", chunk=chunk)
            t0 = time.perf_counter()
            node = repo.data.add(main, "coco", gen / f"chunk_{chunk:02d}.json", rec["name"], images=gen / "images")
        elif idx > 2 and rng.random() < 0.4:
            k = 3 if rng.random() < 0.2 else 2
            cands = [o["name"] for o in ops if o["samples"] >= min_base]
            parents = rng.sample(cands, min(k, len(cands)))
            if len(parents) < 2:
                parents = [main, ops[-1]["name"]] if ops[-1]["name"] != main else [main, ops[0]["name"]]
            rec.update(op="merge", parents=parents, name=name + "-merge")
            t0 = time.perf_counter()
            node = repo.data.merge(parents, rec["name"])
        else:
            base = pick_base(rng, ops, main, min_base)
            where = rng.choice(FILTERS)
            keep = "matching" if where.startswith("category") and rng.random() < 0.5 else "all"
            rec.update(op="filter", parents=[base], name=name + "-filter", where=where, keep_annotations=keep)
            t0 = time.perf_counter()
            node = repo.data.filter(base, where, rec["name"], keep_annotations=keep)
        rec["time_s"] = time.perf_counter() - t0
        rec["samples"], rec["annotations"] = node.props["samples"], node.props["annotations"]
        size = veml_bytes(root)["apparent"]
        rec["bytes_added"], size0 = size - size0, size
        ops.append(rec)
        if rec["op"] in ("import", "add"):
            main = rec["name"]
        at_count(repo, idx)
    repo.close()
    return ops


def sql_bytes_per_version(root: Path) -> dict[str, dict[str, int]]:
    """Logical bytes each version occupies in meta.db: its node row, its edges, its id-set blobs."""
    con = sqlite3.connect(root / ".veml" / "meta.db")
    try:
        out: dict[str, dict[str, int]] = {}
        for nid, name, props in con.execute("SELECT id, name, length(props) FROM nodes"):
            out[name] = {"id": nid, "props": props}
        by_id = {v["id"]: k for k, v in out.items()}
        for nid, blob in con.execute("SELECT node_id, SUM(length(blob)) FROM idsets GROUP BY node_id"):
            out[by_id[nid]]["idsets"] = blob
        for nid, e in con.execute("SELECT dst, SUM(length(props) + 16) FROM edges GROUP BY dst"):
            out[by_id[nid]]["edges"] = e
        return out
    finally:
        con.close()


# --- 3. Lance's own versioning ------------------------------------------------------------------
def _delete_predicate(key: str, ids) -> str:
    spans = runs(ids)
    if len(spans) <= 64:
        return " OR ".join(f"({key} >= {a} AND {key} < {b})" for a, b in spans)
    return f"{key} IN ({','.join(map(str, to_numpy(ids).tolist()))})"


def build_lance(repo, ops: list[dict], out: Path) -> dict[str, Any]:
    import lance

    rmtree(out)
    out.mkdir(parents=True)
    store = repo.stores.samples
    uris = {"samples": str(out / "samples.lance"), "boxes": str(out / "boxes.lance")}
    keys = {"samples": "data_id", "boxes": "ann_id"}
    versions: dict[str, dict[str, int]] = {}
    per_op = []
    size0 = 0
    for op in ops:
        node = repo.data.get(op["name"])
        want = {"samples": repo.data.ids(node), "boxes": repo.data.annotation_ids(node)}
        t0 = time.perf_counter()
        versions[op["name"]] = {}
        for table in ("samples", "boxes"):
            uri = uris[table]
            if op["op"] == "import":
                lance.write_dataset(store.read(table, want[table]), uri, mode="create", max_rows_per_group=1024)
            else:
                parent = op["parents"][0]
                pnode = repo.data.get(parent)
                have = repo.data.ids(pnode) if table == "samples" else repo.data.annotation_ids(pnode)
                lance.dataset(uri, version=versions[parent][table]).restore()
                remove, add = have - want[table], want[table] - have
                if len(remove):
                    lance.dataset(uri).delete(_delete_predicate(keys[table], remove))
                if len(add):
                    lance.write_dataset(store.read(table, add), uri, mode="append", max_rows_per_group=1024)
            ds = lance.dataset(uri)
            if ds.count_rows() != len(want[table]):
                raise AssertionError(f"lance {table} version of {op['name']} holds {ds.count_rows()} rows, want {len(want[table])}")
            versions[op["name"]][table] = ds.version
        dt = time.perf_counter() - t0
        size = tree_bytes(out)["apparent"]
        per_op.append({"name": op["name"], "op": op["op"], "time_s": dt, "bytes_added": size - size0})
        size0 = size
    log(f"lance: {len(ops)} versions, {human_bytes(size0)}")
    return {"versions": versions, "per_op": per_op, "uris": uris, "bytes": tree_bytes(out)}


# --- 4. DVC -------------------------------------------------------------------------------------
def build_dvc(repo, ops: list[dict], gen: Path, ws: Path, dvc: str) -> dict[str, Any]:
    """One git commit + tag per version; the workspace is edited from the previous version."""
    dvc_init(ws, dvc)
    doc = json.loads((gen / "all.json").read_text())
    images_by_name = {im["file_name"]: im for im in doc["images"]}
    anns_by_id = {a["id"]: a for a in doc["annotations"]}
    data, img_dir = ws / "data", ws / "data" / "images"
    img_dir.mkdir(parents=True)
    current: set[str] = set()
    seen_ann: set[str] = set()
    per_op = []
    size0 = dvc_sizes(ws)
    for n, op in enumerate(ops):
        node = repo.data.get(op["name"])
        names = repo.data.sample_metadata(node)["file_name"].to_pylist()
        boxes = repo.data.annotations(node).get("boxes")
        src_ids = boxes["source_id"].to_pylist() if boxes is not None else []
        target = set(names)
        for f in current - target:
            os.unlink(img_dir / f)
        for f in target - current:
            os.link(gen / "images" / f, img_dir / f)
        current = target
        ann_path = data / "annotations.json"
        ann_path.unlink(missing_ok=True)  # a link into the read-only cache: never write through it
        text = json.dumps({"images": [images_by_name[x] for x in names], "annotations": [anns_by_id[i] for i in src_ids],
                           "categories": doc["categories"]})
        ann_path.write_text(text)
        digest = hashlib.md5(text.encode()).hexdigest()
        ann_new = 0 if digest in seen_ann else len(text.encode())
        seen_ann.add(digest)
        t0 = time.perf_counter()
        run([dvc, "add", "-q", "data"], ws)
        t_add = time.perf_counter() - t0
        run(["git", "add", "data.dvc", ".gitignore"], ws)
        run(["git", "commit", "-q", "--allow-empty", "-m", op["name"]], ws)
        run(["git", "tag", op["name"]], ws)
        t_all = time.perf_counter() - t0
        size = dvc_sizes(ws)
        per_op.append({"name": op["name"], "op": op["op"], "add_s": t_add, "add_commit_s": t_all,
                       "bytes_added": size["apparent"] - size0["apparent"], "ann_new_bytes": ann_new, "disk_added": size["disk"] - size0["disk"],
                       "cache_added": size["cache"] - size0["cache"], "git_added": size["git"] - size0["git"]})
        size0 = size
        if (n + 1) % 20 == 0:
            log(f"dvc: {n + 1}/{len(ops)} versions, {human_bytes(size['apparent'])}")
    return {"per_op": per_op, "bytes": dvc_sizes(ws)}


def read_dvc_workspace(ws: Path) -> tuple[int, int]:
    """Everything into memory: the COCO file parsed, every image's bytes (in COCO order)."""
    data = ws / "data"
    doc = json.loads((data / "annotations.json").read_bytes())
    payloads = []
    for im in doc["images"]:
        with open(data / "images" / im["file_name"], "rb") as f:
            payloads.append(f.read())
    return len(payloads), len(doc["annotations"])


# --- 5. checkout comparison ----------------------------------------------------------------------
def choose_probes(ops: list[dict]) -> list[dict]:
    def pick(kind: str, qs: Sequence[float]) -> list[dict]:
        lst = sorted((o for o in ops if o["op"] == kind and o["samples"] > 0), key=lambda o: o["samples"])
        return [lst[int(q * (len(lst) - 1))] for q in qs] if lst else []

    mains = [o for o in ops if o["op"] in ("import", "add")]
    chosen = [mains[0], mains[-1], *pick("filter", (0.9, 0.5, 0.2)), *pick("merge", (0.9, 0.5, 0.2))]
    seen, out = set(), []
    for o in chosen:
        if o["name"] not in seen:
            seen.add(o["name"])
            out.append(o)
    return out


def _veml_read(repo, name: str) -> tuple[Any, dict]:
    view = repo.data.checkout(name)
    return view.samples_table(), view.annotations()


def _lance_read(lance_res: dict, name: str) -> tuple[Any, dict]:
    import lance

    v = lance_res["versions"][name]
    s = lance.dataset(lance_res["uris"]["samples"], version=v["samples"]).to_table()
    b = lance.dataset(lance_res["uris"]["boxes"], version=v["boxes"]).to_table()
    return s, {"boxes": b}


def _timed(f: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds f takes, and a summary of what it returned (tables are released after the clock stops)."""
    t0 = time.perf_counter()
    out = f()
    dt = time.perf_counter() - t0
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        out = (out[0].num_rows, sum(t.num_rows for t in out[1].values()))
    return dt, out


def compare_checkouts(repo, probes: list[dict], lance_res: dict | None, ws: Path | None, dvc: str | None,
                      repeats: int, lance_rounds: int) -> dict[str, Any]:
    """VeML against Lance first (many rounds, the two in alternating order), then against DVC."""
    res: dict[str, Any] = {p["name"]: {"samples": p["samples"], "annotations": p["annotations"], "op": p["op"],
                                       "veml_s": [], "lance_s": [], "dvc_s": [], "dvc_checkout_s": [], "dvc_read_s": [],
                                       "veml_s_dvc_phase": []}
                           for p in probes}
    for r in range(lance_rounds + 1):  # round 0 is the warm-up
        for p in probes:
            name, row = p["name"], res[p["name"]]
            sides = [("veml", lambda: _veml_read(repo, name))]
            if lance_res:
                sides.append(("lance", lambda: _lance_read(lance_res, name)))
            if r % 2:
                sides.reverse()
            counts = {}
            for label, f in sides:
                dt, counts[label] = _timed(f)
                if r:
                    row[f"{label}_s"].append(dt)
            if len(set(counts.values())) != 1:
                raise AssertionError(f"{name}: VeML and Lance disagree on (samples, annotations): {counts}")
    log(f"checkout VeML vs Lance: {lance_rounds} rounds done")
    if not (dvc and ws):
        return res
    for r in range(repeats + 1):
        for p in probes:
            name, row = p["name"], res[p["name"]]
            t0 = time.perf_counter()
            run(["git", "checkout", "-q", name], ws)
            run([dvc, "checkout", "-q"], ws)
            t_c = time.perf_counter() - t0
            got = read_dvc_workspace(ws)
            t_d = time.perf_counter() - t0
            t_v, want = _timed(lambda: _veml_read(repo, name))
            if got != want:
                raise AssertionError(f"{name}: DVC workspace holds {got} (samples, annotations), VeML {want}")
            if r:
                row["dvc_s"].append(t_d)
                row["dvc_checkout_s"].append(t_c)
                row["dvc_read_s"].append(t_d - t_c)
                row["veml_s_dvc_phase"].append(t_v)
        log(f"checkout DVC round {r}/{repeats} done")
    return res


# --- 6. 10 versions against many, on the same sample table --------------------------------------
def grow_versions(repo, target: int, rng: random.Random) -> list[dict[str, Any]]:
    existing = [(n.name, n.props["samples"]) for n in repo.data.list()]
    out = []
    idx = len(existing)
    while idx < target:
        idx += 1
        name = f"x{idx:04d}"
        cands = [n for n, s in existing if s > 0]
        t0 = time.perf_counter()
        if rng.random() < 0.5:
            op, node = "merge", repo.data.merge(rng.sample(cands, 2), name + "-merge")
        else:
            op, node = "filter", repo.data.filter(rng.choice(cands), rng.choice(FILTERS), name + "-filter")
        out.append({"index": idx, "op": op, "time_s": time.perf_counter() - t0, "samples": node.props["samples"]})
        existing.append((node.name, node.props["samples"]))
        if idx % 250 == 0:
            log(f"grown to {idx} versions")
    return out


def versions_experiment(out: Path, gen: Path, many: int, rounds: int, probe_n: int, seed: int) -> dict[str, Any]:
    """Two repositories over the same sample table: A with 10 versions, B = A grown to ``many``.

    Checkout of version 1 and creation of a filter/merge are timed on both in alternating order,
    so that drift of the machine over the run cancels out.
    """
    a_root, b_root = out / "veml_10", out / f"veml_{many}"
    rmtree(a_root)
    rmtree(b_root)
    repo = veml.init(a_root)
    repo.data.import_("coco", gen / "all.json", "v0001-import", images=gen / "images")
    repo.data.filter("v0001-import", "weather = 'rain'", "v0002-filter")
    repo.data.filter("v0001-import", "time_of_day = 'night'", "v0003-filter")
    repo.data.merge(["v0002-filter", "v0003-filter"], "v0004-merge")
    rng = random.Random(seed + 2)
    for i in range(5, 11):
        names = [n.name for n in repo.data.list()]
        if i % 2:
            repo.data.merge(rng.sample(names, 2), f"v{i:04d}-merge")
        else:
            repo.data.filter(rng.choice(names), rng.choice(FILTERS), f"v{i:04d}-filter")
    repo.close()
    checkpoint(a_root)
    shutil.copytree(a_root, b_root)
    repo_b = veml.open(b_root)
    t0 = time.perf_counter()
    grow = grow_versions(repo_b, many, rng)
    grow_s = time.perf_counter() - t0
    repo_b.close()
    checkpoint(b_root)
    res: dict[str, Any] = {"a_versions": 10, "b_versions": many, "grow_s": grow_s, "grow": grow,
                           "a_bytes": tree_bytes(a_root / ".veml"), "b_bytes": tree_bytes(b_root / ".veml")}
    ra, rb = veml.open(a_root), veml.open(b_root)
    res["samples_rows"] = _sample_rows(ra)
    res["v1_samples"] = ra.data.get("v0001-import").props["samples"]
    res["checkout_a_s"], res["checkout_b_s"] = [], []
    for r in range(rounds + 1):
        pair = [(ra, "checkout_a_s"), (rb, "checkout_b_s")]
        for repo, key in pair if r % 2 == 0 else pair[::-1]:
            dt, _ = _timed(lambda: _veml_read(repo, "v0001-import"))
            if r:
                res[key].append(dt)
    for key in ("filter_a_s", "filter_b_s", "merge_a_s", "merge_b_s"):
        res[key] = []
    for i in range(probe_n + 1):  # i == 0: warm-up
        pair = [(ra, "a"), (rb, "b")]
        for repo, side in pair if i % 2 == 0 else pair[::-1]:
            dt, _ = _timed(lambda: repo.data.filter("v0001-import", PROBE_FILTERS[i % 2], f"probe-f{i}"))
            dm, _ = _timed(lambda: repo.data.merge(["v0002-filter", "v0003-filter"], f"probe-m{i}"))
            if i:
                res[f"filter_{side}_s"].append(dt)
                res[f"merge_{side}_s"].append(dm)
    ra.close()
    rb.close()
    log(f"10 vs {many} versions: checkout v1 {ms(median(res['checkout_a_s']))} vs {ms(median(res['checkout_b_s']))} ms, "
        f"filter {ms(median(res['filter_a_s']))} vs {ms(median(res['filter_b_s']))} ms")
    return res


def _sample_rows(repo) -> int:
    import lance

    return int(lance.dataset(str(repo.stores.samples.root / "samples.lance")).count_rows())


# --- report -------------------------------------------------------------------------------------
def _spread(xs: Sequence[float]) -> str:
    return f"{min(xs):.2f}–{max(xs):.2f}"


def render(R: dict[str, Any]) -> str:
    a = R["args"]
    ops = R["ops"]
    out = [f"Machine: {machine_line(R['machine'])}. All figures warm-cache (files just written, page cache not dropped). "
           + (load_line(R["load"], R["machine"]["nproc"]) if R.get("load") else ""),
           f"Data: {R['data']['n_images']:,} PNG images 64x64 ({human_bytes(R['data']['images']['apparent'])}, "
           f"{R['data']['n_annotations']:,} boxes); {a['versions']} versions: import of {BASE_CHUNKS}/{N_CHUNKS} of the images, "
           f"{sum(o['op'] == 'add' for o in ops)} adds of the other chunks, {sum(o['op'] == 'filter' for o in ops)} filters, "
           f"{sum(o['op'] == 'merge' for o in ops)} merges."]
    if R.get("dvc_note"):
        out.append(f"DVC: {R['dvc_note']}")

    # import
    imp = R["import"]
    n = imp["n_images"]
    cp, cp_min = median(imp["cp_s"]), min(imp["cp_s"])

    def row(label: str, xs: Sequence[float]) -> list[str]:
        m = median(xs)
        return [label, f"{m:.2f}", _spread(xs), f"{n / m:,.0f}", f"{m / cp:.2f}", f"{m / cp_min:.2f}"]

    rows = [row("`cp -r images/`", imp["cp_s"]), row("`veml data import coco` (CLI, whole process)", imp["veml_s"])]
    if imp["dvc_add_s"]:
        rows.append(row("`dvc add data/` (files already copied into the workspace)", imp["dvc_add_s"]))
        rows.append(row("`dvc add` + `git add/commit`", [x + y for x, y in zip(imp["dvc_add_s"], imp["dvc_commit_s"])]))
    out += ["", f"**Import of {n:,} images** ({len(imp['cp_s'])} runs each, interleaved; a fresh target every run, `sync` before each "
            "timed run, the write-back after it not timed)", "",
            md_table(["what", "median s", "min–max s", "images/s (median)", "time ÷ median `cp -r`", "time ÷ fastest `cp -r`"],
                     rows)]
    if max(imp["cp_s"]) > 3 * cp_min:
        out.append(f"\n`cp -r` of these {n:,} small files varied {cp_min:.1f}–{max(imp['cp_s']):.1f} s between identical runs: creating "
                   "many small files on this VM's disk is erratic, while VeML writes a few large Lance files.")

    # creation at 10 / N in the schedule
    probes = R["creation"]
    p10, pn = probes[0], probes[-1]
    rows = []
    for label, key in (("filter (API)", "filter_s"), ("merge (API)", "merge_s"), ("filter (CLI, whole process)", "cli_filter_s"),
                       ("merge (CLI, whole process)", "cli_merge_s"), ("`data show` (CLI; process start-up cost)", "cli_list_s")):
        x, y = median(p10[key]), median(pn[key])
        rows.append([label, ms(x), ms(y), f"{y / x:.2f}"])
    out += ["", f"**Creating a derived version, at 10 and at {a['versions']} versions of the schedule** (median of "
            f"{len(p10['filter_s'])} API / {len(p10['cli_filter_s'])} CLI runs on a copy of the repository; filter of the "
            f"{p10['base_samples']:,}-sample import, merge of two fixed filtered versions of {p10['merge_samples'][0]:,} and "
            f"{p10['merge_samples'][1]:,} samples; between the two points the adds grew the sample table from "
            f"{R['rows_at_10']:,} to {R['rows_at_n']:,} rows)", "",
            md_table(["operation", f"ms at {p10['versions_before']} versions", f"ms at {pn['versions_before']} versions",
                      f"{pn['versions_before']} ÷ {p10['versions_before']}"], rows)]

    ex = R.get("experiment")
    if ex:
        rows = [[f"checkout of version 1 ({ex['v1_samples']:,} samples + boxes)", ms(median(ex["checkout_a_s"])),
                 ms(median(ex["checkout_b_s"])), f"{median(ex['checkout_b_s']) / median(ex['checkout_a_s']):.2f}",
                 f"≤ 1.2: {verdict(median(ex['checkout_b_s']) / median(ex['checkout_a_s']) <= 1.2)}"]]
        for label, k in (("filter of version 1 (API)", "filter"), ("merge of two fixed versions (API)", "merge")):
            x, y = median(ex[f"{k}_a_s"]), median(ex[f"{k}_b_s"])
            rows.append([label, ms(x), ms(y), f"{y / x:.2f}", ""])
        out += ["", f"**10 versions against {ex['b_versions']:,}, same sample table** (a repository with "
                f"{ex['samples_rows']:,} samples and 10 versions, and a copy of it grown to {ex['b_versions']:,} versions by "
                f"{len(ex['grow'])} filters/merges in {ex['grow_s']:.0f} s; the two timed in alternating order, median of "
                f"{len(ex['checkout_a_s'])} checkouts and {len(ex['filter_a_s'])} creations; the creations grow A to "
                f"{10 + 2 * len(ex['filter_a_s']) + 2} versions)", "",
                md_table(["what", "ms at 10 versions", f"ms at {ex['b_versions']:,} versions", "ratio", "target"], rows)]
        if R.get("v1_checkout"):
            vc = R["v1_checkout"]
            out.append(f"\nIn the {a['versions']}-version schedule itself, checkout of version 1 took {ms(median(vc['at_10']))} ms "
                       f"at 10 versions and {ms(median(vc['at_n']))} ms at {a['versions']} (median of {len(vc['at_10'])}).")

    sched = []
    for kind in ("filter", "merge", "add"):
        ts = [o["time_s"] for o in ops if o["op"] == kind]
        early = [o["time_s"] for o in ops if o["op"] == kind and o["index"] <= a["versions"] // 4]
        late = [o["time_s"] for o in ops if o["op"] == kind and o["index"] > 3 * a["versions"] // 4]
        dv = [d["add_commit_s"] for d, o in zip(R["dvc"]["per_op"], ops) if o["op"] == kind] if R.get("dvc") else []
        sched.append([kind, len(ts), ms(median(ts)), ms(median(early)) if early else "n/a", ms(median(late)) if late else "n/a",
                      ms(median(dv)) if dv else "n/a"])
    if ex:
        for kind in ("filter", "merge"):
            ts = [g["time_s"] for g in ex["grow"] if g["op"] == kind]
            if ts:
                sched.append([f"{kind} (growing a repository 10 → {ex['b_versions']:,} versions)", len(ts), ms(median(ts)), "", "", ""])
    out += ["", "Over the whole schedule (bases and expressions vary, so the work varies; API, ms):", "",
            md_table(["operation", "count", "median", f"first quarter (≤ {a['versions'] // 4} versions)",
                      f"last quarter (> {3 * a['versions'] // 4})", "DVC: `dvc add` + commit of the same version"], sched)]

    # checkout
    if R.get("checkout"):
        rows, ratios_d, ratios_l = [], [], []
        for name, c in R["checkout"].items():
            tv = median(c["veml_s"])
            tl = median(c["lance_s"]) if c["lance_s"] else float("nan")
            td = median(c["dvc_s"]) if c["dvc_s"] else float("nan")
            if c["dvc_s"]:
                ratios_d.append(td / tv)
            if c["lance_s"]:
                ratios_l.append(tv / tl)
            rows.append([name, f"{c['samples']:,}", f"{c['annotations']:,}", ms(tv), ms(tl),
                         f"{tv / tl:.2f}" if c["lance_s"] else "n/a",
                         f"{ms(td)} ({ms(median(c['dvc_checkout_s']))} + {ms(median(c['dvc_read_s']))})" if c["dvc_s"] else "n/a",
                         f"{td / tv:.0f}×" if c["dvc_s"] else "n/a"])
        first = next(iter(R["checkout"].values()))
        out += ["", f"**Checkout into memory** (every sample with its PNG bytes + every box. VeML: `repo.data.checkout(v)`, "
                "`samples_table()`, `annotations()`. Lance: `lance.dataset(uri, version=k).to_table()` of both datasets. "
                "DVC: `git checkout TAG && dvc checkout`, then reading every image file and parsing the COCO JSON, shown as "
                f"checkout + read. VeML and Lance: median of {len(first['veml_s'])} rounds in alternating order; DVC: median of "
                f"{len(first['dvc_s'])} rounds, each switching from another version; one warm-up round each)", "",
                md_table(["version", "samples", "boxes", "VeML ms", "Lance ms", "VeML ÷ Lance", "DVC ms", "DVC ÷ VeML"], rows)]
        if ratios_d:
            out.append(f"\nDVC ÷ VeML: min {min(ratios_d):.0f}×, geometric mean {geomean(ratios_d):.0f}× — target ≥ 20×: "
                       f"{verdict(min(ratios_d) >= 20)} on every version.")
        if ratios_l:
            n_ok = sum(r <= 1.5 for r in ratios_l)
            out.append(f"VeML ÷ Lance: geometric mean {geomean(ratios_l):.2f}, worst {max(ratios_l):.2f} — target ≤ 1.5: "
                       f"{verdict(geomean(ratios_l) <= 1.5)} on the geometric mean, {n_ok} of {len(ratios_l)} versions within it.")

    # storage
    st = R["storage"]
    rows = []
    for label, key in (("VeML (`.veml/`)", "veml"), ("DVC (`.dvc/cache` + `.git`)", "dvc"), ("Lance (both datasets)", "lance")):
        s = st.get(key)
        if s:
            rows.append([label, human_bytes(s["filter_mean"]), human_bytes(s["merge_mean"]), human_bytes(s["total_apparent"]),
                         human_bytes(s["total_disk"]), f"{s['total_apparent'] / R['data']['images']['apparent']:.2f}"])
    out += ["", f"**Bytes per derived version and repository size** (mean growth of each store per filter / merge version; "
            f"totals at {a['versions']} versions; the source images are {human_bytes(R['data']['images']['apparent'])} "
            f"apparent, {human_bytes(R['data']['images']['disk'])} on disk)", "",
            md_table(["system", "per filter version", "per merge version", "total (apparent)", "total (disk blocks)",
                      "total ÷ source images"], rows)]
    q = st["veml_sql"]
    out.append(f"\nVeML grows by whole SQLite pages; the rows a derived version adds average {human_bytes(q['filter_mean'])} "
               f"(filter) and {human_bytes(q['merge_mean'])} (merge): node props + edges + two roaring bitmaps, the bitmaps "
               f"averaging {human_bytes(q['idsets_mean'])} (largest {human_bytes(q['idsets_max'])}, a filter whose samples are "
               "scattered). Nothing is written to the sample tables.")
    if st.get("dvc"):
        dd = st["dvc"]
        out.append(f"DVC's growth per derived version is the version's new `annotations.json` "
                   f"({human_bytes(dd['ann_mean'])} on average) plus its `.dir` manifest and git objects "
                   f"({human_bytes(dd['other_mean'])}); the images themselves are never copied (hard links).")
    if st.get("lance"):
        out.append("Lance: a filter version is a deletion file; a merge version appends copies of the rows the first parent "
                   "lacks.")
    return "\n".join(out) + "\n"


def storage_summary(R: dict[str, Any], root: Path, lance_res: dict | None, dvc_res: dict | None) -> dict[str, Any]:
    ops = R["ops"]

    def mean_of(per_op: list[dict], kind: str, key: str = "bytes_added") -> float:
        xs = [p[key] for p in per_op if p["op"] == kind]
        return sum(xs) / len(xs) if xs else 0.0

    vb = veml_bytes(root)
    st: dict[str, Any] = {"veml": {"filter_mean": mean_of(ops, "filter"), "merge_mean": mean_of(ops, "merge"),
                                   "total_apparent": vb["apparent"], "total_disk": vb["disk"]}}
    sqlb = sql_bytes_per_version(root)
    for o in ops:
        b = sqlb[o["name"]]
        o["sql_bytes"] = sum(b.get(k, 0) for k in ("props", "idsets", "edges"))
        o["idset_bytes"] = b.get("idsets", 0)
    derived = [o for o in ops if o["op"] in ("filter", "merge")]
    st["veml_sql"] = {"filter_mean": mean_of(ops, "filter", "sql_bytes"), "merge_mean": mean_of(ops, "merge", "sql_bytes"),
                      "idsets_mean": sum(o["idset_bytes"] for o in derived) / max(1, len(derived)),
                      "idsets_max": max((o["idset_bytes"] for o in derived), default=0)}
    if lance_res:
        st["lance"] = {"filter_mean": mean_of(lance_res["per_op"], "filter"), "merge_mean": mean_of(lance_res["per_op"], "merge"),
                       "total_apparent": lance_res["bytes"]["apparent"], "total_disk": lance_res["bytes"]["disk"]}
    if dvc_res:
        per = [p for p in dvc_res["per_op"] if p["op"] in ("filter", "merge")]
        ann = sum(p["ann_new_bytes"] for p in per) / max(1, len(per))
        st["dvc"] = {"filter_mean": mean_of(dvc_res["per_op"], "filter"), "merge_mean": mean_of(dvc_res["per_op"], "merge"),
                     "total_apparent": dvc_res["bytes"]["apparent"], "total_disk": dvc_res["bytes"]["disk"],
                     "cache": dvc_res["bytes"]["cache"], "git": dvc_res["bytes"]["git"], "ann_mean": ann,
                     "other_mean": sum(p["bytes_added"] for p in per) / max(1, len(per)) - ann}
    return st


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=None, help="images to generate (default 20000; 1000 with --quick)")
    p.add_argument("--versions", type=int, default=None, help="versions in the schedule (default 200; 40 with --quick)")
    p.add_argument("--many", type=int, default=None, help="versions for the 10-vs-many experiment (default 1000; 200 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed DVC checkout rounds (default 5; 3 with --quick); "
                   "VeML/Lance get 3x as many")
    p.add_argument("--out", default="bench-out", help="output directory (default bench-out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: ~1,000 images, 40 versions, 200 for the many-versions test")
    p.add_argument("--skip-dvc", action="store_true", help="leave DVC out even if it is installed")
    p.add_argument("--skip-lance", action="store_true", help="leave Lance versioning out")
    args = p.parse_args(argv)
    q = args.quick
    args.images = args.images or (1000 if q else 20000)
    args.versions = args.versions or (40 if q else 200)
    args.many = args.many or (200 if q else 1000)
    args.repeats = args.repeats or (3 if q else 5)
    import_repeats, probe_n, cli_n = (2, 5, 2) if q else (3, 15, 5)
    if args.versions < 10 or args.many <= 10:
        p.error("need --versions >= 10 and --many > 10")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    R: dict[str, Any] = {"args": vars(args), "machine": machine_info()}
    load = LoadSampler().__enter__()
    dvc, dvc_info = (None, "skipped (--skip-dvc)") if args.skip_dvc else find_dvc()
    R["dvc"] = None
    if not dvc:
        R["dvc_note"] = dvc_info + " — the DVC columns are left out."
        log(R["dvc_note"])
    else:
        R["dvc_version"] = dvc_info
        shown = os.path.relpath(dvc, ROOT) if dvc.startswith(str(ROOT)) else dvc
        R["dvc_note"] = f"{dvc_info} (`{shown}`), {R['machine']['git']}, `cache.type hardlink,symlink`."
    results_path = out / "data_versions.json"

    R["data"] = generate(out / "gen", args.images, args.seed)
    gen = out / "gen"

    log("1/6 import throughput")
    R["import"] = bench_import(gen, work, import_repeats, dvc)
    write_json(results_path, R)

    log("2/6 VeML versions")
    root = out / "veml_repo"
    R["creation"], R["v1_checkout"] = [], {}
    min_base = max(50, args.images // 40)

    def at_count(repo, idx: int) -> None:
        if idx == 10:
            R["v1_checkout"]["at_10"] = time_checkout(repo, "v0001-import", 2 * args.repeats + 1)
            R["rows_at_10"] = _sample_rows(repo)
            R["creation"].append(creation_probe(root, "v0001-import", probe_n, cli_n))

    R["ops"] = build_veml(root, gen, args.versions, args.seed, min_base, at_count)
    repo = veml.open(root)
    R["v1_checkout"]["at_n"] = time_checkout(repo, "v0001-import", 2 * args.repeats + 1)
    R["rows_at_n"] = _sample_rows(repo)
    repo.close()
    R["creation"].append(creation_probe(root, "v0001-import", probe_n, cli_n))
    log(f"VeML: {len(R['ops'])} versions, {human_bytes(veml_bytes(root)['apparent'])}")
    write_json(results_path, R)

    repo = veml.open(root)
    lance_res = None
    if not args.skip_lance:
        log("3/6 Lance versioning")
        lance_res = build_lance(repo, R["ops"], out / "lance")
        R["lance"] = {"per_op": lance_res["per_op"], "bytes": lance_res["bytes"], "versions": lance_res["versions"]}
    dvc_res = None
    if dvc:
        log("4/6 DVC versions")
        dvc_res = build_dvc(repo, R["ops"], gen, out / "dvc_repo", dvc)
        R["dvc"] = dvc_res
    R["storage"] = storage_summary(R, root, lance_res, dvc_res)
    write_json(results_path, R)

    log("5/6 checkout comparison")
    R["checkout"] = compare_checkouts(repo, choose_probes(R["ops"]), lance_res, out / "dvc_repo" if dvc else None, dvc,
                                      args.repeats, 3 * args.repeats)
    repo.close()
    write_json(results_path, R)

    log(f"6/6 10 versions against {args.many}")
    R["experiment"] = versions_experiment(out, gen, args.many, 4 * args.repeats + 1, probe_n, args.seed)
    load.__exit__(None, None, None)
    R["load"] = load.summary()
    publish(out, "data_versions", R, render(R))
    return 0


if __name__ == "__main__":
    sys.exit(main())
