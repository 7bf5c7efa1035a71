"""Allocations carry a lease (``lease_until``, epoch seconds by the database's clock) that a running
writer keeps pushing forward, so ``veml gc`` on another host never reclaims the rows of an import
still at work, whatever ``--grace``, and reclaims a dead writer's once its lease ran out.  Rows
written before keep a NULL lease and fall back to their owner check and the grace period.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite the table is also rebuilt with AUTOINCREMENT: a plain INTEGER key hands a deleted
    # row's id out again, and a writer whose dropped reservation's id went to another writer would
    # claim that one at its commit (PostgreSQL's sequence never reuses an id).
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("allocations", recreate="always" if sqlite else "auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("lease_until", sa.Float, nullable=True))
    meta = sa.table("veml_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))
