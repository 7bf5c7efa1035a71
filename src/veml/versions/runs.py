"""Runs logged from training that executes outside VeML (the Python SDK), the way MLflow's fluent API does.

A run is a training version like one ``veml train`` makes: written when the run starts (linked to
its data and model versions when given), its status a sequence of insert-only events, its metrics
rows in the same log, buffered by the same logger (:class:`veml.versions.training._Logger`).  So
``veml train list/show/log``, the UI's curves and the lineage show it like any other run.

What changes while it runs (parameters, tags, artifacts, the model) is written as it is logged: each
change appends a ``running`` event holding the whole state, so the latest event is always a
complete, consistent record, and a process killed at any moment leaves a run that every reader
reports as failed (its process is gone: ``TrainingVersions.effective``), with everything logged
up to the kill.  The next open of the repository on the same host writes that ``failed`` event for
good (:mod:`veml.versions.run_status`); runs of other hosts are never judged.  ``end()`` (or leaving the ``with``
block) appends ``finished``, or ``failed`` with the exception's summary.

``log_model`` goes through the model registry's reader (``veml model register``): a model VeML can
run (a state dict of one of its classifiers, TorchScript, ONNX, a skops scikit-learn model) becomes
the run's checkpoint, deployable like a trained one; anything else is kept as a file, with the
reason VeML cannot run it.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import io
import json
import math
import numbers
import operator
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from veml.entities import Artifact, GitState, LoggedModel, Node, Run, frozen_map, parse_iso
from veml.errors import Conflict, InvalidInput, MissingExtra, VemlError
from veml.formats.folder_archive import FORMAT as FOLDER
from veml.formats.folder_archive import pack_folder, unpack_folder
from veml.formats.paths import ReadPolicy, read_regular
from veml.versions.context import Stores, unique_name
from veml.versions.data import DataVersions
from veml.versions.model import ModelVersions
from veml.versions.registry import ReadModel, Registry
from veml.versions.run_capture import SYSTEM_PREFIX, SystemSampler, environment, git_state
from veml.versions.run_status import reap_dead_runs, running_here
from veml.versions.training import KIND, TrainingVersions, _Logger

MAX_KEY = 64  # the log table's key column
MAX_VALUE = 6000  # characters of a parameter or tag value (as JSON), MLflow's limit for a parameter
_STEP_LIMIT = 2**62  # |step| and |epoch|: a step one past the last still fits the log table's 64-bit column
#: seconds between two samples of the machine's load; ``system_metrics_s`` or ``$VEML_SYSTEM_METRICS_S`` (0: off)
SYSTEM_METRICS_S = 10.0
_PARAM_TYPES = (str, int, float, bool, type(None))


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput(f"a {what} name is a non-empty string, not {_short(key)}")
    if len(key) > MAX_KEY or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidInput(f"{what} name {key[:80]!r}: at most {MAX_KEY} printable characters")
    _check_text(key, f"{what} name {key!r}")
    return key


def _check_text(text: str, where: str) -> None:
    """Text the database can store: no lone surrogate (it has no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where}: not valid Unicode text (a lone surrogate)") from None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return f"a {type(value).__name__} too large to print"
    return text if len(text) <= 80 else text[:77] + "..."


def _mapping(values: Any, what: str) -> Mapping[Any, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{what} are a mapping of names to values, not {type(values).__name__}")
    return values


def _param_value(key: str, value: Any) -> Any:
    checked = _param_scalar(key, value) if not isinstance(value, (list, tuple)) else [_param_scalar(key, v) for v in value]
    size = len(json.dumps(checked))
    if size > MAX_VALUE:
        raise InvalidInput(f"parameter {key!r}: a value of {size} characters, over the {MAX_VALUE} a parameter may hold")
    return checked


def _param_scalar(key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"parameter {key!r}: {value} is not a finite number")
    if isinstance(value, str):
        _check_text(value, f"parameter {key!r}")
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy's integers too
        if not -2**63 <= int(value) < 2**63:
            raise InvalidInput(f"parameter {key!r}: an integer over 64 bits")
        return int(value)
    if isinstance(value, _PARAM_TYPES):
        return value
    if isinstance(value, numbers.Real):  # numpy's floats
        return _param_scalar(key, float(value))
    raise InvalidInput(f"parameter {key!r}: a string, number, bool, None or a list of them, not {type(value).__name__}")


def _tag_value(key: str, value: Any) -> str:
    try:
        text = str(value)
    except Exception as exc:  # noqa: BLE001 - whatever a value's __str__ raises (an integer too long to print)
        raise InvalidInput(f"tag {key!r}: its value cannot be written as text ({type(exc).__name__})") from None
    if len(text) > MAX_VALUE:
        raise InvalidInput(f"tag {key!r}: a value of {len(text)} characters, over the {MAX_VALUE} a tag may hold")
    _check_text(text, f"tag {key!r}")
    return text


def _system_interval(given: float | None) -> float:
    if given is None:
        raw = os.environ.get("VEML_SYSTEM_METRICS_S", SYSTEM_METRICS_S)
        try:
            given = float(raw)
        except ValueError:
            raise InvalidInput(f"$VEML_SYSTEM_METRICS_S must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(given) or given < 0:
        raise InvalidInput(f"system_metrics_s must be zero (off) or a positive number of seconds, not {given}")
    return given


@dataclasses.dataclass(frozen=True)
class EndedRun:
    """A run that ran and ended under another tracker (``veml import mlflow``), recorded whole by
    :meth:`Runs.record_ended`: a training version with no checkpoint (what it logged is kept, not a
    model VeML can run), linked to the versions given.

    ``history`` holds every metric value as ``(step, key, value, at)`` (epoch seconds); ``artifacts``
    maps a path inside the run to the sha256 :meth:`Runs.store_file` returned; ``origin`` says where
    it came from (``system`` names the tracker: :meth:`Runs.recorded_from` finds them again)."""

    name: str
    status: str  # finished | failed
    origin: Mapping[str, Any]
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Node | None = None
    test: Node | None = None
    model: Node | None = None
    artifacts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    history: tuple[tuple[int, str, float, float], ...] = ()
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    ended_at: float = 0.0
    duration_s: float | None = None
    error: str | None = None


class Runs:
    """Start, resume and read runs logged with the SDK."""

    def __init__(self, stores: Stores, data: DataVersions, models: ModelVersions, training: TrainingVersions,
                 registry: Registry) -> None:
        self._s, self._data, self._models, self._training, self._registry = stores, data, models, training, registry

    # --- reading --------------------------------------------------------------------------------
    def get(self, ref: str | int) -> Run:
        """The run (a training version logged with the SDK) as a typed entity."""
        node = self._training.get(ref)
        if not isinstance(node.props.get("run"), dict):
            raise InvalidInput(f"training {node.name!r} was not logged with the SDK: read it with repo.version({node.name!r})")
        return _run_entity(self._training.describe(node))

    def reap(self) -> list[int]:
        """Mark failed, for good, the runs of this host whose process died without ending them (their
        readers already report them failed); the ids marked.  Other hosts' runs are left to them.
        Opening a repository does it too (:func:`veml.versions.run_status.reap_dead_runs`)."""
        return reap_dead_runs(self._s.graph, lambda: self._s.graph)

    def download_model(self, ref: str | int, dest: str | os.PathLike[str]) -> Path:
        """Write the model the run logged to ``dest`` (a new path): the file as logged, or the folder it
        logged (``framework`` ``"directory"``) with its files; ``dest``.  The bytes are checked against
        their digest first."""
        info = self.get(ref)
        if info.logged_model is None:
            raise InvalidInput(f"run {info.name!r} logged no model")
        raw = self._s.artifacts.get_verified(info.logged_model.sha256, f"the model run {info.name!r} logged")
        dest = Path(dest)
        if info.logged_model.framework == FOLDER:
            return unpack_folder(raw, dest)
        try:
            with open(dest, "xb") as f:
                f.write(raw)
        except FileExistsError:
            raise InvalidInput(f"{dest} already exists: give a new path to write the model to") from None
        return dest

    # --- runs from another tracker -------------------------------------------------------------
    def recorded_from(self, system: str) -> list[tuple[Node, bool]]:
        """The training versions whose ``origin`` names ``system`` (runs and registered models), each with
        whether its end is recorded: False only for a run whose recording was cut short (a killed import),
        which ``record_ended(run, into=node)`` completes."""
        nodes = [n for n in self._s.graph.list(kinds=[KIND])
                 if isinstance(n.props.get("origin"), Mapping) and n.props["origin"].get("system") == system]
        ended = self._s.graph.latest_events([n.id for n in nodes])
        return [(n, n.id in ended or isinstance(n.props.get("registered"), dict)) for n in nodes]

    def unused_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3`` …: the first name no version holds yet."""
        return unique_name(self._s, base)

    def store_file(self, raw: bytes) -> str:
        """Keep a file a run logged elsewhere in the artifact store (content-addressed); its sha256."""
        return self._s.artifacts.put_bytes(raw)

    def record_ended(self, run: EndedRun, into: Node | None = None) -> tuple[Node, int]:
        """Record ``run`` (or, ``into``, complete the recording of it that was cut short): the version, its
        metric history (unless some of it was written already), then its end, the event that says the
        recording is complete.  (the version, how many metric rows were written)."""
        if run.status not in ("finished", "failed"):
            raise InvalidInput(f"a run recorded from elsewhere has ended finished or failed, not {run.status!r}")
        node = into
        if node is None:
            parents: list[tuple[int, str, Mapping[str, Any]]] = []
            for linked, edge, props in ((run.data, "DATA_TRAINING", {"role": "train"}),
                                        (run.test, "DATA_TRAINING", {"role": "test"}), (run.model, "MODEL_TRAINING", {})):
                if linked is not None and linked.id not in {p[0] for p in parents}:
                    parents.append((linked.id, edge, props))
            props = {"data": run.data.id if run.data else None, "model": run.model.id if run.model else None,
                     "test": run.test.id if run.test else None, "init_from": None, "params": dict(run.params),
                     "artifacts": dict(run.artifacts), "origin": dict(run.origin)}
            node = self._s.graph.record(KIND, run.name, props, parents=parents)
        written = 0
        if run.history and not self._s.graph.read_logs(node.id, limit=1):
            self._s.graph.append_logs(node.id, [(step, 0, key, value, at) for step, key, value, at in run.history])
            written = len(run.history)
        event: dict[str, Any] = {"metrics": dict(run.metrics), "finished_at": run.ended_at}
        if run.duration_s is not None:
            event["profile"] = {"duration_s": run.duration_s}
        if run.status == "failed":
            event["error"] = run.error or "failed"
        self._s.graph.append_event(node.id, run.status, event)
        return node, written

    # --- starting -------------------------------------------------------------------------------
    def start(self, name: str | None = None, data: str | int | None = None, model: str | int | None = None,
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              resume: str | int | None = None, system_metrics_s: float | None = None,
              on_end: Callable[[], None] | None = None) -> "ActiveRun":
        """A new run (a training version named ``name``, linked to ``data`` and ``model`` when given), or with
        ``resume`` the run of that name continued from this process.  Everything is checked before anything is
        written: an unknown data or model version, a taken name or a bad parameter leaves no run behind."""
        interval = _system_interval(system_metrics_s)
        params = {_check_key(k, "parameter"): _param_value(k, v) for k, v in _mapping(params, "parameters").items()}
        tags = {_check_key(k, "tag"): _tag_value(k, v) for k, v in _mapping(tags, "tags").items()}
        if resume is not None:
            return self._resume(resume, name, data, model, params, tags, interval, on_end)
        dnode = self._data.get(data) if data is not None else None
        mnode = self._models.get(model) if model is not None else None
        if name is None:
            name = unique_name(self._s, "run-" + time.strftime("%Y%m%d-%H%M%S"))
        self._s.graph.check_new_name(name)
        self.reap()
        parents: list[tuple[int, str, Mapping[str, Any]]] = []
        if dnode is not None:
            parents.append((dnode.id, "DATA_TRAINING", {"role": "train"}))
        if mnode is not None:
            parents.append((mnode.id, "MODEL_TRAINING", {}))
        env = environment()
        here = running_here()
        run = {"source": "sdk", "git": git_state(), "python": env["python"], "platform": env["platform"],
               "packages": env["packages"], "host": here["host"], "pid": here["pid"], "argv": list(sys.argv)}
        props = {"data": dnode.id if dnode else None, "model": mnode.id if mnode else None, "test": None,
                 "init_from": None, "params": params, "seed": None, "task": mnode.props["task"] if mnode else None,
                 "class_names": [], "libraries": {"python": env["python"], **env["packages"]}, "train_samples": 0,
                 "eval_samples": 0, "adapt": None, "started_by": here, "run": run}
        node = self._s.graph.record(KIND, name, props, parents=parents)
        state = _State(params=params, tags=tags)
        active = ActiveRun(self, node, state, dnode, mnode, interval, on_end)
        active._save()
        return active

    def _resume(self, ref: str | int, name: str | None, data: str | int | None, model: str | int | None,
                params: dict[str, Any], tags: dict[str, str], interval: float,
                on_end: Callable[[], None] | None) -> "ActiveRun":
        node = self._training.get(ref)
        if not isinstance(node.props.get("run"), dict):
            raise InvalidInput(f"training {node.name!r} was not logged with the SDK: only SDK runs can be resumed")
        for what, given, recorded, get in (("name", name, node.name, None), ("data", data, node.props.get("data"), self._data.get),
                                           ("model", model, node.props.get("model"), self._models.get)):
            if given is None:
                continue
            same = given == recorded if get is None else recorded is not None and get(given).id == recorded
            if not same:
                raise InvalidInput(f"resume continues run {node.name!r} as it was started: its {what} is not {given!r}")
        ev = self._training.status(node)
        if ev.get("status") == "running":
            raise Conflict(f"run {node.name!r} is running (process {ev.get('pid')} on {ev.get('host')}): "
                           "end it there before resuming it")
        dnode = self._data.get(node.props["data"]) if node.props.get("data") is not None else None
        mnode = self._models.get(node.props["model"]) if node.props.get("model") is not None else None
        run = ev.get("run") or {}
        state = _State(params={**(ev.get("params") or node.props.get("params") or {})}, tags=dict(run.get("tags") or {}),
                       artifacts=list(run.get("artifacts") or []), model=run.get("logged_model"),
                       checkpoint=ev.get("checkpoint"), props=dict(ev.get("props") or {}))
        state.set_params(params)
        state.tags.update(tags)
        system_step = 0
        for row in self._s.graph.read_logs(node.id):  # the last value and step of each metric so far
            if row["key"].startswith(SYSTEM_PREFIX):
                system_step = max(system_step, row["step"] + 1)
            else:
                state.last[row["key"]] = row["value"]
                state.next_step[row["key"]] = max(state.next_step.get(row["key"], 0), row["step"] + 1)
        active = ActiveRun(self, node, state, dnode, mnode, interval, on_end, system_step)
        active._save()
        return active


class _State:
    """What a run has logged so far, besides its metric rows (written as one event on each change)."""

    def __init__(self, params: dict[str, Any], tags: dict[str, str], artifacts: list[dict[str, Any]] | None = None,
                 model: dict[str, Any] | None = None, checkpoint: str | None = None,
                 props: dict[str, Any] | None = None) -> None:
        self.params, self.tags, self.artifacts = params, tags, artifacts or []
        self.model, self.checkpoint, self.props = model, checkpoint, props or {}
        self.last: dict[str, float] = {}
        self.next_step: dict[str, int] = {}
        self.non_finite: dict[str, int] = {}

    def set_params(self, params: Mapping[str, Any]) -> None:
        """All of ``params``, or none when one would change a parameter's value."""
        for key, value in params.items():
            if key in self.params and self.params[key] != value:
                raise InvalidInput(f"parameter {key!r} is already {_short(self.params[key])}: a run's parameters do not "
                                   "change (log a metric, or start another run)")
        self.params.update(params)

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"params": dict(self.params),
                               "run": {"tags": dict(self.tags), "artifacts": list(self.artifacts), "logged_model": self.model,
                                       "non_finite": dict(self.non_finite)}}
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        if self.props:
            out["props"] = dict(self.props)
        return out


class ActiveRun:
    """A run in progress: log to it, then ``end()`` it, or use it as a context manager (``with``), which ends
    it as finished, or as failed with the exception's summary when the block raises.  Log to one run from one
    thread (as a training loop does); the system metrics and the metric writer have threads of their own."""

    def __init__(self, runs: Runs, node: Node, state: _State, dnode: Node | None, mnode: Node | None,
                 system_interval_s: float, on_end: Callable[[], None] | None, system_step: int = 0) -> None:
        self._runs, self._s, self._node, self._state = runs, runs._s, node, state
        self._dnode, self._mnode, self._on_end = dnode, mnode, on_end
        self._logger = _Logger(self._s, node.id, None, background=True)
        self._ended = False
        self._sampler: SystemSampler | None = None
        if system_interval_s > 0:
            sys_logger = _Logger(self._s, node.id, None)
            self._sampler = SystemSampler(sys_logger, sys_logger.flush, system_interval_s)
            self._sampler.start(system_step)
        _LIVE.add(self)

    @property
    def id(self) -> int:
        return self._node.id

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def info(self) -> Run:
        """The run as recorded now, with the last value of each metric logged so far."""
        self.flush()
        return dataclasses.replace(self._runs.get(self._node.id), metrics=frozen_map(self._state.last))

    def _check_open(self) -> None:
        if self._ended:
            raise InvalidInput(f"run {self._node.name!r} has ended: start another run (or resume this one) to log more")

    def _save(self, status: str = "running", extra: Mapping[str, Any] | None = None) -> None:
        payload = {**self._state.payload(), **(extra or {})}
        if status == "running":
            payload.update(running_here())
        self._s.graph.append_event(self._node.id, status, payload)

    # --- metrics (buffered: a few microseconds a call) -----------------------------------------
    def log_metric(self, key: str, value: float, step: int | None = None, epoch: int = 0) -> None:
        """One value of a metric at ``step`` (default: one past this metric's last step).  A value that is
        not finite (NaN, ±inf) cannot be stored: it is counted (``run.non_finite``), warned about once per
        metric, and skipped."""
        self.log_metrics({key: value}, step, epoch)

    def log_metrics(self, values: Mapping[str, float], step: int | None = None, epoch: int = 0) -> None:
        """Several metrics at one step (default: one past each metric's own last step)."""
        self._check_open()
        st = self._state
        if step is not None or epoch != 0:
            try:
                step = None if step is None else operator.index(step)
                epoch = operator.index(epoch)
            except TypeError:
                raise InvalidInput(f"step and epoch are integers, not {_short(step)} / {_short(epoch)}") from None
            if not all(abs(n) <= _STEP_LIMIT for n in (step or 0, epoch)):
                raise InvalidInput(f"step and epoch are integers between -2**62 and 2**62, not {_short(step)} / {_short(epoch)}")
        checked: dict[str, float] = {}  # every value checked before any is taken: a refusal changes nothing
        for key, value in _mapping(values, "metrics").items():
            if key not in st.next_step:
                _check_key(key, "metric")
                if key.startswith(SYSTEM_PREFIX):
                    raise InvalidInput(f"metric {key!r}: names starting with {SYSTEM_PREFIX!r} are the system metrics'")
            try:
                checked[key] = float(value)
            except (TypeError, ValueError, OverflowError):
                raise InvalidInput(f"metric {key!r}: {_short(value)} is not a number (a finite float)") from None
        ok: dict[str, float] = {}
        for key, v in checked.items():
            if not math.isfinite(v):
                if key not in st.non_finite:
                    warnings.warn(f"metric {key!r} of run {self._node.name!r} is {v}: not stored (VeML stores finite "
                                  "values only); further ones are counted in the run's non_finite", stacklevel=3)
                st.non_finite[key] = st.non_finite.get(key, 0) + 1
                st.next_step.setdefault(key, 0)
                continue
            ok[key] = v
        if not ok:
            return
        if step is None:  # each metric's own next step: the values are logged one row at a time
            for key, v in ok.items():
                s = st.next_step.get(key, 0)
                st.next_step[key] = s + 1
                st.last[key] = v
                self._logger(s, epoch, {key: v})
            return
        for key, v in ok.items():
            st.next_step[key] = max(step + 1, st.next_step.get(key, 0))
            st.last[key] = v
        self._logger(step, epoch, ok)

    def flush(self) -> None:
        """Write the buffered metric rows now (they are written every half second, and when the run ends)."""
        self._logger.flush()

    # --- parameters, tags, files ----------------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Hyper-parameters (strings, numbers, bools, None or lists of them); a parameter never changes value."""
        self._check_open()
        checked = {_check_key(k, "parameter"): _param_value(k, v) for k, v in _mapping(params, "parameters").items()}
        self._state.set_params(checked)
        self._save()

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Key/value labels of the run (the value as a string; a later value replaces an earlier one)."""
        self._check_open()
        self._state.tags.update({_check_key(k, "tag"): _tag_value(k, v) for k, v in _mapping(tags, "tags").items()})
        self._save()

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> Artifact:
        """Store a file with the run (content-addressed in the repository's artifact store), as ``name``
        (default: the file's name).  A missing file, a directory or a file over ``VEML_MAX_FILE_MB`` is refused."""
        self._check_open()
        raw = read_regular(Path(path), str(path), ReadPolicy.from_options())
        name = name if name is not None else Path(path).name
        _check_artifact_name(name)
        digest = self._s.artifacts.put_bytes(raw)
        art = {"name": name, "sha256": digest, "size_bytes": len(raw)}
        self._state.artifacts = [a for a in self._state.artifacts if a["name"] != name] + [art]
        self._save()
        return Artifact(name, digest, len(raw))

    def log_model(self, model: Any, name: str | None = None) -> LoggedModel:
        """The run's model: a ``torch.nn.Module`` (its state dict), a scikit-learn estimator (as skops), a
        path to a model file (ONNX, TorchScript, a torch state dict, a skops file, or any other file), or a
        folder (a Hugging Face ``save_pretrained`` directory: stored as one tar, ``framework`` ``"directory"``,
        read back with :meth:`Runs.download_model`).  When VeML can run it, it is the run's checkpoint
        (``deploy`` takes the run); a later call replaces it."""
        self._check_open()
        raw, fname, framework = _serialise(model)
        name = name or fname
        _check_artifact_name(name)
        sha = hashlib.sha256(raw).hexdigest()
        read: ReadModel | None = None
        reason = None
        try:
            if framework == FOLDER:
                raise InvalidInput(f"{name}: a folder of files, kept as one tar (VeML runs single-file models: "
                                   "ONNX, TorchScript, a torch state dict, skops)")
            read = self._runs._registry.read(raw, name, self._dnode, None, self._mnode, framework)
        except (InvalidInput, MissingExtra, ImportError) as exc:
            reason = str(exc)
            if self._mnode is not None:
                warnings.warn(f"run {self._node.name!r}: the model logged is not model version {self._mnode.name!r} "
                              f"as VeML reads it, so it is kept as a file that VeML cannot deploy: {reason}", stacklevel=2)
        st = self._state
        if read is None:
            self._s.artifacts.put_bytes(raw)
            st.model = {"name": name, "framework": framework, "sha256": sha, "size_bytes": len(raw), "runnable": False,
                        "model": None, "reason": reason}
            st.checkpoint, st.props = None, {}
        else:
            st.checkpoint = self._s.artifacts.put_bytes(read.checkpoint)
            mnode = read.model
            if mnode is None:  # what VeML recognised it as: a model version of its own, like veml model register's
                mnode = self._runs._models.add(unique_name(self._s, f"{self._node.name}-model"), read.spec.to_json(),
                                               description=f"logged by run {self._node.name!r}")
            if mnode.id != self._node.props.get("model") and mnode.id != st.props.get("model"):
                self._s.graph.add_edge(mnode.id, self._node.id, "MODEL_TRAINING", {"logged": True})
            st.props = {"model": mnode.id, "task": read.spec.task, "class_names": list(read.class_names)}
            st.model = {"name": name, "framework": read.framework, "sha256": sha, "size_bytes": len(raw), "runnable": True,
                        "model": mnode.id, "reason": None}
        self._save()
        return LoggedModel(**st.model)

    # --- ending ---------------------------------------------------------------------------------
    def end(self, status: str = "finished", error: str | None = None) -> Run:
        """Flush what is buffered and record the run's end: ``finished``, or ``failed`` (with ``error``)."""
        if status not in ("finished", "failed"):
            raise InvalidInput(f"a run ends finished or failed, not {status!r}")
        self._check_open()
        self._ended = True
        _LIVE.discard(self)
        try:
            if self._sampler is not None:
                self._sampler.stop()
            self._logger.close()
            metrics = {k: v for k, v in self._state.last.items()}
            extra: dict[str, Any] = {"metrics": metrics, "finished_at": time.time()}
            if status == "failed":
                extra["error"] = (error or "failed")[:500]
            self._save(status, extra)
            return self._runs.get(self._node.id)
        finally:
            if self._on_end is not None:
                self._on_end()

    def __enter__(self) -> "ActiveRun":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._ended:
            return
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            self.end("finished")
        else:
            text = str(exc).strip()
            reason = text if isinstance(exc, VemlError) else f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            self.end("failed", reason)


def _check_artifact_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 255 or "/" in name or "\\" in name \
            or name in (".", "..") or any(ord(c) < 32 for c in name):
        raise InvalidInput(f"artifact name {name!r}: a file name (no path separators, at most 255 characters)")


def _serialise(model: Any) -> tuple[bytes, str, str | None]:
    """(bytes, file name, framework or None to detect) of what ``log_model`` was given."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir():
            return pack_folder(path, ReadPolicy.from_options())[0], path.resolve().name, FOLDER
        return read_regular(path, str(model), ReadPolicy.from_options()), path.name, None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        if isinstance(model, torch.jit.ScriptModule):
            buf = io.BytesIO()
            torch.jit.save(model, buf)
            return buf.getvalue(), f"{type(model).__name__}.pt", "torchscript"
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        return buf.getvalue(), f"{type(model).__name__}.pt", "torch"
    base = sys.modules.get("sklearn.base")
    if base is not None and isinstance(model, base.BaseEstimator):
        import skops.io as sio

        return sio.dumps(model), f"{type(model).__name__}.skops", "sklearn"
    raise InvalidInput(f"log_model takes a torch.nn.Module, a scikit-learn estimator or the path of a model file, "
                       f"not {type(model).__name__}")


def _run_entity(d: Mapping[str, Any]) -> Run:
    run = d["run"]
    git = run.get("git")
    model = run.get("logged_model")
    return Run(
        id=d["id"], name=d["name"], status=d.get("status") or "unknown", data=d.get("data"), model=d.get("model"),
        params=frozen_map(d.get("params")), tags=frozen_map(run.get("tags")), metrics=frozen_map(d.get("metrics")),
        artifacts=tuple(Artifact(**a) for a in run.get("artifacts") or ()),
        logged_model=LoggedModel(**model) if model else None, git=GitState(**git) if git else None,
        python=run.get("python", ""), packages=frozen_map(run.get("packages")), host=run.get("host", ""),
        pid=int(run.get("pid", -1)), argv=tuple(run.get("argv") or ()),
        started_at=parse_iso(d["created_at"]), ended_at=d.get("finished_at"), error=d.get("error"))




# Runs still open when the interpreter exits (no ``with``, no ``end()``): their buffered metrics are written and
# they end finished, or failed when the program is exiting on an uncaught exception (as MLflow's runs do).
_LIVE: set[ActiveRun] = set()


def _end_open_runs() -> None:
    crashed = getattr(sys, "last_value", None) is not None
    for active in list(_LIVE):
        try:
            active.end("failed" if crashed else "finished",
                       f"{type(sys.last_value).__name__}: {sys.last_value}" if crashed else None)
        except Exception:  # noqa: BLE001 - at exit: the run is then judged by its dead process (failed)
            pass


atexit.register(_end_open_runs)

__all__ = ["Runs", "ActiveRun", "EndedRun", "SYSTEM_METRICS_S"]
