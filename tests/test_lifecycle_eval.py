"""The lifecycle evaluation harness (benchmarks/lifecycle_eval) runs end to end and prints its tables.

Only the shape of the output is checked: accuracies, correlations and verdicts are measurements,
not properties of the code, so nothing here asserts a value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_tables(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "benchmarks.lifecycle_eval", "--quick", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    md = out.stdout
    assert "| method | kind | mean per-target rho | top-1 regret (pts) | top-1 hit rate |" in md
    for method in ("default", "mean_pairwise", "mmd", "label_ot", "leep", "logme", "hscore", "knn_probe", "mean_embedding"):
        assert f"| `{method}` |" in md
    assert "### Per-target rho" in md and "### Gains" in md and "### Issue 14 targets" in md and "### Transfer" in md
    assert "| target | scratch | source as-is | transfer |" in md and "transfer saves >= 3x labels" in md
    assert "| target | measured | verdict |" in md
    assert (tmp_path / "lifecycle_eval_quick.json").exists() and (tmp_path / "lifecycle_eval_quick.md").exists()
