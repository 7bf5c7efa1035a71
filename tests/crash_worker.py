"""The process ``test_crash_safety.py`` kills: one kind of operation, over and over, until SIGKILL.

Usage: ``python crash_worker.py ROOT OP SEED SRC_DIR WORK_DIR``

It opens the repository (and loads the adapter an operation needs), does the operation once
(not for gc, train and deploy, whose first run is what the kill aims at), prints
``{"ready": true}``, then repeats ``OP`` with fresh names, printing one JSON line per version as soon as its commit
returned (``{"t", "id", "name", "kind", ...}`` with the id-set digests of a data version, the
checkpoint of a training, the artifact of a deployment).  A line printed is a promise: the test
checks every one of them after the kill.  ``t`` is seconds since ready, from which the test learns
how long one operation takes and so where to aim the next kill.

``OP orphan`` is used once when the base state is built: it reserves an id range and appends rows
through the stores exactly as an import does, then exits without recording a version, which is
what an import killed between its append and its commit leaves behind (``veml gc`` reclaims it).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

import veml

FILTERS = [
    ("both", "category = 'car'"), ("both", "area > 60"), ("both", "time_of_day = 'night'"),
    ("tab", "a > 0"), ("tab", "b < 0.3 AND c > -1"), ("both", "category = 'pedestrian' OR area < 30"),
]
MAX_OPS = 200


def write_csv(path: Path, seed: int, rows: int) -> Path:
    x = np.random.default_rng(seed).normal(0.0, 1.0, size=(rows, 3))
    lines = ["a,b,c,y"] + [f"{r[0]:.5f},{r[1]:.5f},{r[2]:.5f},{'p' if r[0] + r[1] > 0 else 'n'}" for r in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    root, op, seed, src, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    repo = veml.open(root)
    g = repo.stores.graph
    if op in ("train", "deploy"):
        from veml.adapters import get_adapter

        get_adapter("torch")  # torch imported before "ready": the kill aims at the work, not the import
    elif op in ("train-sk", "deploy-sk"):
        from veml.adapters import get_adapter

        get_adapter("sklearn")
        import sklearn.linear_model  # noqa: F401
    if op == "orphan":
        return orphan(repo)
    if op == "gc":  # warm up what gc reads, so the kill lands in the reclaiming itself
        repo.stores.samples.keys("samples")
        g.pending_allocations()
    t0: float | None = None  # set at ready; the warm-up operation reports t null

    def ready() -> None:
        nonlocal t0
        print(json.dumps({"ready": True}), flush=True)
        t0 = time.monotonic()

    if op in ("train", "deploy", "gc"):
        ready()

    def report(node, **extra) -> None:
        row = {"t": None if t0 is None else round(time.monotonic() - t0, 4), "id": node.id, "name": node.name, "kind": node.kind,
               "parents": list(node.parents), **extra}
        if node.kind == "DataVersion":
            s, a = g.idset_ref(node.id, "samples"), g.idset_ref(node.id, "annotations")
            row.update(samples=s.count, digest=s.digest, annotations=a.count, ann_digest=a.digest)
        print(json.dumps(row), flush=True)

    images = src / "images"
    for k in range(MAX_OPS):
        name = f"{op}-{seed}-{k}"
        if op == "import":
            if k % 2 == 0:
                report(repo.data.import_("coco", src / "big.json", name, images=images))
            else:
                report(repo.data.import_("table", write_csv(work / f"{name}.csv", seed * 100 + k, 300), name, label="y"))
        elif op == "add":
            if k % 3 == 0:
                report(repo.data.add("day", "coco", src / "big.json", name, images=images))
            elif k % 3 == 1:
                report(repo.data.add("tab", "table", write_csv(work / f"{name}.csv", seed * 100 + k, 150), name, label="y"))
            else:
                report(repo.data.update("day", src / "day-relabel.json", name))
        elif op == "filter":
            base, where = FILTERS[rng.randrange(len(FILTERS))]
            report(repo.data.filter(base, where, name, keep_annotations=rng.choice(["all", "matching"])))
        elif op == "merge":
            picked = rng.sample(["day", "night", "both", "day-cars", "night-big"], 2)
            report(repo.data.merge(picked, name))
            if k % 2:
                repo.data.tag(name, f"tag-{name}")
                print(json.dumps({"tag": f"tag-{name}", "name": name}), flush=True)
        elif op == "gc":
            print(json.dumps({"gc": repo.gc(grace_s=0).to_json(), "t": round(time.monotonic() - t0, 4)}), flush=True)
        elif op in ("train", "train-sk"):
            if op == "train":
                t = repo.training.train("both", "mb", sets={"epochs": 1, "batch_size": 16, "seed": k, "max_steps": 0},
                                        name=name)
            else:
                t = repo.training.train("tab", "logreg", sets={"seed": k}, name=name)
            report(g.get(t["id"]), status=t["status"], checkpoint=t["checkpoint"])
        elif op in ("deploy", "deploy-sk"):
            if op == "deploy":
                node = repo.inference.deploy("cls", "onnx", "none", name=name)
            else:
                node = repo.inference.deploy("lr", "skops", "none", name=name)
            report(node, artifact=node.props["artifact"])
        else:
            raise SystemExit(f"unknown op {op!r}")
        if k == 0 and op not in ("train", "deploy", "gc"):
            ready()  # one operation done first: lazy imports and caches warm, later ones take their steady time
    return 0


def orphan(repo) -> int:
    """Rows an import appended before it was killed: a reserved range, its rows, no version."""
    import pyarrow as pa

    from veml.formats.table import parse_table

    batch = parse_table(write_csv(Path(sys.argv[5]) / "orphan.csv", 99, 25), label="y")
    _, start = repo.stores.graph.allocate("data", batch.samples.num_rows)
    ids = np.arange(start, start + batch.samples.num_rows, dtype=np.int64)
    repo.stores.samples.append("samples", batch.samples.add_column(0, "data_id", pa.array(ids)))
    print(json.dumps({"orphan": [int(ids[0]), int(ids[-1]) + 1]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
