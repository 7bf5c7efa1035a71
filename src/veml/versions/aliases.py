"""Aliases: movable names for versions (``champion``, ``champion-int8``), MLflow's model aliases for
every kind of version.

An alias is accepted wherever a version is, because the graph store's ``resolve`` (the one place
a reference becomes a version) looks aliases up beside ids, names and tags.  Unlike a tag, an alias
moves: ``set`` on an existing alias points it at another version, and every set, move and deletion
is kept in its history.  An alias shares the namespace of version names and tags, so a name means
one version, whichever of the three it is.
"""

from __future__ import annotations

from veml.entities import SHARED_KINDS, Alias
from veml.errors import InvalidInput, NotFound
from veml.versions.context import Stores


class Aliases:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    def set(self, alias: str, version: str | int) -> Alias:
        """Point ``alias`` at ``version`` (an id, name, tag, or another alias: its version now)."""
        return self.point(alias, version)[0]

    def point(self, alias: str, version: str | int) -> tuple[Alias, bool]:
        """As :meth:`set`, and whether anything changed (False: it pointed there already)."""
        node = self._s.graph.resolve(version)
        if node.kind in SHARED_KINDS:
            raise InvalidInput(f"{node.name!r} is a shared model part, not a version: an alias names a version")
        return self._s.graph.set_alias(alias, node.id)

    def delete(self, alias: str) -> Alias:
        """Remove ``alias``; returns where it pointed.  Its history keeps it."""
        return self._s.graph.delete_alias(alias)

    def list(self) -> list[Alias]:
        return self._s.graph.aliases()

    def history(self, alias: str) -> list[Alias]:
        """Every set, move and deletion of ``alias``, oldest first."""
        found = self._s.graph.alias_history(alias)
        if not found:
            raise NotFound(f"unknown alias {alias!r}")
        return found
