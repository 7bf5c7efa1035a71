"""Tests for the procedural demo data sets (veml.datasets)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from veml.datasets import (
    CAMERAS,
    CATEGORIES,
    CITIES,
    TIMES_OF_DAY,
    WEATHERS,
    Domain,
    TrafficData,
    generate_driving_coco,
    generate_traffic,
    render_scene,
    write_csv,
    write_npz,
)
from veml.datasets import driving

# ---------------------------------------------------------------- driving


def _render_many(domain: Domain, seed: int, n: int = 30, size=(64, 64)) -> np.ndarray:
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
    return np.stack([np.asarray(render_scene(r, domain, size)[0], np.float32) for r in rngs])


def _dir_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_driving_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    dom = Domain(city="tokyo", weather="rain", noise=0.02, blur=0.5)
    generate_driving_coco(tmp_path / "a", 6, seed=3, domain=dom)
    generate_driving_coco(tmp_path / "b", 6, seed=3, domain=dom)
    generate_driving_coco(tmp_path / "c", 6, seed=4, domain=dom)
    a, b, c = (_dir_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 7  # six images + annotations.json
    assert sum(a[k] != c[k] for k in a) >= 6


def test_driving_prefix_does_not_depend_on_n_images(tmp_path):
    generate_driving_coco(tmp_path / "short", 2, seed=9)
    generate_driving_coco(tmp_path / "long", 5, seed=9)
    for name in ("img_000001.png", "img_000002.png"):
        assert (tmp_path / "short/images" / name).read_bytes() == (tmp_path / "long/images" / name).read_bytes()


@pytest.mark.parametrize(
    "domain,size,fmt",
    [
        (Domain(), (64, 64), "png"),
        (Domain(city="phoenix", camera="tele", weather="fog"), (96, 64), "png"),
        (Domain(city="mumbai", camera="wide", time_of_day="night", weather="snow"), (80, 120), "jpg"),
    ],
)
def test_driving_coco_file_is_valid(tmp_path, domain, size, fmt):
    path = generate_driving_coco(tmp_path, 25, seed=1, domain=domain, size=size, image_id_start=100,
                                 file_prefix="cam", image_format=fmt, annotation_id_start=500)
    assert path == tmp_path / "annotations.json"
    coco = json.loads(path.read_text())
    assert [c["id"] for c in coco["categories"]] == [c["id"] for c in CATEGORIES]
    images = {im["id"]: im for im in coco["images"]}
    assert sorted(images) == list(range(100, 125))
    for im in coco["images"]:
        assert im["file_name"] == f"cam_{im['id']:06d}.{fmt}"
        assert (im["width"], im["height"]) == size
        for key in ("city", "camera", "weather", "time_of_day"):
            assert im[key] == getattr(domain, key)
        with Image.open(tmp_path / "images" / im["file_name"]) as f:
            assert f.size == size and f.mode == "RGB"
    anns = coco["annotations"]
    assert len(anns) > 25  # scenes are not empty on average
    ids = [a["id"] for a in anns]
    assert len(set(ids)) == len(ids) and min(ids) == 500
    for a in anns:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= im["width"] and y + h <= im["height"]
        assert a["area"] == pytest.approx(w * h)
        assert a["iscrowd"] == 0 and a["category_id"] in {1, 2, 3}


def test_driving_boxes_tightly_enclose_what_is_drawn(monkeypatch):
    """Redraw every object alone in white: its pixel extent must be its box."""
    drawn: list = []
    real = driving._draw_object

    def spy(d, o, paint, glow):
        if paint((1, 2, 3)) != (255, 255, 255):  # skip the renderer's own mask draws
            drawn.append(o)
        real(d, o, paint, glow)

    monkeypatch.setattr(driving, "_draw_object", spy)
    white = lambda c: (255, 255, 255)  # noqa: E731
    checked = 0
    for seed in range(40):
        for dom, size in ((Domain(city="mumbai"), (64, 64)), (Domain(camera="tele"), (128, 96))):
            drawn.clear()
            _, anns = render_scene(np.random.default_rng(seed), dom, size)
            assert len(drawn) == len(anns)
            for o, a in zip(drawn, anns):
                assert o.cat == a["category_id"]
                canvas = Image.new("RGB", size, (0, 0, 0))
                driving._draw_object(ImageDraw.Draw(canvas), o, white, white)
                mask = np.asarray(canvas).max(axis=2) > 0
                if o.cat == driving.SIGN:  # the pole is context, not part of the box
                    mask[o.box[3] + 1:, :] = False
                ys, xs = np.nonzero(mask)
                assert [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] == a["bbox"]
                checked += 1
    assert checked > 200


def test_driving_night_darker_fog_flatter_than_clear_day():
    day = _render_many(Domain(), 0)
    night = _render_many(Domain(time_of_day="night"), 0)
    dusk = _render_many(Domain(time_of_day="dusk"), 0)
    fog = _render_many(Domain(weather="fog"), 0)
    assert night.mean() < 0.3 * day.mean()
    assert night.mean() < dusk.mean() < day.mean()
    contrast = lambda a: a.std(axis=(1, 2, 3)).mean()  # noqa: E731
    assert contrast(fog) < 0.6 * contrast(day)
    assert fog.mean() > day.mean()  # fog lifts the dark road toward grey


def test_driving_same_domain_seeds_closer_than_different_domains():
    def feature(a):
        return np.concatenate([a.mean(axis=(0, 1, 2)), [a.std(axis=(1, 2, 3)).mean()]])

    ams0, ams1 = feature(_render_many(Domain(), 0)), feature(_render_many(Domain(), 1))
    within = np.linalg.norm(ams0 - ams1)
    for other in (Domain(city="phoenix"), Domain(city="tokyo"), Domain(city="mumbai"),
                  Domain(weather="rain"), Domain(weather="snow"), Domain(camera="wide")):
        between = np.linalg.norm(ams0 - feature(_render_many(other, 1)))
        assert between > 3 * within, other


def test_driving_cameras_change_object_size_and_count():
    def stats(camera):
        areas, counts = [], []
        for s in range(60):
            _, anns = render_scene(np.random.default_rng(s), Domain(camera=camera), (64, 64))
            counts.append(len(anns))
            areas += [a["bbox"][2] * a["bbox"][3] for a in anns if a["category_id"] == 1]
        return np.mean(areas), np.mean(counts)

    tele, front, wide = stats("tele"), stats("front"), stats("wide")
    assert tele[0] > 1.5 * front[0] and front[0] > 1.5 * wide[0]  # zoom makes cars larger
    assert tele[1] < front[1] < wide[1]  # ... and fewer


def test_driving_class_mix_and_noise_blur():
    cats = []
    for s in range(20):
        _, anns = render_scene(np.random.default_rng(s), Domain(class_mix=(0.0, 1.0, 0.0)), (64, 64))
        cats += [a["category_id"] for a in anns]
    assert cats and set(cats) == {2}

    def roughness(a):
        return np.abs(np.diff(a, axis=2)).mean()

    clear = _render_many(Domain(), 0, n=10)
    assert roughness(_render_many(Domain(blur=1.5), 0, n=10)) < 0.7 * roughness(clear)
    assert roughness(_render_many(Domain(noise=0.1), 0, n=10)) > 1.5 * roughness(clear)


def test_driving_every_domain_combination_renders():
    for city in CITIES:
        for camera in CAMERAS:
            for weather in WEATHERS:
                for tod in TIMES_OF_DAY:
                    img, anns = render_scene(np.random.default_rng(0), Domain(city, camera, weather, tod), (32, 24))
                    assert img.size == (32, 24) and img.mode == "RGB"
                    for a in anns:
                        x, y, w, h = a["bbox"]
                        assert w >= 2 and h >= 2 and x + w <= 32 and y + h <= 24


@pytest.mark.parametrize("bad", [dict(city="atlantis"), dict(camera="fisheye"), dict(weather="hail"),
                                 dict(time_of_day="noon"), dict(noise=-1.0), dict(class_mix=(0.0, 0.0, 0.0))])
def test_driving_rejects_unknown_domain(bad):
    with pytest.raises(ValueError):
        render_scene(np.random.default_rng(0), Domain(**bad), (64, 64))


# ---------------------------------------------------------------- traffic

WEEK = 288 * 7


def test_traffic_shapes_dtypes_and_determinism():
    d = generate_traffic(12, 600, seed=5, missing_rate=0.05)
    assert isinstance(d, TrafficData)
    assert d.speeds.shape == (600, 12) and d.speeds.dtype == np.float32
    assert d.timestamps.shape == (600,) and d.timestamps.dtype == np.int64
    assert d.timestamps[0] == 1_704_067_200 and np.all(np.diff(d.timestamps) == 300)
    assert len(d.sensor_ids) == 12 == len(set(d.sensor_ids))
    assert d.adjacency.shape == (12, 12) and d.adjacency.dtype == np.float32
    again = generate_traffic(12, 600, seed=5, missing_rate=0.05)
    assert np.array_equal(d.speeds, again.speeds) and np.array_equal(d.adjacency, again.adjacency)
    assert not np.array_equal(d.speeds, generate_traffic(12, 600, seed=6, missing_rate=0.05).speeds)


@pytest.mark.parametrize("network", ["grid", "ring", "corridor", "random"])
def test_traffic_plausible_speeds_and_rush_hour(network):
    d = generate_traffic(16, WEEK, seed=2, network=network)
    s = d.speeds
    assert np.isfinite(s).all() and (s > 0).all()  # no missing when missing_rate=0
    assert s.min() >= 3.0 and s.max() <= 85.0
    hour = (d.timestamps % 86400) / 3600.0
    weekday = ((d.timestamps // 86400) + 3) % 7 < 5
    at = lambda h, days: s[(hour == h) & days].mean()  # noqa: E731
    assert 55 < at(3.0, weekday) < 72  # free flow at night
    assert at(8.0, weekday) < at(3.0, weekday) - 10  # morning rush-hour dip
    assert at(17.5, weekday) < at(3.0, weekday) - 10  # evening dip
    assert at(8.0, ~weekday) > at(8.0, weekday) + 5  # lighter weekend


def test_traffic_demand_scales_congestion():
    hour = lambda d: (d.timestamps % 86400) / 3600.0  # noqa: E731
    light, heavy = generate_traffic(10, 288, demand=0.3), generate_traffic(10, 288, demand=1.5)
    assert heavy.speeds[hour(heavy) == 8.0].mean() < light.speeds[hour(light) == 8.0].mean() - 10


@pytest.mark.parametrize("rate", [0.02, 0.2])
def test_traffic_missing_rate(rate):
    s = generate_traffic(30, WEEK, seed=1, missing_rate=rate).speeds
    assert abs((s == 0.0).mean() - rate) < 0.25 * rate
    assert np.isfinite(s).all() and s[s > 0].min() >= 3.0


@pytest.mark.parametrize("network", ["grid", "ring", "corridor", "random"])
def test_traffic_adjacency_properties(network):
    d = generate_traffic(25, 10, network=network, seed=4)
    a = d.adjacency
    assert np.array_equal(a, a.T)  # symmetric: undirected road distance
    assert np.all(np.diag(a) == 1.0)  # exp(0) on the diagonal
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert not np.any((a > 0) & (a < 0.1))  # thresholded
    for u, v in d.edges:  # road neighbours are always linked
        assert a[u, v] > 0
    # connected: the non-zero pattern reaches every sensor
    reach = np.eye(25, dtype=bool)[0]
    for _ in range(25):
        reach = reach | ((a > 0) & reach[:, None]).any(0)
    assert reach.all()


def test_traffic_networks_differ():
    adj = {n: generate_traffic(20, 5, network=n).adjacency for n in ("grid", "ring", "corridor", "random")}
    names = list(adj)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not np.array_equal(adj[x] > 0, adj[y] > 0), (x, y)


def test_traffic_incident_drops_locally_and_spills_upstream_later():
    # Separate random streams: the only difference between the two runs is
    # the incidents, so `diff` isolates their effect exactly. Corridor flow
    # goes 0 -> 1 -> ... so the upstream neighbour of sensor j is j-1.
    kw = dict(n_sensors=16, n_steps=288 * 4, seed=7, network="corridor", demand=0.0)
    base, inc = generate_traffic(incident_rate=0.0, **kw), generate_traffic(incident_rate=0.4, **kw)
    assert len(base.incidents) == 0 and len(inc.incidents) > 3
    assert {tuple(e) for e in inc.edges} == {(i, i + 1) for i in range(15)}
    diff = inc.speeds.astype(float) - base.speeds.astype(float)
    checked = 0
    for s0, j, dur, _ in inc.incidents.astype(int):
        others = [o for o in inc.incidents.astype(int) if o[0] != s0 or o[1] != j]
        # Jams only travel upstream, so only incidents at or downstream of
        # j-1 that are close in time can interfere with this one.
        clash = any(o[1] >= j - 1 and o[0] < s0 + dur + 40 and o[0] + o[2] > s0 - 60 for o in others)
        if clash or j == 0 or s0 < 2 or s0 + dur + 30 >= len(diff) or dur < 3:
            continue
        assert diff[s0, j] < -20  # sharp local drop
        assert abs(diff[s0, j - 1]) < 1e-3  # upstream not yet affected (lag) ...
        assert diff[s0 + 2, j - 1] < -5  # ... but soon is
        if j < 15:  # jams travel against the flow only: downstream is untouched
            assert np.abs(diff[s0: s0 + dur, j + 1]).max() < 1e-3
        assert abs(diff[s0 + dur + 30, j]) < 1.0  # recovered within 2.5 hours
        checked += 1
    assert checked >= 3


def test_traffic_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate_traffic(network="hexagon")
    with pytest.raises(ValueError):
        generate_traffic(missing_rate=1.0)


def test_traffic_npz_and_csv_round_trip(tmp_path):
    d = generate_traffic(7, 50, seed=3, missing_rate=0.1)
    p = write_npz(d, tmp_path / "traffic")  # suffix is added
    assert p == tmp_path / "traffic.npz"
    with np.load(p) as z:  # loads without pickle
        assert np.array_equal(z["data"], d.speeds) and z["data"].dtype == np.float32
        assert np.array_equal(z["timestamps"], d.timestamps)
        assert tuple(z["sensor_ids"].tolist()) == d.sensor_ids
        assert np.array_equal(z["adjacency"], d.adjacency)

    c = write_csv(d, tmp_path / "speeds.csv", adjacency_path=tmp_path / "adj.csv")
    with c.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", *d.sensor_ids] and len(rows) == 51
    table = np.array(rows[1:], dtype=float)
    assert np.array_equal(table[:, 0].astype(np.int64), d.timestamps)
    assert np.allclose(table[:, 1:], d.speeds, atol=1e-4)
    assert np.array_equal(table[:, 1:] == 0.0, d.speeds == 0.0)
    with (tmp_path / "adj.csv").open() as f:
        adj_rows = list(csv.reader(f))
    assert adj_rows[0] == list(d.sensor_ids)
    assert np.allclose(np.array(adj_rows[1:], dtype=float), d.adjacency, atol=1e-5)
