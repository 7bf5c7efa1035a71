"""Schema migrations of the metadata database (Alembic), run by ``veml upgrade``.

Why explicit and not on open: a team's PostgreSQL is shared by many clients of different VeML
releases.  Upgrading silently on open would lock out every older client the moment one newer
client touched the database; like ``mlflow db upgrade``, an out-of-date schema is refused with a
message naming the command, and one person upgrades (after a backup) when the team is ready.

Revisions are frozen copies of the schema at each release (never imports of the live table
definitions in :mod:`veml.store.sql_graph`), so a repository created by any release can be
brought to head; a test checks that head equals the live definitions on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
# Revision id -> the integer ``schema_version`` stored in ``veml_meta`` (what releases before
# Alembic check, so an old client refuses a database a newer release has upgraded).
SCHEMA_VERSIONS = {"0001": 1, "0002": 2, "0003": 3, "0004": 4}
HEAD = "0004"


def _config(conn: sa.Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    return cfg


def current_revision(conn: sa.Connection) -> str | None:
    """The Alembic revision of this database; ``"0001"`` for a database made before Alembic
    (it has ``nodes`` but no ``alembic_version``); ``None`` for an empty database."""
    from alembic.runtime.migration import MigrationContext

    rev = MigrationContext.configure(conn).get_current_revision()
    if rev is None and sa.inspect(conn).has_table("nodes"):
        return "0001"
    return rev


def upgrade(conn: sa.Connection, target: str = "head") -> None:
    """Bring the database on ``conn`` (inside the caller's transaction) to ``target``."""
    from alembic import command

    cfg = _config(conn)
    if current_revision(conn) == "0001" and not sa.inspect(conn).has_table("alembic_version"):
        command.stamp(cfg, "0001")  # created by VeML 0.1, before Alembic: its schema is revision 0001
    command.upgrade(cfg, target)
