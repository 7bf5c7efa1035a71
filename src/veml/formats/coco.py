"""COCO (and BDD-style COCO) detection files: parse with full validation, and export.

Every check happens before any row is written: a malformed file, a dangling ``image_id``, a box
outside its image or an unreadable image raises one :class:`InvalidInput` naming the file and the
field, and the repository stays as it was.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote

import pyarrow as pa

from veml.errors import InvalidInput
from veml.formats.batch import ImportBatch, annotation_schema, check_column_names, sql_type
from veml.formats.detection import image_samples, safe_relative
from veml.formats.images import ImageFile, read_image
from veml.formats.paths import ReadPolicy, read_regular, resolve_under
from veml.progress import ProgressLike, as_progress

_STANDARD_IMAGE_KEYS = {"id", "file_name", "width", "height"}
_BOX_TOLERANCE = 1.0  # pixels a box may overhang its image (rounding in real exports)


def load_coco_json(path: Path, policy: ReadPolicy | None = None) -> dict[str, Any]:
    raw = read_regular(Path(path), str(path), policy or ReadPolicy.from_options())
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise InvalidInput(f"{path}: malformed JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a COCO file is a JSON object, found {type(doc).__name__}")
    if not isinstance(doc.get("images"), list):
        raise InvalidInput(f"{path}: 'images' must be a list")
    for key in ("annotations", "categories"):
        if key in doc and not isinstance(doc[key], list):
            raise InvalidInput(f"{path}: '{key}' must be a list")
    return doc


def _categories(path: Path, doc: Mapping[str, Any]) -> dict[int, str]:
    cats: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for i, c in enumerate(doc.get("categories", [])):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise InvalidInput(f"{path}: categories[{i}] needs an integer 'id' and a string 'name'")
        if c["id"] in cats:
            raise InvalidInput(f"{path}: categories[{i}]: duplicate category id {c['id']}")
        if c["name"] in by_name:
            raise InvalidInput(f"{path}: categories[{i}]: duplicate category name {c['name']!r} (also id {by_name[c['name']]})")
        cats[c["id"]] = c["name"]
        by_name[c["name"]] = c["id"]
    return cats


def _images(path: Path, doc: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict):
            raise InvalidInput(f"{path}: images[{i}] is not an object")
        if not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool):
            raise InvalidInput(f"{path}: images[{i}].id must be an integer")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise InvalidInput(f"{path}: images[{i}].file_name must be a non-empty string")
        for dim in ("width", "height"):
            if dim in im and (not isinstance(im[dim], int) or im[dim] <= 0):
                raise InvalidInput(f"{path}: images[{i}].{dim} must be a positive integer")
        if im["id"] in images:
            raise InvalidInput(f"{path}: images[{i}]: duplicate image id {im['id']}")
        images[im["id"]] = im
    if not images:
        raise InvalidInput(f"{path}: no images")
    return images


def _check_annotations(path: Path, doc: Mapping[str, Any], images: Mapping[int, dict], cats: Mapping[int, str]) -> list[dict]:
    anns = doc.get("annotations", [])
    seen_ids: set[int] = set()
    for i, a in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict):
            raise InvalidInput(f"{where} is not an object")
        if "id" in a:
            if not isinstance(a["id"], int) or a["id"] in seen_ids:
                raise InvalidInput(f"{where}.id must be a unique integer (got {a['id']!r})")
            seen_ids.add(a["id"])
        if a.get("image_id") not in images:
            raise InvalidInput(f"{where}.image_id {a.get('image_id')!r} does not match any image id")
        if a.get("category_id") not in cats:
            raise InvalidInput(f"{where}.category_id {a.get('category_id')!r} does not match any category")
        bbox = a.get("bbox")
        if bbox is None:
            continue
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            raise InvalidInput(f"{where}.bbox must be four numbers [x, y, w, h]")
        x, y, w, h = (float(v) for v in bbox)
        if not all(v == v and abs(v) != float("inf") for v in (x, y, w, h)):
            raise InvalidInput(f"{where}.bbox has a NaN or infinite value")
        if w <= 0 or h <= 0:
            raise InvalidInput(f"{where}.bbox has non-positive width or height {bbox}")
    return anns


def _check_box_bounds(path: Path, anns: list[dict], sizes: Mapping[int, tuple[int, int]]) -> None:
    for i, a in enumerate(anns):
        bbox = a.get("bbox")
        if bbox is None:
            continue
        x, y, w, h = (float(v) for v in bbox)
        width, height = sizes[a["image_id"]]
        t = _BOX_TOLERANCE
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            raise InvalidInput(
                f"{path}: annotations[{i}].bbox {bbox} lies outside its image ({width}x{height}, image id {a['image_id']})"
            )


def parse_coco(ann_path: Path, images_dir: Path, progress: ProgressLike | None = None,
               policy: ReadPolicy | None = None) -> ImportBatch:
    ann_path, images_dir = Path(ann_path), Path(images_dir)
    policy = policy or ReadPolicy.from_options()
    if not images_dir.is_dir():
        raise InvalidInput(f"{images_dir}: images directory not found")
    doc = load_coco_json(ann_path, policy)
    cats = _categories(ann_path, doc)
    images = _images(ann_path, doc)
    anns = _check_annotations(ann_path, doc, images, cats)
    extra_keys = sorted({k for im in images.values() for k in im} - _STANDARD_IMAGE_KEYS)
    check_column_names(extra_keys, f"{ann_path}: images[] keys")

    flavour = coco_flavour(doc)
    if flavour == "label-studio":
        for im in images.values():
            im["file_name"] = _label_studio_name(im["file_name"])
    order = list(images)  # file order: one import is one contiguous id range in this order
    paths = {  # every name checked before any image is read
        iid: resolve_under(images_dir, images[iid]["file_name"], f"{ann_path}: images[{n}].file_name", policy)
        for n, iid in enumerate(order)
    }

    def load(image_id: int) -> ImageFile:
        im = images[image_id]
        f = read_image(paths[image_id], f"{images_dir / im['file_name']} (image id {image_id})", policy)
        for dim, actual in (("width", f.width), ("height", f.height)):
            if dim in im and im[dim] != actual:
                raise InvalidInput(
                    f"{ann_path}: image id {image_id} declares {dim} {im[dim]} but {im['file_name']} has {actual}"
                )
        return f

    bar = as_progress(progress)
    bar.add_total(len(order))
    files: list[ImageFile] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for n, f in enumerate(pool.map(load, order), 1):
            files.append(f)
            if n % 256 == 0:
                bar.advance(256)
    bar.advance(len(order) % 256)
    _check_box_bounds(ann_path, anns, {iid: (f.width, f.height) for iid, f in zip(order, files)})

    columns = {k: sql_type(im.get(k) for im in images.values()) for k in extra_keys}
    samples = image_samples(files, [images[i]["file_name"] for i in order],
                            [{k: images[i].get(k) for k in extra_keys} for i in order])
    index = {iid: n for n, iid in enumerate(order)}
    boxed = [a for a in anns if a.get("bbox") is not None]
    labelled = [a for a in anns if a.get("bbox") is None]
    annotations: dict[str, pa.Table] = {}
    if boxed:
        annotations["boxes"] = pa.table(
            {
                "sample_index": [index[a["image_id"]] for a in boxed],
                "category": [cats[a["category_id"]] for a in boxed],
                "bbox_x": [float(a["bbox"][0]) for a in boxed],
                "bbox_y": [float(a["bbox"][1]) for a in boxed],
                "bbox_w": [float(a["bbox"][2]) for a in boxed],
                "bbox_h": [float(a["bbox"][3]) for a in boxed],
                "area": [float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in boxed],
                "iscrowd": pa.array([int(a.get("iscrowd", 0)) for a in boxed], pa.int8()),
                "source_id": [a.get("id") for a in boxed],
            },
            schema=annotation_schema("boxes"),
        )
    if labelled:
        annotations["labels"] = pa.table(
            {
                "sample_index": [index[a["image_id"]] for a in labelled],
                "category": [cats[a["category_id"]] for a in labelled],
                "value": [float("nan")] * len(labelled),
            },
            schema=annotation_schema("labels"),
        )
    return ImportBatch(
        modality="image",
        samples=samples,
        annotations=annotations,
        columns=columns,
        category_ids={name: cid for cid, name in cats.items()},
        source={"format": "coco", "flavour": flavour, "path": str(ann_path.resolve()), "images": str(images_dir.resolve())},
    )


def coco_flavour(doc: Mapping[str, Any]) -> str:
    """Which tool wrote the file: "label-studio", "cvat" or plain "coco" (all three parse the same way).

    Label Studio's export names its tool in ``info.contributor`` and 0-based ids; CVAT's puts
    ``attributes`` (``occluded``, ``rotation``) on annotations and empty ``licenses``/``info`` strings.
    """
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    if str(info.get("contributor", "")).strip().lower() == "label studio":
        return "label-studio"
    anns = doc.get("annotations") or []
    if any(isinstance(a, dict) and isinstance(a.get("attributes"), dict) and "occluded" in a["attributes"] for a in anns):
        return "cvat"
    return "coco"


# Where Label Studio's export points at images it serves itself: the file is DIR/<basename>.
_LABEL_STUDIO_PREFIXES = ("/data/upload/", "/data/local-files/", "http://", "https://", "s3://", "gs://")


def _label_studio_name(name: str) -> str:
    """``/data/upload/3/ab12-cat.jpg`` -> ``ab12-cat.jpg`` (only the base name is used, never the path);
    ``images/ab12-cat.jpg`` (an export with images) stays as it is, checked like any name."""
    if not name.startswith(_LABEL_STUDIO_PREFIXES):
        return name
    base = unquote(name.split("?d=")[-1]).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return base or name


def parse_coco_annotations(ann_path: Path, policy: ReadPolicy | None = None) -> tuple[dict[int, dict[str, Any]], list[dict], dict[int, str]]:
    """For ``data update``: a COCO file's images, checked annotations and categories, no image reads."""
    doc = load_coco_json(Path(ann_path), policy)
    cats = _categories(Path(ann_path), doc)
    images = _images(Path(ann_path), doc)
    anns = _check_annotations(Path(ann_path), doc, images, cats)
    return images, anns, cats


def check_boxes_within(ann_path: Path, anns: list[dict], sizes: Mapping[int, tuple[int, int]]) -> None:
    _check_box_bounds(Path(ann_path), anns, sizes)


def write_coco(
    out_dir: Path,
    samples: pa.Table,
    boxes: pa.Table,
    labels: pa.Table,
    category_ids: Mapping[str, int],
    columns: Mapping[str, str],
) -> Path:
    """Write ``out_dir/annotations.json`` and ``out_dir/images/<file_name>`` (original bytes)."""
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    cat_ids = dict(category_ids)
    for name in sorted(set(boxes["category"].to_pylist()) | set(labels["category"].to_pylist())):
        cat_ids.setdefault(name, max(cat_ids.values(), default=0) + 1)
    images, seen_names = [], set()
    for row in samples.select(["data_id", "file_name", "width", "height", "meta", "payload"]).to_pylist():
        name = safe_relative(row["file_name"], row["data_id"])
        if name in seen_names:  # two versions merged may hold the same file name
            name = f"{row['data_id']}_{Path(name).name}"
        seen_names.add(name)
        target = img_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(row["payload"])
        entry = {"id": int(row["data_id"]), "file_name": name, "width": row["width"], "height": row["height"]}
        meta = json.loads(row["meta"] or "{}")
        entry.update({k: meta.get(k) for k in columns if k not in entry})
        images.append(entry)
    anns = []
    for n, a in enumerate(boxes.to_pylist(), 1):
        anns.append(
            {
                "id": n,
                "image_id": int(a["data_id"]),
                "category_id": cat_ids[a["category"]],
                "bbox": [a["bbox_x"], a["bbox_y"], a["bbox_w"], a["bbox_h"]],
                "area": a["area"],
                "iscrowd": int(a["iscrowd"] or 0),
            }
        )
    for a in labels.to_pylist():
        anns.append({"id": len(anns) + 1, "image_id": int(a["data_id"]), "category_id": cat_ids[a["category"]]})
    doc = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": cid, "name": name} for name, cid in sorted(cat_ids.items(), key=lambda kv: kv[1])],
    }
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(doc))
    return path
