"""The README's tour is run as written: documentation that drifts from the code fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _tour_blocks() -> list[str]:
    text = README.read_text()
    tour = text[text.index("## A five-minute tour"):text.index("## How it is stored")]
    return re.findall(r"```bash\n(.*?)```", tour, flags=re.S)


@pytest.mark.embedded_only("the tour runs once per CI, as a new user types it, on the default; each of its commands "
                            "is covered on PostgreSQL + S3 by its own module")
def test_readme_tour_runs(tmp_path):
    blocks = _tour_blocks()
    assert len(blocks) == 3
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("VEML_REPO", None)
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("python -c", f"{sys.executable} -c")
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '{"added": 200, "removed": 0, "common": 200}' in out.stdout
    repo = tmp_path / "myrepo"
    assert (repo / "grid.png").stat().st_size > 0 and (repo / "lineage.dot").read_text().startswith("digraph")
    assert (repo / "exported" / "annotations.json").exists()
    assert re.search(r"data \d+ -> model \d+ -> training \d+ -> inference \d+  classification", out.stdout)  # lifecycle list
    assert "PREDICT_ON" in out.stdout
    # every metric the tour prints is on data the model never trained on: 'night' (role test) is no ancestor of the
    # training version whose deployment predicted on it
    import veml

    with veml.open(repo) as r:
        trained_on = {n.name for n in r.lineage.query("train-lite0-tod-on-day+night-train", direction="up").nodes}
        evaluated = r.lineage.query("train-lite0-tod-on-day+night-train-onnx-int8-on-night", direction="up").nodes
    assert "day+night-train" in trained_on and "night" not in trained_on, trained_on
    assert "night" in {n.name for n in evaluated}


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [l for l in first_block.splitlines() if l and not l.startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith("veml demo")
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].replace(" -q", "") in ci.replace(" -q", "")


def test_rebuild_evidence_quotes_benchmarks_md():
    """What `veml rebuild` tells users about each method is what BENCHMARKS.md measured, in its rebuild section."""
    from veml.lifecycle.evidence import REBUILD_SECTION, rebuild_evidence

    text = (README.parent / "BENCHMARKS.md").read_text()
    section = text[text.index(f"## {REBUILD_SECTION}"):]
    section = section[:section.index("\n## ")]
    for method in ("full", "transfer", "active", "adapt"):
        e = rebuild_evidence("classification", method)
        assert e.status in ("met", "not met")
        for figure in re.findall(r"-?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]", e.measured + e.target):
            assert figure in section, (method, figure)
        assert f"**{e.status}**" in section
    assert rebuild_evidence("forecasting", "full").status == "not measured"
