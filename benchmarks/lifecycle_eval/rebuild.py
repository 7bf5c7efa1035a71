#!/usr/bin/env python
"""Issue 15 part 4: do rebuilds recover? On real handwriting, through ``repo.rebuild.rebuild`` (= ``veml rebuild``).

Data: scikit-learn's bundled digits (real 8x8 handwriting, no download), upscaled to 32x32 RGB as in
``benchmarks.lifecycle_eval.run``.  Per seed the digits are split per class into an old pool and a new pool.

* The deployed lifecycle: a classifier trained from scratch on ``--per-class`` clean digits per class,
  deployed to ONNX.
* Per shift (rotation, noise, low contrast): ``--new-per-class`` labelled new digits per class arrive
  under that shift.  ``veml rebuild`` splits them once into a held-back 30 % (where everything is scored)
  and the rest, and every method runs on the same split:
  - ``full``: old + new data, retrained with the old recipe from the deployed weights;
  - ``transfer``: the old checkpoint fine-tuned on the new data (transfer's recipe);
  - ``active``: ``--budget`` samples chosen by VeML (uncertainty + diversity in the model's own features),
    "labelled" from the ground truth the benchmark knows, then fine-tuned on;
  - ``random``: the baseline for ``active``: the same budget drawn uniformly from the same rest, fine-tuned
    with exactly the parameters the active run used (``repo.training.train(..., init_from=old)``);
  - ``adapt`` (``adabn`` and ``tent``): no labels.
* oracle: full retraining with all labels (old + the rest of the new), another seed, the better of from scratch and
  from the deployed weights.  recovery = (metric after - before) / (oracle - before), before = the deployed model on
  the held-back slice, over the (seed, shift) cells where the shift did harm (oracle - before >= 5 points).

    python -m benchmarks.lifecycle_eval.rebuild              # 3 seeds x 3 shifts
    python -m benchmarks.lifecycle_eval.rebuild --quick      # smoke run
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import numpy as np  # noqa: E402

import veml  # noqa: E402
from _common import md_table, verdict  # noqa: E402
from lifecycle_eval.harness import run_and_publish  # noqa: E402
from lifecycle_eval.run import DOMAINS, SIZE, ci, fmt, log, split, write_folder  # noqa: E402

SHIFTS = ["rot30", "noise35", "lowcontrast"]
METHODS = ["full", "transfer", "active", "random", "adabn", "tent"]
MIN_GAP = 0.05  # recovery is computed for (seed, shift) cells where the oracle beats the deployed model by >= 5 points


def label_file(export: Path, out: Path) -> Path:
    """What an annotator sends back: the exported COCO file with each image's true class (from its folder)."""
    doc = json.loads((export / "annotations.json").read_text())
    cats = {f"digit{c}": c + 1 for c in range(10)}
    anns = []
    for im in doc["images"]:
        m = re.search(r"(digit\d)", im["file_name"])
        if m is None:
            raise SystemExit(f"cannot tell the class of exported sample {im['file_name']!r}")
        anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cats[m.group(1)]})
    doc["annotations"], doc["categories"] = anns, [{"id": i, "name": n} for n, i in cats.items()]
    out.write_text(json.dumps(doc))
    return out


def metric(res: dict[str, Any]) -> float:
    return float(res["metric"]["value"])


def run_shift(repo: veml.Repository, a: argparse.Namespace, seed: int, shift: str, dep: str, gen: Path) -> dict[str, Any]:
    new = f"new-{shift}"
    common = {"holdout": 0.3, "seed": seed}
    out: dict[str, Any] = {}
    if not a.all_methods:
        return active_vs_random(repo, a, seed, shift, dep, gen, common)
    full = repo.rebuild.rebuild(dep, new, "full", name=f"full-{shift}", **common)
    before, held = float(full["previous"]["metric"]["value"]), full["evaluated_on"]
    merged = repo.training.describe(repo.training.get(full["training"]))["data"]
    recipe = {"epochs": a.epochs, "batch_size": 16, "seed": seed + 100}
    prev = full["previous"]["training"]
    oracles = {how: repo.training.train(merged, "classifier", sets=recipe, test=held, name=f"oracle-{how}-{shift}",
                                        init_from=prev if how == "warm" else None) for how in ("scratch", "warm")}
    acc = {how: float(o["metrics"]["accuracy"]) for how, o in oracles.items()}
    best = max(acc, key=acc.get)
    out["oracle"] = {"metric": acc[best], "train_s": oracles[best]["profile"]["train_s"], "kind": best, **acc}
    out["full"] = {"metric": metric(full), "train_s": full["train_s"], "labels": full["labels_used"]}
    tr = repo.rebuild.rebuild(dep, new, "transfer", name=f"transfer-{shift}", **common)
    out["transfer"] = {"metric": metric(tr), "train_s": tr["train_s"], "labels": tr["labels_used"]}
    out.update(active_vs_random(repo, a, seed, shift, dep, gen, common))
    for how in ("adabn", "tent"):
        ad = repo.rebuild.rebuild(dep, new, "adapt", adapt=how, name=f"{how}-{shift}", **common)
        out[how] = {"metric": metric(ad), "train_s": ad["train_s"], "labels": 0}
    gap = out["oracle"]["metric"] - before
    for m in METHODS:  # recovery is defined only where the shift did harm that all labels could undo
        out[m]["recovery"] = (out[m]["metric"] - before) / gap if gap >= MIN_GAP else float("nan")
    out["before"], out["gap"] = before, gap
    log(f"seed {seed} {shift}: before {before:.3f} oracle {out['oracle']['metric']:.3f}; " +
        ", ".join(f"{m} {out[m]['metric']:.3f}" for m in METHODS))
    return out


def active_vs_random(repo: veml.Repository, a: argparse.Namespace, seed: int, shift: str, dep: str, gen: Path,
                     common: dict[str, Any]) -> dict[str, Any]:
    """``active`` (VeML's choice, labelled by the benchmark) and ``random`` (the same budget, the same fine-tuning)."""
    new, out = f"new-{shift}", {}
    step1 = repo.rebuild.rebuild(dep, new, "active", budget=a.budget, export=gen / f"to-label-{shift}", **common)
    labels = label_file(gen / f"to-label-{shift}", gen / f"labels-{shift}.json")
    act = repo.rebuild.rebuild(dep, new, "active", labels=labels, name=f"active-{shift}", **common)
    picked = json.loads(labels.read_text())["annotations"]
    out["active"] = {"metric": metric(act), "train_s": act["train_s"], "labels": act["labels_used"],
                     "classes": len({a["category_id"] for a in picked})}
    # random: the same budget from the same rest, fine-tuned exactly as the active run was
    rest = repo.data.get(step1["selection"])
    rest_id = next(p for p in repo.lineage.query(rest.id, "up", 1).nodes if p.kind == "DataVersion" and p.id != rest.id).id
    ids = repo.data.checkout(rest_id).data_ids
    pick = np.sort(np.random.default_rng(seed + 7).choice(ids, a.budget, replace=False))
    rnd_data = repo.data.select(rest_id, pick, f"random-pick-{shift}", f"benchmark: random {a.budget} for shift {shift}")
    act_run = repo.training.describe(repo.training.get(act["training"]))
    prev_training = act["previous"]["training"]
    rnd = repo.training.train(rnd_data.id, "classifier", sets=act_run["params"], init_from=prev_training,
                              test=act["evaluated_on"],
                              name=f"random-{shift}")
    names = repo.data.sample_metadata(rnd_data.id)["file_name"].to_pylist()
    out["random"] = {"metric": float(rnd["metrics"]["accuracy"]), "train_s": rnd["profile"]["train_s"], "labels": a.budget,
                     "classes": len({re.search(r"digit\d", n).group(0) for n in names})}
    out["before"] = float(act["previous"]["metric"]["value"])
    log(f"seed {seed} {shift}: before {out['before']:.3f}; active {out['active']['metric']:.3f} "
        f"({out['active']['classes']} classes), random {out['random']['metric']:.3f} ({out['random']['classes']} classes)")
    return out


def run_seed(seed: int, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target
    rng = np.random.default_rng(seed)
    new_pool, old_pool = split(labels, rng, a.new_per_class)
    repo = veml.init(work / f"repo-seed{seed}")
    gen = work / f"gen-seed{seed}"
    idx = np.concatenate([rng.choice(old_pool[c], min(a.per_class, len(old_pool[c])), replace=False) for c in range(10)])
    repo.data.import_("images", write_folder(gen / "deployed", images, labels, idx, [], rng), "deployed")
    for s in a.shifts:
        nidx = np.concatenate([new_pool[c] for c in range(10)])
        repo.data.import_("images", write_folder(gen / f"new-{s}", images, labels, nidx, DOMAINS[s], rng), f"new-{s}")
    repo.models.add("classifier", {"adapter": "torch", "task": "classification", "architecture": a.arch,
                                   "parameters": {"image_size": SIZE, "pretrained": False, "freeze_backbone": False}})
    run = repo.training.train("deployed", "classifier", sets={"epochs": a.epochs, "batch_size": 16, "seed": seed}, name="old")
    dep = repo.inference.deploy(run["id"], "onnx", "none", name="old-onnx")
    log(f"seed {seed}: deployed model trained ({run['profile']['train_s']:.1f} s)")
    return {s: run_shift(repo, a, seed, s, dep.name, gen) for s in a.shifts}


def report(runs: list[dict[str, Any]], a: argparse.Namespace, seconds: float) -> tuple[str, dict[str, Any]]:
    cells = [(r, s) for r in runs for s in a.shifts]
    if not a.all_methods:
        return report_active(runs, cells, a, seconds)
    harmed = [(r, s) for r, s in cells if r[s]["gap"] >= MIN_GAP]
    rec = {m: ci([r[s][m]["recovery"] for r, s in harmed]) for m in METHODS}
    L = [f"### Rebuild recovery: digits (real handwriting), {len(runs)} seed(s) x {len(a.shifts)} shifts, {a.arch} at {SIZE}x{SIZE}", "",
         f"Deployed: {a.per_class}/class clean digits, {a.epochs} epochs from scratch. New data: {a.new_per_class}/class per shift "
         f"({', '.join(a.shifts)}), 30 % held back for scoring. Active/random budget {a.budget}. "
         "oracle = the better of two trainings on all labels (old + the new rest): from scratch and from the deployed "
         "weights. recovery = (after - before) / (oracle - before), over the (seed, shift) cells where the oracle beats the "
         f"deployed model by >= {MIN_GAP * 100:.0f} points ({len(harmed)} of {len(cells)}; elsewhere the shift did no harm "
         "that labels could undo); mean [95 % t-interval].", ""]
    head = ["shift", "before", "oracle (scratch / warm)"] + METHODS
    rows = [[s, f"{np.mean([r[s]['before'] for r in runs]):.3f}",
             f"{np.mean([r[s]['oracle']['metric'] for r in runs]):.3f} ({np.mean([r[s]['oracle']['scratch'] for r in runs]):.3f}"
             f" / {np.mean([r[s]['oracle']['warm'] for r in runs]):.3f})"]
            + [f"{np.mean([r[s][m]['metric'] for r in runs]):.3f}" for m in METHODS] for s in a.shifts]
    L += ["Accuracy on the held-back slice (mean over seeds):", "", md_table(head, rows), ""]
    rows = [[m, fmt(rec[m]), f"{np.mean([r[s][m]['labels'] for r, s in cells]):.0f}",
             f"{np.mean([r[s][m]['train_s'] / r[s]['full']['train_s'] for r, s in cells]):.2f}"] for m in METHODS]
    L += ["Full and transfer rebuilds start from the deployed weights (`veml rebuild` default; `--scratch` retrains from "
          "a fresh initialisation).", ""]
    L += [md_table(["method", "recovery", "labels used", "training time / full's"], rows), ""]
    diff = ci([r[s]["active"]["metric"] * 100 - r[s]["random"]["metric"] * 100 for r, s in cells])
    t_ratio = float(np.mean([r[s]["transfer"]["train_s"] / r[s]["full"]["train_s"] for r, s in cells]))
    best_adapt = max(("adabn", "tent"), key=lambda m: rec[m][0])
    targets = [
        ["full: recovery >= 0.9", fmt(rec["full"]), verdict(rec["full"][0] >= 0.9)],
        ["transfer: recovery >= 0.8", fmt(rec["transfer"]), verdict(rec["transfer"][0] >= 0.8)],
        ["transfer: <= 1/3 of full's training time", f"{t_ratio:.2f}", verdict(t_ratio <= 1 / 3)],
        [f"active beats random at the same budget ({a.budget}), interval excluding 0 (accuracy points)", fmt(diff, 1),
         verdict(diff[1] > 0)],
        [f"adapt recovers > 0 without labels (best: {best_adapt}), interval excluding 0", fmt(rec[best_adapt]),
         verdict(rec[best_adapt][1] > 0)],
    ]
    L += ["#### Issue 15 part 4 targets", "", md_table(["target", "measured", "verdict"], targets), ""]
    L += [f"Seconds: {seconds:.0f}. Command: `{' '.join(sys.argv)}`", ""]
    return "\n".join(L), {"recovery": rec, "active_minus_random": diff, "runs": runs}


def report_active(runs: list[dict[str, Any]], cells: list, a: argparse.Namespace, seconds: float) -> tuple[str, dict[str, Any]]:
    """``--methods active,random``: the one comparison, per shift and pooled."""
    diff = ci([r[s]["active"]["metric"] * 100 - r[s]["random"]["metric"] * 100 for r, s in cells])
    rows = [[s, f"{np.mean([r[s]['before'] for r in runs]):.3f}", f"{np.mean([r[s]['active']['metric'] for r in runs]):.3f}",
             f"{np.mean([r[s]['random']['metric'] for r in runs]):.3f}",
             fmt(ci([r[s]["active"]["metric"] * 100 - r[s]["random"]["metric"] * 100 for r in runs]), 1)] for s in a.shifts]
    L = [f"### Active vs random labels: digits, seeds {a.first_seed}..{a.first_seed + a.seeds - 1} x {len(a.shifts)} shifts, "
         f"budget {a.budget}, {a.arch} at {SIZE}x{SIZE}", "",
         md_table(["shift", "before", "active", "random", "active - random (points)"], rows), "",
         md_table(["target", "measured", "verdict"],
                  [[f"active beats random at the same budget ({a.budget}), interval excluding 0 (accuracy points)",
                    fmt(diff, 1), verdict(diff[1] > 0)]]), "",
         f"Seconds: {seconds:.0f}. Command: `{' '.join(sys.argv)}`", ""]
    return "\n".join(L), {"active_minus_random": diff, "runs": runs}


def pooled_active(paths: list[Path]) -> str:
    """Active minus random (accuracy points) over every (seed, shift) cell of several result files."""
    runs = [r for p in paths for r in json.loads(p.read_text())["runs"]]
    from scipy.stats import binomtest

    diffs = [100 * (r[s]["active"]["metric"] - r[s]["random"]["metric"]) for r in runs for s in r]
    per_seed = [float(np.mean([100 * (r[s]["active"]["metric"] - r[s]["random"]["metric"]) for s in r])) for r in runs]
    diff, ahead, behind = ci(diffs), sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    sign_p = binomtest(ahead, ahead + behind).pvalue if ahead + behind else float("nan")
    return (f"Pooled over {len(paths)} file(s), {len(runs)} seeds, {len(diffs)} (seed, shift) cells: active - random "
            f"{fmt(diff, 2)} points; active ahead in {ahead}, behind in {behind} (sign test p = {sign_p:.3f}); "
            f"with the seeds as the unit {fmt(ci(per_seed), 2)}; active beats random, interval over cells excluding 0: "
            f"{verdict(diff[1] > 0)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1 shift, 1 epoch, tiny sets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (unseen ones confirm)")
    p.add_argument("--methods", choices=["all", "active,random"], default="all",
                   help="'active,random': only the active-learning comparison (no oracle, no recovery)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--per-class", type=int, default=40, help="labelled clean digits per class the deployed model learned")
    p.add_argument("--new-per-class", type=int, default=30, help="labelled new digits per class per shift")
    p.add_argument("--budget", type=int, default=30, help="labels active learning (and random) may ask for")
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--pool", type=Path, nargs="+", help="no run: active - random pooled over these result files")
    a = p.parse_args(argv)
    if a.pool:
        print(pooled_active(a.pool))
        return 0
    a.shifts = a.shifts.split(",")
    a.all_methods = a.methods == "all"
    if a.quick:
        a.seeds, a.epochs, a.per_class, a.new_per_class, a.budget, a.shifts = 1, 1, 5, 6, 8, a.shifts[:1]
    for s in a.shifts:
        if s not in DOMAINS:
            p.error(f"unknown shift {s!r}: use {', '.join(DOMAINS)}")
    run_and_publish(run_seed, report, a, "veml-rebuild-eval-", "rebuild_eval_quick" if a.quick else "rebuild_eval" if a.all_methods else "rebuild_active")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
