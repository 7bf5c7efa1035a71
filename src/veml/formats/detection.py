"""What the image-with-boxes formats (YOLO, VOC, BDD100K, Hugging Face) share, on the way in and out.

A parser reads its label files into :class:`ImageEntry` and :class:`Box` records, checking names
and numbers, then :func:`build_image_batch` reads and checks every image, checks every box against
its image, and builds the same tables a COCO import yields (samples, ``boxes``, ``labels``), so
every format lands in one representation.  Nothing is written before all of it passed.

On the way out, :func:`export_rows` gives each sample a safe, unique file name and its boxes and
labels, for the writers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import pyarrow as pa

from veml.errors import InvalidInput
from veml.formats.batch import SAMPLE_SCHEMA, ImportBatch, annotation_schema, check_column_names, sha256, sql_type, to_json_meta
from veml.formats.images import ImageFile, check_image, read_image
from veml.formats.paths import ReadPolicy
from veml.progress import ProgressLike, as_progress

BOX_TOLERANCE = 1.0  # pixels a box may overhang its image (rounding in real exports), as for COCO

@dataclass(frozen=True)
class ImageEntry:
    """One image to import: a checked path to read (or its bytes, when embedded), its stored name."""

    name: str
    where: str  # names the entry in errors: "labels.json: frame 3"
    path: Path | None = None
    payload: bytes | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # (width, height) the label file declares, checked against the image


@dataclass(frozen=True)
class Box:
    """A box in pixels (``normalized``: fractions of the image, YOLO's) on image ``sample``."""

    sample: int
    category: str
    x: float
    y: float
    w: float
    h: float
    where: str
    normalized: bool = False


def number(value: Any, where: str) -> float:
    """A finite number from a label file (text or JSON); anything else is one clear error."""
    try:
        out = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: {value!r} is not a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise InvalidInput(f"{where}: {value!r} is not a finite number")
    return out


def build_image_batch(
    fmt: str,
    entries: Sequence[ImageEntry],
    boxes: Sequence[Box],
    labels: Sequence[tuple[int, str]],
    categories: Sequence[str],
    source: Mapping[str, Any],
    policy: ReadPolicy,
    progress: ProgressLike | None = None,
) -> ImportBatch:
    if not entries:
        raise InvalidInput(f"{source.get('path')}: no images")
    meta_keys = sorted({k for e in entries for k in e.meta})
    check_column_names(meta_keys, f"{source.get('path')}: per-image attributes")

    def load(e: ImageEntry) -> ImageFile:
        f = check_image(e.payload, e.where, policy) if e.payload is not None else read_image(e.path, e.where, policy)
        if e.size is not None and e.size != (f.width, f.height):
            raise InvalidInput(f"{e.where}: declares size {e.size[0]}x{e.size[1]} but the image is {f.width}x{f.height}")
        return f

    bar = as_progress(progress)
    bar.add_total(len(entries))
    files: list[ImageFile] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in pool.map(load, entries):
            files.append(f)
            bar.advance(1)
    rows = [_pixel_box(b, files[b.sample]) for b in boxes]
    samples = image_samples(files, [e.name for e in entries], [{k: e.meta.get(k) for k in meta_keys} for e in entries])
    annotations: dict[str, pa.Table] = {}
    if rows:
        annotations["boxes"] = pa.table(
            {
                "sample_index": [b.sample for b in boxes],
                "category": [b.category for b in boxes],
                "bbox_x": [r[0] for r in rows],
                "bbox_y": [r[1] for r in rows],
                "bbox_w": [r[2] for r in rows],
                "bbox_h": [r[3] for r in rows],
                "area": [r[2] * r[3] for r in rows],
                "iscrowd": pa.array([0] * len(rows), pa.int8()),
                "source_id": pa.nulls(len(rows), pa.int64()),
            },
            schema=annotation_schema("boxes"),
        )
    if labels:
        annotations["labels"] = pa.table(
            {"sample_index": [i for i, _ in labels], "category": [c for _, c in labels],
             "value": [float("nan")] * len(labels)},
            schema=annotation_schema("labels"),
        )
    return ImportBatch(
        modality="image",
        samples=samples,
        annotations=annotations,
        columns={k: sql_type(e.meta.get(k) for e in entries) for k in meta_keys},
        category_ids={name: i + 1 for i, name in enumerate(categories)},
        source={"format": fmt, **source},
    )


def image_samples(files: Sequence[ImageFile], names: Sequence[str], metas: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The sample rows of checked images (bytes as read, sha256, size), every image format's one way."""
    return pa.table(
        {
            "modality": ["image"] * len(files),
            "format": [f.format for f in files],
            "payload": pa.array([f.payload for f in files], pa.large_binary()),
            "width": pa.array([f.width for f in files], pa.int32()),
            "height": pa.array([f.height for f in files], pa.int32()),
            "channels": pa.array([f.channels for f in files], pa.int32()),
            "shape": pa.array([[f.height, f.width, f.channels] for f in files], pa.list_(pa.int32())),
            "file_name": list(names),
            "content_hash": [sha256(f.payload) for f in files],
            "meta": [to_json_meta(m) for m in metas],
        },
        schema=SAMPLE_SCHEMA,
    )


def _pixel_box(b: Box, f: ImageFile) -> tuple[float, float, float, float]:
    x, y, w, h = (b.x * f.width, b.y * f.height, b.w * f.width, b.h * f.height) if b.normalized else (b.x, b.y, b.w, b.h)
    if w <= 0 or h <= 0:
        raise InvalidInput(f"{b.where}: box has non-positive width or height")
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > f.width + t or y + h > f.height + t:
        raise InvalidInput(f"{b.where}: box [{x:g}, {y:g}, {w:g}, {h:g}] (x, y, w, h) lies outside its image ({f.width}x{f.height})")
    return x, y, w, h


# --- export -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRow:
    data_id: int
    name: str  # a safe relative path, unique in the export
    payload: bytes
    width: int
    height: int
    meta: dict[str, Any]
    boxes: list[dict[str, Any]]
    labels: list[str]


def export_rows(samples: pa.Table, boxes: pa.Table, labels: pa.Table, flat: bool = False) -> list[ExportRow]:
    """Each sample with a unique safe name (``flat``: no sub-folders), its boxes and its labels."""
    import json

    by_box: dict[int, list[dict]] = {}
    for a in boxes.to_pylist():
        by_box.setdefault(a["data_id"], []).append(a)
    by_label: dict[int, list[str]] = {}
    for a in labels.to_pylist():
        by_label.setdefault(a["data_id"], []).append(a["category"])
    out, seen = [], set()
    for row in samples.select(["data_id", "file_name", "width", "height", "meta", "payload"]).to_pylist():
        name = safe_relative(row["file_name"], row["data_id"])
        if flat:
            name = name.replace("/", "_")
        if name in seen:  # two versions merged may hold the same file name
            name = str(PurePosixPath(name).with_name(f"{row['data_id']}_{PurePosixPath(name).name}"))
        seen.add(name)
        out.append(ExportRow(int(row["data_id"]), name, row["payload"], row["width"], row["height"],
                             json.loads(row["meta"] or "{}"), by_box.get(row["data_id"], []), by_label.get(row["data_id"], [])))
    return out


def safe_relative(name: str, data_id: int) -> str:
    """A stored file name as a relative POSIX path under an export directory (never absolute, never ``..``)."""
    parts = [p for p in PurePosixPath(str(name).replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    return "/".join(parts) if parts else f"{data_id}.img"


def write_payloads(root: Path, rows: Sequence[ExportRow]) -> None:
    for r in rows:
        target = root / r.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(r.payload)


def category_order(category_ids: Mapping[str, int], *tables: pa.Table) -> list[str]:
    """Category names in id order, then any name only the annotations use (sorted)."""
    names = [n for n, _ in sorted(category_ids.items(), key=lambda kv: kv[1])]
    extra = sorted({c for t in tables for c in t["category"].to_pylist()} - set(names))
    return names + extra
