"""The OpenMMLab adapter end to end: an MMDetection 3.x config as a model version, trained by mmengine's
Runner into a training version (losses, weights-only checkpoints, mmengine's logs), deployed as ONNX and
run back as a prediction version; and configs that must be refused with the repository untouched.

Needs the ``[openmmlab]`` extra (mmdet, mmengine, and mmcv built from source with its ops): the
``.ci/openmmlab`` stage installs it and runs this module.  Elsewhere the module is skipped.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet", reason="the [openmmlab] extra is not installed (mmcv builds from source): "
                                    "these tests run in the .ci/openmmlab stage")
pytest.importorskip("mmcv.ops", reason="mmcv was installed without its compiled ops (mmcv-lite): .ci/openmmlab builds them")

import torch  # noqa: E402

import veml  # noqa: E402
from conftest import assert_failed_cleanly, images_dir, ok, run_cli  # noqa: E402
from test_ml_bad_input import assert_unchanged, snapshot  # noqa: E402

# a tiny RetinaNet (ResNet-18 at a quarter of its width) for 64x64 images: trains a few steps on a CPU in seconds
BASE = """
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=32, start_level=0, add_extra_convs='on_input',
              num_outs=5),
    bbox_head=dict(type='RetinaHead', num_classes=80, in_channels=32, stacked_convs=1, feat_channels=32,
                   anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2, scales_per_octave=2,
                                         ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                   bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
                   loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=-1, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=5))
"""
CONFIG = """
_base_ = ['./tiny_retinanet_base.py']
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='RandomFlip', prob=0.5),
                  dict(type='PackDetInputs')]
train_dataloader = dict(batch_size=4, dataset=dict(type='CocoDataset', data_root='data/coco/', pipeline=train_pipeline))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
randomness = dict(seed=3)
"""


@pytest.fixture(scope="module")
def mm(tmp_path_factory, driving_small) -> dict:
    root = tmp_path_factory.mktemp("openmmlab")
    repo = root / "repo"
    veml.init(repo).close()
    configs = root / "configs"
    configs.mkdir()
    (configs / "tiny_retinanet_base.py").write_text(BASE)
    (configs / "retinanet_tiny.py").write_text(CONFIG)
    ok("data", "import", "coco", driving_small, "--images", images_dir(driving_small), "--name", "driving", "--repo", repo)
    model = ok("model", "add", "--name", "retina", "--config", configs / "retinanet_tiny.py", "--repo", repo)
    t = ok("train", "--data", "driving", "--model", "retina", "--set", "max_steps=4", "--set", "checkpoint_every=2",
           "--name", "retina-run", "--repo", repo)
    log = ok("train", "log", "retina-run", "--repo", repo)
    i = ok("deploy", "retina-run", "--name", "retina-onnx", "--repo", repo)
    p = ok("predict", "retina-onnx", "--data", "driving", "--name", "retina-pred", "--repo", repo)
    return {"repo": repo, "configs": configs, "model": model, "training": t, "log": log, "inference": i, "prediction": p}


def test_config_is_a_model_version_with_shared_parts(mm):
    m = mm["model"]
    assert (m["adapter"], m["task"], m["architecture"]) == ("openmmlab", "detection", "RetinaNet")
    assert (m["backbone"], m["neck"], m["head"]) == ("ResNet18", "FPN", "RetinaHead")
    config = m["parameters"]["config"]
    assert config["model"]["neck"]["out_channels"] == 32  # merged from _base_
    assert m["parameters"]["image_size"] == 64 and m["parameters"]["source"]["file"] == "retinanet_tiny.py"
    listed = ok("model", "list", "--backbone", "ResNet18", "--architecture", "RetinaNet", "--repo", mm["repo"])
    assert [v["name"] for v in listed] == ["retina"]


def test_training_version_holds_losses_checkpoints_and_logs(mm):
    t = mm["training"]
    assert t["status"] == "finished" and t["class_names"] == ["car", "pedestrian", "sign"]
    assert t["params"]["lr"] == 0.01 and t["params"]["seed"] == 3 and t["params"]["batch_size"] == 4  # the config's
    assert t["profile"]["steps"] == 4 and np.isfinite(t["metrics"]["final_loss"])
    assert 0.0 <= t["metrics"]["map50"] <= 1.0
    keys = {(r["step"], r["key"]) for r in mm["log"]["logs"]}
    for step in range(1, 5):
        assert {(step, "loss"), (step, "loss_cls"), (step, "loss_bbox"), (step, "lr")} <= keys
    arts = {a["name"]: a for a in t["artifacts"]}
    assert set(arts) == {"checkpoints/iter_2.pth", "checkpoints/iter_4.pth", "logs/mmengine.log", "logs/scalars.json"}
    with veml.open(mm["repo"]) as r:
        blob = r.stores.artifacts.get_verified(arts["checkpoints/iter_2.pth"]["sha256"], "checkpoint")
        log_text = r.stores.artifacts.get_verified(arts["logs/mmengine.log"]["sha256"], "log").decode()
    ckpt = torch.load(io.BytesIO(blob), weights_only=True)  # torch >= 2.6's safe default loads it
    assert ckpt["meta"]["class_names"] == t["class_names"] and "bbox_head.retina_cls.weight" in ckpt["state_dict"]
    assert "loss_cls:" in log_text and "System environment" in log_text  # mmengine's own log of the run


def test_onnx_deployment_predicts_what_mmdetection_predicts(mm):
    i, p = mm["inference"], mm["prediction"]
    assert i["format"] == "onnx" and i["input_shape"] == [3, 64, 64] and i["input_names"] == ["image"]
    assert sorted(i["output_names"]) == ["boxes", "labels", "scores"]
    assert p["samples"] == 40 and p["predictions"] == 40 * 5 and 0.0 <= p["metrics"]["map50"] <= 1.0
    from veml.adapters import get_adapter
    from veml.versions.model import spec_of
    from veml.versions.taskdata import task_data

    with veml.open(mm["repo"]) as r:
        table = r.inference.predictions("retina-pred")
        tnode = r.training.get("retina-run")
        spec = spec_of(r.models.get("retina"))
        view = r.data.checkout(r.data.get("driving"))
        td = task_data(r.stores, spec, view, tuple(tnode.props["class_names"]), require_labels=False)
        eager = get_adapter("openmmlab").predict(spec, r.training.checkpoint(tnode), td)
    # MMDetection's own predict (mmcv NMS) and the ONNX graph (VeML's export) give the same boxes
    ids = np.array(table["data_id"].to_pylist())
    for did, (boxes, scores, labels) in zip(td.data_ids, eager.detections):
        rows = ids == did
        got = np.stack([np.array(table[k].to_pylist())[rows] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")], 1)
        want = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        order_got, order_want = np.argsort(-np.array(table["score"].to_pylist())[rows]), np.argsort(-scores)
        assert np.allclose(got[order_got], want[order_want], atol=1e-2), did
        assert np.allclose(np.array(table["score"].to_pylist())[rows][order_got], scores[order_want], atol=1e-4)


def _bad(mm, tmp_path: Path, name: str, text: str, *needles: str, files: dict[str, str] | None = None) -> None:
    d = tmp_path / name
    d.mkdir()
    for rel, body in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(body)
    (d / "cfg.py").write_text(text)
    res = run_cli("model", "add", "--name", f"bad-{name}", "--config", d / "cfg.py", "--json", "--repo", mm["repo"])
    assert_failed_cleanly(res, *needles)


def test_bad_configs_are_refused_and_leave_the_repository_unchanged(mm, tmp_path, cli):
    before = snapshot(cli, mm["repo"])
    outside = tmp_path / "outside.py"
    outside.write_text(BASE)
    marker = tmp_path / "ran"
    cases = [
        ("syntax", "model = dict(type='RetinaNet'\n", "not valid Python"),
        ("nomodel", "x = 1\n", "not an MMDetection config"),
        ("unknown", "model = dict(type='NoSuchDetector')\n", "does not build", "NoSuchDetector"),
        ("notdetector", "model = dict(type='ResNet', depth=18)\n", "not an MMDetection detector"),
        ("missing", "_base_ = ['./nothere.py']\n", "nothere.py", "file not found"),
        ("climb", "_base_ = ['../outside.py']\n", "outside the config's directory"),
        ("absolute", f"_base_ = [{str(outside)!r}]\n", "absolute path"),
        ("loadfrom", CONFIG.replace("./tiny_retinanet_base.py", "./b.py") + "load_from = 'x.pth'\n", "load_from"),
        ("pretrained", BASE.replace("init_cfg=None", "init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')"),
         "model.backbone.init_cfg", "pretrained"),
        ("imports", f"custom_imports = dict(imports=['os'])\n{BASE}", "custom_imports"),
        ("lazy", "from mmengine.config import read_base\nwith read_base():\n    from .b import *\n", "read_base"),
        ("dynamicbase", f"_base_ = [open({str(marker)!r}, 'w').name]\n", "_base_ must be"),
        ("classobj", "import collections\nmodel = dict(type=collections.OrderedDict)\n", "not an MMDetection detector"),
    ]
    for name, text, *needles in cases:
        _bad(mm, tmp_path, name, text, *needles, files={"b.py": BASE})
    assert not marker.exists()  # a config whose _base_ is not written out is refused before any of it runs
    res = run_cli("train", "--data", "driving", "--model", "retina", "--set", "checkpoint_every=-1", "--json",
                  "--repo", mm["repo"])
    assert_failed_cleanly(res, "checkpoint_every")
    assert_failed_cleanly(run_cli("deploy", "retina-run", "--quantize", "fp16", "--json", "--repo", mm["repo"]), "fp16")
    assert_unchanged(cli, mm["repo"], before)
