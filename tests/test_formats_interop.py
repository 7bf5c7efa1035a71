"""Data formats (YOLO, Pascal VOC, BDD100K, Hugging Face ``datasets``, CVAT and Label Studio COCO) and
content-addressed samples, through the real CLI, with real files (crops of scikit-learn's sample
photographs) and the real ``datasets`` library.

Each format's files are written here the way the tool writes them, imported, exported, and the export
imported again: the same sample bytes (digests) and the same boxes and labels come back, and the
re-import stores no new bytes (``new_samples`` 0).  Bad files (hostile paths, bombs, bad numbers, boxes
outside the image, missing images) fail with one ``error:`` line and leave the repository unchanged.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets  # the [hf] extra, part of [dev]
import numpy as np
import pytest
from PIL import Image

import veml
from conftest import assert_failed_cleanly, ok, run_cli

datasets.disable_progress_bars()

CLASSES = ["car", "person", "sign"]
# (x, y, w, h, class) in pixels per picture; whole pixels, so VOC's integer corners are exact
BOXES = {0: [(2, 3, 20, 10, 0), (30, 20, 12, 20, 1)], 1: [(0, 0, 64, 48, 2)], 2: [], 3: [(10, 10, 5, 5, 1)],
         4: [(40, 1, 20, 30, 0), (1, 30, 10, 15, 2)], 5: [(5, 5, 30, 30, 0)]}
W, H = 64, 48


# --------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    """Six 64x48 crops of scikit-learn's two sample photographs, JPEG and PNG alternately."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    out = {}
    for i in range(6):
        crop = photos[i % 2][60 * i:60 * i + H, 80 * i:80 * i + W]
        buf = io.BytesIO()
        fmt = "JPEG" if i % 2 == 0 else "PNG"
        Image.fromarray(crop).save(buf, format=fmt)
        out[f"pic{i}.{'jpg' if fmt == 'JPEG' else 'png'}"] = buf.getvalue()
    return out


def _truth(pictures) -> list[tuple]:
    """(sha256, category, x, y, w, h) of every box, sorted: what every format must import."""
    from hashlib import sha256

    names = list(pictures)
    return sorted((sha256(pictures[names[i]]).hexdigest(), CLASSES[c], float(x), float(y), float(w), float(h))
                  for i, boxes in BOXES.items() for x, y, w, h, c in boxes)


def write_yolo(root: Path, pictures) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, (name, data) in enumerate(pictures.items()):
        (root / "images" / name).write_bytes(data)
        lines = [f"{c} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}" for x, y, w, h, c in BOXES[i]]
        (root / "labels" / name).with_suffix(".txt").write_text("\n".join(lines))
    (root / "data.yaml").write_text("path: ../datasets/mine\ntrain: images\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)))
    return root


def write_voc(root: Path, pictures) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i, (name, data) in enumerate(pictures.items()):
        (root / "JPEGImages" / name).write_bytes(data)
        objs = "".join(
            f"<object><name>{CLASSES[c]}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox></object>"
            for x, y, w, h, c in BOXES[i])
        (root / "Annotations" / f"{Path(name).stem}.xml").write_text(
            f"<annotation><folder>VOC2012</folder><filename>{name}</filename><source><database>test</database></source>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")
    return root


WEATHER = ["clear", "rainy", "clear", "snowy", "overcast", "clear"]


def write_bdd(root: Path, pictures) -> tuple[Path, Path]:
    (root / "images").mkdir(parents=True)
    frames = []
    for i, (name, data) in enumerate(pictures.items()):
        (root / "images" / name).write_bytes(data)
        labels = [{"id": str(n), "category": CLASSES[c], "attributes": {"occluded": False, "truncated": False},
                   "box2d": {"x1": float(x), "y1": float(y), "x2": float(x + w), "y2": float(y + h)}}
                  for n, (x, y, w, h, c) in enumerate(BOXES[i])]
        labels.append({"id": "lane", "category": "lane", "poly2d": [{"vertices": [[0, 0], [5, 5]], "closed": False}]})
        frames.append({"name": name, "timestamp": 10000,
                       "attributes": {"weather": WEATHER[i], "scene": "city street", "timeofday": "daytime"}, "labels": labels})
    (root / "det.json").write_text(json.dumps(frames))
    return root / "det.json", root / "images"


def write_hf_detection(root: Path, pictures) -> Path:
    feats = datasets.Features({
        "image": datasets.Image(), "image_id": datasets.Value("int64"),
        "width": datasets.Value("int32"), "height": datasets.Value("int32"),
        "objects": datasets.Sequence({"bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                                      "category": datasets.ClassLabel(names=CLASSES)}),
    })
    rows = {"image": [], "image_id": [], "width": [], "height": [], "objects": []}
    for i, (name, data) in enumerate(pictures.items()):
        rows["image"].append({"bytes": data, "path": name})
        rows["image_id"].append(100 + i)
        rows["width"].append(W)
        rows["height"].append(H)
        rows["objects"].append({"bbox": [[x, y, w, h] for x, y, w, h, _ in BOXES[i]], "category": [c for *_, c in BOXES[i]]})
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(root))
    return root


# --------------------------------------------------------------------------------------- repository


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("formats") / "repo"
    veml.init(root).close()
    return root


def _boxes_of(root: Path, name: str) -> list[tuple]:
    with veml.open(root) as repo:
        node = repo.data.get(name)
        meta = repo.data.checkout(node).samples_table()
        digest = dict(zip(meta["data_id"].to_pylist(), meta["content_hash"].to_pylist()))
        boxes = repo.data.annotations(node).get("boxes")
        rows = [] if boxes is None else boxes.to_pylist()
        return sorted((digest[b["data_id"]], b["category"], round(b["bbox_x"], 4), round(b["bbox_y"], 4),
                       round(b["bbox_w"], 4), round(b["bbox_h"], 4)) for b in rows)


def _digests(root: Path, name: str) -> list[str]:
    with veml.open(root) as repo:
        return sorted(repo.data.checkout(name).samples_table()["content_hash"].to_pylist())


def _import(root: Path, fmt: str, *args) -> dict:
    """``veml data import FMT ARGS... --name NAME`` (the last argument is the name)."""
    *src, name = args
    return ok("--repo", root, "data", "import", fmt, *src, "--name", name)


SOURCES = {
    "yolo": lambda d, p: (write_yolo(d, p),),
    "voc": lambda d, p: (write_voc(d, p),),
    "bdd": lambda d, p: (write_bdd(d, p)[0], "--images", d / "images"),
    "hf": lambda d, p: (write_hf_detection(d, p),),
}
REIMPORT = {"yolo": lambda o: (o,), "voc": lambda o: (o,), "hf": lambda o: (o,),
            "bdd": lambda o: (o / "labels.json", "--images", o / "images")}


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_round_trip(fmt, repo_root, pictures, tmp_path):
    """import -> export -> import: same digests, same boxes; the second import stores no new bytes."""
    src = SOURCES[fmt](tmp_path / "src", pictures)
    first = _import(repo_root, fmt, *src, f"{fmt}-in")
    assert first["samples"] == 6 and first["annotations"] == 7
    assert first["source"]["format"] == fmt and first["new_samples"] in (0, 6)  # 0: another format stored them
    truth = _truth(pictures)
    assert _boxes_of(repo_root, f"{fmt}-in") == [t[:2] + tuple(round(v, 4) for v in t[2:]) for t in truth]

    out = tmp_path / "out"
    exported = ok("--repo", repo_root, "data", "export", f"{fmt}-in", "--format", fmt, "--out", out)
    assert Path(exported["path"]) == out
    again = _import(repo_root, fmt, *REIMPORT[fmt](out), f"{fmt}-again")
    assert again["new_samples"] == 0, "identical bytes were stored again"
    assert _digests(repo_root, f"{fmt}-again") == _digests(repo_root, f"{fmt}-in") == sorted(_all_digests(pictures))
    assert _boxes_of(repo_root, f"{fmt}-again") == _boxes_of(repo_root, f"{fmt}-in")
    if fmt == "bdd":  # frame attributes are columns, kept through the round trip and filterable
        assert first["columns"] == {"scene": "VARCHAR", "timeofday": "VARCHAR", "weather": "VARCHAR"}
        assert first["source"]["skipped_labels"] == 6
        rainy = ok("--repo", repo_root, "data", "filter", "bdd-again", "--where", "weather = 'rainy'", "--name", "bdd-rainy")
        assert rainy["samples"] == 1
    if fmt == "hf":  # the export is a real datasets directory: datasets reads it back
        ds = datasets.load_from_disk(str(out))
        assert ds.features["objects"].feature["category"].names == CLASSES
        assert sorted(len(o) for o in ds["objects"]) == sorted(len(b) for b in BOXES.values())
        assert first["columns"] == {"image_id": "BIGINT"}


def _all_digests(pictures) -> set[str]:
    from hashlib import sha256

    return {sha256(b).hexdigest() for b in pictures.values()}


def test_hf_classification_dataset_dict(repo_root, pictures, tmp_path):
    """An Image + ClassLabel DatasetDict: labels, a split column, and back to a DatasetDict datasets loads."""
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["china", "flower"])})
    names = list(pictures)
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"img": [{"bytes": pictures[names[i]], "path": names[i]} for i in idx], "label": [i % 2 for i in idx]},
            features=feats)
        for split, idx in (("train", [0, 1, 2, 3]), ("test", [4, 5]))
    })
    dd.save_to_disk(str(tmp_path / "cls"))
    v = _import(repo_root, "hf", tmp_path / "cls", "hf-cls")
    assert v["samples"] == 6 and v["columns"] == {"split": "VARCHAR"} and v["annotation_tables"] == ["labels"]
    test = ok("--repo", repo_root, "data", "filter", "hf-cls", "--where", "split = 'test'", "--name", "hf-cls-test")
    assert test["samples"] == 2
    ok("--repo", repo_root, "data", "export", "hf-cls", "--format", "hf", "--out", tmp_path / "back")
    back = datasets.load_from_disk(str(tmp_path / "back"))
    assert sorted(back) == ["test", "train"]
    got = sorted((r["image"]["bytes"], back["train"].features["label"].int2str(r["label"]))
                 for r in back["train"].cast_column("image", datasets.Image(decode=False)))
    want = sorted((pictures[names[i]], ["china", "flower"][i % 2]) for i in range(4))
    assert got == want
    # an image-folder export of the same version, for the classification layout's other reader
    ok("--repo", repo_root, "data", "export", "hf-cls", "--format", "images", "--out", tmp_path / "folder")
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["china", "flower"]


def test_cvat_and_label_studio_coco(repo_root, pictures, tmp_path):
    """The two tools' COCO exports, as they write them, import through the one COCO parser."""
    names = list(pictures)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for n, data in pictures.items():
        (img_dir / n).write_bytes(data)
    cvat = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(CLASSES)],
        "images": [{"id": i + 1, "width": W, "height": H, "file_name": n, "license": 0, "flickr_url": "", "coco_url": "",
                    "date_captured": 0} for i, n in enumerate(names)],
        "annotations": [{"id": k + 1, "image_id": i + 1, "category_id": c + 1, "segmentation": [], "area": float(w * h),
                         "bbox": [float(x), float(y), float(w), float(h)], "iscrowd": 0,
                         "attributes": {"occluded": False, "rotation": 0.0}}
                        for k, (i, (x, y, w, h, c)) in enumerate((i, b) for i, bs in BOXES.items() for b in bs)],
    }
    (tmp_path / "cvat.json").write_text(json.dumps(cvat))
    v = _import(repo_root, "coco", tmp_path / "cvat.json", "--images", img_dir, "cvat")
    assert v["source"]["flavour"] == "cvat" and v["samples"] == 6 and v["annotations"] == 7
    assert _boxes_of(repo_root, "cvat") == [t[:2] + tuple(round(v, 4) for v in t[2:]) for t in _truth(pictures)]

    studio = {  # 0-based ids, uploads named by Label Studio's own URL, info naming the tool
        "images": [{"width": W, "height": H, "id": i, "file_name": f"/data/upload/1/{n}"} for i, n in enumerate(names)],
        "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)],
        "annotations": [{"id": k, "image_id": i, "category_id": c, "segmentation": [], "bbox": [x, y, w, h],
                         "ignore": 0, "iscrowd": 0, "area": w * h}
                        for k, (i, (x, y, w, h, c)) in enumerate((i, b) for i, bs in BOXES.items() for b in bs)],
        "info": {"year": 2026, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
                 "date_created": "2026-01-01 00:00:00.000000"},
    }
    (tmp_path / "result.json").write_text(json.dumps(studio))
    v = _import(repo_root, "coco", tmp_path / "result.json", "--images", img_dir, "label-studio")
    assert v["source"]["flavour"] == "label-studio" and v["new_samples"] == 0
    assert _boxes_of(repo_root, "label-studio") == _boxes_of(repo_root, "cvat")
    studio["images"][0]["file_name"] = "/etc/passwd"  # not one of Label Studio's own URLs: an absolute path
    (tmp_path / "result.json").write_text(json.dumps(studio))
    _refused(repo_root, ["coco", tmp_path / "result.json", "--images", img_dir], "absolute file name")


def test_same_bytes_are_stored_once_across_datasets(tmp_path, pictures):
    """Two data sets with the same images: the second stores metadata only, reads the same bytes, gc keeps them."""
    root = tmp_path / "repo"
    veml.init(root).close()
    src = tmp_path / "imgs"
    for i, (n, data) in enumerate(pictures.items()):
        (src / CLASSES[i % 3]).mkdir(parents=True, exist_ok=True)
        (src / CLASSES[i % 3] / n).write_bytes(data)
    (src / "car" / "copy.jpg").write_bytes(next(iter(pictures.values())))  # a duplicate inside one import
    with veml.open(root) as repo:
        empty = repo.stores.samples.size_bytes()
    a = _import(root, "images", src, "a")
    with veml.open(root) as repo:
        after_a = repo.stores.samples.size_bytes()
    b = _import(root, "images", src, "b")
    assert (a["samples"], a["new_samples"], b["samples"], b["new_samples"]) == (7, 6, 7, 0)
    with veml.open(root) as repo:
        grew_a, grew_b = after_a - empty, repo.stores.samples.size_bytes() - after_a
        payload = sum(len(d) for d in pictures.values())
        assert grew_a > payload and grew_b < payload / 2, (grew_a, grew_b, payload)
        va, vb = repo.data.checkout("a").samples_table(), repo.data.checkout("b").samples_table()
        assert va["payload"].to_pylist() == vb["payload"].to_pylist()
        assert set(va["data_id"].to_pylist()).isdisjoint(vb["data_id"].to_pylist())  # its own rows, its own names
        assert vb.num_rows == 7 and np.asarray(repo.data.checkout("b")[0].value).shape == (H, W, 3)
    gc = ok("--repo", root, "gc", "--grace", "0")
    assert gc["samples_reclaimed"] == 0
    v = ok("--repo", root, "verify", "--deep")
    assert v["ok"] is True and v["samples"] == 14


def test_table_and_series_imports_report_like_image_imports(tmp_path):
    """The same report keys for every import: ``samples``, ``annotations``, ``new_samples``.  Table rows are
    stored as they come (every row is new); series windows are content-addressed like images."""
    root = tmp_path / "repo"
    veml.init(root).close()
    (tmp_path / "t.csv").write_text("x,y,label\n" + "".join(f"{i},{2 * i},{i % 2}\n" for i in range(10)))
    (tmp_path / "s.csv").write_text("timestamp,s1,s2\n" + "".join(f"2024-01-01T00:{i:02d}:00,{i},{2 * i}\n" for i in range(20)))
    keys = {"samples", "annotations", "new_samples"}
    t1 = _import(root, "table", tmp_path / "t.csv", "t1")
    t2 = ok("--repo", root, "data", "add", "t1", "table", tmp_path / "t.csv", "--name", "t2")
    s1 = _import(root, "timeseries", tmp_path / "s.csv", "--window", "4", "s1")
    s2 = _import(root, "timeseries", tmp_path / "s.csv", "--window", "4", "s2")
    assert all(keys <= v.keys() and v["source"]["new_samples"] == v["new_samples"] for v in (t1, t2, s1, s2))
    assert [(v["samples"], v["new_samples"]) for v in (t1, t2, s1, s2)] == [(10, 10), (20, 10), (5, 5), (5, 0)]
    assert (s1["annotations"], t1["annotations"]) == (10, 0)
    text = run_cli("--repo", root, "data", "import", "table", tmp_path / "t.csv", "--name", "t3")
    assert text.out.strip().endswith("10 samples (10 new), 0 annotations")


# --------------------------------------------------------------------------------------- bad input


def _refused(root: Path, args: list, *needles: str) -> None:
    with veml.open(root) as repo:
        before = (len(repo.data.list()), len(repo.stores.samples.keys("samples")), len(repo.stores.samples.keys("digests")))
    res = run_cli("--repo", root, "data", "import", *args, "--name", "bad", "--json")
    assert_failed_cleanly(res, *needles)
    with veml.open(root) as repo:
        after = (len(repo.data.list()), len(repo.stores.samples.keys("samples")), len(repo.stores.samples.keys("digests")))
    assert after == before, "a refused import changed the repository"


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<annotation><filename>&lol4;</filename></annotation>"""


def _yolo_label(d: Path, text: str) -> None:
    (d / "labels" / "pic0.txt").write_text(text)


def _voc_xml(d: Path, text: str) -> None:
    (d / "Annotations" / "pic0.xml").write_text(text)


def _bdd_frame(d: Path, **change) -> None:
    frames = json.loads((d / "det.json").read_text())
    frames[0].update(change)
    (d / "det.json").write_text(json.dumps(frames))


BAD = {
    "yolo bad number": ("yolo", lambda d: _yolo_label(d, "0 0.5 abc 0.1 0.1\n"), "pic0.txt: line 1", "'abc' is not a number"),
    "yolo box out of range": ("yolo", lambda d: _yolo_label(d, "0 0.5 0.5 1.5 0.2\n"), "line 1", "fractions of the image"),
    "yolo box outside image": ("yolo", lambda d: _yolo_label(d, "0 0.9 0.5 0.5 0.2\n"), "lies outside its image"),
    "yolo unknown class": ("yolo", lambda d: _yolo_label(d, "7 0.5 0.5 0.1 0.1\n"), "class '7'"),
    "yolo hostile list": ("yolo", lambda d: ((d / "data.yaml").write_text("train: list.txt\nnames: [car]\n"),
                                             (d / "list.txt").write_text("images/pic0.jpg\n../../outside.jpg\n")),
                          "list.txt: line 2", "'..'"),
    "yolo absolute split": ("yolo", lambda d: (d / "data.yaml").write_text("train: /etc\nnames: [car]\n"), "absolute file name"),
    "voc billion laughs": ("voc", lambda d: _voc_xml(d, BOMB), "pic0.xml", "DTD or entities"),
    "voc hostile name": ("voc", lambda d: _voc_xml(d, "<annotation><filename>../../../etc/passwd</filename></annotation>"), "'..'"),
    "voc malformed": ("voc", lambda d: _voc_xml(d, "<annotation><filename>pic0.jpg</annotation>"), "malformed XML"),
    "voc box outside": ("voc", lambda d: _voc_xml(d, "<annotation><filename>pic0.jpg</filename><object><name>car</name>"
                                              "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>90</xmax><ymax>9</ymax></bndbox>"
                                              "</object></annotation>"), "object 1", "outside its image"),
    "voc missing image": ("voc", lambda d: (d / "JPEGImages" / "pic0.jpg").unlink(), "pic0.jpg", "file not found"),
    "bdd absolute name": ("bdd", lambda d: _bdd_frame(d, name="/etc/passwd"), "frames[0].name", "absolute file name"),
    "bdd bad number": ("bdd", lambda d: _bdd_frame(d, labels=[{"category": "car", "box2d": {"x1": "abc", "y1": 0, "x2": 1, "y2": 1}}]),
                       "frames[0].labels[0].box2d.x1", "not a number"),
    "bdd missing image": ("bdd", lambda d: (d / "images" / "pic0.jpg").unlink(), "frames[0]", "file not found"),
    "hf hostile data file": ("hf", lambda d: (d / "state.json").write_text(json.dumps(
        {**json.loads((d / "state.json").read_text()), "_data_files": [{"filename": "../../x.arrow"}]})), "state.json", "'..'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_cleanly(case, repo_root, pictures, tmp_path):
    fmt, spoil, *needles = BAD[case]
    src = SOURCES[fmt](tmp_path / "src", pictures)
    spoil(tmp_path / "src")
    _refused(repo_root, [fmt, *src], *needles)


def test_yolo_splits_become_a_column_and_come_back(repo_root, pictures, tmp_path):
    """data.yaml's train/val folders: a split column, exported back to the same folders."""
    src = write_yolo(tmp_path / "src", pictures)
    for split, names in (("train", list(pictures)[:4]), ("val", list(pictures)[4:])):
        for sub in ("images", "labels"):
            (src / sub / split).mkdir()
        for n in names:
            (src / "images" / n).rename(src / "images" / split / n)
            label = (src / "labels" / n).with_suffix(".txt")
            label.rename(src / "labels" / split / label.name)
    (src / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [car, person, sign]\n")
    v = _import(repo_root, "yolo", src, "yolo-splits")
    assert v["columns"] == {"split": "VARCHAR"} and v["annotations"] == 7
    ok("--repo", repo_root, "data", "export", "yolo-splits", "--format", "yolo", "--out", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["train", "val"]
    again = _import(repo_root, "yolo", tmp_path / "out", "yolo-splits-again")
    assert again["new_samples"] == 0
    val = ok("--repo", repo_root, "data", "filter", "yolo-splits-again", "--where", "split = 'val'", "--name", "yolo-val")
    assert val["samples"] == 2
    assert _boxes_of(repo_root, "yolo-splits-again") == _boxes_of(repo_root, "yolo-splits")
