"""Data version management: every operation is a new immutable version with edges to its parents.

How a version is written (DESIGN.md section 7): the source is parsed and validated completely,
then one contiguous id range is reserved, the sample and annotation rows are appended, and only
then does the version's node commit (with its bitmaps) in one SQL transaction.  A process killed
before that commit leaves rows no version references: invisible, and reclaimed by ``veml gc``.
Derived versions (filter, merge, diff) never touch the rows at all; they are bitmap algebra.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from veml.entities import MODALITIES, ROLES, Node
from veml.errors import InvalidInput, MissingExtra, NotFound
from veml.formats import EXPORT_FORMATS, IMPORT_FORMATS
from veml.formats.batch import ImportBatch, concat_batches, merge_columns
from veml.formats.bdd import parse_bdd, write_bdd
from veml.formats.coco import check_boxes_within, parse_coco, parse_coco_annotations, write_coco
from veml.formats.hf import parse_hf, write_hf
from veml.formats.imagefolder import parse_image_folder, write_image_folder
from veml.formats.paths import ReadPolicy
from veml.formats.table import parse_table
from veml.formats.timeseries import parse_timeseries
from veml.formats.voc import parse_voc, write_voc
from veml.formats.yolo import parse_yolo, write_yolo
from veml.progress import ProgressLike, as_progress
from veml.store.idsets import BitMap, from_array, to_numpy
from veml.schemas import ANNOTATION_TABLES, SCHEMAS
from veml.versions import pixels, preparation, query, sample_pages
from veml.versions.checkout import DataView
from veml.versions.context import Stores
from veml.versions.pixels import PixelCacheCleared, PixelCacheReport
from veml.versions.data_listing import KIND, list_data_versions

_META_COLUMNS = ["data_id", "modality", "format", "width", "height", "channels", "file_name", "meta"]

_FOLDER_PARSERS = {"yolo": parse_yolo, "voc": parse_voc, "hf": parse_hf}  # one directory, no options


@dataclass(frozen=True)
class Diff:
    added: int
    removed: int
    common: int

    def to_json(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "common": self.common}


class DataVersions:
    """The data version API behind ``veml data …`` and ``repo.data``."""

    def __init__(self, stores: Stores) -> None:
        self._s = stores

    # --- reading ------------------------------------------------------------------------------
    def get(self, ref: str | int) -> Node:
        return self._s.graph.resolve(ref, kinds=[KIND])

    def list(self, role: str | None = None, limit: int | None = None, offset: int = 0) -> list[Node]:
        return list_data_versions(self._s.graph, role, limit, offset)

    def derived(self, ref: str | int | Node) -> list[Node]:
        """The data versions made directly from ``ref`` (one step down its lineage): its filters, selections, merges..."""
        node = ref if isinstance(ref, Node) else self.get(ref)
        return [n for n in self._s.graph.lineage(node.id, "down", hops=1).nodes if n.kind == KIND and n.id != node.id]

    def ids(self, ref: str | int | Node) -> BitMap:
        node = ref if isinstance(ref, Node) else self.get(ref)
        return self._s.graph.idset(node.id, "samples")

    def annotation_ids(self, ref: str | int | Node) -> BitMap:
        node = ref if isinstance(ref, Node) else self.get(ref)
        return self._s.graph.idset(node.id, "annotations")

    def annotations(self, node: Node) -> dict[str, pa.Table]:
        """The version's annotation rows, one Arrow table per annotation kind it declares."""
        ann = self.annotation_ids(node)
        out = {}
        for table in node.props.get("annotation_tables", []):
            out[table] = self._s.samples.read(table, ann)
        return out

    def sample_metadata(self, node: Node) -> pa.Table:
        return self._s.samples.read("samples", self.ids(node), columns=_META_COLUMNS)

    def checkout(self, ref: str | int | Node) -> DataView:
        node = ref if isinstance(ref, Node) else self.get(ref)
        return DataView(node, self._s, self.ids(node), self.annotation_ids(node))

    def checkout_samples(self, ref: str | int | Node, data_ids: Sequence[int] | np.ndarray) -> DataView:
        """A view of only these samples of the version, with their annotations: reads their rows, not all."""
        node = ref if isinstance(ref, Node) else self.get(ref)
        wanted = from_array(np.asarray(data_ids, dtype=np.int64)) & self.ids(node)
        return DataView(node, self._s, wanted, self.annotation_ids(node))

    def sample_payload(self, ref: str | int | Node, data_id: int) -> tuple[bytes, str, str | None]:
        """One image sample's encoded bytes exactly as stored: (bytes, format, content hash)."""
        node = ref if isinstance(ref, Node) else self.get(ref)
        if node.props.get("modality") != "image":
            raise InvalidInput(f"version {node.name!r} holds {node.props.get('modality')} data, not images")
        if data_id not in self.ids(node):
            raise NotFound(f"sample {data_id} is not in version {node.name!r}")
        table = self.checkout_samples(node, [data_id]).samples_table()
        if table.num_rows != 1:
            raise NotFound(f"sample {data_id} of version {node.name!r} has no stored row")
        return table["payload"][0].as_py(), str(table["format"][0].as_py() or ""), table["content_hash"][0].as_py()

    def samples_page(self, ref: str | int | Node, where: str | None = None, sort: str | None = None,
                     descending: bool = False, limit: int = 50, offset: int = 0) -> sample_pages.SamplePage:
        """One page of the version's samples (rows and annotations, no payload), filtered with the
        ``--where`` language and sorted by any column a filter can name; only the page is read."""
        node = ref if isinstance(ref, Node) else self.get(ref)
        return sample_pages.samples_page(self._s, node, self.ids(node), self.annotation_ids(node), where, sort,
                                         descending, limit, offset)

    def sample_detail(self, ref: str | int | Node, data_id: int) -> sample_pages.SampleDetail:
        """One sample with its annotations, the data versions holding it and, for a series, its values."""
        node = ref if isinstance(ref, Node) else self.get(ref)
        return sample_pages.sample_detail(self._s, node, self.ids(node), self.annotation_ids(node), data_id)

    # --- decoded pixels: the cache and the torch loader (veml.versions.pixels, veml.versions.loader) -------
    def cache_pixels(self, ref: str | int | Node, size: int | Sequence[int] | None = None, workers: int | None = None,
                     progress: ProgressLike | None = None) -> PixelCacheReport:
        """Decode the version's images at ``size`` = (height, width) into the pixel cache (``veml data cache``);
        images cached before, by this or any other version, are not decoded again."""
        view = self.checkout(ref)
        return pixels.cached_pixels(self._s, view, pixels.image_size(view, size), workers, progress)[1]

    def clear_pixel_cache(self) -> PixelCacheCleared:
        """Remove every cached pixel (``veml data cache --clear``); they are rebuilt on next use."""
        return pixels.clear(self._s)

    def torch_dataset(self, ref: str | int | Node, size: int | Sequence[int] | None = None, cache: bool = True,
                      dtype: str = "uint8", label_column: str | None = None, workers: int | None = None,
                      progress: ProgressLike | None = None):
        """A ``torch.utils.data.Dataset`` of (image (3, H, W), class index) over the version's images at
        ``size`` = (height, width) (default: the version's resize step, else the images' own size).
        ``cache=True`` reads decoded pixels from the pixel cache, building what is missing first
        (``workers`` decoding threads); ``cache=False`` decodes on every read and writes nothing.
        Labels index ``class_names``: the version's categories (first ``labels`` row of a sample), or the
        sorted values of ``label_column``; -1 where a sample has none."""
        from veml.versions.taskdata import column_labels, label_classes

        try:
            from veml.versions.loader import VersionImages
        except ImportError as exc:
            raise MissingExtra("torch", "torch") from exc
        view = self.checkout(ref)
        hw = pixels.image_size(view, size)
        if dtype not in ("uint8", "float32"):
            raise InvalidInput(f"dtype must be uint8 or float32, not {dtype!r}")
        names = label_classes(view, label_column)  # a bad label column fails before anything is decoded
        index = {n: i for i, n in enumerate(names)}
        raw = column_labels(view, label_column) if label_column else view.labels()
        labels = np.array([index.get(l, -1) if l is not None else -1 for l in raw], np.int64)
        source = pixels.cached_pixels(self._s, view, hw, workers, progress)[0] if cache else pixels.DecodedPixels(view, hw)
        return VersionImages(source, labels, names, view.data_ids, dtype)

    def loader(self, ref: str | int | Node, batch_size: int = 64, shuffle: bool = False,
               size: int | Sequence[int] | None = None, cache: bool = True, dtype: str = "uint8", num_workers: int = 0,
               drop_last: bool = False, seed: int | None = None, label_column: str | None = None,
               progress: ProgressLike | None = None):
        """A ``torch.utils.data.DataLoader`` yielding (images (B, 3, H, W), labels (B,)) batches of the
        version (see :meth:`torch_dataset`); consecutive samples of a batch are read from the cache without a copy."""
        from veml.versions.loader import make_loader

        ds = self.torch_dataset(ref, size=size, cache=cache, dtype=dtype, label_column=label_column, progress=progress)
        return make_loader(ds, batch_size, shuffle, num_workers, drop_last, seed)

    def diff(self, a: str | int, b: str | int) -> Diff:
        ia, ib = self.ids(self.get(a)), self.ids(self.get(b))
        return Diff(added=len(ib - ia), removed=len(ia - ib), common=len(ia & ib))

    # --- creating -----------------------------------------------------------------------------
    def import_(
        self,
        fmt: str,
        source: Path | str | Sequence[Path | str],
        name: str,
        role: str = "train",
        progress: ProgressLike | None = None,
        **options: Any,
    ) -> Node:
        self._check_new(name, role)
        batch = parse_sources(fmt, source, progress=progress, unlabeled=role == "unlabeled", **options)
        props = self._batch_props(batch, role)
        return self._commit_batch(batch, name, props, parents=[], base_samples=BitMap(), base_ann=BitMap())

    def add(
        self,
        base: str | int,
        fmt: str,
        source: Path | str | Sequence[Path | str],
        name: str,
        progress: ProgressLike | None = None,
        **options: Any,
    ) -> Node:
        parent = self.get(base)
        self._check_new(name, parent.props.get("role", "train"))
        batch = parse_sources(fmt, source, progress=progress, unlabeled=parent.props.get("role") == "unlabeled", **options)
        if batch.modality != parent.props.get("modality"):
            raise InvalidInput(f"cannot add {batch.modality} samples to {parent.props.get('modality')} version {parent.name!r}")
        props = self._batch_props(batch, parent.props.get("role", "train"))
        props = _union_props([parent.props, props])
        props["source"] = {"base": parent.id, **batch.source}
        return self._commit_batch(
            batch, name, props, parents=[(parent.id, "ADD_DATA", {"format": fmt})],
            base_samples=self.ids(parent), base_ann=self.annotation_ids(parent),
        )

    def filter(self, base: str | int, where: str, name: str, keep_annotations: str = "all") -> Node:
        if keep_annotations not in ("all", "matching"):
            raise InvalidInput("--keep-annotations must be 'all' or 'matching'")
        parent = self.get(base)
        self._check_new(name, parent.props.get("role", "train"))
        anns = self.annotations(parent)
        data_ids, ann_ids = query.run_filter(
            self.sample_metadata(parent), parent.props.get("columns", {}), anns, where
        )
        parent_ann = self.annotation_ids(parent)
        samples = from_array(data_ids) & self.ids(parent)  # a filter can only narrow its base
        if keep_annotations == "matching":
            annotations = from_array(ann_ids) & parent_ann
        else:
            annotations = BitMap()
            for table in anns.values():
                keep = np.isin(table["data_id"].to_numpy(), data_ids)
                annotations |= from_array(table["ann_id"].to_numpy()[keep])
        props = dict(parent.props)
        props.update(
            samples=len(samples), annotations=len(annotations),
            source={"base": parent.id, "where": where, "keep_annotations": keep_annotations},
        )
        return self._s.graph.record(
            KIND, name, props,
            parents=[(parent.id, "FILTER_DATA", {"where": where, "keep_annotations": keep_annotations})],
            idsets={"samples": samples, "annotations": annotations},
        )

    def select(self, base: str | int | Node, data_ids: Sequence[int] | np.ndarray, name: str, reason: str,
               keep_annotations: bool = True, role: str | None = None) -> Node:
        """A version of chosen samples of ``base`` (a hold-out slice, an active-learning pick).

        Recorded as a ``FILTER_DATA`` edge whose ``select`` property says why these samples;
        without ``keep_annotations`` the samples come without labels (what goes out for labelling).
        """
        parent = base if isinstance(base, Node) else self.get(base)
        role = role or parent.props.get("role", "train")
        self._check_new(name, role)
        wanted = from_array(np.asarray(data_ids, dtype=np.int64))
        samples = wanted & self.ids(parent)
        if len(samples) != len(wanted):
            raise InvalidInput(f"{len(wanted) - len(samples)} of the chosen samples are not in {parent.name!r}")
        annotations = BitMap()
        if keep_annotations:
            ids = to_numpy(samples)
            for table in self.annotations(parent).values():
                keep = np.isin(table["data_id"].to_numpy(), ids)
                annotations |= from_array(table["ann_id"].to_numpy()[keep])
        props = dict(parent.props)
        props.update(samples=len(samples), annotations=len(annotations), role=role,
                     source={"base": parent.id, "select": reason, "keep_annotations": keep_annotations})
        return self._s.graph.record(
            KIND, name, props, parents=[(parent.id, "FILTER_DATA", {"select": reason, "keep_annotations": keep_annotations})],
            idsets={"samples": samples, "annotations": annotations},
        )

    def merge(self, refs: Sequence[str | int], name: str) -> Node:
        if len(refs) < 2:
            raise InvalidInput("merge needs at least two versions")
        parents = [self.get(r) for r in refs]
        modalities = {p.props.get("modality") for p in parents}
        if len(modalities) > 1:
            raise InvalidInput(f"cannot merge versions of different modalities ({', '.join(sorted(map(str, modalities)))})")
        roles = {p.props.get("role") for p in parents}
        role = roles.pop() if len(roles) == 1 else "train"
        self._check_new(name, role)
        if len({p.id for p in parents}) != len(parents):
            raise InvalidInput("merge names the same version twice")
        samples, annotations = BitMap(), BitMap()
        for p in parents:
            samples |= self.ids(p)
            annotations |= self.annotation_ids(p)
        props = _union_props([p.props for p in parents])
        props.update(samples=len(samples), annotations=len(annotations), role=role, source={"merged": [p.id for p in parents]})
        return self._s.graph.record(
            KIND, name, props,
            parents=[(p.id, "MERGE_DATA", {}) for p in parents],
            idsets={"samples": samples, "annotations": annotations},
        )

    def update(self, base: str | int, coco: Path | str, name: str) -> Node:
        """Same samples, new annotations: images are matched to the base version by file name."""
        parent = self.get(base)
        if parent.props.get("modality") != "image":
            raise InvalidInput("update --coco applies to image versions")
        self._check_new(name, parent.props.get("role", "train"))
        coco = Path(coco)
        images, anns, cats = parse_coco_annotations(coco)
        meta = self.sample_metadata(parent)
        by_name = dict(zip(meta["file_name"].to_pylist(), meta["data_id"].to_pylist()))
        sizes = dict(zip(meta["data_id"].to_pylist(), zip(meta["width"].to_pylist(), meta["height"].to_pylist())))
        to_data: dict[int, int] = {}
        for image_id, im in images.items():
            if im["file_name"] not in by_name:
                raise InvalidInput(f"{coco}: image id {image_id} ({im['file_name']}) is not a sample of {parent.name!r}")
            to_data[image_id] = by_name[im["file_name"]]
            stored = sizes[to_data[image_id]]
            for dim, actual in (("width", stored[0]), ("height", stored[1])):
                if dim in im and im[dim] != actual:
                    raise InvalidInput(f"{coco}: image id {image_id} declares {dim} {im[dim]} but the stored sample has {actual}")
        check_boxes_within(coco, anns, {iid: sizes[did] for iid, did in to_data.items()})
        boxed = [a for a in anns if a.get("bbox") is not None]
        labelled = [a for a in anns if a.get("bbox") is None]
        tables = {}
        if boxed:
            tables["boxes"] = pa.table({
                "data_id": [to_data[a["image_id"]] for a in boxed],
                "category": [cats[a["category_id"]] for a in boxed],
                "bbox_x": [float(a["bbox"][0]) for a in boxed], "bbox_y": [float(a["bbox"][1]) for a in boxed],
                "bbox_w": [float(a["bbox"][2]) for a in boxed], "bbox_h": [float(a["bbox"][3]) for a in boxed],
                "area": [float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in boxed],
                "iscrowd": pa.array([int(a.get("iscrowd", 0)) for a in boxed], pa.int8()),
                "source_id": [a.get("id") for a in boxed],
            })
        if labelled:
            tables["labels"] = pa.table({
                "data_id": [to_data[a["image_id"]] for a in labelled],
                "category": [cats[a["category_id"]] for a in labelled],
                "value": [float("nan")] * len(labelled),
            })
        with self._reserving() as held:
            annotations = self._append_annotations(tables, held)
            props = dict(parent.props)
            props.update(
                annotations=len(annotations), annotation_tables=sorted(tables) or parent.props.get("annotation_tables", []),
                category_ids={n: c for c, n in cats.items()}, source={"base": parent.id, "format": "coco", "path": str(coco.resolve())},
            )
            return self._s.graph.record(
                KIND, name, props, parents=[(parent.id, "UPDATE_ANNOTATION", {"path": str(coco.resolve())})],
                idsets={"samples": self.ids(parent), "annotations": annotations}, allocations=held,
            )

    def prepare(self, base: str | int, name: str, steps: Sequence[Mapping[str, Any]]) -> Node:
        """Record preparation steps on a new version; rows are untouched, steps apply at checkout."""
        parent = self.get(base)
        self._check_new(name, parent.props.get("role", "train"))
        resolved = preparation.resolve_steps(steps, self.checkout(parent))
        props = dict(parent.props)
        props["preparation"] = [*parent.props.get("preparation", []), *resolved]
        props["source"] = {"base": parent.id, "prepared": True}
        return self._s.graph.record(
            KIND, name, props, parents=[(parent.id, "PREPARE_DATA", {"steps": resolved})],
            idsets={"samples": self.ids(parent), "annotations": self.annotation_ids(parent)},
        )

    def tag(self, ref: str | int, tag: str) -> Node:
        node = self._s.graph.resolve(ref)
        self._s.graph.tag(node.id, tag)
        return self._s.graph.get(node.id)

    def untag(self, tag: str) -> None:
        self._s.graph.untag(tag)

    def export(self, ref: str | int, fmt: str, out: Path | str) -> Path:
        node = self.get(ref)
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise InvalidInput(f"{out}: export target exists and is not a directory")
        if out.exists() and any(out.iterdir()):
            raise InvalidInput(f"{out}: export directory is not empty")
        view = self.checkout(node)
        if node.props.get("modality") != "image":
            raise InvalidInput(f"export --format {fmt} applies to image versions; this one holds {node.props.get('modality')}")
        samples = view.samples_table()
        anns = self.annotations(node)
        empty_boxes = SCHEMAS["boxes"].empty_table()
        empty_labels = SCHEMAS["labels"].empty_table()
        boxes, labels = anns.get("boxes", empty_boxes), anns.get("labels", empty_labels)
        cats, columns = node.props.get("category_ids", {}), node.props.get("columns", {})
        if fmt == "coco":
            return write_coco(out, samples, boxes, labels, cats, columns).parent
        if fmt == "images":
            return write_image_folder(out, samples, labels)
        if fmt == "yolo":
            return write_yolo(out, samples, boxes, labels, cats)
        if fmt == "voc":
            return write_voc(out, samples, boxes, labels)
        if fmt == "hf":
            return write_hf(out, samples, boxes, labels, cats, columns)
        if fmt == "bdd":
            return write_bdd(out, samples, boxes, labels, columns)
        raise InvalidInput(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")

    # --- internals ----------------------------------------------------------------------------
    def _check_new(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self._s.graph.check_new_name(name)

    def _batch_props(self, batch: ImportBatch, role: str) -> dict[str, Any]:
        assert batch.modality in MODALITIES
        props: dict[str, Any] = {
            "modality": batch.modality,
            "role": role,
            "columns": dict(batch.columns),
            "category_ids": dict(batch.category_ids),
            "annotation_tables": sorted(batch.annotations),
            "preparation": [],
            "source": dict(batch.source),
        }
        props.update(batch.extra_props)
        return props

    @contextlib.contextmanager
    def _reserving(self) -> Iterator[list[int]]:
        """Collects the id ranges a write reserves; should it fail before its version is recorded,
        they are given up at once (their rows become garbage for gc), so a long-lived process (the
        server) never pins the rows of a write it abandoned."""
        held: list[int] = []
        try:
            yield held
        except BaseException:
            with contextlib.suppress(Exception):
                self._s.graph.drop_allocations(held)
            raise

    def _append_annotations(self, tables: Mapping[str, pa.Table], held: list[int]) -> BitMap:
        """Append annotation tables that already carry ``data_id``; returns their new ann ids
        (the id range reserved for them is added to ``held``)."""
        total = sum(t.num_rows for t in tables.values())
        if total == 0:
            return BitMap()
        alloc, start = self._s.graph.allocate("ann", total)
        held.append(alloc)
        offset = start
        for name in sorted(tables):
            t = tables[name]
            t = t.append_column("ann_id", pa.array(np.arange(offset, offset + t.num_rows), pa.int64()))
            self._s.samples.append(name, t)
            offset += t.num_rows
        return BitMap(range(start, start + total))

    def _commit_batch(
        self, batch: ImportBatch, name: str, props: dict[str, Any], parents: list, base_samples: BitMap, base_ann: BitMap
    ) -> Node:
        n = batch.samples.num_rows
        with self._reserving() as held:
            alloc, start = self._s.graph.allocate("data", n)
            held.append(alloc)
            data_ids = np.arange(start, start + n, dtype=np.int64)
            rows, index, new = self._by_content(batch.samples.add_column(0, "data_id", pa.array(data_ids)))
            self._s.samples.append("digests", index)
            self._s.samples.append("samples", rows)
            props["source"] = {**props.get("source", {}), "new_samples": new}
            tables = {}
            for table, rows in batch.annotations.items():
                did = data_ids[rows["sample_index"].to_numpy()]
                tables[table] = rows.drop_columns(["sample_index"]).append_column("data_id", pa.array(did))
            ann_ids = self._append_annotations(tables, held)
            for prop, blob in batch.artifacts.items():
                props[prop] = self._s.artifacts.put_bytes(blob)
            samples = base_samples | BitMap(range(start, start + n))
            annotations = base_ann | ann_ids
            props.update(samples=len(samples), annotations=len(annotations))
            return self._s.graph.record(
                KIND, name, props, parents=parents, idsets={"samples": samples, "annotations": annotations},
                allocations=held,
            )

    def _by_content(self, rows: pa.Table) -> tuple[pa.Table, pa.Table, int]:
        """Store each distinct payload once: a sample whose bytes a recorded version already holds, or
        an earlier row of this batch, gets a null payload (reads fill it by digest, DIGESTS in schemas).

        Returns the rows to append, the content index entries of the rows that keep their bytes, and how
        many samples are new to the store: those keeping their bytes, and table rows (their values are
        the sample, stored with every import: never content-addressed).
        Only rows of recorded versions are reused: versions are never deleted, so gc never reclaims
        them, whereas rows of an import still running or killed may be reclaimed at any time.
        """
        modality, hashes = rows["modality"].to_pylist(), rows["content_hash"].to_pylist()
        has_bytes = pc.is_valid(rows["payload"]).to_pylist()
        candidates = [h for h, m, b in zip(hashes, modality, has_bytes) if b and h and m != "table"]
        found = self._s.samples.holders(sorted(set(candidates)))
        recorded = BitMap()
        for _, bm, _ in self._s.graph.iter_idsets("samples") if found.num_rows else ():
            recorded |= bm
        held = {h for did, h in zip(found["data_id"].to_pylist(), found["content_hash"].to_pylist()) if did in recorded}
        keep, owners = [], []
        for i, (h, m, b) in enumerate(zip(hashes, modality, has_bytes)):
            content = b and h and m != "table"
            keep.append(not content or h not in held)
            if content and h not in held:
                held.add(h)
                owners.append(i)
        payload = pc.if_else(pa.array(keep), rows["payload"], pa.nulls(rows.num_rows, pa.large_binary()))
        rows = rows.set_column(rows.schema.get_field_index("payload"), "payload", payload)
        index = rows.select(["data_id", "content_hash"]).take(pa.array(owners, pa.int64()))
        return rows, index, len(owners) + modality.count("table")


def _read_at_once(batch: ImportBatch, progress: ProgressLike | None) -> ImportBatch:
    """A table or series file is read whole (Arrow): its rows or windows are reported done together."""
    bar = as_progress(progress)
    bar.add_total(batch.samples.num_rows)
    bar.advance(batch.samples.num_rows)
    return batch


def parse_sources(fmt: str, sources: Path | str | Sequence[Path | str], progress: ProgressLike | None = None,
                  unlabeled: bool = False, **options: Any) -> ImportBatch:
    """``unlabeled``: the version's role is unlabeled, so an image folder may be flat (no class sub-folders)."""
    paths = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(p) for p in sources]
    if not paths:
        raise InvalidInput("no source given")
    batches = [parse_source(fmt, p, progress=progress, unlabeled=unlabeled, **options) for p in paths]
    return concat_batches(batches)


def parse_source(fmt: str, source: Path, progress: ProgressLike | None = None, unlabeled: bool = False,
                 **options: Any) -> ImportBatch:
    """One entry point for every import format (``veml data import FORMAT …``).

    Read limits come from ``options`` (``max_file_mb``, ``max_pixels``, ``follow_symlinks``,
    ``decode_check``), else from the environment, else the defaults (:mod:`veml.formats.paths`).
    """
    policy = ReadPolicy.from_options(options)
    if fmt == "coco":
        images = options.get("images")
        if images is None:
            raise InvalidInput("coco import needs --images DIR")
        return parse_coco(source, Path(images), progress=progress, policy=policy)
    if fmt == "images":
        return parse_image_folder(source, progress=progress, policy=policy, unlabeled=unlabeled)
    if fmt == "bdd":
        images = options.get("images")
        if images is None:
            raise InvalidInput("bdd import needs --images DIR")
        return parse_bdd(source, Path(images), progress=progress, policy=policy)
    if fmt in _FOLDER_PARSERS:
        return _FOLDER_PARSERS[fmt](source, progress=progress, policy=policy)
    if fmt == "table":
        return _read_at_once(parse_table(source, label=options.get("label"), policy=policy), progress)
    if fmt == "timeseries":
        adj = options.get("adjacency")
        kwargs = {k: options[k] for k in ("window", "missing_value") if options.get(k) is not None}
        return _read_at_once(parse_timeseries(source, adjacency=Path(adj) if adj else None, policy=policy, **kwargs),
                             progress)
    raise InvalidInput(f"unknown import format {fmt!r}: use one of {', '.join(IMPORT_FORMATS)}")


def _union_props(props_list: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Props of a union of versions: first one's fields, columns/categories/tables combined."""
    out = dict(props_list[0])
    out["columns"] = merge_columns(*(p.get("columns", {}) for p in props_list))
    cats: dict[str, int] = {}
    for p in props_list:
        for cname, cid in p.get("category_ids", {}).items():
            cats.setdefault(cname, cid)
    out["category_ids"] = cats
    out["annotation_tables"] = sorted({t for p in props_list for t in p.get("annotation_tables", [])})
    preps = {json.dumps(p.get("preparation", []), sort_keys=True) for p in props_list}
    out["preparation"] = props_list[0].get("preparation", []) if len(preps) == 1 else []
    return out


__all__ = ["DataVersions", "Diff", "parse_source", "parse_sources", "IMPORT_FORMATS", "EXPORT_FORMATS", "ANNOTATION_TABLES"]
