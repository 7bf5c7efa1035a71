"""Features of a trained torch model, for use as an embedder (``--embedder training:NAME``).

Why: a model trained on the user's own domain often separates that domain's data better than
ImageNet features do, and the VeML paper embeds with the lifecycle's own backbone.  This maps
each architecture the torch adapter builds to the part of it that yields features.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from veml.adapters.base import ModelSpec
from veml.errors import InvalidInput


def feature_function(spec: ModelSpec, model: nn.Module) -> Callable[[Any], Any]:
    """A callable from a normalised image batch (or history windows) to features."""
    model.eval()
    if spec.task == "classification":
        if hasattr(model, "embed"):
            return model.embed
        if spec.architecture == "resnet18":
            return nn.Sequential(*list(model.children())[:-1])
        if hasattr(model, "features"):
            return model.features
    if spec.task == "detection" and hasattr(model, "backbone"):
        return model.backbone
    if spec.task == "forecasting" and hasattr(model, "encode"):
        return model.encode
    raise InvalidInput(f"a {spec.task}/{spec.architecture} model has no feature extractor VeML can embed with")


def normalises(spec: ModelSpec) -> bool:
    """Classifiers take ImageNet-normalised input; torchvision detectors normalise inside the model."""
    return spec.task == "classification"
