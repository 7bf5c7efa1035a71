"""Allocations record their owner (``host:pid``), so ``veml gc`` can release the id range of a
writer that died (kill -9, power loss) at once instead of waiting out the grace period, and
``veml verify`` can say which process left a range behind.  Rows from 0.1 keep a NULL owner and
fall back to the grace period.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("allocations") as batch:
        batch.add_column(sa.Column("owner", sa.String(255).with_variant(sa.Text(), "postgresql"), nullable=True))
    meta = sa.table("veml_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))
