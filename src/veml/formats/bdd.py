"""BDD100K detection labels: one JSON list of frames (or ``{"frames": [...]}``, Scalabel's form).

A frame is ``{"name": "b1c66a42-6f7d68ca.jpg", "attributes": {"weather": ..., "scene": ...,
"timeofday": ...}, "labels": [{"category": "car", "box2d": {"x1", "y1", "x2", "y2"}}, ...]}``.  Frame
attributes become per-sample columns (filterable: ``--where "weather = 'rainy'"``); a ``box2d``
becomes a box ``[x1, y1, x2 - x1, y2 - y1]``.  Labels without a ``box2d`` (lane and drivable-area
polygons) are not boxes: they are skipped and counted (``skipped_labels`` in the version's source).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from veml.errors import InvalidInput
from veml.formats.batch import ImportBatch
from veml.formats.detection import Box, ImageEntry, build_image_batch, export_rows, number, write_payloads
from veml.formats.paths import ReadPolicy, read_regular, resolve_under
from veml.progress import ProgressLike

_SCALAR = (str, int, float, bool, type(None))


def parse_bdd(labels_path: Path, images_dir: Path, progress: ProgressLike | None = None,
              policy: ReadPolicy | None = None) -> ImportBatch:
    labels_path, images_dir = Path(labels_path), Path(images_dir)
    policy = policy or ReadPolicy.from_options()
    if not images_dir.is_dir():
        raise InvalidInput(f"{images_dir}: images directory not found")
    frames = _load(labels_path, policy)
    entries, boxes, names, skipped, seen = [], [], {}, 0, set()
    for i, f in enumerate(frames):
        where = f"{labels_path}: frames[{i}]"
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise InvalidInput(f"{where}: a frame is an object with a non-empty string 'name'")
        if f["name"] in seen:
            raise InvalidInput(f"{where}: duplicate frame name {f['name']!r}")
        seen.add(f["name"])
        attrs = f.get("attributes") or {}
        if not isinstance(attrs, dict) or not all(isinstance(v, _SCALAR) for v in attrs.values()):
            raise InvalidInput(f"{where}.attributes must be an object of plain values (weather, scene, timeofday)")
        entries.append(ImageEntry(f["name"], f"{where} ({f['name']!r})", meta=attrs,
                                  path=resolve_under(images_dir, f["name"], f"{where}.name", policy)))
        labels = f.get("labels") or []
        if not isinstance(labels, list):
            raise InvalidInput(f"{where}.labels must be a list")
        for j, lab in enumerate(labels):
            lw = f"{where}.labels[{j}]"
            if not isinstance(lab, dict) or not isinstance(lab.get("category"), str) or not lab["category"]:
                raise InvalidInput(f"{lw}: a label is an object with a string 'category'")
            box = lab.get("box2d")
            if box is None:
                skipped += 1
                continue
            if not isinstance(box, dict):
                raise InvalidInput(f"{lw}.box2d must be an object {{x1, y1, x2, y2}}")
            x1, y1, x2, y2 = (number(box.get(k), f"{lw}.box2d.{k}") for k in ("x1", "y1", "x2", "y2"))
            names.setdefault(lab["category"], len(names))
            boxes.append(Box(len(entries) - 1, lab["category"], x1, y1, x2 - x1, y2 - y1, lw))
    source = {"path": str(labels_path.resolve()), "images": str(images_dir.resolve()), "skipped_labels": skipped}
    return build_image_batch("bdd", entries, boxes, [], list(names), source, policy, progress)


def _load(path: Path, policy: ReadPolicy) -> list[Any]:
    raw = read_regular(path, str(path), policy)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 ({exc.reason})") from None
    except RecursionError:
        raise InvalidInput(f"{path}: malformed JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if isinstance(doc, dict) and isinstance(doc.get("frames"), list):
        doc = doc["frames"]
    if not isinstance(doc, list):
        raise InvalidInput(f"{path}: BDD100K labels are a JSON list of frames (or an object with 'frames')")
    if not doc:
        raise InvalidInput(f"{path}: no frames")
    return doc


def write_bdd(out: Path, samples: pa.Table, boxes: pa.Table, labels: pa.Table, columns: dict[str, str]) -> Path:
    """``labels.json`` (frames with their attributes and ``box2d`` labels) and ``images/<name>``."""
    if boxes.num_rows == 0 and labels.num_rows:
        raise InvalidInput("this version has class labels but no boxes: export it as images or hf instead")
    rows = export_rows(samples, boxes, labels)
    write_payloads(out / "images", rows)
    frames = []
    for r in rows:
        frame: dict[str, Any] = {"name": r.name}
        attrs = {k: r.meta.get(k) for k in columns if r.meta.get(k) is not None}
        if attrs:
            frame["attributes"] = attrs
        frame["labels"] = [
            {"id": str(n), "category": b["category"],
             "box2d": {"x1": b["bbox_x"], "y1": b["bbox_y"], "x2": b["bbox_x"] + b["bbox_w"], "y2": b["bbox_y"] + b["bbox_h"]}}
            for n, b in enumerate(r.boxes)
        ]
        frames.append(frame)
    (out / "labels.json").write_text(json.dumps(frames, indent=1))
    return out
