#!/usr/bin/env python
"""Content-addressed samples: the same 2,000 images imported twice, into two data versions.

Measures, for each import, the bytes the sample store grew by (per sample), the import throughput
(images/s, parse + store + record, through ``repo.data.import_``, what ``veml data import`` runs) and
the time to read the version's every payload back (``checkout(...).samples_table()``).
Before content addressing the second import stored every payload again; after it, it stores only
the rows' metadata.  To compare, run this script against each checkout:

    PYTHONPATH=/path/to/old/src .venv/bin/python benchmarks/bench_cas.py --out /tmp/cas-before
    PYTHONPATH=src              .venv/bin/python benchmarks/bench_cas.py --out /tmp/cas-after

Images: generated 64x64 PNG driving scenes (``veml.datasets``), COCO layout, written once per run.
Results go to ``OUT/cas.json`` and ``OUT/cas.md``; the Markdown is also printed.  Warm cache.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, human_bytes, load_line, machine_info, machine_line, md_table, publish, tree_bytes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="fresh repositories; the median import time is reported")
    ap.add_argument("--out", type=Path, default=Path("/tmp/veml-bench-cas"))
    args = ap.parse_args()

    import veml
    from veml.datasets import generate_driving_coco

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    ann = generate_driving_coco(args.out / "gen", args.images, seed=11)
    payload = sum(p.stat().st_size for p in (ann.parent / "images").iterdir())
    runs = []
    with LoadSampler() as load:
        for r in range(args.repeats):
            root = args.out / f"repo{r}"
            veml.init(root).close()
            data_dir = root / ".veml" / "data"
            sizes, times, new = [tree_bytes(data_dir)["apparent"]], [], []
            for name in ("first", "second"):
                with veml.open(root) as repo:
                    t0 = time.perf_counter()
                    node = repo.data.import_("coco", ann, name, images=ann.parent / "images")
                    times.append(time.perf_counter() - t0)
                    new.append(node.props.get("source", {}).get("new_samples"))
                sizes.append(tree_bytes(data_dir)["apparent"])
            reads = []
            with veml.open(root) as repo:  # reading every payload back: the second version's come by digest
                for name in ("first", "second"):
                    t0 = time.perf_counter()
                    repo.data.checkout(name).samples_table()
                    reads.append(time.perf_counter() - t0)
            runs.append({"seconds": times, "grew": [sizes[1] - sizes[0], sizes[2] - sizes[1]], "new_samples": new,
                         "read_seconds": reads})
            shutil.rmtree(root)
    n = args.images
    rows, results = [], {"images": n, "payload_bytes": payload, "runs": runs, "load": load.summary(), "machine": machine_info()}
    for i, name in enumerate(("first import", "second import (same bytes)")):
        secs = sorted(run["seconds"][i] for run in runs)[len(runs) // 2]
        grew = runs[-1]["grew"][i]
        read = sorted(run["read_seconds"][i] for run in runs)[len(runs) // 2]
        rows.append([name, runs[-1]["new_samples"][i], human_bytes(grew), f"{grew / n:,.0f}", f"{n / secs:,.0f}",
                     f"{read * 1000:,.0f}"])
        results[f"import_{i + 1}"] = {"bytes_per_sample": grew / n, "images_per_s": n / secs, "seconds": secs,
                                      "read_all_payloads_s": read}
    md = "\n".join([
        f"{n} PNG images ({human_bytes(payload)} of files, {payload / n:,.0f} B each), imported twice into one repository "
        f"(median of {len(runs)} fresh repositories).",
        "",
        md_table(["import", "new_samples", "store grew", "bytes/sample", "images/s", "read back (ms)"], rows),
        "",
        machine_line(results["machine"]),
        load_line(results["load"], results["machine"].get("nproc")),
    ])
    publish(args.out, "cas", results, md)


if __name__ == "__main__":
    main()
