#!/usr/bin/env python
"""Issue 15: is ``veml drift --inference I`` calibrated, is it as powerful as MMD, and is its accuracy estimate right?

Data: scikit-learn's bundled digits (1797 real 8x8 handwritten digits), upscaled to 32x32 RGB PNGs by the
issue-14 harness (:mod:`benchmarks.lifecycle_eval.run`: ``shift``/``write_folder``).  Per seed the digits are
split into a training pool (900) and a disjoint test pool (the other 897).  A classifier (``--arch``, from
scratch) is trained on the training pool through ``repo.training.train`` -- which holds out its validation split
(20 %) and records it -- and deployed as ONNX.  The test pool is imported once per domain (unshifted, rotation,
blur, noise at two intensities each), and the deployment is run once over each pool (``repo.inference.run``).
Class mix is label shift: batches from the unshifted pool in which a share ``q`` is drawn from classes 0-2 only.

Batches are random subsets (without replacement) of a pool; the very same index lists go to every method:

* ``bbsd`` (veml's default with ``--inference``): the detector ``repo.drift.detector`` fits on the reference
  ``repo.drift.reference_samples`` chooses -- the validation split -- i.e. exactly what ``veml drift`` tests, on
  the blocks ``repo.drift.features`` gives (the softmax, and pixel thumbnails of the inputs);
  ``bbsd (training ref)`` the same test with the model's outputs on its own training data (before issue 15),
  tested on the unshifted batches only (its false-positive rate is the point).
* ``MMD (alibi rule)``: a re-implementation of alibi-detect 0.13 ``MMDDrift`` (alibi-detect is not installed
  here): Gaussian RBF kernel with sigma^2 = median(squared distances within the reference) / 2, unbiased MMD^2
  with a zeroed diagonal, 100 permutations, p = mean(MMD^2 <= permuted MMD^2), drift when p < 0.05 -- on the
  same reference (validation split), once on the model's softmax (the features bbsd tests) and once on the raw
  pixels (alibi without a preprocessing step).
* Estimate: ``repo.drift.estimates.fitted(I)`` (what ``veml drift`` reports: agreement with the nearest training
  thumbnail where the validation split supports it, else ATC-NE; both fitted on the validation split): estimated
  accuracy per batch vs its true accuracy; interval coverage on the n = 100 batches.

    python -m benchmarks.lifecycle_eval.drift            # 3 seeds
    python -m benchmarks.lifecycle_eval.drift --quick    # smoke run
    python -m benchmarks.lifecycle_eval.drift --first-seed 3 --seeds 1 --out out3   # one seed (run several at once)
    python -m benchmarks.lifecycle_eval.drift --pool out3/drift_eval.json out4/drift_eval.json --out pooled
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.lifecycle_eval.run import SIZE, write_folder  # also puts benchmarks/ on sys.path

from _common import machine_info, md_table, publish, verdict  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import veml  # noqa: E402
from veml.lifecycle.estimate import BOOTSTRAP, FittedAgreement  # noqa: E402

warnings.filterwarnings("ignore")
ALPHA = 0.05
SHIFTS = {"rotation": [("rotate", 30)], "rotation+": [("rotate", 60)], "blur": [("blur", 1.0)], "blur+": [("blur", 2.0)],
          "noise": [("noise", 0.2)], "noise+": [("noise", 0.4)]}
CLASS_MIX = {"class mix": 0.3, "class mix+": 0.6}
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# --- the MMD baseline: alibi-detect's MMDDrift rule, re-implemented ------------------------------------
class AlibiRuleMMD:
    """Kernel matrix over reference + pool computed once; a test indexes it (same numbers as computing per batch)."""

    def __init__(self, ref: np.ndarray, pool: np.ndarray, permutations: int = 100) -> None:
        ref, pool = np.asarray(ref, np.float64), np.asarray(pool, np.float64)
        d_ref = _sq(ref, ref)
        m = len(ref)
        off = np.sort(d_ref.ravel())[m:]  # alibi: the n zero diagonal entries sorted first, then the median
        sigma2 = 0.5 * off[len(off) // 2 - 1] if len(off) else 1.0
        allx = np.concatenate([ref, pool])
        self.k = np.exp(-_sq(allx, allx) / (2 * sigma2))
        np.fill_diagonal(self.k, 0.0)
        self.m, self.permutations = m, permutations

    def test(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[bool, float]:
        rows = np.concatenate([np.arange(self.m), self.m + idx])
        k = self.k[np.ix_(rows, rows)]
        m, n = self.m, len(idx)
        a = np.zeros((self.permutations + 1, m + n))
        a[0, :m] = 1
        for i in range(self.permutations):
            a[i + 1, rng.permutation(m + n)[:m]] = 1
        b = 1 - a
        ka = a @ k
        sxx, sxy = (ka * a).sum(1), (ka * b).sum(1)
        syy = ((b @ k) * b).sum(1)
        mmd = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
        p = float(np.mean(mmd[0] <= mmd[1:]))
        return p < ALPHA, p


def _sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


# --- one seed -------------------------------------------------------------------------------------------
def build(seed: int, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images, labels = d.images, d.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train_idx, test_idx = order[:900], order[900:]
    repo = veml.init(work / f"repo-{seed}")
    gen = work / f"gen-{seed}"
    repo.data.import_("images", write_folder(gen / "train", images, labels, train_idx, [], rng), "train")
    domains = {"none": [], **SHIFTS}
    for name, ops in domains.items():
        repo.data.import_("images", write_folder(gen / name, images, labels, test_idx, ops, rng), f"pool-{name}", role="test")
    repo.models.add("classifier", {"adapter": "torch", "task": "classification", "architecture": a.arch,
                                   "parameters": {"image_size": SIZE, "pretrained": False, "freeze_backbone": False}})
    run = repo.training.train("train", "classifier", sets={"epochs": a.epochs, "batch_size": 32, "seed": seed}, name="clf")
    inf = repo.inference.deploy(run["id"], "onnx", "none", name="clf-onnx")
    log(f"seed {seed}: trained (validation accuracy {run['metrics']['accuracy']:.3f}, {run['profile']['train_s']:.0f} s)")
    inode = repo.inference.get(inf.id)
    train = repo.data.get("train")
    node, ids, split = repo.drift.reference_samples(train, inode, True)
    held = repo.drift.detector(node, "bbsd", inode, alpha=ALPHA, ids=ids, split=split)
    seen = repo.drift.detector(train, "bbsd", inode, alpha=ALPHA, split="training")
    est = repo.drift.estimates.fitted(inode)  # what veml drift reports: agreement or ATC, as the product chooses
    assert not isinstance(est, str), est
    _, _, vtd, vpred = repo.inference.run(inode.id, node.id, data_ids=ids)
    pools = {}
    for name in domains:
        _, _, td, pr = repo.inference.run(inode.id, f"pool-{name}")
        feats = repo.drift.features(repo.data.get(f"pool-{name}"), "bbsd", inode)  # the blocks veml drift tests
        assert np.allclose(feats["softmax"], np.asarray(pr.scores))  # same rows, same order
        pools[name] = {"scores": np.asarray(pr.scores), "labels": td.labels, "feats": feats,
                       "pixels": td.images.reshape(len(td), -1)[:, ::3].astype(np.float32) / 255.0,
                       "thumbs": repo.drift.estimates.thumbnails(f"pool-{name}", td.data_ids)}
    ref_pix = vtd.images.reshape(len(vtd), -1)[:, ::3].astype(np.float32) / 255.0
    repo.close()
    return {"held": held, "seen": seen, "est": est, "split": split, "n_ref": len(ids) if ids is not None else None,
            "val_scores": np.asarray(vpred.scores), "ref_pix": ref_pix, "pools": pools,
            "val_acc": float(est.reference_accuracy), "classes": 10}


def estimate(fitted: Any, pool: dict[str, Any], idx: np.ndarray, bootstrap: int) -> dict[str, Any]:
    """The product's estimate for the batch ``idx`` of ``pool``."""
    if isinstance(fitted, FittedAgreement):
        return fitted.estimate(pool["scores"][idx], pool["thumbs"][idx], bootstrap=bootstrap)
    return fitted.estimate(pool["scores"][idx], bootstrap=bootstrap)


def batches(pool: dict[str, Any], n: int, trials: int, rng: np.random.Generator, mix: float | None) -> list[np.ndarray]:
    size = len(pool["labels"])
    out = []
    minority = np.flatnonzero(pool["labels"] <= 2)
    for _ in range(trials):
        if mix is None:
            out.append(np.sort(rng.choice(size, min(n, size), replace=False)))
        else:
            k = int(round(mix * n))
            skew = rng.choice(minority, min(k, len(minority)), replace=False)
            rest = rng.choice(np.setdiff1d(np.arange(size), skew), n - len(skew), replace=False)
            out.append(np.sort(np.concatenate([skew, rest])))
    return out


def run_seed(seed: int, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    S = build(seed, a, work)
    rng = np.random.default_rng(1000 + seed)
    mmd_soft = {k: AlibiRuleMMD(S["val_scores"], p["scores"], a.permutations) for k, p in S["pools"].items()}
    mmd_pix = {k: AlibiRuleMMD(S["ref_pix"], p["pixels"], a.permutations) for k, p in S["pools"].items()}
    cells: list[dict[str, Any]] = []
    plan = [("none", "none", None, a.null_trials)] + [(s, s, None, a.trials) for s in SHIFTS] + \
           [(s, "none", q, a.trials) for s, q in CLASS_MIX.items()]
    for shift_name, pool_name, mix, trials in [step for step in plan if step[3] > 0]:  # --trials 0: no shifts
        pool = S["pools"][pool_name]
        feats = pool["feats"]
        correct = (pool["scores"].argmax(1) == pool["labels"]).astype(float)
        for n in a.ns:
            if mix is None and n > len(pool["labels"]):
                continue
            rec = {"shift": shift_name, "n": n, "held": [], "seen": [], "mmd_soft": [], "mmd_pix": [], "acc": [], "est": [],
                   "low": [], "high": []}
            for j, idx in enumerate(batches(pool, n, trials, rng, mix)):
                batch = {k: v[idx] for k, v in feats.items()}
                rec["held"].append(S["held"].test(batch).drift)
                if shift_name == "none":
                    rec["seen"].append(S["seen"].test(batch).drift)
                if shift_name == "none" and j >= a.mmd_null:  # MMD's own FPR on the first batches only (cost)
                    pass
                else:
                    rec["mmd_soft"].append(mmd_soft[pool_name].test(idx, rng)[0])
                if not a.no_pixels and not (shift_name == "none" and j >= a.mmd_null):
                    rec["mmd_pix"].append(mmd_pix[pool_name].test(idx, rng)[0])
                rec["acc"].append(float(correct[idx].mean()))
                with_interval = n == 100 and j < a.interval_trials
                e = estimate(S["est"], pool, idx, BOOTSTRAP if with_interval else 2)
                rec["est"].append(e["value"])
                if with_interval:
                    rec["low"].append(e["low"])
                    rec["high"].append(e["high"])
            cells.append(rec)
        log(f"seed {seed}: {shift_name} done")
    return {"seed": seed, "val_acc": S["val_acc"], "n_ref": S["n_ref"], "split": S["split"], "cells": cells,
            "estimator": "agreement" if isinstance(S["est"], FittedAgreement) else "atc"}


# --- statistics -----------------------------------------------------------------------------------------
def clopper_pearson_upper(k: int, n: int, level: float = 0.95) -> float:
    return 1.0 if k >= n else float(stats.beta.ppf(level + (1 - level) / 2, k + 1, n - k))


def reference_upper(rates: list[float], level: float = 0.95) -> float:
    """One-sided upper bound on the mean false-positive rate over references (t over per-reference rates):
    the batches of one reference share it, so they are not independent and Clopper-Pearson alone is optimistic."""
    if len(rates) < 2:
        return float("nan")
    return float(np.mean(rates) + stats.t.ppf(level, len(rates) - 1) * np.std(rates, ddof=1) / math.sqrt(len(rates)))


def fpr_upper(r: dict[str, Any]) -> float:
    """The larger of the two bounds: Clopper-Pearson over batches and t over references."""
    refs = r["held_by_seed"]
    return max(clopper_pearson_upper(r["held_k"], r["batches"]), reference_upper(refs) if len(refs) > 1 else 0.0)


def tci(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if not math.isnan(x)]
    if len(xs) < 2:
        return (xs[0] if xs else float("nan")), float("nan")
    return float(np.mean(xs)), float(stats.t.ppf(0.975, len(xs) - 1) * np.std(xs, ddof=1) / math.sqrt(len(xs)))


def summarise(R: list[dict[str, Any]], a: argparse.Namespace) -> dict[str, Any]:
    methods = ["held", "seen", "mmd_soft"] + ([] if a.no_pixels else ["mmd_pix"])
    keys = sorted({(c["shift"], c["n"]) for r in R for c in r["cells"]}, key=lambda k: (k[0] != "none", k[0], k[1]))
    table: dict[str, Any] = {}
    for shift, n in keys:
        cs = [(r, c) for r in R for c in r["cells"] if c["shift"] == shift and c["n"] == n]
        row: dict[str, Any] = {"batches": sum(len(c["acc"]) for _, c in cs),
                               "mmd_batches": sum(len(c["mmd_soft"]) for _, c in cs)}
        for m in methods:
            flags = [f for _, c in cs for f in c[m]]
            row[m] = float(np.mean(flags)) if flags else float("nan")
            row[m + "_k"] = int(np.sum(flags))
        drops = [r["val_acc"] - acc for r, c in cs for acc, f in zip(c["acc"], c["held"]) if f]
        row["flagged"] = len(drops)
        row["held_by_seed"] = [float(np.mean(c["held"])) for _, c in cs if c["held"]]
        row["harm"] = float(np.mean([d >= a.harm for d in drops])) if drops else float("nan")
        row["mean_drop"] = float(np.mean(drops)) if drops else float("nan")
        row["true_drop"] = float(np.mean([r["val_acc"] - acc for r, c in cs for acc in c["acc"]]))
        row["mae_seeds"] = [100 * float(np.mean(np.abs(np.subtract(c["est"], c["acc"])))) for _, c in cs]
        row["mae"], row["mae_ci"] = tci(row["mae_seeds"])
        cov = [lo <= acc <= hi for _, c in cs for lo, hi, acc in zip(c["low"], c["high"], c["acc"])]
        row["coverage"] = float(np.mean(cov)) if cov else float("nan")
        table[f"{shift}|{n}"] = row
    overall = [100 * float(np.mean([abs(e - t) for c in r["cells"] for e, t in zip(c["est"], c["acc"])])) for r in R]
    return {"rows": table, "mae_overall_seeds": overall, "mae_overall": tci(overall)}


def report(R: list[dict[str, Any]], Sm: dict[str, Any], a: argparse.Namespace, secs: float) -> str:
    rows, ns = Sm["rows"], a.ns
    null = [(n, rows[f"none|{n}"]) for n in ns if f"none|{n}" in rows]
    fpr_ok = all(fpr_upper(r) <= 0.07 for _, r in null)
    seeds = ", ".join(str(r.get("seed", "?")) for r in R)
    L = [f"Command: `python -m benchmarks.lifecycle_eval.drift{' --quick' if a.quick else ''}` "
         f"({len(R)} seeds: {seeds}; {a.arch} {a.epochs} epochs, {secs / 60:.1f} min on {machine_info().get('cpu', '?')}). "
         f"Reference: the training's recorded {R[0]['split']} split ({R[0]['n_ref']} samples); validation accuracy "
         + ", ".join(f"{r['val_acc']:.3f}" for r in R) + ".", "",
         f"**False positives** ({a.null_trials} unshifted batches per n and seed; 95 % Clopper-Pearson upper bound over "
         "batches, which is optimistic because the batches of one seed share one reference and overlap in the 897-image pool, "
         "and a one-sided 95 % t bound over the per-reference rates; the verdict takes the larger; the MMD "
         f"baselines test the first {a.mmd_null} batches per n and seed):", ""]
    L.append(md_table(["n", "batches", "bbsd (validation ref)", "upper bound", "upper bound over references",
                       "bbsd per seed (min-max)",
                       "bbsd (training ref, before)", "MMD softmax (alibi rule)"] + ([] if a.no_pixels else ["MMD pixels (alibi rule)"]),
                      [[n, r["batches"], f"{r['held']:.3f}", f"{clopper_pearson_upper(r['held_k'], r['batches']):.3f}",
                        f"{reference_upper(r['held_by_seed']):.3f} ({len(r['held_by_seed'])} refs)",
                        f"{min(r['held_by_seed']):.3f}-{max(r['held_by_seed']):.3f}",
                        f"{r['seen']:.3f}", f"{r['mmd_soft']:.3f}"] + ([] if a.no_pixels else [f"{r['mmd_pix']:.3f}"])
                       for n, r in null]))
    L += ["", f"FPR upper bound <= 0.07 at every n (bbsd, validation reference): {verdict(fpr_ok)}", ""]
    power_ok, worst = True, []
    prow = []
    for key, r in rows.items():
        shift, n = key.split("|")
        if shift == "none":
            continue
        best_mmd = max(r["mmd_soft"], r.get("mmd_pix", 0.0))
        gap = r["held"] - best_mmd
        if gap < -0.05:
            power_ok = False
            worst.append(f"{shift} n={n} ({gap:+.2f})")
        prow.append([shift, n, r["batches"], f"{r['held']:.2f}", f"{r['mmd_soft']:.2f}"] + ([] if a.no_pixels else [f"{r['mmd_pix']:.2f}"])
                    + [f"{r['true_drop'] * 100:+.1f}", r["flagged"], "-" if math.isnan(r["harm"]) else f"{r['harm']:.2f}"])
    if not prow:  # --trials 0: a false-positive run over many references
        return "\n".join(L)
    L += [f"**Power** ({a.trials} batches per shift, n and seed) and **harm** (for batches bbsd flags: share whose true "
          f"accuracy is >= {a.harm * 100:.0f} points below the validation accuracy):", ""]
    L.append(md_table(["shift", "n", "batches", "bbsd", "MMD softmax"] + ([] if a.no_pixels else ["MMD pixels"])
                      + ["true acc. drop (pts)", "flagged", "drift meant harm"], prow))
    L += ["", f"Power >= best MMD - 0.05 at every (shift, n): {verdict(power_ok)}"
          + (f" (short: {', '.join(worst)})" if worst else ""), ""]
    mae, h = Sm["mae_overall"]
    erow = [[k.split("|")[0], k.split("|")[1], f"{r['mae']:.2f} ± {r['mae_ci']:.2f}",
             "-" if math.isnan(r["coverage"]) else f"{r['coverage']:.2f}"] for k, r in rows.items()]
    chosen = ", ".join(sorted({r.get("estimator", "atc") for r in R}))
    L += [f"**Accuracy estimate** (`veml drift`'s: {chosen}, fitted on the validation split; MAE in points per batch, "
          "mean over seeds ± 95 % t; "
          "coverage of its 95 % bootstrap interval on n = 100 batches):", "", md_table(["shift", "n", "MAE", "coverage"], erow),
          "", f"Overall MAE {mae:.2f} ± {h:.2f} points; target <= 3 points: {verdict(mae <= 3)}"]
    return "\n".join(L)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--pool", type=Path, nargs="+", help="no run: one report over these result files (drift_eval.json)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--ns", default="10,50,100,200,500")
    p.add_argument("--null-trials", type=int, default=500)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--interval-trials", type=int, default=30)
    p.add_argument("--mmd-null", type=int, default=100, help="unshifted batches per n the MMD baselines test")
    p.add_argument("--permutations", type=int, default=100)
    p.add_argument("--harm", type=float, default=0.05)
    p.add_argument("--no-pixels", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    a = p.parse_args()
    if a.quick:
        a.seeds, a.epochs, a.null_trials, a.trials, a.interval_trials, a.mmd_null = 1, 1, 20, 10, 5, 20
    if a.pool:
        pool(a.pool, a.out)
        return
    a.ns = [int(x) for x in a.ns.split(",")]
    work = Path(tempfile.mkdtemp(prefix="veml-drift-eval-"))
    try:
        R = [run_seed(s, a, work) for s in range(a.first_seed, a.first_seed + a.seeds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    secs = time.perf_counter() - T0
    Sm = summarise(R, a)
    publish(a.out, "drift_eval", {"args": {k: v for k, v in vars(a).items() if k not in ("out", "pool")}, "summary": Sm,
                                  "seconds": secs, "raw": R}, report(R, Sm, a, secs))


def pool(paths: list[Path], out: Path) -> None:
    """One report over single-seed (or several-seed) runs made with the same settings."""
    import json

    runs = [json.loads(Path(p).read_text()) for p in paths]
    settings = [{k: v for k, v in r["args"].items() if k not in ("seeds", "first_seed", "ns")} for r in runs]
    if any(s != settings[0] for s in settings):
        raise SystemExit("error: these result files were made with different settings; they do not pool")
    ns = sorted({n for r in runs for n in r["args"]["ns"]})  # runs over other sizes pool cell by cell ("batches" says how many)
    a = argparse.Namespace(**settings[0], ns=ns, out=out, seeds=0, first_seed=0, pool=None)
    R = [r for run in runs for r in run["raw"]]
    if len({r["seed"] for r in R}) != len(R):
        raise SystemExit("error: a seed appears in more than one result file")
    Sm = summarise(R, a)
    publish(out, "drift_eval_pooled", {"args": {**settings[0], "ns": ns}, "summary": Sm, "files": [str(p) for p in paths]},
            report(R, Sm, a, sum(r.get("seconds", 0.0) for r in runs)))


if __name__ == "__main__":
    main()
