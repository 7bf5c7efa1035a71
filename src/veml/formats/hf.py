"""Hugging Face ``datasets`` saved with ``save_to_disk``, read locally with ``load_from_disk`` (extra ``[hf]``).

Two layouts: image classification (an ``Image`` column and a ``ClassLabel`` column, ``label`` by
preference) and detection (an ``objects`` column holding ``bbox`` lists, COCO's ``[x, y, w, h]`` in
pixels, and ``category``, class indices or names).  Other plain columns (numbers, strings, booleans)
become per-sample columns; ``width``/``height`` columns are checked against the images.  A
``DatasetDict`` is imported whole, its split names in a ``split`` column, and exported back as one.

The directory is untrusted: the files its ``state.json``/``dataset_dict.json`` name must lie inside
it, and an image stored as a path rather than bytes resolves under it (``..`` and absolute refused).
Image bytes are kept exactly as stored, so digests survive a round trip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from veml.errors import InvalidInput, MissingExtra
from veml.formats.batch import BUILTIN_COLUMNS, ImportBatch
from veml.formats.detection import Box, ImageEntry, build_image_batch, category_order, export_rows, number
from veml.formats.paths import ReadPolicy, read_regular, resolve_under
from veml.progress import ProgressLike

_SCALARS = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
            "float64", "string", "large_string"}
_TO_HF = {"BIGINT": "int64", "DOUBLE": "float64", "BOOLEAN": "bool", "VARCHAR": "string", "JSON": "string"}


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtra("datasets", "hf") from exc
    datasets.disable_progress_bars()
    return datasets


def parse_hf(root: Path, progress: ProgressLike | None = None, policy: ReadPolicy | None = None) -> ImportBatch:
    root = Path(root)
    policy = policy or ReadPolicy.from_options()
    if not root.is_dir():
        raise InvalidInput(f"{root}: directory not found")
    splits = _check_layout(root, policy)
    hf = _datasets()
    try:
        loaded = hf.load_from_disk(str(root))
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{root}: not a data set saved with save_to_disk ({type(exc).__name__}: {exc})") from None
    parts = [(None, loaded)] if splits is None else [(s, loaded[s]) for s in splits]
    entries, boxes, labels, names = [], [], [], {}
    for split, ds in parts:
        _read_split(root, split, ds, policy, entries, boxes, labels, names, several=len(parts) > 1)
    for b in boxes:  # categories given as strings
        names.setdefault(b.category, len(names))
    return build_image_batch("hf", entries, boxes, labels, list(names), {"path": str(root.resolve())}, policy, progress)


def _check_layout(root: Path, policy: ReadPolicy) -> list[str] | None:
    """The split names of a ``DatasetDict`` (None for one ``Dataset``), every file named checked to lie inside."""
    listing = root / "dataset_dict.json"
    if listing.exists():
        doc = _json(listing, policy)
        splits = doc.get("splits") if isinstance(doc, dict) else None
        if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
            raise InvalidInput(f"{listing}: 'splits' must be a list of split names")
        for s in splits:
            _check_state(resolve_under(root, s, f"{listing}: split", policy), root, policy)
        return splits
    _check_state(root, root, policy)
    return None


def _check_state(d: Path, root: Path, policy: ReadPolicy) -> None:
    state = d / "state.json"
    if not state.exists():
        raise InvalidInput(f"{d}: no state.json: not a data set saved with save_to_disk")
    doc = _json(state, policy)
    files = doc.get("_data_files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files):
        raise InvalidInput(f"{state}: '_data_files' must be a list of {{filename}}")
    for f in files:
        resolve_under(d, f["filename"], f"{state}: _data_files", policy)


def _json(path: Path, policy: ReadPolicy) -> Any:
    try:
        return json.loads(read_regular(path, str(path), policy).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{path}: malformed JSON ({exc})") from None


def _read_split(root: Path, split: str | None, ds: Any, policy: ReadPolicy, entries: list, boxes: list,
                labels: list, names: dict, several: bool) -> None:
    hf = _datasets()
    where = f"{root}" + (f" [{split}]" if split else "")
    feats = ds.features
    images = [k for k, f in feats.items() if isinstance(f, hf.Image)]
    if not images:
        raise InvalidInput(f"{where}: no Image column (features: {', '.join(feats)})")
    image_col = "image" if "image" in images else images[0]
    class_cols = [k for k, f in feats.items() if isinstance(f, hf.ClassLabel)]
    label_col = next((k for k in ("label", "labels") if k in class_cols), class_cols[0] if class_cols else None)
    objects_col = "objects" if "objects" in feats else None
    if label_col is None and objects_col is None:
        raise InvalidInput(f"{where}: neither a ClassLabel column (classification) nor an 'objects' column (detection)")
    plain = [k for k, f in feats.items() if isinstance(f, hf.Value) and f.dtype in _SCALARS
             and k not in (label_col, "width", "height") and k not in BUILTIN_COLUMNS]
    class_names = feats[label_col].names if label_col else []
    obj_names = _object_names(feats[objects_col], hf) if objects_col else None
    for n in [*class_names, *(obj_names or [])]:
        names.setdefault(n, len(names))
    table = ds.with_format("arrow")[:]
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        rw = f"{where}: row {i}"
        img = row[image_col] or {}
        meta = {k: row[k] for k in plain}
        if several:
            meta["split"] = split
        size = (row["width"], row["height"]) if isinstance(row.get("width"), int) and isinstance(row.get("height"), int) else None
        name = img.get("path") or f"{split + '/' if split else ''}{i}.img"
        if img.get("bytes") is not None:
            entries.append(ImageEntry(name, f"{rw} ({image_col})", payload=img["bytes"], meta=meta, size=size))
        elif img.get("path"):
            entries.append(ImageEntry(name, f"{rw} ({image_col})", meta=meta, size=size,
                                      path=resolve_under(root, img["path"], f"{rw}.{image_col}.path", policy)))
        else:
            raise InvalidInput(f"{rw}: {image_col} holds neither bytes nor a path")
        sample = len(entries) - 1
        if label_col is not None and row[label_col] is not None and row[label_col] >= 0:
            labels.append((sample, class_names[row[label_col]]))
        if objects_col is not None:
            boxes += _boxes(row[objects_col], obj_names, sample, f"{rw}.{objects_col}")


def _object_names(feature: Any, hf: Any) -> list[str] | None:
    """The category names of a detection column, from its ClassLabel (None: categories are strings)."""
    inner = feature.feature if isinstance(feature, (hf.List, hf.Sequence)) else feature
    cat = inner.get("category") if isinstance(inner, dict) else None
    if isinstance(cat, (hf.List, hf.Sequence)):
        cat = cat.feature
    return cat.names if isinstance(cat, hf.ClassLabel) else None


def _boxes(objects: Any, names: list[str] | None, sample: int, where: str) -> list[Box]:
    """An ``objects`` value as dict-of-lists (``Sequence({...})``) or list-of-dicts (``List({...})``)."""
    if isinstance(objects, dict):
        bboxes, cats = objects.get("bbox") or [], objects.get("category") or []
        if len(bboxes) != len(cats):
            raise InvalidInput(f"{where}: {len(bboxes)} bbox but {len(cats)} category values")
        objects = [{"bbox": b, "category": c} for b, c in zip(bboxes, cats)]
    if not isinstance(objects, list):
        raise InvalidInput(f"{where}: expected objects with 'bbox' and 'category'")
    out = []
    for j, obj in enumerate(objects):
        ow = f"{where}[{j}]"
        bbox, cat = obj.get("bbox"), obj.get("category")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise InvalidInput(f"{ow}.bbox must be four numbers [x, y, w, h]")
        x, y, w, h = (number(v, f"{ow}.bbox") for v in bbox)
        if names is not None:
            if not isinstance(cat, int) or not 0 <= cat < len(names):
                raise InvalidInput(f"{ow}.category {cat!r} is not a class index (0..{len(names) - 1})")
            cat = names[cat]
        elif not isinstance(cat, str) or not cat:
            raise InvalidInput(f"{ow}.category must be a class name")
        out.append(Box(sample, cat, x, y, w, h, ow))
    return out


def write_hf(out: Path, samples: pa.Table, boxes: pa.Table, labels: pa.Table, category_ids: dict[str, int],
             columns: dict[str, str]) -> Path:
    """A ``save_to_disk`` directory: image bytes as stored, ``label`` (ClassLabel, -1 for none) when the
    version has labels, ``objects`` when it has boxes, its columns; a ``DatasetDict`` when it has a ``split``."""
    hf = _datasets()
    if samples.num_rows == 0:
        raise InvalidInput("this version has no samples to export")
    names = category_order(category_ids, boxes, labels)
    index = {n: i for i, n in enumerate(names)}
    rows = export_rows(samples, boxes, labels)
    splits = "split" in columns and all(isinstance(r.meta.get("split"), str) and r.meta["split"] for r in rows)
    meta_cols = [c for c in columns if c != "split" or not splits]
    feats: dict[str, Any] = {"image": hf.Image(), "width": hf.Value("int32"), "height": hf.Value("int32")}
    feats.update({c: hf.Value(_TO_HF.get(columns[c], "string")) for c in meta_cols})
    if labels.num_rows:
        feats["label"] = hf.ClassLabel(names=names)
    if boxes.num_rows:
        feats["objects"] = hf.List({"bbox": hf.List(hf.Value("float64"), length=4), "category": hf.ClassLabel(names=names)})
    by_split: dict[str | None, dict[str, list]] = {}
    for r in rows:
        if len(r.labels) > 1:
            raise InvalidInput(f"sample {r.data_id} has {len(r.labels)} class labels: the classification layout holds one")
        split = r.meta["split"] if splits else None
        cols = by_split.setdefault(split, {k: [] for k in feats})
        cols["image"].append({"bytes": r.payload, "path": r.name})
        cols["width"].append(r.width)
        cols["height"].append(r.height)
        for c in meta_cols:
            v = r.meta.get(c)
            cols[c].append(json.dumps(v) if columns[c] == "JSON" and v is not None else v)
        if "label" in feats:
            cols["label"].append(index[r.labels[0]] if r.labels else -1)
        if "objects" in feats:
            cols["objects"].append([{"bbox": [b["bbox_x"], b["bbox_y"], b["bbox_w"], b["bbox_h"]],
                                     "category": index[b["category"]]} for b in r.boxes])
    features = hf.Features(feats)
    made = {s: hf.Dataset.from_dict(cols, features=features) for s, cols in by_split.items()}
    if splits:
        hf.DatasetDict(made).save_to_disk(str(out))
    else:
        made[None].save_to_disk(str(out))
    return out
