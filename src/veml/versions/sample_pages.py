"""Browsing a data version a page at a time: the rows of one page, and one sample with where it is.

What the web UI's grid and sample view read (``repo.data.samples_page`` / ``repo.data.sample_detail``).
A page is chosen by DuckDB over the version's sample metadata (no payloads) with the filter
language of ``veml data filter --where`` (:func:`veml.versions.query.page_ids`); then only that
page's sample rows and annotation rows are read and turned into Python values, so a page of 50
costs the same on a version of 100 samples as on one of 100,000 (apart from the filter's scan).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow.compute as pc

from veml.entities import Node
from veml.errors import InvalidInput, NotFound
from veml.store.idsets import BitMap, from_array
from veml.versions import query
from veml.versions.context import Stores
from veml.versions.data_listing import KIND

META_COLUMNS = ["data_id", "modality", "format", "width", "height", "channels", "file_name", "meta"]
MAX_SERIES_VALUES = 200_000  # a sample view plots a window, not a whole recording


@dataclass(frozen=True)
class SamplePage:
    """One page of a data version's samples, in the order asked for."""

    version: Node
    rows: tuple[dict[str, Any], ...]  # sample columns, ``meta`` as a dict, ``annotations`` (each with ``kind``)
    total: int  # samples matching ``where`` (all of the version's without one)
    limit: int
    offset: int
    where: str | None
    sort: str | None
    descending: bool


@dataclass(frozen=True)
class SampleDetail:
    """One sample of a data version, with the data versions holding it and, for a series, its values."""

    version: Node
    row: dict[str, Any]
    versions: tuple[int, ...]  # ids of every data version that contains this sample, oldest first
    series: dict[str, Any] | None  # {"shape", "values" (steps x sensors), "sensors", "t0"}: series samples only


def _decode_meta(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def annotation_rows(stores: Stores, node: Node, ann_ids: BitMap, data_ids: np.ndarray) -> dict[int, list[dict[str, Any]]]:
    """The annotation rows of these samples only: each table's key columns are scanned, then only their rows read."""
    out: dict[int, list[dict[str, Any]]] = {}
    wanted = np.asarray(data_ids, dtype=np.int64)
    for table in node.props.get("annotation_tables", []):
        keys = stores.samples.read(table, ann_ids, columns=["ann_id", "data_id"])
        hit = pc.is_in(keys["data_id"], value_set=pc.cast(wanted, keys["data_id"].type))
        own = keys.filter(hit)["ann_id"].to_numpy()
        if not len(own):
            continue
        for r in stores.samples.read(table, from_array(own)).to_pylist():
            r["kind"] = table
            out.setdefault(r["data_id"], []).append(r)
    return out


def rows_of(stores: Stores, node: Node, ids: BitMap, ann_ids: BitMap, data_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Sample rows (no payload) with their annotations, in the order of ``data_ids``."""
    order = np.asarray(data_ids, dtype=np.int64)
    if not len(order):
        return []
    meta = stores.samples.read("samples", from_array(order) & ids, columns=META_COLUMNS).to_pylist()
    anns = annotation_rows(stores, node, ann_ids, order)
    by_id = {}
    for row in meta:
        row["meta"] = _decode_meta(row.get("meta"))
        row["annotations"] = anns.get(row["data_id"], [])
        by_id[row["data_id"]] = row
    return [by_id[int(i)] for i in order if int(i) in by_id]


def samples_page(stores: Stores, node: Node, ids: BitMap, ann_ids: BitMap, where: str | None = None,
                 sort: str | None = None, descending: bool = False, limit: int = 50, offset: int = 0) -> SamplePage:
    if limit < 1 or offset < 0:
        raise InvalidInput("a page needs limit >= 1 and offset >= 0")
    where = where if where is not None and where.strip() else None
    if where is None and sort in (None, "data_id"):
        total = len(ids)  # roaring bitmaps index by rank: no query, nothing else read
        if descending:
            lo, hi = max(0, total - offset - limit), max(0, total - offset)
            page = [int(i) for i in ids[lo:hi]][::-1]
        else:
            page = [int(i) for i in ids[offset:min(total, offset + limit)]] if offset < total else []
    else:
        metadata = stores.samples.read("samples", ids, columns=META_COLUMNS)
        columns = node.props.get("columns", {})
        needs_annotations = where is not None or (sort is not None and sort not in query.SAMPLE_COLUMNS and sort not in columns)
        anns = ({t: stores.samples.read(t, ann_ids) for t in node.props.get("annotation_tables", [])}
                if needs_annotations else {})
        found, total = query.page_ids(metadata, columns, anns, where, sort, descending, limit, offset)
        page = [int(i) for i in found]
    return SamplePage(version=node, rows=tuple(rows_of(stores, node, ids, ann_ids, page)), total=total, limit=limit,
                      offset=offset, where=where, sort=sort, descending=descending)


def _series(stores: Stores, node: Node, data_id: int, row: dict[str, Any], anns: list[dict[str, Any]]) -> dict[str, Any] | None:
    table = stores.samples.read("samples", from_array([data_id]), columns=["payload", "shape"])
    if not table.num_rows or table["payload"][0].as_py() is None:
        return None
    shape = [int(x) for x in table["shape"][0].as_py() or []]
    values = np.frombuffer(table["payload"][0].as_py(), dtype="<f4")
    if not shape or int(np.prod(shape)) != values.size:
        return None
    values = values.reshape(shape[0], -1) if len(shape) > 1 else values.reshape(-1, 1)
    values = values[: max(1, MAX_SERIES_VALUES // values.shape[1])]
    sensors = node.props.get("sensors") or [a["sensor"] for a in anns if a.get("kind") == "series" and a.get("sensor")]
    t0 = next((a["t0"] for a in anns if a.get("kind") == "series" and a.get("t0") is not None), None)
    clean = np.where(np.isfinite(values), values, np.nan).astype(float)
    return {"shape": shape, "values": [[None if np.isnan(x) else float(x) for x in r] for r in clean],
            "sensors": [str(s) for s in sensors][: clean.shape[1]], "t0": t0}


def sample_detail(stores: Stores, node: Node, ids: BitMap, ann_ids: BitMap, data_id: int) -> SampleDetail:
    if data_id not in ids:
        raise NotFound(f"sample {data_id} is not in version {node.name!r}")
    rows = rows_of(stores, node, ids, ann_ids, [data_id])
    if not rows:
        raise NotFound(f"sample {data_id} of version {node.name!r} has no stored row")
    row = rows[0]
    data_versions = {n.id for n in stores.graph.list(kinds=[KIND])}
    holding = sorted(vid for vid, bits, _ in stores.graph.iter_idsets("samples") if vid in data_versions and data_id in bits)
    series = _series(stores, node, data_id, row, row["annotations"]) if row.get("modality") == "series" else None
    return SampleDetail(version=node, row=row, versions=tuple(holding), series=series)


__all__ = ["SamplePage", "SampleDetail", "samples_page", "sample_detail", "rows_of", "annotation_rows"]
