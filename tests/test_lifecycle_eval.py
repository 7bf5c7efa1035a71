"""The lifecycle evaluation harness (benchmarks/lifecycle_eval) runs end to end and prints its tables.

Only the shape of the output is checked: accuracies, correlations and verdicts are measurements,
not properties of the code, so nothing here asserts a value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick(module: str, out_dir: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", module, *args, "--out", str(out_dir)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_quick_run_prints_tables(tmp_path: Path) -> None:
    md = _quick("benchmarks.lifecycle_eval", tmp_path, "--quick", "--replicates", "1")
    assert "| method | kind | mean per-target rho | top-1 regret (pts) | top-1 hit rate | default's rho minus this" in md
    for method in ("default", "mean_pairwise", "mmd", "label_ot", "ensemble", "finetune_probe", "estimate", "as_is", "leep",
                   "logme", "hscore", "knn_probe", "mean_embedding"):
        assert f"| `{method}` |" in md
    assert "### Which stored deployment to use as it is" in md and "| method | mean per-target rho | top-1 regret" in md
    assert "### Per-target rho" in md and "### Gains" in md and "### Issue 14 targets" in md and "### Transfer" in md
    assert "| target | scratch | source as-is | transfer |" in md and "transfer saves >= 3x labels" in md
    assert "| target | measured | verdict |" in md
    assert "### The truth's own noise floor" in md and "| rho(rerun gain, gain) | top-1 regret (pts) |" in md
    assert (tmp_path / "lifecycle_eval_quick.json").exists() and (tmp_path / "lifecycle_eval_quick.md").exists()
    pooled = _quick("benchmarks.lifecycle_eval", tmp_path, "--pool", str(tmp_path / "lifecycle_eval_quick.json"),
                    "--mean-rank", "pair=leep,finetune_probe")
    assert "| method | rho | top-1 regret (pts) | `logme`'s rho minus this (paired) |" in pooled and "| `pair` |" in pooled
    assert "### The truth's own noise floor" in pooled
    as_is = _quick("benchmarks.lifecycle_eval", tmp_path, "--pool", str(tmp_path / "lifecycle_eval_quick.json"),
                   "--truth", "as_is", "--reference", "estimate")
    assert "truth: as_is" in as_is and "| `estimate` |" in as_is
    mean = _quick("benchmarks.lifecycle_eval", tmp_path, "--pool", str(tmp_path / "lifecycle_eval_quick.json"),
                  "--truth", "mean_gain", "--reference", "ensemble")
    assert "truth: mean_gain" in mean and "| `ensemble` |" in mean


def test_quick_rebuild_run_prints_tables(tmp_path: Path) -> None:
    md = _quick("benchmarks.lifecycle_eval.rebuild", tmp_path, "--quick")
    assert "| shift | before | oracle (scratch / warm) | full | transfer | active | random | adabn | tent |" in md
    assert "| method | recovery | labels used | training time / full's |" in md
    for target in ("full: recovery >= 0.9", "transfer: <= 1/3 of full's training time", "active beats random",
                   "adapt recovers > 0 without labels"):
        assert target in md
    assert (tmp_path / "rebuild_eval_quick.json").exists()
    both = _quick("benchmarks.lifecycle_eval.rebuild", tmp_path / "pooled", "--pool", str(tmp_path / "rebuild_eval_quick.json"),
                  str(tmp_path / "rebuild_eval_quick.json"))
    assert "Pooled over 2 file(s), 2 seeds, 2 (seed, shift) cells: active - random" in both and "with the seeds as the unit" in both


def test_quick_drift_run_prints_tables_and_pools(tmp_path: Path) -> None:
    md = _quick("benchmarks.lifecycle_eval.drift", tmp_path / "one", "--quick", "--ns", "10,50")
    assert ("| n | batches | bbsd (validation ref) | upper bound | upper bound over references | bbsd per seed (min-max) "
            "| bbsd (training ref, before) |") in md
    assert "| shift | n | batches | bbsd | MMD softmax | MMD pixels |" in md and "Overall MAE" in md
    pooled = _quick("benchmarks.lifecycle_eval.drift", tmp_path / "pooled", "--pool", str(tmp_path / "one" / "drift_eval.json"))
    assert "FPR upper bound <= 0.07 at every n" in pooled and (tmp_path / "pooled" / "drift_eval_pooled.json").exists()
    # a run over fewer sizes (here: the same run as seed 1, n = 10 only) pools cell by cell
    doc = json.loads((tmp_path / "one" / "drift_eval.json").read_text())
    doc["args"]["ns"], doc["raw"][0]["seed"] = [10], 1
    doc["raw"][0]["cells"] = [c for c in doc["raw"][0]["cells"] if c["n"] == 10]
    (tmp_path / "other.json").write_text(json.dumps(doc))
    both = _quick("benchmarks.lifecycle_eval.drift", tmp_path / "both", "--pool", str(tmp_path / "one" / "drift_eval.json"),
                  str(tmp_path / "other.json"))
    rows = {line.split("|")[1].strip(): int(line.split("|")[2]) for line in both.splitlines() if line.startswith("| 10 |") or line.startswith("| 50 |")}
    assert rows["10"] == 2 * rows["50"]  # the n = 10 cell holds both runs' unshifted batches, n = 50 one run's
    # two references at n = 10 give a bound over references; one reference at n = 50 gives none
    assert "(2 refs)" in next(line for line in both.splitlines() if line.startswith("| 10 |"))
    assert "nan (1 refs)" in next(line for line in both.splitlines() if line.startswith("| 50 |"))


def test_forecast_estimate_quick_run_prints_its_tables(tmp_path: Path) -> None:
    md = _quick("benchmarks.lifecycle_eval.forecast_estimate", tmp_path, "--quick")
    assert "| shift | true MAE | dle estimate | as validated |" in md
    for shift in ("none", "noise+", "incidents+", "demand", "dropout"):
        assert f"| {shift} |" in md
    assert "| dle |" in md and "| validated |" in md and (tmp_path / "forecast_estimate.json").is_file()


def test_sensor_suite_quick_run_prints_its_tables_and_pools_them(tmp_path: Path) -> None:
    md = _quick("benchmarks.lifecycle_eval.sensors", tmp_path / "one", "--quick", "--repeats", "2")
    assert "| method | kind | mean per-target rho | top-1 regret (mph) |" in md and "ranked by finetune_probe" in md
    for method in ("default", "mmd", "mean_pairwise", "gromov_wasserstein", "as_is", "finetune_probe", "mean_embedding"):
        assert f"| `{method}` |" in md
    assert "Split-half reliability of the gains" in md and "transfer never ends worse than the source as-is" in md
    doc = json.loads((tmp_path / "one" / "sensors_eval_quick.json").read_text())
    (run,) = doc["runs"]
    assert run["default_method"] == "finetune_probe" and set(run["reliability"]) == {"grid-busy"}
    assert all(len(v) == 1 for per in run["repeats"].values() for v in per.values())  # one more fine-tuning each
    both = _quick("benchmarks.lifecycle_eval.sensors", tmp_path / "pooled", "--pool", str(tmp_path / "one" / "sensors_eval_quick.json"),
                  str(tmp_path / "one" / "sensors_eval_quick.json"))
    assert "Pooled over 2 file(s), 2 seeds, 2 (seed, target) cells; the default ranked by finetune_probe" in both


def test_reference_bound_is_wider_than_clopper_pearson_when_references_disagree() -> None:
    from benchmarks.lifecycle_eval.drift import clopper_pearson_upper, fpr_upper, reference_upper

    spread = [0.0, 0.1, 0.0, 0.15, 0.05, 0.0]  # per-reference rates of 60 batches each: mean 0.05, far from binomial
    row = {"held_k": int(round(sum(spread) * 60)), "batches": 360, "held_by_seed": spread}
    assert reference_upper(spread) > clopper_pearson_upper(row["held_k"], row["batches"])
    assert fpr_upper(row) == reference_upper(spread)
    same = [0.05] * 6  # identical references: the bound over them is their rate, so Clopper-Pearson decides
    assert reference_upper(same) == 0.05 and fpr_upper({**row, "held_by_seed": same}) == clopper_pearson_upper(18, 360)


def test_drift_candidates_analysis_scores_every_candidate(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    from benchmarks.lifecycle_eval.drift_candidates import CANDIDATES, WIDTHS

    keys = ["ks", "chi_pred", "lin_soft"] + [f"mmd_{b}{w}" for b in ("soft", "pix") for w in WIDTHS]
    rec = [{"shift": shift, "n": 10, "alibi_soft": bool(i % 2), "alibi_pix": False,
            "stats": {**{k: rng.random(21).tolist() for k in keys}, "pool_counts": rng.integers(0, 30, 10).tolist()}}
           for shift in ("none", "blur") for i in range(4)]
    (tmp_path / "c.json").write_text(json.dumps({"seed": 0, "prior": [0.1] * 10, "rec": rec}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "benchmarks.lifecycle_eval.drift_candidates", "--analyse", str(tmp_path / "c.json")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| chosen: soft_w1 .8n/(n+5) ; pix_w025 rest |" in out.stdout and out.stdout.count("\n| ") == len(CANDIDATES)  # one row per candidate


def test_drift_exactness_prints_its_table(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "benchmarks.lifecycle_eval.drift_exactness", "--batches", "20", "--ns", "10"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| n | batches | false-positive rate | 95 % Clopper-Pearson interval |" in out.stdout and "| 10 | 20 |" in out.stdout
