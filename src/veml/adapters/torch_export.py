"""Export a trained torch model (ONNX or TorchScript), quantise it, and check it still agrees.

Why check: an export that silently changes outputs is worse than no export.  Every deployment is
run side by side with the eager model on a sample batch; the largest difference, the tolerance it
was held to and the share of agreeing predictions are recorded on the inference version.
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from veml.adapters.base import ExportOutcome, ModelSpec, Predictions, TaskData
from veml.adapters.onnx_run import NAMES as _NAMES
from veml.adapters.onnx_run import feed as _feed
from veml.adapters.onnx_run import flat as _flat_onnx
from veml.adapters.onnx_run import session as _session
from veml.errors import InvalidInput

FORMATS = ("onnx", "torchscript")
QUANTIZE = ("none", "fp16", "int8")
def _output_names(model: torch.nn.Module, example: Any, task: str) -> tuple[str, ...]:
    """Detectors return a dict whose key order differs by architecture (Faster R-CNN: boxes, labels,
    scores; FCOS: boxes, scores, labels); the ONNX outputs are named after it so readers go by name."""
    if task != "detection":
        return _NAMES[task][1]
    with torch.no_grad():
        return tuple(model(example)[0].keys())


def _to_onnx(model: torch.nn.Module, example: Any, task: str) -> bytes:
    inputs, outputs = _NAMES[task][0], _output_names(model, example, task)
    dynamic = None if task == "detection" else {inputs[0]: {0: "batch"}, outputs[0]: {0: "batch"}}
    args = (example,)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(model, args, path, dynamo=False, opset_version=17, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=dynamic, do_constant_folding=True)
        with open(path, "rb") as fh:
            return fh.read()


def _quantize(onnx_bytes: bytes, how: str, task: str, calibration: list[np.ndarray]) -> bytes:
    if how == "none":
        return onnx_bytes
    import onnx

    if how == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
        return model.SerializeToString()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        with open(src, "wb") as fh:
            fh.write(onnx_bytes)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's quantiser advises on the root logger; keep stderr clean
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if task == "classification":
                    name = _NAMES[task][0][0]

                    class _Reader(CalibrationDataReader):
                        def __init__(self) -> None:
                            self.items = iter([{name: c} for c in calibration])

                        def get_next(self):
                            return next(self.items, None)

                    quantize_static(src, dst, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                else:  # detection post-processing and recurrent cells: weights only
                    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        with open(dst, "rb") as fh:
            return fh.read()


def _latency(fn: Callable[[], Any], repeats: int = 15) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def export(spec: ModelSpec, model: torch.nn.Module, example: Any, fmt: str, quantize: str, device: str = "cpu") -> ExportOutcome:
    """``example``: the model's input for one sample batch, as the adapter builds it."""
    if fmt not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}")
    _check_quantize(quantize)
    if fmt == "torchscript" and quantize != "none":
        raise InvalidInput("quantisation is done by onnxruntime: use --format onnx with --quantize")
    task = spec.task
    model = model.eval()
    with torch.no_grad():
        reference = _flat(model(example), task)
    one = example if task == "detection" else example[:1]
    with torch.no_grad():
        eager_ms = _latency(lambda: model(one))
    if fmt == "onnx":
        artifact = _quantize(_to_onnx(model, example, task), quantize, task, _calibration(task, example))
        outputs, latency = _run_onnx(artifact, task, example, one, device)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(model) if task == "detection" else torch.jit.trace(model, example)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        artifact = buf.getvalue()
        loaded = torch.jit.load(io.BytesIO(artifact))
        with torch.no_grad():
            outputs = _flat(_script_out(loaded(example), task), task)
            latency = _latency(lambda: loaded(one))
    return _checked(spec, example, reference, outputs, artifact, fmt, quantize, latency, eager_ms,
                    _output_names(model, example, task))


def export_graph(spec: ModelSpec, graph: bytes, example: Any, quantize: str, device: str = "cpu") -> ExportOutcome:
    """A registered ONNX graph deployed as it is or quantised, checked against the graph itself."""
    _check_quantize(quantize)
    task = spec.task
    one = example[:1]
    reference, original_ms = _run_onnx(graph, task, example, one, device)
    artifact = _quantize(graph, quantize, task, _calibration(task, example))
    outputs, latency = _run_onnx(artifact, task, example, one, device)
    return _checked(spec, example, reference, outputs, artifact, "onnx", quantize, latency, original_ms, _NAMES[task][1])


def _check_quantize(quantize: str) -> None:
    if quantize not in QUANTIZE:
        raise InvalidInput(f"--quantize must be one of {', '.join(QUANTIZE)}")


def _calibration(task: str, example: Any) -> list[np.ndarray]:
    return [example[i:i + 1].numpy() for i in range(min(len(example), 16))] if task != "detection" else []


def _run_onnx(artifact: bytes, task: str, example: Any, one: Any, device: str) -> tuple[list[np.ndarray], float]:
    """(outputs on ``example``, latency in ms on ``one``) of an ONNX artifact in onnxruntime."""
    sess = _session(artifact, device)
    out_names = [o.name for o in sess.get_outputs()]
    outputs = _flat(sess.run(None, _feed(task, example)), task, out_names)
    feed_one = _feed(task, one)
    return outputs, _latency(lambda: sess.run(None, feed_one))


def _checked(spec: ModelSpec, example: Any, reference: list[np.ndarray], outputs: list[np.ndarray], artifact: bytes,
             fmt: str, quantize: str, latency: float, original_ms: float, output_names: Sequence[str]) -> ExportOutcome:
    """The outcome of an export whose outputs agree with the reference's, or one InvalidInput saying how far off."""
    task = spec.task
    diff, agreement = _compare(reference, outputs, task)
    tolerance = {"none": 1e-3, "fp16": 5e-2, "int8": float("inf")}[quantize]
    scale = max(float(np.abs(reference[0]).max()) if reference[0].size else 1.0, 1.0)
    if diff > tolerance * scale or (quantize == "none" and agreement < 0.9):
        raise InvalidInput(f"exported model disagrees with the trained one (max |diff| {diff:.3g}, tolerance "
                           f"{tolerance * scale:.3g}; {agreement:.0%} of predictions agree)")
    shape = tuple(int(s) for s in (example[0].shape if task == "detection" else example.shape[1:]))
    return ExportOutcome(artifact, fmt, quantize, float(diff), float(tolerance * scale), float(agreement), float(latency),
                         float(original_ms), len(artifact), _NAMES[task][0], shape, tuple(output_names))


def _script_out(out: Any, task: str) -> Any:
    if task == "detection" and isinstance(out, tuple):  # scripted detectors return (losses, detections)
        return out[1]
    return out


def _flat(out: Any, task: str, names: Sequence[str] = ()) -> list[np.ndarray]:
    """Outputs as arrays; detection always as [boxes, scores, labels] whatever the runtime's order
    (``names``: an ONNX session's output names, in its order)."""
    if task == "detection":
        if isinstance(out, list) and out and isinstance(out[0], dict):
            d = out[0]
            return [d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy()]
        return _flat_onnx(out, task, names)
    return [out.numpy()] if isinstance(out, torch.Tensor) else _flat_onnx(out, task, names)


def _compare(ref: list[np.ndarray], got: list[np.ndarray], task: str) -> tuple[float, float]:
    if task == "classification":
        diff = float(np.abs(ref[0] - got[0]).max()) if ref[0].size else 0.0
        return diff, float((ref[0].argmax(-1) == got[0].argmax(-1)).mean()) if ref[0].size else 1.0
    if task == "forecasting":
        return float(np.abs(ref[0] - got[0]).max()) if ref[0].size else 0.0, 1.0
    return _compare_detection(ref, got)


def _compare_detection(ref: list[np.ndarray], got: list[np.ndarray], threshold: float = 0.3, margin: float = 0.05) -> tuple[float, float]:
    """Confident boxes must have a counterpart (same class, IoU >= 0.9) on the other side.

    Scores within ``margin`` of the threshold may land on either side of it after an export, so a
    box is only required to match when it is clearly confident, and may match anything above the
    threshold minus the margin.  Returns (largest coordinate difference of matched boxes, share matched).
    """
    from veml.metrics import box_iou

    diffs, required, matched = [0.0], 0, 0
    for (ab, as_, al), (bb, bs, bl) in (((ref[0], ref[1], ref[2]), (got[0], got[1], got[2])),
                                        ((got[0], got[1], got[2]), (ref[0], ref[1], ref[2]))):
        strong = as_ >= threshold + margin
        cand = bs >= threshold - margin
        if not strong.any():
            continue
        required += int(strong.sum())
        if not cand.any():
            continue
        iou = box_iou(np.asarray(ab[strong], np.float64), np.asarray(bb[cand], np.float64))
        same = np.asarray(al[strong])[:, None] == np.asarray(bl[cand])[None, :]
        iou = np.where(same, iou, 0.0)
        best = iou.argmax(1)
        ok = iou[np.arange(len(best)), best] >= 0.9
        matched += int(ok.sum())
        if ok.any():
            diffs.append(float(np.abs(ab[strong][ok] - bb[cand][best[ok]]).max()))
    return max(diffs), (matched / required if required else 1.0)


def runner(spec: ModelSpec, artifact: bytes, fmt: str, device: str = "cpu") -> Callable[[Any], list[np.ndarray]]:
    """Load a deployed artifact once; the returned function maps one model input batch to raw outputs."""
    if fmt == "onnx":
        from veml.adapters import onnx_run

        return onnx_run.runner(spec, artifact, device)
    loaded = torch.jit.load(io.BytesIO(artifact))

    def run(example: Any) -> list[np.ndarray]:
        with torch.no_grad():
            return _flat(_script_out(loaded(example), spec.task), spec.task)

    return run


def triton_config(name: str, outcome_format: str, task: str, input_shape: tuple[int, ...], output_names: Sequence[str],
                  max_batch: int = 32) -> str:
    """A Triton Inference Server ``config.pbtxt`` for a deployed artifact."""
    platform = "onnxruntime_onnx" if outcome_format == "onnx" else "pytorch_libtorch"
    inputs, outputs = _NAMES[task][0], tuple(output_names) or _NAMES[task][1]
    batch = 0 if task == "detection" else max_batch
    dims = ", ".join(str(d) for d in input_shape)
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {batch}",
             "input [", f'  {{ name: "{inputs[0]}" data_type: TYPE_FP32 dims: [ {dims} ] }}', "]", "output ["]
    out_specs = [f'  {{ name: "{o}" data_type: {"TYPE_INT64" if o == "labels" else "TYPE_FP32"} dims: [ -1 ] }}' for o in outputs]
    lines.append(",\n".join(out_specs))
    lines += ["]", 'instance_group [ { kind: KIND_CPU } ]']
    return "\n".join(lines) + "\n"


__all__ = ["export", "export_graph", "runner", "triton_config", "FORMATS", "QUANTIZE", "Predictions", "TaskData"]
