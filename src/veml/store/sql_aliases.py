"""Aliases in the SQL graph store: movable names for versions, with an insert-only history.

``aliases`` says where each alias points now (one row per alias, moved in place); ``alias_history``
is insert-only and keeps every set, move and deletion (a NULL ``node_id`` is a deletion).  This
module is the SQL only: :class:`~veml.store.sql_graph.SqlGraphStore` runs it inside its own write
transactions, under the same lock and name check as a new version or tag, because an alias shares
their namespace (one name answers to one version).
"""

from __future__ import annotations

import sqlalchemy as sa

from veml.entities import Alias


class AliasTables:
    """The two alias tables on ``metadata``, and the statements that read and write them."""

    def __init__(self, metadata: sa.MetaData, nodes: sa.Table, id_type: sa.types.TypeEngine,
                 name_type: sa.types.TypeEngine) -> None:
        self.nodes = nodes
        self.current = sa.Table(
            "aliases", metadata,
            sa.Column("alias", name_type, primary_key=True),
            sa.Column("node_id", id_type, sa.ForeignKey("nodes.id"), nullable=False),
            sa.Column("set_at", sa.Float, nullable=False),
            sa.Index("ix_aliases_node", "node_id"),
        )
        self.history = sa.Table(
            "alias_history", metadata,
            sa.Column("id", id_type, primary_key=True, autoincrement=True),
            sa.Column("alias", name_type, nullable=False),
            sa.Column("node_id", id_type, sa.ForeignKey("nodes.id"), nullable=True),
            sa.Column("set_at", sa.Float, nullable=False),
            sa.Index("ix_alias_history_alias", "alias", "id"),
        )

    def target_of(self, ref: str) -> sa.ScalarSelect:
        """The node id the alias ``ref`` points at, as a sub-query for :meth:`SqlGraphStore.resolve`."""
        return sa.select(self.current.c.node_id).where(self.current.c.alias == ref).scalar_subquery()

    def point(self, conn: sa.Connection, alias: str, node_id: int, now: float) -> bool:
        """Point ``alias`` at ``node_id`` (a new alias, or a move); False when it already points there."""
        c = self.current.c
        row = conn.execute(sa.select(c.node_id).where(c.alias == alias).with_for_update()).first()
        if row is not None and int(row[0]) == node_id:
            return False
        if row is None:
            conn.execute(self.current.insert().values(alias=alias, node_id=node_id, set_at=now))
        else:
            conn.execute(self.current.update().where(c.alias == alias).values(node_id=node_id, set_at=now))
        conn.execute(self.history.insert().values(alias=alias, node_id=node_id, set_at=now))
        return True

    def remove(self, conn: sa.Connection, alias: str, now: float) -> bool:
        """Delete ``alias`` (its history keeps it, ending in a deletion); False when there is no such alias."""
        if conn.execute(self.current.delete().where(self.current.c.alias == alias)).rowcount == 0:
            return False
        conn.execute(self.history.insert().values(alias=alias, node_id=None, set_at=now))
        return True

    def listed(self, conn: sa.Connection, alias: str | None = None) -> list[Alias]:
        """Every alias (by name), or the one named ``alias``, with the version it points at."""
        a, n = self.current.c, self.nodes.c
        q = sa.select(a.alias, a.node_id, n.name, n.kind, a.set_at).join(self.nodes, n.id == a.node_id).order_by(a.alias)
        if alias is not None:
            q = q.where(a.alias == alias)
        return [Alias(r[0], int(r[1]), r[2], r[3], float(r[4])) for r in conn.execute(q)]

    def moves(self, conn: sa.Connection, alias: str) -> list[Alias]:
        """The history of ``alias``, oldest first; a deletion has no version."""
        h, n = self.history.c, self.nodes.c
        q = (sa.select(h.alias, h.node_id, n.name, n.kind, h.set_at).select_from(self.history)
             .outerjoin(self.nodes, n.id == h.node_id).where(h.alias == alias).order_by(h.id))
        return [Alias(r[0], None if r[1] is None else int(r[1]), r[2], r[3], float(r[4])) for r in conn.execute(q)]

    def names(self) -> sa.Column:
        return self.current.c.alias
