"""The adapter protocol and the plain data that crosses it.

Adapters sit below the version modules: they get numpy arrays and a model description, never a
repository, so a back-end can be tested (and replaced) without storage.  Everything they return
is bytes plus JSON-able dictionaries, which is what the version modules persist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

TASKS = ("classification", "detection", "forecasting", "tabular-classification", "tabular-regression")

#: log(step, epoch, {"loss": 0.3, ...}) — called as training goes; the caller persists it
LogFn = Callable[[int, int, Mapping[str, float]], None]


@dataclass(frozen=True)
class ModelSpec:
    """What a model version says: which adapter builds what, with which parameters."""

    adapter: str
    task: str
    architecture: str
    backbone: str | None = None
    neck: str | None = None
    head: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "task": self.task, "architecture": self.architecture, "backbone": self.backbone,
                "neck": self.neck, "head": self.head, "parameters": dict(self.parameters)}


def check_spec(spec: ModelSpec, adapter: str, architectures: Mapping[str, Sequence[str]],
               parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The checks every adapter makes of a model config: task, architecture, and parameter names
    (an unknown key is named, never ignored).  Returns the parameters with defaults filled in."""
    from veml.errors import InvalidInput

    if spec.task not in architectures:
        raise InvalidInput(f"the {adapter} adapter has no task {spec.task!r}: use one of {', '.join(architectures)}")
    if spec.architecture not in architectures[spec.task]:
        raise InvalidInput(f"unknown {spec.task} architecture {spec.architecture!r}: "
                           f"use one of {', '.join(architectures[spec.task])}")
    unknown = sorted(set(spec.parameters) - set(parameters))
    if unknown:
        raise InvalidInput(f"parameter {unknown[0]!r} is not accepted by {adapter}/{spec.architecture} "
                           f"(accepted: {', '.join(parameters)})")
    for key, value in spec.parameters.items():
        check_type(f"parameter {key!r}", value, parameters[key])
    return {**parameters, **spec.parameters}


def expected_type(default: Any) -> str:
    """The type a parameter takes, named after its default (None: a string or nothing)."""
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "number"
    if default is None:
        return "string or null"
    return {str: "string", list: "list", dict: "mapping"}.get(type(default), type(default).__name__)


def check_type(what: str, value: Any, default: Any, given: Any = None) -> Any:
    """``value`` if it has the type of ``default`` (an integer is a number too, a boolean is neither);
    otherwise one :class:`~veml.errors.InvalidInput` naming ``what``, the expected type and the value
    (``given``, when the value was converted from it, e.g. a ``--set`` string)."""
    from veml.errors import InvalidInput

    want = expected_type(default)
    ok = {
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "string or null": lambda v: v is None or isinstance(v, str),
        "string": lambda v: isinstance(v, str),
        "list": lambda v: isinstance(v, list),
        "mapping": lambda v: isinstance(v, dict),
    }.get(want, lambda v: isinstance(v, type(default)))
    if not ok(value):
        shown = repr(value if given is None else given)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        article = "a finite" if want == "number" else "an" if want[0] in "aeiou" else "a"
        of = "" if given is not None else f" ({type(value).__name__})"
        raise InvalidInput(f"{what} must be {article} {want}, not {shown}{of}")
    return value


@dataclass(frozen=True)
class TaskData:
    """A data version made concrete for one task.

    images: (N, H, W, 3) uint8; labels: (N,) class index; boxes: per image (n, 4) xyxy float32 and
    (n,) class index; series: (N, steps, sensors) float32 windows; table: (N, F) float64 features;
    targets: (N,) float regression targets.
    """

    task: str
    class_names: tuple[str, ...] = ()
    data_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
    series: np.ndarray | None = None
    adjacency: np.ndarray | None = None
    missing_value: float = 0.0
    table: np.ndarray | None = None
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data_ids)


@dataclass(frozen=True)
class Predictions:
    """What a model says about TaskData: scores (N, C) for classification, per-image (boxes, scores,
    labels) for detection, (n_windows, horizon, sensors) forecasts with their targets for forecasting."""

    task: str
    scores: np.ndarray | None = None
    detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    forecasts: np.ndarray | None = None
    forecast_targets: np.ndarray | None = None
    forecast_sample: np.ndarray | None = None  # which sample (window) each forecast came from
    values: np.ndarray | None = None  # regression


@dataclass(frozen=True)
class TrainOutcome:
    checkpoint: bytes
    metrics: Mapping[str, Any]
    profile: Mapping[str, Any]
    #: files the run wrote besides its checkpoint (name -> bytes: intermediate checkpoints, the framework's
    #: logs), kept with the training version as its ``artifacts``
    files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportOutcome:
    artifact: bytes
    format: str
    quantize: str
    max_abs_diff: float
    tolerance: float
    agreement: float  # fraction of argmax/top predictions the exported model shares with the original
    latency_ms: float  # per sample, batch of 1, median
    original_latency_ms: float
    size_bytes: int
    input_names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()
    output_names: tuple[str, ...] = ()


class Adapter(Protocol):
    name: str
    #: whether ``train`` can start from another training's weights (``init``); refitting back-ends cannot
    warm_start: bool
    #: the label-free adaptations ``adapt`` offers (``veml rebuild --method adapt --adapt NAME``); empty: none
    ADAPT_METHODS: tuple[str, ...]

    def validate(self, spec: ModelSpec) -> ModelSpec:
        """Check architecture and parameters (naming any key it does not accept); return the spec with defaults filled."""

    def train_defaults(self, spec: ModelSpec) -> dict[str, Any]:
        """Hyper-parameters ``--set`` may change, with their defaults."""

    def train(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None,
              log: LogFn) -> TrainOutcome:
        """Train from ``init`` (a checkpoint of a compatible model) or from scratch; evaluation is the caller's."""

    def predict(self, spec: ModelSpec, checkpoint: bytes, data: TaskData) -> Predictions: ...

    def checkpoint_meta(self, checkpoint: bytes) -> dict[str, Any]:
        """What the checkpoint records about its training data (classes, sensors, scaling)."""

    def export(self, spec: ModelSpec, checkpoint: bytes, fmt: str, quantize: str, sample: TaskData,
               device: str = "cpu") -> ExportOutcome: ...

    def predict_exported(self, spec: ModelSpec, artifact: bytes, fmt: str, checkpoint_meta: Mapping[str, Any],
                         data: TaskData, device: str = "cpu") -> Predictions: ...


# --- capabilities an adapter declares (by subclassing), checked with isinstance ------------------------------
@runtime_checkable
class ChecksInit(Protocol):
    """Refuses an incompatible ``--init-from`` checkpoint before a training version is written."""

    def check_init(self, spec: ModelSpec, data: TaskData, init: bytes) -> None: ...


@runtime_checkable
class TrainsDataParallel(Protocol):
    """Runs one worker of a data-parallel training (``--set distributed=ray``)."""

    def train_worker(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn,
                     wrap_model: Callable[[Any], Any], wrap_loader: Callable[[Any], Any],
                     epoch_end: Callable[[int, Mapping[str, float]], None], rank: int) -> TrainOutcome: ...


@runtime_checkable
class ProvidesModel(Protocol):
    """Hands out the loaded model of a checkpoint, whose features embed data (core sets, model-based scores)."""

    def model_and_meta(self, spec: ModelSpec, checkpoint: bytes) -> tuple[Any, dict[str, Any]]: ...
