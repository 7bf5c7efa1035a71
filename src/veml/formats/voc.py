"""Pascal VOC detection data sets: ``Annotations/*.xml`` + ``JPEGImages/``.

XML is untrusted: it is parsed with :mod:`defusedxml`, which refuses a DTD and entity declarations
(a "billion laughs" bomb, external entities) before anything expands.  VOC boxes are 1-based and
inclusive (``xmin=1, xmax=10`` covers ten pixels starting at the first); they become COCO-style
``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``, and export writes the inverse.
An object's ``difficult``/``truncated`` flags and ``pose`` are not kept.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

import defusedxml.ElementTree as safe_xml
import pyarrow as pa
from defusedxml import DefusedXmlException

from veml.errors import InvalidInput
from veml.formats.batch import ImportBatch
from veml.formats.detection import Box, ImageEntry, build_image_batch, export_rows, number, write_payloads
from veml.formats.paths import ReadPolicy, read_regular, resolve_under, walk_files
from veml.progress import ProgressLike


def parse_voc(root: Path, progress: ProgressLike | None = None, policy: ReadPolicy | None = None) -> ImportBatch:
    root = Path(root)
    policy = policy or ReadPolicy.from_options()
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    for d in (ann_dir, img_dir):
        if not d.is_dir():
            raise InvalidInput(f"{root}: no {d.name}/ folder (expected Annotations/*.xml and JPEGImages/)")
    files = [p for p in walk_files(ann_dir, root, policy) if p.suffix.lower() == ".xml"]
    if not files:
        raise InvalidInput(f"{ann_dir}: no .xml annotation files")
    entries, boxes, names = [], [], {}
    for path in files:
        doc = load_xml(path, policy)
        name = _text(doc, "filename", path) if doc.find("filename") is not None else path.stem + ".jpg"
        size = _size(doc, path)
        sample = len(entries)
        entries.append(ImageEntry(name, f"{path}: <filename> {name}", size=size,
                                  path=resolve_under(img_dir, name, f"{path}: <filename>", policy)))
        for n, obj in enumerate(doc.findall("object"), 1):
            where = f"{path}: object {n}"
            cat = _text(obj, "name", where)
            bb = obj.find("bndbox")
            if bb is None:
                raise InvalidInput(f"{where}: no <bndbox>")
            x1, y1, x2, y2 = (number(_text(bb, k, where), f"{where}: <{k}>") for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 < x1 or y2 < y1:
                raise InvalidInput(f"{where}: xmax/ymax lie before xmin/ymin ({x1:g},{y1:g} .. {x2:g},{y2:g})")
            names.setdefault(cat, len(names))
            boxes.append(Box(sample, cat, x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1, where))
    return build_image_batch("voc", entries, boxes, [], list(names), {"path": str(root.resolve())}, policy, progress)


def load_xml(path: Path, policy: ReadPolicy) -> Element:
    raw = read_regular(path, str(path), policy)
    try:
        doc = safe_xml.fromstring(raw, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise InvalidInput(f"{path}: refused: the XML declares a DTD or entities ({type(exc).__name__}); "
                           "VOC annotations need neither") from None
    except ParseError as exc:
        raise InvalidInput(f"{path}: malformed XML: {exc}") from None
    if doc.tag != "annotation":
        raise InvalidInput(f"{path}: root element is <{doc.tag}>, expected <annotation>")
    return doc


def _text(parent: Element, tag: str, where: object) -> str:
    el = parent.find(tag)
    if el is None or not (el.text or "").strip():
        raise InvalidInput(f"{where}: missing <{tag}>")
    return el.text.strip()


def _size(doc: Element, path: Path) -> tuple[int, int] | None:
    size = doc.find("size")
    if size is None:
        return None
    dims = []
    for k in ("width", "height"):
        v = number(_text(size, k, f"{path}: <size>"), f"{path}: <size><{k}>")
        if v != int(v) or v < 0:
            raise InvalidInput(f"{path}: <size><{k}> must be a whole number of pixels, found {v:g}")
        dims.append(int(v))
    return None if 0 in dims else (dims[0], dims[1])  # 0x0: some tools write no size


def write_voc(out: Path, samples: pa.Table, boxes: pa.Table, labels: pa.Table) -> Path:
    """``JPEGImages/<name>`` (original bytes, whatever their format) and ``Annotations/<name>.xml``."""
    if boxes.num_rows == 0 and labels.num_rows:
        raise InvalidInput("this version has class labels but no boxes: export it as images or hf instead")
    rows = export_rows(samples, boxes, labels, flat=True)
    write_payloads(out / "JPEGImages", rows)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    stems: set[str] = set()
    for r in rows:
        root = Element("annotation")
        SubElement(root, "folder").text = "JPEGImages"
        SubElement(root, "filename").text = r.name
        size = SubElement(root, "size")
        for k, v in (("width", r.width), ("height", r.height), ("depth", 3)):
            SubElement(size, k).text = str(v)
        for b in r.boxes:
            obj = SubElement(root, "object")
            SubElement(obj, "name").text = b["category"]
            SubElement(obj, "difficult").text = "0"
            bb = SubElement(obj, "bndbox")
            corners = (b["bbox_x"] + 1, b["bbox_y"] + 1, b["bbox_x"] + b["bbox_w"], b["bbox_y"] + b["bbox_h"])
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), corners):
                SubElement(bb, k).text = _num(v)
        stem = Path(r.name).stem if Path(r.name).stem not in stems else f"{r.data_id}_{Path(r.name).stem}"
        stems.add(stem)
        (out / "Annotations" / f"{stem}.xml").write_bytes(tostring(root, encoding="utf-8"))
    return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
