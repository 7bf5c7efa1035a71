"""Training and deployment back-ends behind one protocol (DESIGN.md section 5).

``get_adapter(name)`` imports a back-end lazily, so ``import veml`` never pulls in torch; a
missing optional dependency becomes one error naming the extra to install.
"""

from __future__ import annotations

from veml.adapters.base import Adapter
from veml.errors import InvalidInput, MissingExtra

ADAPTERS = ("torch", "sklearn", "openmmlab", "graph")  # graph: registered ONNX models (veml model register)


def get_adapter(name: str) -> Adapter:
    if name == "torch":
        try:
            import torch  # noqa: F401
            import torchvision  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("torch", "torch") from exc
        from veml.adapters.torch_adapter import TorchAdapter

        return TorchAdapter()
    if name == "graph":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import torch  # noqa: F401
            import torchvision  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("onnx/onnxruntime", "torch") from exc
        from veml.adapters.graph_adapter import GraphAdapter

        return GraphAdapter()
    if name == "sklearn":
        try:
            import sklearn  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("scikit-learn", "sklearn") from exc
        from veml.adapters.sklearn_adapter import SklearnAdapter

        return SklearnAdapter()
    if name == "openmmlab":
        try:
            import mmdet  # noqa: F401
            import mmengine  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("mmdet/mmengine", "openmmlab") from exc
        from veml.adapters.openmmlab_adapter import OpenMMLabAdapter

        return OpenMMLabAdapter()
    raise InvalidInput(f"unknown adapter {name!r}: use one of {', '.join(ADAPTERS)}")


__all__ = ["Adapter", "get_adapter", "ADAPTERS"]
