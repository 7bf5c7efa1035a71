#!/usr/bin/env python
"""Per-step cost of logging metrics with VeML's Python SDK, side by side with MLflow's fluent API.

The same training loop for every variant: ``--steps`` steps of ``--step-ms`` milliseconds each (the step
busy-waits on the CPU, as a training step keeps a core busy), and after each step the metrics of that step
are logged: one (``loss``) or five (``loss``, ``acc``, ``lr``, ``grad_norm``, ``val_loss``) values.

- ``veml``: ``run.log_metric`` / ``run.log_metrics`` on a run started with ``repo.start_run`` (an embedded
  repository: SQLite in a temporary directory), with its defaults, system metrics sampled every 10 s in the
  background included; the run is ended (every buffered row written) inside the timed loop.
- ``mlflow-file``: ``mlflow.log_metric`` / ``mlflow.log_metrics`` in ``mlflow.start_run()`` on a file store in
  a temporary directory (``MLFLOW_ALLOW_FILE_STORE=true``: MLflow 3 refuses its file store otherwise).
- ``mlflow-sqlite`` (``--mlflow-sqlite``): the same on ``sqlite:///`` in a temporary directory, the backend
  MLflow 3 recommends instead.
- ``none``: the loop without logging (the reference for the whole-loop figure).

Each logging call is timed on its own (perf_counter around the call); the figure that matters is the mean
time a step spends logging, as a percentage of the step (target: below 2 % of a 10 ms step).  The whole
loop's wall time is also compared with the unlogged loop's.  Variants alternate in order over ``--repeats``
rounds; medians over rounds.  Results go to ``OUT/sdk_overhead.json`` and ``.md``.

    .venv/bin/python benchmarks/bench_sdk_overhead.py                 # 1,000 steps x 10 ms, 3 rounds
    .venv/bin/python benchmarks/bench_sdk_overhead.py --quick         # 200 steps, 1 round
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, load_line, machine_info, machine_line, md_table, median, percentile, publish  # noqa: E402

import veml  # noqa: E402

KEYS5 = ("loss", "acc", "lr", "grad_norm", "val_loss")


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def loop(log: Callable[[int, float], None] | None, steps: int, step_s: float) -> dict[str, Any]:
    calls = []
    t_all = time.perf_counter()
    for i in range(steps):
        busy(step_s)
        if log is not None:
            t0 = time.perf_counter()
            log(i, 1.0 / (i + 1))
            calls.append(time.perf_counter() - t0)
    return {"loop_s": time.perf_counter() - t_all, "calls": calls}


def run_veml(root: Path, k: int, width: int, steps: int, step_s: float) -> dict[str, Any]:
    with veml.open(root) as repo:
        run = repo.start_run(name=f"bench-{width}-{k}")
        if width == 1:
            def log(i: int, v: float) -> None:
                run.log_metric("loss", v, step=i)
        else:
            def log(i: int, v: float) -> None:
                run.log_metrics({key: v for key in KEYS5}, step=i)
        out = loop(log, steps, step_s)
        t0 = time.perf_counter()
        run.end()
        out["end_s"] = time.perf_counter() - t0
        rows = sum(1 for r in repo.training.logs(run.id) if not r["key"].startswith("system/"))
    assert rows == steps * width, (rows, steps * width)
    return out


def run_mlflow(uri: str, k: int, width: int, steps: int, step_s: float) -> dict[str, Any]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=f"bench-{width}-{k}") as active:
        if width == 1:
            def log(i: int, v: float) -> None:
                mlflow.log_metric("loss", v, step=i)
        else:
            def log(i: int, v: float) -> None:
                mlflow.log_metrics({key: v for key in KEYS5}, step=i)
        out = loop(log, steps, step_s)
        t0 = time.perf_counter()
    out["end_s"] = time.perf_counter() - t0
    history = mlflow.tracking.MlflowClient().get_metric_history(active.info.run_id, "loss")
    assert len(history) == steps, len(history)
    return out


def summarise(rounds: list[dict[str, Any]], steps: int, step_s: float, base_loop: float | None) -> dict[str, Any]:
    per_call = [c for r in rounds for c in r["calls"]]
    mean_call = median([sum(r["calls"]) / steps for r in rounds]) if per_call else 0.0
    loop_s = median([r["loop_s"] + r.get("end_s", 0.0) for r in rounds])
    return {"mean_us": mean_call * 1e6, "median_us": median(per_call) * 1e6 if per_call else 0.0,
            "p99_us": percentile(per_call, 99) * 1e6 if per_call else 0.0, "max_ms": max(per_call, default=0.0) * 1e3,
            "percent_of_step": 100 * mean_call / step_s, "loop_s": loop_s,
            "end_s": median([r.get("end_s", 0.0) for r in rounds]),
            "loop_vs_unlogged_percent": None if base_loop is None else 100 * (loop_s - base_loop) / base_loop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--step-ms", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mlflow-sqlite", action="store_true", help="also MLflow on sqlite:/// (about 20 ms a call)")
    ap.add_argument("--quick", action="store_true", help="200 steps, one round")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    a = ap.parse_args()
    if a.quick:
        a.steps, a.repeats = 200, 1
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    import mlflow

    step_s = a.step_ms / 1000
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="veml-sdk-bench-"))
    root = tmp / "repo"
    veml.init(root).close()
    variants: dict[str, Callable[[int, int], dict[str, Any]]] = {
        "none": lambda k, w: loop(None, a.steps, step_s),
        "veml": lambda k, w: run_veml(root, k, w, a.steps, step_s),
        "mlflow-file": lambda k, w: run_mlflow((tmp / "mlruns").as_uri(), k, w, a.steps, step_s),
    }
    if a.mlflow_sqlite:
        variants["mlflow-sqlite"] = lambda k, w: run_mlflow(f"sqlite:///{tmp / 'mlflow.db'}", k, w, a.steps, step_s)
    results: dict[str, Any] = {"steps": a.steps, "step_ms": a.step_ms, "repeats": a.repeats, "machine": info,
                               "mlflow": mlflow.__version__, "veml": veml.__version__, "widths": {}}
    with LoadSampler() as load:
        for width in (1, 5):
            for name in variants:  # warm-up: imports, schema creation, first-write costs
                if name != "none":
                    variants[name](-1 - width, width)
            rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in variants}
            for k in range(a.repeats):
                order = list(variants) if k % 2 == 0 else list(reversed(variants))
                for name in order:
                    rounds[name].append(variants[name](k, width))
                    r = rounds[name][-1]
                    print(f"  {width} metric(s) round {k} {name:>13}: loop {r['loop_s']:.3f} s, "
                          f"{(sum(r['calls']) / a.steps * 1e6) if r['calls'] else 0:.1f} us/step logging", flush=True)
            base = summarise(rounds["none"], a.steps, step_s, None)["loop_s"]
            results["widths"][str(width)] = {n: summarise(rs, a.steps, step_s, base) for n, rs in rounds.items() if n != "none"}
            results["widths"][str(width)]["none"] = {"loop_s": base}
    results["load"] = load.summary()
    rows = []
    for width, by in results["widths"].items():
        for name, s in by.items():
            if name == "none":
                continue
            rows.append([width, name, f"{s['mean_us']:.1f}", f"{s['median_us']:.1f}", f"{s['p99_us']:.1f}", f"{s['max_ms']:.2f}",
                         f"{s['percent_of_step']:.3f} %", f"{s['loop_vs_unlogged_percent']:+.2f} %"])
    md = "\n".join([
        f"## SDK logging overhead: VeML `run.log_metric(s)` vs MLflow {results['mlflow']} fluent `mlflow.log_metric(s)`",
        "",
        f"{a.steps} steps of {a.step_ms:g} ms (busy CPU), the step's metrics logged after each step; {a.repeats} "
        "round(s), variants alternating; medians over rounds.  'logging per step' is the mean time a step spent in "
        "the logging call (target: < 2 % of a 10 ms step); 'loop vs unlogged' compares the whole loop (with the "
        "run's end) against the same loop without logging.",
        "",
        md_table(["metrics/step", "logger", "mean µs/step", "median µs/call", "p99 µs/call", "max ms/call",
                  "logging per step (% of step)", "loop vs unlogged"], rows),
        "",
        machine_line(info),
        load_line(results["load"], info["nproc"]),
        "",
    ])
    publish(a.out, "sdk_overhead", results, md)


if __name__ == "__main__":
    main()
