"""Lineage queries and exports (JSON, Graphviz DOT, Cypher for Neo4j).

The walk itself is a recursive CTE in the graph store; this module resolves references and
renders the result for other tools.
"""

from __future__ import annotations

import json
from typing import Any

from veml.entities import SHORT_KIND, Lineage
from veml.versions.context import Stores

_COLOURS = {
    "DataVersion": "#4e79a7", "ModelVersion": "#f28e2b", "TrainingVersion": "#e15759", "InferenceVersion": "#76b7b2",
    "PredictionVersion": "#59a14f", "CoreSet": "#edc948", "DriftReport": "#b07aa1", "SimilarityReport": "#ff9da7",
}


class LineageAPI:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    def query(self, ref: str | int, direction: str = "up", hops: int | None = None) -> Lineage:
        node = self._s.graph.resolve(ref)
        return self._s.graph.lineage(node.id, direction, hops)


def to_dot(lineage: Lineage) -> str:
    lines = ["digraph veml {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontcolor=white];']
    for n in lineage.nodes:
        label = f"{SHORT_KIND.get(n.kind, n.kind)} {n.id}\\n{_escape(n.name)}"
        extra = ", penwidth=3" if n.id == lineage.root else ""
        lines.append(f'  n{n.id} [label="{label}", fillcolor="{_COLOURS.get(n.kind, "#79706e")}"{extra}];')
    for e in lineage.edges:
        lines.append(f'  n{e.src} -> n{e.dst} [label="{e.kind}"];')
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


def to_cypher(lineage: Lineage) -> str:
    """``MERGE`` statements (idempotent on re-load) a Neo4j user can paste into cypher-shell."""
    out = []
    for n in lineage.nodes:
        props = {"veml_id": n.id, "name": n.name, "created_at": n.created_at, **{k: v for k, v in n.props.items()}}
        out.append(f"MERGE (n:{n.kind} {{veml_id: {n.id}}}) SET n += {_cypher_props(props)};")
    for e in lineage.edges:
        out.append(
            f"MATCH (a {{veml_id: {e.src}}}), (b {{veml_id: {e.dst}}}) MERGE (a)-[r:{e.kind}]->(b) SET r += {_cypher_props(dict(e.props))};"
        )
    return "\n".join(out) + "\n"
