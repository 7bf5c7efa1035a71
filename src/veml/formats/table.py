"""CSV and Parquet tables: one row, one sample; the label column becomes a ``labels`` row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from veml.errors import InvalidInput
from veml.formats.batch import (
    RESERVED_COLUMNS, SAMPLE_SCHEMA, ImportBatch, annotation_schema, check_column_names, sha256,
)
from veml.formats.paths import ReadPolicy, check_unpacked, read_regular

_SQL = {
    pa.types.is_boolean: "BOOLEAN",
    pa.types.is_integer: "BIGINT",
    pa.types.is_floating: "DOUBLE",
}


def _sql_type(t: pa.DataType) -> str:
    for test, name in _SQL.items():
        if test(t):
            return name
    return "VARCHAR"


def _parquet_size(meta: pq.FileMetaData) -> int:
    """What a Parquet file unpacks to, from its footer: the column chunks' uncompressed sizes, and at
    least 8 bytes a value (run-length encoding stores a million equal values in a few bytes)."""
    stored = sum(meta.row_group(r).column(c).total_uncompressed_size
                 for r in range(meta.num_row_groups) for c in range(meta.num_columns))
    return max(stored, meta.num_rows * meta.num_columns * 8)


def read_table(path: Path, policy: ReadPolicy | None = None) -> pa.Table:
    path = Path(path)
    policy = policy or ReadPolicy.from_options()
    data = pa.BufferReader(read_regular(path, str(path), policy))
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            file = pq.ParquetFile(data)
            check_unpacked(_parquet_size(file.metadata), str(path), policy)
            return file.read()
        return pacsv.read_csv(data)
    except (pa.ArrowException, OSError) as exc:
        msg = str(exc).splitlines()[0]
        raise InvalidInput(f"{path}: cannot parse table: {msg}") from None


def parse_table(path: Path, label: str | None = None, policy: ReadPolicy | None = None) -> ImportBatch:
    path = Path(path)
    table = read_table(path, policy)
    check_column_names(table.column_names, str(path), RESERVED_COLUMNS)  # width, format, ... are ordinary features
    if table.num_rows == 0:
        raise InvalidInput(f"{path}: the table has no rows")
    if label is not None and label not in table.column_names:
        raise InvalidInput(f"{path}: label column {label!r} not found (columns: {', '.join(table.column_names)})")
    feature_names = [c for c in table.column_names if c != label]
    if not feature_names:
        raise InvalidInput(f"{path}: no feature columns besides the label")
    columns = {c: _sql_type(table.schema.field(c).type) for c in feature_names}
    for c in feature_names:
        t = table.schema.field(c).type
        if not (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
                or pa.types.is_large_string(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
            raise InvalidInput(f"{path}: column {c!r} has unsupported type {t}")
    rows = table.select(feature_names).to_pylist()
    metas = []
    for r in rows:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))) for k, v in r.items()}
        metas.append(json.dumps(clean, sort_keys=True, separators=(",", ":")))
    n = table.num_rows
    samples = pa.table(
        {
            "modality": ["table"] * n,
            "format": [""] * n,
            "payload": pa.nulls(n, pa.large_binary()),
            "width": pa.nulls(n, pa.int32()),
            "height": pa.nulls(n, pa.int32()),
            "channels": pa.nulls(n, pa.int32()),
            "shape": pa.array([[len(feature_names)]] * n, pa.list_(pa.int32())),
            "file_name": [f"{path.name}#{i}" for i in range(n)],
            "content_hash": [sha256(m.encode()) for m in metas],
            "meta": metas,
        },
        schema=SAMPLE_SCHEMA,
    )
    annotations: dict[str, pa.Table] = {}
    category_ids: dict[str, int] = {}
    task = "unlabelled"
    if label is not None:
        col = table[label]
        keep = [i for i, v in enumerate(col.to_pylist()) if v is not None]
        values = col.to_pylist()
        if pa.types.is_floating(col.type):
            task = "regression"
            bad = [i for i in keep if not math.isfinite(values[i])]
            if bad:
                raise InvalidInput(f"{path}: label column {label!r} has NaN/inf at row {bad[0]}")
            cats, vals = [None] * len(keep), [float(values[i]) for i in keep]
        else:
            task = "classification"
            cats, vals = [str(values[i]) for i in keep], [float("nan")] * len(keep)
            category_ids = {c: i + 1 for i, c in enumerate(sorted(set(cats)))}
        annotations["labels"] = pa.table(
            {"sample_index": keep, "category": pa.array(cats, pa.string()), "value": vals},
            schema=annotation_schema("labels"),
        )
    return ImportBatch(
        modality="table",
        samples=samples,
        annotations=annotations,
        columns=columns,
        category_ids=category_ids,
        source={"format": "table", "path": str(path.resolve())},
        extra_props={"label": label, "task": task, "features": feature_names},
    )
