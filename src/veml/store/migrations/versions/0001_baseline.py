"""Baseline: the schema of VeML 0.1 (issues 2-6), frozen.

Revision ID: 0001
Revises:
"""


import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _Str(n: int):
    return sa.String(n).with_variant(sa.Text(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kind", _Str(40), nullable=False),
        sa.Column("name", _Str(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("props", sa.Text, nullable=False),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    op.create_index("ix_nodes_kind", "nodes", ["kind", "id"])
    op.create_table(
        "edges",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("src", _Id, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("dst", _Id, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("kind", _Str(40), nullable=False),
        sa.Column("props", sa.Text, nullable=False),
    )
    op.create_index("ix_edges_dst", "edges", ["dst", "src"])
    op.create_index("ix_edges_src", "edges", ["src", "dst"])
    op.create_table(
        "idsets",
        sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), primary_key=True),
        sa.Column("name", _Str(40), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("digest", _Str(64), nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "tags",
        sa.Column("tag", _Str(255), primary_key=True),
        sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tags_node", "tags", ["node_id"])
    op.create_table(
        "counters",
        sa.Column("space", _Str(40), primary_key=True),
        sa.Column("next_id", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "allocations",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("space", _Str(40), nullable=False),
        sa.Column("start", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("node_id", _Id, nullable=True),
    )
    op.create_index("ix_allocations_node", "allocations", ["node_id"])
    op.create_table(
        "run_events",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("status", _Str(20), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_run_events_node", "run_events", ["node_id", "id"])
    op.create_table(
        "logs",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("step", _Id, nullable=False),
        sa.Column("epoch", _Id, nullable=False),
        sa.Column("key", _Str(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_logs_node", "logs", ["node_id", "id"])
    meta = op.create_table(
        "veml_meta",
        sa.Column("key", _Str(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])
