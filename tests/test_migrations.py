"""Schema migrations: a repository written by VeML 0.1 (a fixture made by that release's own code,
tests/fixtures/make_repo_v1.sh) is refused until ``veml upgrade``, then reads back intact; the head
revision equals the live table definitions on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import veml
from veml.errors import SchemaOutdated
from veml.store import migrations
from veml.store.sql_graph import SCHEMA_VERSION, SqlGraphStore, metadata
from conftest import assert_failed_cleanly, ok, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "repo-v1.tar.gz"


@pytest.fixture
def old_repo(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


def _sqlite_schema(root: Path) -> str:
    con = sqlite3.connect(root / ".veml" / "meta.db")
    try:
        return "\n".join(r[0] for r in con.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"))
    finally:
        con.close()


def test_old_repository_is_refused_with_the_command_to_run_and_left_unchanged(old_repo: Path):
    before = _sqlite_schema(old_repo)
    res = run_cli("--repo", old_repo, "data", "list", "--json")
    assert_failed_cleanly(res, "schema version 1 is older", "veml upgrade")
    with pytest.raises(SchemaOutdated):
        veml.open(old_repo)
    assert _sqlite_schema(old_repo) == before  # refusing must not half-migrate


def test_upgrade_keeps_every_version_and_the_repository_works_afterwards(old_repo: Path):
    report = ok("--repo", old_repo, "upgrade")
    assert report == {"path": str(old_repo.resolve()), "from": 1, "to": SCHEMA_VERSION, "upgraded": True}
    assert ok("--repo", old_repo, "upgrade")["upgraded"] is False  # idempotent

    listed = {v["name"]: v for v in ok("--repo", old_repo, "data", "list")}
    assert {n: listed[n]["samples"] for n in ("day", "fog", "day-cars", "mixed")} == {"day": 6, "fog": 4, "day-cars": 5, "mixed": 9}
    assert ok("--repo", old_repo, "data", "show", "v1-release")["name"] == "mixed"  # tags survive
    lineage = ok("--repo", old_repo, "lineage", "mixed")
    assert {n["name"] for n in lineage["nodes"]} == {"mixed", "day-cars", "day", "fog"}
    assert ok("--repo", old_repo, "verify")["ok"] is True

    # new writes work, and the allocation left pending by 0.1 (owner unknown) is still reclaimable by age
    v = ok("--repo", old_repo, "data", "filter", "mixed", "--where", "category = 'car'", "--name", "mixed-cars")
    assert v["samples"] >= 1
    with veml.open(old_repo) as repo:
        pending = repo.stores.graph.pending_allocations()
        assert len(pending) == 1 and pending[0][3] == 3
    assert ok("--repo", old_repo, "gc", "--grace", "0")["allocations_released"] == 1
    assert ok("--repo", old_repo, "verify")["ok"] is True


def test_upgraded_sqlite_schema_equals_a_fresh_one(old_repo: Path, tmp_path: Path):
    ok("--repo", old_repo, "upgrade")
    fresh = tmp_path / "fresh"
    veml.init(fresh, metadata_url="sqlite:///meta.db").close()  # explicit: VEML_TEST_STORES may set another default
    with sa.create_engine(f"sqlite:///{old_repo / '.veml' / 'meta.db'}").connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert migrations.current_revision(conn) == migrations.HEAD
    with sa.create_engine(f"sqlite:///{fresh / '.veml' / 'meta.db'}").connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_newer_schema_is_refused(tmp_path: Path):
    repo = veml.init(tmp_path / "r", metadata_url="sqlite:///meta.db")
    repo.close()
    db = tmp_path / "r" / ".veml" / "meta.db"
    con = sqlite3.connect(db)
    con.execute("UPDATE veml_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    assert_failed_cleanly(run_cli("--repo", tmp_path / "r", "data", "list", "--json"), "newer than this VeML")
    assert_failed_cleanly(run_cli("--repo", tmp_path / "r", "upgrade", "--json"), "newer than this VeML")


def test_upgrade_on_a_missing_repository_fails_cleanly(tmp_path: Path):
    assert_failed_cleanly(run_cli("--repo", tmp_path / "nothing", "upgrade", "--json"), "no VeML repository")


def test_allocations_name_their_owner_and_gc_releases_a_dead_owners_range_at_once(tmp_path: Path):
    import os
    import socket
    import subprocess
    import sys

    with veml.init(tmp_path / "r", metadata_url="sqlite:///meta.db") as repo:
        repo.stores.graph.allocate("data", 5)
        assert repo.stores.graph.pending_allocations()[0][5].startswith(f"{socket.gethostname()}:{os.getpid()}:")
    # a writer that reserved ids and was killed (here: exited) before recording its version
    code = ("import veml, sys; r = veml.open(sys.argv[1]); r.stores.graph.allocate('data', 7)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], check=True)
    with veml.open(tmp_path / "r") as repo:
        assert sorted(a[3] for a in repo.stores.graph.pending_allocations()) == [5, 7]
    report = ok("--repo", tmp_path / "r", "gc")  # default grace: one hour
    assert report["allocations_released"] == 1  # the dead process's range, not this live one's
    with veml.open(tmp_path / "r") as repo:
        assert [a[3] for a in repo.stores.graph.pending_allocations()] == [5]


# --- PostgreSQL: the same revisions, from 0001 up, on a real server -----------------------------

@pytest.fixture(scope="module")
def pg():
    from pg_cluster import PostgresUnavailable, pg_cluster

    try:
        with pg_cluster() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}", pytrace=False)


def test_postgres_upgrade_from_the_baseline_revision(pg, tmp_path: Path):
    """A PostgreSQL database at revision 0001 (VeML 0.1's schema, with rows in it) upgrades in place."""
    url = pg.create_database().replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        migrations.upgrade(conn, "0001")
        conn.execute(sa.text("INSERT INTO nodes (kind, name, created_at, props) VALUES ('data', 'old', 1.0, '{}')"))
        conn.execute(sa.text("INSERT INTO allocations (space, start, count, created_at) VALUES ('data', 0, 4, 1.0)"))
    with pytest.raises(SchemaOutdated):
        SqlGraphStore(url)
    store = SqlGraphStore(url, check_schema=False)
    assert store.upgrade() == (1, SCHEMA_VERSION)
    assert store.upgrade() == (SCHEMA_VERSION, SCHEMA_VERSION)
    store.close()
    store = SqlGraphStore(url)
    assert store.resolve("old").kind == "data"
    assert [a[3] for a in store.pending_allocations()] == [4]
    store.close()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert migrations.current_revision(conn) == migrations.HEAD
    engine.dispose()


def test_postgres_fresh_database_is_created_at_head(pg):
    url = pg.create_database().replace("postgresql://", "postgresql+psycopg://", 1)
    SqlGraphStore(url).close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()
