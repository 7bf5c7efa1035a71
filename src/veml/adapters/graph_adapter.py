"""Registered ONNX image classifiers (``veml model register model.onnx``): run by onnxruntime,
deployed as they are or quantised, never trained.

A registered graph is a checkpoint of its own kind: the ONNX bytes with their input and output
renamed ``images`` / ``logits`` (as VeML's own exports are) and VeML's meta (class names) in the
model's ``metadata_props``.  Its input is what VeML's torch classifiers take: RGB scaled to [0, 1]
and normalised with the ImageNet mean and standard deviation, N x 3 x S x S.  Everything else is
the torch adapter's (batches, prediction from an exported artifact).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from veml.adapters.base import ExportOutcome, ModelSpec, Predictions, TaskData, check_spec
from veml.adapters.imports import META_KEY
from veml.adapters.torch_adapter import TorchAdapter
from veml.errors import InvalidInput, StorageError

_NOT_TRAINABLE = ("a registered ONNX graph cannot be trained or adapted (VeML only runs it): train a torch model "
                  "version of its architecture instead")


class GraphAdapter(TorchAdapter):
    name = "graph"

    def validate(self, spec: ModelSpec) -> ModelSpec:
        params = check_spec(spec, "graph", {"classification": ("onnx",)}, {"image_size": 64})
        return ModelSpec(spec.adapter, spec.task, spec.architecture, spec.backbone, spec.neck, spec.head, params)

    def train_defaults(self, spec: ModelSpec) -> dict[str, Any]:
        return {}

    def train(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidInput(_NOT_TRAINABLE)

    train_worker = check_init = check_adapt = adapt = train

    def checkpoint_meta(self, checkpoint: bytes) -> dict[str, Any]:
        import onnx

        try:
            props = {p.key: p.value for p in onnx.load_from_string(checkpoint).metadata_props}
            return dict(json.loads(props[META_KEY]))
        except Exception as exc:  # noqa: BLE001 - a damaged artifact, whatever protobuf or json raise
            raise StorageError(f"cannot load registered ONNX graph: {type(exc).__name__}") from None

    def model_and_meta(self, spec: ModelSpec, checkpoint: bytes) -> Any:
        raise InvalidInput("a registered ONNX graph has no torch module to take features from")

    def predict(self, spec: ModelSpec, checkpoint: bytes, data: TaskData) -> Predictions:
        return self.predict_exported(spec, checkpoint, "onnx", self.checkpoint_meta(checkpoint), data)

    def export(self, spec: ModelSpec, checkpoint: bytes, fmt: str, quantize: str, sample: TaskData,
               device: str = "cpu") -> ExportOutcome:
        from veml.adapters import torch_export

        if fmt != "onnx":
            raise InvalidInput(f"a registered ONNX graph deploys as --format onnx, not {fmt}")
        self._check_data(spec, sample, training=False)
        return torch_export.export_graph(spec, checkpoint, self._images(sample.images[:16], True), quantize, device)

    def example_input(self, spec: ModelSpec, meta: Mapping[str, Any], data: TaskData, n: int) -> Any:
        return self._images(data.images[:n], True)


__all__ = ["GraphAdapter"]
