"""MLflow interop (issue 16): ``veml import mlflow`` and ``veml export mlflow`` against real MLflow stores.

Every source store is built with mlflow's own client (``mlflow-skinny``, the ``[mlflow]`` extra) as a
user's scripts would build it: experiments, runs with step metrics, params, tags, a logged dataset
input, artifact files, a registered model with two versions (scikit-learn models saved with skops)
and an alias, one version VeML cannot read (a pickle), and a run still going.  The same history is
built in an SQLite database, a file store and a private PostgreSQL cluster (``pg_cluster.py``).
What VeML made of it is read back through the CLI, and what ``export`` wrote is read back with
``MlflowClient``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import veml
from conftest import assert_failed_cleanly, ok, run_cli, write_table

pytest.importorskip("mlflow", reason="the [mlflow] extra (mlflow-skinny) is not installed")

KEYS = {"tracking_uri", "experiments", "runs", "metrics", "artifacts", "models", "aliases", "skipped", "versions", "warnings"}
EXPORT_KEYS = {"tracking_uri", "experiment", "experiment_id", "training", "inference", "metrics", "skipped", "runs", "warnings"}


@contextmanager
def mlflow_client(uri: str):
    """mlflow's own client, with its file store allowed (mlflow 3 refuses new ones unless asked) and its
    default store pointed at ``uri`` (else a file store's model versions create ./mlflow.db)."""
    from mlflow import MlflowClient

    env = {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_history(uri: str, work: Path, table: Path) -> dict:
    """The MLflow history every import test reads; returns the ids a test checks against."""
    import skops.io as sio
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from sklearn.linear_model import LogisticRegression

    work.mkdir(parents=True, exist_ok=True)
    rows = np.genfromtxt(table, delimiter=",", skip_header=1, dtype=str)
    x, y = rows[:, :3].astype(float), rows[:, 3]
    for c, name in ((1.0, "v1.skops"), (0.1, "v2.skops")):
        sio.dump(LogisticRegression(C=c, max_iter=300).fit(x, y), work / name)
    (work / "notes.txt").write_text("trained on the team's table\n")
    (work / "model.pkl").write_bytes(pickle.dumps({"not": "a model VeML reads"}))
    art = (work / "artifacts").as_uri() if uri.startswith(("sqlite", "postgresql")) else None
    with mlflow_client(uri) as c:
        exp_a = c.create_experiment("churn", artifact_location=art and f"{art}/churn")
        exp_b = c.create_experiment("baseline", artifact_location=art and f"{art}/baseline")
        r1 = c.create_run(exp_a, run_name="lr-c1", tags={"veml.data": "tab", "team": "risk"}).info.run_id
        for step, loss in enumerate([0.9, 0.6, 0.45, 0.4]):
            c.log_metric(r1, "loss", loss, step=step)
        c.log_metric(r1, "accuracy", 0.8, step=3)
        c.log_param(r1, "C", "1.0")
        c.log_artifact(r1, str(work / "notes.txt"))
        c.log_artifact(r1, str(work / "v1.skops"), "model")
        c.log_artifact(r1, str(work / "v2.skops"), "model-v2")
        c.log_artifact(r1, str(work / "model.pkl"), "opaque")
        c.set_terminated(r1)
        r2 = c.create_run(exp_a, run_name="lr-diverged").info.run_id
        c.log_metric(r2, "loss", float("nan"), step=0)
        c.set_terminated(r2, "FAILED")
        running = c.create_run(exp_a, run_name="still-going").info.run_id
        r3 = c.create_run(exp_b, run_name="majority").info.run_id
        c.log_inputs(r3, datasets=[DatasetInput(Dataset("tab", "d1g3st", "local", "t.csv"),
                                                [InputTag("mlflow.data.context", "training")])])
        c.log_metric(r3, "accuracy", 0.5)
        c.set_terminated(r3)
        c.create_registered_model("churn-clf")
        v1 = c.create_model_version("churn-clf", f"runs:/{r1}/model", run_id=r1).version
        v2 = c.create_model_version("churn-clf", f"runs:/{r1}/model-v2", run_id=r1).version
        c.set_registered_model_alias("churn-clf", "champion", v2)
        c.create_registered_model("opaque")
        c.create_model_version("opaque", f"runs:/{r1}/opaque", run_id=r1)
    return {"r1": r1, "r2": r2, "r3": r3, "running": running, "v1": v1, "v2": v2}


def snapshot(root: Path) -> dict:
    """What a refused command must leave as it was: every version and alias."""
    with veml.open(root) as repo:
        nodes, _ = repo.versions()
        return {"versions": [(n.id, n.kind, n.name) for n in nodes], "aliases": [a.to_json() for a in repo.aliases.list()]}


def fresh_repo(base: Path, name: str) -> Path:
    """A repository with the table ``tab`` (what the MLflow runs name as their data)."""
    root = base / name
    ok("init", root)
    ok("data", "import", "table", write_table(base / "t.csv", rows=40), "--label", "y", "--name", "tab", "--repo", root)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def empty_db(base) -> Path:
    """An empty MLflow SQLite database, made by mlflow (its ~50 migrations take seconds: made once, copied)."""
    path = base / "empty.db"
    with mlflow_client(f"sqlite:///{path}") as c:
        c.search_experiments()
    return path


def copy_of(empty: Path, name: str) -> str:
    shutil.copyfile(empty, empty.with_name(name))
    return f"sqlite:///{empty.with_name(name)}"


@pytest.fixture(scope="module")
def sqlite_source(base, empty_db):
    uri = copy_of(empty_db, "source.db")
    return uri, build_history(uri, base / "work-sqlite", write_table(base / "t.csv", rows=40))


@pytest.fixture(scope="module")
def imported(base, sqlite_source):
    """A repository after one import of the SQLite store (and the JSON that import printed)."""
    uri, _ = sqlite_source
    root = fresh_repo(base, "repo")
    res = run_cli("import", "mlflow", uri, "--json", "--repo", root)
    assert res.code == 0 and res.err == "", res.err  # mlflow's log lines and progress bars kept off stderr
    return root, res.json


# ------------------------------------------------------------------------------------------ import


def test_import_brings_runs_metrics_artifacts_models_and_aliases(imported, sqlite_source):
    root, got = imported
    uri, ids = sqlite_source
    assert set(got) == KEYS
    assert (got["experiments"], got["runs"], got["models"], got["aliases"], got["skipped"]) == (2, 3, 2, 1, 0), got
    assert got["metrics"] == 4 + 1 + 1 and got["artifacts"] == 4  # the NaN of the diverged run is not a value
    warned = " ".join(got["warnings"])
    assert "still-going" in warned and "RUNNING" in warned  # left for a later import
    assert "'opaque' version 1" in warned and "no file VeML can read" in warned

    runs = {t["origin"]["run_id"]: t for t in ok("train", "list", "--repo", root) if "run_name" in (t.get("origin") or {})}
    r1 = runs[ids["r1"]]
    assert r1["status"] == "finished" and r1["params"] == {"C": "1.0"} and r1["metrics"] == {"accuracy": 0.8, "loss": 0.4}
    assert r1["origin"]["experiment"] == "churn" and r1["origin"]["tags"]["team"] == "risk"
    assert r1["origin"]["tracking_uri"] == uri and r1["origin"]["start_time"] and r1["origin"]["end_time"]
    assert sorted(r1["artifacts"]) == ["model-v2/v2.skops", "model/v1.skops", "notes.txt", "opaque/model.pkl"]
    with veml.open(root) as repo:  # the artifact bytes are VeML's now, under their sha256
        assert repo.stores.artifacts.get_bytes(r1["artifacts"]["notes.txt"]) == b"trained on the team's table\n"
    assert runs[ids["r2"]]["status"] == "failed" and "FAILED" in runs[ids["r2"]]["error"]
    log = ok("train", "log", r1["name"], "--repo", root)["logs"]
    assert [(e["step"], e["value"]) for e in log if e["key"] == "loss"] == [(0, 0.9), (1, 0.6), (2, 0.45), (3, 0.4)]

    tab = ok("data", "show", "tab", "--repo", root)["id"]
    assert r1["data"] == tab and r1["parents"] == [tab]  # the run's veml.data tag
    assert runs[ids["r3"]]["data"] == tab  # its logged dataset input is named like the data version

    alias = {a["alias"]: a for a in ok("alias", "list", "--repo", root)}["churn-clf@champion"]
    champion = ok("train", "show", "churn-clf@champion", "--repo", root)
    assert alias["version_id"] == champion["id"] and champion["name"] == "churn-clf-v2"
    assert champion["origin"] == {"system": "mlflow", "tracking_uri": uri, "model": "churn-clf", "version": str(ids["v2"]),
                                  "run_id": ids["r1"], "source": f"runs:/{ids['r1']}/model-v2", "file": "v2.skops"}
    up = ok("lineage", "churn-clf@champion", "--up", "--repo", root)
    edges = {(e["src"], e["kind"]) for e in up["edges"] if e["dst"] == champion["id"]}
    assert (r1["id"], "FINETUNE_FROM") in edges and (tab, "DATA_TRAINING") in edges
    # a registered version is a model VeML runs: it deploys like any training
    dep = ok("deploy", "churn-clf@champion", "--format", "skops", "--name", "champion-skops", "--repo", root)
    assert dep["format"] == "skops" and dep["agreement"] == 1.0
    assert ok("verify", "--repo", root)["ok"] is True


def test_reimport_brings_nothing_new_until_mlflow_changes(imported, sqlite_source):
    root, first = imported
    uri, ids = sqlite_source
    before = snapshot(root)
    again = ok("import", "mlflow", uri, "--repo", root)
    assert (again["runs"], again["metrics"], again["artifacts"], again["models"], again["aliases"]) == (0, 0, 0, 0, 0)
    assert again["experiments"] == 0 and again["versions"] == []
    assert again["skipped"] == first["runs"] + first["models"] + first["aliases"]
    assert snapshot(root) == before
    # MLflow moves on: the run ends and the alias moves back to version 1; only that is brought
    with mlflow_client(uri) as c:
        c.set_terminated(ids["running"])
        c.set_registered_model_alias("churn-clf", "champion", ids["v1"])
    third = ok("import", "mlflow", uri, "--repo", root)
    assert (third["runs"], third["models"], third["aliases"]) == (1, 0, 1), third
    assert ok("train", "show", "churn-clf@champion", "--repo", root)["name"] == "churn-clf-v1"
    assert [h["version"] for h in ok("alias", "history", "churn-clf@champion", "--repo", root)] == ["churn-clf-v2", "churn-clf-v1"]
    with mlflow_client(uri) as c:  # leave the store as the other tests expect it
        c.set_registered_model_alias("churn-clf", "champion", ids["v2"])


def test_an_imported_run_has_no_model_to_deploy(imported, sqlite_source, cli):
    root, _ = imported
    name = next(t["name"] for t in ok("train", "list", "--repo", root) if (t.get("origin") or {}).get("run_name") == "lr-c1")
    before = snapshot(root)
    assert_failed_cleanly(cli("deploy", name, "--json", "--repo", root), name, "no model checkpoint")
    assert snapshot(root) == before


@pytest.mark.embedded_only("the MLflow store's back-end is the test's own choice: one run is enough")
def test_import_from_a_file_store_one_experiment(base, tmp_path, monkeypatch):
    store = base / "mlruns"
    build_history(store.as_uri(), base / "work-file", write_table(base / "t.csv", rows=40))
    root = fresh_repo(base, "repo-file")
    monkeypatch.chdir(tmp_path)  # mlflow 3's default store is ./mlflow.db: the import must not create it
    got = ok("import", "mlflow", str(store), "--experiment", "baseline", "--repo", root)  # a plain path is a file store
    assert (got["experiments"], got["runs"], got["models"], got["aliases"]) == (1, 1, 0, 0), got
    assert got["versions"][0]["name"] == "mlflow-baseline-majority"
    got = ok("import", "mlflow", store.as_uri(), "--repo", root)  # the rest, the same store however it is spelled
    assert (got["runs"], got["models"], got["aliases"], got["skipped"]) == (2, 2, 1, 1), got
    assert ok("import", "mlflow", store.as_uri(), "--repo", root)["skipped"] == 6
    assert list(tmp_path.iterdir()) == []


@pytest.mark.embedded_only("the MLflow store's back-end is the test's own choice: one run is enough")
def test_import_from_postgresql(base):
    from pg_cluster import PostgresUnavailable, pg_cluster

    try:
        with pg_cluster() as cluster:
            uri = cluster.create_database("mlflow_src")
            build_history(uri, base / "work-pg", write_table(base / "t.csv", rows=40))
            root = fresh_repo(base, "repo-pg")
            got = ok("import", "mlflow", uri, "--repo", root)
            assert (got["experiments"], got["runs"], got["models"], got["aliases"]) == (2, 3, 2, 1), got
            assert ok("train", "show", "churn-clf@champion", "--repo", root)["name"] == "churn-clf-v2"
            assert ok("import", "mlflow", uri, "--repo", root)["skipped"] == 6
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server binaries (initdb) here: {exc}")


# ------------------------------------------------------------------------------------------ export


def test_export_writes_runs_mlflow_reads_back(imported, empty_db):
    root, _ = imported
    with veml.open(root) as repo:
        repo.models.add("lr", {"adapter": "sklearn", "task": "tabular-classification", "architecture": "logistic_regression"})
        trained = repo.training.train("tab", "lr", name="lr-run")
    target = copy_of(empty_db, "target.db")
    got = ok("export", "mlflow", target, "--experiment", "from-veml", "--repo", root)
    assert set(got) == EXPORT_KEYS
    trainings = [t for t in ok("train", "list", "--repo", root) if t["status"] in ("finished", "failed")]
    assert got["training"] == len(trainings) and got["inference"] == 1 and got["skipped"] == 0
    with mlflow_client(target) as c:
        exp = c.get_experiment_by_name("from-veml")
        runs = {r.data.tags["veml.name"]: r for r in c.search_runs([exp.experiment_id])}
        run = runs["lr-run"]
        assert run.info.status == "FINISHED" and run.info.run_name == "lr-run"
        assert run.data.tags["veml.id"] == str(trained["id"]) and run.data.tags["veml.kind"] == "training"
        assert run.data.tags["veml.data"] == "tab" and run.data.tags["veml.model"] == "lr"
        assert set(run.data.params) == set(trained["params"])
        assert run.data.metrics["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
        # an imported run goes out with its whole step history
        r1 = runs[next(n for n in runs if n.startswith("mlflow-churn-lr-c1"))]
        assert [m.value for m in c.get_metric_history(r1.info.run_id, "loss")] == [0.9, 0.6, 0.45, 0.4]
        dep = runs["champion-skops"]
        assert dep.data.tags["veml.kind"] == "inference" and dep.data.params["format"] == "skops"
        assert dep.data.tags["mlflow.parentRunId"] == runs["churn-clf-v2"].info.run_id
        assert "size_bytes" in dep.data.metrics
    again = ok("export", "mlflow", target, "--experiment", "from-veml", "--repo", root)
    assert (again["training"], again["inference"], again["skipped"]) == (0, 0, got["training"] + got["inference"])
    # and importing what this repository exported brings nothing back
    assert ok("import", "mlflow", target, "--repo", root)["runs"] == 0


# ------------------------------------------------------------------------------------------ bad input


def test_bad_tracking_uris_fail_cleanly_and_change_nothing(imported, base, cli):
    root, _ = imported
    before = snapshot(root)
    meta = base / "someone-elses.db"  # an SQLite database that is not MLflow's (like VeML's own meta.db)
    with sqlite3.connect(meta) as conn:
        conn.execute("CREATE TABLE nodes (id INTEGER PRIMARY KEY, name TEXT)")
    meta_sha = hashlib.sha256(meta.read_bytes()).hexdigest()
    cases = [
        (("import", "mlflow", "ftp://example.org/x"), "unsupported MLflow tracking URI"),
        (("import", "mlflow", "sqlite://"), "sqlite:///"),
        (("import", "mlflow", str(base / "nowhere")), "does not exist"),
        (("import", "mlflow", f"sqlite:///{base / 'nowhere.db'}"), "does not exist"),
        (("import", "mlflow", f"sqlite:///{meta}"), "not an MLflow tracking database"),
        (("import", "mlflow", f"sqlite:///{base / 't.csv'}"), "not a readable SQLite database"),
        (("import", "mlflow", str(root)), "not an MLflow file store"),
        (("import", "mlflow", "postgresql://veml@127.0.0.1:1/mlflow"), "cannot reach the MLflow database"),
        (("import", "mlflow", f"sqlite:///{base / 'source.db'}", "--experiment", "nope"), "no MLflow experiment 'nope'"),
        (("export", "mlflow", f"sqlite:///{meta}"), "not an MLflow tracking database"),
        (("export", "mlflow", f"sqlite:///{base / 'target2.db'}", "--experiment", " x"), "malformed MLflow experiment name"),
    ]
    for args, needle in cases:
        assert_failed_cleanly(cli(*args, "--json", "--repo", root), needle)
    assert snapshot(root) == before
    assert hashlib.sha256(meta.read_bytes()).hexdigest() == meta_sha  # no MLflow table was written into it
    assert not (base / "nowhere").exists() and not (base / "nowhere.db").exists() and not (base / "target2.db").exists()


def test_import_veml_does_not_import_mlflow():
    code = ("import sys, veml, veml.cli.main; veml.cli.main.build_parser(); "
            "assert 'mlflow' not in sys.modules, 'mlflow imported at import veml'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_help_ends_with_an_example():
    for args in (("import", "mlflow", "--help"), ("export", "mlflow", "--help")):
        res = run_cli(*args)
        assert res.code == 0 and ("example:\n  veml " in res.out or "examples:\n  veml " in res.out) and res.out.rstrip().splitlines()[-1].strip().startswith("veml")
