"""Serving a deployed model: upload parsing, the cache of loaded models, and one prediction.

The model runs through the same adapter path as ``repo.inference.run`` (``predict_exported`` on
the stored artifact, the checkpoint's class order and scaling), so an uploaded copy of a stored
image gets the scores ``veml predict`` gives that sample.  What is cached, per artifact digest, is
everything loaded from the repository: the digest-checked artifact bytes, the model spec and the
checkpoint's metadata (reading a checkpoint is the slow part); the onnxruntime session itself is
cached by the adapter (``onnx_run.cached_session``), so a request neither re-reads nor re-parses.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from veml.adapters import get_adapter
from veml.adapters.base import ModelSpec, TaskData
from veml.entities import Node
from veml.errors import InvalidInput
from veml.repository import Repository
from veml.versions.model import spec_of

MAX_PIXELS = 40_000_000
IMAGE_TASKS = ("classification", "detection")


@dataclass(frozen=True)
class Loaded:
    node: Node
    spec: ModelSpec
    adapter: Any
    artifact: bytes
    meta: Mapping[str, Any]

    def run(self, data: TaskData):
        return self.adapter.predict_exported(self.spec, self.artifact, self.node.props["format"], self.meta, data,
                                             self.node.props.get("device", "cpu"))


class RunnerCache:
    """Loaded deployments by artifact digest (an LRU of a few: artifacts can be large)."""

    def __init__(self, size: int = 4) -> None:
        self._size, self._lock, self._items = size, threading.Lock(), OrderedDict()
        self.loads = 0

    def get(self, repo: Repository, ref: str | int) -> Loaded:
        inode = repo.inference.get(ref)
        digest = inode.props["artifact"]
        with self._lock:
            hit = self._items.get(digest)
            if hit is not None:
                self._items.move_to_end(digest)
                return Loaded(inode, *hit)
        tnode = repo.training.get(inode.props["training"])
        spec = spec_of(repo.models.get(tnode.props["model"]))
        adapter = get_adapter(spec.adapter)
        meta = adapter.checkpoint_meta(repo.training.checkpoint(tnode))
        artifact = repo.inference.artifact(inode)  # the very bytes whose digest was checked (read once)
        with self._lock:
            self.loads += 1
            self._items[digest] = (spec, adapter, artifact, meta)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return Loaded(inode, spec, adapter, artifact, meta)


async def multipart_image(request: Any, limits: Any) -> bytes:
    """The one file part of a ``multipart/form-data`` upload, parsed while it streams in (python-multipart).

    A second file part, more than ``limits.max_fields`` other parts or one over ``limits.max_field``
    bytes is refused (400) as soon as it arrives; the body as a whole is capped by the server.
    """
    form = await request.form(max_files=limits.max_files, max_fields=limits.max_fields, max_part_size=limits.max_field)
    try:
        files = [value for _, value in form.multi_items() if not isinstance(value, str)]
        if len(files) != 1:
            raise InvalidInput(f"send exactly one image file (form field 'image'), got {len(files)} file parts")
        return await files[0].read()
    finally:
        await form.close()


def decode_image(payload: bytes) -> np.ndarray:
    """RGB pixels of an uploaded image; anything that is not a readable image is :class:`InvalidInput`."""
    if not payload:
        raise InvalidInput("the uploaded image is empty")
    try:
        with Image.open(io.BytesIO(payload)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InvalidInput(f"image is {im.width}x{im.height}: more than {MAX_PIXELS} pixels")
            im.verify()
        with Image.open(io.BytesIO(payload)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidInput("the upload is not a readable image (PNG, JPEG, …)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"the upload is not a readable image ({exc})") from None


def image_data(loaded: Loaded, pixels: np.ndarray) -> TaskData:
    """One image as the model's task data, resized the way training data is (bilinear, square)."""
    task = loaded.spec.task
    if task not in IMAGE_TASKS:
        raise InvalidInput(f"inference version {loaded.node.name!r} serves a {task} model: "
                           "send JSON ({\"window\": [[...]]} for series, {\"features\": [[...]]} for tables)")
    size = int(loaded.spec.parameters["image_size"])
    if pixels.shape[:2] != (size, size):
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR))
    names = tuple(loaded.meta.get("class_names", ()))
    return TaskData(task, names, np.zeros(1, np.int64), images=pixels[None].astype(np.uint8))


def json_data(loaded: Loaded, window: list[list[float]] | None, features: list[list[float]] | None) -> TaskData:
    task, p = loaded.spec.task, loaded.spec.parameters
    if task == "forecasting":
        if window is None:
            raise InvalidInput("a forecasting model takes {\"window\": [[...]]} (steps x sensors)")
        x = _rows(window, np.float32)
        hist, hor = int(p["history"]), int(p["horizon"])
        if x.ndim != 2 or x.shape[0] < hist or x.shape[1] < 1:
            raise InvalidInput(f"window must be steps x sensors with at least {hist} steps, got shape {list(x.shape)}")
        if not np.isfinite(x).all():
            raise InvalidInput("window holds NaN or infinite values (mark missing readings with the missing value)")
        missing = float(loaded.meta.get("missing_value", 0.0))
        # the last `history` steps, then `horizon` unknown steps: the adapter forecasts exactly those
        series = np.concatenate([x[-hist:], np.full((hor, x.shape[1]), missing, np.float32)])
        return TaskData(task, (), np.zeros(1, np.int64), series=series[None], missing_value=missing)
    if task.startswith("tabular"):
        if features is None:
            raise InvalidInput("a tabular model takes {\"features\": [[...]]} (rows x features)")
        x = _rows(features, np.float64)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[0] > 10_000:
            raise InvalidInput(f"features must be 1..10000 rows x features, got shape {list(x.shape)}")
        names = tuple(loaded.meta.get("class_names", ()))
        return TaskData(task, names, np.arange(len(x), dtype=np.int64), table=x)
    raise InvalidInput(f"inference version {loaded.node.name!r} serves a {task} model: upload one image")


def _rows(rows: list[list[float]], dtype: type) -> np.ndarray:
    try:
        return np.asarray(rows, dtype=dtype)
    except ValueError:  # ragged rows: numpy cannot make them one array
        raise InvalidInput("rows must all have the same length") from None


def render(loaded: Loaded, data: TaskData, preds: Any, size: tuple[int, int] | None) -> dict[str, Any]:
    names = list(loaded.meta.get("class_names", []))
    out: dict[str, Any] = {"inference": loaded.node.id, "name": loaded.node.name, "task": loaded.spec.task, "class_names": names}
    if preds.task in ("classification", "tabular-classification") and preds.scores is not None:
        scores = np.asarray(preds.scores, dtype=np.float64)
        if preds.task == "classification":
            k = int(np.argmax(scores[0]))
            out.update(scores=scores[0].tolist(), category=names[k] if k < len(names) else str(k), score=float(scores[0][k]))
        else:
            top = scores.argmax(1).tolist()
            out.update(categories=[names[k] if k < len(names) else str(k) for k in top], probabilities=scores.tolist())
    elif preds.task == "detection":
        boxes, scores, labels = preds.detections[0]
        model_size = data.images.shape[1]
        sx, sy = (size[0] / model_size, size[1] / model_size) if size else (1.0, 1.0)
        out["detections"] = [{"category": names[int(lab)] if 0 <= int(lab) < len(names) else str(int(lab)), "score": float(s),
                              "bbox": [float(b[0] * sx), float(b[1] * sy), float((b[2] - b[0]) * sx), float((b[3] - b[1]) * sy)]}
                             for b, s, lab in zip(boxes, scores, labels)]
    elif preds.task == "forecasting":
        out["forecast"] = np.asarray(preds.forecasts[0], dtype=np.float64).tolist()
    elif preds.values is not None:
        out["values"] = np.asarray(preds.values, dtype=np.float64).ravel().tolist()
    return out
