"""Samples and annotations in Lance tables, on a local path or in an object store (``s3://``).

Why Lance: columnar, appends are cheap commits, encoded images stay as they came (no re-encoding),
and random ``take`` by position is fast, which is what reading a filtered version needs.  A read
turns the version's bitmap into either a few key ranges (pushed down as a filter, sequential I/O
for the one-import-one-range case) or into row positions found by scanning the small key column.

On ``s3://`` Lance reads and writes through its own object store (ranged GETs for the columns and
rows a read needs; commits by a conditional PUT of the next manifest, so concurrent writers do not
overwrite each other's versions on a store that honours ``If-None-Match``); :mod:`veml.store.object_store`
supplies the storage options and the few file-system questions Lance does not answer.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from veml.errors import StorageError
from veml.store.idsets import BitMap, runs, to_numpy
from veml.store.object_store import S3Settings, location
from veml.schemas import KEY, SCHEMAS

T = TypeVar("T")
_STALE_RETRIES = 3  # reopen-and-retry rounds when gc removed files under an open version
_RESOLVE_COLUMNS = ("modality", "content_hash")  # what resolving a digest-stored payload reads besides it
_MAX_RANGE_FILTER = 16  # beyond this many runs, scanning the keys and taking by position beats a long OR filter


def _lance():
    import lance

    return lance


class LanceSampleStore:
    """``root`` is a local directory (a :class:`~pathlib.Path`) or an ``s3://bucket/prefix`` string;
    ``s3`` is the ``[s3]`` table (or resolved :class:`S3Settings`) used for ``s3://``."""

    def __init__(self, root: Path | str, s3: S3Settings | Mapping[str, Any] | None = None) -> None:
        self.loc = location(root, s3)
        self.root = self.loc.root  # a Path for a local store, the s3:// URI otherwise
        self._opts = self.loc.storage_options
        self._present: set[str] = set()  # on S3, tables seen to exist (never dropped): saves a LIST per read

    def _uri(self, table: str) -> str:
        if table not in SCHEMAS:
            raise StorageError(f"unknown sample table {table!r}")
        return self.loc.child(f"{table}.lance")

    def _exists(self, table: str) -> bool:
        if table in self._present:
            return True
        found = self.loc.dataset_exists(f"{table}.lance")
        if found and not self.loc.is_local:  # a local check is a stat(): keep asking, as before
            self._present.add(table)
        return found

    def _open(self, table: str):
        with self.loc.errors(f"cannot open sample table {table!r} in"):
            return _lance().dataset(self._uri(table), storage_options=self._opts)

    def create(self) -> None:
        self.loc.makedirs()
        self.loc.check()
        for table, schema in SCHEMAS.items():
            if not self._exists(table):
                with self.loc.errors(f"cannot create sample table {table!r} in"):
                    _lance().write_dataset(schema.empty_table(), self._uri(table), mode="create",
                                           storage_options=self._opts)

    def append(self, table: str, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        rows = rows.select(SCHEMAS[table].names).cast(SCHEMAS[table])
        # "append" creates a missing table (one added by a newer VeML than the repository)
        with self.loc.errors(f"cannot append to sample table {table!r} in"):
            _lance().write_dataset(rows, self._uri(table), mode="append", max_rows_per_group=1024,
                                   storage_options=self._opts)

    def read(self, table: str, ids: BitMap, columns: Sequence[str] | None = None) -> pa.Table:
        if table != "samples" or (columns is not None and "payload" not in columns):
            return self._read(table, ids, columns)
        extra = [c for c in _RESOLVE_COLUMNS if columns is not None and c not in columns]
        out = self._read(table, ids, None if columns is None else [*columns, *extra])
        return self._resolve_payloads(out).drop_columns(extra)

    def _resolve_payloads(self, rows: pa.Table) -> pa.Table:
        """Fill the payloads stored by content digest (null here) from the rows holding those bytes."""
        wanted = pc.fill_null(pc.and_(pc.is_null(rows["payload"]), pc.not_equal(rows["modality"], "table")), False)
        if not pc.any(wanted).as_py():
            return rows
        keys = pc.if_else(wanted, rows["content_hash"], pa.scalar(None, pa.string()))
        holders = self.holders(pc.unique(keys.drop_null()))
        found = self._read("samples", BitMap(holders["data_id"].to_numpy().astype(np.uint32)), ["content_hash", "payload"])
        found = found.filter(pc.is_valid(found["payload"]))
        at = pc.index_in(keys, value_set=found["content_hash"])  # any holder will do: same bytes
        filled = pc.coalesce(rows["payload"], found["payload"].take(at))
        return rows.set_column(rows.schema.get_field_index("payload"), "payload", filled)

    def holders(self, hashes: pa.Array | Sequence[str]) -> pa.Table:
        """Rows of the content index (``data_id``, ``content_hash``) for these digests."""
        if len(hashes) == 0 or not self._exists("digests"):
            return SCHEMAS["digests"].empty_table()
        value_set = pa.array(hashes, pa.string())

        def scan(ds) -> pa.Table:
            index = ds.to_table(columns=["data_id", "content_hash"])
            return index.filter(pc.is_in(index["content_hash"], value_set=value_set))

        return self._on_latest("digests", scan)

    def _read(self, table: str, ids: BitMap, columns: Sequence[str] | None = None) -> pa.Table:
        key = KEY[table]
        cols = list(columns) if columns is not None else None
        if cols is not None and key not in cols:
            cols = [key, *cols]
        schema = SCHEMAS[table]
        if len(ids) == 0 or not self._exists(table):
            return (schema if cols is None else pa.schema([schema.field(c) for c in cols])).empty_table()
        spans = runs(ids)
        if len(spans) <= _MAX_RANGE_FILTER:
            where = " OR ".join(f"({key} >= {a} AND {key} < {b})" for a, b in spans)
            out = self._on_latest(table, lambda ds: ds.to_table(columns=cols, filter=where))
        else:
            wanted = to_numpy(ids)
            out = self._on_latest(table, lambda ds: self._read_scattered(ds, key, wanted, cols))
        if out.num_rows > 1:
            k = out[key].to_numpy()
            if np.any(k[1:] < k[:-1]):
                out = out.take(pa.array(np.argsort(k, kind="stable")))
        return out

    @staticmethod
    def _read_scattered(ds, key: str, wanted: np.ndarray, cols: list[str] | None) -> pa.Table:
        """Rows of a version whose ids are not a few ranges (a filter, a merge).

        The key column (8 bytes a row) is scanned, the wanted rows' positions found, and only they
        are taken.  Measured on 20,000 images: taking 78% of the rows is still faster than a full
        scan followed by a mask, which copies every payload once more (benchmarks/, BENCHMARKS.md).
        """
        keys = ds.to_table(columns=[key])[key].to_numpy()
        pos = np.nonzero(np.isin(keys, wanted, assume_unique=True))[0]
        return ds.take(pos, columns=cols)

    def keys(self, table: str) -> BitMap:
        key = KEY[table]
        if not self._exists(table):
            return BitMap()
        col = self._on_latest(table, lambda ds: ds.to_table(columns=[key])[key].to_numpy())
        return BitMap(col.astype(np.uint32))

    def _on_latest(self, table: str, scan: Callable[[Any], T]) -> T:
        """Run ``scan`` on the table's latest version, reopening it if gc removed files under it.

        ``veml gc`` compacts a table and drops its old versions while other processes read; a
        reader that opened the version just before finds a data file gone ("Not found").  Reading
        the latest version instead is always right here: rows are insert-only, and gc only removes
        rows that no data version references, so every row a reader can ask for is still there."""
        for attempt in range(_STALE_RETRIES + 1):
            ds = self._open(table)
            try:
                with self.loc.errors(f"cannot read sample table {table!r} in"):
                    return scan(ds)
            except StorageError as exc:
                if attempt == _STALE_RETRIES or "not found" not in str(exc).lower():
                    raise
        raise AssertionError("unreachable")

    def reclaim(self, table: str, ids: BitMap) -> int:
        """Delete these rows, compact, and drop files no current table version needs.

        The clean-up runs even with nothing to delete: a writer killed mid-append leaves a data
        file no manifest lists, and Lance removes such files once they are 7 days old (younger
        ones may belong to an append still running, so they are left alone)."""
        if len(ids) == 0:
            if self._exists(table):
                with self.loc.errors(f"cannot clean up sample table {table!r} in"):
                    self._open(table).cleanup_old_versions(older_than=_dt.timedelta(seconds=0))
            return 0
        key = KEY[table]
        ds = self._open(table)
        with self.loc.errors(f"cannot reclaim rows of sample table {table!r} in"):
            before = ds.count_rows()
            for i in range(0, len(spans := runs(ids)), 256):
                where = " OR ".join(f"({key} >= {a} AND {key} < {b})" for a, b in spans[i : i + 256])
                ds.delete(where)
            ds = self._open(table)
            deleted = before - ds.count_rows()
            ds.optimize.compact_files()
            ds = self._open(table)
            ds.cleanup_old_versions(older_than=_dt.timedelta(seconds=0))
        return deleted

    def size_bytes(self) -> int:
        return self.loc.size_bytes()
