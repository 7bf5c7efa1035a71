"""What every parser returns: rows to append, described well enough to become a version."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pyarrow as pa

from veml.errors import InvalidInput

from veml.schemas import SCHEMAS

SAMPLE_FIELDS = [f for f in SCHEMAS["samples"] if f.name != "data_id"]
SAMPLE_SCHEMA = pa.schema(SAMPLE_FIELDS)


def annotation_schema(table: str) -> pa.Schema:
    """Annotation rows before ids exist: ``sample_index`` points at a row of the batch's samples."""
    fields = [f for f in SCHEMAS[table] if f.name not in ("ann_id", "data_id")]
    return pa.schema([pa.field("sample_index", pa.int64(), nullable=False), *fields])


@dataclass(frozen=True)
class ImportBatch:
    modality: str
    samples: pa.Table
    annotations: Mapping[str, pa.Table] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)  # meta column -> SQL type
    category_ids: Mapping[str, int] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, bytes] = field(default_factory=dict)  # prop name -> bytes to store by digest
    extra_props: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_annotations(self) -> int:
        return sum(t.num_rows for t in self.annotations.values())


# Names no sample column may take: the sample id and the names filters add.
RESERVED_COLUMNS = frozenset({"data_id", "ann_id", "ann_kind"})
# ... nor an extra key of a COCO image, whose built-in fields (width, format, ...) hold real values a
# same-named key would shadow.  A table's built-in fields are empty, so its ``width`` column is its own.
BUILTIN_COLUMNS = RESERVED_COLUMNS | {f.name for f in SAMPLE_FIELDS}


def check_column_names(names: Iterable[str], where: str, reserved: frozenset[str] = BUILTIN_COLUMNS) -> None:
    """Refuse column names a filter, ``show`` or export could not address unambiguously.

    Spaces, punctuation and unicode are fine (filters quote them: ``"speed km/h" > 3``).  Refused:
    empty names, names only whitespace, duplicates (compared case-insensitively, as SQL identifiers
    are), double quotes and control characters (not expressible in a JSON path), and ``reserved``
    names (by default the built-in sample columns, which a same-named column would silently shadow).
    """
    seen: dict[str, str] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(f"{where}: column {i + 1} has an empty name")
        if '"' in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise InvalidInput(f"{where}: column name {name!r} contains a double quote or a control character: rename it")
        key = name.casefold()
        if key in seen:
            same = "" if seen[key] == name else f" (same as {seen[key]!r} ignoring case)"
            raise InvalidInput(f"{where}: duplicate column name {name!r}{same}")
        if key in reserved:
            raise InvalidInput(f"{where}: column name {name!r} is reserved (a built-in sample column): rename it")
        seen[key] = name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sql_type(values: Iterable[Any]) -> str:
    """The narrowest SQL type that holds every non-null value (DuckDB type names)."""
    seen: set[str] = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            seen.add("BOOLEAN")
        elif isinstance(v, int):
            seen.add("BIGINT")
        elif isinstance(v, float):
            seen.add("DOUBLE")
        elif isinstance(v, str):
            seen.add("VARCHAR")
        else:
            seen.add("JSON")
    if not seen:
        return "VARCHAR"
    if len(seen) == 1:
        return seen.pop()
    if seen <= {"BIGINT", "DOUBLE"}:
        return "DOUBLE"
    return "VARCHAR"


def merge_columns(*column_sets: Mapping[str, str]) -> dict[str, str]:
    """Columns of a union of versions; a name typed differently on two sides widens to VARCHAR."""
    out: dict[str, str] = {}
    for cols in column_sets:
        for name, typ in cols.items():
            if name not in out:
                out[name] = typ
            elif out[name] != typ:
                out[name] = "DOUBLE" if {out[name], typ} <= {"BIGINT", "DOUBLE"} else "VARCHAR"
    return out


def to_json_meta(values: Mapping[str, Any]) -> str:
    """Meta JSON with NaN/inf written as null (JSON has no NaN)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"))


def concat_batches(batches: list[ImportBatch]) -> ImportBatch:
    """Several sources imported as one version (``veml data add BASE coco A.json B.json``)."""
    if len(batches) == 1:
        return batches[0]
    modalities = {b.modality for b in batches}
    if len(modalities) > 1:
        raise InvalidInput(f"sources hold different modalities: {sorted(modalities)}")
    offset, tables = 0, {}
    for b in batches:
        for name, t in b.annotations.items():
            shifted = t.set_column(0, "sample_index", pa.array(t["sample_index"].to_numpy() + offset))
            tables.setdefault(name, []).append(shifted)
        offset += b.samples.num_rows
    cats: dict[str, int] = {}
    artifacts: dict[str, bytes] = {}
    for b in batches:
        for k, v in b.category_ids.items():
            cats.setdefault(k, v)
        artifacts.update(b.artifacts)
    return ImportBatch(
        modality=batches[0].modality,
        samples=pa.concat_tables([b.samples for b in batches]),
        annotations={k: pa.concat_tables(v) for k, v in tables.items()},
        columns=merge_columns(*(b.columns for b in batches)),
        category_ids=cats,
        source={"sources": [dict(b.source) for b in batches]},
        artifacts=artifacts,
        extra_props=dict(batches[0].extra_props),
    )
