"""Model files trained anywhere, turned into checkpoints VeML's adapters run (``veml model register``).

A model file is untrusted input: nothing here unpickles it.  Torch state dicts load with
``torch.load(weights_only=True)`` (tensors and plain containers only), TorchScript with
``torch.jit.load`` (TorchScript code, no Python objects), scikit-learn models only as skops files
holding :data:`~veml.adapters.sklearn_adapter.TRUSTED_TYPES`, and ONNX graphs with ``onnx`` (a
protobuf; graphs that point at external data files are refused).  A zip (skops, TorchScript, the
torch state-dict format) is refused before it is unpacked when its members declare more bytes than
the caller's cap, so a zip bomb costs nothing.

What each framework becomes:

- a torch state dict, or a TorchScript module, of one of VeML's image classifiers: a native torch
  checkpoint (the weights, by name and shape, into the architecture they fit), so everything a
  trained run does works (deploy, predict, drift, rebuild, ``--init-from``);
- a skops scikit-learn estimator: a native sklearn checkpoint;
- an ONNX image classifier: the graph, its input and output renamed ``images`` / ``logits`` as VeML's
  own exports are, with VeML's metadata inside (adapter ``graph``: deployable, not trainable).
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import dataclass, replace
from typing import Any, Sequence

from veml.adapters.base import ModelSpec
from veml.errors import InvalidInput, MissingExtra

FRAMEWORKS = ("torch", "torchscript", "sklearn", "onnx")
META_KEY = "veml_meta"  # the ONNX metadata_props entry holding a registered graph's meta (JSON)


@dataclass(frozen=True)
class Imported:
    """A model file read and understood: what it is, and what its outputs are called when it says so."""

    framework: str
    spec: ModelSpec
    outputs: int | None  # classes a classifier tells apart (None: a regressor)
    classes: tuple[str, ...] | None  # class names the file itself gives (scikit-learn's classes_), else None
    payload: Any  # the loaded model, for :func:`checkpoint`


def sniff(raw: bytes, max_unpacked: int) -> str:
    """Which framework wrote ``raw``, from its content (never its name)."""
    if raw[:4] == b"PK\x03\x04":
        names = zip_names(raw, max_unpacked)
        if "schema.json" in names:
            return "sklearn"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise InvalidInput("a zip archive that is neither a skops model, a TorchScript module nor a torch state dict")
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a pickle: only torch's weights-only loader may look at it (the legacy torch.save format)
    if _onnx_model(raw) is not None:
        return "onnx"
    raise InvalidInput("not a model file VeML can read: expected ONNX, TorchScript, a torch state dict "
                       "(torch.save(model.state_dict())) or a skops scikit-learn model")


def zip_names(raw: bytes, max_unpacked: int) -> list[str]:
    """The member names of a zip, refused when they declare more than ``max_unpacked`` bytes in all."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InvalidInput(f"a damaged zip archive: {exc}") from None
    declared = sum(i.file_size for i in infos)
    if declared > max_unpacked:
        raise InvalidInput(f"the archive declares {declared} bytes unpacked, more than the {max_unpacked} allowed "
                           "(VEML_MAX_FILE_MB): refused before unpacking")
    return [i.filename for i in infos]


def load(raw: bytes, framework: str, hint: ModelSpec | None, max_unpacked: int) -> Imported:
    """Read a model file of ``framework``; ``hint``: the model version it is said to be (its architecture)."""
    if framework not in FRAMEWORKS:
        raise InvalidInput(f"--framework must be one of {', '.join(FRAMEWORKS)}, not {framework!r}")
    if raw[:4] == b"PK\x03\x04":
        zip_names(raw, max_unpacked)
    if framework in ("torch", "torchscript"):
        return _load_torch(raw, framework, hint)
    if framework == "sklearn":
        return _load_sklearn(raw, hint)
    return _load_onnx(raw, hint)


def checkpoint(imported: Imported, class_names: Sequence[str]) -> tuple[bytes, dict[str, Any]]:
    """(checkpoint bytes for the imported model's adapter, the meta inside it)."""
    names = [str(c) for c in class_names]
    if imported.spec.adapter == "torch":
        import torch

        meta = {"class_names": names, "task": imported.spec.task}
        buf = io.BytesIO()
        torch.save({"state_dict": imported.payload, "meta": meta}, buf)
        return buf.getvalue(), meta
    if imported.spec.adapter == "sklearn":
        from veml.adapters.sklearn_adapter import _dump

        meta = {"class_names": names, "features": int(imported.payload.n_features_in_)}
        return _dump(imported.payload, meta), meta
    model = imported.payload
    meta = {"class_names": names, "task": imported.spec.task}
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    for key, value in [*kept, (META_KEY, json.dumps(meta))]:
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString(), meta


# --- torch ------------------------------------------------------------------------------------
def _load_torch(raw: bytes, framework: str, hint: ModelSpec | None) -> Imported:
    import torch

    if framework == "torchscript":
        try:
            state = dict(torch.jit.load(io.BytesIO(raw), map_location="cpu").state_dict())
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged archive
            raise InvalidInput(f"not a TorchScript module ({_first(exc)})") from None
    else:
        try:
            with warnings.catch_warnings():  # torch advises on stderr about protocols: the CLI's stderr is one line
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the weights-only unpickler refuses anything but tensors
            raise InvalidInput(f"not a torch state dict that loads with weights_only=True: VeML never unpickles "
                               f"code from a model file; save model.state_dict() ({_first(exc)})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # a checkpoint dict around the weights (VeML's own, Lightning's)
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                             for k, v in state.items()):
        raise InvalidInput("the file holds no state dict (a mapping of parameter names to tensors)")
    spec, outputs = _fit_classifier(state, hint)
    return Imported(framework, spec, outputs, None, state)


def _fit_classifier(state: dict[str, Any], hint: ModelSpec | None) -> tuple[ModelSpec, int]:
    """The built-in image classifier (or the hinted model version's) whose every tensor the state dict fills."""
    from veml.adapters import torch_models as tm
    from veml.adapters.torch_adapter import TorchAdapter

    heads = [v for k, v in state.items() if k.endswith(".weight") and v.ndim == 2]
    if not heads:
        raise InvalidInput("the state dict has no linear layer: VeML registers image classifiers' weights")
    outputs = int(heads[-1].shape[0])
    adapter = TorchAdapter()
    if hint is not None:
        if (hint.adapter, hint.task) != ("torch", "classification"):
            raise InvalidInput(f"torch weights register as a torch classification model, not {hint.adapter}/{hint.task}")
        candidates = [hint]
    else:
        candidates = [adapter.validate(ModelSpec("torch", "classification", a)) for a in tm.CLASSIFIERS]
    for spec in candidates:
        model = tm.build_classifier(spec.architecture, outputs, spec.parameters)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            continue
        return spec, outputs
    which = f"the architecture of {hint.architecture}" if hint else f"any of VeML's classifiers ({', '.join(tm.CLASSIFIERS)})"
    raise InvalidInput(f"the weights do not fit {which} by name and shape: register an ONNX export of the model instead")


# --- scikit-learn -------------------------------------------------------------------------------
def _load_sklearn(raw: bytes, hint: ModelSpec | None) -> Imported:
    from veml.adapters.sklearn_adapter import SklearnAdapter, _load_skops, describe
    from veml.errors import StorageError

    try:
        obj = _load_skops(raw)
    except StorageError as exc:
        raise InvalidInput(str(exc)) from None
    if isinstance(obj, dict) and "estimator" in obj:  # a VeML checkpoint taken out of another repository
        obj = obj["estimator"]
    task, architecture, params = describe(obj)
    spec = SklearnAdapter().validate(ModelSpec("sklearn", task, architecture, parameters=params))
    if hint is not None and (hint.adapter, hint.task, hint.architecture) != (spec.adapter, spec.task, spec.architecture):
        raise InvalidInput(f"the file holds a {task} {architecture}, not a {hint.task} {hint.architecture}")
    classes = getattr(obj, "classes_", None)
    names = tuple(str(c) for c in classes) if classes is not None else None
    return Imported("sklearn", spec, len(names) if names else None, names, obj)


# --- ONNX ---------------------------------------------------------------------------------------
def _onnx_model(raw: bytes) -> Any:
    """The ONNX model in ``raw`` if it is one that checks out, else None."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingExtra("onnx", "torch") from exc
    try:
        model = onnx.load_from_string(raw)
        onnx.checker.check_model(model)
    except Exception:  # noqa: BLE001 - protobuf and the checker raise many types
        return None
    return model if len(model.graph.node) and len(model.graph.input) else None


def _load_onnx(raw: bytes, hint: ModelSpec | None) -> Imported:
    import onnx

    model = _onnx_model(raw)
    if model is None:
        raise InvalidInput("not an ONNX model (it does not parse, or does not pass onnx.checker)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise InvalidInput("the ONNX graph keeps its weights in external files: register a self-contained export")
    stored = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in stored]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise InvalidInput("VeML registers ONNX image classifiers: one input (N x 3 x S x S images), one output (logits)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.output[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or not dims[2] or dims[2] != dims[3] or len(out_dims) != 2 or not out_dims[1]:
        raise InvalidInput(f"the ONNX graph takes {dims} and gives {out_dims}: VeML registers image classifiers taking "
                           "N x 3 x S x S images and giving N x C logits")
    _rename(model, inputs[0].name, "images", model.graph.output[0].name, "logits")
    spec = ModelSpec("graph", "classification", "onnx", parameters={"image_size": int(dims[2])})
    if hint is not None and (hint.adapter, hint.task) != ("graph", "classification"):
        raise InvalidInput(f"an ONNX graph registers as its own model, not as a {hint.adapter}/{hint.task} model version")
    if hint is not None:
        spec = replace(spec, parameters={**hint.parameters, "image_size": int(dims[2])})
    return Imported("onnx", spec, int(out_dims[1]), None, model)


def _rename(model: Any, old_in: str, new_in: str, old_out: str, new_out: str) -> None:
    """Rename the graph's input and output where they are declared and wherever a node uses them."""
    for value in model.graph.input:
        if value.name == old_in:
            value.name = new_in
    for value in model.graph.output:
        if value.name == old_out:
            value.name = new_out
    for node in model.graph.node:
        node.input[:] = [new_in if n == old_in else n for n in node.input]
        node.output[:] = [new_out if n == old_out else n for n in node.output]


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


__all__ = ["FRAMEWORKS", "Imported", "sniff", "load", "checkpoint", "zip_names"]
