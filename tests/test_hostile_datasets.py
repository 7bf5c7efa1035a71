"""Hostile dataset files through the real CLI (issue 13, points 4, 5 and part of 6).

Paths stay inside their root (absolute names, ``..``, escaping symlinks, FIFOs, devices, oversized
files); images are checked before they are trusted (pixel cap from the header, a decode check for
corrupt payloads, ``verify --deep``, checkout naming the bad sample); duplicate COCO categories,
bad table column names and complex numbers are refused.  Every refusal is exit 1, one ``error:``
line, and the repository unchanged, as in tests/test_bad_input.py.  Cases that could hang (FIFOs,
devices) run the CLI as a real process under a timeout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import veml
from conftest import PARSER_LEVEL, Result, VEML_BIN, assert_failed_cleanly, images_dir

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def template(tmp_path_factory, driving_small) -> Path:
    from veml.cli.main import main

    root = tmp_path_factory.mktemp("hostile_template") / "repo"
    assert main(["init", str(root)]) == 0
    assert main(["--repo", str(root), "data", "import", "coco", str(driving_small),
                 "--images", str(images_dir(driving_small)), "--name", "good"]) == 0
    return root


@pytest.fixture
def good_repo(template, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(template, root)
    return root


# the bad-input suite's own helpers: one definition of 'unchanged' and of a small COCO copy
from test_bad_input import _list, assert_unchanged, small_coco  # noqa: E402


def import_coco(cli, repo, ann, img_dir, *extra, name="bad"):
    return cli("data", "import", "coco", ann, "--images", img_dir, "--name", name, "--json", "--repo", repo, *extra)


def cli_process(*args, env: dict | None = None, timeout: float = 60) -> Result:
    """The installed CLI as a real process: a hang is a test failure, not a stuck suite."""
    try:
        p = subprocess.run([VEML_BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail(f"veml {' '.join(map(str, args))} hung for {timeout} s")
    return Result(p.returncode, p.stdout, p.stderr)


def image_folder(dest: Path, n: int = 2) -> Path:
    """DIR/<class>/<image>.png: ``n`` small good images in class ``a``."""
    cls = dest / "a"
    cls.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(cls / f"ok{i}.png")
    return dest


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        out.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def png_bytes(size: int = 16) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A few hundred bytes whose header claims ``width`` x ``height`` pixels (valid CRCs)."""
    chunks = _chunks(png_bytes())
    t, d = chunks[0]
    chunks[0] = (t, struct.pack(">II", width, height) + d[8:])
    return _png(chunks)


def garbage_idat_png() -> bytes:
    """A valid header and valid chunk CRCs around pixel data that is not a zlib stream."""
    rnd = random.Random(3)
    return _png([(t, bytes(rnd.randrange(256) for _ in d) if t == b"IDAT" else d) for t, d in _chunks(png_bytes())])


def truncated_jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()
    return data[: len(data) * 2 // 3]


# ------------------------------------------------------------------------ point 4: COCO paths


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_coco_absolute_file_name_is_refused(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    outside = tmp_path / "outside.png"
    shutil.copyfile(img_dir / doc["images"][1]["file_name"], outside)
    doc["images"][1]["file_name"] = str(outside)
    ann.write_text(json.dumps(doc))
    assert_failed_cleanly(import_coco(cli, good_repo, ann, img_dir), "images[1].file_name", "absolute")
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_coco_dotdot_file_name_is_refused(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    shutil.copyfile(img_dir / doc["images"][2]["file_name"], tmp_path / "src" / "up.png")
    doc["images"][2]["file_name"] = "../up.png"
    ann.write_text(json.dumps(doc))
    assert_failed_cleanly(import_coco(cli, good_repo, ann, img_dir), "images[2].file_name", "'..'")
    assert_unchanged(cli, good_repo, before)


@posix_only
def test_coco_symlink_leaving_the_root_is_refused_unless_allowed(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    name = doc["images"][0]["file_name"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(img_dir / name, elsewhere / name)
    (img_dir / name).symlink_to(elsewhere / name)
    assert_failed_cleanly(import_coco(cli, good_repo, ann, img_dir), name, "symlink", "--follow-symlinks")
    assert_unchanged(cli, good_repo, before)
    ok = import_coco(cli, good_repo, ann, img_dir, "--follow-symlinks", name="linked")
    assert ok.code == 0, ok.err
    assert ok.json["samples"] == len(doc["images"])


@posix_only
def test_symlink_inside_the_root_is_fine(cli, good_repo, tmp_path, driving_small):
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    name = doc["images"][0]["file_name"]
    (img_dir / "sub").mkdir()
    shutil.move(img_dir / name, img_dir / "sub" / name)
    (img_dir / name).symlink_to(img_dir / "sub" / name)
    res = import_coco(cli, good_repo, ann, img_dir, name="inside")
    assert res.code == 0, res.err


@pytest.mark.embedded_only(PARSER_LEVEL)
@posix_only
def test_coco_fifo_annotation_file_does_not_hang(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    _, img_dir, _ = small_coco(driving_small, tmp_path / "src")
    fifo = tmp_path / "ann.json"
    os.mkfifo(fifo)
    res = cli_process("--repo", good_repo, "data", "import", "coco", fifo, "--images", img_dir, "--name", "bad", "--json")
    assert_failed_cleanly(res, str(fifo), "FIFO")
    assert_unchanged(cli, good_repo, before)


@posix_only
def test_coco_fifo_image_does_not_hang(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    name = doc["images"][1]["file_name"]
    (img_dir / name).unlink()
    os.mkfifo(img_dir / name)
    res = cli_process("--repo", good_repo, "data", "import", "coco", ann, "--images", img_dir, "--name", "bad", "--json")
    assert_failed_cleanly(res, name, "FIFO")
    assert_unchanged(cli, good_repo, before)


@posix_only
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_behind_an_allowed_symlink_is_not_read(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    name = doc["images"][0]["file_name"]
    (img_dir / name).unlink()
    (img_dir / name).symlink_to("/dev/zero")
    res = cli_process("--repo", good_repo, "data", "import", "coco", ann, "--images", img_dir, "--name", "bad",
                      "--json", "--follow-symlinks")
    assert_failed_cleanly(res, name, "device")
    assert_unchanged(cli, good_repo, before)


# ----------------------------------------------------------------- point 4: image folders, tables


@posix_only
def test_image_folder_symlink_leaving_the_root_is_refused(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    root = image_folder(tmp_path / "folder")
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (root / "a" / "link.png").symlink_to(secret)
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, "link.png", "symlink")
    (root / "a" / "link.png").unlink()
    (root / "b").symlink_to(tmp_path, target_is_directory=True)  # a whole class folder out of the root
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, "b", "symlink")
    assert_unchanged(cli, good_repo, before)


@posix_only
def test_fifo_in_an_image_folder_is_refused_not_skipped(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    root = image_folder(tmp_path / "folder")
    os.mkfifo(root / "a" / "pipe.png")
    res = cli_process("--repo", good_repo, "data", "import", "images", root, "--name", "bad", "--json")
    assert_failed_cleanly(res, "pipe.png", "FIFO")
    assert_unchanged(cli, good_repo, before)


def test_file_over_the_size_cap_is_refused(cli, good_repo, tmp_path, monkeypatch):
    before = _list(cli, good_repo)
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(200)))
    res = cli("data", "import", "table", csv, "--label", "y", "--name", "bad", "--json", "--repo", good_repo,
              "--max-file-mb", "0.001")
    assert_failed_cleanly(res, str(csv), "MiB limit", "--max-file-mb")
    root = image_folder(tmp_path / "folder")
    monkeypatch.setenv("VEML_MAX_FILE_MB", "0.0001")  # 104 bytes: smaller than any PNG here
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, "ok0.png", "VEML_MAX_FILE_MB")
    monkeypatch.setenv("VEML_MAX_FILE_MB", "lots")
    assert_failed_cleanly(cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo),
                          "VEML_MAX_FILE_MB")
    assert_unchanged(cli, good_repo, before)


# ---------------------------------------------------------------------------- point 5: images


def test_decompression_bomb_is_refused_from_its_header(cli, good_repo, tmp_path):
    before = _list(cli, good_repo)
    root = image_folder(tmp_path / "folder")
    (root / "a" / "bomb.png").write_bytes(bomb_png())
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
    line = assert_failed_cleanly(res, "bomb.png", "30000x30000", "--max-pixels")
    assert "DecompressionBomb" not in line
    assert_unchanged(cli, good_repo, before)


def test_pixel_cap_is_configurable(cli, good_repo, tmp_path, monkeypatch):
    before = _list(cli, good_repo)
    root = image_folder(tmp_path / "folder")  # 16x16 = 256 pixels each
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo, "--max-pixels", "255")
    assert_failed_cleanly(res, "ok0.png", "16x16", "255")
    monkeypatch.setenv("VEML_MAX_IMAGE_PIXELS", "100")
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, "ok0.png", "VEML_MAX_IMAGE_PIXELS")
    assert_unchanged(cli, good_repo, before)
    res = cli("data", "import", "images", root, "--name", "fits", "--json", "--repo", good_repo, "--max-pixels", "256")
    assert res.code == 0, res.err


@pytest.mark.parametrize("name, payload", [("garbage.png", garbage_idat_png), ("cut.jpg", truncated_jpeg)])
def test_corrupt_payload_behind_a_valid_header_is_refused_at_import(cli, good_repo, tmp_path, name, payload):
    before = _list(cli, good_repo)
    root = image_folder(tmp_path / "folder")
    (root / "a" / name).write_bytes(payload())
    res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, name, "not a readable image")
    assert_unchanged(cli, good_repo, before)


def test_corrupt_sample_is_named_by_checkout_and_verify_deep(cli, good_repo, tmp_path):
    """Imported without the decode check, a corrupt image is found by ``verify --deep``, and
    checkout names the sample instead of crashing."""
    root = image_folder(tmp_path / "folder")
    (root / "a" / "garbage.png").write_bytes(garbage_idat_png())
    res = cli("data", "import", "images", root, "--name", "fast", "--no-decode-check", "--json", "--repo", good_repo)
    assert res.code == 0, res.err
    with veml.open(good_repo) as repo:
        view = repo.data.checkout("fast")
        bad_id = next(int(d) for d, f in zip(view.data_ids, view.metadata()["file_name"].to_pylist()) if f.endswith("garbage.png"))
    assert cli("verify", "--json", "--repo", good_repo).json["ok"] is True  # bytes are as imported
    deep = cli("verify", "--deep", "--json", "--repo", good_repo)
    assert deep.code == 1
    assert [p for p in deep.json["problems"] if f"sample {bad_id} cannot be decoded" in p], deep.json
    res = cli("data", "show", "fast", "--grid", tmp_path / "grid.png", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, f"sample {bad_id} of version 'fast'", "cannot be decoded")


# ------------------------------------------------------------------------ point 6: other inputs


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_duplicate_coco_category_names_are_refused(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    first = doc["categories"][0]
    doc["categories"].append({"id": 999, "name": first["name"]})
    ann.write_text(json.dumps(doc))
    assert_failed_cleanly(import_coco(cli, good_repo, ann, img_dir), "duplicate category name", repr(first["name"]))
    doc["categories"][-1] = {"id": first["id"], "name": "other"}
    ann.write_text(json.dumps(doc))
    assert_failed_cleanly(import_coco(cli, good_repo, ann, img_dir), "duplicate category id")
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("header, needle", [
    ("a,,y", "empty name"),
    ("a,a,y", "duplicate column name 'a'"),
    ("a,A,y", "ignoring case"),
    ('a,"q""x",y', "double quote"),
    ("a,data_id,y", "reserved"),
    ("a,ANN_KIND,y", "reserved"),
])
def test_bad_table_column_names_are_refused(cli, good_repo, tmp_path, header, needle):
    before = _list(cli, good_repo)
    csv = tmp_path / "t.csv"
    csv.write_text(header + "\n1,2,p\n3,4,n\n")
    res = cli("data", "import", "table", csv, "--label", "y", "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(csv), needle)
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_bad_coco_extra_key_is_refused(cli, good_repo, tmp_path, driving_small):
    before = _list(cli, good_repo)
    ann, img_dir, doc = small_coco(driving_small, tmp_path / "src")
    doc["images"][0]["format"] = "shadowing a built-in column"
    ann.write_text(json.dumps(doc))
    assert_failed_cleanly(import_coco(cli, good_repo, ann, img_dir), "'format'", "reserved")
    assert_unchanged(cli, good_repo, before)


def test_column_names_that_need_quoting_work_everywhere(cli, good_repo, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("speed km/h,it's,été,y\n1,10,100,p\n5,20,200,n\n7,30,300,p\n")
    res = cli("data", "import", "table", csv, "--label", "y", "--name", "quoted", "--json", "--repo", good_repo)
    assert res.code == 0, res.err
    show = cli("data", "show", "quoted", "--json", "--repo", good_repo)
    assert show.code == 0, show.err
    assert set(show.json["stats"]["columns"]) == {"speed km/h", "it's", "été"}
    for where, n in (('"speed km/h" > 2', 2), ("\"it's\" = 20", 1), ("été >= 200", 2)):
        f = cli("data", "filter", "quoted", "--where", where, "--name", f"f{n}-{len(where)}", "--json", "--repo", good_repo)
        assert f.code == 0, (where, f.err)
        assert f.json["samples"] == n, where
    with veml.open(good_repo) as repo:
        assert repo.data.checkout("quoted").column("speed km/h") == [1, 5, 7]


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_complex_numbers_are_refused(cli, good_repo, tmp_path, traffic_npz):
    before = _list(cli, good_repo)
    with np.load(traffic_npz) as z:
        arrays = dict(z)
    data = arrays["data"].astype(np.complex64) + 1j
    bad = tmp_path / "complex.npz"
    np.savez(bad, **{**arrays, "data": data})
    res = cli("data", "import", "timeseries", bad, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(bad), "complex")
    n = arrays["data"].shape[1]
    adj = tmp_path / "adj.npy"
    np.save(adj, np.eye(n, dtype=np.complex128))
    res = cli("data", "import", "timeseries", traffic_npz, "--adjacency", adj, "--name", "bad", "--json", "--repo", good_repo)
    assert_failed_cleanly(res, str(adj), "complex")
    assert_unchanged(cli, good_repo, before)


def test_table_columns_named_like_builtin_fields_import_and_filter(cli, good_repo, tmp_path):
    """``width``/``height``/``format`` are ordinary features of a table: imported, filtered, read back."""
    csv = tmp_path / "t.csv"
    csv.write_text("width,height,format,y\n1,10,a,p\n5,20,b,n\n7,30,b,p\n")
    res = cli("data", "import", "table", csv, "--label", "y", "--name", "sized", "--json", "--repo", good_repo)
    assert res.code == 0, res.err
    for where, n in (("width > 2", 2), ("height = 10", 1), ("format = 'b' AND Width >= 7", 1)):
        f = cli("data", "filter", "sized", "--where", where, "--name", f"sized-{n}-{len(where)}", "--json", "--repo", good_repo)
        assert f.code == 0, (where, f.err)
        assert f.json["samples"] == n, where
    with veml.open(good_repo) as repo:
        view = repo.data.checkout("sized")
        assert view.column("width") == [1, 5, 7]
        assert view.to_numpy()[:, 1].tolist() == [10, 20, 30]


# ------------------------------------------------------- review: HDF5 links, zip and Parquet bombs


def _h5_with(path: Path, make) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        make(f)
    return path


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_hdf5_data_stored_outside_the_file_is_refused(cli, good_repo, tmp_path):
    import h5py

    before = _list(cli, good_repo)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(np.arange(16, dtype="<f4").tobytes())
    _h5_with(outside / "other.h5", lambda f: f.create_dataset("data", data=np.ones((8, 2), "f4")))
    root = tmp_path / "root"
    root.mkdir()
    cases = {
        "raw.h5": (lambda f: f.create_dataset("data", shape=(8, 2), dtype="<f4", external=[(str(secret), 0, 64)]),
                   "external storage"),
        "link.h5": (lambda f: f.__setitem__("data", h5py.ExternalLink(str(outside / "other.h5"), "/data")),
                    "ExternalLink"),
        "df.h5": (lambda f: f.__setitem__("df", h5py.ExternalLink(str(outside / "other.h5"), "/")), "ExternalLink"),
    }
    for name, (make, needle) in cases.items():
        h5 = _h5_with(root / name, make)
        res = cli("data", "import", "timeseries", h5, "--window", "4", "--name", "bad", "--json", "--repo", good_repo)
        assert_failed_cleanly(res, str(h5), needle)
    assert_unchanged(cli, good_repo, before)
    ok = _h5_with(root / "ok.h5", lambda f: f.create_dataset("data", data=np.ones((8, 2), "f4")))
    res = cli("data", "import", "timeseries", ok, "--window", "4", "--name", "fine", "--json", "--repo", good_repo)
    assert res.code == 0, res.err


def test_compressed_members_over_the_size_cap_are_refused(cli, good_repo, tmp_path):
    """npz and Parquet files of a few KiB that unpack past --max-file-mb (0.01 MiB here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    before = _list(cli, good_repo)
    cap = ("--max-file-mb", "0.01")
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, data=np.zeros((4096, 4), np.float32))
    assert bomb.stat().st_size < 10_000
    res = cli("data", "import", "timeseries", bomb, "--window", "4", "--name", "bad", "--json", "--repo", good_repo, *cap)
    assert_failed_cleanly(res, str(bomb), "unpacks to", "--max-file-mb")
    small = tmp_path / "small.npz"
    np.savez_compressed(small, data=np.ones((8, 2), np.float32))
    adj = tmp_path / "adj.npz"
    np.savez_compressed(adj, adjacency=np.zeros((1000, 1000), np.float32))
    assert adj.stat().st_size < 10_000
    res = cli("data", "import", "timeseries", small, "--adjacency", adj, "--window", "4", "--name", "bad", "--json",
              "--repo", good_repo, *cap)
    assert_failed_cleanly(res, str(adj), "unpacks to")
    table = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"a": np.zeros(100_000, np.int64), "y": ["p"] * 100_000}), table, compression="zstd")
    assert table.stat().st_size < 10_000
    res = cli("data", "import", "table", table, "--label", "y", "--name", "bad", "--json", "--repo", good_repo, *cap)
    assert_failed_cleanly(res, str(table), "unpacks to")
    assert_unchanged(cli, good_repo, before)
    res = cli("data", "import", "timeseries", small, "--window", "4", "--name", "fits-npz", "--json", "--repo", good_repo, *cap)
    assert res.code == 0, res.err


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_infinite_limits_are_refused(cli, good_repo, tmp_path, monkeypatch):
    before = _list(cli, good_repo)
    root = image_folder(tmp_path / "folder")
    for value in ("inf", "1e400"):
        res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo, "--max-file-mb", value)
        assert_failed_cleanly(res, "--max-file-mb", "positive finite")
    for env in ("VEML_MAX_IMAGE_PIXELS", "VEML_MAX_FILE_MB"):
        for value in ("inf", "1e400", "nan"):
            monkeypatch.setenv(env, value)
            res = cli("data", "import", "images", root, "--name", "bad", "--json", "--repo", good_repo)
            assert_failed_cleanly(res, env, "positive finite")
        monkeypatch.delenv(env)
    assert_unchanged(cli, good_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@posix_only
def test_config_swapped_for_a_fifo_after_its_check_does_not_hang(cli, good_repo, tmp_path, monkeypatch):
    """The config is replaced by a FIFO right after it is stat-ed: the read must not block on it."""
    import threading

    cfg = tmp_path / "m.json"
    cfg.write_text(json.dumps({"adapter": "sklearn", "task": "classification", "architecture": "logreg"}))
    real_stat, swapped = os.stat, []

    def stat_then_swap(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        if os.fspath(path) == str(cfg) and not swapped:
            swapped.append(True)
            os.unlink(cfg)
            os.mkfifo(cfg)
        return st

    monkeypatch.setattr(os, "stat", stat_then_swap)
    out: list = []
    worker = threading.Thread(target=lambda: out.append(
        cli("model", "add", "--name", "m", "--config", cfg, "--json", "--repo", good_repo)), daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():
        with open(cfg, "wb"):  # release the blocked reader
            pass
        worker.join(20)
        pytest.fail("model add blocked on a FIFO swapped in after the config was checked")
    assert swapped
    assert_failed_cleanly(out[0], str(cfg), "FIFO")
