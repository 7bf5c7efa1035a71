"""Filter expressions: SQL over sample columns and annotation columns, run by DuckDB.

The version's sample metadata (no payloads) and its annotations arrive as Arrow tables; DuckDB
scans them zero-copy, so a filter over tens of thousands of samples is a few milliseconds and no
Python loop touches a row.  External access is switched off before the user's expression runs:
a filter can read the version it is given and nothing else.
"""

from __future__ import annotations

from typing import Mapping

import duckdb
import numpy as np
import pyarrow as pa

from veml.errors import FilterError

SAMPLE_COLUMNS = ("data_id", "modality", "format", "width", "height", "channels", "file_name")
_ANN_TABLES = ("boxes", "labels", "series")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sample_select(columns: Mapping[str, str]) -> str:
    parts = [_q(c) for c in SAMPLE_COLUMNS]
    for name, typ in columns.items():
        if name in SAMPLE_COLUMNS:
            continue
        path = "'$." + _q(name).replace("'", "''") + "'"
        if typ == "JSON":
            parts.append(f"json_extract(meta, {path}) AS {_q(name)}")
        else:
            parts.append(f"TRY_CAST(json_extract_string(meta, {path}) AS {typ}) AS {_q(name)}")
    return "SELECT " + ", ".join(parts) + " FROM samples_raw"


def _connect(samples: pa.Table, columns: Mapping[str, str], annotations: Mapping[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.register("samples_raw", samples)
    sample_names = set(SAMPLE_COLUMNS) | set(columns)
    con.execute(f"CREATE TEMP VIEW s AS {_sample_select(columns)}")
    ann_parts = []
    ann_cols: dict[str, None] = {}
    for kind in _ANN_TABLES:
        table = annotations.get(kind)
        if table is None:
            continue
        con.register(f"ann_{kind}", table)
        for c in table.column_names:
            ann_cols.setdefault(c, None)
        ann_parts.append(f"SELECT '{kind}' AS ann_kind, * FROM ann_{kind}")
    if ann_parts:
        con.execute("CREATE TEMP VIEW a AS " + " UNION ALL BY NAME ".join(ann_parts))
        exposed = ["a.ann_kind"]
        for c in ann_cols:
            if c == "data_id":
                continue
            alias = f"ann_{c}" if c in sample_names and c != "ann_id" else c
            exposed.append(f"a.{_q(c)} AS {_q(alias)}")
        view = f"SELECT s.*, {', '.join(exposed)} FROM s LEFT JOIN a ON a.data_id = s.data_id"
    else:
        view = "SELECT s.*, CAST(NULL AS BIGINT) AS ann_id, CAST(NULL AS VARCHAR) AS ann_kind FROM s"
    con.execute(f"CREATE TEMP VIEW v AS {view}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_filter(
    samples: pa.Table,
    columns: Mapping[str, str],
    annotations: Mapping[str, pa.Table],
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(data ids of samples with any matching row, annotation ids of the matching rows)."""
    if not where or not where.strip():
        raise FilterError("filter expression is empty")
    try:
        # Parsed as one expression first: "1=1) UNION SELECT …" or "a; b" never become SQL.
        expression = duckdb.SQLExpression(where)
    except duckdb.Error as exc:
        raise FilterError(f"filter expression does not parse: {_first_line(exc)}") from None
    con = _connect(samples, columns, annotations)
    try:
        rows = con.view("v").filter(expression).project("data_id, ann_id").fetchnumpy()
    except duckdb.ParserException as exc:
        raise FilterError(f"filter expression does not parse: {_first_line(exc)}") from None
    except duckdb.BinderException as exc:
        raise FilterError(f"filter expression: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise FilterError(f"filter expression failed: {_first_line(exc)}") from None
    finally:
        con.close()
    data_ids = np.unique(np.asarray(rows["data_id"], dtype=np.int64))
    ann = rows["ann_id"]
    if isinstance(ann, np.ma.MaskedArray):
        ann = ann.compressed()
    ann_ids = np.unique(np.asarray(ann, dtype=np.int64))
    return data_ids, ann_ids


def expand_meta(samples: pa.Table, columns: Mapping[str, str]) -> pa.Table:
    """Sample metadata with the JSON ``meta`` column turned into typed columns."""
    con = duckdb.connect(":memory:")
    try:
        con.register("samples_raw", samples)
        return con.sql(_sample_select(columns) + " ORDER BY data_id").to_arrow_table()
    finally:
        con.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    for prefix in ("Parser Error: ", "Binder Error: "):
        text = text.replace(prefix, "")
    return text.splitlines()[0] if text else type(exc).__name__
