"""Frozen entities of the version graph.

Nodes are insert-only, so they are immutable values here too: a change is a new node with an edge
to its parent.  ``props`` holds the kind-specific fields as plain JSON-able data, which is how the
graph store persists them; typed accessors live on the subclasses that need them.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Mapping

NODE_KINDS = (
    "Project",
    "DataVersion",
    "ModelVersion",
    "TrainingVersion",
    "InferenceVersion",
    "PredictionVersion",
    "CoreSet",
    "DriftReport",
    "SimilarityReport",
    "Architecture",
    "Backbone",
    "Neck",
    "Head",
)

EDGE_KINDS = (
    "ADD_DATA",
    "FILTER_DATA",
    "MERGE_DATA",
    "UPDATE_ANNOTATION",
    "PREPARE_DATA",
    "DATA_TRAINING",
    "MODEL_TRAINING",
    "FINETUNE_FROM",
    "TRANSFER_FROM",
    "DEPLOY",
    "PREDICT_ON",
    "CORESET_OF",
    "DRIFT_CHECK",
    "SIMILARITY_CHECK",
    "REBUILD",
    "USES",
)

#: The short kind names used in version objects (``"kind": "data"``) and on the command line.
SHORT_KIND = {
    "DataVersion": "data",
    "ModelVersion": "model",
    "TrainingVersion": "training",
    "InferenceVersion": "inference",
    "PredictionVersion": "prediction",
    "CoreSet": "coreset",
    "DriftReport": "drift",
    "SimilarityReport": "similarity",
    "Project": "project",
    "Architecture": "architecture",
    "Backbone": "backbone",
    "Neck": "neck",
    "Head": "head",
}

#: Nodes shared by many model versions (their names are ``part:value``, e.g. ``architecture:resnet18``).
#: The prefixes are reserved: no version name or tag may start with one, so none can block a model.
SHARED_KINDS = {"Architecture": "architecture", "Backbone": "backbone", "Neck": "neck", "Head": "head"}
RESERVED_PREFIXES = tuple(f"{part}:" for part in SHARED_KINDS.values())


def name_key(name: str) -> str:
    """What two names must not share: names that differ only by case or by runs of spaces clash
    (``day``, ``Day`` and ``DAY``; ``my day`` and ``my  day``)."""
    return " ".join(name.split()).casefold()


ROLES = ("train", "test", "unlabeled")
MODALITIES = ("image", "table", "series")


def iso(ts: float) -> str:
    """UTC ISO-8601 with a Z, the one timestamp format every face prints."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Node:
    id: int
    kind: str
    name: str
    created_at: float
    props: Mapping[str, Any] = field(default_factory=dict)
    parents: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The version object of DESIGN.md section 8: common keys first, then the kind's fields."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": SHORT_KIND.get(self.kind, self.kind.lower()),
            "name": self.name,
            "parents": list(self.parents),
            "created_at": iso(self.created_at),
            "tags": list(self.tags),
        }
        for key, value in self.props.items():
            out.setdefault(key, value)
        return out


@dataclass(frozen=True)
class Edge:
    src: int
    dst: int
    kind: str
    props: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "kind": self.kind, "props": dict(self.props)}


@dataclass(frozen=True)
class Lineage:
    """A connected piece of the graph returned by a lineage query."""

    root: int
    direction: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "direction": self.direction,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }


@dataclass(frozen=True)
class IdSetRef:
    """A stored id set (roaring bitmap) with the count and digest ``verify`` checks it against."""

    count: int
    digest: str


@dataclass(frozen=True)
class Alias:
    """A movable name for a version (``champion``), or one entry of an alias's history.

    In a history a deletion is an entry with no version (``version_id`` None) at the time it was deleted."""

    alias: str
    version_id: int | None
    version: str | None
    kind: str | None
    set_at: float

    def to_json(self) -> dict[str, Any]:
        return {"alias": self.alias, "version": self.version, "version_id": self.version_id,
                "kind": SHORT_KIND.get(self.kind, self.kind.lower()) if self.kind else None, "set_at": iso(self.set_at)}


@dataclass(frozen=True)
class ExportedModel:
    """A training version's model written out as a plain file (``veml export onnx``), checked against the
    trained model on real samples before it was written."""

    path: str
    training: int
    format: str
    sha256: str
    size_bytes: int
    max_abs_diff: float
    agreement: float
    check_samples: int
    input_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    output_names: tuple[str, ...]
    class_names: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "training": self.training, "format": self.format, "sha256": self.sha256,
                "size_bytes": self.size_bytes, "max_abs_diff": self.max_abs_diff, "agreement": self.agreement,
                "check_samples": self.check_samples, "input_names": list(self.input_names),
                "input_shape": list(self.input_shape), "output_names": list(self.output_names),
                "class_names": list(self.class_names)}
