"""Model and training versions side by side: what the web UI's models view shows (like MLflow's
"compare runs").

Each compared version is a column; each row is one setting or result, in three sections:

* ``model``: the model's spec (adapter, task, architecture, backbone, neck, head and each
  ``parameters.*`` entry), for a training version the spec of its model version (none for a run
  logged with the SDK that names no model version);
* ``training``: what a training version recorded (its data, test data, model and initial weights
  as version ids, its status, and each ``params.*`` hyper-parameter); empty for a model version;
* ``metrics``: a training version's final scalar metrics; empty for a model version.

A row ``differs`` when its values are not all equal among the versions that have its section (a
missing key counts as a null value; a model version's null in the training and metrics sections
does not count: comparing a model with its training runs highlights only what the runs disagree on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from veml.errors import InvalidInput
from veml.versions.model import flatten

MAX_COMPARED = 20
SECTIONS = ("model", "training", "metrics")
_TRAINING_KEYS = ("data", "test", "model", "init_from", "status")


@dataclass(frozen=True)
class Column:
    """One compared version: its identity and its flattened values per section."""

    id: int
    name: str
    kind: str  # "model" or "training"
    model: int | None  # the model version (itself for a model version; None: a logged run that names none)
    values: Mapping[str, Mapping[str, Any]]  # section -> key -> value


@dataclass(frozen=True)
class CompareRow:
    section: str
    key: str
    values: tuple[Any, ...]  # one per compared version, None where it has no such key
    differs: bool


@dataclass(frozen=True)
class Comparison:
    columns: tuple[Column, ...]
    rows: tuple[CompareRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": [{"id": c.id, "name": c.name, "kind": c.kind, "model": c.model} for c in self.columns],
            "rows": [{"section": r.section, "key": r.key, "values": list(r.values), "differs": r.differs} for r in self.rows],
            "differing": sum(r.differs for r in self.rows),
        }


def training_values(described: Mapping[str, Any]) -> dict[str, Any]:
    """The ``training`` section of a training version from its description (``repo.training.describe``)."""
    out = {k: described.get(k) for k in _TRAINING_KEYS}
    out.update(flatten(described.get("params") or {}, "params."))
    return out


def metric_values(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scalar final metrics (a confusion matrix or per-class table is not one row)."""
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_refs(refs: Sequence[str | int]) -> None:
    if not refs:
        raise InvalidInput("name at least one model or training version to compare")
    if len(refs) > MAX_COMPARED:
        raise InvalidInput(f"compare at most {MAX_COMPARED} versions at once, not {len(refs)}")


def side_by_side(columns: Sequence[Column]) -> Comparison:
    """The rows of every section, keys sorted within a section; a version named twice is refused."""
    seen: set[int] = set()
    for c in columns:
        if c.id in seen:
            raise InvalidInput(f"version {c.name!r} is named twice")
        seen.add(c.id)
    rows = []
    for section in SECTIONS:
        keys = sorted({k for c in columns for k in c.values.get(section, {})})
        for key in keys:
            values = tuple(c.values.get(section, {}).get(key) for c in columns)
            held = [v for c, v in zip(columns, values) if section in c.values]  # a model version has no training section
            rows.append(CompareRow(section, key, values, len({json.dumps(v, sort_keys=True, default=str) for v in held}) > 1))
    return Comparison(tuple(columns), tuple(rows))
