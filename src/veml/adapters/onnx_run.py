"""Running a deployed model with numpy alone: the pre- and post-processing every exported format shares,
and the ONNX runtime itself.

No torch here: ``veml predict`` and ``veml drift`` on an ONNX deployment import onnxruntime and numpy only
(importing torch and torchvision was most of such a call's time).  The torch adapter runs TorchScript
deployments through the same :func:`predict_with`, so there is one implementation of the processing.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from veml.adapters.base import ModelSpec, Predictions, TaskData
from veml.errors import InvalidInput, MissingExtra
from veml.progress import ProgressLike, as_progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: input and output names of an exported graph, per task
NAMES = {
    "classification": (("images",), ("logits",)),
    "detection": (("image",), ("boxes", "labels", "scores")),  # default; the real order is read off the model
    "forecasting": (("history",), ("forecast",)),
}
#: what a deployment records of its checkpoint's meta (props ``runtime_meta``) so it runs without the checkpoint
RUNTIME_META = ("task", "class_names", "sensors", "mean", "std", "missing_value")
Runner = Callable[[Any], list[np.ndarray]]


# --- inputs ---------------------------------------------------------------------------------------
def check_data(spec: ModelSpec, data: TaskData, training: bool) -> None:
    if spec.task == "classification" and (data.images is None or (training and data.labels is None)):
        raise InvalidInput("classification needs an image data version with class labels")
    if spec.task == "detection" and (data.images is None or (training and data.boxes is None)):
        raise InvalidInput("detection needs an image data version with boxes")
    if spec.task in ("classification", "detection") and data.images is not None:
        size = int(spec.parameters["image_size"])
        if data.images.ndim != 4 or data.images.shape[1:] != (size, size, 3):
            raise InvalidInput(f"images must be {size}x{size}x3 for this model, got {tuple(data.images.shape[1:])}")
    if spec.task == "forecasting":
        if data.series is None or data.series.ndim != 3:
            raise InvalidInput("forecasting needs a series data version (windows x steps x sensors)")


def images_nchw(images: np.ndarray, normalise: bool) -> np.ndarray:
    """uint8 NHWC images as float32 NCHW in [0, 1], ImageNet-normalised when ``normalise``."""
    x = np.ascontiguousarray(images).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    if normalise:
        x = (x - np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)) / np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(x)


def make_windows(series: np.ndarray, history: int, horizon: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cut a (T, sensors) series into aligned input/target windows.

    Window ``i`` starts at ``s = i * stride``: ``X[i] = series[s : s + history]`` and
    ``Y[i] = series[s + history : s + history + horizon]``, so targets begin right after inputs end.
    Returns float32 ``X`` (n, history, sensors, 1) and ``Y`` (n, horizon, sensors, 1); n may be 0.
    """
    data = np.asarray(series, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"series must be (T, sensors), got shape {data.shape}")
    if min(history, horizon, stride) < 1:
        raise ValueError("history, horizon and stride must be >= 1")
    span = history + horizon
    starts = np.arange(0, max(data.shape[0] - span + 1, 0), stride)
    idx = starts[:, None] + np.arange(span)[None, :]
    windows = data[idx][..., None]  # (n, span, sensors, 1)
    return np.ascontiguousarray(windows[:, :history]), np.ascontiguousarray(windows[:, history:])


def forecast_windows(spec: ModelSpec, data: TaskData, meta: Mapping[str, Any], stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised inputs, raw targets, owning sample of each window) over every series window of ``data``."""
    x, y, owner = raw_forecast_windows(spec, data, stride)
    return (x - meta["mean"]) / meta["std"], y, owner


def raw_forecast_windows(spec: ModelSpec, data: TaskData, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw inputs, raw targets, owning sample of each window) over every series window of ``data``: the windows a
    forecaster sees, in the order its forecasts come."""
    hist, hor = int(spec.parameters["history"]), int(spec.parameters["horizon"])
    xs, ys, owner = [], [], []
    for i, window in enumerate(data.series):
        x, y = make_windows(window, hist, hor, stride)
        xs.append(x)
        ys.append(y)
        owner.extend([i] * len(x))
    if not owner:
        raise InvalidInput(f"series windows are shorter than history + horizon ({hist + hor} steps)")
    return np.concatenate(xs), np.concatenate(ys), np.asarray(owner)


def first_label_offset(architecture: str) -> int:
    """Faster R-CNN reserves class 0 for background; FCOS and RetinaNet do not."""
    return 1 if architecture == "fasterrcnn" else 0


# --- the ONNX runtime -----------------------------------------------------------------------------
def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtra("onnxruntime", "torch") from exc
    return ort


def session(artifact: bytes, device: str = "cpu"):
    ort = _ort()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InvalidInput("--device cuda needs onnxruntime-gpu and a GPU; this machine has neither")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(artifact, sess_options=opts, providers=providers)


_SESSIONS: "OrderedDict[tuple[str, str], Any]" = OrderedDict()
_SESSIONS_LOCK = threading.Lock()
_SESSIONS_MAX = 8


def cached_session(artifact: bytes, device: str = "cpu"):
    """Sessions by artifact digest: building one parses and optimises the graph (~0.1-0.2 s for a small
    model), which online prediction would otherwise pay on every request.  onnxruntime sessions are
    safe to run from several threads; the eight most recently used are kept."""
    key = (hashlib.sha256(artifact).hexdigest(), device)
    with _SESSIONS_LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
    sess = session(artifact, device)
    with _SESSIONS_LOCK:
        _SESSIONS[key] = sess
        while len(_SESSIONS) > _SESSIONS_MAX:
            _SESSIONS.popitem(last=False)
    return sess


def feed(task: str, example: Any) -> dict[str, np.ndarray]:
    """An ONNX session's input for one batch (detection: a one-image list)."""
    return {NAMES[task][0][0]: np.asarray(example[0] if task == "detection" else example)}


def flat(out: Sequence[Any], task: str, names: Sequence[str] = ()) -> list[np.ndarray]:
    """An ONNX session's outputs as arrays; detection always as [boxes, scores, labels] whatever their order
    (``names``: the session's output names, in its order)."""
    if task == "detection":
        named = dict(zip(names, out))
        return [np.asarray(named["boxes"]), np.asarray(named["scores"]), np.asarray(named["labels"])]
    return [np.asarray(out[0])]


def runner(spec: ModelSpec, artifact: bytes, device: str = "cpu") -> Runner:
    """Load an ONNX artifact once; the returned function maps one input batch (numpy) to raw outputs."""
    sess = cached_session(artifact, device)
    names = [o.name for o in sess.get_outputs()]
    return lambda example: flat(sess.run(None, feed(spec.task, example)), spec.task, names)


# --- predictions ----------------------------------------------------------------------------------
def predict_with(run: Runner, spec: ModelSpec, meta: Mapping[str, Any], data: TaskData, batch_size: int = 64,
                 progress: ProgressLike | None = None) -> Predictions:
    """Predictions of a deployed model over ``data``; ``run`` maps a numpy batch to the model's raw outputs
    (detection: a one-image list per call).  ``progress`` advances after each n samples (forecasting: windows)."""
    check_data(spec, data, training=False)
    bar = as_progress(progress)
    done = bar.advance
    if spec.task != "forecasting":
        bar.add_total(len(data.images))
    if spec.task == "classification":
        out = []
        for i in range(0, len(data.images), batch_size):
            logits = np.asarray(run(images_nchw(data.images[i:i + batch_size], True))[0], np.float32)
            e = np.exp(logits - logits.max(-1, keepdims=True))
            out.append(e / e.sum(-1, keepdims=True))
            done(len(logits))
        return Predictions("classification", scores=np.concatenate(out) if out else np.zeros((0, len(meta["class_names"]))))
    if spec.task == "detection":
        off = first_label_offset(spec.architecture)
        dets = []
        for img in images_nchw(data.images, False):
            boxes, scores, labels = run([img])
            dets.append((np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels, np.int64) - off))
            done(1)
        return Predictions("detection", detections=dets)
    if data.series.shape[2] != meta["sensors"]:
        raise InvalidInput(f"this forecaster was trained on {meta['sensors']} sensors; the data has {data.series.shape[2]}")
    x, y, owner = forecast_windows(spec, data, meta, int(spec.parameters["horizon"]))
    bar.add_total(len(x))
    out = []
    for i in range(0, len(x), batch_size):
        out.append(np.asarray(run(x[i:i + batch_size])[0]) * meta["std"] + meta["mean"])
        done(len(out[-1]))
    return Predictions("forecasting", forecasts=np.concatenate(out)[..., 0], forecast_targets=y[..., 0], forecast_sample=owner)


def predict(spec: ModelSpec, artifact: bytes, meta: Mapping[str, Any], data: TaskData, device: str = "cpu",
            batch_size: int = 64, progress: ProgressLike | None = None) -> Predictions:
    """An ONNX deployment's predictions over ``data`` (no torch)."""
    return predict_with(runner(spec, artifact, device), spec, meta, data, batch_size, progress)


__all__ = ["predict", "predict_with", "runner", "session", "cached_session", "check_data", "images_nchw", "make_windows",
           "forecast_windows", "raw_forecast_windows", "first_label_offset", "IMAGENET_MEAN", "IMAGENET_STD", "NAMES", "RUNTIME_META"]
