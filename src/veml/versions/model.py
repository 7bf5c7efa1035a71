"""Model versions: what is trained, as a node with shared metadata nodes around it.

Architecture, backbone, neck and head are nodes of their own (``Architecture``, ``Backbone``, …)
linked by ``USES`` edges, so "every model on backbone X" is a walk down from one node instead of
a scan of every model's properties.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

import yaml

from veml.adapters import ADAPTERS, get_adapter
from veml.adapters.base import TASKS, ModelSpec
from veml.entities import Node
from veml.errors import Conflict, InvalidInput, NotFound
from veml.formats.paths import ReadPolicy, read_regular
from veml.versions.context import Stores

KIND = "ModelVersion"
_PARTS = {"architecture": "Architecture", "backbone": "Backbone", "neck": "Neck", "head": "Head"}
_KEYS = {"adapter", "task", "architecture", "backbone", "neck", "head", "parameters", "name", "description"}


#: the largest model config file read (bytes): configs are a few lines; ``VEML_MAX_CONFIG_BYTES`` changes it
MAX_CONFIG_BYTES = 1 << 20
#: the most values a config may hold once YAML aliases are expanded (an alias bomb is refused before it
#: is ever serialised); ``VEML_MAX_CONFIG_NODES`` changes it
MAX_CONFIG_NODES = 10_000


def _limit(env: str, default: int) -> int:
    try:
        return int(os.environ.get(env, default))
    except ValueError:
        raise InvalidInput(f"${env} must be an integer") from None


def load_config(path: Path | str) -> dict[str, Any]:
    """A model config (YAML, JSON or TOML by suffix, or an MMDetection ``.py`` config), read under a byte cap
    and refused if it expands (YAML aliases) to more than ``MAX_CONFIG_NODES`` values or refers to itself."""
    path = Path(path)
    cap = _limit("VEML_MAX_CONFIG_BYTES", MAX_CONFIG_BYTES)
    raw = read_regular(path, str(path), ReadPolicy(max_file_bytes=cap),
                       too_big=f"{path}: config is larger than {cap} bytes (VEML_MAX_CONFIG_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: cannot read config: {exc}") from None
    if path.suffix == ".py":  # an MMDetection config: code, run once (see veml.adapters.openmmlab_config)
        from veml.adapters.openmmlab_config import read_config

        return read_config(path, text, cap)
    try:
        if path.suffix == ".toml":
            doc = tomllib.loads(text)
        elif path.suffix == ".json":
            doc = json.loads(text)
        else:
            doc = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: malformed config: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InvalidInput(f"{path}: malformed config: nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: a model config is a mapping (adapter, task, architecture, …)")
    _check_expansion(doc, _limit("VEML_MAX_CONFIG_NODES", MAX_CONFIG_NODES), str(path))
    return doc


def _check_expansion(doc: Any, cap: int, where: str) -> None:
    """Count the values ``doc`` holds once every shared (aliased) part is written out in full, without
    writing it out: each container's size is computed once, so a billion-laughs document costs its
    number of distinct containers, not its expansion."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(obj: Any) -> int:
        if not isinstance(obj, (dict, list)):
            return 1
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise InvalidInput(f"{where}: the config refers to itself (a recursive YAML alias)")
        open_.add(key)
        items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
        total = 1
        for item in items:
            total += size(item)
            if total > cap:
                raise InvalidInput(f"{where}: the config expands to more than {cap} values "
                                   "(YAML aliases? VEML_MAX_CONFIG_NODES)")
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        size(doc)
    except RecursionError:
        raise InvalidInput(f"{where}: malformed config: nested too deeply") from None


def spec_from_config(doc: Mapping[str, Any], where: str = "config") -> ModelSpec:
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    adapter = doc.get("adapter", "torch")
    if adapter not in ADAPTERS:
        raise InvalidInput(f"{where}: unknown adapter {adapter!r}: use one of {', '.join(ADAPTERS)}")
    task = doc.get("task")
    if task not in TASKS:
        raise InvalidInput(f"{where}: task must be one of {', '.join(TASKS)}, not {task!r}")
    if not isinstance(doc.get("architecture"), str):
        raise InvalidInput(f"{where}: 'architecture' is required")
    for key in ("backbone", "neck", "head", "description", "name"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise InvalidInput(f"{where}: {key!r} must be a string, not {type(doc[key]).__name__}")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be a mapping")
    spec = ModelSpec(adapter, task, doc["architecture"], doc.get("backbone"), doc.get("neck"), doc.get("head"), params)
    try:
        return get_adapter(adapter).validate(spec)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def spec_of(node: Node) -> ModelSpec:
    p = node.props
    return ModelSpec(p["adapter"], p["task"], p["architecture"], p.get("backbone"), p.get("neck"), p.get("head"), p.get("parameters", {}))


class ModelVersions:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    def get(self, ref: str | int) -> Node:
        return self._s.graph.resolve(ref, kinds=[KIND])

    def add(self, name: str, config: Path | str | Mapping[str, Any], finetune_from: str | int | None = None,
            description: str = "") -> Node:
        doc = load_config(config) if isinstance(config, (str, Path)) else dict(config)
        spec = spec_from_config(doc, str(config) if isinstance(config, (str, Path)) else "config")
        self._s.graph.check_new_name(name)
        base = None
        if finetune_from is not None:  # checked before any shared node is created
            base = self.get(finetune_from)
            if base.props["task"] != spec.task:
                raise InvalidInput(f"cannot fine-tune a {spec.task} model from {base.name!r}, a {base.props['task']} model")
        parents: list[tuple[int, str, Mapping[str, Any]]] = []
        for part, kind in _PARTS.items():
            value = getattr(spec, part)
            if value:
                parents.append((self._part_node(kind, part, value), "USES", {"part": part}))
        if base is not None:
            parents.append((base.id, "FINETUNE_FROM", {}))
        props = {**spec.to_json(), "description": description or doc.get("description", "")}
        return self._s.graph.record(KIND, name, props, parents=parents)

    def _part_node(self, kind: str, part: str, value: str) -> int:
        name = f"{part}:{value}"
        try:
            return self._s.graph.resolve(name, kinds=[kind]).id
        except NotFound:
            try:
                return self._s.graph.record(kind, name, {"value": value}).id
            except Conflict:  # another process created it first
                return self._s.graph.resolve(name, kinds=[kind]).id

    def list(self, **where: str | None) -> list[Node]:
        """Every model version, or those using a given architecture/backbone/neck/head (a graph walk)."""
        wanted = {k: v for k, v in where.items() if v}
        if not wanted:
            return self._s.graph.list(kinds=[KIND])
        result: set[int] | None = None
        for part, value in wanted.items():
            if part not in _PARTS:
                raise InvalidInput(f"cannot select models by {part!r}")
            try:
                hub = self._s.graph.resolve(f"{part}:{value}", kinds=[_PARTS[part]])
            except NotFound:
                return []
            ids = {n.id for n in self._s.graph.lineage(hub.id, "down", hops=1).nodes if n.kind == KIND}
            result = ids if result is None else result & ids
        return [self._s.graph.get(i) for i in sorted(result or ())]

    def compare(self, a: str | int, b: str | int) -> dict[str, Any]:
        na, nb = self.get(a), self.get(b)
        fa, fb = flatten(spec_of(na).to_json()), flatten(spec_of(nb).to_json())
        diffs = {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
        return {"a": na.id, "b": nb.id, "same": not diffs, "differences": diffs}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists and scalars stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
