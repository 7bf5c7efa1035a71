"""MMDetection 3.x configs as model versions (``veml model add --name M --config retinanet_tiny.py``).

Trust model.  An MMDetection config is Python: mmengine executes it (and every ``_base_`` file it
names) to learn what it says, exactly as ``mmdet``'s own ``tools/train.py`` would.  So a config is
code, trusted like a training script: ``veml model add`` runs it once, on the machine and with the
rights of whoever adds it.  What VeML stores is what that code evaluated to, as plain data (a JSON
mapping in the model version's ``parameters.config``): training, deploying and predicting build
the model from that mapping through mmdet's registries (type names, never code), so nobody who
later trains or deploys from the repository runs the config's code, and no pickle is ever loaded.

Before anything executes, the file is parsed (not run) and what it reads is checked, so the
common mistakes are one clear error and a config cannot reach for files it should not:

- not valid Python, a lazy-import (``read_base``) config, or ``_base_`` that is not a literal string
  or list of strings;
- a ``_base_`` that is absolute or climbs out of the config's directory (``../``), or that names
  a missing file (``mmdet::…`` package configs are allowed);
- ``custom_imports`` (would import Python modules at every run), ``load_from``/``resume``, and any
  ``init_cfg`` of type ``Pretrained`` or ``pretrained=`` weights (would read or download weights:
  VeML trains from scratch or from another training version, ``veml train --init-from T``).

Nothing here imports mmengine or mmdet at module level: ``import veml`` stays light, and a missing
``[openmmlab]`` extra is one error naming it.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

from veml.errors import InvalidInput, MissingExtra

PACKAGE_PREFIX = "mmdet::"
#: the most ``_base_`` files one config may pull in (all levels together)
MAX_BASES = 64
DEFAULT_IMAGE_SIZE = 128


def require_mmdet() -> None:
    try:
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("mmdet/mmengine", "openmmlab") from exc


# --- before anything runs: the source, parsed -------------------------------------------------------
def check_source(path: Path, text: str, max_bytes: int) -> list[Path]:
    """Parse ``text`` (the config at ``path``) and every ``_base_`` it names, without running any of it;
    the base files, in the order found.  Bases must lie inside the config's own directory."""
    root = path.resolve().parent
    found: list[Path] = []
    todo = [(path, text)]
    while todo:
        where, source = todo.pop()
        for base in _bases(where, source):
            if base.startswith(PACKAGE_PREFIX):
                continue
            if "::" in base:
                raise InvalidInput(f"{where}: _base_ {base!r}: only mmdet:: package configs are allowed")
            if Path(base).is_absolute():
                raise InvalidInput(f"{where}: _base_ {base!r} is an absolute path: bases are relative to the config "
                                   "and stay inside its directory")
            target = (where.parent / base).resolve()
            if not target.is_relative_to(root):
                raise InvalidInput(f"{where}: _base_ {base!r} lies outside the config's directory {root} "
                                   "(copy it next to the config, or use an mmdet:: package config)")
            if not target.is_file():
                raise InvalidInput(f"{where}: _base_ {base!r}: file not found")
            if target.suffix != ".py":
                raise InvalidInput(f"{where}: _base_ {base!r}: VeML reads Python (.py) configs only")
            if target.stat().st_size > max_bytes:
                raise InvalidInput(f"{target}: config is larger than {max_bytes} bytes (VEML_MAX_CONFIG_BYTES)")
            if target in found:
                continue
            found.append(target)
            if len(found) > MAX_BASES:
                raise InvalidInput(f"{path}: more than {MAX_BASES} _base_ files")
            try:
                todo.append((target, target.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{target}: cannot read config: {exc}") from None
    return found


def _bases(path: Path, text: str) -> list[str]:
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise InvalidInput(f"{path}: not valid Python: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, RecursionError, MemoryError):
        raise InvalidInput(f"{path}: not valid Python (null bytes or nested too deeply)") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "read_base":
            raise InvalidInput(f"{path}: a lazy-import (read_base) config: VeML reads MMDetection's plain configs "
                               "(_base_ = [...], type='Name' strings)")
    bases: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            value = node.value
            items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
            if not all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
                raise InvalidInput(f"{path}: _base_ must be a string or a list of strings written out")
            bases.extend(i.value for i in items)
    return bases


# --- running it once: mmengine's own reader ----------------------------------------------------------
def read_config(path: Path, text: str, max_bytes: int) -> dict[str, Any]:
    """The model-config document (adapter, task, architecture, …, parameters) of an MMDetection config file.

    ``text``: the file's content, already read under the caller's byte cap."""
    require_mmdet()
    check_source(path, text, max_bytes)
    from mmengine.config import Config

    try:
        with quiet():
            cfg = Config.fromfile(str(path), import_custom_modules=False)
            doc = cfg.to_dict()
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the config's code raises is the config's error
        raise InvalidInput(f"{path}: cannot read the MMDetection config: {first_line(exc)}") from None
    config = plain(doc, "config")
    check_config(config, str(path))
    arch, backbone, neck, head = describe(config)
    return {"adapter": "openmmlab", "task": "detection", "architecture": arch, "backbone": backbone, "neck": neck,
            "head": head, "description": f"MMDetection config {path.name}",
            "parameters": {"config": config, "image_size": image_size_of(config),
                           "source": {"file": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest()}}}


def plain(obj: Any, where: str) -> Any:
    """``obj`` as JSON data (tuples become lists); anything else (a class, a function) is refused by key."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise InvalidInput(f"{where} is {obj}: a config value must be finite")
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{where}: key {k!r} is not a string")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise InvalidInput(f"{where} holds a {type(obj).__name__} object: VeML stores configs as plain data "
                       "(write type='Name' strings, not imported classes or functions)")


def check_config(config: Mapping[str, Any], where: str) -> None:
    """What makes a stored config one VeML trains: a detector model, no code to import, no weights to fetch."""
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("type"), str):
        raise InvalidInput(f"{where}: not an MMDetection config: it has no model = dict(type='…', …)")
    if config.get("custom_imports"):
        raise InvalidInput(f"{where}: custom_imports would import Python modules at every run: VeML builds "
                           "mmdet's registered modules only")
    for key in ("load_from", "resume_from"):
        if config.get(key):
            raise InvalidInput(f"{where}: {key}={config[key]!r} reads weights from a file or URL: VeML trains from "
                               "scratch, or from a training version (veml train --init-from T)")
    if config.get("resume"):
        raise InvalidInput(f"{where}: resume=True: a VeML training starts a new run (--init-from T)")
    bad = _pretrained(model, "model")
    if bad:
        raise InvalidInput(f"{where}: {bad} would read or download pretrained weights: set it to None "
                           "(no network at run time); start from a training version with --init-from T")


def _pretrained(node: Any, at: str) -> str | None:
    if isinstance(node, dict):
        if node.get("pretrained"):
            return f"{at}.pretrained"
        init = node.get("init_cfg")
        inits = init if isinstance(init, list) else [init]
        if any(isinstance(i, dict) and (i.get("type") == "Pretrained" or i.get("checkpoint")) for i in inits):
            return f"{at}.init_cfg"
        for k, v in node.items():
            found = _pretrained(v, f"{at}.{k}")
            if found:
                return found
    if isinstance(node, list):
        for i, v in enumerate(node):
            found = _pretrained(v, f"{at}[{i}]")
            if found:
                return found
    return None


def describe(config: Mapping[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    """(architecture, backbone, neck, head) as MMDetection names them: RetinaNet, ResNet18, FPN, RetinaHead."""
    model = config["model"]

    def kind(part: Any) -> str | None:
        if isinstance(part, list):  # several necks in a row
            names = [kind(p) for p in part]
            return "+".join(n for n in names if n) or None
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            return None
        name = part["type"].split(".")[-1]  # mmdet.ResNet
        depth = part.get("depth")
        return f"{name}{depth}" if isinstance(depth, int) and not isinstance(depth, bool) else name

    head = model.get("bbox_head") or (model.get("roi_head") or {}).get("bbox_head") or model.get("roi_head")
    return kind(model) or "", kind(model.get("backbone")), kind(model.get("neck")), kind(head)


def pipeline(config: Mapping[str, Any], split: str) -> list[dict[str, Any]] | None:
    """The config's ``train`` or ``test`` data pipeline (its dataloader's, else the top-level variable)."""
    loader = config.get(f"{split}_dataloader")
    dataset = loader.get("dataset") if isinstance(loader, dict) else None
    while isinstance(dataset, dict) and "pipeline" not in dataset and isinstance(dataset.get("dataset"), dict):
        dataset = dataset["dataset"]  # RepeatDataset & co. wrap the one with the pipeline
    steps = dataset.get("pipeline") if isinstance(dataset, dict) else None
    steps = steps if steps is not None else config.get(f"{split}_pipeline")
    return [dict(s) for s in steps] if isinstance(steps, list) else None


def image_size_of(config: Mapping[str, Any]) -> int:
    """The square side VeML resizes images to: the test pipeline's Resize scale (its shorter side, which a
    square image is resized to with keep_ratio), else :data:`DEFAULT_IMAGE_SIZE`."""
    for step in pipeline(config, "test") or []:
        if str(step.get("type", "")).split(".")[-1] == "Resize":
            scale = step.get("scale")
            if isinstance(scale, int):
                return scale
            if isinstance(scale, list) and scale and all(isinstance(s, int) for s in scale):
                return min(scale)
    return DEFAULT_IMAGE_SIZE


@contextlib.contextmanager
def quiet():
    """mmengine's loggers write to stdout, which holds the CLI's JSON: while it runs, stdout is stderr."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


__all__ = ["read_config", "check_source", "check_config", "describe", "pipeline", "image_size_of", "plain",
           "require_mmdet", "quiet", "first_line", "PACKAGE_PREFIX"]
