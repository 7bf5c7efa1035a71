"""Team defaults for ``veml init`` ($VEML_METADATA_URL & co. with a ``{repo}`` placeholder) and
many repositories in one PostgreSQL database, one schema each (``?schema=NAME``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import assert_failed_cleanly, ok, run_cli, write_table


@pytest.fixture(scope="module")
def pg():
    from pg_cluster import PostgresUnavailable, pg_cluster

    try:
        with pg_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}", pytrace=False)


def _config(root: Path) -> dict:
    return tomllib.loads((root / ".veml" / "config.toml").read_text())


def test_env_defaults_put_each_repository_in_its_own_schema(pg, tmp_path: Path, monkeypatch):
    url = pg.create_database("team")
    monkeypatch.setenv("VEML_METADATA_URL", url + "?schema={repo}")
    for var in ("VEML_STORAGE_URL", "VEML_ARTIFACTS_URL", "VEML_EMBEDDINGS_URL"):  # set by VEML_TEST_STORES=postgres+s3
        monkeypatch.delenv(var, raising=False)
    a, b = tmp_path / "Project A", tmp_path / "project-b"
    ok("init", a)
    ok("init", b)
    ca, cb = _config(a), _config(b)
    assert ca["metadata_url"].startswith(url + "?schema=project_a_") and cb["metadata_url"].startswith(url + "?schema=project_b_")
    assert ca["storage_url"] == "data"  # only what the environment names moves to the server

    table = write_table(tmp_path / "t.csv", rows=30)
    ok("--repo", a, "data", "import", "table", table, "--name", "shared-name")
    ok("--repo", b, "data", "import", "table", table, "--name", "shared-name")  # no clash across repositories
    ok("--repo", a, "data", "filter", "shared-name", "--where", "a > 0", "--name", "only-in-a")
    assert [v["name"] for v in ok("--repo", b, "data", "list")] == ["shared-name"]
    assert {v["name"] for v in ok("--repo", a, "data", "list")} == {"shared-name", "only-in-a"}

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        schemas = {r[0] for r in conn.exec_driver_sql("SELECT schema_name FROM information_schema.schemata")}
        public_tables = conn.exec_driver_sql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").scalar_one()
    engine.dispose()
    assert {ca["metadata_url"].split("=")[-1], cb["metadata_url"].split("=")[-1]} <= schemas
    assert public_tables == 0
    assert ok("--repo", a, "verify")["ok"] and ok("--repo", b, "verify")["ok"]


def test_explicit_flag_beats_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VEML_METADATA_URL", "postgresql://127.0.0.1:1/never?schema={repo}")
    ok("init", tmp_path / "r", "--metadata-url", "sqlite:///meta.db")
    assert _config(tmp_path / "r")["metadata_url"] == "sqlite:///meta.db"


def test_bad_schema_name_is_refused_and_nothing_is_left(pg, tmp_path: Path):
    url = pg.create_database()
    res = run_cli("init", tmp_path / "r", "--metadata-url", url + "?schema=Bad-Name", "--json")
    assert_failed_cleanly(res, "schema=")
    assert not (tmp_path / "r" / ".veml").exists()


def test_unreachable_server_fails_cleanly_and_leaves_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VEML_METADATA_URL", "postgresql://veml@127.0.0.1:1/none?schema={repo}")
    assert_failed_cleanly(run_cli("init", tmp_path / "r", "--json"), "cannot open metadata database")
    assert not (tmp_path / "r" / ".veml").exists()
