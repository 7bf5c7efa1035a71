"""Lineage queries and exports (JSON, Graphviz DOT, Cypher for Neo4j).

The walk itself is in the graph store (a recursive CTE, or an in-memory walk when the answer is
large); this module resolves references, pages large answers and renders results for other tools.
:meth:`LineageAPI.query` materialises a whole answer; the faces use :meth:`LineageAPI.page` and
:meth:`LineageAPI.ids`, which stay fast when a node has hundreds of thousands of ancestors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from veml.entities import SHORT_KIND, Lineage, LineageIds, LineagePage
from veml.errors import InvalidInput

if TYPE_CHECKING:  # the faces import this module for its limits and renderers: keep it light (no numpy)
    from veml.versions.context import Stores

_COLOURS = {
    "DataVersion": "#4e79a7", "ModelVersion": "#f28e2b", "TrainingVersion": "#e15759", "InferenceVersion": "#76b7b2",
    "PredictionVersion": "#59a14f", "CoreSet": "#edc948", "DriftReport": "#b07aa1", "SimilarityReport": "#ff9da7",
}


#: nodes per page of :meth:`LineageAPI.page` unless told, and the most one page may hold
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000


class LineageAPI:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    def query(self, ref: str | int, direction: str = "up", hops: int | None = None) -> Lineage:
        """The whole answer, every node and edge materialised: for small lineages (see :meth:`page`)."""
        node = self._s.graph.resolve(ref)
        return self._s.graph.lineage(node.id, direction, hops)

    def ids(self, ref: str | int, direction: str = "up", hops: int | None = None) -> LineageIds:
        """Every node of the walk as ids, ascending, the root included; fast at any size."""
        node = self._s.graph.resolve(ref)
        return LineageIds(node.id, direction, tuple(self._s.graph.lineage_ids(node.id, direction, hops).tolist()))

    def page(self, ref: str | int, direction: str = "up", hops: int | None = None, limit: int = DEFAULT_PAGE,
             cursor: str | None = None) -> LineagePage:
        """Up to ``limit`` nodes of the walk with ids above ``cursor`` (the previous page's
        ``next_cursor``; None for the first page), their edges, and the next cursor (None after
        the last page).  Ids order the pages, so a cursor stays valid while the graph grows."""
        import numpy as np

        check_limit(limit)
        after = parse_cursor(cursor)
        node = self._s.graph.resolve(ref)
        found = self._s.graph.lineage_ids(node.id, direction, hops)
        start = 0 if after is None else int(np.searchsorted(found, after, side="right"))
        chunk = found[start:start + limit].tolist()
        here = set(chunk)
        into = self._s.graph.edges_into(chunk)
        srcs = np.array([e.src for e in into], np.int64)
        in_answer = found[np.searchsorted(found, srcs).clip(max=len(found) - 1)] == srcs  # found holds the root at least
        edges = tuple(e for e in into if e.src in here)
        boundary = tuple(e for e, known in zip(into, in_answer.tolist()) if known and e.src not in here)
        more = start + limit < len(found)
        return LineagePage(node.id, direction, tuple(self._s.graph.nodes_of(chunk)), edges, boundary,
                           len(found), limit, str(chunk[-1]) if more else None)


def check_limit(limit: int) -> int:
    """A page size: a whole number from 1 to :data:`MAX_PAGE` (:class:`~veml.errors.InvalidInput` otherwise)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"page size must be a whole number from 1 to {MAX_PAGE:,}, not {limit!r}")
    return limit


def parse_cursor(cursor: str | None) -> int | None:
    """The id a page starts after; :class:`~veml.errors.InvalidInput` for anything but a ``next_cursor``."""
    if cursor is None:
        return None
    text = str(cursor)
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
        raise InvalidInput(f"bad lineage cursor {cursor!r}: pass the next_cursor of the previous page as it is")
    return int(text)


def _boundary(lineage: Lineage) -> tuple:
    """A page's edges that start on another page of the answer (none for a whole lineage)."""
    return lineage.boundary_edges if isinstance(lineage, LineagePage) else ()


def to_dot(lineage: Lineage) -> str:
    """Graphviz. A page's boundary edges are dashed, from a dashed stub of their version on another page."""
    lines = ["digraph veml {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontcolor=white];']
    for n in lineage.nodes:
        label = f"{SHORT_KIND.get(n.kind, n.kind)} {n.id}\\n{_escape(n.name)}"
        extra = ", penwidth=3" if n.id == lineage.root else ""
        lines.append(f'  n{n.id} [label="{label}", fillcolor="{_COLOURS.get(n.kind, "#79706e")}"{extra}];')
    for e in lineage.edges:
        lines.append(f'  n{e.src} -> n{e.dst} [label="{e.kind}"];')
    boundary = _boundary(lineage)
    for src in sorted({e.src for e in boundary}):
        lines.append(f'  n{src} [label="version {src}\\n(another page)", style="rounded,dashed", fontcolor="#495057"];')
    for e in boundary:
        lines.append(f'  n{e.src} -> n{e.dst} [label="{e.kind}", style=dashed];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _cypher_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if v is None:
        return "null"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return _cypher_value(json.dumps(v, sort_keys=True))  # nested values as JSON strings (Neo4j has no maps as properties)


def _cypher_props(props: dict[str, Any]) -> str:
    return "{" + ", ".join(f"`{k}`: {_cypher_value(v)}" for k, v in props.items()) + "}"


#: the label every exported version carries beside its kind, so that pages load in any order onto one node each
CYPHER_LABEL = "VemlVersion"


def to_cypher(lineage: Lineage) -> str:
    """``MERGE`` statements (idempotent on re-load) a Neo4j user can paste into cypher-shell.

    Every version is merged on ``(:VemlVersion {veml_id})`` and given its kind as a second label, and an edge
    merges both of its ends first. A page's boundary edges therefore leave a bare ``VemlVersion`` node for a
    version on another page, and that page, loaded before or after, fills it in: every page of an answer, in
    any order, builds the whole graph once. (An index on ``:VemlVersion(veml_id)`` keeps large loads fast.)"""
    out = []
    for n in lineage.nodes:
        props = {"veml_id": n.id, "name": n.name, "created_at": n.created_at, **{k: v for k, v in n.props.items()}}
        out.append(f"MERGE (n:{CYPHER_LABEL} {{veml_id: {n.id}}}) SET n:{n.kind}, n += {_cypher_props(props)};")
    for e in (*lineage.edges, *_boundary(lineage)):
        out.append(f"MERGE (a:{CYPHER_LABEL} {{veml_id: {e.src}}}) MERGE (b:{CYPHER_LABEL} {{veml_id: {e.dst}}}) "
                   f"MERGE (a)-[r:{e.kind}]->(b) SET r += {_cypher_props(dict(e.props))};")
    return "\n".join(out) + "\n"
