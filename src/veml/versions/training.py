"""Training versions: one node per run, its status as insert-only events, its metrics as a log.

The node is written when the run starts (so ``veml train log T --follow`` has something to
follow) and is never edited: the run's end is a ``finished`` event carrying the checkpoint digest,
metrics and resource profile, or a ``failed`` event.  A process killed outright leaves a
``running`` event whose process is gone; readers report that run as failed.  Everything that can
be checked is checked before the node exists, so bad input leaves no run behind.

``--set distributed=ray [--set workers=N]`` trains data-parallel through Ray Train (torch adapter
only).  These two settings say where a run executes, not what it learns, so they are taken out
of the hyper-parameters (a transfer or rebuild that reuses a recipe does not inherit them) and
recorded as the node's ``distributed`` property.  The cluster is the repository's compute
back-end when that is Ray (``compute_url``/``$VEML_COMPUTE``), otherwise ``ray.init()``'s
default; it is connected to before the node is written, so an unreachable cluster leaves no run.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import queue
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from veml.adapters import get_adapter
from veml.adapters.base import ChecksInit, ModelSpec, TrainOutcome, TrainsDataParallel, check_type
from veml.compute import RayExecutor
from veml.entities import Node
from veml.errors import InvalidInput, VemlError
from veml.store.idsets import BitMap, from_array, to_numpy
from veml.versions import evaluation, version_compare
from veml.versions.keep_better import keep_better, scratch_fallback, scratch_recipe
from veml.versions.run_status import before_first_event, effective, running_here
from veml.versions.context import Stores
from veml.versions.data import DataVersions
from veml.versions.model import KIND as MODEL_KIND, ModelVersions, flatten, spec_of
from veml.versions.taskdata import MODALITY, class_names_for, task_data

KIND = "TrainingVersion"
_FLUSH_S = 0.5
_FLUSH_ROWS = 500


def parse_sets(sets: Mapping[str, Any] | list[str] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``--set key=value`` pairs typed like their defaults; an unknown key is refused by name."""
    raw: dict[str, Any] = {}
    if isinstance(sets, Mapping):
        raw = dict(sets)
    else:
        for item in sets or []:
            if "=" not in item:
                raise InvalidInput(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            raw[k.strip()] = v.strip()
    out = dict(defaults)
    for key, value in raw.items():
        if key not in defaults:
            raise InvalidInput(f"unknown training parameter {key!r} (accepted: {', '.join(defaults)})")
        given = value if isinstance(value, str) else None
        out[key] = check_type(f"training parameter {key!r}", _from_text(value, defaults[key]), defaults[key], given)
    return out


def _from_text(value: Any, default: Any) -> Any:
    """A ``--set`` string typed like its default (left as it is when it does not read as one, so the
    type check names it); values that are not strings (a Python mapping) are checked as they are."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    text = value.strip()
    if isinstance(default, bool):
        return {"1": True, "true": True, "yes": True, "on": True,
                "0": False, "false": False, "no": False, "off": False}.get(text.lower(), value)
    try:
        return int(text) if isinstance(default, int) else float(text) if isinstance(default, float) else value
    except ValueError:
        return value


Sets = Mapping[str, Any] | list[str] | None


def split_distribution(sets: Sets) -> tuple[Sets, dict[str, Any] | None]:
    """(the ``--set`` items without ``distributed``/``workers``, {"backend", "workers"} or None for a local run)."""
    from veml.compute.ray_train import BACKENDS, DEFAULT_WORKERS

    items = dict(sets) if isinstance(sets, Mapping) else None
    rest: Sets = sets
    found: dict[str, str] = {}
    if items is not None:
        found = {k: str(items.pop(k)) for k in ("distributed", "workers") if k in items}
        rest = items
    elif sets:
        kept = []
        for item in sets:
            key, sep, value = item.partition("=")
            if sep and key.strip() in ("distributed", "workers"):
                found[key.strip()] = value.strip()
            else:
                kept.append(item)
        rest = kept
    backend = found.get("distributed", "ray" if "workers" in found else "none").lower()
    if backend not in BACKENDS:
        raise InvalidInput(f"training parameter distributed={backend!r} must be one of {', '.join(BACKENDS)}")
    if backend == "none":
        if "workers" in found:
            raise InvalidInput("workers=N needs distributed=ray")
        return rest, None
    try:
        workers = int(found.get("workers", DEFAULT_WORKERS))
    except ValueError:
        raise InvalidInput(f"training parameter workers={found['workers']!r} is not an int") from None
    if workers < 1:
        raise InvalidInput(f"training parameter workers={workers} must be at least 1")
    return rest, {"backend": backend, "workers": workers}


def check_params(params: Mapping[str, Any]) -> None:
    """Ranges every adapter shares; refused before a training version is written."""
    rules = {
        "epochs": (lambda v: v >= 1, "at least 1"), "batch_size": (lambda v: v >= 1, "at least 1"),
        "lr": (lambda v: v >= 0, "zero or positive"), "weight_decay": (lambda v: v >= 0, "zero or positive"),
        "max_steps": (lambda v: v >= 0, "zero (no limit) or positive"), "stride": (lambda v: v >= 1, "at least 1"),
        "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "head_epochs": (lambda v: v >= 0, "zero or positive"), "warmup_steps": (lambda v: v >= 0, "zero or positive"),
        "optimizer": (lambda v: v in ("adamw", "sgd"), "adamw or sgd"),
        "checkpoint_every": (lambda v: v >= 0, "zero (the final checkpoint only) or a number of steps"),
    }
    for key, (ok, what) in rules.items():
        if key in params and not ok(params[key]):
            raise InvalidInput(f"training parameter {key}={params[key]!r} must be {what}")


def libraries() -> dict[str, str]:
    """The versions of the libraries a model was made with (recorded on every training version)."""
    libs = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "torchvision", "sklearn", "onnxruntime"):
        m = sys.modules.get(mod)
        if m is not None:
            libs[mod] = getattr(m, "__version__", "?")
    from importlib.metadata import PackageNotFoundError, version

    try:
        libs["veml"] = version("veml")
    except PackageNotFoundError:
        libs["veml"] = "unknown"
    return libs


class _Logger:
    """Buffers metric rows and writes them in small transactions, so logging costs little per step.

    Every half second (or 500 rows) the buffer is written: by the caller, or with ``background`` by a writer
    thread the buffer is handed to (the caller's step then never waits on the database; batches are written
    in the order they were handed over).  ``flush()`` writes everything logged so far before it returns; a
    write that failed in the background is raised by the next call."""

    def __init__(self, stores: Stores, node_id: int, echo: Callable[[int, int, Mapping[str, float]], None] | None,
                 background: bool = False) -> None:
        self._s, self._id, self._echo = stores, node_id, echo
        self._rows: list[tuple[int, int, str, float, float]] = []
        self._last = time.monotonic()
        self._background = background
        self._queue: queue.Queue[list[tuple[int, int, str, float, float]] | None] | None = None
        self._error: BaseException | None = None

    def __call__(self, step: int, epoch: int, values: Mapping[str, float]) -> None:
        now = time.time()
        # a NaN or inf cannot be stored (SQL NULL); the adapter stops a run whose loss is not finite
        self._rows.extend((step, epoch, k, float(v), now) for k, v in values.items() if math.isfinite(float(v)))
        if self._echo:
            self._echo(step, epoch, values)
        if len(self._rows) >= _FLUSH_ROWS or time.monotonic() - self._last > _FLUSH_S:
            if self._background:
                self._hand_over()
            else:
                self.flush()

    def _hand_over(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        rows, self._rows = self._rows, []
        self._last = time.monotonic()
        if not rows:
            return
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(target=self._write_handed, args=(self._queue,), name="veml-metric-writer", daemon=True).start()
        self._queue.put(rows)

    def _write_handed(self, handed: "queue.Queue[list[tuple[int, int, str, float, float]] | None]") -> None:
        while True:
            rows = handed.get()
            try:
                if rows is None:  # closed
                    return
                self._s.graph.append_logs(self._id, rows)
            except BaseException as exc:  # noqa: BLE001 - raised in the logging thread by the next call
                self._error = exc
            finally:
                handed.task_done()

    def flush(self) -> None:
        if self._queue is not None:
            self._hand_over()
            self._queue.join()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            return
        rows, self._rows = self._rows, []
        self._s.graph.append_logs(self._id, rows)
        self._last = time.monotonic()

    def close(self) -> None:
        """Flush, and end the writer thread (if there is one)."""
        self.flush()
        if self._queue is not None:
            self._queue.put(None)  # type: ignore[arg-type]
            self._queue = None


class TrainingVersions:
    def __init__(self, stores: Stores, data: DataVersions, models: ModelVersions) -> None:
        self._s, self._data, self._models = stores, data, models

    def get(self, ref: str | int) -> Node:
        """The training version; a run logged with the SDK (``run`` in its properties) comes with what it
        recorded when it ended (the model version ``log_model`` made, its task and classes: ``props`` of its
        last event), so every reader of ``props["model"]`` sees the model it holds."""
        node = self._s.graph.resolve(ref, kinds=[KIND])
        if "run" not in node.props:
            return node
        later = (self._s.graph.latest_events([node.id]).get(node.id) or {}).get("props")
        return dataclasses.replace(node, props={**node.props, **later}) if later else node

    def model_of(self, node: Node) -> Node:
        """The model version a training version trained."""
        return self._models.get(node.props["model"])

    def status(self, node: Node) -> dict[str, Any]:
        ev = self._s.graph.latest_events([node.id]).get(node.id) or before_first_event(node)
        return self.effective(ev)

    effective = staticmethod(effective)

    def describe(self, node: Node, event: dict[str, Any] | None = None) -> dict[str, Any]:
        ev = self.effective(event) if event is not None else self.status(node)
        out = node.to_json()
        out["status"] = ev.get("status")
        for key in ("metrics", "checkpoint", "profile", "worst", "error", "finished_at", "selection", "params", "artifacts"):
            if key in ev:
                out[key] = ev[key]
        if isinstance(node.props.get("run"), dict):  # logged with the SDK: what it recorded as it ran
            out.update(ev.get("props") or {})
            out["run"] = {**node.props["run"], **(ev.get("run") or {})}
        out.setdefault("metrics", None)
        return out

    def list(self) -> list[dict[str, Any]]:
        nodes = self._s.graph.list(kinds=[KIND])
        events = self._s.graph.latest_events([n.id for n in nodes])
        return [self.describe(n, events.get(n.id) or before_first_event(n)) for n in nodes]

    def compare(self, refs: Sequence[str | int]) -> version_compare.Comparison:
        """Model and training versions side by side (:mod:`veml.versions.version_compare`), in the order named."""
        version_compare.check_refs(refs)
        columns = []
        for ref in refs:
            node = self._s.graph.resolve(ref, kinds=[MODEL_KIND, KIND])
            if node.kind == MODEL_KIND:
                columns.append(version_compare.Column(node.id, node.name, "model", node.id,
                                                      {"model": flatten(spec_of(node).to_json())}))
                continue
            described = self.describe(self.get(node.id))
            values = {"training": version_compare.training_values(described),
                      "metrics": version_compare.metric_values(described.get("metrics"))}
            model = self._models.get(described["model"]) if described.get("model") is not None else None
            if model is not None:  # a run logged with the SDK may name no model version
                values["model"] = flatten(spec_of(model).to_json())
            columns.append(version_compare.Column(node.id, node.name, "training", model.id if model else None, values))
        return version_compare.side_by_side(columns)

    def logs(self, ref: str | int, after_id: int = 0) -> list[dict[str, Any]]:
        return self._s.graph.read_logs(self.get(ref).id, after_id)

    def held_out(self, node: Node) -> tuple[Node, np.ndarray | None, str]:
        """Labelled data the run never trained on, as (data version, its sample ids or None for all, what it is).

        The validation split of the training data when the run held one out (recorded since issue 15), else
        the run's test version; a run with neither (or one recorded before the split was) has only its
        training data: ``"training"``, which a caller must report as a reference the model has seen."""
        if node.props.get("validation_samples"):
            return self._data.get(node.props["data"]), to_numpy(self._s.graph.idset(node.id, "validation")), "validation"
        if node.props.get("test") is not None:
            return self._data.get(node.props["test"]), None, "test"
        return self._data.get(node.props["data"]), None, "training"

    def probe(self, data: str | int | Node, init_from: str | int, params: Mapping[str, Any],
              data_ids: np.ndarray, held_out_only: bool = False) -> tuple[str, float | None]:
        """What a fine-tuning of ``init_from``'s weights on the samples ``data_ids`` of ``data`` with ``params`` would
        end with, run in memory and recorded nowhere: (key metric, value) of the model it keeps, on those samples.

        It is :meth:`train` without the record: the same seeded split, and with ``keep_better`` the same choice
        between the fine-tuned and the starting model on the split's validation samples (skipped when the samples
        are too few to hold any out).  The score is on all the samples, most of them trained on, so it is only as
        fair as ``params`` are light (``model_scores.finetune_probe`` gives it transfer's recipe); with
        ``held_out_only`` it is on the validation samples alone, which ``params`` must then hold out."""
        init_node = self.get(init_from)
        dnode = data if isinstance(data, Node) else self._data.get(data)
        spec: ModelSpec = spec_of(self._models.get(init_node.props["model"]))
        adapter = get_adapter(spec.adapter)
        if not adapter.warm_start:
            raise InvalidInput(f"the {spec.adapter} adapter cannot start from trained weights, so it cannot be probed")
        check_params(dict(params))
        view = self._data.checkout(dnode)
        class_names = class_names_for(spec, view)
        positions = np.flatnonzero(np.isin(view.data_ids, data_ids))
        train_pos, eval_pos = self._split(len(positions), params, not params.get("keep_better"))
        if held_out_only and not len(eval_pos):
            raise InvalidInput(f"{len(positions)} samples of {dnode.name!r} are too few to hold any out "
                               f"(at least 5, with keep_better and val_fraction above 0)")
        td = task_data(self._s, spec, view, class_names, positions=positions[train_pos])
        init_bytes = self.checkpoint(init_node)
        if isinstance(adapter, ChecksInit):
            adapter.check_init(spec, td, init_bytes)
        outcome = adapter.train(spec, td, params, init_bytes, lambda *_: None)
        if len(eval_pos):
            val_td = task_data(self._s, spec, view, class_names, positions=positions[eval_pos], require_labels=False)
            outcome, _ = keep_better(adapter, spec, outcome, init_bytes, init_node, class_names, val_td)
        every = task_data(self._s, spec, view, class_names, require_labels=False,
                          positions=positions[eval_pos] if held_out_only else positions)
        report, _ = evaluation.evaluate(every, adapter.predict(spec, outcome.checkpoint, every))
        return evaluation.key_metric(spec.task, report)

    def checkpoint(self, node: Node) -> bytes:
        """The run's checkpoint: the very bytes whose digest was checked (read once, then loaded)."""
        ev = self.status(node)
        if ev.get("status") != "finished":
            raise InvalidInput(f"training {node.name!r} is {ev.get('status')}: only a finished training has a checkpoint")
        digest = ev.get("checkpoint")
        if not digest:  # a run recorded from another tool (veml import mlflow) keeps what it logged, not a model
            raise InvalidInput(f"training {node.name!r} holds no model checkpoint (imported from "
                               f"{node.props.get('origin', {}).get('system', 'elsewhere')}): only its record is kept")
        return self._s.artifacts.get_verified(digest, f"checkpoint {digest[:12]} of training {node.name!r}")

    def defaults(self, model: str | int) -> dict[str, Any]:
        """The training parameters a model version accepts, with their defaults."""
        spec = spec_of(self._models.get(model))
        return dict(get_adapter(spec.adapter).train_defaults(spec))

    def fit_reason(self, model: str | int, data: str | int | Node) -> str | None:
        """Why ``model``'s task cannot learn from ``data`` (another modality, or no annotations of its kind); None when it can."""
        spec = spec_of(self._models.get(model))
        dnode = data if isinstance(data, Node) else self._data.get(data)
        need = MODALITY.get(spec.task)
        if need is not None and dnode.props.get("modality") != need:
            return f"a {spec.task} model needs {need} data and {dnode.name!r} holds {dnode.props.get('modality')} data"
        tables = set(dnode.props.get("annotation_tables", []))
        if spec.task == "classification" and not spec.parameters.get("label_column") and "labels" not in tables:
            return f"a classification model learns from class labels and {dnode.name!r} has none"
        if spec.task == "detection" and "boxes" not in tables:
            return f"a detection model learns from boxes and {dnode.name!r} has none"
        return None

    def class_names(self, model: str | int, data: str | int) -> tuple[str, ...]:
        """The classes a training of ``model`` on ``data`` would predict, in head order."""
        spec = spec_of(self._models.get(model))
        return class_names_for(spec, self._data.checkout(self._data.get(data)))

    def train(
        self,
        data: str | int,
        model: str | int,
        sets: Mapping[str, Any] | list[str] | None = None,
        init_from: str | int | None = None,
        test: str | int | None = None,
        name: str | None = None,
        echo: Callable[[int, int, Mapping[str, float]], None] | None = None,
        extra_parents: list[tuple[int, str, Mapping[str, Any]]] | None = None,
        adapt: str | None = None,
    ) -> dict[str, Any]:
        """Train (or, with ``adapt``, adapt ``init_from``'s weights to ``data`` without its labels)."""
        dnode, mnode = self._data.get(data), self._models.get(model)
        spec: ModelSpec = spec_of(mnode)
        adapter = get_adapter(spec.adapter)
        sets, distribution = split_distribution(sets)
        params = parse_sets(sets, adapter.train_defaults(spec))
        check_params(params)
        view = self._data.checkout(dnode)
        init_bytes, init_node = None, None
        if adapt is not None and init_from is None:
            raise InvalidInput("adaptation starts from a trained model: give init_from")
        if adapt is not None and not adapter.ADAPT_METHODS:
            raise InvalidInput(f"the {spec.adapter} adapter cannot adapt models without labels")
        if init_from is not None:
            init_node = self.get(init_from)
            init_bytes = self.checkpoint(init_node)
        # adapting keeps the trained model's classes; the target data may carry no labels at all
        class_names = tuple(init_node.props.get("class_names", ())) if adapt is not None and init_node is not None \
            else class_names_for(spec, view)
        test_node = self._data.get(test) if test is not None else None
        keep = bool(params.get("keep_better")) and init_node is not None and adapt is None
        # keep_better chooses on a validation split of the training data, even when a test version is given
        train_pos, eval_pos = self._split(len(view), params, test_node is not None and not keep)
        if keep and not len(eval_pos):
            raise InvalidInput(self._no_holdout(dnode.name, len(view)))
        td = task_data(self._s, spec, view, class_names, positions=train_pos, require_labels=adapt is None)
        if len(td) == 0:
            raise InvalidInput(f"data version {dnode.name!r} has no labelled samples to train on")
        val_td = task_data(self._s, spec, view, class_names, positions=eval_pos, require_labels=False) if len(eval_pos) else None
        if test_node is not None:
            eval_td = task_data(self._s, spec, self._data.checkout(test_node), class_names, require_labels=False)
        else:
            eval_td = val_td
        if init_bytes is not None and isinstance(adapter, ChecksInit):
            adapter.check_init(spec, td, init_bytes)
        if adapt is not None and init_bytes is not None:
            adapter.check_adapt(spec, init_bytes, adapt)
        name = name or self._auto_name(mnode.name, dnode.name)
        self._s.graph.check_new_name(name)
        if distribution is not None:
            if int(params.get("head_epochs", 0) or 0):
                raise InvalidInput("head_epochs freezes layers mid-run, which data-parallel training cannot follow: "
                                   "train it on one worker")
            self._check_distributed(adapter, adapt, distribution["workers"])
        parents: list[tuple[int, str, Mapping[str, Any]]] = [(dnode.id, "DATA_TRAINING", {"role": "train"}),
                                                             (mnode.id, "MODEL_TRAINING", {})]
        if test_node is not None:
            parents.append((test_node.id, "DATA_TRAINING", {"role": "test"}))
        if init_node is not None:
            parents.append((init_node.id, "FINETUNE_FROM", {}))
        parents += extra_parents or []
        props = {"data": dnode.id, "model": mnode.id, "test": test_node.id if test_node else None,
                 "init_from": init_node.id if init_node else None, "params": params, "seed": params.get("seed"),
                 "task": spec.task, "class_names": list(class_names), "libraries": libraries(),
                 "train_samples": len(td), "eval_samples": len(eval_td) if eval_td is not None else 0, "adapt": adapt}
        held: dict[str, BitMap] = {}
        if len(eval_pos):  # the samples the run holds out: a reference for the model's outputs (drift, estimates)
            held["validation"] = from_array(view.data_ids[eval_pos])
            props["validation_samples"] = len(eval_pos)
        if distribution is not None:
            props["distributed"] = distribution
        # who runs it, committed with the node: a kill before the "running" event below still reads as failed
        props["started_by"] = running_here()
        node = self._s.graph.record(KIND, name, props, parents=parents, idsets=held)
        self._s.graph.append_event(node.id, "running", running_here())
        logger = _Logger(self._s, node.id, echo)
        try:
            if adapt is not None:
                outcome = adapter.adapt(spec, init_bytes, td, adapt, params, logger)
            elif distribution is not None:
                from veml.compute import ray_train

                outcome = ray_train.fit(adapter, spec, td, params, init_bytes, logger, workers=distribution["workers"])
            else:
                outcome = adapter.train(spec, td, params, init_bytes, logger)
            logger.flush()
            selection = None
            if keep:
                outcome, selection = keep_better(adapter, spec, outcome, init_bytes, init_node, class_names, val_td)
                if params.get("scratch_fallback"):
                    outcome, selection = scratch_fallback(adapter, spec, outcome, selection, td, val_td,
                                                          scratch_recipe(self._first_recipe(init_node, adapter, spec), params))
            digest = self._s.artifacts.put_bytes(outcome.checkpoint)
            profile = dict(outcome.profile)
            metrics, worst = None, []
            if eval_td is not None:
                t0 = time.perf_counter()
                preds = adapter.predict(spec, outcome.checkpoint, eval_td)
                metrics, worst = evaluation.evaluate(eval_td, preds)
                profile["evaluation_s"] = time.perf_counter() - t0
            metrics = {**(metrics or {}), **{k: v for k, v in outcome.metrics.items()}}
            finished = {"checkpoint": digest, "metrics": metrics, "profile": profile, "worst": worst, "finished_at": time.time()}
            if outcome.files:  # what the run wrote besides its checkpoint, as the SDK's log_artifact keeps files
                finished["artifacts"] = [{"name": n, "sha256": self._s.artifacts.put_bytes(b), "size_bytes": len(b)}
                                         for n, b in sorted(outcome.files.items())]
            if selection is not None:
                finished["selection"] = selection
            self._s.graph.append_event(node.id, "finished", finished)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, VemlError) else f"{type(exc).__name__}: {exc}"
            try:
                logger.flush()
            finally:
                self._s.graph.append_event(node.id, "failed", {"error": reason[:500]})
            if isinstance(exc, InvalidInput):  # the run ended on its input (a diverging loss): say which run
                raise InvalidInput(f"training {node.name!r} failed: {exc}") from exc
            raise
        return self.describe(self._s.graph.get(node.id))

    def _first_recipe(self, node: Node, adapter: Any, spec: ModelSpec) -> dict[str, Any]:
        """The hyper-parameters of the training that began ``node``'s chain of fine-tunings (its adapter's defaults
        under them): how the model was trained from its own starting weights."""
        seen = {node.id}
        while node.props.get("init_from") is not None and node.props["init_from"] not in seen:
            node = self.get(node.props["init_from"])
            seen.add(node.id)
        return {**adapter.train_defaults(spec), **(node.props.get("params") or {})}

    def _check_distributed(self, adapter: Any, adapt: str | None, workers: int) -> None:
        """Refuse what cannot run data-parallel, and connect to Ray, before a training version exists."""
        if adapt is not None:
            raise InvalidInput("adaptation re-estimates statistics in one pass: it does not run distributed")
        if not isinstance(adapter, TrainsDataParallel):
            raise InvalidInput(f"the {adapter.name} adapter cannot train distributed (only torch can)")
        from veml.compute import ray_train

        ray_train.prepare(self._s.compute if isinstance(self._s.compute, RayExecutor) else RayExecutor(), workers)

    @staticmethod
    def _no_holdout(name: str, samples: int) -> str:
        return (f"keep_better compares the fine-tuned and the starting model on a validation split of {name!r}, and its "
                f"{samples} samples are too few to hold one out (at least 5; a forecaster's sample is a day): add "
                "samples, or set keep_better=false to keep the fine-tuned model unchecked")

    def keep_better_refusal(self, data: str | int | Node, params: Mapping[str, Any]) -> str | None:
        """Why a fine-tuning with ``params`` on ``data`` cannot keep the better model, checked before any work."""
        if not params.get("keep_better"):
            return None
        dnode = data if isinstance(data, Node) else self._data.get(data)
        n = int(dnode.props.get("samples", 0))
        return self._no_holdout(dnode.name, n) if not len(self._split(n, params, False)[1]) else None

    @staticmethod
    def _split(n: int, params: Mapping[str, Any], has_test: bool) -> tuple[np.ndarray, np.ndarray]:
        """Seeded hold-out split when no test version is given, so metrics are never on training samples."""
        if has_test or float(params.get("val_fraction", 0.0)) <= 0 or n < 5:
            return np.arange(n), np.arange(0)
        rng = np.random.default_rng(int(params.get("seed", 0)))
        order = rng.permutation(n)
        k = max(1, int(round(n * float(params["val_fraction"]))))
        return np.sort(order[k:]), np.sort(order[:k])

    def _auto_name(self, model: str, data: str) -> str:
        base = f"train-{model}-on-{data}"
        name, i = base, 1
        while self._s.graph.name_taken(name):
            i += 1
            name = f"{base}-{i}"
        return name
