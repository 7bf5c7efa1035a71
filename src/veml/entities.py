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
class LineagePage(Lineage):
    """One page of a lineage walk, nodes in id order (``repo.lineage.page``).

    ``edges`` join two nodes of this page (so the page renders on its own, as a :class:`Lineage`);
    ``boundary_edges`` end on this page and start on another page of the same answer.  Over all
    pages, every node of the answer comes once, and every edge of it once in one of the two."""

    boundary_edges: tuple[Edge, ...]
    total: int
    limit: int
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "boundary_edges": [e.to_json() for e in self.boundary_edges],
                "total": self.total, "limit": self.limit, "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class LineageIds:
    """Every node of a lineage walk as ids, ascending, the root included (``repo.lineage.ids``)."""

    root: int
    direction: str
    ids: tuple[int, ...]

    @property
    def total(self) -> int:
        return len(self.ids)

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "direction": self.direction, "total": self.total, "ids": list(self.ids)}


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


# --- typed views of versions, and runs logged from outside VeML (the Python SDK, veml.versions.runs) ------------
def frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of a mapping (an entity's user-keyed fields: parameters, metrics, tags)."""
    from types import MappingProxyType

    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class DataVersion:
    """A data version: ``modality`` image/table/series, ``role`` train/test/unlabeled, ``classes`` its category
    names in id order, ``annotation_tables`` (labels, boxes, …) and ``columns`` (name -> type) of a table."""

    id: int
    name: str
    created_at: float
    parents: tuple[int, ...]
    tags: tuple[str, ...]
    modality: str
    role: str
    classes: tuple[str, ...]
    annotation_tables: tuple[str, ...]
    columns: Mapping[str, str]

    @classmethod
    def from_node(cls, n: Node) -> "DataVersion":
        cats = n.props.get("category_ids") or {}
        return cls(n.id, n.name, n.created_at, n.parents, n.tags, n.props.get("modality", ""), n.props.get("role", ""),
                   tuple(k for k, _ in sorted(cats.items(), key=lambda kv: (kv[1], kv[0]))),
                   tuple(n.props.get("annotation_tables") or ()), frozen_map(n.props.get("columns")))


@dataclass(frozen=True)
class ModelVersion:
    """A model version: what is trained (``adapter`` torch/sklearn/graph, ``task``, ``architecture`` and its parts)."""

    id: int
    name: str
    created_at: float
    parents: tuple[int, ...]
    tags: tuple[str, ...]
    adapter: str
    task: str
    architecture: str
    backbone: str | None
    neck: str | None
    head: str | None
    parameters: Mapping[str, Any]
    description: str

    @classmethod
    def from_node(cls, n: Node) -> "ModelVersion":
        p = n.props
        return cls(n.id, n.name, n.created_at, n.parents, n.tags, p["adapter"], p["task"], p["architecture"],
                   p.get("backbone"), p.get("neck"), p.get("head"), frozen_map(p.get("parameters")), p.get("description", ""))


@dataclass(frozen=True)
class TrainingVersion:
    """A training version: a run (``veml train``, or one logged with the SDK: ``logged`` True) or a registered
    model file (``registered`` True).  ``status`` is running, finished, failed (``error`` says why) or unknown;
    ``data``/``model`` are version ids (None when the run named none); ``checkpoint`` is the sha256 of the
    weights VeML can deploy (None until a runnable model is recorded)."""

    id: int
    name: str
    created_at: float
    parents: tuple[int, ...]
    tags: tuple[str, ...]
    status: str
    data: int | None
    model: int | None
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    checkpoint: str | None
    error: str | None
    registered: bool
    logged: bool

    @classmethod
    def from_description(cls, d: Mapping[str, Any]) -> "TrainingVersion":
        """From the version object :meth:`veml.versions.training.TrainingVersions.describe` returns."""
        return cls(d["id"], d["name"], parse_iso(d["created_at"]), tuple(d.get("parents", ())), tuple(d.get("tags", ())),
                   d.get("status") or "unknown", d.get("data"), d.get("model"), frozen_map(d.get("params")),
                   frozen_map(d.get("metrics")), d.get("checkpoint"), d.get("error"), isinstance(d.get("registered"), dict),
                   isinstance(d.get("run"), dict))


@dataclass(frozen=True)
class InferenceVersion:
    """A deployment of a training version: ``format`` onnx/torchscript/skops/pickle, ``quantize`` none/fp16/int8,
    ``artifact`` the sha256 of the deployed file, its size, its measured latency and its largest difference from
    the trained model's outputs."""

    id: int
    name: str
    created_at: float
    parents: tuple[int, ...]
    tags: tuple[str, ...]
    training: int
    task: str
    format: str
    quantize: str
    device: str
    artifact: str
    size_bytes: int
    latency_ms: float
    max_abs_diff: float | None
    class_names: tuple[str, ...]

    @classmethod
    def from_node(cls, n: Node) -> "InferenceVersion":
        p = n.props
        return cls(n.id, n.name, n.created_at, n.parents, n.tags, p["training"], p.get("task", ""), p.get("format", ""),
                   p.get("quantize", "none"), p.get("device", "cpu"), p.get("artifact", ""), int(p.get("size_bytes", 0)),
                   float(p.get("latency_ms", 0.0)), p.get("max_abs_diff"), tuple(p.get("class_names") or ()))


def parse_iso(text: str) -> float:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class GitState:
    """The source tree a run was started from: ``commit`` (HEAD), ``dirty`` (uncommitted changes, untracked
    files included) and ``diff_sha256`` (sha256 of ``git diff HEAD``; None when the tree is clean)."""

    root: str
    commit: str
    branch: str | None
    dirty: bool
    diff_sha256: str | None


@dataclass(frozen=True)
class Artifact:
    """A file logged with a run (``log_artifact``): the name it was logged as, the sha256 of its bytes (the key
    of the repository's artifact store) and its size."""

    name: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class LoggedModel:
    """The model logged with a run (``log_model``).  ``runnable``: VeML read it as one of its models
    (``framework`` torch/torchscript/sklearn/onnx, model version ``model``) and holds it as the run's checkpoint,
    so ``deploy``/``predict``/``--init-from`` take the run; otherwise it is kept as a file and ``reason`` says why
    VeML cannot run it.  ``sha256``/``size_bytes`` are those of the file as logged."""

    name: str
    framework: str | None
    sha256: str
    size_bytes: int
    runnable: bool
    model: int | None
    reason: str | None


@dataclass(frozen=True)
class Run:
    """A training run logged from outside VeML with the SDK (``repo.start_run``): the training version ``id``
    /``name``, its ``status`` (running, finished, failed), the data and model versions it is linked to (ids or
    None), its parameters, tags and the last value of each metric (recorded when the run ends; ``ActiveRun.info``
    has them while it runs), the files and model it logged, and what was recorded about where it ran (``git``,
    ``python``, ``packages``, ``host``, ``pid``, ``argv``); ``started_at``/``ended_at`` are epoch seconds and
    ``error`` says why a failed run failed."""

    id: int
    name: str
    status: str
    data: int | None
    model: int | None
    params: Mapping[str, Any]
    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    artifacts: tuple[Artifact, ...]
    logged_model: LoggedModel | None
    git: GitState | None
    python: str
    packages: Mapping[str, str]
    host: str
    pid: int
    argv: tuple[str, ...]
    started_at: float
    ended_at: float | None
    error: str | None
