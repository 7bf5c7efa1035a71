"""The everyday things (issue 16): help examples, lean start-up, torch-free ONNX runs, predict --out,
flat unlabeled folders, training threads, progress bars with an ETA and ``veml doctor``.

What needs a real process (which modules a command imports) runs the CLI in a subprocess with
``-X importtime``; the rest goes through the in-process runner.  One tiny model is trained per module.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shlex
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

import veml
from conftest import images_dir, ok, run_cli
from veml.cli import examples
from veml.cli.main import build_parser

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

HEAVY = ("numpy", "pandas", "pyarrow", "duckdb", "sqlalchemy", "lance", "PIL", "torch", "sqlglot")
MB_YAML = "adapter: torch\ntask: classification\narchitecture: mobilenet_v3_small\nparameters:\n  image_size: 32\n  label_column: time_of_day\n"


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``veml ARGS`` in a fresh interpreter; its result and the top-level packages it imported."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "veml.cli.main", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    mods = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in res.stderr.splitlines() if line.startswith("import time:")}
    return res, mods


def on_a_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run ``veml ARGS`` with stderr on a pseudo-terminal: exit code, stdout, what the terminal showed.
    ``TQDM_MININTERVAL=0`` makes tqdm draw every update, so a short run still shows its bar."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24x120: tqdm draws nothing in 0 columns
    env = {**os.environ, "TQDM_MININTERVAL": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "veml.cli.main", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=slave, env=env)
    os.close(slave)
    shown = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown.append(chunk)
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(shown).decode(errors="replace")


def versions_in(root: Path) -> int:
    with veml.open(root) as r:
        return r.versions()[1]


# ------------------------------------------------------------------------------ help and start-up


def test_every_command_help_ends_with_an_example_that_parses():
    parser = build_parser()
    seen = 0
    for path, p in examples.commands(parser):
        lines = [ln.strip() for ln in p.format_help().rstrip().splitlines() if ln.strip()]
        heads = [i for i, ln in enumerate(lines) if ln in ("example:", "examples:")]
        assert heads, f"veml {path} --help does not end with an example"
        shown = lines[heads[-1] + 1:]
        assert shown and (len(shown) == 1 or lines[heads[-1]] == "examples:"), (path, shown)
        for line in shown:  # each line one command, a trailing "# comment" allowed
            example = shlex.split(line, comments=True)
            assert example[0] == "veml" and " ".join(example[1:]).startswith(path), (path, line)
            if "&&" in example:
                example = example[:example.index("&&")]
            try:  # a stale example (a renamed flag, a missing argument) fails to parse
                build_parser().parse_args(example[1:])
            except SystemExit as exc:
                pytest.fail(f"the example of 'veml {path}' does not parse ({exc}): {line}")
        seen += 1
    assert seen >= 40


def test_help_version_and_data_list_import_no_heavy_module(tmp_path):
    for args in (["--help"], ["--version"], ["data", "import", "--help"]):
        res, mods = imported(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert not mods & set(HEAVY), (args, sorted(mods & set(HEAVY)))
    ok("init", tmp_path / "r")
    res, mods = imported("data", "list", "--json", cwd=tmp_path / "r")
    assert res.returncode == 0 and json.loads(res.stdout) == []
    assert not mods & (set(HEAVY) - {"sqlalchemy"}), sorted(mods & set(HEAVY))  # the metadata database only


# ------------------------------------------------------------------ one trained, deployed model


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, driving_small, driving_night):
    mp = pytest.MonkeyPatch()
    mp.setenv("VEML_THREADS", "1")
    mp.delenv("OMP_NUM_THREADS", raising=False)
    try:
        root = tmp_path_factory.mktemp("everyday") / "repo"
        ok("init", root)
        ok("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", "day", "--repo", root)
        ok("data", "import", "coco", driving_night, "--images", images_dir(driving_night), "--name", "night", "--repo", root)
        ok("data", "merge", "day", "night", "--name", "both", "--repo", root)
        (root / "mb.yaml").write_text(MB_YAML)
        ok("model", "add", "--name", "mb", "--config", root / "mb.yaml", "--repo", root)
        t = ok("train", "--data", "both", "--model", "mb", "--set", "batch_size=8", "--set", "max_steps=2",
               "--set", "seed=1", "--name", "t", "--repo", root)
        ok("deploy", "t", "--name", "t-onnx", "--repo", root)
    finally:
        mp.undo()
    return root, t


def test_training_records_the_threads_it_chose(deployed):
    _, t = deployed
    assert t["profile"]["threads"] == 1 and t["profile"]["threads_source"] == "VEML_THREADS"


def test_onnx_predict_writes_per_sample_rows_without_importing_torch(deployed, tmp_path):
    root, _ = deployed
    out = tmp_path / "pred.jsonl"
    res, mods = imported("predict", "t-onnx", "--data", "night", "--out", str(out), "--json", "--repo", str(root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch" not in mods and "torchvision" not in mods
    doc = json.loads(res.stdout)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert doc["out"] == str(out.resolve()) and len(rows) == doc["samples"] == 24
    assert {"data_id", "file_name", "category", "score", "scores"} <= set(rows[0])
    assert rows[0]["file_name"].startswith("night") and rows[0]["category"] in ("day", "night")
    assert abs(sum(rows[0]["scores"]) - 1.0) < 1e-4 and rows[0]["score"] == max(rows[0]["scores"])

    before = versions_in(root)
    for bad, needle in ((out, "exists (pass --force"), (tmp_path / "pred.csv", "write .jsonl")):
        res = run_cli("predict", "t-onnx", "--data", "night", "--out", bad, "--repo", root)
        assert res.code == 1 and res.err.startswith("error: ") and needle in res.err and "Traceback" not in res.err
        assert len(res.err.splitlines()) == 1
    assert versions_in(root) == before  # refused before any work: nothing recorded

    forced = ok("predict", "t-onnx", "--data", "night", "--out", tmp_path / "pred.parquet", "--repo", root)
    table = pq.read_table(forced["out"])
    assert table.num_rows == 24 and table.column("data_id").to_pylist() == sorted(table.column("data_id").to_pylist())


def test_onnx_drift_does_not_import_torch(deployed, tmp_path):
    root, _ = deployed
    res, mods = imported("drift", "--inference", "t-onnx", "--test", "night", "--json", "--repo", str(root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch" not in mods and "torchvision" not in mods
    assert json.loads(res.stdout)["method"] == "bbsd"


# -------------------------------------------------------------------------------- progress bars


def eta_bar(shown: str, desc: str, total: int) -> bool:
    """tqdm drew ``desc`` with ``n/total [elapsed<remaining``: a total and an ETA."""
    return desc in shown and re.search(rf"\b{total}/{total} \[\d\d:\d\d<\d\d:\d\d", shown) is not None


def test_progress_bars_show_a_total_and_eta_on_a_terminal_only(tmp_path, driving_small):
    root = tmp_path / "r"
    ok("init", root)
    args = ("data", "import", "coco", str(driving_small), "--images", str(images_dir(driving_small)), "--repo", str(root))
    code, out, shown = on_a_terminal(*args, "--name", "day", cwd=tmp_path)
    assert code == 0 and "day" in out, shown[-2000:]
    assert eta_bar(shown, "importing coco", 40), shown[-2000:]
    code, out, shown = on_a_terminal(*args, "--name", "quiet", "--json", cwd=tmp_path)  # --json: no bar
    assert code == 0 and json.loads(out)["samples"] == 40 and "importing" not in shown and "/40" not in shown, shown
    piped = subprocess.run([sys.executable, "-m", "veml.cli.main", *args, "--name", "piped"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # stderr not a terminal: no bar
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_predict_and_embeddings_report_their_total(deployed, tmp_path):
    root, _ = deployed
    code, _, shown = on_a_terminal("predict", "t-onnx", "--data", "night", "--repo", str(root), cwd=tmp_path)
    assert code == 0 and eta_bar(shown, "predicting", 24), shown[-2000:]

    @dataclass
    class Seen:  # a veml.progress.Progress of the test's own
        total: int = 0
        done: int = 0

        def add_total(self, n: int) -> None:
            self.total += n

        def advance(self, n: int) -> None:
            self.done += n

    seen, calls = Seen(), []
    with veml.open(root) as r:
        r.coresets.embeddings("night", progress=seen)
        r.coresets.embeddings("night", progress=calls.append)  # a plain callable still works (cached now)
    assert seen.total == seen.done == 24 and calls == [24]


# ------------------------------------------------------------------- flat folders and doctor


def test_flat_folder_imports_only_as_unlabeled(tmp_path, repo_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(flat / f"{i}.png")
    res = run_cli("data", "import", "images", flat, "--name", "labelled", "--repo", repo_path)
    assert res.code == 1 and "--role unlabeled" in res.err and len(res.err.splitlines()) == 1
    assert versions_in(repo_path) == 0
    v = ok("data", "import", "images", flat, "--name", "pool", "--role", "unlabeled", "--repo", repo_path)
    assert v["samples"] == 3 and v["annotations"] == 0 and v["role"] == "unlabeled"


def test_doctor_reports_extras_services_and_the_repository(tmp_path, repo_path):
    res = run_cli("doctor", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    d = res.json
    assert set(d) == {"veml", "python", "platform", "extras", "services", "threads", "repository"}
    assert d["extras"]["core"]["available"] and d["extras"]["torch"]["available"]
    assert {"name", "required", "installed", "importable", "ok"} <= set(d["extras"]["core"]["packages"][0])
    assert set(d["services"]) == {"postgresql", "chromium"}
    repo = d["repository"]
    assert repo["ok"] and set(repo["stores"]) == {"metadata_url", "storage_url", "artifacts_url", "embeddings_url"}
    assert all(s["reachable"] for s in repo["stores"].values())

    nowhere = tmp_path / "empty"
    nowhere.mkdir()
    res = run_cli("doctor", "--json", "--repo", nowhere)  # asked for a repository that is not there: broken
    assert res.code == 1 and res.json["repository"]["ok"] is False

    (repo_path / ".veml" / "config.toml").write_text("metadata_url = [unclosed\n")
    res = run_cli("doctor", "--json", "--repo", repo_path)
    assert res.code == 1 and "malformed config" in res.json["repository"]["error"]
