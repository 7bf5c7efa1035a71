"""The model registry: model files trained anywhere, versioned with whatever lineage is known.

``register`` turns a file into what ``veml train`` would have made: a model version (what the model
is) and a training version holding its weights (the node kind that holds a checkpoint, which
``deploy``, ``predict``, ``drift``, ``rebuild`` and ``--init-from`` all consume).  The training
version has no run behind it: it is marked ``registered`` (framework, file name, sha256 and size of
the file) and is finished the moment it is recorded, in one atomic write, with the checkpoint's
digest in its own properties.  Lineage is what the user knows: ``--data D`` (the data it learned
from: ``DATA_TRAINING``), ``--training T`` (the run it was derived from: ``FINETUNE_FROM``),
``--model M`` (the model version it is an instance of: ``MODEL_TRAINING``; otherwise the model
version is T's when the file fits it, else a new one named ``N-model``).

Everything is checked before anything is written; the file is read once, under the size cap of
every reader (``VEML_MAX_FILE_MB``), and what was checked is what is stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from veml.adapters import get_adapter, imports
from veml.adapters.base import ModelSpec
from veml.adapters.imports import Imported
from veml.entities import Node
from veml.errors import InvalidInput
from veml.formats.paths import ReadPolicy, read_regular
from veml.versions.context import Stores, unique_name
from veml.versions.data import DataVersions
from veml.versions.model import ModelVersions, spec_of
from veml.versions.taskdata import class_names_for
from veml.versions.training import KIND as TRAINING, TrainingVersions, libraries


@dataclass(frozen=True)
class ReadModel:
    """A model file understood: its framework, what it is (``spec``; ``model``, the model version it was read
    as, or None when it needs a new one), its output class names and the checkpoint to store."""

    framework: str
    spec: ModelSpec
    model: Node | None
    class_names: tuple[str, ...]
    checkpoint: bytes


class Registry:
    def __init__(self, stores: Stores, data: DataVersions, models: ModelVersions, training: TrainingVersions) -> None:
        self._s, self._data, self._models, self._training = stores, data, models, training

    def register(self, path: str | Path, name: str, data: str | int | None = None, training: str | int | None = None,
                 framework: str | None = None, model: str | int | None = None,
                 origin: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A training version named ``name`` holding the model in ``path``; its description (version object).

        ``origin``: where the file came from when another tool's registry holds it (``veml import mlflow``),
        recorded as the version's ``"origin"``."""
        where = str(path)
        raw = read_regular(Path(path), where, ReadPolicy.from_options())
        self._s.graph.check_new_name(name)
        dnode = self._data.get(data) if data is not None else None
        tnode = self._training.get(training) if training is not None else None
        mnode = self._models.get(model) if model is not None else None
        read = self.read(raw, where, dnode, tnode, mnode, framework)
        framework, mnode, class_names = read.framework, read.model, read.class_names
        model_name = unique_name(self._s, f"{name}-model") if mnode is None else None
        # all checked: the checkpoint first (content-addressed: unreferenced bytes are gc's), then the nodes
        digest = self._s.artifacts.put_bytes(read.checkpoint)
        if mnode is None:
            mnode = self._models.add(model_name, read.spec.to_json(), description=f"registered from {Path(path).name}")
        parents: list[tuple[int, str, Mapping[str, Any]]] = [(mnode.id, "MODEL_TRAINING", {})]
        if dnode is not None:
            parents.append((dnode.id, "DATA_TRAINING", {"role": "train"}))
        if tnode is not None:
            parents.append((tnode.id, "FINETUNE_FROM", {}))
        props = {"data": dnode.id if dnode else None, "model": mnode.id, "test": None,
                 "init_from": tnode.id if tnode else None, "seed": None,
                 # the recipe is unknown: the adapter's defaults are what a rebuild or transfer starts from
                 "params": get_adapter(read.spec.adapter).train_defaults(read.spec), "task": read.spec.task,
                 "class_names": list(class_names), "libraries": libraries(), "train_samples": 0, "eval_samples": 0,
                 "adapt": None, "checkpoint": digest,
                 "registered": {"framework": framework, "file": Path(path).name,
                                "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}}
        if origin is not None:
            props["origin"] = dict(origin)
        node = self._s.graph.record(TRAINING, name, props, parents=parents)
        return self._training.describe(node)

    def read(self, raw: bytes, where: str, dnode: Node | None, tnode: Node | None, mnode: Node | None,
             framework: str | None = None) -> ReadModel:
        """A model file's bytes read as a VeML model (as ``mnode``'s architecture when given), with its class
        names (``dnode``'s or ``tnode``'s when known) and the checkpoint VeML's adapter runs; nothing written."""
        cap = ReadPolicy.from_options().max_file_bytes
        try:
            framework = framework or imports.sniff(raw, cap)
            imported, mnode = self._load(raw, framework, mnode, tnode, cap)
            class_names = self._class_names(imported, dnode, tnode)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        checkpoint, _ = imports.checkpoint(imported, class_names)
        return ReadModel(framework, imported.spec, mnode, tuple(class_names), checkpoint)

    def _load(self, raw: bytes, framework: str, mnode: Node | None, tnode: Node | None,
              cap: int) -> tuple[Imported, Node | None]:
        """The file read as ``mnode``'s architecture; else as T's model's, if it fits; else as whatever it is."""
        if mnode is not None:
            return imports.load(raw, framework, spec_of(mnode), cap), mnode
        if tnode is not None and tnode.props.get("model") is not None:  # a run imported from MLflow may have none
            base = self._models.get(tnode.props["model"])
            try:
                imported = imports.load(raw, framework, spec_of(base), cap)
            except InvalidInput:
                pass
            else:
                return imported, base
        return imports.load(raw, framework, None, cap), None

    def _class_names(self, imported: Imported, dnode: Node | None, tnode: Node | None) -> Sequence[str]:
        """The names of the model's outputs, in output order: the data's (or the run's) classes when their
        number matches, the names the file gives (scikit-learn's ``classes_``), else ``0``, ``1``, …"""
        k = imported.outputs
        if k is None:
            return []
        own = imported.classes
        numbered = tuple(str(i) for i in range(k))
        known: tuple[str, ...] | None = None
        source = ""
        if dnode is not None:
            known, source = class_names_for(imported.spec, self._data.checkout(dnode)), f"data version {dnode.name!r}"
        elif tnode is not None and tnode.props.get("class_names"):
            known, source = tuple(tnode.props["class_names"]), f"training {tnode.name!r}"
        if known is None:
            return own or numbered
        if own is not None and own != numbered:  # the file names its classes: they must be the data's, in its order
            if set(own) != set(known):
                raise InvalidInput(f"the model's classes {list(own)} are not the classes of {source} {list(known)}")
            return own
        if len(known) != k:
            raise InvalidInput(f"the model tells {k} classes apart and {source} has {len(known)}")
        return known


__all__ = ["Registry", "ReadModel"]
