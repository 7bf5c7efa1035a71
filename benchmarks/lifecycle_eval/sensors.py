#!/usr/bin/env python
"""Issue 14 on sensor series: does ``veml similar`` pick the stored traffic forecaster that transfers best?

Data: the generated traffic networks (``veml.datasets.generate_traffic``: loop detectors on a road graph with rush
hours, incidents, sensor noise and dropouts; no real sensor series ships offline in a package this project uses).
Every domain is its own network (its own layout, from its own seed) of ``--sensors`` sensors, and domains differ
in their kind of road graph, rush-hour demand, sensor noise and incident rate.

* Sources: ``--source-days`` days each; a DCRNN trained from scratch and deployed (a lifecycle).
* Targets: ``--few-days`` days to train on (the few labels: a forecaster's labels are the futures it has seen) and
  ``--test-days`` later days as a test version.  Per target T: scratch on the few days -> test MAE; per source S:
  ``repo.transfer.transfer(T, source=S, test=T-test)`` (exactly ``veml transfer``: its fine-tuning recipe and its
  keep-the-better choice) -> test MAE, and the unchanged source's test MAE.  gain(S, T) = scratch MAE - transfer
  MAE (mph; positive = transfer helps).
* Scores per (T, S), computed while the sources are the only lifecycles: every series method of
  ``repo.similarity.rank(T, method=m, with_lifecycle=True)`` -- the data distances ``mmd``, ``mean_pairwise``,
  ``gromov_wasserstein`` and the model score ``as_is`` (each source deployment's own MAE on T's core-set days: the
  regression counterpart of LEEP, which scores a source model on the target's labels) -- the product's default
  (no method), and the trivial mean-embedding distance.
* ``--repeats R``: each (target, source) is fine-tuned R times with different seeds; the gain is their mean, and the
  split-half reliability (rho between two fine-tunings' rankings of the sources) says how much ranking there is to find.
* Statistics per method and seed: mean per-target Spearman rho(score, gain) (signed so that 1 = ranks sources by
  gain), mean top-1 regret (mph), top-1 hit rate; over seeds: mean and 95 % t-interval.
* Savings, for the source the default ranks first: training time (scratch / transfer, where transfer reaches
  scratch MAE) and labels (few days / the fewest days with which transfer does).

    python -m benchmarks.lifecycle_eval.sensors --seeds 3
    python -m benchmarks.lifecycle_eval.sensors --quick    # smoke run: checks the tables are produced
    python -m benchmarks.lifecycle_eval.sensors --pool out0/sensors_eval.json out3/sensors_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.lifecycle_eval.harness import run_and_publish
from benchmarks.lifecycle_eval.run import ci, fmt  # also puts benchmarks/ on sys.path

from _common import md_table, verdict  # noqa: E402

import numpy as np  # noqa: E402

import veml  # noqa: E402
from veml.coreset import transferability as TR  # noqa: E402
from veml.datasets import TrafficData, generate_traffic, write_npz  # noqa: E402

warnings.filterwarnings("ignore")
BASE = {"noise": 1.0, "incident_rate": 0.02, "demand": 1.0, "missing_rate": 0.01}
DOMAINS: dict[str, dict[str, Any]] = {
    # sources
    "grid": {"network": "grid"}, "ring-heavy": {"network": "ring", "demand": 1.6},
    "corridor-light": {"network": "corridor", "demand": 0.5}, "random-noisy": {"network": "random", "noise": 3.0},
    "grid-incidents": {"network": "grid", "incident_rate": 0.1},
    # targets (fixed before the first run)
    "grid-busy": {"network": "grid", "demand": 1.3}, "ring-light-noisy": {"network": "ring", "demand": 0.6, "noise": 2.0},
    "random-incidents": {"network": "random", "demand": 1.2, "incident_rate": 0.08},
}
SOURCES = ["grid", "ring-heavy", "corridor-light", "random-noisy", "grid-incidents"]
TARGETS = ["grid-busy", "ring-light-noisy", "random-incidents"]
VEML_METHODS = ("mmd", "mean_pairwise", "gromov_wasserstein", "as_is", "finetune_probe")
DEFAULT = "default"
METHODS = (DEFAULT,) + VEML_METHODS + ("mean_embedding",)
FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 12, "horizon": 12, "hidden": 16, "layers": 1, "diffusion_steps": 2}}
T0 = time.perf_counter()
MIN_KEEP_BETTER_DAYS = 5  # keep-better's validation split needs at least 5 samples (TrainingVersions._split)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def days_of(d: TrafficData, first: int, count: int) -> TrafficData:
    cut = slice(288 * first, 288 * (first + count))
    return TrafficData(d.speeds[cut], d.timestamps[cut], d.sensor_ids, d.adjacency)


def transfer(repo: veml.Repository, target: str, source: str, test: str, name: str, seed: int | None = None,
             keep_better: bool = True) -> dict[str, Any]:
    sets = ({} if seed is None else {"seed": seed}) | ({} if keep_better else {"keep_better": False})
    out = repo.transfer.transfer(target, source=source, test=test, name=name, sets=sets or None)
    run = repo.training.describe(repo.training.get(out["training"]))
    return {"mae": run["metrics"]["mae"], "as_is": out["source_lifecycle"]["on_test"], "kept": out["kept"],
            "train_s": out["train_s"]}


def run_seed(seed: int, a: argparse.Namespace, work: Path) -> dict[str, Any]:
    repo = veml.init(work / f"repo-seed{seed}")
    for i, name in enumerate(a.sources + a.targets):
        total = a.source_days if name in a.sources else a.few_days + a.test_days
        d = generate_traffic(n_sensors=a.sensors, n_steps=288 * total, seed=1000 * seed + i, **{**BASE, **DOMAINS[name]})
        if name in a.sources:
            repo.data.import_("timeseries", write_npz(d, work / f"{name}-{seed}.npz"), name)
            continue
        repo.data.import_("timeseries", write_npz(days_of(d, 0, a.few_days), work / f"{name}-{seed}.npz"), name)
        repo.data.import_("timeseries", write_npz(days_of(d, a.few_days, a.test_days), work / f"{name}-test-{seed}.npz"),
                          f"{name}-test", role="test")
        for k in a.fewer:  # the target's last k training days: how few does transfer need to reach scratch?
            repo.data.import_("timeseries", write_npz(days_of(d, a.few_days - k, k), work / f"{name}-k{k}-{seed}.npz"),
                              f"{name}-k{k}")
    repo.models.add("forecaster", FORECASTER)
    recipe = {"epochs": a.epochs, "seed": seed}
    for s in a.sources:
        run = repo.training.train(s, "forecaster", sets=recipe, name=f"src-{s}")
        repo.inference.deploy(run["id"], "onnx", "none", name=f"src-{s}-onnx")
    log(f"seed {seed}: {len(a.sources)} sources trained")
    # the scores first, while the sources are the only lifecycles (a transfer gives each target one of its own)
    scores: dict[str, dict[str, dict[str, float]]] = {m: {} for m in METHODS}
    default_method = None
    for t in a.targets:
        for m in VEML_METHODS:
            scores[m][t] = {row["name"]: float(row["distance"]) for row in repo.similarity.rank(t, method=m, with_lifecycle=True)["ranking"]}
        r = repo.similarity.rank(t, with_lifecycle=True)  # the product's own answer, as `veml similar T --with-lifecycle`
        scores[DEFAULT][t], default_method = {row["name"]: float(row["distance"]) for row in r["ranking"]}, r["method"]
        _, emb_t = repo.coresets.embeddings(t)
        scores["mean_embedding"][t] = {s: TR.mean_embedding_distance(emb_t, repo.coresets.embeddings(s)[1]) for s in a.sources}
    log(f"seed {seed}: scores done (default method {default_method})")
    scratch, scratch_s, res, fewer, repeats = {}, {}, {}, {}, {}
    for t in a.targets:
        run = repo.training.train(t, "forecaster", sets=recipe, test=f"{t}-test", name=f"scratch-{t}")
        scratch[t], scratch_s[t] = run["metrics"]["mae"], run["profile"]["train_s"]
        res[t] = {s: transfer(repo, t, s, f"{t}-test", f"tr-{t}-from-{s}") for s in a.sources}
        repeats[t] = {s: [transfer(repo, t, s, f"{t}-test", f"tr-{t}-from-{s}-r{r}", seed=10_000 * r + seed)["mae"]
                          for r in range(1, a.repeats)] for s in a.sources}
        log(f"seed {seed}: {t} scratch {scratch[t]:.3f}; " + ", ".join(
            f"{s} {r['mae']:.3f} (as is {r['as_is']:.3f}, kept {r['kept']})" for s, r in res[t].items()))
        chosen = min(a.sources, key=lambda s: scores[DEFAULT][t].get(s, np.inf))
        fewer[t] = {"source": chosen, **{str(k): transfer(repo, f"{t}-k{k}", chosen, f"{t}-test", f"tr-{t}-k{k}-from-{chosen}",
                                                               keep_better=k >= MIN_KEEP_BETTER_DAYS)
                                         for k in a.fewer}}
    repo.close()
    # mph, positive = better; with --repeats, the mean over fine-tunings with other seeds
    gain = {t: {s: scratch[t] - float(np.mean([res[t][s]["mae"], *repeats[t][s]])) for s in a.sources} for t in a.targets}
    # split-half reliability: how well one fine-tuning's gains rank the sources as another's do (the ceiling of rho)
    reliability = {t: TR.spearman({s: -res[t][s]["mae"] for s in a.sources}, {s: -repeats[t][s][0] for s in a.sources})
                   for t in a.targets} if a.repeats > 1 else {}
    # the gains of the second fine-tuning alone: its seed is one no score ran with (finetune_probe reruns the first)
    other = {t: {s: scratch[t] - repeats[t][s][0] for s in a.sources} for t in a.targets} if a.repeats > 1 else {}
    return {"seed": seed, "scratch": scratch, "scratch_s": scratch_s, "transfer": res, "repeats": repeats, "gain": gain,
            "gain_other_seed": other, "reliability": reliability, "scores": scores, "fewer": fewer, "default_method": default_method}


def per_seed(R: dict[str, Any], gains: str = "gain") -> dict[str, dict[str, Any]]:
    out = {}
    for m in METHODS:
        rho, reg, hit = {}, [], []
        for t, g in R[gains].items():
            sc = R["scores"][m].get(t, {})
            if len(sc) < 2:
                continue
            gg = {s: g[s] for s in sc}
            rho[t] = TR.spearman(sc, gg, False)
            reg.append(TR.top1_regret(sc, gg, False))
            hit.append(TR.top1_hit(sc, gg, False))
        out[m] = {"rho": rho, "rho_mean": float(np.nanmean(list(rho.values()))) if rho else float("nan"),
                  "regret": float(np.mean(reg)) if reg else float("nan"), "hit": float(np.mean(hit)) if hit else float("nan")}
    return out


def report(runs: list[dict[str, Any]], a: argparse.Namespace, seconds: float) -> tuple[str, dict[str, Any]]:
    S = [per_seed(r) for r in runs]
    summary = {m: {k: ci([s[m][k if k != "rho" else "rho_mean"] for s in S]) for k in ("rho", "regret", "hit")} for m in METHODS}
    resolved = sorted({str(r["default_method"]) for r in runs})
    cells = lambda m: [(i, t) for i, s in enumerate(S) for t in s[m]["rho"]]  # noqa: E731
    paired = {m: ci([S[i][DEFAULT]["rho"][t] - S[i][m]["rho"][t] for i, t in cells(DEFAULT) if t in S[i][m]["rho"]])
              for m in METHODS if m != DEFAULT}
    L = [f"Sensor series: generated traffic networks of {a.sensors} sensors, {len(a.sources)} sources x {len(a.targets)} "
         f"targets, {len(runs)} seed(s); DCRNN from scratch, {a.epochs} epochs. Sources: {', '.join(a.sources)} "
         f"({a.source_days} days). Targets: {', '.join(a.targets)} ({a.few_days} days to train on, {a.test_days} to test). "
         "gain = scratch MAE - transfer MAE (mph); rho signed so that higher = ranks sources by gain; mean [95 % t] over "
         "seeds.", ""]
    rows = [[f"`{m}`", f"ranked by {', '.join(resolved)}" if m == DEFAULT else
             "veml model score" if m in ("as_is", "finetune_probe") else "veml distance" if m in VEML_METHODS else "baseline", fmt(summary[m]["rho"]), fmt(summary[m]["regret"]),
             fmt(summary[m]["hit"]), "" if m == DEFAULT else fmt(paired[m])] for m in METHODS]
    L += [md_table(["method", "kind", "mean per-target rho", "top-1 regret (mph)", "top-1 hit rate",
                    "default's rho minus this (paired over seed x target)"], rows), ""]
    head = ["source"] + [f"{t} (scratch MAE {np.mean([r['scratch'][t] for r in runs]):.2f})" for t in a.targets]
    rows = [[s] + [f"{np.mean([r['gain'][t][s] for r in runs]):+.2f}" for t in a.targets] for s in a.sources]
    L += [f"Gains (mph, mean over seeds; each the mean of {a.repeats} fine-tuning(s) with different seeds):", "",
          md_table(head, rows), ""]
    if a.repeats > 1:
        rel = ci([v for r in runs for v in r["reliability"].values()])
        L += [f"Split-half reliability of the gains: Spearman rho between two fine-tunings' rankings of the sources, "
              f"per (seed, target): {fmt(rel)}. No score can rank sources by gain much better than the gains rank "
              "themselves.", ""]
        O = [per_seed(r, "gain_other_seed") for r in runs]
        rows = [[f"`{m}`", fmt(ci([o[m]["rho_mean"] for o in O])), fmt(ci([o[m]["regret"] for o in O]))] for m in METHODS]
        L += ["Against the gains of the second fine-tuning alone (a seed no score ran with; `finetune_probe` reruns the "
              "first fine-tuning in memory, so its rho above shares that run's noise):", "",
              md_table(["method", "mean per-target rho", "top-1 regret (mph)"], rows), ""]
    pairs = [(r, t, s, x) for r in runs for t, per in r["transfer"].items() for s, x in per.items()]
    worse = sum(x["mae"] > x["as_is"] * 1.02 for *_, x in pairs)
    time_r, label_r = [], []
    for r in runs:
        for t in r["transfer"]:
            x = r["transfer"][t][r["fewer"][t]["source"]]
            reached = x["mae"] <= r["scratch"][t]
            time_r.append(r["scratch_s"][t] / x["train_s"] if reached and x["train_s"] else 0.0)
            ks = [k for k in sorted(a.fewer) if r["fewer"][t][str(k)]["mae"] <= r["scratch"][t]]
            label_r.append(a.few_days / ks[0] if ks else (1.0 if reached else 0.0))
    others = [m for m in METHODS if m != DEFAULT and m not in resolved]
    best = max(others, key=lambda m: summary[m]["rho"][0] if summary[m]["rho"][0] == summary[m]["rho"][0] else -9)
    d = summary[DEFAULT]
    rows = [["the default: mean per-target rho >= 0.6, interval excluding 0", fmt(d["rho"]), verdict(d["rho"][0] >= 0.6 and d["rho"][1] > 0)],
            ["the default no worse than the best other method (`" + best + "`) in rho", f"{fmt(d['rho'])} vs {fmt(summary[best]['rho'])}",
             verdict(d["rho"][0] >= summary[best]["rho"][0])],
            ["transfer never ends worse than the source as-is (test MAE > 2 % above)", f"{worse}/{len(pairs)} pairs", verdict(worse == 0)],
            ["transfer saves >= 3x training time at the median (to reach scratch MAE)", f"{np.median(time_r):.1f}x "
             f"({', '.join(f'{v:.1f}' for v in time_r)})", verdict(float(np.median(time_r)) >= 3)],
            ["transfer saves >= 3x labels (days) at the median (fewer than 5 days: keep_better=false)",
             f"{np.median(label_r):.1f}x ({', '.join(f'{v:.1f}' for v in label_r)})", verdict(float(np.median(label_r)) >= 3)]]
    L += ["Issue 14 targets (top-1 regret is in mph here; the issue's 1-point bound is for accuracy):", "",
          md_table(["target", "measured", "verdict"], rows), "",
          f"Seconds: {seconds:.0f}. Command: `python -m benchmarks.lifecycle_eval.sensors {' '.join(sys.argv[1:])}`", ""]
    return "\n".join(L), {"summary": summary, "per_seed": S, "runs": runs}


def pooled(paths: list[Path]) -> str:
    """One table over every (seed, target) cell of several result files: each method's rho and regret, and the
    default's rho minus each method's, paired by cell."""
    runs = [r for p in paths for r in json.loads(p.read_text())["runs"]]
    S = [per_seed(r) for r in runs]
    rows = []
    for m in METHODS:
        cells = [(i, t) for i, s in enumerate(S) for t in s[m]["rho"]]
        diff = ci([S[i][DEFAULT]["rho"][t] - S[i][m]["rho"][t] for i, t in cells]) if m != DEFAULT else None
        rows.append([f"`{m}`", fmt(ci([S[i][m]["rho"][t] for i, t in cells])), fmt(ci([s[m]["regret"] for s in S])),
                     "" if diff is None else fmt(diff)])
    n = sum(len(s[DEFAULT]["rho"]) for s in S)
    methods = sorted({str(r["default_method"]) for r in runs})
    return "\n".join([f"Pooled over {len(paths)} file(s), {len(runs)} seeds, {n} (seed, target) cells; the default ranked "
                      f"by {', '.join(methods)}; rho per cell, regret (mph) per seed.", "",
                      md_table(["method", "rho", "top-1 regret (mph)", "default's rho minus this (paired)"], rows), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 sources, 1 target, 1 seed, 1 epoch, small networks")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--sensors", type=int, default=12)
    p.add_argument("--source-days", type=int, default=14)
    p.add_argument("--few-days", type=int, default=6)
    p.add_argument("--test-days", type=int, default=3)
    p.add_argument("--fewer", default="5", help="fewer training days tried with the chosen source (label savings); below 5 "
                   "keep-better cannot hold a day out, so those transfers run with keep_better=false, as its refusal advises")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="fine-tunings per (target, source), with different seeds")
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--pool", type=Path, nargs="+", help="no run: one table over these result files (sensors_eval.json)")
    a = p.parse_args(argv)
    if a.pool:
        print(pooled(a.pool))
        return 0
    a.sources, a.targets = a.sources.split(","), a.targets.split(",")
    a.fewer = [int(k) for k in a.fewer.split(",") if k]
    if a.quick:
        a.seeds, a.epochs, a.sensors, a.source_days, a.few_days, a.test_days, a.fewer = 1, 1, 4, 5, 5, 2, [5]
        a.sources, a.targets = a.sources[:2], a.targets[:1]
    for d in a.sources + a.targets:
        if d not in DOMAINS:
            p.error(f"unknown domain {d!r}: use {', '.join(DOMAINS)}")
    run_and_publish(run_seed, report, a, "veml-sensors-eval-", "sensors_eval_quick" if a.quick else "sensors_eval")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
