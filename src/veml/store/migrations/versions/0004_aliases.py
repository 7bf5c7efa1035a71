"""Aliases: movable names for versions (``veml alias set champion T``), resolved wherever a version is.

``aliases`` holds where each alias points now; ``alias_history`` is insert-only and keeps every move
and deletion (a NULL ``node_id`` is a deletion), so ``veml alias history`` can say which version was
the champion on any day.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Alias = sa.String(255).with_variant(sa.Text(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "aliases",
        sa.Column("alias", _Alias, primary_key=True),
        sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("set_at", sa.Float, nullable=False),
    )
    op.create_index("ix_aliases_node", "aliases", ["node_id"])
    op.create_table(
        "alias_history",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("alias", _Alias, nullable=False),
        sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=True),
        sa.Column("set_at", sa.Float, nullable=False),
    )
    op.create_index("ix_alias_history_alias", "alias_history", ["alias", "id"])
    meta = sa.table("veml_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="4"))
