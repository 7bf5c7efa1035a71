"""Bad input through the real CLI (DESIGN.md section 7 and 8).

Every case runs against a repository that already holds one good version, and checks the same
things: exit code 1, exactly one ``error: …`` line on stderr naming what is wrong, no traceback,
nothing on stdout with ``--json``, and the repository unchanged (same ``data list``, ``verify`` ok,
no orphan rows for ``gc`` to reclaim).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import PARSER_LEVEL, assert_failed_cleanly, images_dir


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def good_template(tmp_path_factory, driving_small) -> Path:
    """A repository holding one good version ``good`` (built once, copied per test)."""
    from veml.cli.main import main

    root = tmp_path_factory.mktemp("bad_input_template") / "repo"
    assert main(["init", str(root)]) == 0
    assert main(["--repo", str(root), "data", "import", "coco", str(driving_small),
                 "--images", str(images_dir(driving_small)), "--name", "good"]) == 0
    assert main(["--repo", str(root), "data", "tag", "good", "golden"]) == 0
    return root


@pytest.fixture
def good_repo(good_template, tmp_path, cli) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(good_template, root)
    return root


def _list(cli, repo: Path) -> list:
    r = cli("data", "list", "--json", "--repo", repo)
    assert r.code == 0, r.err
    return r.json


def assert_unchanged(cli, repo: Path, before: list) -> None:
    assert _list(cli, repo) == before
    v = cli("verify", "--json", "--repo", repo)
    assert v.code == 0, v.out + v.err
    assert v.json["ok"] is True
    # nothing was even appended: bad input is rejected before any row is written
    gc = cli("gc", "--grace", "0", "--json", "--repo", repo)
    assert gc.code == 0, gc.err
    assert gc.json["samples_reclaimed"] == 0 and gc.json["annotations_reclaimed"] == 0, gc.json


def small_coco(src: Path, dest: Path, n: int = 5) -> tuple[Path, Path, dict]:
    """The first ``n`` images of ``src`` (and their annotations) copied under ``dest``."""
    doc = json.loads(src.read_text())
    images = doc["images"][:n]
    keep = {im["id"] for im in images}
    doc = {**doc, "images": images, "annotations": [a for a in doc["annotations"] if a["image_id"] in keep]}
    img_dir = dest / "images"
    img_dir.mkdir(parents=True)
    for im in images:
        shutil.copyfile(images_dir(src) / im["file_name"], img_dir / im["file_name"])
    ann = dest / "annotations.json"
    ann.write_text(json.dumps(doc))
    return ann, img_dir, doc


def import_coco(cli, repo: Path, ann: Path, img_dir: Path, name: str = "bad"):
    return cli("data", "import", "coco", ann, "--images", img_dir, "--name", name, "--json", "--repo", repo)


# ------------------------------------------------------------------------------- COCO files


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_malformed_json(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, _ = small_coco(driving_small, tmp_path / "src")
    ann.write_text('{"images": [ {"id": 1, "file_name": "x.png",, ] }')
    res = import_coco(cli, good_repo, ann, img_dir)
    assert_failed_cleanly(res, str(ann), "JSON")
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_truncated_coco_json(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, _ = small_coco(driving_small, tmp_path / "src")
    text = driving_small.read_text()
    ann.write_text(text[: len(text) // 2])
    res = import_coco(cli, good_repo, ann, img_dir)
    assert_failed_cleanly(res, str(ann))
    assert_unchanged(cli, good_repo, before)


def test_annotation_with_missing_image_id(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    doc["annotations"][3]["image_id"] = 987654
    ann.write_text(json.dumps(doc))
    res = import_coco(cli, good_repo, ann, img_dir)
    line = assert_failed_cleanly(res, str(ann), "image_id")
    assert "987654" in line
    assert_unchanged(cli, good_repo, before)


def _missing(p: Path) -> None:
    p.unlink()


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _text(p: Path) -> None:
    p.write_bytes(b"this is not an image, just some text that happens to be named .png\n")


def _truncated_png(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:40])


@pytest.mark.parametrize(
    "damage",
    [_missing, _empty, _text, _truncated_png],
    ids=["missing", "empty", "not-an-image", "truncated-png"],
)
def test_bad_image_file(cli, good_repo, tmp_path, driving_small, damage):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    victim = doc["images"][2]["file_name"]
    assert (img_dir / victim).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a real PNG to start from
    damage(img_dir / victim)
    res = import_coco(cli, good_repo, ann, img_dir)
    assert_failed_cleanly(res, victim)
    assert_unchanged(cli, good_repo, before)


def test_box_outside_image(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    doc["annotations"][1]["bbox"] = [50, 50, 40, 40]  # 64x64 image: ends at 90
    ann.write_text(json.dumps(doc))
    res = import_coco(cli, good_repo, ann, img_dir)
    assert_failed_cleanly(res, str(ann), "annotations[1]", "bbox")
    assert_unchanged(cli, good_repo, before)


@pytest.mark.parametrize("bbox", [[10, 10, 0, 5], [10, 10, 5, -3]], ids=["zero-width", "negative-height"])
def test_box_without_positive_size(cli, good_repo, tmp_path, driving_small, bbox):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    doc["annotations"][2]["bbox"] = bbox
    ann.write_text(json.dumps(doc))
    res = import_coco(cli, good_repo, ann, img_dir)
    assert_failed_cleanly(res, str(ann), "annotations[2]", "bbox")
    assert_unchanged(cli, good_repo, before)


def test_duplicate_image_ids(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    dup = doc["images"][0]["id"]
    doc["images"][3]["id"] = dup
    ann.write_text(json.dumps(doc))
    res = import_coco(cli, good_repo, ann, img_dir)
    line = assert_failed_cleanly(res, str(ann), "duplicate")
    assert str(dup) in line and "images[3]" in line
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_images_not_a_list(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    doc["images"] = {str(im["id"]): im for im in doc["images"]}
    ann.write_text(json.dumps(doc))
    res = import_coco(cli, good_repo, ann, img_dir)
    assert_failed_cleanly(res, str(ann), "images")
    assert_unchanged(cli, good_repo, before)


# ---------------------------------------------------------------------- series and tables


def _series(n_steps: int = 40, n_sensors: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (50 + rng.normal(0, 5, (n_steps, n_sensors))).astype(np.float32)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("fmt", ["npz", "csv"])
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_nan_or_inf_in_series(cli, good_repo, tmp_path, fmt, bad):
    before = _list(cli, good_repo)
    data = _series()
    data[17, 1] = bad
    path = tmp_path / f"sensors.{fmt}"
    if fmt == "npz":
        np.savez(path, data=data)
    else:
        def cell(v: float) -> str:
            return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.3f}")

        path.write_text("s0,s1,s2\n" + "\n".join(",".join(map(cell, row)) for row in data) + "\n")
    res = cli("data", "import", "timeseries", path, "--window", 10, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(path))
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_adjacency_of_wrong_shape(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    path = tmp_path / "sensors.npz"
    np.savez(path, data=_series(n_sensors=3))
    adj = tmp_path / "adj.npy"
    np.save(adj, np.eye(4, dtype=np.float32))
    res = cli("data", "import", "timeseries", path, "--adjacency", adj, "--window", 10,
              "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(adj), "adjacency")
    assert_unchanged(cli, good_repo, before)


def test_table_missing_label_column(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,kind\n1,2.5,x\n2,3.5,z\n")
    res = cli("data", "import", "table", csv, "--label", "target_col", "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(csv), "target_col")
    assert_unchanged(cli, good_repo, before)


# ---------------------------------------------------------------------------------- filters


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize(
    "where",
    [
        "category = = 'car'",
        "category = 'car' AND",
        # must not escape the WHERE clause it is placed in (this once added foreign data ids to a version)
        "category = 'car') OR (1=1",
        "1=0) UNION ALL SELECT 4000000::BIGINT, NULL::BIGINT WHERE (1=1",
        "category = 'car'; DROP VIEW v",
    ],
    ids=["double-equals", "dangling-and", "unbalanced-paren", "union-injection", "two-statements"],
)
def test_filter_that_does_not_parse(cli, good_repo, where):
    before = _list(cli, good_repo)
    res = cli("data", "filter", "good", "--where", where, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, "filter", "parse")
    assert_unchanged(cli, good_repo, before)


def test_filter_with_unknown_column(cli, good_repo):
    before = _list(cli, good_repo)
    res = cli("data", "filter", "good", "--where", "no_such_column > 3", "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, "no_such_column")
    assert_unchanged(cli, good_repo, before)


# -------------------------------------------------------------------------- unknown versions


UNKNOWN_VERSION_COMMANDS = {
    "show": lambda v: ["data", "show", v],
    "filter": lambda v: ["data", "filter", v, "--where", "category = 'car'", "--name", "bad"],
    "merge": lambda v: ["data", "merge", "good", v, "--name", "bad"],
    "diff": lambda v: ["data", "diff", "good", v],
    "lineage": lambda v: ["lineage", v],
    "export": lambda v: ["data", "export", v, "--format", "coco", "--out", "OUT"],
    # the other commands that take a version
    "add": lambda v: ["data", "add", v, "coco", "ANN", "--images", "IMG", "--name", "bad"],
    "update": lambda v: ["data", "update", v, "--coco", "ANN", "--name", "bad"],
    "prepare": lambda v: ["data", "prepare", v, "--resize", "32x32", "--name", "bad"],
    "tag": lambda v: ["data", "tag", v, "some-tag"],
}


@pytest.mark.parametrize("ref", ["no-such-version", "987654"], ids=["name", "numeric-id"])
@pytest.mark.parametrize("command", sorted(UNKNOWN_VERSION_COMMANDS))
def test_unknown_version(cli, good_repo, tmp_path, driving_small, command, ref):
    before = _list(cli, good_repo)
    out = tmp_path / "export-out"
    subs = {"OUT": str(out), "ANN": str(driving_small), "IMG": str(images_dir(driving_small))}
    args = [subs.get(a, a) for a in UNKNOWN_VERSION_COMMANDS[command](ref)]
    res = cli(*args, "--json", "--repo", good_repo)
    assert_failed_cleanly(res, ref)
    assert not (out.exists() and any(out.iterdir()))
    assert_unchanged(cli, good_repo, before)


# ----------------------------------------------------------------------- names and places


@pytest.mark.parametrize("command", ["import", "filter", "merge", "prepare"])
@pytest.mark.parametrize("taken", ["good", "golden"], ids=["version-name", "tag"])
def test_duplicate_name(cli, good_repo, tmp_path, driving_small, command, taken):
    before = _list(cli, good_repo)
    if command == "import":
        ann, img_dir, _ = small_coco(driving_small, tmp_path / "src")
        res = import_coco(cli, good_repo, ann, img_dir, name=taken)
    else:
        args = {
            "filter": ["data", "filter", "good", "--where", "category = 'car'"],
            "merge": ["data", "merge", "good", "golden"],
            "prepare": ["data", "prepare", "good", "--resize", "32x32"],
        }[command]
        res = cli(*args, "--name", taken, "--json", "--repo", good_repo)
    assert_failed_cleanly(res, repr(taken))
    assert_unchanged(cli, good_repo, before)


@pytest.mark.parametrize("exists", [True, False], ids=["empty-dir", "no-such-path"])
def test_import_with_repo_pointing_at_no_repository(cli, good_repo, tmp_path, driving_small, exists):
    before = _list(cli, good_repo)
    ann, img_dir, _ = small_coco(driving_small, tmp_path / "src")
    nowhere = tmp_path / "not-a-repo"
    if exists:
        nowhere.mkdir()
    res = import_coco(cli, nowhere, ann, img_dir, name="x")
    assert_failed_cleanly(res, str(nowhere))
    if exists:
        assert list(nowhere.iterdir()) == []  # nothing created there
    else:
        assert not nowhere.exists()
    assert_unchanged(cli, good_repo, before)


def test_list_without_repository(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    res = cli("data", "list", "--json", cwd=empty)
    assert_failed_cleanly(res, str(empty.resolve()))
    # the same, human output
    res = cli("data", "list", cwd=empty)
    assert_failed_cleanly(res, "repository", json_given=False)
    assert res.out == ""
    assert list(empty.iterdir()) == []
    assert_unchanged(cli, good_repo, before)


def test_export_into_non_empty_directory(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = cli("data", "export", "good", "--format", "coco", "--out", out, "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert_unchanged(cli, good_repo, before)


def test_export_onto_an_existing_file(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    out = tmp_path / "a-file"
    out.write_text("mine")
    res = cli("data", "export", "good", "--format", "coco", "--out", out, "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(out))
    assert out.read_text() == "mine"
    assert_unchanged(cli, good_repo, before)


# ------------------------------------------------------------ the same checks on add and update


def test_add_with_truncated_png(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    victim = doc["images"][4]["file_name"]
    _truncated_png(img_dir / victim)
    res = cli("data", "add", "good", "coco", ann, "--images", img_dir, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, victim)
    assert_unchanged(cli, good_repo, before)


def _update_malformed(doc, ann):
    ann.write_text(json.dumps(doc)[:-7])
    return [str(ann)]


def _update_missing_image_id(doc, ann):
    doc["annotations"][0]["image_id"] = 555555
    ann.write_text(json.dumps(doc))
    return [str(ann), "555555"]


def _update_box_outside(doc, ann):
    doc["annotations"][0]["bbox"] = [60, 60, 30, 30]
    ann.write_text(json.dumps(doc))
    return [str(ann), "bbox"]


def _update_unknown_file(doc, ann):
    doc["images"][0]["file_name"] = "not_in_version.png"
    ann.write_text(json.dumps(doc))
    return [str(ann), "not_in_version.png"]


@pytest.mark.parametrize(
    "damage",
    [_update_malformed, _update_missing_image_id, _update_box_outside, _update_unknown_file],
    ids=["malformed", "missing-image-id", "box-outside", "unknown-file"],
)
def test_update_with_bad_coco(cli, good_repo, tmp_path, driving_small, damage):
    before = _list(cli, good_repo)
    doc = json.loads(driving_small.read_text())
    ann = tmp_path / "relabel.json"
    needles = damage(doc, ann)
    res = cli("data", "update", "good", "--coco", ann, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, *needles)
    assert_unchanged(cli, good_repo, before)
