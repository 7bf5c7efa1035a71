#!/usr/bin/env python
"""Issue 14, suite v2: source selection on real handwriting (scikit-learn's bundled digits), through VeML's API.

Data: ``sklearn.datasets.load_digits`` (1797 real 8x8 handwritten digits, 10 classes, shipped inside the
scikit-learn wheel, no download), upscaled to 32x32 RGB PNGs.  Domains are graded, realistic shifts
(rotation, Gaussian blur, additive noise, inversion / contrast reduction; PIL + numpy).  Per seed the
digits are split per class into a target pool (target train + test) and a disjoint source pool.

* Sources: shifted domains with ``--per-class`` labels per class; scratch training -> deployed (a lifecycle).
* Targets: other shifted domains with ``--few`` labels per class (train version) + ``--test`` per class
  (role test), and the same target with ``--fewer`` labels per class.  Per target T: scratch on the few
  labels -> test accuracy; per source S: ``repo.transfer.transfer(T, source=S, test=T-test)`` -- exactly
  ``veml transfer``: its fine-tuning recipe, and its keep-the-better choice on T's validation split ->
  test accuracy, and the unchanged source's test accuracy; gain(S, T) = acc_transfer - acc_scratch.
* Scores per (T, S), computed while the sources are the only lifecycles: every method of
  ``repo.similarity.rank(T, method=m, with_lifecycle=True)`` -- the core-set distances and the
  model-based scores (LEEP on S's softmax over T's core set, LogME / H-score / k-NN probe on S's
  penultimate features of it) -- plus a trivial mean-embedding distance on the ImageNet (lite0)
  embeddings.
* Statistics per method and seed: mean per-target Spearman rho(score, gain) (signed so that 1 = ranks
  by gain), mean top-1 regret (accuracy points), top-1 hit rate; over seeds: mean and 95 % t-interval.
* The product's default: ``repo.similarity.rank(T, with_lifecycle=True)`` with no method -- exactly what
  ``veml similar T --with-lifecycle`` and ``veml transfer T`` rank by -- as the row ``default``.
* Savings, for the source the default ranks first: training time (scratch / transfer, when
  transfer reaches scratch accuracy) and labels (few / the fewest labels with which transfer does).

    python -m benchmarks.lifecycle_eval            # 5 sources, 3 targets, 3 seeds
    python -m benchmarks.lifecycle_eval --quick    # smoke run (< 60 s): checks the tables are produced
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

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from _common import machine_info, md_table, publish, verdict  # noqa: E402
from bench_transfer import distances  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402
from scipy import stats  # noqa: E402

import veml  # noqa: E402
from veml.coreset import transferability as TR  # noqa: E402
from veml.lifecycle.model_scores import ENSEMBLE  # noqa: E402

warnings.filterwarnings("ignore")

SIZE = 32
# name -> list of (op, strength); applied in order to the upscaled 0..1 grey image
DOMAINS: dict[str, list[tuple[str, float]]] = {
    "rot15": [("rotate", 15)], "rot45": [("rotate", 45)], "blur1": [("blur", 1.0)], "noise20": [("noise", 0.20)],
    "invert": [("invert", 1)], "lowcontrast": [("contrast", 0.35)],
    # targets
    "rot30": [("rotate", 30)], "blur2": [("blur", 2.0)], "invert-noise10": [("invert", 1), ("noise", 0.10)],
    "noise35": [("noise", 0.35)], "rot30-blur1": [("rotate", 30), ("blur", 1.0)],
    # the confirmation suite (issue 14): targets no method choice was made on
    "rot20-contrast": [("rotate", 20), ("contrast", 0.5)], "blur15-noise15": [("blur", 1.5), ("noise", 0.15)],
    "invert-rot15": [("invert", 1), ("rotate", 15)],
    # the second confirmation suite (issue 14): fixed before the ensemble default was measured anywhere
    "rot40-noise10": [("rotate", 40), ("noise", 0.10)], "contrast-blur1": [("contrast", 0.5), ("blur", 1.0)],
    "invert-blur1": [("invert", 1), ("blur", 1.0)],
    # the third confirmation suite (issue 14): fixed before it ran, to tell the ensemble from LEEP
    "rot50": [("rotate", 50)], "blur1-noise30": [("blur", 1.0), ("noise", 0.30)],
    "invert-contrast": [("invert", 1), ("contrast", 0.5)],
    # the fourth confirmation suite (issue 14): fixed before it ran, to check LEEP as the default
    "rot35-blur1": [("rotate", 35), ("blur", 1.0)], "noise40": [("noise", 0.40)],
    "invert-rot30": [("invert", 1), ("rotate", 30)],
    # the fifth confirmation suite (issue 14): fixed before it ran, to check finetune_probe on classifiers
    "rot25-noise20": [("rotate", 25), ("noise", 0.20)], "blur25": [("blur", 2.5)],
    "invert-noise20": [("invert", 1), ("noise", 0.20)],
    # the sixth confirmation suite (issue 14): fixed before it ran, to check the label-free `estimate` score
    "rot20-blur15": [("rotate", 20), ("blur", 1.5)], "contrast-noise25": [("contrast", 0.5), ("noise", 0.25)],
    "invert-rot20-noise10": [("invert", 1), ("rotate", 20), ("noise", 0.10)],
    # the seventh confirmation suite (issue 14): fixed before it ran; no method or default changed since suite 6
    "rot25-contrast": [("rotate", 25), ("contrast", 0.5)], "blur2-noise15": [("blur", 2.0), ("noise", 0.15)],
    "invert-blur15-noise10": [("invert", 1), ("blur", 1.5), ("noise", 0.10)],
    # the eighth confirmation suite (issue 14): fixed before it ran, to check a mean rank without LEEP
    "rot35-noise15": [("rotate", 35), ("noise", 0.15)], "contrast-blur2": [("contrast", 0.5), ("blur", 2.0)],
    "invert-rot15-blur1": [("invert", 1), ("rotate", 15), ("blur", 1.0)],
}
SOURCES = ["rot15", "rot45", "blur1", "noise20", "invert"]
TARGETS = ["rot30", "blur2", "invert-noise10"]
# core-set distances; the mean rank of model scores (ENSEMBLE); what transfer would end with, on held-out labels;
# the source deployment's accuracy on the target estimated without labels, and as it is measured with them
VEML_METHODS = ("mean_pairwise", "mmd", "label_ot", "ensemble", "finetune_probe", "estimate", "as_is")
MODEL_METHODS = ("leep", "logme", "hscore", "knn_probe")  # the reviewers' baselines, selectable as `veml similar --method`
METHODS = VEML_METHODS + MODEL_METHODS
BASELINES = MODEL_METHODS + ("mean_embedding",)
# every score is "lower = predicted better": rank() reports a model-based score as distance = -score
HIGHER = {m: False for m in BASELINES + VEML_METHODS + ("default",)}
DEFAULT = "default"  # what `veml similar T --with-lifecycle` (and `veml transfer T`) rank by when no method is named
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------------
def shift(img8: np.ndarray, ops: list[tuple[str, float]], rng: np.random.Generator) -> Image.Image:
    g = Image.fromarray((img8 / 16.0 * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
    for op, s in ops:
        if op == "rotate":
            g = g.rotate(float(rng.uniform(0.7, 1.0) * s * rng.choice([-1, 1])), resample=Image.BILINEAR)
        elif op == "blur":
            g = g.filter(ImageFilter.GaussianBlur(s))
        elif op == "invert":
            g = Image.fromarray(255 - np.asarray(g))
        elif op == "contrast":
            a = np.asarray(g, np.float32) / 255
            g = Image.fromarray(((0.5 - s / 2 + s * a) * 255).astype(np.uint8))
        elif op == "noise":
            a = np.asarray(g, np.float32) / 255 + rng.normal(0, s, (SIZE, SIZE))
            g = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))
    return g.convert("RGB")


def write_folder(out: Path, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, ops, rng) -> Path:
    for c in range(10):
        (out / f"digit{c}").mkdir(parents=True, exist_ok=True)
    for i in idx:
        shift(images[i], ops, rng).save(out / f"digit{labels[i]}" / f"{i}.png")
    return out


def split(labels: np.ndarray, rng: np.random.Generator, n_target: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per class: the first ``n_target`` of a permutation for targets, the rest for sources."""
    tgt, src = {}, {}
    for c in range(10):
        p = rng.permutation(np.flatnonzero(labels == c))
        tgt[c], src[c] = p[:n_target], p[n_target:]
    return tgt, src


# --- scores ------------------------------------------------------------------------------------
def mean_embedding_scores(repo: veml.Repository, target: str, sources: list[str]) -> dict[str, float]:
    """The trivial baseline: distance between mean ImageNet (lite0) embeddings, as VeML's distances embed."""
    _, emb_t = repo.coresets.embeddings(target)
    return {s: TR.mean_embedding_distance(emb_t, repo.coresets.embeddings(s)[1]) for s in sources}


def transfer(repo: veml.Repository, target: str, source: str, test: str, name: str,
             sets: dict[str, Any] | None = None) -> dict[str, Any]:
    """``veml transfer TARGET --from SOURCE --test TEST``: its recipe, its keep-better choice, its test accuracy."""
    out = repo.transfer.transfer(target, source=source, test=test, name=name, sets=sets)
    run = repo.training.describe(repo.training.get(out["training"]))
    sel = out.get("selection") or {}
    res = {"acc": run["metrics"]["accuracy"], "as_is": out["source_lifecycle"]["on_test"], "kept": out["kept"],
           "train_s": out["train_s"], "seconds": out["seconds"],
           "validation": {k: sel.get(k) for k in ("samples", "trained", "init", "scratch", "reason")}}
    if out["kept"] == "scratch":  # what the same transfer keeps without the from-scratch fallback: what it cost or bought
        res["without_fallback"] = transfer(repo, target, source, test, f"{name}-nofb",
                                           {**(sets or {}), "scratch_fallback": False})["acc"]
    return res


# --- one seed ----------------------------------------------------------------------------------
def run_seed(seed: int, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target
    rng = np.random.default_rng(seed)
    tgt_pool, src_pool = split(labels, rng, a.few + a.test)
    repo = veml.init(work / f"repo-seed{seed}")
    gen = work / f"gen-seed{seed}"
    for s in a.sources:
        idx = np.concatenate([rng.choice(src_pool[c], min(a.per_class, len(src_pool[c])), replace=False) for c in range(10)])
        repo.data.import_("images", write_folder(gen / s, images, labels, idx, DOMAINS[s], rng), s)
    for t in a.targets:
        tr = np.concatenate([tgt_pool[c][:a.few] for c in range(10)])
        te = np.concatenate([tgt_pool[c][a.few:] for c in range(10)])
        repo.data.import_("images", write_folder(gen / t, images, labels, tr, DOMAINS[t], rng), t)
        repo.data.import_("images", write_folder(gen / f"{t}-test", images, labels, te, DOMAINS[t], rng), f"{t}-test", role="test")
        for k in a.fewer:  # the same target with fewer labels: how many does transfer need to reach scratch?
            sub = np.concatenate([tgt_pool[c][:k] for c in range(10)])
            repo.data.import_("images", write_folder(gen / f"{t}-k{k}", images, labels, sub, DOMAINS[t], rng), f"{t}-k{k}")
    repo.models.add("classifier", {"adapter": "torch", "task": "classification", "architecture": a.arch,
                                   "parameters": {"image_size": SIZE, "pretrained": False, "freeze_backbone": False}})
    recipe = {"epochs": a.epochs, "batch_size": 16, "seed": seed}
    for s in a.sources:
        run = repo.training.train(s, "classifier", sets=recipe, name=f"src-{s}")
        repo.inference.deploy(run["id"], "onnx", "none", name=f"src-{s}-onnx")  # a lifecycle rank() can return
        log(f"seed {seed}: source {s} trained ({run['profile']['train_s']:.1f} s)")
    # the scores first, while the sources are the only lifecycles (a transfer gives each target one of its own)
    dist = distances(repo, a.targets, METHODS)
    scores = {m: {t: {s: dist[m]["d"][t].get(s) for s in a.sources} for t in a.targets} for m in METHODS}
    scores["mean_embedding"] = {t: mean_embedding_scores(repo, t, a.sources) for t in a.targets}
    scores[DEFAULT], default_method = {}, None
    for t in a.targets:  # the product's own answer: rank() with no method, as `veml similar T --with-lifecycle`
        r = repo.similarity.rank(t, with_lifecycle=True)
        scores[DEFAULT][t], default_method = {row["name"]: row["distance"] for row in r["ranking"]}, r["method"]
    log(f"seed {seed}: scores done (default method {default_method})")
    scratch, scratch_s, res, fewer = {}, {}, {}, {}
    default = DEFAULT
    for t in a.targets:
        run = repo.training.train(t, "classifier", sets=recipe, test=f"{t}-test", name=f"scratch-{t}")
        scratch[t], scratch_s[t] = run["metrics"]["accuracy"], run["profile"]["train_s"]
        res[t] = {s: transfer(repo, t, s, f"{t}-test", f"tr-{t}-from-{s}") for s in a.sources}
        for s in a.sources:  # the same transfer with other fine-tuning seeds: how noisy the truth itself is
            res[t][s]["replicates"] = [transfer(repo, t, s, f"{t}-test", f"tr-{t}-from-{s}-r{i}",
                                                sets={"seed": seed + 1000 * i})["acc"] for i in range(1, a.replicates + 1)]
        log(f"seed {seed}: {t} scratch {scratch[t]:.3f}; " + ", ".join(
            f"{s} {r['acc']:.3f} (as is {r['as_is']:.3f}, kept {r['kept']})" for s, r in res[t].items()))
        chosen = min((s for s in a.sources if scores[default][t][s] is not None), key=lambda s: scores[default][t][s])
        fewer[t] = {"source": chosen, **{k: transfer(repo, f"{t}-k{k}", chosen, f"{t}-test", f"tr-{t}-k{k}-from-{chosen}")
                                         for k in a.fewer}}
    after = repo.similarity.rank(a.targets[0], with_lifecycle=True)  # once the target has lifecycles of its own
    gain = {t: {s: 100 * (res[t][s]["acc"] - scratch[t]) for s in a.sources} for t in a.targets}  # accuracy points
    return {"seed": seed, "scratch": scratch, "scratch_s": scratch_s, "transfer": res, "gain": gain, "scores": scores, "fewer": fewer,
            "default_method": default_method,
            "ranked_after_transfer": [r["name"] for r in after["ranking"]]}


# --- statistics --------------------------------------------------------------------------------
#: what a ranking is scored against: the gain of transferring from each source, or (for picking a stored deployment
#: to use unchanged) each source's accuracy on the target's test version as it is, or the gain averaged over the recorded
#: transfer and its ``--replicates`` (other fine-tuning seeds): the same truth with less of one training run's noise
TRUTHS = ("gain", "as_is", "mean_gain")


def truth_of(R: dict[str, Any], truth: str) -> dict[str, dict[str, float]]:
    if truth == "as_is":
        return {t: {s: 100 * x["as_is"] for s, x in per.items()} for t, per in R["transfer"].items()}
    if truth == "mean_gain":
        return {t: {s: 100 * (float(np.mean([x["acc"], *x.get("replicates", [])])) - R["scratch"][t]) for s, x in per.items()}
                for t, per in R["transfer"].items()}
    return R["gain"]


def per_seed_stats(R: dict[str, Any], methods: list[str], truth: str = "gain") -> dict[str, dict[str, Any]]:
    out = {}
    for m in methods:
        rho, reg, hit = {}, [], []
        for t, g in truth_of(R, truth).items():
            sc = {s: v for s, v in R["scores"][m][t].items() if v is not None and math.isfinite(v)}
            if len(sc) < 2:
                continue
            gg = {s: g[s] for s in sc}
            higher = HIGHER.get(m, False)  # a --mean-rank combination is a mean rank: lower = better
            rho[t] = TR.spearman(sc, gg, higher)
            reg.append(TR.top1_regret(sc, gg, higher))
            hit.append(TR.top1_hit(sc, gg, higher))
        out[m] = {"rho": rho, "rho_mean": float(np.mean(list(rho.values()))) if rho else float("nan"),
                  "regret": float(np.mean(reg)) if reg else float("nan"), "hit": float(np.mean(hit)) if hit else float("nan")}
    return out


def paired(S: list[dict[str, Any]], a: str, b: str) -> tuple[float, float, float]:
    """Mean [95 % t-interval] of rho(a) - rho(b) over every (seed, target) cell both methods scored."""
    return ci([s[a]["rho"][t] - s[b]["rho"][t] for s in S for t in s[a]["rho"] if t in s[b]["rho"]])


def with_mean_ranks(runs: list[dict[str, Any]], combos: dict[str, list[str]]) -> list[str]:
    """Adds to each run's scores, per named combination of recorded methods, each source's mean rank over them (the
    ``ensemble`` rule, as distances: 1 = ranked first by all); returns the names added."""
    from scipy.stats import rankdata

    for r in runs:
        for name, parts in combos.items():
            r["scores"][name] = {}
            for t in r["gain"]:
                srcs = list(r["gain"][t])
                ranks = [rankdata([r["scores"][m][t].get(s, np.inf) for s in srcs]) for m in parts]
                r["scores"][name][t] = dict(zip(srcs, np.mean(ranks, axis=0).tolist()))
    return list(combos)


def pooled(paths: list[Path], reference: str, combos: dict[str, list[str]] | None = None, truth: str = "gain") -> str:
    """One table over every (seed, target) cell of several result files (suites): each method's mean per-cell
    rho and regret against ``truth``, and ``reference``'s rho minus each method's, paired by cell; ``combos`` adds
    mean-rank combinations of recorded methods (``--mean-rank``)."""
    files = [(p, __import__("json").loads(p.read_text())["runs"]) for p in paths]  # runs before "seed": file[#i]
    runs = [{"seed": p.parent.name + (f"#{i + 1}" if len(rs) > 1 else ""), **r} for p, rs in files for i, r in enumerate(rs)]
    if truth == "mean_gain" and not all(x.get("replicates") for r in runs for *_, x in _pairs([r])):
        raise SystemExit("error: --truth mean_gain needs result files run with --replicates 1 or more")
    extra = with_mean_ranks(runs, combos or {})
    methods = [m for m in list(VEML_METHODS) + list(BASELINES) + extra if all(m in r["scores"] for r in runs)]
    S = [per_seed_stats(r, methods, truth) for r in runs]
    cells = lambda m, key: [v for s in S for v in (s[m]["rho"].values() if key == "rho" else [s[m][key]])]  # noqa: E731
    rows = [[f"`{m}`", fmt(ci(cells(m, "rho"))), fmt(ci(cells(m, "regret")), 1),
             "" if m == reference else fmt(paired(S, reference, m))] for m in methods]
    n = sum(len(s[reference]["rho"]) for s in S)
    pairs = list(_pairs(runs))
    worse = [f"{r['seed']} {t} <- {src}" for r, t, src, x in pairs if x["acc"] < x["as_is"] - 0.02]
    transfer = [f"Transfer more than 2 points below the source as-is on the test: {len(worse)}/{len(pairs)} pairs"
                + (f" ({'; '.join(worse)})" if worse else "") + ".", ""]
    return "\n".join(noise_floor(runs) + transfer + fallback_lines(runs) + [f"Pooled over {len(paths)} suite(s), {len(runs)} (suite, seed) runs, {n} (seed, target) cells; "
                      f"rho per cell, regret per run (mean over its targets); truth: {truth}.", "",
                      md_table(["method", "rho", "top-1 regret (pts)", f"`{reference}`'s rho minus this (paired)"], rows), ""])


def ci(xs: list[float]) -> tuple[float, float, float]:
    x = np.asarray([v for v in xs if v == v], float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - h, m + h


def fmt(c: tuple[float, float, float], nd: int = 2) -> str:
    m, lo, hi = c
    if m != m:
        return "n/a"
    return f"{m:.{nd}f}" if lo != lo else f"{m:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def report(runs: list[dict[str, Any]], a: argparse.Namespace, seconds: float) -> tuple[str, dict[str, Any]]:
    methods = [DEFAULT] + list(VEML_METHODS) + list(BASELINES)
    S = [per_seed_stats(r, methods) for r in runs]
    summary = {m: {"rho": ci([s[m]["rho_mean"] for s in S]), "regret": ci([s[m]["regret"] for s in S]),
                   "hit": ci([s[m]["hit"] for s in S])} for m in methods}
    default = DEFAULT
    resolved = sorted({str(r["default_method"]) for r in runs})
    L = [f"## Lifecycle eval v2: digits (real handwriting), {len(a.sources)} sources x {len(a.targets)} targets, "
         f"{len(runs)} seed(s), {a.arch} from scratch at {SIZE}x{SIZE}", "",
         f"Sources ({a.per_class}/class): {', '.join(a.sources)}. Targets ({a.few}/class train, {a.test}/class test): "
         f"{', '.join(a.targets)}. Recipe {a.epochs} epochs scratch, {max(1, math.ceil(a.epochs / 3))} fine-tune. "
         "rho is signed so that higher = ranks sources by gain; regret in accuracy points; mean [95 % t-interval] over seeds.", "",
         "### Methods", ""]
    rows = []
    for m in methods:
        kind = (f"veml score ensemble ({', '.join(ENSEMBLE)})" if m == "ensemble"
                else "veml model score (transfer in memory)" if m == "finetune_probe"
                else "veml model score, label-free (estimated accuracy)" if m == "estimate"
                else "veml model score (accuracy as is, on the target's labels)" if m == "as_is"
                else "veml distance" if m in VEML_METHODS else "model score, `--method`" if m in MODEL_METHODS
                else f"`veml similar --with-lifecycle` with no `--method` (ranked by {', '.join(resolved)})"
                if m == DEFAULT else "baseline")
        rows.append([f"`{m}`", kind, fmt(summary[m]["rho"]), fmt(summary[m]["regret"], 1), fmt(summary[m]["hit"]),
                     "" if m == DEFAULT else fmt(paired(S, DEFAULT, m))])
    L += [md_table(["method", "kind", "mean per-target rho", "top-1 regret (pts)", "top-1 hit rate",
                    "default's rho minus this (paired over seed x target)"], rows), ""]
    L += as_is_table(runs)
    L += noise_floor(runs)
    L += ["### Per-target rho (mean over seeds)", ""]
    rows = [[f"`{m}`"] + [fmt(ci([s[m]["rho"].get(t, float('nan')) for s in S])) for t in a.targets] for m in methods]
    L += [md_table(["method"] + list(a.targets), rows), ""]
    L += ["### Gains (accuracy points, mean over seeds; scratch accuracy in the header)", ""]
    head = ["source"] + [f"{t} (scratch {np.mean([r['scratch'][t] for r in runs]):.3f})" for t in a.targets]
    rows = [[s] + [f"{np.mean([r['gain'][t][s] for r in runs]):+.1f}" for t in a.targets] for s in a.sources]
    L += [md_table(head, rows), ""]
    L += transfer_tables(runs, a, default)
    others = [m for m in methods if m != default and m not in resolved]  # not the default against itself
    best_base = max(others, key=lambda b: (summary[b]["rho"][0] if summary[b]["rho"][0] == summary[b]["rho"][0] else -9))
    d = summary[default]
    rows = [
        ["the default: mean per-target rho >= 0.6 (i.e. <= -0.6 unsigned), interval excluding 0", fmt(d["rho"]),
         verdict(d["rho"][0] >= 0.6 and d["rho"][1] > 0)],
        ["top-1 regret <= 1 point (the default)", fmt(d["regret"], 1), verdict(d["regret"][0] <= 1.0)],
        [f"the default no worse than the best other method (`{best_base}`) in rho",
         f"{fmt(d['rho'])} vs {fmt(summary[best_base]['rho'])}", verdict(d["rho"][0] >= summary[best_base]["rho"][0])],
    ]
    L += ["### Issue 14 targets", "", md_table(["target", "measured", "verdict"], rows + transfer_verdicts(runs, a, default)), ""]
    L += [f"Seconds: {seconds:.0f}. Command: `{' '.join(sys.argv)}`", ""]
    return "\n".join(L), {"summary": summary, "per_seed": S, "runs": runs}


def noise_floor(runs: list[dict[str, Any]]) -> list[str]:
    """How well the truth predicts itself: per (seed, target), the source that transfer with another fine-tuning seed
    (``--replicates``) ranks first, scored against the recorded gain -- the regret and rho an oracle with no ranking
    error but one other training run reaches.  A method's regret below this floor is luck, not skill."""
    rho, reg, hit, diff = [], [], [], []
    for r in runs:
        for t, per in r["transfer"].items():
            reps = [x.get("replicates") or [] for x in per.values()]
            for i in range(min(len(x) for x in reps) if reps else 0):
                g = r["gain"][t]
                other = {s: 100 * (x["replicates"][i] - r["scratch"][t]) for s, x in per.items()}
                rho.append(TR.spearman(other, g, True))
                reg.append(TR.top1_regret(other, g, True))
                hit.append(TR.top1_hit(other, g, True))
                diff += [abs(other[s] - g[s]) for s in g]
    if not reg:
        return []
    return ["### The truth's own noise floor (`--replicates`: each transfer rerun with another fine-tuning seed)", "",
            "The source the rerun ranks first, scored against the recorded gains (same data, same test version): what "
            "a perfect predictor of one training run's outcome reaches on another's. Mean [95 % t-interval] over "
            f"{len(reg)} (seed, target, rerun) cells.", "",
            md_table(["rho(rerun gain, gain)", "top-1 regret (pts)", "top-1 hit rate", "mean |gain difference| per pair (pts)"],
                     [[fmt(ci(rho)), fmt(ci(reg), 1), fmt(ci(hit)), fmt(ci(diff), 1)]]), ""]


def as_is_table(runs: list[dict[str, Any]]) -> list[str]:
    """The label-free rankings scored for picking a stored deployment to use unchanged: against each source's test
    accuracy as it is (``as_is`` reads the target's labels: the ceiling a label-free estimate aims at)."""
    methods = [m for m in ("estimate", "as_is", "mean_pairwise", "mmd", "mean_embedding") if all(m in r["scores"] for r in runs)]
    S = [per_seed_stats(r, methods, "as_is") for r in runs]
    rows = [[f"`{m}`", fmt(ci([s[m]["rho_mean"] for s in S])), fmt(ci([s[m]["regret"] for s in S]), 1),
             fmt(ci([s[m]["hit"] for s in S]))] for m in methods]
    return ["### Which stored deployment to use as it is (truth: each source's test accuracy unchanged)", "",
            "The label-free methods (and `as_is`, which reads the target's labels) ranked against the sources' "
            "accuracy on the target's test version as they are; regret in accuracy points.", "",
            md_table(["method", "mean per-target rho", "top-1 regret (pts)", "top-1 hit rate"], rows), ""]


def _pairs(runs: list[dict[str, Any]]):
    for r in runs:
        for t, per in r["transfer"].items():
            for s, x in per.items():
                yield r, t, s, x


def savings(runs: list[dict[str, Any]], a: argparse.Namespace, default: str) -> tuple[list[float], list[float]]:
    """Per (seed, target), for the source the default method ranks first: training-time ratio (scratch / transfer)
    and label ratio (target labels / fewest labels with which transfer reaches scratch accuracy); 0 = not reached."""
    time_r, label_r = [], []
    for r in runs:
        for t in r["transfer"]:
            chosen = r["fewer"][t]["source"]
            x = r["transfer"][t][chosen]
            reached = x["acc"] >= r["scratch"][t]
            time_r.append(r["scratch_s"][t] / x["train_s"] if reached and x["train_s"] else 0.0)
            ks = [k for k in sorted(a.fewer) if r["fewer"][t][k]["acc"] >= r["scratch"][t]]
            label_r.append(a.few / ks[0] if ks else (1.0 if reached else 0.0))
    return time_r, label_r


def transfer_tables(runs: list[dict[str, Any]], a: argparse.Namespace, default: str) -> list[str]:
    L = ["### Transfer (`repo.transfer.transfer(T, source=S, test=T-test)`: VeML's fine-tuning recipe, keep-better on "
         "the target's validation split)", "",
         "Test accuracy, mean over seeds and sources; *worse than as-is* counts (seed, source) pairs whose transfer scores "
         "more than 2 points below the unchanged source model on the test version.", ""]
    rows = []
    for t in a.targets:
        xs = [x for r, tt, s, x in _pairs(runs) if tt == t]
        sc = [r["scratch"][t] for r in runs]
        rows.append([t, f"{np.mean(sc):.3f}", f"{np.mean([x['as_is'] for x in xs]):.3f}", f"{np.mean([x['acc'] for x in xs]):.3f}",
                     f"{max(np.mean([r['transfer'][t][s]['acc'] for r in runs]) for s in a.sources):.3f}",
                     f"{sum(x['kept'] == 'source' for x in xs)}/{len(xs)}",
                     f"{sum(x['kept'] == 'scratch' for x in xs)}/{len(xs)}",
                     f"{sum(x['acc'] < x['as_is'] - 0.02 for x in xs)}/{len(xs)}"])
    L += [md_table(["target", "scratch", "source as-is", "transfer", "best source's transfer", "kept the source",
                    "kept scratch", "worse than as-is"], rows), ""]
    L += fallback_lines(runs)
    time_r, label_r = savings(runs, a, default)
    L += [f"Savings with the source the default ranks first, per (seed, target): training-time ratio scratch/transfer "
          f"{', '.join(f'{v:.1f}' for v in time_r)}; label ratio {', '.join(f'{v:.1f}' for v in label_r)} "
          f"(fewer-label targets tried: {', '.join(map(str, a.fewer))} per class of {a.few}; 0 = scratch accuracy not reached).", ""]
    return L


def fallback_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Each (seed, target, source) pair where transfer kept the model its from-scratch fallback trained, with what the
    same transfer keeps with ``scratch_fallback=false`` (test accuracy): what the fallback bought or cost there."""
    rows, diffs = [], []
    for r, t, s, x in _pairs(runs):
        if x.get("kept") != "scratch" or x.get("without_fallback") is None:
            continue
        seed = r.get("seed", "")
        diffs.append(100 * (x["acc"] - x["without_fallback"]))
        rows.append([str(seed), t, s, f"{x['as_is']:.3f}", f"{x['without_fallback']:.3f}", f"{x['acc']:.3f}",
                     f"{diffs[-1]:+.1f}", f"{(x.get('validation') or {}).get('scratch')}"])
    if not rows:
        return []
    return ["Pairs where transfer kept the from-scratch fallback's model (test accuracy; *without* = the same transfer "
            "with `scratch_fallback=false`):", "",
            md_table(["seed", "target", "source", "source as-is", "without", "with the fallback", "points",
                      "scratch on validation"], rows), "",
            f"{len(rows)} pair(s); the fallback's change {fmt(ci(diffs), 1)} points, smallest {min(diffs):+.1f}.", ""]


def transfer_verdicts(runs: list[dict[str, Any]], a: argparse.Namespace, default: str) -> list[list[str]]:
    pairs = list(_pairs(runs))
    worse = sum(x["acc"] < x["as_is"] - 0.02 for *_, x in pairs)
    beats = sum(x["acc"] >= r["scratch"][t] for r, t, _, x in pairs)
    time_r, label_r = savings(runs, a, default)
    return [
        ["transfer never ends worse than the source as-is (test, > 2 points)", f"{worse}/{len(pairs)} pairs worse",
         verdict(worse == 0)],
        ["transfer reaches scratch accuracy (all sources)", f"{beats}/{len(pairs)} pairs", "(context)"],
        ["transfer saves >= 3x training time at the median (to reach scratch accuracy)", f"{np.median(time_r):.1f}x",
         verdict(float(np.median(time_r)) >= 3)],
        ["transfer saves >= 3x labels at the median (to reach scratch accuracy)", f"{np.median(label_r):.1f}x",
         verdict(float(np.median(label_r)) >= 3)],
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 sources, 1 target, 1 seed, 1 epoch, tiny sets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (a fresh suite)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--per-class", type=int, default=60, help="labelled images per class in each source")
    p.add_argument("--few", type=int, default=10, help="labelled images per class in each target")
    p.add_argument("--test", type=int, default=30, help="test images per class in each target")
    p.add_argument("--fewer", default="2,5", help="fewer labels per class tried with the chosen source (label savings)")
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--replicates", type=int, default=0,
                   help="rerun each transfer with this many other fine-tuning seeds: the truth's own noise floor")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--pool", type=Path, nargs="+", help="no run: one table over these result files (lifecycle_eval.json)")
    p.add_argument("--reference", default="logme", help="with --pool: the method the others are compared with, paired")
    p.add_argument("--mean-rank", action="append", default=[], metavar="NAME=M1,M2,...",
                   help="with --pool: also rank sources by their mean rank over these recorded methods")
    p.add_argument("--truth", choices=TRUTHS, default="gain",
                   help="with --pool: score rankings against the transfer gain, each source's test accuracy as it is, or the "
                        "gain averaged over the transfer and its --replicates")
    a = p.parse_args(argv)
    if a.pool:
        combos = {}
        for item in a.mean_rank:
            name, _, parts = item.partition("=")
            if not name or not parts:
                p.error(f"--mean-rank {item!r}: use NAME=METHOD1,METHOD2,...")
            combos[name] = parts.split(",")
        print(pooled(a.pool, a.reference, combos, a.truth))
        return 0
    a.sources, a.targets = a.sources.split(","), a.targets.split(",")
    a.fewer = [int(k) for k in a.fewer.split(",") if k]
    if a.quick:
        a.seeds, a.epochs, a.per_class, a.few, a.test, a.fewer = 1, 1, 5, 5, 3, [3]
        a.replicates = min(a.replicates, 1)
        a.sources, a.targets = a.sources[:2], a.targets[:1]
    for d in a.sources + a.targets:
        if d not in DOMAINS:
            p.error(f"unknown domain {d!r}: use {', '.join(DOMAINS)}")
    work = a.work or Path(tempfile.mkdtemp(prefix="veml-lifecycle-eval-"))
    t0 = time.perf_counter()
    try:
        runs = [run_seed(seed, a, work) for seed in range(a.first_seed, a.first_seed + a.seeds)]
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    md, res = report(runs, a, time.perf_counter() - t0)
    res["machine"] = machine_info()
    publish(a.out, "lifecycle_eval_quick" if a.quick else "lifecycle_eval", res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
