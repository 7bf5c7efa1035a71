"""verify and gc, and what a kill -9 at any point of an import leaves behind (DESIGN.md section 7)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import veml
from conftest import VEML_BIN, artifact_bytes, images_dir, overwrite_artifact, sample_table
from veml.datasets import generate_driving_coco


def _versions(root: Path) -> list[dict]:
    out = subprocess.run([VEML_BIN, "data", "list", "--json", "--repo", str(root)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _verify(root: Path) -> tuple[int, dict]:
    out = subprocess.run([VEML_BIN, "verify", "--json", "--repo", str(root)], capture_output=True, text=True)
    return out.returncode, json.loads(out.stdout)


def _rows(root: Path, table: str = "samples") -> int:
    return sample_table(root, table).count_rows()


def test_verify_detects_missing_rows(repo, driving_small, cli):
    repo.data.import_("coco", driving_small, "v1", images=images_dir(driving_small))
    assert cli("verify", "--repo", repo.root).code == 0
    ds = sample_table(repo.root)
    ds.delete("data_id = 3")
    r = cli("verify", "--json", "--repo", repo.root)
    assert r.code == 1
    assert any("sample 3 is missing" in p for p in r.json["problems"])


def test_verify_detects_changed_payload_hash(repo, driving_small, cli):
    repo.data.import_("coco", driving_small, "v1", images=images_dir(driving_small))
    ds = sample_table(repo.root)
    ds.update({"payload": "X'00010203'"}, where="data_id = 5")  # bit rot, simulated
    r = cli("verify", "--json", "--repo", repo.root)
    assert r.code == 1 and any("sample 5 content hash mismatch" in p for p in r.json["problems"])


def test_verify_detects_damaged_bitmap_and_artifact(repo, driving_small, traffic_npz, cli):
    repo.data.import_("coco", driving_small, "v1", images=images_dir(driving_small))
    t = repo.data.import_("timeseries", traffic_npz, "traffic")
    digest = t.props["adjacency"]
    original = artifact_bytes(repo.root, digest)
    overwrite_artifact(repo.root, digest, original + b"x")
    r = cli("verify", "--json", "--repo", repo.root)
    assert r.code == 1 and any("artifact adjacency" in p for p in r.json["problems"])
    overwrite_artifact(repo.root, digest, original)
    assert cli("verify", "--repo", repo.root).code == 0
    with repo.stores.graph.engine.begin() as conn:  # whichever database the repository is on
        conn.exec_driver_sql("UPDATE idsets SET digest = 'ff' || substr(digest, 3) WHERE node_id = 1 AND name = 'samples'")
    r = cli("verify", "--json", "--repo", repo.root)
    assert r.code == 1 and any("samples id set does not match" in p for p in r.json["problems"])


def test_gc_reclaims_only_unreferenced_rows(repo, driving_small, cli):
    repo.data.import_("coco", driving_small, "v1", images=images_dir(driving_small))
    repo.data.filter("v1", "category = 'car'", "cars")
    before = _rows(repo.root)
    r = cli("gc", "--json", "--grace", "0", "--repo", repo.root)
    assert r.code == 0 and r.json["samples_reclaimed"] == 0 and _rows(repo.root) == before
    assert cli("verify", "--repo", repo.root).code == 0


_KILL_BEFORE_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    import veml.store.sql_graph as g
    real = g.SqlGraphStore.record
    def record(self, kind, *a, **k):
        os.kill(os.getpid(), signal.SIGKILL)   # rows are appended; the version node never commits
    g.SqlGraphStore.record = record
    from veml.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill_between_append_and_commit_leaves_no_version(repo, driving_small, tmp_path):
    repo.data.import_("coco", driving_small, "v1", images=images_dir(driving_small))
    root = repo.root
    repo.close()
    rows_before = _rows(root)
    script = tmp_path / "killer.py"
    script.write_text(_KILL_BEFORE_COMMIT)
    proc = subprocess.run([sys.executable, str(script), "data", "import", "coco", str(driving_small),
                           "--images", str(images_dir(driving_small)), "--name", "doomed", "--repo", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    assert _rows(root) == 2 * rows_before  # the rows were written ...
    assert [v["name"] for v in _versions(root)] == ["v1"]  # ... but no version references them
    code, report = _verify(root)
    assert code == 0 and report["samples"] == rows_before
    # gc within the grace period reclaims them at once: the importer's id reservation names its
    # process (host:pid:pid-namespace), and that process is gone (a live one is kept: test_migrations)
    gc = subprocess.run([VEML_BIN, "gc", "--json", "--repo", str(root)], capture_output=True, text=True, check=True)
    assert json.loads(gc.stdout)["samples_reclaimed"] == rows_before
    assert json.loads(gc.stdout)["allocations_released"] == 2  # its sample and annotation id ranges
    assert _rows(root) == rows_before
    assert _verify(root)[0] == 0
    again = veml.open(root)
    v = again.data.import_("coco", driving_small, "doomed", images=images_dir(driving_small))
    assert v.props["samples"] == rows_before
    again.close()


@pytest.mark.slow
def test_kill_at_random_points_of_real_imports(tmp_path):
    """A real ``veml data import`` process, SIGKILLed at seeded random moments, never leaves half a version."""
    ann = generate_driving_coco(tmp_path / "src", 600, seed=5)
    root = tmp_path / "repo"
    veml.init(root).close()
    rng = random.Random(1234)
    # how long one full import takes, to spread the kills over it
    t0 = time.perf_counter()
    subprocess.run([VEML_BIN, "data", "import", "coco", str(ann), "--images", str(ann.parent / "images"), "--name", "full",
                    "--repo", str(root)], check=True, capture_output=True)
    full = time.perf_counter() - t0
    n_full = _versions(root)[0]["samples"]
    completed = 1
    for trial in range(8):
        delay = rng.uniform(0.0, full * 1.2)
        proc = subprocess.Popen([VEML_BIN, "data", "import", "coco", str(ann), "--images", str(ann.parent / "images"),
                                 "--name", f"t{trial}", "--repo", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        versions = _versions(root)
        assert all(v["samples"] == n_full for v in versions), versions  # a version is whole or absent
        completed = len(versions)
        code, report = _verify(root)
        assert code == 0, report
    gc = subprocess.run([VEML_BIN, "gc", "--json", "--grace", "0", "--repo", str(root)], capture_output=True, text=True, check=True)
    assert _rows(root) == completed * n_full, json.loads(gc.stdout)
    assert _verify(root)[0] == 0


@pytest.mark.embedded_only("a temp file of a killed local artifact write")
def test_gc_removes_temp_files_of_killed_artifact_writes_after_the_grace_period(repo, traffic_npz, cli):
    import os
    import time

    t = repo.data.import_("timeseries", traffic_npz, "traffic")  # stores an adjacency artifact
    shard = repo.root / ".veml" / "artifacts" / t.props["adjacency"][:2]
    old, young = shard / ".tmp-killed", shard / ".tmp-running"
    old.write_bytes(b"half an artif")
    young.write_bytes(b"still being wri")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    r = cli("gc", "--json", "--repo", repo.root)  # default grace: one hour
    assert r.code == 0 and r.json["temp_files_removed"] == 1
    assert not old.exists() and young.exists()
    assert cli("verify", "--repo", repo.root).code == 0
