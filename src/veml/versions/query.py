"""Filter expressions over sample columns and annotation columns, run by DuckDB.

The version's sample metadata (no payloads) and its annotations arrive as Arrow tables; DuckDB
scans them zero-copy, so a filter over tens of thousands of samples is a few milliseconds and no
Python loop touches a row.  The user's expression is never handed to DuckDB as written: it is
parsed and checked against the filter language (:mod:`veml.versions.filterlang`: the version's
columns, literals, operators and a named set of scalar functions) and what runs is generated from
the checked tree.  External access is also switched off: a filter reads the version it is given
and nothing else.  A filter has a time budget (:func:`filter_timeout`); past it, or on Ctrl-C /
SIGTERM, the query is interrupted.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Callable, Mapping

import duckdb
import numpy as np
import pyarrow as pa

from veml.errors import FilterError, InvalidInput
from veml.versions import filterlang

DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_ENV = "VEML_FILTER_TIMEOUT_S"
# How long an interrupted query may take to stop before it is left behind: DuckDB notices an
# interrupt between vectors of 2048 rows, which a heavy expression over long strings can stretch.
# (A process that exits while DuckDB still runs can abort, so this errs on the long side.)
_SETTLE_S = 30.0

SAMPLE_COLUMNS = ("data_id", "modality", "format", "width", "height", "channels", "file_name")
_ANN_TABLES = ("boxes", "labels", "series")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sample_select(columns: Mapping[str, str]) -> str:
    # A typed column named like a built-in one (a table's ``width`` feature; SQL names ignore case)
    # takes its place: a table's built-in width is empty, the user's column is what a filter means.
    own = {name.casefold() for name in columns}
    parts = [_q(c) for c in SAMPLE_COLUMNS if c == "data_id" or c not in own]
    for name, typ in columns.items():
        if name.casefold() == "data_id":
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
    con.execute("SET enable_progress_bar = false")  # stdout and stderr belong to the CLI's contract
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def filter_timeout(timeout_s: float | None = None) -> float:
    """The time budget of one filter: ``timeout_s``, else $VEML_FILTER_TIMEOUT_S, else 30 s."""
    value: Any = timeout_s
    if value is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT_S
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"{TIMEOUT_ENV} must be a number of seconds, not {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"the filter time budget must be a positive number of seconds, not {value!r}")
    return float(value)


def run_filter(
    samples: pa.Table,
    columns: Mapping[str, str],
    annotations: Mapping[str, pa.Table],
    where: str,
    timeout_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(data ids of samples with any matching row, annotation ids of the matching rows)."""
    budget = filter_timeout(timeout_s)
    if not isinstance(where, str) or not where.strip():
        raise FilterError("filter expression is empty")
    con = _connect(samples, columns, annotations)
    done = threading.Event()
    done.set()  # no query running yet
    try:
        sql = filterlang.compile_filter(where, con.view("v").columns)
        # DuckDB parses the generated text as one expression: a second guard that nothing but an
        # expression reaches the WHERE clause.
        relation = con.view("v").filter(duckdb.SQLExpression(sql)).project("data_id, ann_id")
        done.clear()
        rows = _bounded(con, relation.fetchnumpy, budget, done)
    except duckdb.Error as exc:
        raise _filter_error(exc) from None
    finally:
        if done.is_set():  # never closed under a query that has not stopped yet
            con.close()
    data_ids = np.unique(np.asarray(rows["data_id"], dtype=np.int64))
    ann = rows["ann_id"]
    if isinstance(ann, np.ma.MaskedArray):
        ann = ann.compressed()
    ann_ids = np.unique(np.asarray(ann, dtype=np.int64))
    return data_ids, ann_ids


def page_ids(
    samples: pa.Table,
    columns: Mapping[str, str],
    annotations: Mapping[str, pa.Table],
    where: str | None,
    sort: str | None,
    descending: bool,
    limit: int,
    offset: int,
    timeout_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """One page of a version's samples: (data ids in order, number of samples matching ``where``).

    ``where`` is the filter language of :func:`run_filter` (None or blank: every sample); ``sort`` any
    column a filter can name (a sample column, a typed column, or an annotation column, where a
    sample sorts by its smallest value); ties and samples without a value come last, by data id.
    Only ``data_id`` and the sort key of the matching samples are materialised, and only the page's
    ids come back.
    """
    budget = filter_timeout(timeout_s)
    con = _connect(samples, columns, annotations)
    done = threading.Event()
    done.set()
    try:
        sample_cols = set(con.view("s").columns)
        view_cols = con.view("v").columns
        if sort is not None and sort not in view_cols:
            raise FilterError(f"cannot sort by unknown column {sort!r}; columns: {', '.join(sorted(view_cols))}")
        if where is not None and where.strip():
            sql = filterlang.compile_filter(where, view_cols)
            con.view("v").filter(duckdb.SQLExpression(sql)).project("data_id").create_view("hit_ids")
            prepare = "CREATE TEMP TABLE hit AS SELECT DISTINCT data_id FROM hit_ids"  # the filter runs once
            hits = "SELECT * FROM s WHERE data_id IN (SELECT data_id FROM hit)"
            count_sql = "SELECT count(*) FROM hit"
        else:
            prepare, hits, count_sql = None, "SELECT * FROM s", "SELECT count(*) FROM samples_raw"
        key = sort or "data_id"
        if key in sample_cols:
            keyed = f"SELECT data_id, {_q(key)} AS k FROM ({hits})"
        else:  # an annotation column: the sample's smallest value
            keyed = (f"SELECT h.data_id, min(v.{_q(key)}) AS k FROM ({hits}) h JOIN v ON v.data_id = h.data_id "
                     "GROUP BY h.data_id")
        direction = "DESC" if descending else "ASC"
        page_sql = (f"SELECT data_id FROM ({keyed}) ORDER BY k {direction} NULLS LAST, data_id "
                    f"LIMIT {int(limit)} OFFSET {int(offset)}")

        def fetch() -> tuple[np.ndarray, int]:
            if prepare:
                con.execute(prepare)
            total = con.execute(count_sql).fetchone()[0]  # type: ignore[index]
            ids = con.execute(page_sql).fetchnumpy()["data_id"]
            return np.asarray(ids, dtype=np.int64), int(total)

        done.clear()
        return _bounded(con, fetch, budget, done)
    except duckdb.Error as exc:
        raise _filter_error(exc) from None
    finally:
        if done.is_set():
            con.close()


def _bounded(con: duckdb.DuckDBPyConnection, fetch: Callable[[], Any], budget: float,
             done: threading.Event) -> Any:
    """``fetch()`` on a worker thread, interrupted past ``budget`` seconds or on KeyboardInterrupt.

    The main thread only waits (on an Event: an interrupted ``Thread.join`` can wrongly mark a
    running thread finished), so Ctrl-C, and SIGTERM, which the CLI turns into KeyboardInterrupt,
    reach it at once; it then interrupts DuckDB, waits for the query to stop, and re-raises.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = fetch()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="veml-filter", daemon=True).start()
    try:
        timed_out = not done.wait(budget)
        if timed_out:
            con.interrupt()
    except BaseException:
        con.interrupt()
        done.wait(_SETTLE_S)
        raise
    if timed_out:
        done.wait(_SETTLE_S)
        raise FilterError(f"filter expression took longer than {budget:g} s (the budget is set by {TIMEOUT_ENV})")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def expand_meta(samples: pa.Table, columns: Mapping[str, str]) -> pa.Table:
    """Sample metadata with the JSON ``meta`` column turned into typed columns."""
    con = duckdb.connect(":memory:")
    try:
        con.register("samples_raw", samples)
        return con.sql(_sample_select(columns) + " ORDER BY data_id").to_arrow_table()
    finally:
        con.close()


def _filter_error(exc: duckdb.Error) -> FilterError:
    if isinstance(exc, duckdb.ParserException):
        return FilterError(f"filter expression does not parse: {_first_line(exc)}")
    if isinstance(exc, duckdb.BinderException):
        return FilterError(f"filter expression: {_first_line(exc)}")
    return FilterError(f"filter expression failed: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    for prefix in ("Parser Error: ", "Binder Error: "):
        text = text.replace(prefix, "")
    return text.splitlines()[0] if text else type(exc).__name__
