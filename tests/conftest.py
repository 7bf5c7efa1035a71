"""Shared fixtures: fresh repositories, small generated data sets, and a CLI runner.

The CLI runner calls ``veml.cli.main.main`` in-process (fast) and captures stdout, stderr and the
exit code exactly as a shell would see them; tests that must see a real process (kill -9, several
writers) use ``subprocess`` with the installed ``veml`` entry point instead.
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


def run_cli(*args) -> Result:
    """The CLI in-process, stdout/stderr captured; usable from module-scoped fixtures too."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def ok(*args):
    """Run with --json, expect success, return the JSON document."""
    res = run_cli(*args, "--json")
    assert res.code == 0, (args, res.err)
    assert "Traceback" not in res.err
    return res.json


def assert_failed_cleanly(res: Result, *needles: str, json_given: bool = True) -> str:
    """Exit 1, one ``error:`` line naming each needle, no traceback, empty stdout with --json."""
    assert res.code == 1, (res.code, res.out, res.err)
    assert "Traceback" not in res.err, res.err
    lines = res.err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}: {res.err!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "internal error" not in line, f"an unexpected exception leaked: {line}"
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    if json_given:
        assert res.out == "", res.out
    return line


@pytest.fixture
def cli(monkeypatch):
    def run(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        return run_cli(*args)

    return run


# --- disk: what a test wrote is gone once it has passed ----------------------------------------------
# A passing test's tmp_path goes at its teardown (tmp_path_retention_policy = "failed" in pyproject.toml), and
# what a module's fixtures made with tmp_path_factory (repositories with model checkpoints: several hundred MB
# for some modules) goes when the module's last test has run, unless one of its tests failed.  Without this the
# first pass had put 2.8 GB under /tmp by 64 % of its tests (with it: at most 0.84 GB), and a CI machine with
# little free disk failed part-way through with "No space left on device".  Session fixtures keep theirs (registered in _SESSION_DIRS).
_SESSION_DIRS: set[str] = set()


def _session_dir(tmp_path_factory, name: str) -> Path:
    out = tmp_path_factory.mktemp(name)
    _SESSION_DIRS.add(out.name)
    return out


@pytest.fixture(scope="module", autouse=True)
def _module_tmp_cleanup(request, tmp_path_factory):
    """Set up before, so torn down after, every module-scoped fixture of the module."""
    import shutil

    base = tmp_path_factory.getbasetemp()
    before = {p.name for p in base.iterdir()}
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return  # keep what a failing module made, for a look
    for path in base.iterdir():
        if path.name not in before and path.name not in _SESSION_DIRS and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def driving_small(tmp_path_factory) -> Path:
    """40 generated 64×64 driving scenes (clear day, Amsterdam) as COCO."""
    out = _session_dir(tmp_path_factory, "driving_small")
    return generate_driving_coco(out, 40, seed=7)


@pytest.fixture(scope="session")
def driving_night(tmp_path_factory) -> Path:
    out = _session_dir(tmp_path_factory, "driving_night")
    return generate_driving_coco(out, 24, seed=8, domain=Domain(city="tokyo", time_of_day="night", weather="rain"), file_prefix="night")


@pytest.fixture(scope="session")
def traffic_npz(tmp_path_factory) -> Path:
    out = _session_dir(tmp_path_factory, "traffic")
    return write_npz(generate_traffic(n_sensors=12, n_steps=288 * 4, seed=3, missing_rate=0.02), out / "traffic.npz")


@pytest.fixture
def repo(tmp_path):
    r = veml.init(tmp_path / "repo")
    yield r
    r.close()


@pytest.fixture
def repo_path(repo) -> Path:
    return repo.root


def write_table(path: Path, shift: float = 0.0, seed: int = 0, rows: int = 40) -> Path:
    """A small CSV table (features a, b, c; label y) whose values sit around ``shift``."""
    x = np.random.default_rng(seed).normal(shift, 1.0, size=(rows, 3))
    lines = ["a,b,c,y"] + [f"{r[0]:.5f},{r[1]:.5f},{r[2]:.5f},{'p' if r[0] > shift else 'n'}" for r in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def images_dir(ann: Path) -> Path:
    return ann.parent / "images"


@pytest.fixture(autouse=True)
def _no_env_repo(monkeypatch):
    monkeypatch.delenv("VEML_REPO", raising=False)
    monkeypatch.setenv("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED", "0"))


# --- the whole suite on team servers --------------------------------------------------------------
# VEML_TEST_STORES=postgres (or postgres+s3) runs every test against a private PostgreSQL cluster
# (and an S3-compatible server) started here, one per test process: ``veml init`` picks them up
# from $VEML_METADATA_URL & co. with a ``{repo}`` placeholder, exactly as a team's shell would, so
# each test's repository gets its own schema / prefix.  Tests about the embedded layout itself
# (files under .veml/), and the full demo (5 minutes, run once per CI), carry the ``embedded_only``
# marker and are skipped there, with their reason.
STORES = os.environ.get("VEML_TEST_STORES", "embedded")
#: the ``embedded_only`` reason of a bad-input test whose input a parser or a parameter check refuses before any
#: store is read or written
PARSER_LEVEL = "parser-level refusal before anything is written: the same on every back-end"


def pytest_configure(config):
    config.addinivalue_line("markers", "embedded_only(reason): runs on the embedded default only, for the reason given")
    if STORES == "embedded":
        return
    if STORES not in ("postgres", "postgres+s3"):
        raise pytest.UsageError(f"VEML_TEST_STORES={STORES!r}: use embedded, postgres or postgres+s3")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the xdist controller runs no tests: its workers start their own servers
    from contextlib import ExitStack

    from pg_cluster import pg_cluster

    stack = ExitStack()
    config._veml_servers = stack
    cluster = stack.enter_context(pg_cluster())
    os.environ["VEML_METADATA_URL"] = cluster.create_database("suite") + "?schema={repo}"
    if STORES == "postgres+s3":
        from s3_server import suite_s3_env

        os.environ.update(stack.enter_context(suite_s3_env()))


def pytest_unconfigure(config):
    stack = getattr(config, "_veml_servers", None)
    if stack is not None:
        stack.close()


# Modules with nothing to learn from another back-end, left out of a VEML_TEST_STORES run (deselected,
# not skipped): pure computation that never opens a repository, and the modules that already run
# themselves against SQLite, PostgreSQL and S3 explicitly.
NOT_STORE_DEPENDENT = {
    "test_datasets.py", "test_dcrnn.py", "test_distance.py", "test_export_compare.py", "test_kcenter.py", "test_typical.py",
    "test_metrics.py", "test_twosample.py", "test_sample_store.py",  # no repository (or a local store on purpose)
    "test_graph_store.py", "test_graph_store_pg.py", "test_concurrency.py", "test_crash_safety.py",
    "test_s3_store.py", "test_team_defaults.py", "test_migrations.py",  # choose their back-ends themselves
    "test_fuzz_inputs.py",  # parsers refuse before anything is written: one back-end is enough for the fuzz stage
    "test_filter_language.py",  # the grammar and the time budget: DuckDB over Arrow tables whatever stores them
    "test_lifecycle_eval.py",  # a smoke run of the evaluation harness: measurements, not store behaviour
    "test_transfer_recipe.py",  # what the fine-tuning recipe does to weights; test_similarity runs transfer on every back-end
    "test_server_limits.py",  # HTTP-level caps, queue and token handling: the same whatever stores the repository
    "test_transferability.py", "test_estimate.py", "test_combined_drift.py",  # statistics on arrays: no repository
    "test_ui_browser.py",  # a face over the REST API, whose endpoints test_server_api runs on every back-end
    "test_everyday_cli.py",  # help text, import lean-ness, progress bars, `veml doctor`: what the process does
}


def pytest_collection_modifyitems(config, items):
    if STORES == "embedded":
        return
    kept = [item for item in items if item.path.name not in NOT_STORE_DEPENDENT]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.path.name in NOT_STORE_DEPENDENT])
        items[:] = kept
    for item in items:
        marker = item.get_closest_marker("embedded_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"VEML_TEST_STORES={STORES}: {marker.args[0] if marker.args else 'embedded layout'}"))


# --- reaching into a repository's stores wherever they are (local folders, S3) ---------------------
# Tests that damage data on purpose (bit rot, a lost row, a truncated artifact) go through the
# repository's own store objects, so they damage the same bytes on S3 as on a local disk.
def sample_table(root: Path, table: str = "samples"):
    """The Lance dataset behind one sample table of the repository at ``root``."""
    import lance

    with veml.open(root) as repo:
        store = repo.stores.samples
        return lance.dataset(store._uri(table), storage_options=store._opts)


def artifact_bytes(root: Path, digest: str) -> bytes:
    with veml.open(root) as repo:
        return repo.stores.artifacts.get_bytes(digest)


def overwrite_artifact(root: Path, digest: str, data: bytes) -> None:
    """Replace an artifact's stored bytes behind VeML's back (its digest no longer matches)."""
    with veml.open(root) as repo:
        store = repo.stores.artifacts
        path = store._path(digest)
        if isinstance(path, Path):
            path.chmod(0o644)
            path.write_bytes(data)
        else:
            store.loc.fs.pipe_file(path, data)


def artifact_digests(root: Path) -> list[str]:
    with veml.open(root) as repo:
        return sorted(repo.stores.artifacts.digests())


# --- the fuzz stage's count (issue 13, point 10) --------------------------------------------------
# Fuzz modules record how many generated cases each family ran; workers write one small file each
# into pytest's cache directory, and the controller prints the totals at the end of the run.
def record_fuzz_cases(config, stage: str, counts: dict) -> None:
    import uuid

    folder = Path(config.cache.mkdir("veml-fuzz"))
    (folder / f"{stage}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json").write_text(json.dumps(counts))


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        for old in Path(session.config.cache.mkdir("veml-fuzz")).glob("*.json"):
            old.unlink()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):
        return
    totals: dict[str, int] = {}
    for f in sorted(Path(config.cache.mkdir("veml-fuzz")).glob("*.json")):
        for family, n in json.loads(f.read_text()).items():
            totals[family] = totals.get(family, 0) + int(n)
    if totals:
        families = ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
        verdict = "every case answered cleanly (no traceback, no internal error, no HTTP 500)" if exitstatus == 0 \
            else "see the failures above"
        terminalreporter.write_line(f"fuzz stage: {sum(totals.values())} generated cases ({families}); {verdict}")
