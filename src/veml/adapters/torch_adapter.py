"""The torch adapter: image classification, object detection and DCRNN forecasting.

One loop trains all three; what differs per task is how a batch becomes a loss and how outputs
become :class:`~veml.adapters.base.Predictions`.  Checkpoints are ``torch.save`` of plain tensors
and JSON-able metadata, so they load with ``weights_only=True`` (no pickle code execution).
"""

from __future__ import annotations

import io
import math
import resource
import time
import warnings
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from veml.adapters import onnx_run
from veml.adapters import torch_models as tm
from veml.adapters.base import (ChecksInit, ExportOutcome, LogFn, ModelSpec, Predictions, ProvidesModel, TaskData, TrainOutcome,
                               TrainsDataParallel, check_spec)
from veml.adapters.finetune import Schedule
from veml.adapters.threads import choose_threads
from veml.errors import InvalidInput, StorageError

_ARCHS = {"classification": tm.CLASSIFIERS, "detection": tm.DETECTORS, "forecasting": tm.FORECASTERS}



def spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each mini-batch; a lone trailing sample joins the batch before it, because BatchNorm
    in training mode cannot normalise a batch of one (MobileNetV3 and the detectors' heads fail on it)."""
    out = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(out) > 1 and out[-1][1] - out[-1][0] == 1:
        out[-2:] = [(out[-2][0], n)]
    return out

class TorchAdapter(ChecksInit, TrainsDataParallel, ProvidesModel):
    name = "torch"
    warm_start = True

    # --- specification ------------------------------------------------------------------------
    def validate(self, spec: ModelSpec) -> ModelSpec:
        params = check_spec(spec, "torch", _ARCHS, tm.MODEL_PARAMETERS.get(spec.task, {}))
        if spec.task == "detection" and (spec.backbone or "resnet18") not in tm.DETECTOR_BACKBONES:
            raise InvalidInput(f"unknown detection backbone {spec.backbone!r}: use one of {', '.join(tm.DETECTOR_BACKBONES)}")
        backbone = spec.backbone or (spec.architecture if spec.task == "classification" else "resnet18" if spec.task == "detection" else None)
        neck = spec.neck or ("fpn" if spec.task == "detection" else None)
        return ModelSpec(spec.adapter, spec.task, spec.architecture, backbone, neck, spec.head, params)

    def train_defaults(self, spec: ModelSpec) -> dict[str, Any]:
        return dict(tm.TRAIN_PARAMETERS[spec.task])

    def check_init(self, spec: ModelSpec, data: TaskData, init: bytes) -> None:
        """Refuse an incompatible ``--init-from`` before a training version is written."""
        meta = self._meta(spec, data)
        _init_from(self._build(spec, meta), init, meta.get("class_names"))

    # --- building -----------------------------------------------------------------------------
    def _build(self, spec: ModelSpec, meta: Mapping[str, Any]) -> nn.Module:
        p = spec.parameters
        if spec.task == "classification":
            return tm.build_classifier(spec.architecture, len(meta["class_names"]), p)
        if spec.task == "detection":
            return tm.build_detector(spec.architecture, spec.backbone, len(meta["class_names"]), p)
        adj = np.asarray(meta["adjacency"], np.float32) if meta.get("adjacency") is not None else None
        return tm.build_forecaster(p, adj, int(meta["sensors"]))

    def _meta(self, spec: ModelSpec, data: TaskData) -> dict[str, Any]:
        meta: dict[str, Any] = {"class_names": list(data.class_names), "task": spec.task}
        if spec.task == "forecasting":
            if data.series is None:
                raise InvalidInput("forecasting needs a series data version")
            meta.update(sensors=int(data.series.shape[2]), missing_value=float(data.missing_value),
                        adjacency=None if data.adjacency is None else np.asarray(data.adjacency, np.float32).tolist())
            valid = data.series[data.series != data.missing_value]
            meta.update(mean=float(valid.mean()) if valid.size else 0.0, std=float(valid.std()) if valid.size else 1.0)
        return meta

    def _load(self, spec: ModelSpec, checkpoint: bytes) -> tuple[nn.Module, dict[str, Any]]:
        try:
            blob = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling failure is a damaged artifact
            raise StorageError(f"cannot load checkpoint: {type(exc).__name__}") from None
        meta = blob["meta"]
        if spec.task == "classification":  # every tensor of a classifier is in its state dict: skip the random
            with torch.device("meta"), warnings.catch_warnings():  # initialisation (and pretrained weights) the
                warnings.filterwarnings("ignore", ".*copying from a non-meta parameter")  # checkpoint overwrites
                model = self._build(spec, meta)
            model.load_state_dict(blob["state_dict"], assign=True)
            if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
                return model.eval(), meta
        model = self._build(spec, meta)
        model.load_state_dict(blob["state_dict"])
        return model.eval(), meta

    # --- batches ------------------------------------------------------------------------------
    def _check_data(self, spec: ModelSpec, data: TaskData, training: bool) -> None:
        onnx_run.check_data(spec, data, training)

    def _images(self, images: np.ndarray, normalise: bool) -> torch.Tensor:
        return torch.from_numpy(onnx_run.images_nchw(images, normalise))

    def _forecast_windows(self, spec: ModelSpec, data: TaskData, meta: Mapping[str, Any], stride: int):
        return onnx_run.forecast_windows(spec, data, meta, stride)

    # --- training -----------------------------------------------------------------------------
    def train(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn) -> TrainOutcome:
        """One local run, with torch's intra-op threads set for this machine (veml.adapters.threads) and
        restored after; the profile records them (``threads``, ``threads_source``)."""
        choice = choose_threads()
        before = torch.get_num_threads()
        if choice.threads is not None:
            torch.set_num_threads(choice.threads)
        try:
            outcome = self._train(spec, data, params, init, log)
            return replace(outcome, profile={**outcome.profile, "threads": torch.get_num_threads(),
                                             "threads_source": choice.source})
        finally:
            torch.set_num_threads(before)

    def _train(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn) -> TrainOutcome:
        self._check_data(spec, data, training=True)
        torch.manual_seed(int(params["seed"]))
        np.random.seed(int(params["seed"]))
        meta = self._meta(spec, data)
        model = self._build(spec, meta)
        if init is not None:
            _init_from(model, init, meta.get("class_names"))
        opt = _optimizer(model, params)
        schedule = Schedule(model, opt, params)
        profile = {"data_s": 0.0, "forward_backward_s": 0.0, "evaluation_s": 0.0, "samples": 0, "steps": 0}
        epochs, max_steps = int(params["epochs"]), int(params["max_steps"])
        step, last_loss = 0, float("nan")
        gen = torch.Generator().manual_seed(int(params["seed"]))
        model.train()
        t_start = time.perf_counter()
        for epoch in range(epochs):
            schedule.epoch_start(epoch)
            for batch, n in self._batches(spec, data, meta, int(params["batch_size"]), gen, profile, params):
                t0 = time.perf_counter()
                loss = self._loss(spec, model, batch, meta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step_done()
                profile["forward_backward_s"] += time.perf_counter() - t0
                profile["samples"] += n
                step += 1
                last_loss = _finite_loss(float(loss.detach()), epoch, step)
                log(step, epoch, {"loss": last_loss})
                if max_steps and step >= max_steps:
                    break
            if max_steps and step >= max_steps:
                break
        return self._finish(spec, model, data, params, meta, profile, t_start, step, last_loss, precise_bn=True)

    def _finish(self, spec: ModelSpec, model: Any, data: TaskData, params: Mapping[str, Any], meta: Mapping[str, Any],
                profile: dict[str, Any], t_start: float, step: int, last_loss: float, precise_bn: bool) -> TrainOutcome:
        """End of a training run, local or one DDP worker: precise BN, the profile, the checkpoint."""
        if precise_bn and spec.task == "classification" and params.get("precise_bn", True):
            # "precise BN": the running statistics a few hundred steps leave behind lag the weights (and, after
            # --init-from, still describe the source domain); one pass over the training data makes them exact
            norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if norms:
                t0 = time.perf_counter()
                self._reestimate_bn(spec, model, norms, data, int(params["batch_size"]))
                profile["precise_bn_s"] = time.perf_counter() - t0
        profile["steps"] = step
        profile["train_s"] = time.perf_counter() - t_start
        profile["samples_per_s"] = profile["samples"] / profile["forward_backward_s"] if profile["forward_backward_s"] else 0.0
        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "meta": meta}, buf)
        profile["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return TrainOutcome(buf.getvalue(), {"final_loss": last_loss}, profile)

    # --- data-parallel training ------------------------------------------------------------------
    def train_worker(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn,
                     wrap_model: Callable[[nn.Module], nn.Module], wrap_loader: Callable[[Any], Any],
                     epoch_end: Callable[[int, Mapping[str, float]], None], rank: int) -> TrainOutcome:
        """One worker of a data-parallel run: the local loop with the model and loader handed to ``wrap_*``.

        The launcher (Ray Train, see :mod:`veml.compute.ray_train`) has set up ``torch.distributed``;
        ``wrap_model`` makes the model a DistributedDataParallel one and ``wrap_loader`` gives the
        loader a DistributedSampler, so every worker sees a disjoint shuffled share of ``data`` and
        gradients are averaged.  Every worker takes the same number of steps (the sampler pads the
        shares to equal length), logs the loss averaged over workers, and calls ``epoch_end`` once
        per epoch (a barrier under Ray Train).  Rank 0 then re-estimates batch-norm statistics on
        all of ``data`` as the local loop does, so its checkpoint is the one to keep.
        """
        self._check_data(spec, data, training=True)
        seed = int(params["seed"])
        torch.manual_seed(seed)
        np.random.seed(seed)
        meta = self._meta(spec, data)
        model = self._build(spec, meta)
        if init is not None:
            _init_from(model, init, meta.get("class_names"))
        model = wrap_model(model)
        opt = _optimizer(model, params)
        schedule = Schedule(getattr(model, "module", model), opt, params)
        windows = None
        if spec.task == "forecasting":
            x, y, _ = self._forecast_windows(spec, data, meta, int(params.get("stride", 1)))
            windows = (x, y)
        n = len(windows[0]) if windows is not None else len(data.images)
        loader = wrap_loader(torch.utils.data.DataLoader(
            _Positions(n), batch_size=int(params["batch_size"]), shuffle=True,
            drop_last=n > 1 and n % int(params["batch_size"]) == 1,  # BatchNorm cannot train on a batch of one
            generator=torch.Generator().manual_seed(seed), collate_fn=_Collate(self, spec, data, windows)))
        profile: dict[str, Any] = {"forward_backward_s": 0.0, "samples": 0, "steps": 0}
        epochs, max_steps = int(params["epochs"]), int(params["max_steps"])
        step, last_loss = 0, float("nan")
        model.train()
        t_start = time.perf_counter()
        for epoch in range(epochs):
            if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)  # a different shuffle per epoch, the same on every worker
            losses = []
            schedule.epoch_start(epoch)
            for batch, count in loader:
                t0 = time.perf_counter()
                loss = self._loss(spec, model, batch, meta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step_done()
                profile["forward_backward_s"] += time.perf_counter() - t0
                profile["samples"] += count
                step += 1
                last_loss = _finite_loss(_global_mean(float(loss.detach())), epoch, step)
                losses.append(last_loss)
                log(step, epoch, {"loss": last_loss})
                if max_steps and step >= max_steps:
                    break
            epoch_end(epoch, {"loss": float(np.mean(losses)) if losses else float("nan"), "steps": float(step)})
            if max_steps and step >= max_steps:
                break
        module = getattr(model, "module", model)  # the plain model inside DistributedDataParallel
        return self._finish(spec, module, data, params, meta, profile, t_start, step, last_loss, precise_bn=rank == 0)

    def _batches(self, spec: ModelSpec, data: TaskData, meta: Mapping[str, Any], batch_size: int, gen: torch.Generator,
                 profile: dict[str, Any], params: Mapping[str, Any]) -> Iterator[tuple[Any, int]]:
        """Shuffled mini-batches; the time spent making them is the profile's data-loading phase."""
        t0 = time.perf_counter()
        if spec.task == "forecasting":
            x, y, _ = self._forecast_windows(spec, data, meta, int(params.get("stride", 1)))
            n = len(x)
        else:
            n = len(data.images)
        order = torch.randperm(n, generator=gen).numpy()
        profile["data_s"] += time.perf_counter() - t0
        for start, end in spans(n, batch_size):
            t0 = time.perf_counter()
            idx = np.sort(order[start:end])
            if spec.task == "classification":
                batch: Any = (self._images(data.images[idx], True), torch.as_tensor(data.labels[idx], dtype=torch.long))
            elif spec.task == "detection":
                off = tm.first_label_offset(spec.architecture)
                images = list(self._images(data.images[idx], False))
                targets = [{"boxes": torch.as_tensor(data.boxes[i][0], dtype=torch.float32).reshape(-1, 4),
                            "labels": torch.as_tensor(data.boxes[i][1], dtype=torch.long) + off} for i in idx]
                batch = (images, targets)
            else:
                batch = (torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
            profile["data_s"] += time.perf_counter() - t0
            yield batch, len(idx)

    def _loss(self, spec: ModelSpec, model: nn.Module, batch: Any, meta: Mapping[str, Any]) -> torch.Tensor:
        if spec.task == "classification":
            x, y = batch
            return nn.functional.cross_entropy(model(x), y)
        if spec.task == "detection":
            images, targets = batch
            return sum(model(images, targets).values())
        from veml.adapters.dcrnn import masked_mae_loss

        x, y = batch
        pred = model(x) * meta["std"] + meta["mean"]
        return masked_mae_loss(pred, y, meta["missing_value"])

    # --- unsupervised adaptation ----------------------------------------------------------------
    ADAPT_METHODS = ("adabn", "tent")

    def adapt(self, spec: ModelSpec, checkpoint: bytes, data: TaskData, method: str, params: Mapping[str, Any],
              log: LogFn) -> TrainOutcome:
        """Label-free adaptation of the model's own batch-norm layers to the target data.

        ``adabn`` (Li et al. 2016): each BN layer's running mean and variance re-estimated on the target
        data, no labels, no gradients; the weights stay as trained, which undoes a shift in low-level
        statistics (night, fog, another camera).  ``tent`` (Wang et al. 2021, classifiers only): after
        AdaBN, the BN layers' scale and shift are trained to minimise the entropy of the model's own
        predictions on the target data (``adapt_epochs`` passes, Adam at ``adapt_lr``), then the
        statistics are re-estimated once more for the adapted weights.
        """
        self._check_data(spec, data, training=False)
        model, meta = self._load(spec, checkpoint)
        norms = self._norms(spec, model, method)
        t0 = time.perf_counter()
        batch = int(params.get("batch_size", 32))
        seen, step = self._reestimate_bn(spec, model, norms, data, batch, log)
        if method == "tent":
            step += self._entropy_minimise(spec, model, norms, data, batch, params, log, step)
            seen, _ = self._reestimate_bn(spec, model, norms, data, batch)
        model.eval()
        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "meta": meta}, buf)
        profile = {"train_s": time.perf_counter() - t0, "samples": seen, "steps": step, "bn_layers": len(norms),
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        return TrainOutcome(buf.getvalue(), {"adapted_samples": seen}, profile)

    def _entropy_minimise(self, spec: ModelSpec, model: nn.Module, norms: list[nn.Module], data: TaskData, batch: int,
                          params: Mapping[str, Any], log: LogFn, step0: int) -> int:
        """TENT's update: only the BN affine parameters learn, from the mean prediction entropy (batch statistics)."""
        affine = [p for m in norms for p in (m.weight, m.bias) if p is not None]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in affine:
            p.requires_grad_(True)
        opt = torch.optim.Adam(affine, lr=float(params.get("adapt_lr", 1e-3)))
        gen = torch.Generator().manual_seed(int(params.get("seed", 0)))
        model.eval()
        for m in norms:
            m.train()  # normalise with each batch's own statistics, as TENT does
        step = 0
        for _ in range(int(params.get("adapt_epochs", 1))):
            order = torch.randperm(len(data), generator=gen).numpy()
            for i, end in spans(len(data), batch):
                logits = model(self._images(data.images[np.sort(order[i:end])], True))
                p = torch.softmax(logits, dim=1)
                loss = -(p * torch.log_softmax(logits, dim=1)).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                log(step0 + step, 0, {"entropy": float(loss.detach())})
        for p in model.parameters():
            p.requires_grad_(True)
        return step

    @torch.no_grad()
    def _reestimate_bn(self, spec: ModelSpec, model: nn.Module, norms: list[nn.Module], data: TaskData, batch_size: int,
                       log: LogFn | None = None) -> tuple[int, int]:
        """Running BN statistics recomputed as an exact average over ``data`` (one forward pass, no gradients)."""
        was_training = model.training
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over every batch, not an exponential one
            m.train()
        seen = step = 0
        for i, end in spans(len(data), batch_size):
            if spec.task == "classification":
                model(self._images(data.images[i:end], True))
            elif spec.task == "detection":
                images, _ = model.transform(list(self._images(data.images[i:end], False)))
                model.backbone(images.tensors)
            seen += end - i
            step += 1
            if log is not None:
                log(step, 0, {"adapted_samples": float(seen)})
        for m in norms:
            m.momentum = 0.1
        model.train(was_training)
        return seen, step

    def check_adapt(self, spec: ModelSpec, checkpoint: bytes, method: str) -> None:
        """Refuse an adaptation that cannot work before a training version is written."""
        self._norms(spec, self._load(spec, checkpoint)[0], method)

    def _norms(self, spec: ModelSpec, model: nn.Module, method: str) -> list[nn.Module]:
        if method not in self.ADAPT_METHODS:
            raise InvalidInput(f"unknown adaptation {method!r}: use one of {', '.join(self.ADAPT_METHODS)}")
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if method == "tent" and spec.task != "classification":
            raise InvalidInput(f"tent minimises the entropy of class predictions: this is a {spec.task} model "
                               "(use --adapt adabn)")
        if not norms or spec.task not in ("classification", "detection"):
            raise InvalidInput(f"this {spec.task}/{spec.architecture} model has no batch-norm layers AdaBN can re-estimate "
                               "(use --method transfer or full, with labels)")
        return norms

    # --- prediction ---------------------------------------------------------------------------
    def predict(self, spec: ModelSpec, checkpoint: bytes, data: TaskData) -> Predictions:
        model, meta = self._load(spec, checkpoint)
        return self._predict_model(spec, model, meta, data)

    @torch.no_grad()
    def _predict_model(self, spec: ModelSpec, model: nn.Module, meta: Mapping[str, Any], data: TaskData,
                       batch_size: int = 64) -> Predictions:
        self._check_data(spec, data, training=False)
        model.eval()
        if spec.task == "classification":
            out = [torch.softmax(model(self._images(data.images[i:i + batch_size], True)), -1).numpy()
                   for i in range(0, len(data.images), batch_size)]
            return Predictions("classification", scores=np.concatenate(out) if out else np.zeros((0, len(meta["class_names"]))))
        if spec.task == "detection":
            off = tm.first_label_offset(spec.architecture)
            dets = []
            for i in range(0, len(data.images), batch_size):
                for o in model(list(self._images(data.images[i:i + batch_size], False))):
                    dets.append((o["boxes"].numpy(), o["scores"].numpy(), o["labels"].numpy() - off))
            return Predictions("detection", detections=dets)
        if data.series.shape[2] != meta["sensors"]:
            raise InvalidInput(f"this forecaster was trained on {meta['sensors']} sensors; the data has {data.series.shape[2]}")
        x, y, owner = self._forecast_windows(spec, data, meta, int(spec.parameters["horizon"]))
        out = [model(torch.from_numpy(x[i:i + batch_size])).numpy() * meta["std"] + meta["mean"] for i in range(0, len(x), batch_size)]
        return Predictions("forecasting", forecasts=np.concatenate(out)[..., 0], forecast_targets=y[..., 0], forecast_sample=owner)

    # --- deployment ---------------------------------------------------------------------------
    def export(self, spec: ModelSpec, checkpoint: bytes, fmt: str, quantize: str, sample: TaskData, device: str = "cpu") -> ExportOutcome:
        from veml.adapters import torch_export

        model, meta = self._load(spec, checkpoint)
        self._check_data(spec, sample, training=False)
        return torch_export.export(spec, model, self.example_input(spec, meta, sample, 16), fmt, quantize, device)

    def predict_exported(self, spec: ModelSpec, artifact: bytes, fmt: str, checkpoint_meta: Mapping[str, Any], data: TaskData,
                         device: str = "cpu", batch_size: int = 64) -> Predictions:
        if fmt == "onnx":
            return onnx_run.predict(spec, artifact, checkpoint_meta, data, device, batch_size)
        from veml.adapters import torch_export

        scripted = torch_export.runner(spec, artifact, fmt, device)

        def run(x: Any) -> list[np.ndarray]:  # numpy in, as onnx_run hands it; the scripted module takes tensors
            return scripted([torch.from_numpy(i) for i in x] if spec.task == "detection" else torch.from_numpy(x))

        return onnx_run.predict_with(run, spec, checkpoint_meta, data, batch_size)

    def checkpoint_meta(self, checkpoint: bytes) -> dict[str, Any]:
        try:
            return dict(torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)["meta"])
        except Exception as exc:
            raise StorageError(f"cannot load checkpoint: {type(exc).__name__}") from None

    def model_and_meta(self, spec: ModelSpec, checkpoint: bytes) -> tuple[nn.Module, dict[str, Any]]:
        """The trained module itself (export, embeddings)."""
        return self._load(spec, checkpoint)

    def example_input(self, spec: ModelSpec, meta: Mapping[str, Any], data: TaskData, n: int) -> Any:
        """A batch in the form the model's forward takes, for export and latency checks."""
        if spec.task == "classification":
            return self._images(data.images[:n], True)
        if spec.task == "detection":
            return [self._images(data.images[:1], False)[0]]
        x, _, _ = self._forecast_windows(spec, data, meta, int(spec.parameters["horizon"]))
        return torch.from_numpy(x[:n])


def _optimizer(model: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params["optimizer"] == "sgd":
        return torch.optim.SGD(trainable, lr=float(params["lr"]), momentum=0.9, weight_decay=float(params["weight_decay"]))
    if params["optimizer"] == "adamw":
        return torch.optim.AdamW(trainable, lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
    raise InvalidInput(f"optimizer must be adamw or sgd, not {params['optimizer']!r}")


class _Positions(torch.utils.data.Dataset):
    """Sample positions 0..n-1: a sampler splits and shuffles positions, :class:`_Collate` turns them into a batch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _Collate:
    """Positions in, the same (batch, n) the local loop's ``_batches`` makes out (arrays stay shared, not copied per item)."""

    def __init__(self, adapter: "TorchAdapter", spec: ModelSpec, data: TaskData,
                 windows: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.adapter, self.spec, self.data, self.windows = adapter, spec, data, windows

    def __call__(self, positions: list[int]) -> tuple[Any, int]:
        idx = np.sort(np.asarray(positions, np.int64))
        a, spec, data = self.adapter, self.spec, self.data
        if spec.task == "classification":
            return (a._images(data.images[idx], True), torch.as_tensor(data.labels[idx], dtype=torch.long)), len(idx)
        if spec.task == "detection":
            off = tm.first_label_offset(spec.architecture)
            targets = [{"boxes": torch.as_tensor(data.boxes[i][0], dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.as_tensor(data.boxes[i][1], dtype=torch.long) + off} for i in idx]
            return (list(a._images(data.images[idx], False)), targets), len(idx)
        x, y = self.windows
        return (torch.from_numpy(x[idx]), torch.from_numpy(y[idx])), len(idx)


def _finite_loss(loss: float, epoch: int, step: int) -> float:
    """The loss, or the run stops here: a NaN/inf loss only poisons the weights from then on."""
    if not math.isfinite(loss):
        raise InvalidInput(f"loss became {loss} at epoch {epoch} step {step} (lower lr, or check the data)")
    return loss


def _global_mean(value: float) -> float:
    """The mean of ``value`` over all data-parallel workers (itself when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0]) / dist.get_world_size()


def _init_from(model: nn.Module, checkpoint: bytes, class_names: Any = None) -> None:
    """Initialise from another training's weights: every tensor whose name and shape match.

    A classifier's head is matched by class name when both sides name their classes: a class the
    checkpoint knows gets its row, a new class keeps a fresh one (so ten classes in another order, or
    other classes, are never read through the wrong rows).  A checkpoint that shares almost nothing
    with the model is a different architecture, refused rather than silently ignored.
    """
    try:
        blob = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StorageError(f"cannot load the --init-from checkpoint: {type(exc).__name__}") from None
    source = dict(blob["state_dict"])
    target = model.state_dict()
    theirs = (blob.get("meta") or {}).get("class_names")
    classifier = (blob.get("meta") or {}).get("task") == "classification"
    if classifier and class_names is not None and theirs is not None and list(theirs) != list(class_names):
        source.update(_head_by_name(model, source, target, list(theirs), list(class_names)))
    matched = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if len(matched) < 0.5 * len(target):
        raise InvalidInput(f"--init-from checkpoint is incompatible with this architecture "
                           f"({len(matched)} of {len(target)} tensors match by name and shape)")
    model.load_state_dict(matched, strict=False)


def _head_by_name(model: nn.Module, source: Mapping[str, Any], target: Mapping[str, Any], theirs: list,
                  ours: list) -> dict[str, Any]:
    """The last linear layer's weight and bias, rows re-ordered from ``theirs`` classes to ``ours``."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    out = {}
    for part in ("weight", "bias"):
        key = f"{name}.{part}"
        if key not in source or key not in target or source[key].shape[1:] != target[key].shape[1:]:
            continue
        rows = target[key].clone()
        where = {c: i for i, c in enumerate(theirs)}
        for i, c in enumerate(ours):
            if c in where and where[c] < source[key].shape[0]:
                rows[i] = source[key][where[c]]
        out[key] = rows
    return out
