"""Shared fixtures: fresh repositories, small generated data sets, and a CLI runner.

The CLI runner calls ``veml.cli.main.main`` in-process (fast) and captures stdout, stderr and the
exit code exactly as a shell would see them; tests that must see a real process (kill -9, several
writers) use ``subprocess`` with the installed ``veml`` entry point instead.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import veml
from veml.cli.main import main
from veml.datasets import Domain, generate_driving_coco, generate_traffic, write_npz

VEML_BIN = str(Path(sys.executable).with_name("veml"))


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys, monkeypatch):
    def run(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture(scope="session")
def driving_small(tmp_path_factory) -> Path:
    """40 generated 64×64 driving scenes (clear day, Amsterdam) as COCO."""
    out = tmp_path_factory.mktemp("driving_small")
    return generate_driving_coco(out, 40, seed=7)


@pytest.fixture(scope="session")
def driving_night(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("driving_night")
    return generate_driving_coco(out, 24, seed=8, domain=Domain(city="tokyo", time_of_day="night", weather="rain"), file_prefix="night")


@pytest.fixture(scope="session")
def traffic_npz(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("traffic")
    return write_npz(generate_traffic(n_sensors=12, n_steps=288 * 4, seed=3, missing_rate=0.02), out / "traffic.npz")


@pytest.fixture
def repo(tmp_path):
    r = veml.init(tmp_path / "repo")
    yield r
    r.close()


@pytest.fixture
def repo_path(repo) -> Path:
    return repo.root


def images_dir(ann: Path) -> Path:
    return ann.parent / "images"


@pytest.fixture(autouse=True)
def _no_env_repo(monkeypatch):
    monkeypatch.delenv("VEML_REPO", raising=False)
    monkeypatch.setenv("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED", "0"))
