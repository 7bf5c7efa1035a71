"""Model, training, inference and prediction versions (DESIGN.md sections 1, 5, 7, 8).

Every training here is tiny (a few steps on 32×32 images or a hidden size of 8): the point is the
versioning around the model, not the model.  Runs that several tests look at are trained once per
module (fixtures below) and read back through the CLI, the way a user would.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import veml
from conftest import VEML_BIN, artifact_bytes, images_dir, ok, run_cli
from veml.datasets import Domain, generate_driving_coco

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TINY = ["--set", "batch_size=8", "--set", "max_steps=3", "--set", "seed=1"]


# ------------------------------------------------------------------------------------ helpers


run = run_cli


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def coco_subset(src: Path, dest: Path, n: int, drop_annotations: bool = False, drop_keys: tuple[str, ...] = ()) -> Path:
    """The first ``n`` images of ``src`` as a COCO file next to ``src``'s images."""
    doc = json.loads(src.read_text())
    images = [{k: v for k, v in im.items() if k not in drop_keys} for im in doc["images"][:n]]
    keep = {im["id"] for im in images}
    out = {"images": images, "categories": doc["categories"]}
    if not drop_annotations:
        out["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    dest.write_text(json.dumps(out))
    return dest


def lineage(root: Path, ref, *flags) -> dict:
    return ok("lineage", ref, *flags, "--repo", root)


def edge_set(lin: dict) -> set[tuple[int, int, str]]:
    return {(e["src"], e["dst"], e["kind"]) for e in lin["edges"]}


MB_YAML = """\
adapter: torch
task: classification
architecture: mobilenet_v3_small
parameters:
  image_size: 32
  label_column: time_of_day
"""


# ------------------------------------------------------------------------- model versions


def test_model_add_from_yaml_toml_and_json(cli, repo_path, tmp_path):
    y = write_config(tmp_path / "m.yaml", MB_YAML)
    t = write_config(tmp_path / "m.toml", """\
adapter = "torch"
task = "classification"
architecture = "efficientnet_lite0"

[parameters]
image_size = 32
pretrained = true
freeze_backbone = true
""")
    j = write_config(tmp_path / "m.json", json.dumps({"adapter": "sklearn", "task": "tabular-regression",
                                                      "architecture": "ridge", "parameters": {"alpha": 0.5}}))
    a = cli("model", "add", "--name", "from-yaml", "--config", y, "--json", "--repo", repo_path)
    b = cli("model", "add", "--name", "from-toml", "--config", t, "--json", "--repo", repo_path)
    c = cli("model", "add", "--name", "from-json", "--config", j, "--json", "--repo", repo_path)
    for res in (a, b, c):
        assert res.code == 0, res.err
    a, b, c = a.json, b.json, c.json
    assert a["kind"] == "model" and a["name"] == "from-yaml"
    assert (a["adapter"], a["task"], a["architecture"]) == ("torch", "classification", "mobilenet_v3_small")
    # parameters the config left out are recorded with their defaults: a model version is complete
    assert a["parameters"]["image_size"] == 32 and a["parameters"]["label_column"] == "time_of_day"
    assert a["parameters"]["pretrained"] is False and a["parameters"]["freeze_backbone"] is False
    assert b["architecture"] == "efficientnet_lite0" and b["backbone"] == "efficientnet_lite0"
    assert b["parameters"]["pretrained"] is True and b["parameters"]["freeze_backbone"] is True
    assert (c["adapter"], c["task"], c["architecture"]) == ("sklearn", "tabular-regression", "ridge")
    assert c["parameters"]["alpha"] == 0.5
    listed = cli("model", "list", "--json", "--repo", repo_path).json
    assert [m["name"] for m in listed] == ["from-yaml", "from-toml", "from-json"]
    shown = cli("model", "show", "from-toml", "--json", "--repo", repo_path).json
    assert shown["id"] == b["id"] and shown["parameters"] == b["parameters"]


def test_shared_part_nodes_and_list_by_backbone(cli, repo_path, tmp_path):
    cls = write_config(tmp_path / "cls.yaml", "task: classification\narchitecture: efficientnet_lite0\n"
                                              "parameters: {image_size: 32}\n")
    fcos = write_config(tmp_path / "fcos.yaml", "task: detection\narchitecture: fcos\nbackbone: efficientnet_lite0\n"
                                                "parameters: {image_size: 64}\n")
    fcos_rn = write_config(tmp_path / "fcos-rn.yaml", "task: detection\narchitecture: fcos\nbackbone: resnet18\n")
    ids = {}
    for name, cfg in (("lite-cls", cls), ("lite-fcos", fcos), ("rn-fcos", fcos_rn), ("lite-cls-2", cls)):
        res = cli("model", "add", "--name", name, "--config", cfg, "--json", "--repo", repo_path)
        assert res.code == 0, res.err
        ids[name] = res.json["id"]

    with veml.open(repo_path) as r:
        backbones = {n.name: n.id for n in r.stores.graph.list(kinds=["Backbone"])}
        archs = {n.name: n.id for n in r.stores.graph.list(kinds=["Architecture"])}
    # one node per distinct value, however many models use it
    assert sorted(backbones) == ["backbone:efficientnet_lite0", "backbone:resnet18"]
    assert sorted(archs) == ["architecture:efficientnet_lite0", "architecture:fcos"]
    hub = backbones["backbone:efficientnet_lite0"]
    down = lineage(repo_path, hub, "--down", "--hops", "1")
    uses = {(s, d) for s, d, k in edge_set(down) if k == "USES"}
    assert uses == {(hub, ids["lite-cls"]), (hub, ids["lite-fcos"]), (hub, ids["lite-cls-2"])}
    fcos_hub = archs["architecture:fcos"]
    assert {d for s, d, k in edge_set(lineage(repo_path, fcos_hub, "--down", "--hops", "1")) if k == "USES"} == \
        {ids["lite-fcos"], ids["rn-fcos"]}

    def names(*flags):
        res = cli("model", "list", *flags, "--json", "--repo", repo_path)
        assert res.code == 0, res.err
        return sorted(m["name"] for m in res.json)

    assert names("--backbone", "efficientnet_lite0") == ["lite-cls", "lite-cls-2", "lite-fcos"]
    assert names("--backbone", "resnet18") == ["rn-fcos"]
    assert names("--architecture", "fcos") == ["lite-fcos", "rn-fcos"]
    assert names("--architecture", "fcos", "--backbone", "efficientnet_lite0") == ["lite-fcos"]
    assert names("--backbone", "no-such-backbone") == []
    assert names() == ["lite-cls", "lite-cls-2", "lite-fcos", "rn-fcos"]


def test_model_compare_lists_exactly_the_differing_keys(cli, repo_path, tmp_path):
    a = write_config(tmp_path / "a.yaml", MB_YAML)
    b = write_config(tmp_path / "b.yaml", MB_YAML.replace("image_size: 32", "image_size: 64") + "  freeze_backbone: true\n")
    for name, cfg in (("a", a), ("b", b), ("a-again", a)):
        assert cli("model", "add", "--name", name, "--config", cfg, "--repo", repo_path).code == 0
    d = cli("model", "compare", "a", "b", "--json", "--repo", repo_path)
    assert d.code == 0, d.err
    ids = {m["name"]: m["id"] for m in cli("model", "list", "--json", "--repo", repo_path).json}
    assert d.json == {"a": ids["a"], "b": ids["b"], "same": False,
                      "differences": {"parameters.freeze_backbone": [False, True], "parameters.image_size": [32, 64]}}
    same = cli("model", "compare", "a", "a-again", "--json", "--repo", repo_path).json
    assert same["same"] is True and same["differences"] == {}
    text = cli("model", "compare", "a", "b", "--repo", repo_path).out
    assert "parameters.image_size: 32 -> 64" in text
    three = cli("model", "compare", "a", "b", "a-again", "--json", "--repo", repo_path)  # the models view's table
    assert three.code == 0, three.err
    assert [v["name"] for v in three.json["versions"]] == ["a", "b", "a-again"]
    differing = {(r["section"], r["key"]): r["values"] for r in three.json["rows"] if r["differs"]}
    assert differing == {("model", "parameters.freeze_backbone"): [False, True, False],
                         ("model", "parameters.image_size"): [32, 64, 32]}
    text = cli("model", "compare", "a", "b", "a-again", "--repo", repo_path).out
    assert "model.parameters.image_size: 32 | 64 | 32" in text and "no differences" not in text
    for bad, needle in ((("a", "b", "a"), "named twice"), (("a", "b", "nope"), "nope"),
                        (("a", "b", *["a-again"] * 19), "at most 20")):
        res = cli("model", "compare", *bad, "--repo", repo_path)
        assert res.code == 1 and res.err.startswith("error:") and needle in res.err, res.err
        assert len(res.err.strip().splitlines()) == 1


def test_model_finetune_from_edge(cli, repo_path, tmp_path):
    base = write_config(tmp_path / "base.yaml", MB_YAML)
    derived = write_config(tmp_path / "derived.yaml", MB_YAML.replace("image_size: 32", "image_size: 48"))
    b = cli("model", "add", "--name", "base", "--config", base, "--json", "--repo", repo_path).json
    d = cli("model", "add", "--name", "derived", "--config", derived, "--finetune-from", "base", "--json", "--repo", repo_path)
    assert d.code == 0, d.err
    d = d.json
    assert b["id"] in d["parents"]
    edges = edge_set(lineage(repo_path, "derived", "--up"))
    assert (b["id"], d["id"], "FINETUNE_FROM") in edges
    assert sum(1 for *_, k in edges if k == "FINETUNE_FROM") == 1


# ---------------------------------------------------------------- the image repository


@pytest.fixture(scope="module")
def dusk_coco(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("driving_dusk")
    return generate_driving_coco(out, 12, seed=9, domain=Domain(city="amsterdam", time_of_day="dusk", weather="fog"),
                                 file_prefix="dusk")


@pytest.fixture(scope="module")
def img_repo(tmp_path_factory, driving_small, driving_night, dusk_coco) -> Path:
    """day (40) + night (24) = both; dusk; a 12-image detection set; an unlabeled night set; model ``mb``."""
    root = tmp_path_factory.mktemp("ml_images") / "repo"
    tmp = root.parent
    ok("init", root)
    for ann, name in ((driving_small, "day"), (driving_night, "night"), (dusk_coco, "dusk")):
        ok("data", "import", "coco", ann, "--images", images_dir(ann), "--name", name, "--repo", root)
    ok("data", "merge", "day", "night", "--name", "both", "--repo", root)
    ok("data", "merge", "day", "night", "dusk", "--name", "three", "--repo", root)
    small = coco_subset(driving_small, images_dir(driving_small).parent / "det-small.json", 12)
    ok("data", "import", "coco", small, "--images", images_dir(driving_small), "--name", "det-small", "--repo", root)
    # unlabeled: no annotations and no time_of_day key (nobody has looked at these images yet)
    unl = coco_subset(driving_night, images_dir(driving_night).parent / "unlabeled.json", 24,
                      drop_annotations=True, drop_keys=("time_of_day",))
    v = ok("data", "import", "coco", unl, "--images", images_dir(driving_night), "--name", "unlabeled",
           "--role", "unlabeled", "--repo", root)
    assert v["annotations"] == 0 and v["role"] == "unlabeled"
    ok("model", "add", "--name", "mb", "--config", write_config(tmp / "mb.yaml", MB_YAML), "--repo", root)
    return root


@pytest.fixture(scope="module")
def cls_training(img_repo) -> dict:
    return ok("train", "--data", "both", "--model", "mb", *TINY, "--name", "cls", "--repo", img_repo)


@pytest.fixture(scope="module")
def triton_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("triton") / "models"


@pytest.fixture(scope="module")
def cls_onnx(img_repo, cls_training, triton_out) -> dict:
    """The fp32 ONNX deployment, also written out as a Triton model repository."""
    return ok("deploy", "cls", "--format", "onnx", "--quantize", "none", "--target", "triton", "--out", triton_out,
              "--name", "cls-onnx", "--repo", img_repo)


@pytest.fixture(scope="module")
def cls_prediction(img_repo, cls_onnx) -> dict:
    return ok("predict", "cls-onnx", "--data", "both", "--name", "cls-pred", "--repo", img_repo)


@pytest.fixture(scope="module")
def cls_int8(img_repo, cls_training) -> dict:
    return ok("deploy", "cls", "--format", "onnx", "--quantize", "int8", "--name", "cls-int8", "--repo", img_repo)


@pytest.fixture(scope="module")
def cls_fp16(img_repo, cls_training) -> dict:
    return ok("deploy", "cls", "--format", "onnx", "--quantize", "fp16", "--name", "cls-fp16", "--repo", img_repo)


def artifact_size(root: Path, digest: str) -> int:
    return len(artifact_bytes(root, digest))


# ------------------------------------------------------------ classification lifecycle


def test_classification_training_version(img_repo, cls_training):
    t = cls_training
    assert t["kind"] == "training" and t["name"] == "cls" and t["status"] == "finished"
    assert t["class_names"] == ["day", "night"]
    m = t["metrics"]
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
    assert np.isfinite(m["final_loss"])
    # evaluation is on a seeded hold-out (val_fraction 0.2 of 64 samples), never on training samples
    assert t["train_samples"] + t["eval_samples"] == 64 and t["eval_samples"] == 13
    assert sum(map(sum, m["confusion_matrix"])) == t["eval_samples"]
    assert HEX64.match(t["checkpoint"])
    assert hashlib.sha256(artifact_bytes(img_repo, t["checkpoint"])).hexdigest() == t["checkpoint"]
    prof = t["profile"]
    for key in ("data_s", "forward_backward_s", "evaluation_s", "samples_per_s", "peak_rss_mb", "steps"):
        assert key in prof, key
    assert prof["steps"] == 3 and prof["samples_per_s"] > 0 and prof["peak_rss_mb"] > 0
    assert prof["forward_backward_s"] > 0 and prof["evaluation_s"] > 0
    assert t["params"]["max_steps"] == 3 and t["params"]["batch_size"] == 8 and t["seed"] == 1
    assert t["params"]["lr"] == pytest.approx(1e-3)  # a default, recorded with the run
    assert {"python", "numpy", "torch", "veml"} <= set(t["libraries"])
    with veml.open(img_repo) as r:
        ids = {n: r.get(n).id for n in ("both", "mb")}
    assert set(t["parents"]) == {ids["both"], ids["mb"]}
    assert t["data"] == ids["both"] and t["model"] == ids["mb"]
    # show and list read the same version back
    shown = ok("train", "show", "cls", "--repo", img_repo)
    assert shown["status"] == "finished" and shown["metrics"] == t["metrics"] and shown["checkpoint"] == t["checkpoint"]
    listed = {x["name"]: x for x in ok("train", "list", "--repo", img_repo)}
    assert listed["cls"]["status"] == "finished" and listed["cls"]["metrics"] == t["metrics"]


def test_train_log_has_a_loss_row_per_step(img_repo, cls_training):
    log = ok("train", "log", "cls", "--repo", img_repo)
    assert log["training"] == cls_training["id"] and log["status"] == "finished"
    loss = [r for r in log["logs"] if r["key"] == "loss"]
    assert sorted({r["step"] for r in loss}) == [1, 2, 3]
    assert all(np.isfinite(r["value"]) and r["epoch"] == 0 for r in loss)
    last = max(loss, key=lambda r: r["step"])
    assert last["value"] == pytest.approx(cls_training["metrics"]["final_loss"])


def test_train_log_follow_on_a_finished_run_returns(img_repo, cls_training):
    # a real process with a timeout: a --follow that never stops fails here instead of hanging the suite
    proc = subprocess.run([VEML_BIN, "--repo", str(img_repo), "train", "log", "cls", "--follow"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = ok("train", "log", "cls", "--repo", img_repo)["logs"]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(rows) >= 3
    assert lines[0].startswith("epoch 0 step 1 loss=")


def test_deploy_onnx_agrees_with_the_trained_model(img_repo, cls_training, cls_onnx):
    i = cls_onnx
    assert i["kind"] == "inference" and i["parents"] == [cls_training["id"]] and i["training"] == cls_training["id"]
    assert (i["format"], i["quantize"], i["device"]) == ("onnx", "none", "cpu")
    assert HEX64.match(i["artifact"]) and i["artifact"] != cls_training["checkpoint"]
    assert artifact_size(img_repo, i["artifact"]) == i["size_bytes"] > 0
    assert i["max_abs_diff"] <= i["tolerance"] and i["tolerance"] > 0
    assert i["agreement"] == 1.0
    assert i["latency_ms"] > 0 and i["original_latency_ms"] > 0
    assert i["input_shape"] == [3, 32, 32] and i["class_names"] == ["day", "night"]
    edges = edge_set(lineage(img_repo, "cls-onnx", "--up", "--hops", "1"))
    assert (cls_training["id"], i["id"], "DEPLOY") in edges


@pytest.mark.parametrize("quantize", ["int8", "fp16"])
def test_deploy_quantized(request, img_repo, cls_onnx, quantize):
    q = request.getfixturevalue(f"cls_{quantize}")
    assert (q["format"], q["quantize"]) == ("onnx", quantize)
    assert HEX64.match(q["artifact"]) and q["artifact"] != cls_onnx["artifact"]
    assert artifact_size(img_repo, q["artifact"]) == q["size_bytes"]
    assert q["max_abs_diff"] <= q["tolerance"]
    assert 0.0 <= q["agreement"] <= 1.0
    assert q["size_bytes"] < cls_onnx["size_bytes"]  # the point of quantising
    if quantize == "int8":
        assert q["size_bytes"] < 0.5 * cls_onnx["size_bytes"]
    # a quantised deployment predicts too
    p = ok("predict", f"cls-{quantize}", "--data", "night", "--name", f"{quantize}-on-night", "--repo", img_repo)
    assert p["predictions"] == 24 and 0.0 <= p["metrics"]["accuracy"] <= 1.0


def test_predict_on_labelled_data(img_repo, cls_onnx, cls_prediction):
    p = cls_prediction
    with veml.open(img_repo) as r:
        both = r.data.get("both")
        table = r.inference.predictions("cls-pred")
        ids = set(r.data.checkout(both).data_ids.tolist())
    assert p["kind"] == "prediction" and p["inference"] == cls_onnx["id"] and p["data"] == both.id
    assert set(p["parents"]) == {cls_onnx["id"], both.id}
    assert p["samples"] == p["predictions"] == 64 == table.num_rows
    assert set(table["data_id"].to_pylist()) == ids  # one row per sample of the data version
    for values, cat, score in zip(table["values"].to_pylist(), table["category"].to_pylist(), table["score"].to_pylist()):
        assert len(values) == 2 and sum(values) == pytest.approx(1.0, abs=1e-4)
        assert cat == ["day", "night"][int(np.argmax(values))] and score == pytest.approx(max(values), abs=1e-6)
    m = p["metrics"]
    assert 0.0 <= m["accuracy"] <= 1.0 and sum(map(sum, m["confusion_matrix"])) == 64
    assert p["key_metric"] == {"name": "accuracy", "value": m["accuracy"]}


def test_predict_on_unlabeled_data_has_no_metrics(cli, img_repo, cls_int8):
    res = cli("predict", "cls-int8", "--data", "unlabeled", "--name", "int8-on-unlabeled", "--json", "--repo", img_repo)
    assert res.code == 0, res.err
    p = res.json
    assert p["predictions"] == 24 and p["metrics"] is None
    assert p["key_metric"] == {"name": "accuracy", "value": None}
    with veml.open(img_repo) as r:
        table = r.inference.predictions("int8-on-unlabeled")
    assert table.num_rows == 24 and all(abs(sum(v) - 1.0) < 1e-4 for v in table["values"].to_pylist())


def test_lifecycle_list_shows_the_key_metric(img_repo, cls_training, cls_onnx, cls_prediction):
    rows = ok("lifecycle", "list", "--repo", img_repo)
    mine = [r for r in rows if r["inference"] == cls_onnx["id"]]
    assert len(mine) == 1
    row = mine[0]
    assert (row["data"], row["model"], row["training"]) == (cls_training["data"], cls_training["model"], cls_training["id"])
    assert row["prediction"] == cls_prediction["id"] and row["task"] == "classification"
    assert row["metric"] == {"name": "accuracy", "value": cls_prediction["metrics"]["accuracy"], "from": "prediction"}
    assert (row["format"], row["quantize"]) == ("onnx", "none")
    text = run("lifecycle", "list", "--repo", img_repo).out
    assert f"training {cls_training['id']} -> inference {cls_onnx['id']}" in text


def test_prediction_lineage_up(img_repo, cls_training, cls_onnx, cls_prediction):
    lin = lineage(img_repo, "cls-pred", "--up")
    kinds = {n["kind"] for n in lin["nodes"]}
    assert {"data", "model", "training", "inference", "prediction"} <= kinds
    ids = {n["name"]: n["id"] for n in lin["nodes"]}
    assert {"both", "day", "night", "mb", "cls", "cls-onnx", "cls-pred"} <= set(ids)
    edges = edge_set(lin)
    assert {
        (ids["both"], ids["cls"], "DATA_TRAINING"),
        (ids["mb"], ids["cls"], "MODEL_TRAINING"),
        (ids["cls"], ids["cls-onnx"], "DEPLOY"),
        (ids["cls-onnx"], ids["cls-pred"], "PREDICT_ON"),
        (ids["both"], ids["cls-pred"], "PREDICT_ON"),
        (ids["day"], ids["both"], "MERGE_DATA"),
    } <= edges
    # and down from the data: the whole lifecycle hangs off it
    down = {n["name"] for n in lineage(img_repo, "both", "--down")["nodes"]}
    assert {"cls", "cls-onnx", "cls-pred"} <= down


def test_triton_model_repository(img_repo, cls_onnx, triton_out):
    import onnxruntime as ort

    model_dir = triton_out / "cls-onnx"
    assert cls_onnx["triton"] == str(model_dir)
    config = (model_dir / "config.pbtxt").read_text()
    assert 'name: "cls-onnx"' in config
    assert 'platform: "onnxruntime_onnx"' in config
    assert re.search(r'name: "images".*dims: \[ 3, 32, 32 \]', config)
    onnx_file = model_dir / "1" / "model.onnx"
    data = onnx_file.read_bytes()
    assert hashlib.sha256(data).hexdigest() == cls_onnx["artifact"]  # the deployed artifact, byte for byte
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    (logits,) = sess.run(None, {"images": np.zeros((2, 3, 32, 32), np.float32)})
    assert logits.shape == (2, 2) and np.isfinite(logits).all()


# ------------------------------------------------------------------------ reproducibility


def test_same_seed_same_run_different_seed_different_run(cli, img_repo, cls_training):
    def train(name, seed):
        res = cli("train", "--data", "both", "--model", "mb", "--set", "batch_size=8", "--set", "max_steps=3",
                  "--set", f"seed={seed}", "--name", name, "--json", "--repo", img_repo)
        assert res.code == 0, res.err
        return res.json

    def losses(name):
        return [r["value"] for r in cli("train", "log", name, "--json", "--repo", img_repo).json["logs"] if r["key"] == "loss"]

    a = cls_training  # seed 1
    b, c = train("seed1-again", 1), train("seed2", 2)
    assert b["status"] == c["status"] == "finished"
    assert b["params"] == a["params"]
    assert b["metrics"] == a["metrics"]
    assert b["metrics"]["final_loss"] == a["metrics"]["final_loss"]
    assert losses("seed1-again") == losses("cls")
    assert b["checkpoint"] == a["checkpoint"]  # bit-identical weights, so the same artifact
    assert c["metrics"]["final_loss"] != a["metrics"]["final_loss"]
    assert c["checkpoint"] != a["checkpoint"]


# ------------------------------------------------------------------------------ init-from


def _state(root: Path, training: str) -> dict:
    import torch

    with veml.open(root) as r:
        blob = r.training.checkpoint(r.training.get(training))
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)["state_dict"]


def test_init_from_a_finished_training_with_a_new_class_set(cli, img_repo, cls_training):
    # three classes (day, dusk, night) starting from a two-class run: the backbone is reused, the head is new;
    # lr=0 keeps the weights where they started, so the checkpoint shows where that was (a fresh start from
    # seed 0 could not equal "cls", which was trained from seed 1)
    res = cli("train", "--data", "three", "--model", "mb", "--init-from", "cls", "--set", "batch_size=8",
              "--set", "max_steps=2", "--set", "lr=0", "--name", "ft-three", "--json", "--repo", img_repo)
    assert res.code == 0, res.err
    ft = res.json
    assert ft["status"] == "finished" and ft["class_names"] == ["day", "dusk", "night"]
    assert ft["init_from"] == cls_training["id"] and cls_training["id"] in ft["parents"]
    assert (cls_training["id"], ft["id"], "FINETUNE_FROM") in edge_set(lineage(img_repo, "ft-three", "--up", "--hops", "1"))
    src, dst = _state(img_repo, "cls"), _state(img_repo, "ft-three")
    conv = "features.0.0.weight"
    assert np.array_equal(src[conv].numpy(), dst[conv].numpy())
    head = [k for k in dst if k.startswith("classifier") and k.endswith("weight")][-1]
    assert src[head].shape[0] == 2 and dst[head].shape[0] == 3


# ------------------------------------------------------------------------------ detection


@pytest.fixture(scope="module")
def detection(img_repo, driving_small) -> dict:
    """FCOS on EfficientNet-Lite0 at image_size 32 (the data is 64×64, so predictions must be scaled
    back to the data's own pixels), trained on 12 images, deployed as ONNX, run over 4 images."""
    import veml.adapters.onnx_run as tx  # ONNX deployments run here (no torch)

    cfg = write_config(img_repo.parent / "det.yaml",
                       "task: detection\narchitecture: fcos\nbackbone: efficientnet_lite0\n"
                       "parameters: {image_size: 32, score_threshold: 0.0, detections_per_image: 5}\n")
    ok("model", "add", "--name", "det", "--config", cfg, "--repo", img_repo)
    tiny = coco_subset(driving_small, images_dir(driving_small).parent / "det-tiny.json", 4)
    ok("data", "import", "coco", tiny, "--images", images_dir(driving_small), "--name", "det-tiny", "--repo", img_repo)
    t = ok("train", "--data", "det-small", "--model", "det", "--set", "max_steps=2", "--set", "batch_size=8",
           "--name", "det-run", "--repo", img_repo)
    i = ok("deploy", "det-run", "--format", "onnx", "--name", "det-onnx", "--repo", img_repo)
    sessions, raw = [], []
    with pytest.MonkeyPatch.context() as mp:
        real_session, real_runner = tx.session, tx.runner

        def runner(*a, **k):  # keep what the deployed model itself returned, in its own pixels
            run = real_runner(*a, **k)

            def recorded(example):
                out = run(example)
                raw.append(np.asarray(out[0], np.float32).reshape(-1, 4))
                return out

            return recorded

        mp.setattr(tx, "session", lambda *a, **k: sessions.append(1) or real_session(*a, **k))
        mp.setattr(tx, "runner", runner)
        p = ok("predict", "det-onnx", "--data", "det-tiny", "--name", "det-pred", "--repo", img_repo)
    with veml.open(img_repo) as r:
        table = r.inference.predictions("det-pred")
    return {"training": t, "inference": i, "prediction": p, "table": table, "raw": np.concatenate(raw), "sessions": len(sessions)}


def test_detection_training_and_deployment(detection):
    t, i = detection["training"], detection["inference"]
    assert t["status"] == "finished" and t["class_names"] == ["car", "pedestrian", "sign"]
    for key in ("map50", "map"):
        assert isinstance(t["metrics"][key], float) and 0.0 <= t["metrics"][key] <= 1.0
    assert t["profile"]["steps"] == 2
    assert i["format"] == "onnx" and i["max_abs_diff"] <= i["tolerance"] and i["input_shape"] == [3, 32, 32]
    assert i["class_names"] == t["class_names"]


def test_detection_predictions_in_data_pixels(detection):
    p, table, raw = detection["prediction"], detection["table"], detection["raw"]
    assert p["samples"] == 4 and p["key_metric"]["name"] == "map50"
    assert 0.0 <= p["metrics"]["map50"] <= 1.0 and 0.0 <= p["metrics"]["map"] <= 1.0
    assert table.num_rows == p["predictions"] == len(raw) > 0
    x, y = np.array(table["bbox_x"].to_pylist()), np.array(table["bbox_y"].to_pylist())
    w, h = np.array(table["bbox_w"].to_pylist()), np.array(table["bbox_h"].to_pylist())
    assert (x >= -2).all() and (y >= -2).all() and (x + w <= 66).all() and (y + h <= 66).all()
    assert (w >= 0).all() and (h >= 0).all()
    assert set(table["category"].to_pylist()) <= {"car", "pedestrian", "sign"}
    assert all(0.0 <= s <= 1.0 for s in table["score"].to_pylist())
    # exactly the model's boxes (32-pixel input) times 64/32
    ours = np.stack([x, y, x + w, y + h], axis=1)
    assert np.allclose(ours, raw * 2.0, atol=1e-3)


def test_detection_predict_loads_the_model_once(detection):
    assert detection["sessions"] <= 1, f"{detection['sessions']} onnxruntime sessions for 4 images"


# ---------------------------------------------------------------------------- forecasting


def test_forecasting_lifecycle(cli, repo_path, traffic_npz, tmp_path):
    # 96-step windows: 12 samples, so the default hold-out has windows to evaluate on
    res = cli("data", "import", "timeseries", traffic_npz, "--window", 96, "--name", "traffic", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    cfg = write_config(tmp_path / "dc.yaml", "task: forecasting\narchitecture: dcrnn\n"
                                             "parameters: {hidden: 8, layers: 1, history: 12, horizon: 12}\n")
    assert cli("model", "add", "--name", "dc", "--config", cfg, "--repo", repo_path).code == 0
    res = cli("train", "--data", "traffic", "--model", "dc", *TINY, "--name", "dc-run", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    t = res.json
    assert t["status"] == "finished" and t["eval_samples"] > 0
    m = t["metrics"]
    assert m["mae"] > 0 and m["rmse"] >= m["mae"]
    assert [s["step"] for s in m["per_horizon"]] == list(range(1, 13))
    assert all(s["mae"] >= 0 for s in m["per_horizon"])
    res = cli("deploy", "dc-run", "--format", "onnx", "--quantize", "int8", "--name", "dc-int8", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    i = res.json
    assert (i["format"], i["quantize"]) == ("onnx", "int8") and HEX64.match(i["artifact"])
    res = cli("predict", "dc-int8", "--data", "traffic", "--name", "dc-pred", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    p = res.json
    assert p["key_metric"]["name"] == "mae" and p["key_metric"]["value"] == p["metrics"]["mae"] > 0
    assert len(p["metrics"]["per_horizon"]) == 12
    with veml.open(repo_path) as r:
        table = r.inference.predictions("dc-pred")
    assert table.num_rows == p["predictions"] > 0
    assert {len(v) for v in table["values"].to_pylist()} == {12 * 12}  # horizon × sensors per forecast
    # the same run as TorchScript: traced, checked against the trained model, and usable for predictions
    res = cli("deploy", "dc-run", "--format", "torchscript", "--name", "dc-ts", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    ts = res.json
    assert (ts["format"], ts["quantize"]) == ("torchscript", "none") and HEX64.match(ts["artifact"])
    assert artifact_size(Path(repo_path), ts["artifact"]) == ts["size_bytes"]
    assert ts["max_abs_diff"] <= ts["tolerance"] and ts["agreement"] == 1.0
    res = cli("predict", "dc-ts", "--data", "traffic", "--name", "dc-ts-pred", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    assert res.json["predictions"] == p["predictions"]
    assert res.json["metrics"]["mae"] == pytest.approx(p["metrics"]["mae"], rel=0.05)  # int8 vs fp32: close
    rows = ok("lifecycle", "list", "--repo", repo_path)
    assert sorted((r["inference"], r["metric"]["name"], r["format"]) for r in rows) == \
        [(i["id"], "mae", "onnx"), (ts["id"], "mae", "torchscript")]


# -------------------------------------------------------------------------------- tabular


def _csv(path: Path, n: int = 60, label: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["a,b,c" + (",y" if label else "")]
    for _ in range(n):
        a, b, c = rng.normal(size=3)
        lines.append(f"{a:.4f},{b:.4f},{c:.4f}" + ((",pos" if a + b > 0 else ",neg") if label else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tabular_lifecycle(cli, repo_path, tmp_path):
    for name, csv, extra in (("tab", _csv(tmp_path / "t.csv"), ["--label", "y"]),
                             ("tab-new", _csv(tmp_path / "new.csv", 20, label=False, seed=1), [])):
        res = cli("data", "import", "table", csv, *extra, "--name", name, "--json", "--repo", repo_path)
        assert res.code == 0, res.err
    cfg = write_config(tmp_path / "rf.yaml", "adapter: sklearn\ntask: tabular-classification\narchitecture: random_forest\n"
                                             "parameters: {n_estimators: 10}\n")
    assert cli("model", "add", "--name", "rf", "--config", cfg, "--repo", repo_path).code == 0
    res = cli("train", "--data", "tab", "--model", "rf", "--set", "seed=3", "--name", "rf-run", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    t = res.json
    assert t["status"] == "finished" and HEX64.match(t["checkpoint"]) and t["class_names"] == ["neg", "pos"]
    assert t["eval_samples"] == 12 and 0.5 < t["metrics"]["accuracy"] <= 1.0  # a separable problem
    res = cli("deploy", "rf-run", "--format", "skops", "--name", "rf-pkl", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    assert res.json["format"] == "skops" and res.json["size_bytes"] > 0
    res = cli("predict", "rf-pkl", "--data", "tab", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    assert res.json["predictions"] == 60 and res.json["metrics"]["accuracy"] > 0.5
    # new rows without labels: predictions, no metrics
    res = cli("predict", "rf-pkl", "--data", "tab-new", "--name", "rf-new", "--json", "--repo", repo_path)
    assert res.code == 0, res.err
    assert res.json["predictions"] == 20 and res.json["metrics"] is None
    assert res.json["key_metric"] == {"name": "accuracy", "value": None}
    with veml.open(repo_path) as r:
        table = r.inference.predictions("rf-new")
    assert all(abs(sum(v) - 1.0) < 1e-4 for v in table["values"].to_pylist())
    assert set(table["category"].to_pylist()) <= {"neg", "pos"}


def test_python_api_regression_lifecycle(repo, tmp_path):
    rng = np.random.default_rng(0)
    rows = [(a, b, 3 * a - 2 * b) for a, b in rng.normal(size=(50, 2))]
    csv = tmp_path / "r.csv"
    csv.write_text("a,b,y\n" + "".join(f"{a:.4f},{b:.4f},{y:.4f}\n" for a, b, y in rows))
    repo.data.import_("table", csv, "reg", label="y")
    cfg = tmp_path / "ridge.json"
    cfg.write_text(json.dumps({"adapter": "sklearn", "task": "tabular-regression", "architecture": "ridge"}))
    m = repo.models.add("ridge", cfg)
    assert m.kind == "ModelVersion" and m.props["parameters"] == {"alpha": 1.0}
    m2 = repo.models.add("ridge-small", {"adapter": "sklearn", "task": "tabular-regression", "architecture": "ridge",
                                         "parameters": {"alpha": 0.001}})
    # --set pairs as strings or as a mapping mean the same run
    t1 = repo.training.train("reg", m2.id, sets=["seed=2", "val_fraction=0.3"], name="as-list")
    t2 = repo.training.train("reg", "ridge-small", sets={"seed": 2, "val_fraction": 0.3}, name="as-dict")
    assert t1["params"] == t2["params"] == {"seed": 2, "val_fraction": 0.3}
    assert t1["metrics"] == t2["metrics"] and t1["eval_samples"] == 15
    assert t1["metrics"]["rmse"] < 0.05 and t1["metrics"]["r2"] > 0.99
    i = repo.inference.deploy("as-list", "skops", "none")
    assert i.kind == "InferenceVersion" and i.props["format"] == "skops"
    p = repo.inference.predict(i.id, "reg")
    assert p.props["key_metric"]["name"] == "rmse" and p.props["metrics"]["rmse"] < 0.05
    table = repo.inference.predictions(p.id)
    assert table.num_rows == 50
    assert np.allclose(table["score"].to_numpy(), [y for *_, y in rows], atol=0.05)
    [life] = repo.lifecycles.list()
    assert (life["training"], life["inference"], life["prediction"]) == (t1["id"], i.id, p.id)
    assert life["metric"] == {"name": "rmse", "value": p.props["metrics"]["rmse"], "from": "prediction"}


# ------------------------------------------------------------------ runs that do not finish


@pytest.fixture(scope="module")
def crash_repo(tmp_path_factory, driving_small, driving_night) -> Path:
    root = tmp_path_factory.mktemp("ml_crash") / "repo"
    ok("init", root)
    for ann, name in ((driving_small, "day"), (driving_night, "night")):
        ok("data", "import", "coco", ann, "--images", images_dir(ann), "--name", name, "--repo", root)
    ok("data", "merge", "day", "night", "--name", "both", "--repo", root)
    ok("model", "add", "--name", "mb", "--config", write_config(root.parent / "mb.yaml", MB_YAML), "--repo", root)
    return root


def _wait_until_logging(root: Path, name: str, alive, deadline_s: float = 120) -> None:
    """Until run ``name`` is running and has logged a step (it is inside its training loop)."""
    deadline = time.monotonic() + deadline_s
    while True:
        with veml.open(root) as r:
            runs = {t["name"]: t for t in r.training.list()}
            if name in runs and runs[name]["status"] == "running" and r.training.logs(name):
                return
        assert alive(), f"{name} stopped before it was interrupted"
        assert time.monotonic() < deadline, f"{name} never started logging"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def killed(crash_repo) -> dict:
    """A real ``veml train`` process, SIGKILLed once it is training."""
    env = {k: v for k, v in os.environ.items() if k != "VEML_REPO"}
    proc = subprocess.Popen(
        [VEML_BIN, "--repo", str(crash_repo), "train", "--data", "both", "--model", "mb", "--set", "batch_size=8",
         "--set", "epochs=100000", "--set", "max_steps=1000000", "--name", "crash-kill", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_until_logging(crash_repo, "crash-kill", lambda: proc.poll() is None)
        # while it runs, the run is reported as running
        assert {t["name"]: t["status"] for t in ok("train", "list", "--repo", crash_repo)}["crash-kill"] == "running"
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"code": code, "out": out, "err": err}


def test_killed_run_is_failed_never_finished(cli, crash_repo, killed):
    root = crash_repo
    assert killed["code"] == -signal.SIGKILL and killed["out"] == ""
    shown = cli("train", "show", "crash-kill", "--json", "--repo", root)
    assert shown.code == 0, shown.err
    t = shown.json
    assert t["status"] == "failed" and t["metrics"] is None and "checkpoint" not in t
    assert t["error"]
    listed = {x["name"]: x["status"] for x in cli("train", "list", "--json", "--repo", root).json}
    assert listed["crash-kill"] == "failed"
    res = cli("deploy", "crash-kill", "--json", "--repo", root)
    assert res.code == 1 and res.out == "" and "Traceback" not in res.err
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "crash-kill" in lines[0] and "failed" in lines[0]
    lifecycles = cli("lifecycle", "list", "--json", "--repo", root).json
    assert all(r["training"] != t["id"] for r in lifecycles)
    assert cli("lineage", "crash-kill", "--down", "--json", "--repo", root).json["edges"] == []
    # following a dead run's log returns at once with what it logged
    proc = subprocess.run([VEML_BIN, "--repo", str(root), "train", "log", "crash-kill", "--follow", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed" and len(doc["logs"]) >= 1


def test_interrupted_run_records_a_failed_event(cli, crash_repo):
    """SIGINT (Ctrl-C) in the middle of ``veml train``: exit 130, one error line, a failed run."""
    root = crash_repo
    main_pid = os.getpid()
    sent = threading.Event()

    def interrupt_when_training() -> None:
        try:
            _wait_until_logging(root, "crash-int", lambda: True, deadline_s=60)
        except AssertionError:
            return  # the run ended or never started; the assertions below say why
        sent.set()
        os.kill(main_pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=interrupt_when_training, daemon=True)
    try:
        watcher.start()
        res = cli("train", "--data", "both", "--model", "mb", "--set", "batch_size=8", "--set", "epochs=1000",
                  "--set", "max_steps=300", "--name", "crash-int", "--json", "--repo", root)
        watcher.join(timeout=10)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent.is_set()
    assert res.code == 130 and res.out == ""
    assert res.err.splitlines() == ["error: interrupted"]
    t = cli("train", "show", "crash-int", "--json", "--repo", root).json
    assert t["status"] == "failed" and t["metrics"] is None
    assert "KeyboardInterrupt" in t["error"]
    # what it logged before the interrupt is kept
    log = cli("train", "log", "crash-int", "--json", "--repo", root).json
    assert log["status"] == "failed" and any(r["key"] == "loss" for r in log["logs"])
    assert cli("deploy", "crash-int", "--json", "--repo", root).code == 1
    assert all(r["training"] != t["id"] for r in cli("lifecycle", "list", "--json", "--repo", root).json)
