"""`veml demo`, the README's first command, on a small scale: every stage runs and is recorded."""

from __future__ import annotations

import pytest

import veml
from conftest import assert_failed_cleanly
from veml.demo import run_demo


@pytest.mark.embedded_only("the 5-minute walk-through runs once per CI, on the default; its store operations "
                            "are each covered on PostgreSQL + S3 by the other modules")
def test_demo_builds_every_version_and_three_lifecycles(tmp_path):
    pytest.importorskip("torch")
    summary = run_demo(tmp_path / "demo", images=20, log=lambda m: None)
    assert summary["verify_ok"]
    assert {"amsterdam-day", "all-cities", "vulnerable-road-users", "traffic-grid", "all-cities-test"} <= set(summary["versions"])
    assert set(summary["lifecycles"]) == {"time-of-day", "detection", "traffic"}
    assert 0.0 <= summary["lifecycles"]["time-of-day"]["accuracy"] <= 1.0
    assert 0.0 <= summary["lifecycles"]["detection"]["map50"] <= 1.0
    assert summary["lifecycles"]["traffic"]["mae"] > 0
    with veml.open(tmp_path / "demo") as repo:
        lifecycles = repo.lifecycles.list()
        assert {lc["task"] for lc in lifecycles} == {"classification", "detection", "forecasting"}
        assert repo.data.get("release-1").name == "all-cities"


def test_demo_reruns_over_its_own_directory_only(tmp_path, cli):
    first = run_demo(tmp_path / "demo", images=8, log=lambda m: None, train=False)
    again = run_demo(tmp_path / "demo", images=8, log=lambda m: None, train=False)
    assert first["versions"] == again["versions"]  # replaced, not appended to
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    res = cli("demo", "--path", other, "--no-train", "--json")
    assert_failed_cleanly(res, "not an earlier demo")
    assert (other / "keep.txt").read_text() == "user data"
