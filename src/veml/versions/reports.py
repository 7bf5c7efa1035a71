"""Report versions: what a lifecycle check found (a drift check, a similarity ranking), recorded in the lineage graph.

A report is a version like any other: named, with its findings as properties and an edge to each version it looked
at, so ``veml lineage`` shows which checks a data version or deployment went through."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from veml.entities import Node
from veml.versions.context import Stores


class Reports:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    def record(self, kind: str, name: str, props: Mapping[str, Any],
               parents: Sequence[tuple[int, str, Mapping[str, Any]]]) -> Node:
        """A new report of ``kind`` named ``name``, linked to each parent version by its edge label and properties."""
        return self._s.graph.record(kind, name, dict(props), parents=list(parents))
