#!/usr/bin/env python
"""Issue 15, part 3: label-free accuracy estimators side by side on the drift suite's batches.

What ``veml drift --inference I`` reports comes from ``repo.drift.estimates``: on an image classifier, agreement
with the nearest training thumbnail (``agreement``) where the validation split supports it, else ATC-NE (``atc``);
``veml`` is whichever of the two the product chose for the seed's model.  This compares them, on the very batches of
:mod:`benchmarks.lifecycle_eval.drift` (real digits, the same shifts and class mixes), with two estimators from the
literature that do not rest on the model's confidence alone:

* ``gde``: the agreement rate between the deployed model and a twin trained with the same recipe and another
  seed (generalisation-disagreement equality, Jiang et al. 2022); ``gde-cal`` scales it by the held-out
  accuracy / agreement ratio, so it is exact on the validation split.
* ``cot``: 1 - the optimal-transport cost between the batch's softmax rows and the held-out label marginal,
  with cost 1 - p_k (confidence optimal transport, Lu et al. 2023).

Every estimator is calibrated on the training's validation split only (``repo.drift.reference_samples``).

    python -m benchmarks.lifecycle_eval.estimators --seeds 3          # MAE per shift and n, mean over seeds
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.lifecycle_eval.run import SIZE, write_folder  # also puts benchmarks/ on sys.path

from _common import md_table, publish  # noqa: E402

import numpy as np  # noqa: E402

import veml  # noqa: E402
from benchmarks.lifecycle_eval.drift import CLASS_MIX, SHIFTS, batches, tci  # noqa: E402
from veml.lifecycle.estimate import FittedAgreement, FittedATC, confidence  # noqa: E402

warnings.filterwarnings("ignore")
ESTIMATORS = ("veml", "atc", "agreement", "gde", "gde-cal", "cot")
T0 = time.perf_counter()


def cot_accuracy(scores: np.ndarray, prior: np.ndarray) -> float:
    import ot

    cost = 1.0 - np.asarray(scores, np.float64)
    plan = ot.emd(np.full(len(scores), 1.0 / len(scores)), prior, cost)
    return float(1.0 - (plan * cost).sum())


def run_seed(seed: int, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    repo = veml.init(work / f"repo-{seed}")
    gen = work / f"gen-{seed}"
    repo.data.import_("images", write_folder(gen / "train", d.images, d.target, order[:900], [], rng), "train")
    domains = {"none": [], **SHIFTS}
    for name, ops in domains.items():
        repo.data.import_("images", write_folder(gen / name, d.images, d.target, order[900:], ops, rng), f"pool-{name}",
                          role="test")
    repo.models.add("classifier", {"adapter": "torch", "task": "classification", "architecture": a.arch,
                                   "parameters": {"image_size": SIZE, "pretrained": False, "freeze_backbone": False}})
    deployed = {}
    for tag, s in (("model", seed), ("twin", seed + 100)):
        run = repo.training.train("train", "classifier", sets={"epochs": a.epochs, "batch_size": 32, "seed": s}, name=tag)
        deployed[tag] = repo.inference.get(repo.inference.deploy(run["id"], "onnx", "none", name=f"{tag}-onnx").id)
    node, ids, _ = repo.drift.reference_samples(repo.data.get("train"), deployed["model"], True)
    _, _, vtd, vm = repo.inference.run(deployed["model"].id, node.id, data_ids=ids)
    _, _, _, vt = repo.inference.run(deployed["twin"].id, node.id, data_ids=ids)
    val_m, val_t, val_y = np.asarray(vm.scores), np.asarray(vt.scores), vtd.labels
    atc = FittedATC.fit(val_m, val_y)
    acc_val = float((val_m.argmax(1) == val_y).mean())
    agree_val = float((val_m.argmax(1) == val_t.argmax(1)).mean())
    prior = np.bincount(val_y, minlength=val_m.shape[1]) / len(val_y)
    agreement = repo.drift.estimates.fitted(deployed["model"], method="agreement")
    assert isinstance(agreement, FittedAgreement), agreement
    chosen = "agreement" if isinstance(repo.drift.estimates.fitted(deployed["model"]), FittedAgreement) else "atc"
    pools = {}
    for name in domains:
        _, _, td, pm = repo.inference.run(deployed["model"].id, f"pool-{name}")
        _, _, _, pt = repo.inference.run(deployed["twin"].id, f"pool-{name}")
        thumbs = repo.drift.estimates.thumbnails(f"pool-{name}", td.data_ids)
        pools[name] = (np.asarray(pm.scores), np.asarray(pt.scores), td.labels, thumbs)
    repo.close()
    cells: dict[str, dict[str, list[float]]] = {}
    brng = np.random.default_rng(3000 + seed)
    plan = [("none", "none", None)] + [(s, s, None) for s in SHIFTS] + [(s, "none", q) for s, q in CLASS_MIX.items()]
    for shift, pool_name, mix in plan:
        m_scores, t_scores, labels, thumbs = pools[pool_name]
        for n in a.ns:
            if mix is None and n > len(labels):
                continue
            errs: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
            for idx in batches({"labels": labels}, n, a.trials, brng, mix):
                acc = float((m_scores[idx].argmax(1) == labels[idx]).mean())
                agree = float((m_scores[idx].argmax(1) == t_scores[idx].argmax(1)).mean())
                est = {"atc": float(np.mean(confidence(m_scores[idx], atc.score) > atc.threshold)), "gde": agree,
                       "agreement": agreement.estimate(m_scores[idx], thumbs[idx], bootstrap=2)["value"],
                       "gde-cal": min(1.0, agree * acc_val / agree_val), "cot": cot_accuracy(m_scores[idx], prior)}
                est["veml"] = est[chosen]
                for e in ESTIMATORS:
                    errs[e].append(100 * abs(est[e] - acc))
            cells[f"{shift}|{n}"] = {e: float(np.mean(v)) for e, v in errs.items()}
    print(f"[{time.perf_counter() - T0:7.1f} s] seed {seed} done", file=sys.stderr, flush=True)
    return {"seed": seed, "cells": cells, "val_acc": acc_val, "val_agreement": agree_val, "chosen": chosen,
            "agreement_ratio": agreement.ratio}


def report(R: list[dict[str, Any]], a: argparse.Namespace, secs: float) -> tuple[str, dict[str, Any]]:
    keys = list(R[0]["cells"])
    rows, overall = [], {}
    for key in keys:
        shift, n = key.split("|")
        rows.append([shift, n] + [f"{np.mean([r['cells'][key][e] for r in R]):.1f}" for e in ESTIMATORS])
    for e in ESTIMATORS:
        per_seed = [float(np.mean([r["cells"][k][e] for k in keys])) for r in R]
        overall[e] = tci(per_seed)
    L = [f"Command: `python -m benchmarks.lifecycle_eval.estimators --seeds {a.seeds} --first-seed {a.first_seed}` "
         f"({len(R)} seeds, {a.arch} {a.epochs} epochs, {a.trials} batches per cell, {secs / 60:.1f} min). "
         "MAE in accuracy points per batch, mean over seeds. `veml` is the estimator `veml drift` chose per seed: "
         + ", ".join(f"seed {r['seed']}: {r['chosen']} (validation accuracy / agreement {r['agreement_ratio']:.3f})"
                     for r in R) + ".", "",
         md_table(["shift", "n"] + list(ESTIMATORS), rows), "",
         md_table(["estimator", "overall MAE (mean ± 95 % t over seeds)"],
                  [[e, f"{overall[e][0]:.2f} ± {overall[e][1]:.2f}"] for e in ESTIMATORS]), "",
         f"`veml drift`'s estimate: overall MAE {overall['veml'][0]:.2f} points; target <= 3: "
         + ("**met**" if overall["veml"][0] <= 3 else "**not met**")]
    return "\n".join(L), {"overall": overall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--ns", default="10,100,500")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    a = p.parse_args()
    a.ns = [int(x) for x in a.ns.split(",")]
    work = Path(tempfile.mkdtemp(prefix="veml-estimators-"))
    try:
        R = [run_seed(s, a, work) for s in range(a.first_seed, a.first_seed + a.seeds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md, summary = report(R, a, time.perf_counter() - T0)
    publish(a.out, "estimators_eval", {"args": {k: v for k, v in vars(a).items() if k != "out"}, "summary": summary,
                                       "raw": R}, md)


if __name__ == "__main__":
    main()
