"""Callbacks that log a training framework's run to a VeML run (:mod:`veml.versions.runs`).

``veml.integrations.lightning.VemlCallback`` for PyTorch Lightning (``pip install 'veml[lightning]'``) and
``veml.integrations.hf.VemlCallback`` for Hugging Face ``Trainer`` (``pip install 'veml[transformers]'``); each module
imports its framework, so importing this package costs nothing.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Mapping

from veml.versions.runs import ActiveRun


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of a framework's metrics that are single numbers (0-d tensors, numpy or Python scalars),
    as floats; text, lists and multi-element tensors are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, numbers.Real):
            out[key] = float(value)
            continue
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value.item())
    return out


def loggable_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as a run stores them: numbers, strings, bools and None as they are (a non-finite number
    and anything else as its text)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = str(key)[:64]
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = str(value)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            out[key] = str(value)[:500]
    return out


__all__ = ["ActiveRun", "numeric", "loggable_params"]
