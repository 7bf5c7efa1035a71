"""The OpenMMLab adapter: MMDetection 3.x detectors, trained by mmengine's own Runner.

A model version holds an MMDetection config as plain data (see :mod:`veml.adapters.openmmlab_config`
for how a ``.py`` config becomes one, and the trust model).  Training builds mmengine's ``Runner``
from that config's model, train pipeline, optimiser wrapper, parameter schedulers and randomness;
the data is VeML's (the data version's images and boxes, fed through the config's own pipeline with
the file loader swapped for ``LoadImageFromNDArray``), and so are the evaluation (VeML's mAP on the
held-out split) and what is kept:

- the checkpoint: ``torch.save`` of the weights and VeML's meta (class names), which loads with
  ``torch.load(weights_only=True)`` (torch >= 2.6's default).  mmengine's own ``CheckpointHook`` is
  switched off: its files pickle the message hub and optimiser state and do not load weights-only;
- every ``checkpoint_every`` steps, a checkpoint of the same kind, kept as a file of the training
  version (``checkpoints/iter_N.pth``), and mmengine's log and ``scalars.json`` (``logs/…``);
- every step's losses and learning rate, as the run's metric rows (``veml train log T``).

The config's datasets, evaluators, hooks and ``work_dir`` are not used.  mmdet/mmengine/torch are
imported inside the methods: the module imports without the ``[openmmlab]`` extra.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import multiprocessing
import resource
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from veml.adapters import openmmlab_config as occ
from veml.adapters.base import (ChecksInit, ExportOutcome, LogFn, ModelSpec, Predictions, ProvidesModel, TaskData, TrainOutcome,
                               check_spec)
from veml.adapters.onnx_run import check_data
from veml.errors import InvalidInput, StorageError

#: what a model version's ``parameters`` hold (``config``: the MMDetection config as data)
MODEL_PARAMETERS: dict[str, Any] = {"config": {}, "image_size": occ.DEFAULT_IMAGE_SIZE, "source": {}}
_FILE_LOADERS = ("LoadImageFromFile", "LoadImageFromWebcam")


class OpenMMLabAdapter(ChecksInit, ProvidesModel):
    name = "openmmlab"
    warm_start = True
    ADAPT_METHODS: tuple[str, ...] = ()

    # --- specification ------------------------------------------------------------------------
    def validate(self, spec: ModelSpec) -> ModelSpec:
        params = check_spec(spec, "openmmlab", {"detection": (spec.architecture,)}, MODEL_PARAMETERS)
        if not params["config"]:
            raise InvalidInput("an openmmlab model version holds an MMDetection config: veml model add --config FILE.py")
        config = occ.plain(params["config"], "config")
        occ.check_config(config, "config")
        size = params["image_size"]
        if not 16 <= size <= 4096:
            raise InvalidInput(f"image_size must be between 16 and 4096, not {size}")
        parts = occ.describe(config)
        for part, given, found in zip(("architecture", "backbone", "neck", "head"),
                                      (spec.architecture, spec.backbone, spec.neck, spec.head), parts):
            if given is not None and given != found:
                raise InvalidInput(f"{part} {given!r} is not what the config builds ({found!r})")
        _build(config, None)  # the config builds an MMDetection detector, or the reason it does not
        return ModelSpec("openmmlab", "detection", parts[0], parts[1], parts[2], parts[3], {**params, "config": config})

    def train_defaults(self, spec: ModelSpec) -> dict[str, Any]:
        """The config's own schedule as the defaults ``--set`` may change."""
        c = spec.parameters["config"]
        train_cfg = c.get("train_cfg") or {}
        loader = c.get("train_dataloader") or {}
        optimizer = (c.get("optim_wrapper") or {}).get("optimizer") or {}
        iter_based = "Iter" in str(train_cfg.get("type", "")) or train_cfg.get("by_epoch") is False
        return {"epochs": 1 if iter_based else int(train_cfg.get("max_epochs", 1)),
                "max_steps": int(train_cfg.get("max_iters", 0)) if iter_based else 0,
                "batch_size": int(loader.get("batch_size", 2)), "lr": float(optimizer.get("lr", 0.01)),
                "seed": int((c.get("randomness") or {}).get("seed") or 0), "val_fraction": 0.2, "checkpoint_every": 0}

    def check_init(self, spec: ModelSpec, data: TaskData, init: bytes) -> None:
        from veml.adapters.torch_adapter import _init_from

        _init_from(_build(spec.parameters["config"], len(data.class_names)), init, list(data.class_names))

    # --- training -----------------------------------------------------------------------------
    def train(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None,
              log: LogFn) -> TrainOutcome:
        import tempfile

        import torch

        from veml.adapters.threads import choose_threads

        check_data(spec, data, training=True)
        choice = choose_threads()
        before = torch.get_num_threads()
        if choice.threads is not None:
            torch.set_num_threads(choice.threads)
        try:
            with tempfile.TemporaryDirectory(prefix="veml-mmengine-") as work, occ.quiet():
                outcome = _run(spec, data, params, init, log, Path(work))
            return replace(outcome, profile={**outcome.profile, "threads": torch.get_num_threads(),
                                             "threads_source": choice.source})
        finally:
            torch.set_num_threads(before)

    # --- prediction ---------------------------------------------------------------------------
    def predict(self, spec: ModelSpec, checkpoint: bytes, data: TaskData) -> Predictions:
        model, _ = self._load(spec, checkpoint)
        return predict_model(spec, model, data)

    def checkpoint_meta(self, checkpoint: bytes) -> dict[str, Any]:
        return dict(_read_checkpoint(checkpoint)["meta"])

    def model_and_meta(self, spec: ModelSpec, checkpoint: bytes) -> tuple[Any, dict[str, Any]]:
        return self._load(spec, checkpoint)

    def _load(self, spec: ModelSpec, checkpoint: bytes) -> tuple[Any, dict[str, Any]]:
        blob = _read_checkpoint(checkpoint)
        meta = dict(blob["meta"])
        model = _build(spec.parameters["config"], len(meta["class_names"]))
        model.load_state_dict(blob["state_dict"])
        return model.eval(), meta

    # --- deployment ---------------------------------------------------------------------------
    def export(self, spec: ModelSpec, checkpoint: bytes, fmt: str, quantize: str, sample: TaskData,
               device: str = "cpu") -> ExportOutcome:
        from veml.adapters import openmmlab_export

        if fmt != "onnx":
            raise InvalidInput(f"an MMDetection model deploys as --format onnx, not {fmt}")
        if quantize == "fp16":  # onnxruntime's float16 converter leaves the NMS subgraph's inputs dangling
            raise InvalidInput("--quantize fp16: an MMDetection deployment is none or int8 (the float16 converter breaks its NMS)")
        check_data(spec, sample, training=False)
        model, _ = self._load(spec, checkpoint)
        return openmmlab_export.export(spec, model, sample, quantize, device)

    def predict_exported(self, spec: ModelSpec, artifact: bytes, fmt: str, checkpoint_meta: Mapping[str, Any],
                         data: TaskData, device: str = "cpu") -> Predictions:
        from veml.adapters import onnx_run

        if fmt != "onnx":
            raise InvalidInput(f"an MMDetection deployment is ONNX, not {fmt}")
        return onnx_run.predict(spec, artifact, checkpoint_meta, data, device)


# --- building ---------------------------------------------------------------------------------------
def _scope() -> None:
    from mmdet.utils import register_all_modules

    with occ.quiet():
        register_all_modules(init_default_scope=True)


def model_config(config: Mapping[str, Any], num_classes: int | None) -> dict[str, Any]:
    """The config's ``model``, predicting ``num_classes`` classes (every head but the class-agnostic RPN)."""
    model = copy.deepcopy(dict(config["model"]))

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "num_classes" in node and node.get("type") != "RPNHead" and num_classes is not None:
                node["num_classes"] = num_classes
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit(model)
    return model


def _build(config: Mapping[str, Any], num_classes: int | None) -> Any:
    """The detector the config describes (its weights are the Runner's to initialise, or a checkpoint's)."""
    occ.require_mmdet()
    _scope()
    from mmengine.config import ConfigDict

    from mmdet.models.detectors.base import BaseDetector
    from mmdet.registry import MODELS

    try:
        with occ.quiet():
            model = MODELS.build(ConfigDict(model_config(config, num_classes)))
    except Exception as exc:  # noqa: BLE001 - a config that does not build says why
        raise InvalidInput(f"the config does not build an MMDetection model: {occ.first_line(exc)}") from None
    if not isinstance(model, BaseDetector):
        raise InvalidInput(f"model type {config['model']['type']!r} is not an MMDetection detector")
    return model


def pipeline_steps(spec: ModelSpec, split: str) -> list[dict[str, Any]]:
    """The config's train/test pipeline for in-memory images: the file loader becomes LoadImageFromNDArray,
    every Resize goes to VeML's image_size (so on VeML's square images it keeps their size), and the test
    pipeline loads no annotations."""
    size = int(spec.parameters["image_size"])
    steps = occ.pipeline(spec.parameters["config"], split)
    if steps is None:
        steps = [{"type": "LoadImageFromFile"}] + ([{"type": "LoadAnnotations", "with_bbox": True}] if split == "train" else []) \
            + [{"type": "Resize", "scale": [size, size], "keep_ratio": True}] \
            + ([{"type": "RandomFlip", "prob": 0.5}, {"type": "PackDetInputs"}] if split == "train" else
               [{"type": "PackDetInputs", "meta_keys": ["img_id", "img_path", "ori_shape", "img_shape", "scale_factor"]}])
    out = []
    for step in copy.deepcopy(steps):
        kind = str(step.get("type", "")).split(".")[-1]
        if kind in _FILE_LOADERS:
            step = {"type": "mmdet.LoadImageFromNDArray", **{k: v for k, v in step.items() if k in ("to_float32",)}}
        elif kind == "Resize":
            step["scale"] = [size, size]
        elif kind == "LoadAnnotations" and split == "test":
            continue
        out.append(_tuples(step))
    return out


def _tuples(node: Any) -> Any:
    """Lists as tuples, as the Python config had them (JSON has no tuples; mmcv's transforms check for them)."""
    if isinstance(node, dict):
        return {k: _tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        return tuple(_tuples(v) for v in node)
    return node


def _compose(steps: list[dict[str, Any]]) -> Any:
    from mmengine.dataset import Compose

    from mmdet.registry import TRANSFORMS

    try:
        return Compose([TRANSFORMS.build(s) for s in steps])
    except Exception as exc:  # noqa: BLE001
        raise InvalidInput(f"the config's data pipeline does not build: {occ.first_line(exc)}") from None


def sample(data: TaskData, i: int, with_boxes: bool) -> dict[str, Any]:
    """Sample ``i`` as an mmdet pipeline's input: BGR pixels (as mmcv loads files) and its instances."""
    item: dict[str, Any] = {"img": np.ascontiguousarray(data.images[i][..., ::-1]), "img_id": int(i)}
    if with_boxes:
        boxes, labels = data.boxes[i]
        item["instances"] = [{"bbox": [float(v) for v in b], "bbox_label": int(l), "ignore_flag": 0}
                             for b, l in zip(np.asarray(boxes).reshape(-1, 4), labels)]
    return item


class _Samples:
    """A map-style dataset over TaskData through a composed mmdet pipeline."""

    def __init__(self, data: TaskData, pipe: Any) -> None:
        self.data, self.pipe = data, pipe
        self.metainfo = {"classes": tuple(data.class_names)}

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, i: int) -> Any:
        return self.pipe(sample(self.data, i, True))


# --- training ---------------------------------------------------------------------------------------
def _run(spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn,
         work: Path) -> TrainOutcome:
    import torch
    from mmengine.config import ConfigDict
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import Runner

    config = spec.parameters["config"]
    meta = {"class_names": list(data.class_names), "task": "detection"}
    _scope()
    seed = int(params["seed"])
    loader = torch.utils.data.DataLoader(
        _Samples(data, _compose(pipeline_steps(spec, "train"))), batch_size=int(params["batch_size"]), shuffle=True,
        num_workers=0, collate_fn=pseudo_collate, generator=torch.Generator().manual_seed(seed))
    optim = copy.deepcopy(config.get("optim_wrapper") or {"type": "OptimWrapper", "optimizer": {
        "type": "SGD", "momentum": 0.9, "weight_decay": 1e-4}})
    optim.setdefault("optimizer", {"type": "SGD", "momentum": 0.9})["lr"] = float(params["lr"])
    steps = int(params["max_steps"])
    train_cfg = {"type": "IterBasedTrainLoop", "max_iters": steps} if steps else \
        {"type": "EpochBasedTrainLoop", "max_epochs": int(params["epochs"])}
    hook, state = _veml_hook(log, int(params["checkpoint_every"]), meta, init)
    t0 = time.perf_counter()
    try:  # mmengine logs every step to its log file (kept with the run) and to stdout, which goes nowhere here
        with contextlib.redirect_stdout(io.StringIO()):
            runner = Runner(
                model=ConfigDict(model_config(config, len(meta["class_names"]))), work_dir=str(work),
                experiment_name=f"veml-{uuid.uuid4().hex[:12]}", train_dataloader=loader, train_cfg=train_cfg,
                optim_wrapper=optim, param_scheduler=copy.deepcopy(config.get("param_scheduler")),
                default_hooks={"checkpoint": None, "logger": {"type": "LoggerHook", "interval": 1}},
                custom_hooks=[hook], randomness={"seed": seed}, default_scope="mmdet", log_level="INFO",
                env_cfg={"cudnn_benchmark": False, "dist_cfg": {"backend": "gloo"},
                         "mp_cfg": {"mp_start_method": multiprocessing.get_start_method(), "opencv_num_threads": 0}},
                launcher="none")
            runner.train()
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - mmengine/mmdet errors name the config's mistake
        raise InvalidInput(f"mmengine training failed: {occ.first_line(exc)}") from None
    train_s = time.perf_counter() - t0
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    files = dict(state["files"])
    for path in sorted(work.rglob("*")):
        if path.is_file() and (path.suffix == ".log" or path.name == "scalars.json"):
            files[f"logs/{path.name if path.suffix == '.json' else 'mmengine.log'}"] = path.read_bytes()
    profile = {"steps": state["step"], "samples": state["samples"], "train_s": train_s,
               "samples_per_s": state["samples"] / train_s if train_s else 0.0, "device": str(next(model.parameters()).device),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return TrainOutcome(save_checkpoint(model, meta), {"final_loss": state["loss"]}, profile, files)


def _veml_hook(log: LogFn, every: int, meta: Mapping[str, Any], init: bytes | None) -> tuple[Any, dict[str, Any]]:
    """An mmengine hook feeding VeML: --init-from weights before the first step, every step's losses and
    learning rate to ``log``, and a weights-only checkpoint every ``every`` steps."""
    from mmengine.hooks import Hook

    state: dict[str, Any] = {"step": 0, "samples": 0, "loss": float("nan"), "files": {}}

    class VemlHook(Hook):
        priority = "VERY_LOW"

        def before_train(self, runner: Any) -> None:
            if init is not None:
                from veml.adapters.torch_adapter import _init_from

                _init_from(runner.model, init, meta["class_names"])

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            step = runner.iter + 1
            values = {k: float(v) for k, v in (outputs or {}).items()}
            loss = values.get("loss", float("nan"))
            if not math.isfinite(loss):
                raise InvalidInput(f"loss became {loss} at epoch {runner.epoch} step {step} (lower lr, or check the data)")
            lrs = runner.optim_wrapper.get_lr().get("lr") or []
            if lrs:
                values["lr"] = float(lrs[0])
            state.update(step=step, loss=loss, samples=state["samples"] + len((data_batch or {}).get("inputs", ())))
            log(step, runner.epoch, values)
            if every and step % every == 0:
                state["files"][f"checkpoints/iter_{step}.pth"] = save_checkpoint(runner.model, meta)

    return VemlHook(), state


def save_checkpoint(model: Any, meta: Mapping[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": dict(meta)}, buf)
    return buf.getvalue()


def _read_checkpoint(checkpoint: bytes) -> dict[str, Any]:
    import torch

    try:
        return torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a damaged artifact
        raise StorageError(f"cannot load checkpoint: {type(exc).__name__}") from None


# --- prediction -------------------------------------------------------------------------------------
def predict_model(spec: ModelSpec, model: Any, data: TaskData, batch_size: int = 8) -> Predictions:
    """MMDetection's own prediction (test pipeline, data preprocessor, head post-processing and NMS)."""
    import torch
    from mmengine.dataset import pseudo_collate

    check_data(spec, data, training=False)
    _scope()
    pipe = _compose(pipeline_steps(spec, "test"))
    model.eval()
    dets = []
    with torch.no_grad(), occ.quiet():
        for start in range(0, len(data.images), batch_size):
            batch = pseudo_collate([pipe(sample(data, i, False)) for i in range(start, min(start + batch_size, len(data.images)))])
            for out in model.test_step(batch):
                p = out.pred_instances
                dets.append((p.bboxes.cpu().numpy().astype(np.float32).reshape(-1, 4), p.scores.cpu().numpy().astype(np.float32),
                             p.labels.cpu().numpy().astype(np.int64)))
    return Predictions("detection", detections=dets)


__all__ = ["OpenMMLabAdapter", "MODEL_PARAMETERS", "model_config", "pipeline_steps", "predict_model", "save_checkpoint"]
