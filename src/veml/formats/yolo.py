"""YOLO detection data sets: ``images/`` + ``labels/*.txt`` (``class cx cy w h``, fractions of the image).

Class names come from ``data.yaml`` (``names``: a list or an ``{index: name}`` map) or ``classes.txt``
(one name a line).  ``data.yaml``'s ``train``/``val``/``test`` entries, when present, name image
folders (or ``.txt`` lists of images) relative to the data set's directory and become a ``split``
column; otherwise every image under ``images/`` is read.  An image's labels are the ``.txt`` file at
the same place under ``labels/``; an image without one has no boxes (YOLO's background image).
Names that leave the directory (``..``, absolute) are refused, as everywhere (:mod:`paths`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import yaml

from veml.errors import InvalidInput
from veml.formats.batch import ImportBatch
from veml.formats.detection import Box, ExportRow, ImageEntry, build_image_batch, category_order, export_rows, number, write_payloads
from veml.formats.images import IMAGE_SUFFIXES
from veml.formats.paths import ReadPolicy, read_regular, resolve_under, walk_files
from veml.progress import ProgressLike

SPLITS = ("train", "val", "test")


def parse_yolo(root: Path, progress: ProgressLike | None = None, policy: ReadPolicy | None = None) -> ImportBatch:
    root = Path(root)
    policy = policy or ReadPolicy.from_options()
    if not root.is_dir():
        raise InvalidInput(f"{root}: directory not found")
    config = _config(root, policy)
    names = _names(root, config, policy)
    images = _image_list(root, config, policy)
    several = len({split for _, split in images}) > 1  # one split is no information: no column
    entries, boxes = [], []
    for rel, split in images:
        meta = {"split": split} if several else {}
        entries.append(ImageEntry(rel, f"{root / rel}", path=resolve_under(root, rel, f"{root}: {rel}", policy), meta=meta))
        label = _label_path(rel)
        if label is None:
            continue
        path = resolve_under(root, label, f"{root}: {label}", policy)
        if path.exists():
            boxes += _read_labels(path, label, len(entries) - 1, names, policy)
    return build_image_batch("yolo", entries, boxes, [], names, {"path": str(root.resolve())}, policy, progress)


def _text(path: Path, where: str, policy: ReadPolicy) -> str:
    try:
        return read_regular(path, where, policy).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{where}: not UTF-8 text ({exc.reason})") from None


def _config(root: Path, policy: ReadPolicy) -> dict[str, Any]:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        path = root / name
        if path.exists():
            try:
                doc = yaml.safe_load(_text(path, str(path), policy))
            except yaml.YAMLError as exc:
                raise InvalidInput(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
            if not isinstance(doc, dict):
                raise InvalidInput(f"{path}: expected a mapping with 'names'")
            return {**doc, "_file": str(path)}
    return {}


def _names(root: Path, config: dict[str, Any], policy: ReadPolicy) -> list[str]:
    where = config.get("_file")
    names = config.get("names")
    if names is None:
        path = root / "classes.txt"
        if not path.exists():
            raise InvalidInput(f"{root}: no class names: expected data.yaml with 'names' or classes.txt")
        names = [line.strip() for line in _text(path, str(path), policy).splitlines() if line.strip()]
        where = str(path)
    if isinstance(names, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            raise InvalidInput(f"{where}: 'names' keys must be the class indices 0..{len(names) - 1}, "
                               f"found {[k for k in names][:5]}")
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise InvalidInput(f"{where}: 'names' keys must be the class indices 0..{len(keys) - 1}, found {keys[:5]}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidInput(f"{where}: 'names' must be a non-empty list of class names")
    if len(set(names)) != len(names):
        raise InvalidInput(f"{where}: duplicate class names")
    return names


def _image_list(root: Path, config: dict[str, Any], policy: ReadPolicy) -> list[tuple[str, str | None]]:
    """(path relative to root, split) of every image, in a stable order."""
    splits = [(s, config[s]) for s in SPLITS if isinstance(config.get(s), str)]
    where = config.get("_file", str(root))
    if not splits:
        if not (root / "images").is_dir():
            raise InvalidInput(f"{root}: no images/ folder")
        splits = [(None, "images")]
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for split, name in splits:
        target = resolve_under(root, name, f"{where}: {split or 'images'}", policy)
        if target.is_dir():
            rels = [str(p.relative_to(root).as_posix()) for p in walk_files(target, root, policy)
                    if p.suffix.lower() in IMAGE_SUFFIXES]
        elif target.exists():  # a .txt list of image paths, relative to root
            lines = [ln.strip() for ln in _text(target, str(target), policy).splitlines() if ln.strip()]
            rels = [str(PurePosixPath(ln).as_posix()).removeprefix("./") for ln in lines]
            for n, rel in enumerate(rels, 1):
                resolve_under(root, rel, f"{target}: line {n}", policy)
        else:
            raise InvalidInput(f"{where}: {split or 'images'}: {name!r} not found under {root}")
        for rel in rels:
            if rel not in seen:
                seen.add(rel)
                out.append((rel, split))
    if not out:
        raise InvalidInput(f"{root}: no images found")
    return out


def _label_path(rel: str) -> str | None:
    """``images/a/b.jpg`` -> ``labels/a/b.txt`` (the last ``images`` folder on the path, YOLO's rule)."""
    parts = list(PurePosixPath(rel).parts)
    if "images" not in parts[:-1]:
        return None
    i = len(parts) - 2 - parts[:-1][::-1].index("images")
    parts[i] = "labels"
    return str(PurePosixPath(*parts).with_suffix(".txt"))


def _read_labels(path: Path, label: str, sample: int, names: list[str], policy: ReadPolicy) -> list[Box]:
    boxes = []
    for n, line in enumerate(_text(path, label, policy).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {n}"
        if len(fields) != 5:
            raise InvalidInput(f"{where}: expected 'class cx cy w h' (5 fields), found {len(fields)}"
                               + (" (segmentation polygons are not supported)" if len(fields) > 5 else ""))
        if not fields[0].isdigit() or int(fields[0]) >= len(names):
            raise InvalidInput(f"{where}: class {fields[0]!r} is not an index into the {len(names)} class names")
        cx, cy, w, h = (number(v, where) for v in fields[1:])
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            raise InvalidInput(f"{where}: values must be fractions of the image in [0, 1], found {' '.join(fields[1:])}")
        boxes.append(Box(sample, names[int(fields[0])], cx - w / 2, cy - h / 2, w, h, where, normalized=True))
    return boxes


def write_yolo(out: Path, samples: pa.Table, boxes: pa.Table, labels: pa.Table, category_ids: dict[str, int]) -> Path:
    """``images/``, ``labels/*.txt`` (one per image, empty for an image without boxes), ``data.yaml``, ``classes.txt``."""
    if boxes.num_rows == 0 and labels.num_rows:
        raise InvalidInput("this version has class labels but no boxes: export it as images or hf instead")
    names = category_order(category_ids, boxes)
    index = {n: i for i, n in enumerate(names)}
    rows = [replace(r, name=_export_name(r)) for r in export_rows(samples, boxes, labels)]
    write_payloads(out, rows)
    for r in rows:
        lines = [
            f"{index[b['category']]} {(b['bbox_x'] + b['bbox_w'] / 2) / r.width!r} {(b['bbox_y'] + b['bbox_h'] / 2) / r.height!r} "
            f"{b['bbox_w'] / r.width!r} {b['bbox_h'] / r.height!r}"
            for b in r.boxes
        ]
        target = out / _label_path(r.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines))
    splits = sorted({r.meta["split"] for r in rows if r.meta.get("split") in SPLITS}, key=SPLITS.index)
    config = {s: f"images/{s}" for s in splits} or {"train": "images"}
    (out / "data.yaml").write_text(yaml.safe_dump({**config, "names": dict(enumerate(names))}, sort_keys=False))
    (out / "classes.txt").write_text("".join(n + "\n" for n in names))
    return out


def _export_name(r: ExportRow) -> str:
    """``images/[split/]name``: a name YOLO imported keeps its place under ``images/``."""
    name = r.name.removeprefix("images/")
    split = r.meta.get("split")
    if split in SPLITS and not name.startswith(f"{split}/"):
        name = f"{split}/{name}"
    return f"images/{name}"
