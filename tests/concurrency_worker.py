"""One writer process of ``test_concurrency.py``: creates versions in a loop and reports each one.

Usage: ``python concurrency_worker.py ROOT WORKER ROUNDS SRC_DIR COCO_JSON``, or
``python concurrency_worker.py ROOT gc STOP_FILE GRACE``: ``veml gc --grace GRACE`` over and over
until ``STOP_FILE`` exists, one JSON report a line.

Every version this process created is printed, as soon as its commit returned, as one JSON line
(``{"op", "id", "name", "kind", "samples", "annotations", "digest", ...}``) so the test can check
afterwards that each one exists exactly once with exactly this content.  The sources it imports
(CSV tables, COCO subsets) are written under ``SRC_DIR`` and left there for the test to re-read.
Name and tag races (every worker tries the same ``race-R`` / ``hot-R``) report who won and who
got a clean :class:`~veml.errors.Conflict`; any other error ends the process with a traceback.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

import veml
from veml.errors import Conflict


def write_csv(path: Path, seed: int, rows: int) -> Path:
    x = np.random.default_rng(seed).normal(0.0, 1.0, size=(rows, 3))
    lines = ["a,b,c,y"] + [f"{r[0]:.5f},{r[1]:.5f},{r[2]:.5f},{'p' if r[0] + r[1] > 0 else 'n'}" for r in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def coco_subset(src: Path, dest: Path, start: int, n: int) -> Path:
    doc = json.loads(src.read_text())
    images = doc["images"][start:start + n]
    keep = {im["id"] for im in images}
    dest.write_text(json.dumps({"images": images, "categories": doc["categories"],
                                "annotations": [a for a in doc["annotations"] if a["image_id"] in keep]}))
    return dest


def gc_loop(root: str, stop: Path, grace: float) -> int:
    repo = veml.open(root)
    while not stop.exists():
        print(json.dumps({"op": "gc", **repo.gc(grace_s=grace).to_json()}), flush=True)
        time.sleep(0.2)  # leave the writers some CPU; still dozens of passes while they write
    repo.close()
    return 0


def main() -> int:
    if sys.argv[2] == "gc":
        return gc_loop(sys.argv[1], Path(sys.argv[3]), float(sys.argv[4]))
    root, worker, rounds, src_dir, coco = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    images = coco.parent / "images"
    src_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(worker)
    repo = veml.open(root)
    g = repo.stores.graph

    def report(op: str, node, **extra) -> None:
        row = {"op": op, "worker": worker, "id": node.id, "name": node.name, "kind": node.kind,
               "parents": list(node.parents), **extra}
        if node.kind == "DataVersion":
            s, a = g.idset_ref(node.id, "samples"), g.idset_ref(node.id, "annotations")
            row.update(samples=s.count, digest=s.digest, annotations=a.count, ann_digest=a.digest)
        print(json.dumps(row), flush=True)

    n_images = len(json.loads(coco.read_text())["images"])
    prev_table = None
    for r in range(rounds):
        p = f"w{worker}"
        csv = write_csv(src_dir / f"{p}-t{r}.csv", seed=1000 * worker + r, rows=rng.randint(12, 24))
        table = repo.data.import_("table", csv, f"{p}-t{r}", label="y")
        report("import_table", table, source=str(csv))
        pos = repo.data.filter(table.id, "a > 0", f"{p}-t{r}-pos")
        report("filter", pos, base=table.id, where="a > 0")
        if prev_table is not None:
            low = repo.data.filter(prev_table.id, "b < 0.5", f"{p}-t{r - 1}-low")
            report("filter", low, base=prev_table.id, where="b < 0.5")
            merged = repo.data.merge([pos.id, low.id], f"{p}-m{r}")
            report("merge", merged, merged=[pos.id, low.id])
            repo.data.tag(merged.id, f"{p}-tag{r}")
            print(json.dumps({"op": "tag", "tag": f"{p}-tag{r}", "id": merged.id}), flush=True)
        if r % 5 == 2:
            csv2 = write_csv(src_dir / f"{p}-add{r}.csv", seed=5000 + 1000 * worker + r, rows=7)
            added = repo.data.add(table.id, "table", csv2, f"{p}-t{r}-plus", label="y")
            report("add", added, base=table.id, source=str(csv2))
        if r % 3 == 0:
            start = (worker * 7 + r * 3) % (n_images - 4)
            sub = coco_subset(coco, src_dir / f"{p}-c{r}.json", start, 4)
            imported = repo.data.import_("coco", sub, f"{p}-c{r}", images=images)
            report("import_coco", imported, source=str(sub))
            cars = repo.data.filter(imported.id, "category = 'car'", f"{p}-c{r}-car")
            report("filter", cars, base=imported.id, where="category = 'car'")
        if r == 0:
            model = repo.models.add(f"{p}-forest", {"adapter": "sklearn", "task": "tabular-classification",
                                                    "architecture": "random_forest", "parameters": {"n_estimators": 5}})
            report("model", model)
        if r % 4 == 1:
            t = repo.training.train(table.id, f"{p}-forest" if r % 8 == 1 else "logreg", sets={"seed": r}, name=f"{p}-train{r}")
            node = g.get(t["id"])
            report("train", node, status=t["status"], checkpoint=t["checkpoint"], data=table.id)
        # every worker races for the same name and the same tag: one wins, the others get Conflict
        try:
            won = repo.data.filter("base-table", "a > -0.5", f"race-{r}")
            report("filter", won, base=g.resolve("base-table").id, where="a > -0.5", race=True)
        except Conflict:
            print(json.dumps({"op": "lost", "name": f"race-{r}"}), flush=True)
        try:
            repo.data.tag(table.id, f"hot-{r}")
            print(json.dumps({"op": "tag", "tag": f"hot-{r}", "id": table.id}), flush=True)
        except Conflict:
            print(json.dumps({"op": "lost", "name": f"hot-{r}"}), flush=True)
        prev_table = table
    repo.close()
    print(json.dumps({"op": "done", "worker": worker}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
