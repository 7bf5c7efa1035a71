"""The REST API (issue 6, first part) over real HTTP: uvicorn in a thread on a free loopback port.

One small repository is built with the Python API (generated driving scenes, two small tables, a
tiny classifier lifecycle); answers are compared with what the CLI prints with ``--json`` for the
same versions, and with ``repo.inference.run`` for an uploaded image.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import veml
from conftest import ok, write_table
from live_server import LiveServer
from veml.datasets import Domain, generate_driving_coco
from veml.errors import InvalidInput
from veml.server.main import build_server, serve

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
CLASSIFIER = {"adapter": "torch", "task": "classification", "architecture": "efficientnet_lite0",
              "parameters": {"pretrained": True, "freeze_backbone": True, "label_column": "time_of_day", "image_size": 64}}
TOKEN = "s3cret-token"


class Running(LiveServer):
    def __init__(self, root, token=None):
        super().__init__(root, token)
        self.app = self.server.config.app

    def raw(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        """A request sent byte for byte as given (no client-side normalisation of '..')."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, body

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("server")
    root = base / "repo"
    repo = veml.init(root)
    day = generate_driving_coco(base / "day", 24, seed=7, file_prefix="day")
    night = generate_driving_coco(base / "night", 16, seed=8, file_prefix="night",
                                  domain=Domain(city="tokyo", time_of_day="night", weather="rain"))
    probe = generate_driving_coco(base / "probe", 4, seed=9, file_prefix="probe", domain=Domain(time_of_day="night"))
    repo.data.import_("coco", day, "day", images=day.parent / "images")
    repo.data.import_("coco", night, "night", role="test", images=night.parent / "images")
    repo.data.import_("coco", probe, "probe", role="test", images=probe.parent / "images")
    repo.data.merge(["day", "night"], "both")
    repo.data.import_("table", write_table(base / "ta.csv", 0.0, 1), "table-a", label="y")
    repo.data.import_("table", write_table(base / "tb.csv", 3.0, 2), "table-b", label="y")
    repo.models.add("clf", CLASSIFIER)
    # evaluated on the 4-image probe version, so the deployment's side-by-side check stays small
    repo.training.train("both", "clf", sets=["max_steps=3", "batch_size=8"], test="probe", name="clf-run")
    repo.inference.deploy("clf-run", name="clf-onnx")
    repo.inference.predict("clf-onnx", "night", name="clf-on-night")
    srv = Running(root)
    yield {"root": root, "base": base, "repo": repo, "srv": srv, "api": srv.http}
    srv.stop()
    repo.close()


@pytest.fixture(scope="module")
def guarded(world):
    srv = Running(world["root"], token=TOKEN)
    yield srv
    srv.stop()


def get(world, path, status=200, **kw):
    r = world["api"].get(path, **kw)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def post(world, path, body, status=201):
    r = world["api"].post(path, json=body)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def error(world, method, path, status, **kw):
    r = world["api"].request(method, path, **kw)
    assert r.status_code == status, (path, r.status_code, r.text)
    assert set(r.json()) == {"error"} and r.json()["error"], r.text
    return r.json()["error"]


# --- versions, pagination ---------------------------------------------------------------------------------
def test_versions_paginate_and_match_the_cli(world):
    root = world["root"]
    full = get(world, "/versions", params={"limit": 500})
    assert set(full) == {"items", "total", "limit", "offset"} and full["total"] == len(full["items"])
    assert get(world, "/versions")["limit"] == 50
    part = get(world, "/versions", params={"limit": 3, "offset": 2})
    assert part["items"] == full["items"][2:5] and part["total"] == full["total"]
    assert get(world, "/versions", params={"offset": 10_000})["items"] == []
    data = get(world, "/versions", params={"kind": "data", "limit": 500})
    assert data["items"] == ok("data", "list", "--repo", root) and data["total"] == len(data["items"])
    two = get(world, "/versions", params=[("kind", "model"), ("kind", "inference")])
    assert {v["kind"] for v in two["items"]} == {"model", "inference"}
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"kind": "nonsense"}, {"limit": "x"}):
        error(world, "GET", "/versions", 422, params=bad)
    by_name = get(world, "/versions/day")
    assert by_name == get(world, f"/versions/{by_name['id']}") and by_name["samples"] == 24
    assert "no such" not in error(world, "GET", "/versions/no-such-version", 404)


def test_data_stats_and_samples(world):
    root = world["root"]
    assert get(world, "/data/day/stats") == ok("data", "show", "day", "--repo", root)
    error(world, "GET", "/data/clf/stats", 404)  # a model is not a data version
    page = get(world, "/data/night/samples", params={"limit": 5, "offset": 3})
    assert page["total"] == 16 and page["version"] == get(world, "/versions/night")["id"] and len(page["items"]) == 5
    row = page["items"][0]
    assert "payload" not in row and row["meta"]["time_of_day"] == "night" and row["file_name"].startswith("night_")
    assert row["annotations"] and {a["kind"] for a in row["annotations"]} <= {"boxes", "labels"}
    assert all(a["data_id"] == row["data_id"] for a in row["annotations"])
    whole = get(world, "/data/night/samples", params={"limit": 500})["items"]
    assert [r["data_id"] for r in whole[3:8]] == [r["data_id"] for r in page["items"]]
    assert get(world, "/data/night/samples", params={"offset": 16})["items"] == []
    table = get(world, "/data/table-a/samples", params={"limit": 2})["items"]
    assert set(table[0]["meta"]) == {"a", "b", "c"} and table[0]["annotations"][0]["kind"] == "labels"


def test_image_endpoint_serves_only_stored_samples_of_that_version(world):
    base = world["base"]
    row = get(world, "/data/day/samples", params={"limit": 1})["items"][0]
    r = world["api"].get(f"/data/day/samples/{row['data_id']}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (base / "day" / "images" / row["file_name"]).read_bytes()  # bytes as stored
    assert world["api"].get(f"/data/both/samples/{row['data_id']}/image").content == r.content
    again = world["api"].get(f"/data/day/samples/{row['data_id']}/image", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    thumb = world["api"].get(f"/data/day/samples/{row['data_id']}/image", params={"thumbnail": 16})
    im = Image.open(io.BytesIO(thumb.content))
    assert thumb.headers["content-type"] == "image/png" and im.format == "PNG" and max(im.size) <= 16
    assert "not in version" in error(world, "GET", f"/data/night/samples/{row['data_id']}/image", 404)
    error(world, "GET", "/data/day/samples/999999/image", 404)
    error(world, "GET", "/data/day/samples/abc/image", 422)
    error(world, "GET", "/data/day/samples/-1/image", 422)
    error(world, "GET", f"/data/day/samples/{row['data_id']}/image", 422, params={"thumbnail": 2})
    tid = get(world, "/data/table-a/samples", params={"limit": 1})["items"][0]["data_id"]
    assert "not images" in error(world, "GET", f"/data/table-a/samples/{tid}/image", 400)


def test_sample_pages_filter_and_sort_with_the_cli_filter_language(world):
    """GET /data/{ref}/samples?where=&sort=&order=: the same samples as `veml data filter --where`, paged and sorted."""
    root = world["root"]
    where = "category = 'car' AND width >= 64"
    cli = ok("data", "filter", "day", "--where", where, "--name", "page-cars", "--repo", root)
    expected = [r["data_id"] for r in get(world, "/data/page-cars/samples", params={"limit": 500})["items"]]
    first = get(world, "/data/day/samples", params={"where": where, "limit": 3})
    assert first["total"] == cli["samples"] == len(expected) > 3 and first["where"] == where and first["sort"] is None
    rest = get(world, "/data/day/samples", params={"where": where, "limit": 500, "offset": 3})["items"]
    assert [r["data_id"] for r in first["items"] + rest] == expected
    assert all(any(a["category"] == "car" for a in r["annotations"]) for r in rest)
    table = get(world, "/data/table-a/samples", params={"limit": 500})["items"]
    by_b = get(world, "/data/table-a/samples", params={"sort": "b", "order": "desc", "limit": 7, "offset": 2})
    assert [r["data_id"] for r in by_b["items"]] == [r["data_id"] for r in sorted(table, key=lambda r: (-r["meta"]["b"], r["data_id"]))][2:9]
    assert by_b["sort"] == "b" and by_b["order"] == "desc" and by_b["total"] == 40
    newest = get(world, "/data/table-a/samples", params={"order": "desc", "limit": 5})["items"]
    assert [r["data_id"] for r in newest] == [r["data_id"] for r in table][::-1][:5]
    assert "unknown column" in error(world, "GET", "/data/day/samples", 400, params={"sort": "nope"})
    assert "does not parse" in error(world, "GET", "/data/day/samples", 400, params={"where": "width >"})
    error(world, "GET", "/data/day/samples", 400, params={"where": "1=1; DROP TABLE s"})
    error(world, "GET", "/data/day/samples", 422, params={"order": "sideways"})
    one = get(world, f"/data/day/samples/{expected[0]}")
    assert one["sample"] == first["items"][0] and one["series"] is None
    ids = {v["name"]: v["id"] for v in get(world, "/versions", params={"limit": 500})["items"]}
    assert ids["day"] in one["versions"] and ids["page-cars"] in one["versions"] and ids["night"] not in one["versions"]
    error(world, "GET", f"/data/night/samples/{expected[0]}", 404)


def test_prediction_outcomes_and_curves(world):
    """Every sample's outcome agrees with the stored confusion matrix; bad classes and sorts are one clean error."""
    pred = get(world, "/predictions/clf-on-night")
    m = pred["metrics"]
    every = get(world, "/predictions/clf-on-night/outcomes", params={"limit": 500, "sort": "confidence", "order": "asc"})
    assert every["total"] == pred["samples"] == len(every["items"]) and every["classes"] == m["classes"]
    assert [i["confidence"] for i in every["items"]] == sorted(i["confidence"] for i in every["items"])
    for a, t in enumerate(m["classes"]):
        for b, p in enumerate(m["classes"]):
            cell = get(world, "/predictions/clf-on-night/outcomes", params={"true": t, "pred": p})
            assert cell["total"] == m["confusion_matrix"][a][b] and all(i["correct"] == (t == p) for i in cell["items"])
    log_loss = sum(i["loss"] for i in every["items"]) / len(every["items"])
    assert log_loss == pytest.approx(m["log_loss"], rel=1e-4, abs=1e-6)
    curves = get(world, "/predictions/clf-on-night/curves")["curves"]
    assert [c["class"] for c in curves] == m["classes"]
    assert all(len(c["recall"]) == len(c["precision"]) == len(c["thresholds"]) <= 101 for c in curves)
    assert "unknown true class" in error(world, "GET", "/predictions/clf-on-night/outcomes", 400, params={"true": "nope"})
    error(world, "GET", "/predictions/clf-on-night/outcomes", 422, params={"sort": "nope"})
    assert "sort must be one of loss" in error(world, "GET", "/predictions/clf-on-night/outcomes", 400, params={"sort": "errors"})
    error(world, "GET", "/predictions/nope/curves", 404)


def test_filter_merge_and_tags(world):
    root = world["root"]
    cars = post(world, "/data/day/filter", {"where": "category = 'car'", "name": "api-cars"})
    assert cars == get(world, "/versions/api-cars") and cars["source"]["where"] == "category = 'car'"
    cli = ok("data", "filter", "day", "--where", "category = 'car'", "--name", "cli-cars", "--repo", root)
    assert set(cars) == set(cli) and cars["samples"] == cli["samples"] and cars["parents"] == cli["parents"]
    assert "already taken" in error(world, "POST", "/data/day/filter", 409, json={"where": "category = 'car'", "name": "api-cars"})
    error(world, "POST", "/data/day/filter", 400, json={"where": "no_such_column = 1", "name": "bad-filter"})
    error(world, "POST", "/data/day/filter", 422, json={"where": "category = 'car'"})
    error(world, "POST", "/data/day/filter", 422, json={"where": "x", "name": "y", "typo": 1})
    error(world, "POST", "/data/day/filter", 422, content=b"{not json", headers={"content-type": "application/json"})
    merged = post(world, "/data/merge", {"versions": ["api-cars", get(world, "/versions/night")["id"]], "name": "api-merged"})
    assert merged["kind"] == "data" and len(merged["parents"]) == 2 and merged["samples"] == cars["samples"] + 16
    error(world, "POST", "/data/merge", 422, json={"versions": ["day"], "name": "m1"})
    error(world, "POST", "/data/merge", 400, json={"versions": ["day", "table-a"], "name": "m2"})  # modalities differ
    error(world, "POST", "/data/merge", 404, json={"versions": ["day", "nope"], "name": "m3"})
    error(world, "POST", "/data/merge", 422, json=["day", "night"])
    tagged = post(world, "/versions/api-merged/tags", {"tag": "golden"}, status=200)
    assert "golden" in tagged["tags"] and get(world, "/versions/golden")["id"] == merged["id"]
    assert error(world, "POST", "/versions/day/tags", 409, json={"tag": "golden"})
    error(world, "POST", "/versions/day/tags", 400, json={"tag": "  "})
    error(world, "POST", "/versions/nope/tags", 404, json={"tag": "t2"})


def test_lineage_lifecycles_and_predictions(world):
    root = world["root"]
    lin = get(world, "/lineage/clf-onnx", params={"direction": "both", "hops": 2})
    assert lin == ok("lineage", "clf-onnx", "--both", "--hops", "2", "--repo", root)
    assert {n["kind"] for n in lin["nodes"]} >= {"inference", "training", "data", "model"}
    assert get(world, "/lineage/day")["direction"] == "up"
    error(world, "GET", "/lineage/day", 422, params={"direction": "sideways"})
    error(world, "GET", "/lineage/day", 422, params={"hops": -1})
    lcs = get(world, "/lifecycles")
    assert lcs["items"] == ok("lifecycle", "list", "--repo", root) and lcs["total"] == 1
    assert get(world, "/lifecycles", params={"offset": 1})["items"] == []
    pred = get(world, "/predictions/clf-on-night")
    assert pred["kind"] == "prediction" and pred["metrics"]["confusion_matrix"] and isinstance(pred["worst"], list)
    assert pred["key_metric"]["name"] == "accuracy"
    error(world, "GET", "/predictions/clf-onnx", 404)


# --- training: show, logs, stream -------------------------------------------------------------------------
def test_training_show_and_logs_match_the_cli(world):
    root = world["root"]
    assert get(world, "/training/clf-run") == ok("train", "show", "clf-run", "--repo", root)
    cli = ok("train", "log", "clf-run", "--repo", root)
    rows, after = [], 0
    while True:
        page = get(world, "/training/clf-run/logs", params={"after_id": after, "limit": 2})
        assert page["training"] == cli["training"] and page["status"] == "finished" and len(page["logs"]) <= 2
        rows += page["logs"]
        after = page["next_after_id"]
        if not page["more"]:
            break
    assert rows == cli["logs"] and len(rows) >= 3
    error(world, "GET", "/training/day/logs", 404)


def test_models_compare_puts_model_and_training_versions_side_by_side(world):
    model, run = get(world, "/versions/clf"), get(world, "/training/clf-run")
    c = get(world, "/models/compare", params=[("ref", "clf"), ("ref", str(run["id"]))])
    assert set(c) == {"versions", "rows", "differing"}
    assert c["versions"] == [{"id": model["id"], "name": "clf", "kind": "model", "model": model["id"]},
                             {"id": run["id"], "name": "clf-run", "kind": "training", "model": model["id"]}]
    rows = {(r["section"], r["key"]): r for r in c["rows"]}
    assert [r["section"] for r in c["rows"]] == sorted((r["section"] for r in c["rows"]), key=["model", "training", "metrics"].index)
    # model: the spec of /versions/clf, for the model and for the run that trained it
    spec = {k: model.get(k) for k in ("adapter", "task", "architecture", "backbone", "neck", "head")}
    spec.update({f"parameters.{k}": v for k, v in model["parameters"].items()})
    assert {k: r["values"] for (s, k), r in rows.items() if s == "model"} == {k: [v, v] for k, v in spec.items()}
    # training and metrics: what /training/clf-run shows; a model version has neither (null, never a difference)
    assert rows[("training", "params.max_steps")]["values"] == [None, 3] == [None, run["params"]["max_steps"]]
    assert rows[("training", "data")]["values"] == [None, run["data"]] and rows[("training", "status")]["values"] == [None, "finished"]
    metrics = {k: v for k, v in run["metrics"].items() if isinstance(v, (int, float))}
    assert {k: r["values"] for (s, k), r in rows.items() if s == "metrics"} == {k: [None, v] for k, v in metrics.items()}
    assert c["differing"] == 0 and not any(r["differs"] for r in c["rows"])
    # two runs of the same model with different settings differ where the settings do
    wide = world["repo"].models.add("clf-wide", {**CLASSIFIER, "parameters": {**CLASSIFIER["parameters"], "image_size": 96}})
    two = get(world, "/models/compare", params={"ref": ["clf", "clf-wide"]})
    assert [r["key"] for r in two["rows"] if r["differs"]] == ["parameters.image_size"]
    assert two["differing"] == 1 and two["versions"][1]["id"] == wide.id
    # a run logged with the SDK that names no model version: no model rows of its own, its params and metrics beside the other run's
    with world["repo"].start_run(name="sdk-run", data="both", params={"lr": 0.5}) as sdk:
        sdk.log_metric("accuracy", 0.25, step=1)
    logged = get(world, "/models/compare", params={"ref": ["clf-run", "sdk-run"]})
    assert logged["versions"][1]["model"] is None
    rows = {(r["section"], r["key"]): r for r in logged["rows"]}
    assert all(r["values"][1] is None and not r["differs"] for (s, _), r in rows.items() if s == "model")
    assert rows[("training", "params.lr")]["values"] == [run["params"]["lr"], 0.5] and rows[("training", "params.lr")]["differs"]
    assert rows[("metrics", "accuracy")]["values"] == [run["metrics"]["accuracy"], get(world, "/training/sdk-run")["metrics"]["accuracy"]]
    # bad references: one error line each
    before = get(world, "/versions", params={"limit": 500})["total"]
    assert "unknown model version or training version 'day'" in error(world, "GET", "/models/compare", 404, params={"ref": ["clf", "day"]})
    error(world, "GET", "/models/compare", 404, params={"ref": ["no-such-model"]})
    assert "named twice" in error(world, "GET", "/models/compare", 400, params={"ref": ["clf", str(model["id"])]})
    error(world, "GET", "/models/compare", 422)
    error(world, "GET", "/models/compare", 422, params={"ref": ["clf"] * 21})
    assert get(world, "/versions", params={"limit": 500})["total"] == before
    for refs, why in (([], "at least one"), (["clf"] * 21, "at most 20")):  # the Python API checks what the route's schema does
        with pytest.raises(InvalidInput, match=why):
            world["repo"].training.compare(refs)


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_stream_of_a_finished_run_and_of_a_live_one(world):
    events = _events(world["api"].get("/training/clf-run/stream").text)
    assert [e for e, _ in events[:-1]] == ["log"] * (len(events) - 1) and events[-1] == ("end", {"training": events[-1][1]["training"], "status": "finished"})
    assert [d for _, d in events[:-1]] == ok("train", "log", "clf-run", "--repo", world["root"])["logs"]
    g = world["repo"].stores.graph  # a run "in progress" in this process: the stream must follow it
    node = g.record("TrainingVersion", "live-run", {"data": 1, "model": 1, "task": "classification"})
    g.append_event(node.id, "running", {"pid": os.getpid(), "host": socket.gethostname()})
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(world["api"].get(f"/training/{node.id}/stream").text))
    reader.start()
    time.sleep(0.8)
    g.append_logs(node.id, [(1, 0, "loss", 0.9, time.time())])
    time.sleep(0.8)
    g.append_logs(node.id, [(2, 0, "loss", 0.5, time.time())])
    g.append_event(node.id, "finished", {"metrics": {}})
    reader.join(30)
    live = _events(got[0])
    assert [d["value"] for e, d in live if e == "log"] == [0.9, 0.5] and live[-1][1]["status"] == "finished"
    error(world, "GET", "/training/day/stream", 404)


# --- serving the deployed model -----------------------------------------------------------------------------
def test_predict_an_uploaded_image_like_repo_inference_run(world):
    api, repo = world["api"], world["repo"]
    _, _, td, preds = repo.inference.run("clf-onnx", "night")
    row = get(world, "/data/night/samples", params={"limit": 1, "offset": 5})["items"][0]
    png = api.get(f"/data/night/samples/{row['data_id']}/image").content
    expected = preds.scores[list(td.data_ids).index(row["data_id"])]
    r = api.post("/inference/clf-onnx/predict", files={"image": ("x.png", png, "image/png")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "classification" and out["class_names"] == ["day", "night"] and out["inference"] == get(world, "/versions/clf-onnx")["id"]
    np.testing.assert_allclose(out["scores"], expected, atol=1e-5)
    assert out["category"] == out["class_names"][int(np.argmax(expected))]
    raw = api.post("/inference/clf-onnx/predict", content=png, headers={"content-type": "image/png"}).json()
    np.testing.assert_allclose(raw["scores"], out["scores"], atol=1e-6)
    assert world["srv"].app.state.runners.loads == 1  # loaded once, by artifact digest
    from veml.adapters import onnx_run

    sessions = dict(onnx_run._SESSIONS)
    api.post("/inference/clf-onnx/predict", content=png, headers={"content-type": "image/png"})
    assert dict(onnx_run._SESSIONS) == sessions  # the onnxruntime session too: the same object, not rebuilt
    assert any(key[0] == get(world, "/versions/clf-onnx")["artifact"] for key in sessions)
    error(world, "POST", "/inference/clf-onnx/predict", 400, files={"image": ("x.png", b"not an image at all", "image/png")})
    error(world, "POST", "/inference/clf-onnx/predict", 400, files={"image": ("x.png", png[:40], "image/png")})
    error(world, "POST", "/inference/clf-onnx/predict", 400, files={"image": ("x.png", b"", "image/png")})
    error(world, "POST", "/inference/clf-onnx/predict", 400, files=[("image", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))])
    error(world, "POST", "/inference/clf-onnx/predict", 400, content=b"GIF89a....", headers={"content-type": "image/gif"})
    assert "serves a classification model" in error(world, "POST", "/inference/clf-onnx/predict", 400, json={"window": [[1.0, 2.0]]})
    error(world, "POST", "/inference/clf-onnx/predict", 422, json={"window": "x"})
    error(world, "POST", "/inference/clf-onnx/predict", 415, content=b"hello", headers={"content-type": "text/plain"})
    error(world, "POST", "/inference/clf-run/predict", 404, content=png, headers={"content-type": "image/png"})
    error(world, "POST", "/inference/nope/predict", 404, content=png, headers={"content-type": "image/png"})


# --- similarity and drift --------------------------------------------------------------------------------
def test_similar_drift_and_reports(world):
    sim = post(world, "/similar/table-a", {"top": 3})
    assert sim["target_name"] == "table-a" and [r["name"] for r in sim["ranking"]] == ["table-b"]
    assert {"target", "ranking", "method", "report"} <= set(sim)
    assert sim["ranking"] == sorted(sim["ranking"], key=lambda r: r["distance"])
    error(world, "POST", "/similar/table-a", 422, json={"top": 0})
    error(world, "POST", "/similar/table-a", 422, json={"method": "astrology"})
    # model scores look through each candidate's lifecycle: the classifier trained on "both", scored on "probe"
    as_is = post(world, "/similar/probe", {"method": "as_is"})
    assert as_is["method"] == "as_is" and [r["name"] for r in as_is["ranking"]] == ["both"]
    assert -1.0 <= as_is["ranking"][0]["distance"] <= 0.0  # the deployment's accuracy there, negated
    probe = post(world, "/similar/probe", {"method": "finetune_probe"})  # 4 images: keep-better holds none out
    assert probe["ranking"] == [] and "too few to hold any out" in probe["skipped"][0]["reason"]
    error(world, "POST", "/similar/nope", 404, json={})
    drift = post(world, "/drift", {"reference": "table-a", "test": "table-b", "method": "ks"})
    assert {"drift", "p_value", "statistic", "method", "report"} <= set(drift) and drift["drift"] is True
    bbsd = post(world, "/drift", {"test": "night", "inference": "clf-onnx"})
    assert bbsd["method"] == "bbsd" and bbsd["reference"] == get(world, "/versions/both")["id"]
    assert bbsd["reference_split"] == "training" and "fewer than the 5" in bbsd["warning"]  # its 4-sample test version is too few
    error(world, "POST", "/drift", 422, json={"reference": "table-a"})
    error(world, "POST", "/drift", 422, json={"test": "table-b", "method": "vibes"})
    error(world, "POST", "/drift", 400, json={"test": "table-b"})  # no reference and no inference
    error(world, "POST", "/drift", 400, json={"reference": "day", "test": "table-b"})  # modalities differ
    error(world, "POST", "/drift", 422, json={"reference": ["day"], "test": "table-b"})
    reports = get(world, "/reports", params={"kind": "drift"})
    assert {r["id"] for r in reports["items"]} >= {drift["report"], bbsd["report"]} and all(r["kind"] == "drift" for r in reports["items"])
    both = get(world, "/reports")
    assert both["total"] == reports["total"] + get(world, "/reports", params={"kind": "similarity"})["total"]
    error(world, "GET", "/reports", 422, params={"kind": "weather"})


# --- safety: traversal, tokens, bind rule, OpenAPI ----------------------------------------------------------
TRAVERSALS = ["..", "../..", "%2e%2e", "%2E%2E%2F%2E%2E", "..%2f..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd", "/etc/passwd",
              "..%5c..%5cwindows", "%252e%252e%252f", "meta.db", ".veml%2fconfig.toml", "%00", "day%00.png"]
TEMPLATES = ["/api/v1/versions/{}", "/api/v1/data/{}/stats", "/api/v1/data/{}/samples", "/api/v1/data/day/samples/{}/image",
             "/api/v1/data/{}/samples/0/image", "/api/v1/lineage/{}", "/api/v1/training/{}", "/api/v1/training/{}/logs",
             "/api/v1/predictions/{}"]


def test_path_traversal_never_reaches_the_filesystem(world):
    srv = world["srv"]
    for template in TEMPLATES:
        for attempt in TRAVERSALS:
            status, body = srv.raw(template.format(attempt))
            assert status in (400, 404, 422), (template, attempt, status, body)
            assert json.loads(body).get("error"), body
            assert b"root:" not in body and b"metadata_url" not in body
    r = world["api"].post("/data/%2e%2e/filter", json={"where": "1=1", "name": "x9"})
    assert r.status_code == 404 and "error" in r.json()
    error(world, "POST", "/data/merge", 404, json={"versions": ["../day", "/etc/passwd"], "name": "x10"})


def test_token_is_required_on_every_request(guarded):
    anon = httpx.Client(base_url=f"http://127.0.0.1:{guarded.port}/api/v1", timeout=30)
    for path in ("/versions", "/openapi.json", "/no-such-route", "/data/day/samples/0/image"):
        r = anon.get(path)
        assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert anon.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anon.get(path, headers={"Authorization": TOKEN}).status_code == 401
    assert anon.post("/data/merge", json={"versions": ["day", "night"], "name": "x"}).status_code == 401
    assert guarded.http.get("/versions").status_code == 200
    spec = guarded.http.get("/openapi.json").json()
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    anon.close()


def test_bind_rule_and_host_check(world, monkeypatch):
    import uvicorn

    from veml.server import create_app

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: pytest.fail("a refused bind started a server"))
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(InvalidInput, match="refuses to bind"):
            serve(world["root"], host=host, port=0)
        with pytest.raises(InvalidInput, match="refuses to bind"):
            build_server(world["root"], host, 0, token="   ")
    assert build_server(world["root"], "0.0.0.0", 0, token=TOKEN).config.host == "0.0.0.0"  # built, never started
    app = create_app(world["root"])
    assert app.openapi_url == "/api/v1/openapi.json" and app.docs_url is None
    app.state.repo.close()
    status, body = world["srv"].raw("/api/v1/versions", headers={"Host": "evil.example"})
    assert status == 400 and "Host" in json.loads(body)["error"]


ROUTES = {"GET /versions", "GET /versions/{ref}", "POST /versions/{ref}/tags", "GET /lineage/{ref}", "GET /lineage/{ref}/ids", "GET /lifecycles",
          "GET /reports", "GET /data/{ref}/stats", "GET /data/{ref}/samples", "GET /data/{ref}/samples/{data_id}/image",
          "GET /data/{ref}/samples/{data_id}", "GET /predictions/{ref}/outcomes", "GET /predictions/{ref}/curves",
          "POST /data/{ref}/filter", "POST /data/merge", "GET /training/{ref}", "GET /training/{ref}/logs",
          "GET /training/{ref}/stream", "GET /predictions/{ref}", "GET /predictions/{ref}/samples/{data_id}",
          "POST /inference/{ref}/predict", "POST /similar/{ref}", "POST /drift", "GET /models/compare"}


def test_openapi_document_lists_every_route_and_resolves(world):
    spec = get(world, "/openapi.json")
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "VeML"
    documented = {f"{m.upper()} {p.removeprefix('/api/v1')}" for p, ops in spec["paths"].items() for m in ops}
    assert documented == ROUTES
    op_ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))
    schemas = spec["components"]["schemas"]
    refs = []

    def walk(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert refs and all(r.startswith("#/components/schemas/") and r.rsplit("/", 1)[1] in schemas for r in refs)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert any(code.startswith("2") for code in op["responses"]), (path, method)
            assert op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    params = {p["name"] for p in spec["paths"]["/api/v1/versions"]["get"]["parameters"]}
    assert params == {"kind", "limit", "offset"}
    assert "multipart/form-data" in spec["paths"]["/api/v1/inference/{ref}/predict"]["post"]["requestBody"]["content"]
    assert world["api"].get("/docs").status_code == 404  # no CDN-backed docs page


def test_veml_serve_refuses_a_public_bind_without_a_token(world):
    from conftest import assert_failed_cleanly, run_cli

    res = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--repo", world["root"])
    assert_failed_cleanly(res, "--token", json_given=False)
    assert "serving" not in res.out + res.err.split("error:")[0]


# --- the web UI behind a token; the core-set MMD drift report's projection ----------------------------------------
def test_ui_loads_without_the_token_but_the_api_does_not(guarded):
    anon = httpx.Client(base_url=f"http://127.0.0.1:{guarded.port}", timeout=30)
    page = anon.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert anon.get("/ui/app.js").status_code == 200 and anon.head("/ui/app.css").status_code == 200
    for path in ("/api/v1/versions", "/api/v1/reports", "/api/v1/openapi.json", "/api/v1/data/day/samples/0/image"):
        r = anon.get(path)
        assert r.status_code == 401 and r.json() == {"error": "missing or wrong bearer token"}, path
    # only reading the static files is open: anything else outside them still needs the token
    assert anon.post("/", json={}).status_code == 401
    assert anon.get("/no-such-page").status_code == 401
    assert anon.get("/ui").status_code == 401
    assert anon.get("/ui/../api/v1/versions").status_code in (401, 404)  # never the API's answer
    status, body = guarded.raw("/ui/../api/v1/versions")
    assert status == 404 and b"items" not in body
    assert anon.get("/api/v1/versions", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    anon.close()


def test_mmd_drift_report_carries_a_2d_projection_of_its_core_sets(world):
    drift = post(world, "/drift", {"reference": "table-a", "test": "table-b", "method": "mmd", "k": 12, "permutations": 20})
    assert drift["method"] == "mmd"
    report = get(world, f"/versions/{drift['report']}")
    proj = report["projection"]
    assert set(proj) == {"reference", "test", "explained_variance"}
    k = report["details"]["landmarks"]
    assert k == 12 and len(proj["reference"]) == k and len(proj["test"]) == min(k, report["n_test"])
    assert all(len(p) == 2 and all(round(c, 4) == c for c in p) for p in proj["reference"] + proj["test"])
    v1, v2 = proj["explained_variance"]
    assert 1 >= v1 >= v2 >= 0 and v1 + v2 <= 1 + 1e-6
    listed = [r for r in get(world, "/reports", params={"kind": "drift"})["items"] if r["id"] == drift["report"]]
    assert listed and listed[0]["projection"] == proj
    ks = post(world, "/drift", {"reference": "table-a", "test": "table-b", "method": "ks"})
    assert "projection" not in get(world, f"/versions/{ks['report']}")


# --- one sample's predicted rows ------------------------------------------------------------------------------
def test_prediction_sample_rows_match_the_prediction_version(world):
    repo = world["repo"]
    table = repo.inference.predictions("clf-on-night").to_pylist()
    night_ids = sorted(int(i) for i in repo.data.ids("night"))
    assert {r["data_id"] for r in table} == set(night_ids)
    for data_id in night_ids[:3]:
        (want,) = [r for r in table if r["data_id"] == data_id]
        got = get(world, f"/predictions/clf-on-night/samples/{data_id}")
        assert got["data_id"] == data_id and got["task"] == "classification" and got["total"] == 1
        assert got["prediction"] == repo.inference.get_prediction("clf-on-night").id
        (item,) = got["items"]
        assert item["category"] == want["category"] and item["score"] == pytest.approx(want["score"])
        assert item["bbox"] is None and item["values"] == pytest.approx(want["values"])
    assert get(world, f"/predictions/clf-on-night/samples/{night_ids[0]}", params={"offset": 1})["items"] == []
    day_id = int(next(iter(repo.data.ids("day"))))
    assert "not in prediction version" in error(world, "GET", f"/predictions/clf-on-night/samples/{day_id}", 404)
    error(world, "GET", f"/predictions/clf-onnx/samples/{night_ids[0]}", 404)
    error(world, "GET", "/predictions/clf-on-night/samples/-1", 422)
    error(world, "GET", f"/predictions/clf-on-night/samples/{night_ids[0]}", 422, params={"limit": 0})
