#!/usr/bin/env python
"""Issue 15, part 3 for forecasters: how close is ``veml drift``'s label-free error estimate to the real MAE?

Data: the generated traffic networks (``veml.datasets.generate_traffic``: loop detectors on a road graph with rush
hours, incidents, sensor noise and dropouts).  Per seed a DCRNN forecaster (history 12, horizon 12 five-minute steps)
is trained on two weeks of one network, which holds out 20 % of its days as the validation split, and deployed to
ONNX.  Then the weeks after arrive as test versions, unshifted and under shifts of graded strength:

* ``none``: the same network, the next days;
* ``noise`` / ``noise+``: sensor noise 3x / 6x the training's;
* ``incidents`` / ``incidents+``: 5x / 15x the incident rate;
* ``demand``: 1.4x the rush-hour load; ``dropout``: 10 % of the readings missing.

Each batch is ``--days`` days (one sample per day).  ``repo.drift.check`` (= ``veml drift --inference``) reports
``estimate`` (direct loss estimation, ``dle-gbm``); the truth is the masked MAE of the same forecasts against the
days' real futures.  The baseline is what a user without an estimator assumes: the validation MAE (``as
validated``).  Reported: absolute error of each in mph and relative to the truth, and how often the 95 % interval
holds the truth.

    python -m benchmarks.lifecycle_eval.forecast_estimate --seeds 3
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.lifecycle_eval.run import SIZE  # noqa: F401  (puts benchmarks/ on sys.path)

from _common import md_table  # noqa: E402

import numpy as np  # noqa: E402

import veml  # noqa: E402
from benchmarks.lifecycle_eval.drift import tci  # noqa: E402
from benchmarks.lifecycle_eval.harness import run_and_publish  # noqa: E402
from veml.datasets import generate_traffic, write_npz  # noqa: E402
from veml.metrics import forecasting_report  # noqa: E402

warnings.filterwarnings("ignore")
BASE = {"noise": 1.0, "incident_rate": 0.02, "demand": 1.0, "missing_rate": 0.01}
SHIFTS = {"none": {}, "noise": {"noise": 3.0}, "noise+": {"noise": 6.0}, "incidents": {"incident_rate": 0.1},
          "incidents+": {"incident_rate": 0.3}, "demand": {"demand": 1.4}, "dropout": {"missing_rate": 0.1}}
FORECASTER = {"adapter": "torch", "task": "forecasting", "architecture": "dcrnn",
              "parameters": {"history": 12, "horizon": 12, "hidden": 16, "layers": 1, "diffusion_steps": 2}}
T0 = time.perf_counter()


def run_seed(seed: int, a: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    repo = veml.init(work / f"repo-{seed}")
    train = generate_traffic(n_sensors=a.sensors, n_steps=288 * a.train_days, seed=seed, **BASE)
    repo.data.import_("timeseries", write_npz(train, work / f"train-{seed}.npz"), "train")
    repo.models.add("forecaster", FORECASTER)
    run = repo.training.train("train", "forecaster", sets={"epochs": a.epochs, "seed": seed})
    inf = repo.inference.deploy(run["id"], "onnx", "none", name="deployed")
    rows = []
    for shift, change in SHIFTS.items():
        # the same network (its layout comes from the seed) simulated on under the shift's conditions; the batches
        # are the days after the training's
        whole = generate_traffic(n_sensors=a.sensors, n_steps=288 * (a.train_days + a.batches * a.days), seed=seed,
                                 **{**BASE, **change})
        for b in range(a.batches):
            cut = slice(288 * (a.train_days + b * a.days), 288 * (a.train_days + (b + 1) * a.days))
            data = replace(whole, speeds=whole.speeds[cut], timestamps=whole.timestamps[cut],
                           incidents=np.zeros((0, 4), np.float64))
            name = f"{shift}-{b}"
            repo.data.import_("timeseries", write_npz(data, work / f"{name}-{seed}.npz"), name, role="test")
            report = repo.drift.check(None, name, inference=inf.id)
            est = report["estimate"]
            assert est is not None, report.get("estimate_reason")
            _, _, _, preds = repo.inference.run(inf.id, name)
            true = forecasting_report(preds.forecast_targets, preds.forecasts, 0.0)["mae"]
            rows.append({"seed": seed, "shift": shift, "batch": b, "true": true, "dle": est["value"],
                         "low": est["low"], "high": est["high"], "validated": est["reference_value"],
                         "drift": bool(report["drift"])})
    repo.close()
    print(f"[{time.perf_counter() - T0:7.1f} s] seed {seed} done", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict[str, Any]], a: argparse.Namespace, secs: float) -> tuple[str, dict[str, Any]]:
    seeds = sorted({r["seed"] for r in rows})
    table, overall = [], {}
    for shift in SHIFTS:
        rs = [r for r in rows if r["shift"] == shift]
        true = np.mean([r["true"] for r in rs])
        table.append([shift, f"{true:.2f}", f"{np.mean([r['dle'] for r in rs]):.2f}", f"{np.mean([r['validated'] for r in rs]):.2f}",
                      f"{np.mean([abs(r['dle'] - r['true']) for r in rs]):.2f}",
                      f"{np.mean([abs(r['validated'] - r['true']) for r in rs]):.2f}",
                      f"{np.mean([r['low'] <= r['true'] <= r['high'] for r in rs]):.2f}",
                      f"{np.mean([r['drift'] for r in rs]):.2f}"])
    for key in ("dle", "validated"):
        per_seed = [float(np.mean([abs(r[key] - r["true"]) / r["true"] for r in rows if r["seed"] == s])) for s in seeds]
        overall[key] = tci([100 * x for x in per_seed])
    L = [f"Command: `python -m benchmarks.lifecycle_eval.forecast_estimate --seeds {a.seeds} --first-seed {a.first_seed}` "
         f"({len(seeds)} seeds, {a.sensors} sensors, {a.train_days} training days, {a.batches} batch(es) of {a.days} days "
         f"per shift, DCRNN {a.epochs} epochs, {secs / 60:.1f} min). Masked MAE in mph, mean over seeds and batches.", "",
         md_table(["shift", "true MAE", "dle estimate", "as validated", "dle abs. error", "as-validated abs. error",
                   "dle 95 % interval holds the truth", "drift flagged"], table), "",
         md_table(["estimator", "relative error, % of the true MAE (mean ± 95 % t over seeds)"],
                  [[k, f"{v[0]:.1f} ± {v[1]:.1f}"] for k, v in overall.items()])]
    return "\n".join(L), {"overall": overall, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--sensors", type=int, default=12)
    p.add_argument("--train-days", type=int, default=14)
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny network")
    p.add_argument("--out", type=Path, default=Path("lifecycle-eval-out"))
    a = p.parse_args()
    if a.quick:
        a.seeds, a.sensors, a.train_days, a.batches, a.epochs = 1, 4, 10, 1, 1
    run_and_publish(run_seed, lambda runs, a, secs: report([r for rows in runs for r in rows], a, secs), a, "veml-fest-",
                    "forecast_estimate")


if __name__ == "__main__":
    main()
