"""Bad input to the model, training, deployment and prediction commands (DESIGN.md sections 7 and 8).

Every case runs through the CLI against a copy of one repository that already holds data, models,
a finished and a failed training and two deployments, and checks the same things: exit code 1,
exactly one ``error: …`` line on stderr naming what is wrong, no traceback, nothing on stdout with
``--json``, and no new node of any kind (versions, shared Architecture/Backbone nodes, artifacts).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import veml
from conftest import (PARSER_LEVEL, artifact_bytes, artifact_digests, assert_failed_cleanly, images_dir, ok, overwrite_artifact,
                      run_cli)
from veml.datasets import generate_traffic, write_npz

MB = {"adapter": "torch", "task": "classification", "architecture": "mobilenet_v3_small",
      "parameters": {"image_size": 32, "label_column": "time_of_day"}}


# ------------------------------------------------------------------------------------ helpers


_run, _ok = run_cli, ok


@pytest.fixture(scope="module")
def ml_template(tmp_path_factory, driving_small, driving_night, traffic_npz) -> Path:
    """data: day, night, both, unlabeled (no annotations, no time_of_day), traffic (12 sensors), traffic6 (6);
    models: mb, mb-nolabel, rn, det, dc; trainings: mb-run (finished), failed-run (failed), dc-run;
    deployments: mb-onnx, dc-onnx."""
    base = tmp_path_factory.mktemp("ml_bad_input")
    root = base / "repo"
    _ok("init", root)
    for ann, name in ((driving_small, "day"), (driving_night, "night")):
        _ok("data", "import", "coco", ann, "--images", images_dir(ann), "--name", name, "--repo", root)
    _ok("data", "merge", "day", "night", "--name", "both", "--repo", root)
    doc = json.loads(driving_night.read_text())
    unl = base / "unlabeled.json"
    unl.write_text(json.dumps({"images": [{k: v for k, v in im.items() if k != "time_of_day"} for im in doc["images"][:8]],
                               "categories": doc["categories"]}))
    _ok("data", "import", "coco", unl, "--images", images_dir(driving_night), "--name", "unlabeled", "--role", "unlabeled",
        "--repo", root)
    _ok("data", "import", "timeseries", traffic_npz, "--window", 96, "--name", "traffic", "--repo", root)
    six = write_npz(generate_traffic(n_sensors=6, n_steps=96 * 2, seed=5), base / "six.npz")
    _ok("data", "import", "timeseries", six, "--window", 96, "--name", "traffic6", "--repo", root)
    configs = {
        "mb": MB,
        "mb-nolabel": {**MB, "parameters": {"image_size": 32}},
        "rn": {**MB, "architecture": "resnet18"},
        "det": {"task": "detection", "architecture": "fcos", "backbone": "efficientnet_lite0", "parameters": {"image_size": 32}},
        "dc": {"task": "forecasting", "architecture": "dcrnn", "parameters": {"hidden": 8, "layers": 1}},
    }
    for name, cfg in configs.items():
        path = base / f"{name}.json"
        path.write_text(json.dumps(cfg))
        _ok("model", "add", "--name", name, "--config", path, "--repo", root)
    tiny = ["--set", "max_steps=1", "--set", "batch_size=8"]
    _ok("train", "--data", "both", "--model", "mb", *tiny, "--name", "mb-run", "--repo", root)
    _ok("deploy", "mb-run", "--format", "onnx", "--name", "mb-onnx", "--repo", root)
    _ok("train", "--data", "traffic", "--model", "dc", *tiny, "--name", "dc-run", "--repo", root)
    _ok("deploy", "dc-run", "--format", "onnx", "--name", "dc-onnx", "--repo", root)

    def crash(step, epoch, values):
        raise RuntimeError("simulated crash in the training loop")

    with veml.open(root) as r:
        with pytest.raises(RuntimeError):
            r.training.train("both", "mb", sets={"max_steps": 1, "batch_size": 8}, name="failed-run", echo=crash)
        assert r.training.describe(r.training.get("failed-run"))["status"] == "failed"
    return root


@pytest.fixture
def ml_repo(ml_template, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ml_template, root)
    return root


def snapshot(cli, root: Path) -> dict:
    """Everything a bad command must leave as it was."""
    out = {}
    for what in (("data", "list"), ("model", "list"), ("train", "list"), ("lifecycle", "list")):
        res = cli(*what, "--json", "--repo", root)
        assert res.code == 0, res.err
        out[" ".join(what)] = res.json
    with veml.open(root) as r:
        out["nodes"] = sorted((n.id, n.kind, n.name) for n in r.stores.graph.list())
        out["count"] = r.stores.graph.count()
    out["artifacts"] = artifact_digests(root)
    return out


def assert_unchanged(cli, root: Path, before: dict, verify: bool = True) -> None:
    after = snapshot(cli, root)
    new_nodes = sorted(set(after["nodes"]) - set(before["nodes"]))
    assert not new_nodes, f"new nodes: {new_nodes}"
    assert after == before
    if verify:
        v = cli("verify", "--json", "--repo", root)
        assert v.code == 0 and v.json["ok"] is True, v.out + v.err
    gc = cli("gc", "--grace", "0", "--json", "--repo", root)
    assert gc.code == 0, gc.err
    assert gc.json["samples_reclaimed"] == 0 and gc.json["annotations_reclaimed"] == 0, gc.json


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ model configs


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_model_unknown_adapter(cli, ml_repo, tmp_path):
    before = snapshot(cli, ml_repo)
    cfg = write(tmp_path / "m.yaml", "adapter: tensorflow\ntask: classification\narchitecture: resnet18\n")
    res = cli("model", "add", "--name", "bad", "--config", cfg, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "'tensorflow'", "adapter")
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_model_unknown_architecture(cli, ml_repo, tmp_path):
    before = snapshot(cli, ml_repo)
    cfg = write(tmp_path / "m.yaml", "adapter: torch\ntask: classification\narchitecture: vgg99\n")
    res = cli("model", "add", "--name", "bad", "--config", cfg, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "'vgg99'", "architecture")
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize(
    "text, key",
    [
        ("adapter: torch\ntask: classification\narchitecture: resnet18\nparameters: {image_size: 32, dropout: 0.3}\n", "dropout"),
        ("adapter: torch\ntask: detection\narchitecture: fcos\nparameters: {history: 12}\n", "history"),
        ("adapter: sklearn\ntask: tabular-classification\narchitecture: random_forest\nparameters: {learning_rate: 0.1}\n",
         "learning_rate"),
        ("adapter: torch\ntask: classification\narchitecture: resnet18\noptimizer: sgd\n", "optimizer"),
    ],
    ids=["torch-classifier", "torch-detector", "sklearn", "top-level"],
)
def test_model_key_the_adapter_does_not_accept(cli, ml_repo, tmp_path, text, key):
    before = snapshot(cli, ml_repo)
    cfg = write(tmp_path / "m.yaml", text)
    res = cli("model", "add", "--name", "bad", "--config", cfg, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, f"'{key}'", str(cfg))
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("suffix, text", [
    (".yaml", "adapter: torch\ntask: [classification\narchitecture: resnet18\n"),
    (".toml", "adapter = torch\ntask = 'classification'\n"),
    (".json", '{"adapter": "torch", "task": "classification",'),
], ids=["yaml", "toml", "json"])
def test_model_malformed_config(cli, ml_repo, tmp_path, suffix, text):
    before = snapshot(cli, ml_repo)
    cfg = write(tmp_path / f"m{suffix}", text)
    res = cli("model", "add", "--name", "bad", "--config", cfg, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, str(cfg), "malformed")
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_model_config_file_missing(cli, ml_repo, tmp_path):
    before = snapshot(cli, ml_repo)
    cfg = tmp_path / "nowhere" / "m.yaml"
    res = cli("model", "add", "--name", "bad", "--config", cfg, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, str(cfg), "not found")
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.parametrize("base, needle", [("dc", "forecasting"), ("no-such-model", "no-such-model")],
                         ids=["other-task", "unknown"])
def test_model_finetune_from_refused_leaves_no_part_nodes(cli, ml_repo, tmp_path, base, needle):
    before = snapshot(cli, ml_repo)
    # architecture and head values no model in the repository uses yet
    cfg = write(tmp_path / "m.yaml", "task: classification\narchitecture: efficientnet_lite0\nhead: linear\n")
    res = cli("model", "add", "--name", "bad", "--config", cfg, "--finetune-from", base, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, needle)
    assert_unchanged(cli, ml_repo, before)


# -------------------------------------------------------------------------------- training


@pytest.mark.embedded_only(PARSER_LEVEL)
def test_train_unknown_set_key(cli, ml_repo):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "both", "--model", "mb", "--set", "learning_rate=0.1", "--json", "--repo", ml_repo)
    line = assert_failed_cleanly(res, "'learning_rate'")
    assert "lr" in line  # says what is accepted
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("item, needles", [
    ("epochs=abc", ("epochs", "'abc'")),
    ("epochs=2.5", ("epochs", "'2.5'")),
    ("lr=fast", ("lr", "'fast'")),
    ("epochs", ("key=value", "'epochs'")),
], ids=["word-for-int", "float-for-int", "word-for-float", "no-equals"])
def test_train_set_value_of_wrong_type(cli, ml_repo, item, needles):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "both", "--model", "mb", "--set", item, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, *needles)
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.embedded_only(PARSER_LEVEL)
@pytest.mark.parametrize("item, needle", [("optimizer=rmsprop", "rmsprop"), ("batch_size=0", "batch_size"),
                                          ("lr=-1", "lr"), ("epochs=0", "epochs"), ("val_fraction=1.5", "val_fraction")],
                         ids=["optimizer", "batch-size-zero", "negative-lr", "zero-epochs", "val-fraction"])
def test_train_set_value_out_of_range(cli, ml_repo, item, needle):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "both", "--model", "mb", "--set", "max_steps=1", "--set", item, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, needle)
    assert_unchanged(cli, ml_repo, before)


def test_train_classifier_on_data_without_labels(cli, ml_repo):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "unlabeled", "--model", "mb-nolabel", "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "'unlabeled'", "labels")
    assert_unchanged(cli, ml_repo, before)


def test_train_classifier_on_data_without_its_label_column(cli, ml_repo):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "unlabeled", "--model", "mb", "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "'time_of_day'", "'unlabeled'")
    assert_unchanged(cli, ml_repo, before)


def test_train_detector_on_data_without_boxes(cli, ml_repo):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "unlabeled", "--model", "det", "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "'unlabeled'", "boxes")
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.parametrize("data, model, needles", [
    ("day", "dc", ("forecasting", "series", "'day'", "image")),
    ("traffic", "mb-nolabel", ("classification", "image", "'traffic'", "series")),
    ("traffic", "det", ("detection", "image", "'traffic'", "series")),
], ids=["forecaster-on-images", "classifier-on-series", "detector-on-series"])
def test_train_on_the_wrong_modality(cli, ml_repo, data, model, needles):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", data, "--model", model, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, *needles)
    assert_unchanged(cli, ml_repo, before)


def test_train_init_from_an_incompatible_architecture(cli, ml_repo):
    before = snapshot(cli, ml_repo)
    # mobilenet_v3_small weights into a resnet18 model
    res = cli("train", "--data", "both", "--model", "rn", "--init-from", "mb-run", "--set", "max_steps=1",
              "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "init-from", "incompatible")
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.parametrize("ref", ["failed-run", "no-such-run"])
def test_train_init_from_a_run_without_a_checkpoint(cli, ml_repo, ref):
    before = snapshot(cli, ml_repo)
    res = cli("train", "--data", "both", "--model", "mb", "--init-from", ref, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, ref)
    assert_unchanged(cli, ml_repo, before)


@pytest.mark.parametrize("flag", ["--data", "--model", "--test"])
def test_train_unknown_version(cli, ml_repo, flag):
    before = snapshot(cli, ml_repo)
    args = {"--data": "both", "--model": "mb"}
    args[flag] = "no-such-version"
    flat = [x for kv in args.items() for x in kv]
    res = cli("train", *flat, "--set", "max_steps=1", "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "no-such-version")
    assert_unchanged(cli, ml_repo, before)


# ------------------------------------------------------------------------------ deployment


def test_deploy_a_failed_training(cli, ml_repo):
    before = snapshot(cli, ml_repo)
    res = cli("deploy", "failed-run", "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, "'failed-run'", "failed")
    assert_unchanged(cli, ml_repo, before)


@pytest.fixture
def corrupt():
    """Flip one byte of an artifact; put it back afterwards.  Restoring matters beyond tidiness: a
    copied repository on PostgreSQL + S3 (VEML_TEST_STORES) shares its stores with the template."""
    damaged: list[tuple[Path, str, bytes]] = []

    def _corrupt(root: Path, digest: str) -> None:
        original = artifact_bytes(root, digest)
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF  # one flipped byte, same length
        overwrite_artifact(root, digest, bytes(data))
        damaged.append((root, digest, original))

    yield _corrupt
    for root, digest, original in reversed(damaged):
        overwrite_artifact(root, digest, original)


def test_deploy_with_a_corrupted_checkpoint(cli, ml_repo, corrupt):
    digest = cli("train", "show", "mb-run", "--json", "--repo", ml_repo).json["checkpoint"]
    corrupt(ml_repo, digest)
    before = snapshot(cli, ml_repo)
    res = cli("deploy", "mb-run", "--format", "onnx", "--json", "--repo", ml_repo)
    line = assert_failed_cleanly(res, digest[:12], "'mb-run'", "digest")
    assert "mismatch" in line or "does not match" in line
    assert_unchanged(cli, ml_repo, before, verify=False)


def test_predict_with_a_corrupted_deployed_artifact(cli, ml_repo, corrupt):
    with veml.open(ml_repo) as r:
        digest = r.inference.get("mb-onnx").props["artifact"]
    corrupt(ml_repo, digest)
    before = snapshot(cli, ml_repo)
    res = cli("predict", "mb-onnx", "--data", "night", "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, digest[:12], "digest")
    assert_unchanged(cli, ml_repo, before, verify=False)


@pytest.mark.parametrize("which", ["checkpoint", "deployed-artifact"])
def test_verify_reports_a_corrupted_model_artifact(cli, ml_repo, which, corrupt):
    with veml.open(ml_repo) as r:
        if which == "checkpoint":
            digest = r.training.describe(r.training.get("mb-run"))["checkpoint"]
        else:
            digest = r.inference.get("mb-onnx").props["artifact"]
    corrupt(ml_repo, digest)
    v = cli("verify", "--json", "--repo", ml_repo)
    assert v.code == 1 and v.json["ok"] is False
    assert any(digest[:12] in p for p in v.json["problems"]), v.json["problems"]


@pytest.mark.parametrize("quantize", ["int8", "fp16"])
def test_deploy_quantize_with_torchscript(cli, ml_repo, quantize):
    before = snapshot(cli, ml_repo)
    res = cli("deploy", "mb-run", "--format", "torchscript", "--quantize", quantize, "--json", "--repo", ml_repo)
    line = assert_failed_cleanly(res, "--format onnx")
    assert "quantis" in line or "quantiz" in line, line
    assert_unchanged(cli, ml_repo, before)


# Deploy and predict requests that must fail cleanly: (arguments, what the error line names).
_REFUSED = {
    "deploy-torch-as-pickle": (["deploy", "mb-run", "--format", "pickle"], ["--format", "onnx", "torchscript"]),
    "deploy-target-without-out": (["deploy", "mb-run", "--target", "triton"], ["--out"]),
    "predict-classifier-on-series": (["predict", "mb-onnx", "--data", "traffic"], ["'traffic'", "image", "series"]),
    "predict-forecaster-other-network": (["predict", "dc-onnx", "--data", "traffic6"], ["12 sensors", "6"]),
    "predict-unknown-inference-name": (["predict", "no-such-inference", "--data", "night"], ["no-such-inference"]),
    "predict-unknown-inference-id": (["predict", "987654", "--data", "night"], ["987654"]),
    "predict-with-a-training": (["predict", "mb-run", "--data", "night"], ["mb-run"]),
    "predict-on-unknown-data": (["predict", "mb-onnx", "--data", "no-such-data"], ["no-such-data"]),
}


@pytest.mark.parametrize("case", list(_REFUSED), ids=list(_REFUSED))
def test_deploy_and_predict_refused(cli, ml_repo, case):
    args, needles = _REFUSED[case]
    before = snapshot(cli, ml_repo)
    res = cli(*args, "--json", "--repo", ml_repo)
    assert_failed_cleanly(res, *needles)
    assert_unchanged(cli, ml_repo, before)
