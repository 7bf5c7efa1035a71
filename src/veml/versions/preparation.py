"""Declarative preparation steps: recorded on a version, applied at checkout.

A data version is its samples plus how they are prepared.  Steps are stored resolved (a
normalisation keeps the numbers it computed, an imputation the fill values), so checking out the
same version a year later gives the same arrays, and the raw rows are never rewritten.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from PIL import Image

from veml.errors import InvalidInput

if TYPE_CHECKING:
    from veml.versions.checkout import DataView

OPS = ("resize", "normalize", "impute")
_STRATEGIES = ("mean", "median", "zero", "ffill")


def parse_step_args(resize: str | None = None, normalize: str | None = None, impute: str | None = None) -> list[dict[str, Any]]:
    """CLI flags to unresolved steps: ``--resize 32x32 --normalize auto|imagenet --impute mean``."""
    steps: list[dict[str, Any]] = []
    if resize:
        try:
            w, h = (int(v) for v in resize.lower().split("x"))
            if w <= 0 or h <= 0:
                raise ValueError
        except ValueError:
            raise InvalidInput(f"--resize must look like 64x64, not {resize!r}") from None
        steps.append({"op": "resize", "width": w, "height": h})
    if impute:
        if impute not in _STRATEGIES:
            raise InvalidInput(f"--impute must be one of {', '.join(_STRATEGIES)}")
        steps.append({"op": "impute", "strategy": impute})
    if normalize:
        if normalize == "imagenet":
            steps.append({"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
        elif normalize == "auto":
            steps.append({"op": "normalize"})
        else:
            raise InvalidInput("--normalize must be 'auto' (statistics of this version) or 'imagenet'")
    if not steps:
        raise InvalidInput("prepare needs at least one of --resize, --normalize, --impute")
    return steps


def resolve_steps(steps: Sequence[Mapping[str, Any]], view: "DataView") -> list[dict[str, Any]]:
    """Fill in what a step left to be computed from the base version (means, stds, fill values)."""
    modality = view.node.props.get("modality")
    resolved: list[dict[str, Any]] = []
    for step in steps:
        op = step.get("op")
        if op not in OPS:
            raise InvalidInput(f"unknown preparation step {op!r}: use one of {', '.join(OPS)}")
        s = dict(step)
        if op == "resize":
            if modality != "image":
                raise InvalidInput("resize applies to image versions")
        elif op == "impute":
            if modality == "image":
                raise InvalidInput("impute applies to table and series versions")
            if s.get("strategy") not in _STRATEGIES:
                raise InvalidInput(f"impute strategy must be one of {', '.join(_STRATEGIES)}")
            if s["strategy"] in ("mean", "median") and "values" not in s:
                x = _raw_matrix(view, resolved)
                fn = np.nanmean if s["strategy"] == "mean" else np.nanmedian
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    vals = fn(x, axis=0)
                s["values"] = np.nan_to_num(vals).astype(float).tolist()
        elif op == "normalize" and ("mean" not in s or "std" not in s):
            x = _raw_matrix(view, resolved)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
            std = np.where(np.nan_to_num(std) > 1e-12, std, 1.0)
            s["mean"], s["std"] = np.nan_to_num(mean).astype(float).tolist(), np.asarray(std, dtype=float).tolist()
        resolved.append(s)
    return resolved


def _raw_matrix(view: "DataView", prior: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Per-feature rows used to compute statistics: pixels × channels, rows × features, steps × sensors."""
    modality = view.node.props.get("modality")
    limit = min(len(view), 2000)  # statistics on at most 2,000 samples: exact enough, bounded cost
    if modality == "image":
        arrs = [apply_image(view.raw_image(i), [p for p in prior if p["op"] == "resize"]) for i in range(limit)]
        return np.concatenate([a.reshape(-1, a.shape[-1]).astype(np.float64) / 255.0 for a in arrs])
    if modality == "table":
        return apply_table(view.raw_table_matrix(), prior)
    arrs = [apply_series(view.raw_array(i), view.node.props.get("missing_value", 0.0), prior) for i in range(limit)]
    return np.concatenate(arrs).astype(np.float64)


def apply_image(img: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    out: np.ndarray = img
    for s in steps:
        if s["op"] == "resize":
            out = np.asarray(Image.fromarray(out if out.dtype == np.uint8 else out.astype(np.uint8)).resize(
                (int(s["width"]), int(s["height"])), Image.BILINEAR))
        elif s["op"] == "normalize":
            x = out.astype(np.float32) / (255.0 if out.dtype == np.uint8 else 1.0)
            out = (x - np.asarray(s["mean"], np.float32)) / np.asarray(s["std"], np.float32)
    return out


def box_scale(width: int, height: int, steps: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    sx = sy = 1.0
    w, h = width, height
    for s in steps:
        if s["op"] == "resize":
            sx *= s["width"] / w
            sy *= s["height"] / h
            w, h = s["width"], s["height"]
    return sx, sy


def apply_table(x: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    out = x.astype(np.float64, copy=True)
    for s in steps:
        if s["op"] == "impute":
            out = _impute(out, np.isnan(out), s)
        elif s["op"] == "normalize":
            out = (out - np.asarray(s["mean"])) / np.asarray(s["std"])
    return out


def apply_series(x: np.ndarray, missing_value: float, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    out = x.astype(np.float32, copy=True)
    missing = out == missing_value
    for s in steps:
        if s["op"] == "impute":
            out = _impute(out, missing, s).astype(np.float32)
            missing = np.zeros_like(missing)
        elif s["op"] == "normalize":
            out = ((out - np.asarray(s["mean"], np.float32)) / np.asarray(s["std"], np.float32)).astype(np.float32)
    return out


def _impute(x: np.ndarray, missing: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    out = np.where(missing, np.nan, x)
    strategy = step["strategy"]
    if strategy == "zero":
        return np.where(missing, 0.0, out)
    if strategy in ("mean", "median"):
        return np.where(missing, np.asarray(step["values"], dtype=out.dtype), out)
    # forward fill along the first axis, then zero for leading gaps
    idx = np.where(~missing, np.arange(out.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = np.take_along_axis(np.nan_to_num(out), idx, axis=0)
    return np.where(missing & (np.cumsum(~missing, axis=0) == 0), 0.0, filled)
