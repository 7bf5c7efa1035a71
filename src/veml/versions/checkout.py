"""Checking a data version out into Python: indexable view, Arrow tables, numpy arrays, torch.

Rows are read once per view (one store read for samples, one per annotation table) and decoded
lazily per item, so ``view[i]`` on a 100k-sample version does not decode 100k images.  The
version's preparation steps are applied on the way out.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from veml.entities import Node
from veml.errors import InvalidInput, MissingExtra
from veml.formats.images import decode_array
from veml.schemas import SCHEMAS
from veml.store.idsets import BitMap, from_array, to_numpy
from veml.versions import preparation, query

if TYPE_CHECKING:
    from veml.versions.context import Stores


_READER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="veml-read")


@dataclass(frozen=True)
class Sample:
    data_id: int
    file_name: str
    value: Any  # image (H, W, C) array, series window (steps, sensors), or table feature vector
    annotations: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class DataView:
    def __init__(self, node: Node, stores: "Stores", ids: BitMap, ann_ids: BitMap) -> None:
        self.node = node
        self._s = stores
        self._ids = ids
        self._ann_ids = ann_ids
        self.steps = list(node.props.get("preparation", []))

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def data_ids(self) -> np.ndarray:
        return to_numpy(self._ids)

    # --- Arrow --------------------------------------------------------------------------------
    @cached_property
    def _samples(self) -> pa.Table:
        self._annotations_future  # start reading the annotations alongside: the two reads overlap
        return self._s.samples.read("samples", self._ids)

    @cached_property
    def _annotations_future(self) -> Future:
        return _READER.submit(self._read_annotations)

    def _read_annotations(self) -> dict[str, pa.Table]:
        return {t: self._s.samples.read(t, self._ann_ids) for t in self.node.props.get("annotation_tables", [])}

    @cached_property
    def _annotations(self) -> dict[str, pa.Table]:
        return self._annotations_future.result()

    @cached_property
    def _meta(self) -> pa.Table:
        if "_samples" in self.__dict__:
            return self._samples.drop_columns(["payload"])
        names = [f.name for f in SCHEMAS["samples"] if f.name != "payload"]
        return self._s.samples.read("samples", self._ids, columns=names)

    def metadata(self) -> pa.Table:
        """Every sample row without its payload: cheap even for millions of samples."""
        return self._meta

    def read_images(self, positions: Sequence[int], size: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Decode the images at these positions (RGB, resized to ``size`` = (height, width) when given),
        reading only their payloads."""
        wanted = self.data_ids[np.asarray(positions, dtype=np.int64)]
        return [decode_array(p, self.describe(int(d)), size) for p, d in zip(self.read_payloads(positions), wanted)]

    def read_payloads(self, positions: Sequence[int]) -> list[bytes]:
        """The stored (encoded) bytes of the samples at these positions, in that order."""
        pos = np.asarray(positions, dtype=np.int64)
        if "_samples" in self.__dict__:
            return [self._samples["payload"][int(i)].as_py() for i in pos]
        wanted = self.data_ids[pos]
        rows = self._s.samples.read("samples", from_array(wanted), columns=["payload"])
        by_id = dict(zip(rows["data_id"].to_pylist(), rows["payload"].to_pylist()))
        return [by_id[int(d)] for d in wanted]

    def describe(self, data_id: int) -> str:
        """How errors name a sample: ``sample 12 of version 'day'``."""
        return f"sample {data_id} of version {self.node.name!r}"

    def annotations_of(self, data_id: int) -> list[dict[str, Any]]:
        return [dict(a) for a in self._ann_by_id.get(int(data_id), [])]

    def samples_table(self) -> pa.Table:
        """Every sample row (payload included), in data_id order."""
        return self._samples

    def annotations(self, table: str | None = None) -> pa.Table | dict[str, pa.Table]:
        if table is None:
            return dict(self._annotations)
        if table not in self._annotations:
            raise InvalidInput(f"version {self.node.name!r} has no {table!r} annotations")
        return self._annotations[table]

    def to_arrow(self) -> pa.Table:
        """Samples with the version's typed columns expanded from ``meta`` and the payload kept."""
        meta = query.expand_meta(self._samples.drop_columns(["payload"]), self.node.props.get("columns", {}))
        return meta.append_column("payload", self._samples["payload"])

    # --- items --------------------------------------------------------------------------------
    @cached_property
    def _ann_by_id(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for table, rows in self._annotations.items():
            for r in rows.to_pylist():
                r["kind"] = table
                out.setdefault(r["data_id"], []).append(r)
        return out

    def raw_image(self, i: int) -> np.ndarray:
        return decode_array(self._samples["payload"][i].as_py(), self.describe(self._samples["data_id"][i].as_py()))

    def raw_array(self, i: int) -> np.ndarray:
        shape = self._samples["shape"][i].as_py()
        return np.frombuffer(self._samples["payload"][i].as_py(), dtype="<f4").reshape(shape)

    def raw_table_matrix(self) -> np.ndarray:
        features = self.node.props.get("features") or list(self.node.props.get("columns", {}))
        rows = [json.loads(m) for m in self._samples["meta"].to_pylist()]
        return np.array([[_num(r.get(f)) for f in features] for r in rows], dtype=np.float64).reshape(len(rows), len(features))

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        row = {c: self._samples[c][i].as_py() for c in ("data_id", "file_name", "meta", "width", "height")}
        modality = self.node.props.get("modality")
        anns = [dict(a) for a in self._ann_by_id.get(row["data_id"], [])]
        if modality == "image":
            value = preparation.apply_image(self.raw_image(i), self.steps)
            sx, sy = preparation.box_scale(row["width"], row["height"], self.steps)
            for a in anns:
                if a["kind"] == "boxes" and (sx, sy) != (1.0, 1.0):
                    a.update(bbox_x=a["bbox_x"] * sx, bbox_y=a["bbox_y"] * sy, bbox_w=a["bbox_w"] * sx, bbox_h=a["bbox_h"] * sy)
        elif modality == "series":
            value = preparation.apply_series(self.raw_array(i), self.node.props.get("missing_value", 0.0), self.steps)
        else:
            value = self._table_matrix[i]
        return Sample(row["data_id"], row["file_name"], value, anns, json.loads(row["meta"] or "{}"))

    @cached_property
    def _table_matrix(self) -> np.ndarray:
        return preparation.apply_table(self.raw_table_matrix(), self.steps)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    # --- arrays -------------------------------------------------------------------------------
    def to_numpy(self) -> np.ndarray:
        """All samples stacked: images (N, H, W, C), series (N, steps, sensors), tables (N, features)."""
        modality = self.node.props.get("modality")
        if modality == "table":
            return self._table_matrix
        if len(self) == 0:
            return np.zeros((0,), np.float32)
        items = [self[i].value for i in range(len(self))]
        shapes = {a.shape for a in items}
        if len(shapes) > 1:
            raise InvalidInput(f"samples of {self.node.name!r} differ in shape ({len(shapes)} shapes): prepare with --resize first")
        return np.stack(items)

    def class_names(self) -> tuple[str, ...]:
        """The version's categories in category-id order: a label's class index is its place here."""
        cats = self.node.props.get("category_ids", {})
        return tuple(name for name, _ in sorted(cats.items(), key=lambda kv: (kv[1], kv[0])))

    def labels(self) -> list[str | None]:
        """One class label per sample (first ``labels`` row), None where a sample has none."""
        first: dict[int, str] = {}
        table = self._annotations.get("labels")
        if table is not None:
            for did, cat in zip(table["data_id"].to_pylist(), table["category"].to_pylist()):
                first.setdefault(did, cat)
        return [first.get(d) for d in self.data_ids.tolist()]

    def column(self, name: str) -> list[Any]:
        """One typed sample column (a COCO extra key, a table column), in data_id order."""
        columns = self.node.props.get("columns", {})
        if name not in columns:
            raise InvalidInput(f"{name!r} is not a column of {self.node.name!r} (columns: {', '.join(columns) or 'none'})")
        return query.expand_meta(self.metadata(), {name: columns[name]})[name].to_pylist()

    def label_values(self) -> list[float]:
        """One regression target per sample (first ``labels`` row's value), NaN where there is none."""
        first: dict[int, float] = {}
        table = self._annotations.get("labels")
        if table is not None:
            for did, val in zip(table["data_id"].to_pylist(), table["value"].to_pylist()):
                first.setdefault(did, float("nan") if val is None else float(val))
        return [first.get(d, float("nan")) for d in self.data_ids.tolist()]

    def to_torch(self):
        """A ``torch.utils.data.Dataset`` of (tensor, annotations) pairs."""
        try:
            import torch
            from torch.utils.data import Dataset
        except ImportError as exc:
            raise MissingExtra("torch", "torch") from exc

        view = self

        class _VersionDataset(Dataset):
            def __len__(self) -> int:
                return len(view)

            def __getitem__(self, i: int):
                s = view[i]
                x = torch.from_numpy(np.array(s.value))  # a writable copy: stored payloads are read-only
                if x.ndim == 3 and view.node.props.get("modality") == "image":
                    x = x.permute(2, 0, 1)
                return x, s.annotations

        return _VersionDataset()


def _num(v: Any) -> float:
    if v is None or isinstance(v, str):
        try:
            return float(v) if v is not None else float("nan")
        except ValueError:
            return float("nan")
    return float(v)
