#!/usr/bin/env python
"""Lifecycle transfer: does dataset similarity pick the right source lifecycle, and what does it save?

Issue 4, "Does similarity pick the right lifecycle?" and "Cost saved".  Everything runs through a
real VeML repository (``repo.data``, ``repo.training``, ``repo.inference``, ``repo.similarity``,
``repo.transfer``).

1. Image domains.  ``--image-domains`` generated driving-scene domains (city, camera, time of day /
   weather, pixel noise and blur differ; 64x64 PNG).  Every domain holds every class of the label
   column (``--label``, default ``weather``: clear / rain / fog / snow, equal shares): each domain is
   generated once per class value and the parts are written as one COCO file, imported as a train
   version (``--images`` images, default 48) and a held-out test version (``--test-images``, role test).  The
   model is ``resnet18`` trained from scratch (no pretrained weights, image size 64), recipe
   ``--epochs`` E epochs, batch 16, AdamW lr 1e-3, seed ``--seed``.  Per target T: scratch training
   -> test accuracy; per source S != T: ``repo.training.train(T, model, init_from=S's scratch
   training, epochs=ceil(E/3))`` (the training step ``veml transfer`` runs) -> test accuracy;
   gain(S, T) = acc_transfer - acc_scratch(T).  Distances d(T, S) are what ``repo.similarity.rank(T,
   method=m, with_lifecycle=True)`` reports (core sets of the lite0 ImageNet embeddings, k = 200
   clipped to the dataset size) for ``mean_pairwise``, ``mmd``, ``gromov_wasserstein`` and ``label_ot``.
   Statistics per method: Spearman rho between distance and gain over all (S, T) pairs, the mean of
   the per-target rho, and the top-1 hit rate (the nearest source is the best one or within 1
   accuracy point of it), with the hit rate of a random pick as the baseline.
2. Sensor networks.  ``--series-domains`` generated traffic networks (grid / ring / corridor /
   random, different demand and sensor counts): ``--days`` days of 5-minute speeds to train on and
   the following 7 days as the test version (role test).  Model ``dcrnn`` (history 12, horizon 12,
   hidden 16, 1 layer, 2 diffusion steps), recipe ``--series-epochs`` epochs; fine-tunes
   ceil(E/3) epochs; metric MAE (mph) on the test week; gain = mae_scratch - mae_transfer.  Methods
   ``gromov_wasserstein`` (any sensor counts) and ``mmd`` / ``mean_pairwise`` (only pairs with equal
   sensor counts; the others are reported as not comparable).  Top-1 hit: within 1 % of the best MAE.
3. Cost saved.  Per target, ``repo.transfer.transfer(T, test=T_test)`` (the real command path:
   rank by the modality's default method, train from the nearest lifecycle's checkpoint with its
   recipe, deploy with its settings, predict on T's test version) first with its default epoch cut,
   then with ``sets={"epochs": k}`` for k = 1, 2, ... up to E until the deployed model's test metric
   reaches the scratch model's (deployed the same way; accuracy within 0.5 points, MAE within
   0.5 %).  Reported: training seconds (``train_s``) and samples to get there against the scratch
   training's.  Between targets the scratch model of the finished target is deployed again, so every
   later ranking transfers from scratch lifecycles only (``rank`` takes a data version's latest
   lifecycle, which a transfer replaces).

Results go to ``OUT/transfer.json`` and ``OUT/transfer.md``; the Markdown is also printed.

    .venv/bin/python benchmarks/bench_transfer.py                  # 6 image + 6 sensor domains, ~20-30 min
    .venv/bin/python benchmarks/bench_transfer.py --quick          # smoke run: 3 + 3 domains, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, load_line, machine_info, machine_line, md_table, publish, verdict, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import veml  # noqa: E402
from veml.adapters import get_adapter  # noqa: E402
from veml.errors import VemlError  # noqa: E402
from veml.versions.model import spec_of  # noqa: E402
from veml.versions.taskdata import task_data  # noqa: E402
from veml.coreset import distance as D  # noqa: E402
from veml.datasets import Domain, TrafficData, generate_driving_coco, generate_traffic, write_npz  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

LABEL_VALUES = {"weather": ("clear", "rain", "fog", "snow"), "time_of_day": ("day", "dusk", "night")}
# Domains per label column: the label attribute itself is left free (every domain holds every class).
IMAGE_DOMAINS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "weather": [
        ("amsterdam-front-day", dict(city="amsterdam", camera="front", time_of_day="day")),
        ("amsterdam-wide-dusk", dict(city="amsterdam", camera="wide", time_of_day="dusk")),
        ("tokyo-tele-night", dict(city="tokyo", camera="tele", time_of_day="night")),
        ("tokyo-front-dusk", dict(city="tokyo", camera="front", time_of_day="dusk")),
        ("phoenix-wide-day", dict(city="phoenix", camera="wide", time_of_day="day")),
        ("mumbai-front-day-noisy", dict(city="mumbai", camera="front", time_of_day="day", noise=0.08, blur=1.0)),
        ("phoenix-tele-night-noisy", dict(city="phoenix", camera="tele", time_of_day="night", noise=0.08)),
        ("mumbai-wide-dusk-blur", dict(city="mumbai", camera="wide", time_of_day="dusk", blur=1.5)),
    ],
    "time_of_day": [
        ("amsterdam-front-clear", dict(city="amsterdam", camera="front", weather="clear")),
        ("amsterdam-wide-rain", dict(city="amsterdam", camera="wide", weather="rain")),
        ("tokyo-tele-rain", dict(city="tokyo", camera="tele", weather="rain")),
        ("tokyo-front-snow", dict(city="tokyo", camera="front", weather="snow")),
        ("phoenix-wide-fog", dict(city="phoenix", camera="wide", weather="fog")),
        ("mumbai-front-clear-noisy", dict(city="mumbai", camera="front", weather="clear", noise=0.15, blur=1.5)),
        ("phoenix-tele-clear-noisy", dict(city="phoenix", camera="tele", weather="clear", noise=0.08)),
        ("mumbai-wide-fog-blur", dict(city="mumbai", camera="wide", weather="fog", blur=1.5)),
    ],
}
SERIES_DOMAINS: list[tuple[str, dict[str, Any]]] = [
    ("grid-24", dict(network="grid", n_sensors=24)),
    ("ring-24", dict(network="ring", n_sensors=24)),
    ("corridor-24-light", dict(network="corridor", n_sensors=24, demand=0.5)),
    ("grid-24-heavy", dict(network="grid", n_sensors=24, demand=1.6)),
    ("random-16", dict(network="random", n_sensors=16)),
    ("ring-32", dict(network="ring", n_sensors=32)),
    ("random-24", dict(network="random", n_sensors=24)),
    ("corridor-32-heavy", dict(network="corridor", n_sensors=32, demand=1.4)),
]
IMAGE_METHODS = ("mean_pairwise", "mmd", "gromov_wasserstein", "label_ot")
SERIES_METHODS = ("gromov_wasserstein", "mmd", "mean_pairwise")
IMAGE_SIZE, BATCH = 64, 16
CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "resnet18",
              "parameters": {"image_size": IMAGE_SIZE, "pretrained": False, "freeze_backbone": False}}
FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 12, "horizon": 12, "hidden": 16, "layers": 1, "diffusion_steps": 2}}
ACC_REACH, ACC_HIT = 0.005, 0.01  # "reached scratch" within 0.5 points; "top-1 hit" within 1 point of the best
MAE_REACH, MAE_HIT = 0.005, 0.01  # the same for MAE, relative: 0.5 % and 1 %

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------------
def generate_domain(out: Path, n: int, seed: int, base: dict[str, Any], label: str) -> Path:
    """``n`` images of one domain, equal shares of every value of ``label``, as one COCO file."""
    values = LABEL_VALUES[label]
    (out / "images").mkdir(parents=True, exist_ok=True)
    per = [n // len(values) + (1 if k < n % len(values) else 0) for k in range(len(values))]
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": None}
    next_img, next_ann = 1, 1
    for k, (value, m) in enumerate(zip(values, per)):
        chunk = out / f"part-{value}"
        ann = generate_driving_coco(chunk, m, seed=seed * 10 + k, domain=Domain(**{**base, label: value}),
                                    size=(IMAGE_SIZE, IMAGE_SIZE), image_id_start=next_img, annotation_id_start=next_ann,
                                    file_prefix=f"{out.name}-{value}")
        doc = json.loads(ann.read_text())
        for im in doc["images"]:
            os.replace(chunk / "images" / im["file_name"], out / "images" / im["file_name"])
        coco["images"] += doc["images"]
        coco["annotations"] += doc["annotations"]
        coco["categories"] = doc["categories"]
        next_img += m
        next_ann += len(doc["annotations"])
        shutil.rmtree(chunk)
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


# --- statistics ------------------------------------------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    r = spearmanr(x, y).statistic
    return None if r != r else float(r)


def method_stats(targets: list[str], dist: dict[str, dict[str, float | None]], gain: dict[str, dict[str, float]],
                 hit_tol: Callable[[str, float], float]) -> dict[str, Any]:
    """Spearman (all pairs, per target), top-1 hit rate and regret of choosing the nearest source.

    ``dist[T][S]`` may be None (not comparable); such pairs are left out.  ``hit_tol(T, best_gain)``
    is the gain shortfall still counted as a hit.
    """
    xs, ys, per_target, hits, regrets, random_hits, nearest = [], [], {}, [], [], [], {}
    pairs = 0
    for t in targets:
        row = {s: d for s, d in dist[t].items() if d is not None and s in gain[t]}
        if not row:
            continue
        pairs += len(row)
        xs += list(row.values())
        ys += [gain[t][s] for s in row]
        per_target[t] = spearman(list(row.values()), [gain[t][s] for s in row])
        if len(row) < 2:
            continue
        best = max(gain[t][s] for s in row)
        tol = hit_tol(t, best)
        near = min(row, key=lambda s: (row[s], targets.index(s)))  # ties as rank() breaks them: import order
        nearest[t] = {"source": near, "distance": row[near], "gain": gain[t][near], "best_gain": best,
                      "best_source": max(row, key=lambda s: gain[t][s]),
                      "rank_of_nearest_by_gain": 1 + sum(gain[t][s] > gain[t][near] for s in row)}
        hits.append(gain[t][near] >= best - tol)
        regrets.append(best - gain[t][near])
        random_hits.append(sum(gain[t][s] >= best - tol for s in row) / len(row))
    valid = [r for r in per_target.values() if r is not None]
    return {"pairs": pairs, "rho_all": spearman(xs, ys), "rho_per_target": per_target,
            "rho_per_target_mean": float(np.mean(valid)) if valid else None, "targets_scored": len(hits),
            "top1_hits": int(sum(hits)), "top1_rate": float(np.mean(hits)) if hits else None,
            "random_top1_rate": float(np.mean(random_hits)) if random_hits else None,
            "mean_regret": float(np.mean(regrets)) if regrets else None, "nearest": nearest}


def distances(repo: veml.Repository, targets: list[str], methods: Sequence[str]) -> dict[str, Any]:
    """d(T, S) for every method, as ``repo.similarity.rank(T, with_lifecycle=True)`` reports them."""
    out: dict[str, Any] = {}
    for m in methods:
        t0 = time.perf_counter()
        table: dict[str, dict[str, float | None]] = {}
        skipped: dict[str, list[str]] = {}
        fallback = None
        ranks: dict[str, Any] = {}
        for t in targets:
            try:
                ranks[t] = repo.similarity.rank(t, method=m, with_lifecycle=True)
            except VemlError as exc:
                if m not in D.NEEDS_LABELS:
                    raise
                fallback = fallback or {"reason": f"{type(exc).__name__}: {exc}", "unlabelled": {}}
            else:
                if m in D.NEEDS_LABELS and ranks[t]["skipped"] and fallback is None:
                    fallback = {"reason": f"candidates skipped: {ranks[t]['skipped'][0]['reason']}", "unlabelled": {}}
        if fallback is not None:  # one rule for every target, not rank() for some and the fallback for others
            ranks = {t: label_ot_unlabelled_as_none(repo, t, targets, fallback["unlabelled"]) for t in targets}
        for t in targets:
            r = ranks[t]
            table[t] = {row["name"]: float(row["distance"]) for row in r["ranking"]}
            for s in targets:
                if s != t and s not in table[t]:
                    table[t][s] = None
            skipped[t] = [f"{x['name']}: {x['reason']}" for x in r["skipped"]]
        out[m] = {"d": table, "skipped": skipped, "seconds": round(time.perf_counter() - t0, 2),
                  "k": r["k"], "embedder": r["embedder"], "fallback": fallback}
        log(f"  distances {m}: {time.perf_counter() - t0:.1f} s")
    return out


def label_ot_unlabelled_as_none(repo: veml.Repository, target: str, names: list[str],
                                unlabelled: dict[str, int]) -> dict[str, Any]:
    """``label_ot`` on the same core sets ``rank`` uses, an image without boxes labelled "none".

    ``rank`` refuses ``label_ot`` when a core-set image has no label (its dataset has images without
    boxes); the rule bench_similarity.py uses for such images is the class "none", applied here.
    """
    def core(name: str) -> tuple[np.ndarray, list[str]]:
        c = repo.coresets.coreset(repo.data.get(name), None)  # k = min(200, samples), as rank() asks
        labels = c.props["labels"]
        unlabelled[name] = sum(x is None for x in labels)
        return repo.coresets.matrix(c), ["none" if x is None else x for x in labels]

    xt, lt = core(target)
    k = len(lt)
    ranking = []
    for s in names:
        if s == target:
            continue
        xs, ls = core(s)
        ranking.append({"name": s, "distance": D.label_ot(xt, lt, xs, ls)})
    emb = repo.coresets.embedder(repo.data.get(target)).key
    return {"ranking": ranking, "skipped": [], "k": k, "embedder": emb}


class BatchNormCheck:
    """Diagnostic, not what VeML does: a trained classifier's accuracy on T's test version once its BatchNorm
    running statistics are re-estimated on T's training images (AdaBN).  A fine-tune from another domain keeps
    the source's running statistics in its buffers; after a few steps at momentum 0.1 they still describe the
    source domain, and evaluation (which uses them) can collapse even when the weights fit T."""

    def __init__(self, repo: veml.Repository) -> None:
        self.repo, self.adapter, self._data = repo, get_adapter("torch"), {}

    def _task(self, spec: Any, name: str, classes: Sequence[str]) -> Any:
        key = (name, tuple(classes))
        if key not in self._data:
            self._data[key] = task_data(self.repo.stores, spec, self.repo.data.checkout(name), list(classes))
        return self._data[key]

    @torch.no_grad()
    def _accuracy(self, model: torch.nn.Module, td: Any) -> float:
        model.eval()
        pred = np.concatenate([model(self.adapter._images(td.images[i:i + 64], True)).argmax(1).numpy()
                               for i in range(0, len(td.images), 64)])
        return float((pred == np.asarray(td.labels)).mean())

    @torch.no_grad()
    def accuracies(self, training: int, target: str) -> dict[str, float]:
        node = self.repo.training.get(training)
        spec = spec_of(self.repo.stores.graph.get(node.props["model"]))
        model, meta = self.adapter.model_and_meta(spec, self.repo.training.checkpoint(node))
        train = self._task(spec, target, meta["class_names"])
        test = self._task(spec, f"{target}-test", meta["class_names"])
        as_is = self._accuracy(model, test)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the batches below
        model.train()
        for i in range(0, len(train.images), BATCH):
            model(self.adapter._images(train.images[i:i + BATCH], True))
        return {"as_is": as_is, "bn_reestimated": self._accuracy(model, test)}


# --- one modality: scratch, all pairs, distances --------------------------------------------------
def lifecycle_matrix(repo: veml.Repository, names: list[str], model: str, recipe: dict[str, Any], metric: str,
                     methods: Sequence[str], bn: BatchNormCheck | None = None) -> dict[str, Any]:
    """Scratch lifecycles (trained, deployed, evaluated on the test version), every (S, T) fine-tune, distances."""
    scratch: dict[str, Any] = {}
    for t in names:
        run = repo.training.train(t, model, sets=recipe, test=f"{t}-test", name=f"scratch-{t}")
        dep = repo.inference.deploy(run["id"], "onnx", "none", name=f"scratch-{t}-onnx")
        pred = repo.inference.predict(dep.id, f"{t}-test", name=f"scratch-{t}-onnx-on-{t}-test")
        scratch[t] = {"training": run["id"], "inference": dep.id, metric: run["metrics"][metric],
                      "deployed_" + metric: pred.props["key_metric"]["value"], "train_s": run["profile"]["train_s"],
                      "samples": run["profile"]["samples"], "steps": run["profile"]["steps"],
                      "train_samples": run["train_samples"], "class_names": run.get("class_names")}
        if bn is not None:
            scratch[t]["bn_check"] = bn.accuracies(run["id"], t)
        log(f"  scratch {t}: {metric} {run['metrics'][metric]:.4f} (deployed {pred.props['key_metric']['value']:.4f}), "
            f"{run['profile']['train_s']:.1f} s")
    dist = distances(repo, names, methods)
    ft_epochs = max(1, math.ceil(int(recipe["epochs"]) / 3))
    pairs: dict[str, dict[str, Any]] = {t: {} for t in names}
    for t in names:
        for s in names:
            if s == t:
                continue
            try:
                run = repo.training.train(t, model, sets={**recipe, "epochs": ft_epochs}, init_from=scratch[s]["training"],
                                          test=f"{t}-test", name=f"finetune-{t}-from-{s}")
            except VemlError as exc:  # e.g. an incompatible checkpoint: reported, not worked around
                pairs[t][s] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"  fine-tune {t} <- {s}: REFUSED {exc}")
                continue
            pairs[t][s] = {metric: run["metrics"][metric], "train_s": run["profile"]["train_s"]}
            if bn is not None:
                pairs[t][s]["bn_check"] = bn.accuracies(run["id"], t)
        log(f"  fine-tunes of {t}: " + ", ".join(f"{s} {v.get(metric, float('nan')):.3f}" for s, v in pairs[t].items()))
    return {"scratch": scratch, "pairs": pairs, "distances": dist, "finetune_epochs": ft_epochs}


def gains(names: list[str], M: dict[str, Any], metric: str) -> dict[str, dict[str, float]]:
    sign = 1.0 if metric == "accuracy" else -1.0  # gain is an improvement: accuracy up, MAE down
    return {t: {s: sign * (v[metric] - M["scratch"][t][metric]) for s, v in M["pairs"][t].items() if metric in v}
            for t in names}


# --- cost saved ----------------------------------------------------------------------------------
def call_transfer(repo: veml.Repository, target: str, sets: dict[str, Any] | None, name: str,
                  failures: list[str]) -> dict[str, Any]:
    """``repo.transfer.transfer(T, test=T-test)``; where that call fails, the same without ``test`` + a prediction.

    ``transfer(test=...)`` also evaluates the *source* deployment on the target's test version; a
    forecaster of another sensor count cannot run there and the whole call fails (after training and
    deploying).  The fallback does what the call would have returned for the new model.
    """
    test = f"{target}-test"
    try:
        return repo.transfer.transfer(target, test=test, sets=sets, name=name)
    except VemlError as exc:
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
        log(f"  transfer {name} FAILED ({exc}); again without test= and a separate prediction")
    r = repo.transfer.transfer(target, sets=sets, name=f"{name}-retry")
    pred = repo.inference.predict(r["inference"], test, name=f"{name}-retry-on-{test}")
    r["metric"] = {"name": pred.props["key_metric"]["name"], "value": pred.props["key_metric"]["value"]}
    r["prediction"] = pred.id
    r["fallback"] = True
    return r


def cost_saved(repo: veml.Repository, names: list[str], M: dict[str, Any], recipe: dict[str, Any], metric: str,
               max_epochs: int) -> dict[str, Any]:
    """Per target: the real ``transfer`` path, epochs 1.. until the deployed model reaches the scratch model."""
    higher = metric == "accuracy"
    out: dict[str, Any] = {}
    for t in names:
        sc = M["scratch"][t]
        goal = sc["deployed_" + metric]
        reached = (lambda v: v >= goal - ACC_REACH) if higher else (lambda v: v <= goal * (1 + MAE_REACH))
        t0 = time.perf_counter()
        failures: list[str] = []
        default = call_transfer(repo, t, None, f"transfer-{t}-default", failures)
        runs = {int(default["params"]["epochs"]): default}
        sweep, first = [], None
        for k in range(1, max_epochs + 1):
            r = runs.get(k) or call_transfer(repo, t, {"epochs": k}, f"transfer-{t}-e{k}", failures)
            runs[k] = r
            v = r["metric"]["value"]
            sweep.append({"epochs": k, metric: v, "train_s": r["train_s"], "source": r["source_name"],
                          "seconds": r["seconds"]})
            if reached(v):
                first = k
                break
        # later rankings must see the scratch lifecycle of this target again, not its last transfer
        repo.inference.deploy(sc["training"], "onnx", "none", name=f"scratch-{t}-onnx-again")
        hit = sweep[-1] if first is not None else None
        out[t] = {
            "source": default["source_name"], "distance": default["distance"], "report": default["report"],
            "default_epochs": int(default["params"]["epochs"]), "default_" + metric: default["metric"]["value"],
            "default_train_s": default["train_s"], "source_model_on_target_test": default["source_lifecycle"]["on_test"],
            "scratch_epochs": int(recipe["epochs"]), "scratch_" + metric: goal, "scratch_train_s": sc["train_s"],
            "sweep": sweep, "epochs_to_reach": first, "train_s_to_reach": hit["train_s"] if hit else None,
            "metric_at_reach": hit[metric] if hit else None,
            "time_ratio": (sc["train_s"] / hit["train_s"]) if hit and hit["train_s"] else None,
            "sample_ratio": (int(recipe["epochs"]) / first) if first else None,
            "seconds": round(time.perf_counter() - t0, 1), "transfer_failures": failures,
        }
        log(f"  cost {t} <- {default['source_name']}: scratch {goal:.4f} in {sc['train_s']:.1f} s; "
            + (f"reached with {first} epoch(s) in {hit['train_s']:.1f} s ({out[t]['time_ratio']:.1f}x)" if hit
               else f"not reached within {max_epochs} epochs"))
    return out


# --- report ---------------------------------------------------------------------------------------
def f(x: Any, nd: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def short(name: str) -> str:
    return name if len(name) <= 14 else name[:13] + "…"


def stats_table(S: dict[str, Any], methods: Sequence[str], default: str, unit: str) -> str:
    rows = []
    for m in methods:
        s = S[m]
        rows.append([f"`{m}`" + (" (current default)" if m == default else ""), s["pairs"], f(s["rho_all"], 3, True),
                     f(s["rho_per_target_mean"], 3, True),
                     f"{s['top1_hits']}/{s['targets_scored']} = {f(s['top1_rate'], 2)}" if s["targets_scored"] else "—",
                     f(s["random_top1_rate"], 2), f(s["mean_regret"], 3) + unit])
    return md_table(["method", "pairs", "Spearman ρ (distance, gain), all pairs", "mean per-target ρ",
                     "top-1 hit", "random pick hit", "mean regret of nearest"], rows)


def matrix_table(names: list[str], values: dict[str, dict[str, float]], nd: int = 3, signed: bool = True,
                 mark: dict[str, str] | None = None) -> str:
    rows = []
    for t in names:
        row = [f"**{t}**"]
        for s in names:
            if s == t:
                row.append("·")
                continue
            v = values.get(t, {}).get(s)
            cell = f(v, nd, signed)
            if mark and mark.get(t) == s:
                cell = f"**{cell}**"
            row.append(cell)
        rows.append(row)
    return md_table(["target \\ source"] + [short(s) for s in names], rows)


def recommend(S: dict[str, Any], methods: Sequence[str]) -> tuple[str, str]:
    def key(m: str) -> tuple[float, float]:
        rho = S[m]["rho_all"]
        return (rho if rho is not None else 1.0, -(S[m]["top1_rate"] or 0.0))

    scored = [m for m in methods if S[m]["rho_all"] is not None]
    if not scored:
        return "", "no method had enough comparable pairs to score"
    best = min(scored, key=key)
    by_top1 = max(scored, key=lambda m: (S[m]["top1_rate"] or 0.0, -(S[m]["rho_all"] or 0.0)))
    rho = S[best]["rho_all"]
    why = (f"`{best}` has the most negative ρ ({rho:+.3f}; target ρ ≤ −0.7 {verdict(rho <= -0.7)}) and top-1 "
           f"{S[best]['top1_hits']}/{S[best]['targets_scored']}")
    if rho > -0.3:
        why += "; no method orders the sources usefully here, so the choice is weakly supported"
    elif rho > -0.7:
        why += "; below the target, so the recommendation is weakly supported"
    if by_top1 != best and (S[by_top1]["top1_rate"] or 0) > (S[best]["top1_rate"] or 0):
        why += (f"; `{by_top1}` picks the best source more often ({S[by_top1]['top1_hits']}/"
                f"{S[by_top1]['targets_scored']}, ρ = {S[by_top1]['rho_all']:+.3f})")
    return best, why


def section(R: dict[str, Any], key: str, title: str, metric: str, methods: Sequence[str], unit: str) -> list[str]:
    X = R[key]
    names = X["names"]
    M = X["matrix"]
    G = X["gain"]
    default = D.DEFAULT_METHOD["image" if key == "image" else "series"]
    lines = [f"### {title}", ""]
    rows = []
    for t in names:
        sc = M["scratch"][t]
        g = G[t]
        best = max(g, key=g.get) if g else None
        rows.append([t, sc["train_samples"], f(sc[metric], 4), f(sc["deployed_" + metric], 4), f(sc["train_s"], 1),
                     f(max(g.values()), 3, True) if g else "—", best or "—",
                     f(min(g.values()), 3, True) if g else "—", f(float(np.mean(list(g.values()))), 3, True) if g else "—"])
    lines += [md_table(["target", "train samples", f"scratch {metric}", f"scratch {metric} (deployed ONNX)", "scratch train s",
                        "best gain", "best source", "worst gain", "mean gain"], rows), ""]
    nd = 3
    near = {t: X["stats"][default]["nearest"].get(t, {}).get("source") for t in names}
    lines += [f"Gain matrix ({'accuracy points as a fraction' if metric == 'accuracy' else 'MAE reduction in mph'}; "
              f"fine-tune {M['finetune_epochs']} epoch(s) from the source's scratch checkpoint vs scratch {X['epochs']} "
              f"epochs; **bold** = nearest source by `{default}`):", ""]
    lines += [matrix_table(names, G, nd, True, near), ""]
    refused = [f"{t} ← {s}: {v['error']}" for t in names for s, v in M["pairs"][t].items() if "error" in v]
    if refused:
        lines += ["Fine-tunes refused by the adapter: " + "; ".join(refused), ""]
    lines += [f"Distance `{default}` d(T, S) (as `veml similar T --with-lifecycle` ranks them):", ""]
    lines += [matrix_table(names, M["distances"][default]["d"], 4, False), ""]
    lines += ["How well each distance ranks the sources (expect ρ < 0: nearer source, larger gain; target |ρ| ≥ 0.7):", ""]
    lines += [stats_table(X["stats"], methods, default, unit), ""]
    flat = [t for t in names if G[t] and len(set(round(v, 9) for v in G[t].values())) == 1]
    if flat:
        lines += [f"Every source gives the same gain for {', '.join(flat)}: any pick is a top-1 hit there.", ""]
    incomparable = {m: sum(v is None for t in names for s, v in M["distances"][m]["d"][t].items()) for m in methods}
    if any(incomparable.values()) and "sensors" not in X:
        lines += ["Pairs without a distance: " + ", ".join(f"`{m}` {v}" for m, v in incomparable.items() if v) + " ("
                  + "; ".join(x for m in methods for t in names for x in M["distances"][m]["skipped"][t]) + ").", ""]
    if any(incomparable.values()) and "sensors" in X:
        comp = {m: X["stats"][m]["pairs"] for m in methods}
        lines += ["Comparable (T, S) pairs per method: " + ", ".join(f"`{m}` {comp[m]}" for m in methods)
                  + " (`mmd` and `mean_pairwise` need equal embedding dimension, i.e. equal sensor counts: "
                  + ", ".join(f"{n} ({X['sensors'][n]} sensors)" for n in names) + ").", ""]
    fb = {m: M["distances"][m].get("fallback") for m in methods if M["distances"][m].get("fallback")}
    for m, x in fb.items():
        lines += [f"`{m}`: `repo.similarity.rank` refused ({x['reason']}): images without any box have no label. "
                  f"Computed instead with `veml.coreset.distance.label_ot` on the same stored core sets, such images "
                  f"labelled \"none\" (the rule of bench_similarity.py); unlabelled core-set images per dataset: "
                  + ", ".join(f"{k} {v}" for k, v in x["unlabelled"].items()) + ".", ""]
    rows = []
    for m in methods:
        for t in names:
            n = X["stats"][m]["nearest"].get(t)
            if n is None:
                continue
            rows.append([f"`{m}`", t, n["source"], f(n["gain"], 3, True), n["best_source"], f(n["best_gain"], 3, True),
                         f"{n['rank_of_nearest_by_gain']} of {sum(v is not None for v in M['distances'][m]['d'][t].values())}"])
    lines += ["<details><summary>Nearest source per target and method</summary>", "",
              md_table(["method", "target", "nearest source", "its gain", "best source", "best gain", "rank of nearest by gain"],
                       rows), "", "</details>", ""]
    rec, why = recommend(X["stats"], methods)
    X["recommendation"] = {"method": rec, "why": why, "current_default": default}
    return lines


def bn_section(X: dict[str, Any]) -> list[str]:
    names, M, B = X["names"], X["matrix"], X["bn_diagnostic"]
    as_is_ok = all(abs(v["bn_check"]["as_is"] - v["accuracy"]) < 1e-9 for t in names
                   for v in [M["scratch"][t]] + [p for p in M["pairs"][t].values() if "bn_check" in p])
    rows = []
    for t in names:
        sc = M["scratch"][t]["bn_check"]
        ft = [p["bn_check"] for p in M["pairs"][t].values() if "bn_check" in p]
        rows.append([t, f(sc["as_is"], 3), f(sc["bn_reestimated"], 3),
                     f(float(np.mean([x["as_is"] for x in ft])), 3) if ft else "—",
                     f(float(np.mean([x["bn_reestimated"] for x in ft])), 3) if ft else "—",
                     f(float(np.mean(list(B["gain"][t].values()))), 3, True) if B["gain"][t] else "—"])
    L = ["#### 1b. Diagnostic: the fine-tunes with BatchNorm statistics re-estimated on the target", "",
         "Not what VeML does; a check of *why* the fine-tunes above score as they do. Each trained classifier is "
         "loaded again, its BatchNorm running statistics are reset and re-estimated by one pass over T's training "
         "images (AdaBN), and it is evaluated on T's test version (scratch models get the same treatment). Accuracy "
         "without re-estimation recomputed here " + ("matches the training's own evaluation exactly" if as_is_ok else
                                                     "DIFFERS from the training's evaluation (see JSON)") + ".", ""]
    L += [md_table(["target", "scratch acc", "scratch acc, BN re-estimated", "fine-tunes: mean acc",
                    "fine-tunes: mean acc, BN re-estimated", "mean gain, BN re-estimated"], rows), ""]
    L += ["Gain matrix with BN re-estimated on both sides:", "", matrix_table(names, B["gain"]), ""]
    default = D.DEFAULT_METHOD["image"]
    L += ["The distances ranked against these gains:", "", stats_table(B["stats"], IMAGE_METHODS, default, ""), ""]
    return L


def cost_table(C: dict[str, Any], metric: str, scratch_epochs: int) -> str:
    rows = []
    for t, c in C.items():
        rows.append([t + (" †" if c.get("transfer_failures") else ""), c["source"], f(c["distance"], 4),
                     f(c["source_model_on_target_test"], 3),
                     f"{f(c['scratch_' + metric], 4)} ({scratch_epochs} ep, {f(c['scratch_train_s'], 1)} s)",
                     f"{f(c['default_' + metric], 4)} ({c['default_epochs']} ep, {f(c['default_train_s'], 1)} s)",
                     c["epochs_to_reach"] if c["epochs_to_reach"] else f"not within {scratch_epochs}",
                     f(c["metric_at_reach"], 4), f(c["train_s_to_reach"], 1),
                     f"{c['time_ratio']:.1f}×" if c["time_ratio"] else "—",
                     f"{c['sample_ratio']:.1f}×" if c["sample_ratio"] else "—"])
    return md_table(["target", "source picked", "distance", f"source model as-is on T ({metric})", "scratch (epochs, train s)",
                     "transfer default (epochs, train s)", "epochs to reach scratch", f"{metric} then", "train s then",
                     "time saved (scratch s / transfer s)", "samples saved"], rows)


def report(R: dict[str, Any]) -> str:
    a = R["args"]
    L = [f"Machine: {R['machine_line']}; torch {torch.__version__}, {a['threads']} torch thread(s). {R['load_line']}", ""]
    img, ser = R.get("image"), R.get("series")
    L += ["**Setup.**"]
    if img:
        L += [f"- Images: {len(img['names'])} generated driving domains ({', '.join(img['names'])}), each with "
              f"{a['images']} train and {a['test_images']} held-out test images (64x64), label column `{a['label']}` "
              f"({' / '.join(LABEL_VALUES[a['label']])}, equal shares in every domain). Model `resnet18` from scratch "
              f"(no pretrained weights), image size {IMAGE_SIZE}, recipe {a['epochs']} epochs, batch {BATCH}, AdamW lr 1e-3, "
              f"seed {a['seed']}; fine-tunes {img['matrix']['finetune_epochs']} epoch(s) = ceil(E/3). Distances on core sets "
              f"(embedder `{img['matrix']['distances'][IMAGE_METHODS[0]]['embedder']}`, k = "
              f"{img['matrix']['distances'][IMAGE_METHODS[0]]['k']}; `label_ot` labels = each core-set image's dominant box "
              "category). Accuracy: the training's evaluation on the target's test version."]
        if a["label"] == "weather":
            L += ["  Why this task and size (pilots on this machine, same generator and model, before this run): with the "
                  "suggested label `time_of_day` every pilot domain reached 100 % test accuracy from scratch (4 domains, 48 "
                  "images / 4 epochs at 32 px, and 90 images / 9 epochs), leaving no headroom for a source, so the label is "
                  "`weather` (rain streaks, fog and snow differ less than day / dusk / night; `--label time_of_day` reruns "
                  "the other variant). With `weather`, the first six domains below still reached 0.96–1.00 from scratch with "
                  "96 images (6 or 9 epochs) and 0.75–1.00 with 48 images / 9 epochs; this run uses 48 images and 6 epochs "
                  "to leave more headroom. The sizes were chosen on scratch accuracy only, not on the transfer results."]
    if ser:
        L += [f"- Sensor networks: {len(ser['names'])} generated traffic networks ("
              + ", ".join(f"{n}: {ser['sensors'][n]} sensors" for n in ser["names"])
              + f"), {a['days']} days of 5-minute speeds to train on (1 % missing), the following {a['test_days']} days as the "
              f"test version. Model `dcrnn` (history 12, horizon 12, hidden 16, 1 layer, 2 diffusion steps), recipe "
              f"{a['series_epochs']} epochs (stride 3, AdamW lr 5e-3); fine-tunes {ser['matrix']['finetune_epochs']} epoch(s). "
              f"Core sets of the `summary` embedding (k = {ser['matrix']['distances']['gromov_wasserstein']['k']}, one "
              "sample per day). Metric MAE (mph) on the test days."]
    L += ["- gain(S, T) = metric of T fine-tuned from S minus T's scratch metric (for MAE: scratch minus transfer), so "
          "positive = the source helped. ρ is Spearman's rank correlation between d(T, S) and gain(S, T). Top-1 hit: the "
          f"nearest source's gain is within {ACC_HIT * 100:.0f} accuracy point (images) / {MAE_HIT * 100:.0f} % of the best "
          "MAE (sensors) of the best source's; \"random pick hit\" is the chance a uniformly random source would be such "
          "a hit; regret = best gain − gain of the nearest.", ""]
    if img:
        L += section(R, "image", "1. Image domains: does similarity pick the right lifecycle?", "accuracy", IMAGE_METHODS, "")
    if img and img.get("bn_diagnostic"):
        L += bn_section(img)
    if ser:
        L += section(R, "series", "2. Sensor networks", "mae", SERIES_METHODS, " mph")
    if img and img.get("cost"):
        C = img["cost"]
        ratios = [c["time_ratio"] for c in C.values() if c["time_ratio"]]
        reached = sum(c["epochs_to_reach"] is not None for c in C.values())
        L += ["### 3. Cost saved", "",
              f"Images: `repo.transfer.transfer(T, test=T-test)` per target (ranks by `{D.DEFAULT_METHOD['image']}`, fine-tunes "
              "from the nearest lifecycle with its recipe, deploys ONNX, predicts on T's test version), then the same with "
              "`--set epochs=k` for k = 1, 2, … until the deployed model's accuracy is within 0.5 points of the deployed "
              "scratch model's. Training seconds are the runs' `train_s` (the loop only).", ""]
        L += [cost_table(C, "accuracy", a["epochs"]), ""]
        if ratios:
            med = float(np.median(ratios))
            smed = float(np.median([c["sample_ratio"] for c in C.values() if c["sample_ratio"]]))
            L += [f"Reached scratch accuracy for {reached}/{len(C)} targets; over the reached ones training time saved "
                  f"median {med:.1f}× (min {min(ratios):.1f}×, max {max(ratios):.1f}×), training samples saved median "
                  f"{smed:.1f}×. Target ≥ 3× less training time: {verdict(reached == len(C) and min(ratios) >= 3)} "
                  f"(median {verdict(med >= 3)}). The time ratio also carries the machine's load at the moment each run "
                  "happened (scratch runs came first); the samples ratio (E / epochs needed) does not.", ""]
        else:
            L += [f"No target reached its scratch accuracy within {a['epochs']} fine-tune epochs: target ≥ 3× {verdict(False)}.", ""]
    if ser and ser.get("cost"):
        C = ser["cost"]
        ratios = [c["time_ratio"] for c in C.values() if c["time_ratio"]]
        reached = sum(c["epochs_to_reach"] is not None for c in C.values())
        L += [f"Sensor networks, the same procedure with MAE (reached = within 0.5 % of the deployed scratch model's MAE; "
              f"ranked by `{D.DEFAULT_METHOD['series']}`):", ""]
        L += [cost_table(C, "mae", a["series_epochs"]), ""]
        failed = {t: c["transfer_failures"] for t, c in C.items() if c.get("transfer_failures")}
        if failed:
            L += [f"† `repo.transfer.transfer(T, test=T-test)` failed for {len(failed)} target(s) "
                  f"({sum(len(v) for v in failed.values())} calls), e.g. `{next(iter(failed.values()))[0]}`: after training "
                  "and deploying the new model it also runs the *source* deployment on T's test version, which a forecaster "
                  "of another sensor count refuses, and the whole call fails. For these rows the benchmark called "
                  "`transfer(T)` without `test=` and predicted the new deployment on T's test version itself; the source "
                  "model's own score on T does not exist there (—).", ""]
        if ratios:
            smed = float(np.median([c["sample_ratio"] for c in C.values() if c["sample_ratio"]]))
            L += [f"Reached for {reached}/{len(C)} networks; time saved median {float(np.median(ratios)):.1f}× "
                  f"(min {min(ratios):.1f}×, max {max(ratios):.1f}×), samples saved median {smed:.1f}×.", ""]
    L += ["### 4. Recommended default distance per modality", ""]
    rows = []
    for key, modality in (("image", "image"), ("series", "series")):
        X = R.get(key)
        if not X:
            continue
        rec = X["recommendation"]
        change = "keep" if rec["method"] == rec["current_default"] else f"change from `{rec['current_default']}`"
        rows.append([modality, f"`{rec['method']}`" if rec["method"] else "—", change, rec["why"]])
    L += [md_table(["modality", "recommended", "vs current default", "why"], rows), ""]
    L += [f"Seconds: images {R.get('image', {}).get('seconds', 0):.0f}, sensors {R.get('series', {}).get('seconds', 0):.0f}, "
          f"total {R['seconds']:.0f}.", "", "Command: `" + " ".join(R["machine"]["argv_full"]) + "`", ""]
    return "\n".join(L)


# --- main -----------------------------------------------------------------------------------------
def run_images(repo: veml.Repository, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    domains = IMAGE_DOMAINS[a.label][:a.image_domains]
    names = [n for n, _ in domains]
    for i, (name, base) in enumerate(domains):
        for split, n, seed in (("", a.images, a.seed * 1000 + 10 * i + 1), ("-test", a.test_images, a.seed * 1000 + 10 * i + 5)):
            ann = generate_domain(work / "gen" / f"{name}{split}", n, seed, base, a.label)
            repo.data.import_("coco", ann, f"{name}{split}", role="test" if split else "train", images=ann.parent / "images")
    log(f"images: {len(names)} domains imported")
    repo.models.add("classifier", {**CLASSIFIER, "parameters": {**CLASSIFIER["parameters"], "label_column": a.label}})
    recipe = {"epochs": a.epochs, "batch_size": BATCH, "seed": a.seed}
    M = lifecycle_matrix(repo, names, "classifier", recipe, "accuracy", IMAGE_METHODS,
                         None if a.no_bn_diagnostic else BatchNormCheck(repo))
    G = gains(names, M, "accuracy")
    S = {m: method_stats(names, M["distances"][m]["d"], G, lambda t, best: ACC_HIT) for m in IMAGE_METHODS}
    out = {"names": names, "domains": {n: b for n, b in domains}, "epochs": a.epochs, "recipe": recipe, "matrix": M,
           "gain": G, "stats": S}
    if not a.no_bn_diagnostic:
        GB = {t: {s: v["bn_check"]["bn_reestimated"] - M["scratch"][t]["bn_check"]["bn_reestimated"]
                  for s, v in M["pairs"][t].items() if "bn_check" in v} for t in names}
        out["bn_diagnostic"] = {"gain": GB, "stats": {m: method_stats(names, M["distances"][m]["d"], GB, lambda t, b: ACC_HIT)
                                                      for m in IMAGE_METHODS}}
    if not a.no_cost:
        log("images: cost saved")
        out["cost"] = cost_saved(repo, names, M, recipe, "accuracy", a.epochs)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_series(repo: veml.Repository, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    domains = SERIES_DOMAINS[:a.series_domains]
    names = [n for n, _ in domains]
    sensors = {}
    for i, (name, kw) in enumerate(domains):
        d = generate_traffic(n_steps=288 * (a.days + a.test_days), seed=a.seed * 1000 + 500 + i, missing_rate=0.01, **kw)
        cut = 288 * a.days
        train = TrafficData(d.speeds[:cut], d.timestamps[:cut], d.sensor_ids, d.adjacency)
        test = TrafficData(d.speeds[cut:], d.timestamps[cut:], d.sensor_ids, d.adjacency)
        repo.data.import_("timeseries", write_npz(train, work / "gen" / f"{name}.npz"), name)
        repo.data.import_("timeseries", write_npz(test, work / "gen" / f"{name}-test.npz"), f"{name}-test", role="test")
        sensors[name] = kw["n_sensors"]
    log(f"series: {len(names)} networks imported")
    repo.models.add("forecaster", FORECASTER)
    recipe = {"epochs": a.series_epochs, "seed": a.seed}
    M = lifecycle_matrix(repo, names, "forecaster", recipe, "mae", SERIES_METHODS)
    G = gains(names, M, "mae")
    # a hit: the nearest source's MAE within 1 % of the best source's MAE, i.e. its gain within 1 % of that MAE
    best_mae = {t: min((v["mae"] for v in M["pairs"][t].values() if "mae" in v), default=float("nan")) for t in names}
    S = {m: method_stats(names, M["distances"][m]["d"], G, lambda t, best: MAE_HIT * best_mae[t]) for m in SERIES_METHODS}
    out = {"names": names, "domains": {n: kw for n, kw in domains}, "sensors": sensors, "epochs": a.series_epochs,
           "recipe": recipe, "matrix": M, "gain": G, "stats": S}
    if not a.no_cost and not a.no_series_cost:
        log("series: cost saved")
        out["cost"] = cost_saved(repo, names, M, recipe, "mae", a.series_epochs)
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", choices=sorted(LABEL_VALUES), default="weather", help="image label column (default weather)")
    p.add_argument("--image-domains", type=int, default=None, help="image domains (default 6; 3 with --quick; at most 8)")
    p.add_argument("--images", type=int, default=None, help="train images per domain (default 48; 24 with --quick)")
    p.add_argument("--test-images", type=int, default=None, help="test images per domain (default 120; 24 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="image recipe epochs E (default 6; 1 with --quick)")
    p.add_argument("--series-domains", type=int, default=None, help="sensor networks (default 6; 3 with --quick; at most 8)")
    p.add_argument("--days", type=int, default=None, help="training days per network (default 7; 2 with --quick)")
    p.add_argument("--test-days", type=int, default=None, help="test days per network (default 7; 1 with --quick)")
    p.add_argument("--series-epochs", type=int, default=None, help="forecaster recipe epochs (default 6; 1 with --quick)")
    p.add_argument("--no-cost", action="store_true", help="skip the cost-saved sweeps")
    p.add_argument("--no-series-cost", action="store_true", help="skip the cost-saved sweep of the sensor networks")
    p.add_argument("--no-bn-diagnostic", action="store_true",
                   help="skip the diagnostic accuracies with BatchNorm statistics re-estimated on the target")
    p.add_argument("--skip-images", action="store_true")
    p.add_argument("--skip-series", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: on a small shared machine more threads than free cores stall)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 image + 3 sensor domains, 1 epoch")
    p.add_argument("--from-json", default=None, help="only render the Markdown again from an earlier transfer.json")
    a = p.parse_args()
    if a.from_json:
        R = json.loads(Path(a.from_json).read_text())
        md = report(R)
        publish(Path(a.out), "transfer", R, md)
        return
    q = a.quick
    a.image_domains = min(a.image_domains or (3 if q else 6), len(IMAGE_DOMAINS[a.label]))
    a.images = a.images or (24 if q else 48)
    a.test_images = a.test_images or (24 if q else 120)
    a.epochs = a.epochs or (1 if q else 6)
    a.series_domains = min(a.series_domains or (3 if q else 6), len(SERIES_DOMAINS))
    a.days = a.days or (2 if q else 7)
    a.test_days = a.test_days or (1 if q else 7)
    a.series_epochs = a.series_epochs or (1 if q else 6)

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    work = out / "transfer_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    info = machine_info()
    info["argv_full"] = [".venv/bin/python", "benchmarks/bench_transfer.py"] + sys.argv[1:]
    R: dict[str, Any] = {"args": vars(a), "machine": info, "machine_line": machine_line(info)}
    log(R["machine_line"])
    with LoadSampler() as load:
        repo = veml.init(work / "repo")
        try:
            if not a.skip_images:
                R["image"] = run_images(repo, work, a)
            if not a.skip_series:
                R["series"] = run_series(repo, work, a)
        finally:
            repo.close()
    R["load"] = load.summary()
    R["load_line"] = load_line(R["load"], info["nproc"])
    R["seconds"] = time.perf_counter() - T0
    write_json(out / "transfer.json", R)  # before rendering: a rendering error keeps the measurements
    md = report(R)
    publish(out, "transfer", R, md)


if __name__ == "__main__":
    main()
