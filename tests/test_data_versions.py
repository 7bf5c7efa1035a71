"""Data versions through the Python API: every operation, its lineage edge and its contents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import images_dir
from veml.errors import Conflict, FilterError, NotFound


def _import(repo, ann, name="v1", **kw):
    return repo.data.import_("coco", ann, name, images=images_dir(ann), **kw)


def test_import_coco_keeps_bytes_and_annotations(repo, driving_small):
    doc = json.loads(driving_small.read_text())
    v = _import(repo, driving_small)
    assert v.props["samples"] == len(doc["images"])
    assert v.props["annotations"] == len(doc["annotations"])
    assert set(v.props["columns"]) >= {"city", "camera", "weather", "time_of_day"}
    view = repo.data.checkout(v)
    table = view.samples_table()
    first = doc["images"][0]
    raw = (images_dir(driving_small) / first["file_name"]).read_bytes()
    assert table["payload"][0].as_py() == raw  # stored as imported, never re-encoded
    assert table["file_name"][0].as_py() == first["file_name"]
    boxes = view.annotations("boxes")
    assert boxes.num_rows == len(doc["annotations"])
    # one import is one contiguous id range
    ids = view.data_ids
    assert np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids)))


def test_filter_by_sample_and_annotation_columns(repo, driving_small):
    doc = json.loads(driving_small.read_text())
    _import(repo, driving_small)
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    with_ped = {a["image_id"] for a in doc["annotations"] if cats[a["category_id"]] == "pedestrian"}
    f = repo.data.filter("v1", "category = 'pedestrian'", "peds")
    assert f.props["samples"] == len(with_ped)
    assert f.parents == (repo.data.get("v1").id,)
    # all annotations of kept samples by default, only matching rows with keep_annotations=matching
    m = repo.data.filter("v1", "category = 'pedestrian'", "peds-only", keep_annotations="matching")
    anns = repo.data.checkout(m).annotations("boxes")
    assert set(anns["category"].to_pylist()) == {"pedestrian"}
    assert m.props["annotations"] == sum(1 for a in doc["annotations"] if cats[a["category_id"]] == "pedestrian")
    assert f.props["annotations"] > m.props["annotations"]
    big = repo.data.filter("v1", "area > 40 AND width = 64", "big")
    expect = {a["image_id"] for a in doc["annotations"] if a["area"] > 40}
    assert big.props["samples"] == len(expect)


def test_merge_diff_add_and_lineage(repo, driving_small, driving_night):
    a = _import(repo, driving_small, "day")
    b = repo.data.import_("coco", driving_night, "night", images=images_dir(driving_night))
    m = repo.data.merge(["day", "night"], "both")
    assert m.props["samples"] == a.props["samples"] + b.props["samples"]
    assert repo.data.diff("day", "both").to_json() == {"added": b.props["samples"], "removed": 0, "common": a.props["samples"]}
    added = repo.data.add("day", "coco", driving_night, "day+night", images=images_dir(driving_night))
    assert added.props["samples"] == m.props["samples"]
    assert repo.data.diff("both", "day+night").added == b.props["samples"]  # new rows: different ids
    lin = repo.lineage.query("both", "up")
    assert {n.name for n in lin.nodes} == {"day", "night", "both"}
    assert sorted(e.kind for e in lin.edges) == ["MERGE_DATA", "MERGE_DATA"]
    down = repo.lineage.query("day", "down")
    assert {n.name for n in down.nodes} == {"day", "both", "day+night"}
    assert {n.name for n in repo.lineage.query("day", "down", hops=0).nodes} == {"day"}


def test_update_replaces_annotations_keeps_samples(repo, driving_small, tmp_path):
    _import(repo, driving_small)
    doc = json.loads(driving_small.read_text())
    doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] == 1][:5]
    new = tmp_path / "relabel.json"
    new.write_text(json.dumps(doc))
    u = repo.data.update("v1", new, "v1-relabelled")
    assert u.props["samples"] == repo.data.get("v1").props["samples"]
    assert u.props["annotations"] == 5
    assert repo.data.diff("v1", "v1-relabelled").to_json()["common"] == u.props["samples"]
    assert repo.lineage.query("v1-relabelled").edges[0].kind == "UPDATE_ANNOTATION"


def test_export_coco_round_trip(repo, driving_small, tmp_path):
    _import(repo, driving_small)
    repo.data.filter("v1", "category = 'car'", "cars")
    out = repo.data.export("cars", "coco", tmp_path / "out")
    back = repo.data.import_("coco", out / "annotations.json", "cars-again", images=out / "images")
    a, b = repo.data.checkout("cars"), repo.data.checkout(back)
    assert a.samples_table()["content_hash"].to_pylist() == b.samples_table()["content_hash"].to_pylist()
    assert a.annotations("boxes").num_rows == b.annotations("boxes").num_rows
    assert b.node.props["columns"] == a.node.props["columns"]


def test_image_folder_import_and_export(repo, tmp_path):
    from PIL import Image

    src = tmp_path / "folder"
    for cls in ("cat", "dog"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(src / cls / f"{i}.png")
    v = repo.data.import_("images", src, "pets")
    assert v.props["samples"] == 6 and v.props["category_ids"] == {"cat": 1, "dog": 2}
    assert repo.data.checkout(v).labels() == ["cat"] * 3 + ["dog"] * 3
    out = repo.data.export("pets", "images", tmp_path / "exp")
    assert sorted(p.parent.name for p in out.rglob("*.png")) == ["cat"] * 3 + ["dog"] * 3


def test_table_import_filter_prepare(repo, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,kind,y\n1,2.5,x,yes\n2,,z,no\n3,4.5,x,yes\n,1.0,z,no\n")
    v = repo.data.import_("table", csv, "tab", label="y")
    assert v.props["modality"] == "table" and v.props["samples"] == 4
    assert v.props["columns"] == {"a": "BIGINT", "b": "DOUBLE", "kind": "VARCHAR"}
    f = repo.data.filter("tab", "kind = 'x' AND category = 'yes'", "tab-x")
    assert f.props["samples"] == 2
    p = repo.data.prepare("tab", "tab-prep", [{"op": "impute", "strategy": "mean"}])
    x = repo.data.checkout(p).to_numpy()
    assert x.shape == (4, 3) and not np.isnan(x[:, :2]).any()
    assert x[3, 0] == pytest.approx(2.0) and x[1, 1] == pytest.approx((2.5 + 4.5 + 1.0) / 3)
    raw = repo.data.checkout("tab").to_numpy()
    assert np.isnan(raw[3, 0])  # the base version and its rows are untouched


def test_timeseries_import_windows_and_adjacency(repo, traffic_npz):
    v = repo.data.import_("timeseries", traffic_npz, "traffic", window=288)
    assert v.props["modality"] == "series" and v.props["samples"] == 4
    assert len(v.props["sensors"]) == 12 and len(v.props["adjacency"]) == 64
    view = repo.data.checkout(v)
    arr = view.to_numpy()
    with np.load(traffic_npz) as z:
        data = z["data"]
    assert arr.shape == (4, 288, 12)
    assert np.array_equal(arr[1], data[288:576])
    series = view.annotations("series")
    assert series.num_rows == 4 * 12
    assert int(np.sum(series["missing"].to_numpy())) == int((data[: 4 * 288] == 0).sum())
    busy = repo.data.filter("traffic", "sensor = 's0' AND missing > 0", "gappy")
    assert busy.props["samples"] <= 4
    prepared = repo.data.prepare("traffic", "traffic-ffill", [{"op": "impute", "strategy": "ffill"}])
    filled = repo.data.checkout(prepared).to_numpy()
    assert (filled == 0).sum() < (arr == 0).sum()


def test_prepare_images_resize_normalize_and_boxes_scale(repo, driving_small):
    _import(repo, driving_small)
    p = repo.data.prepare("v1", "v1-32", [{"op": "resize", "width": 32, "height": 32}, {"op": "normalize"}])
    steps = p.props["preparation"]
    assert steps[1]["op"] == "normalize" and len(steps[1]["mean"]) == 3  # numbers recorded, not recomputed later
    view = repo.data.checkout(p)
    x = view.to_numpy()
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1.0) < 0.1
    raw = repo.data.checkout("v1")[0].annotations
    half = view[0].annotations
    assert half[0]["bbox_w"] == pytest.approx(raw[0]["bbox_w"] / 2)


def test_tags_resolve_and_protect_names(repo, driving_small):
    v = _import(repo, driving_small)
    repo.data.tag("v1", "baseline")
    assert repo.data.get("baseline").id == v.id
    assert repo.data.get(str(v.id)).name == "v1"
    with pytest.raises(Conflict):
        repo.data.tag("v1", "baseline")
    with pytest.raises(Conflict):
        _import(repo, driving_small, "v1")
    with pytest.raises(NotFound):
        repo.data.get("nope")
    repo.data.untag("baseline")
    with pytest.raises(NotFound):
        repo.data.get("baseline")


def test_filter_errors_name_the_problem(repo, driving_small):
    _import(repo, driving_small)
    with pytest.raises(FilterError, match="nosuch"):
        repo.data.filter("v1", "nosuch = 1", "x")
    with pytest.raises(FilterError, match="parse"):
        repo.data.filter("v1", "category = = 'car'", "x")
    with pytest.raises(FilterError):
        repo.data.filter("v1", "len((SELECT * FROM read_csv('/etc/passwd'))) > 0", "x")
    assert [n.name for n in repo.data.list()] == ["v1"]


def test_torch_dataset_when_torch_installed(repo, driving_small):
    torch = pytest.importorskip("torch")
    _import(repo, driving_small)
    ds = repo.data.checkout("v1").to_torch()
    x, anns = ds[0]
    assert isinstance(x, torch.Tensor) and tuple(x.shape) == (3, 64, 64)
    assert len(ds) == 40


def test_timeseries_csv_and_h5_match_npz(repo, tmp_path):
    import h5py

    from veml.datasets import generate_traffic, write_csv, write_npz

    data = generate_traffic(n_sensors=6, n_steps=96 * 3, seed=11)
    csv = write_csv(data, tmp_path / "t.csv", adjacency_path=tmp_path / "adj.csv")
    npz = write_npz(data, tmp_path / "t.npz")
    h5 = tmp_path / "t.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = data.speeds
        f["timestamps"] = data.timestamps
        f["sensor_ids"] = np.array(data.sensor_ids, dtype="S")
    a = repo.data.import_("timeseries", npz, "ts-npz", window=96)
    b = repo.data.import_("timeseries", csv, "ts-csv", window=96, adjacency=tmp_path / "adj.csv")
    c = repo.data.import_("timeseries", h5, "ts-h5", window=96)
    assert a.props["sensors"] == b.props["sensors"] == c.props["sensors"] == list(data.sensor_ids)
    xa, xb, xc = (repo.data.checkout(v).to_numpy() for v in (a, b, c))
    assert xa.shape == (3, 96, 6)
    assert np.array_equal(xa, xc)
    assert np.allclose(xa, xb, atol=1e-4)  # the CSV holds 4 decimals
    assert a.props["adjacency"] and b.props["adjacency"]
    first = repo.data.checkout(b).samples_table()["meta"][0].as_py()
    assert json.loads(first)["window_start"] == int(data.timestamps[0])
