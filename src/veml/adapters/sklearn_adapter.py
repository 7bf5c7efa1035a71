"""The scikit-learn adapter: tabular classification and regression.

A fitted estimator is stored with :mod:`skops.io` (a zip of JSON and ``.npy`` arrays, loaded without
pickle), and loaded only if every object in it is one of :data:`TRUSTED_TYPES`, exactly the
scikit-learn, numpy and builtin types VeML's own estimators are made of; anything else is refused
before anything is constructed.  Deployments are ``--format skops``.

Pickle can run code while it loads, so it is never loaded by default.  Checkpoints written by older
VeML versions and ``--format pickle`` deployments are pickles: they load only when the user trusts
the repository's artifacts, with ``VEML_TRUST_PICKLE=1`` in the environment (the CLI's global
``--trust-pickle`` sets it for one command).  ``veml --trust-pickle deploy T --format skops`` turns a
pickled checkpoint into a skops deployment.  Either way a model is loaded only from the very bytes
whose sha256 matched the digest its version recorded (``ArtifactStore.get_verified``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import time
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from veml.adapters.base import ExportOutcome, LogFn, ModelSpec, Predictions, TaskData, TrainOutcome, check_spec
from veml.errors import InvalidInput, StorageError

TRUST_PICKLE_ENV = "VEML_TRUST_PICKLE"
FORMATS = ("skops", "pickle")

#: Every type a VeML scikit-learn checkpoint or deployment holds (the pipelines built by
#: :func:`_estimator`, their fitted state, and the ``meta`` dict); a skops file naming any other
#: type is refused.
TRUSTED_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "builtins.NoneType",
    "numpy.ndarray", "numpy.float64", "numpy.int64", "numpy.random.mtrand.RandomState",
    "sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression", "sklearn.linear_model._ridge.Ridge",
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier", "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree", "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
})
#: skops node kinds those types are stored as (no functions, methods, ``__reduce__`` calls or partials).
_LOADERS = frozenset({"DictNode", "ListNode", "TupleNode", "JsonNode", "TypeNode", "NdArrayNode", "ObjectNode",
                      "LossNode", "RandomStateNode", "TreeNode"})

_ARCHS = {
    "tabular-classification": ("random_forest", "logistic_regression", "gradient_boosting"),
    "tabular-regression": ("random_forest", "ridge", "gradient_boosting"),
}
_PARAMS = {"random_forest": {"n_estimators": 100, "max_depth": 0}, "logistic_regression": {"C": 1.0, "max_iter": 500},
           "gradient_boosting": {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1}, "ridge": {"alpha": 1.0}}


def pickle_trusted() -> bool:
    """Whether the user opted in to loading pickles (``VEML_TRUST_PICKLE=1``)."""
    return os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")


@contextmanager
def trusting_pickle(on: bool = True) -> Iterator[None]:
    """Within the block pickles are trusted as with ``VEML_TRUST_PICKLE=1`` (the CLI's ``--trust-pickle``)."""
    if not on:
        yield
        return
    before = os.environ.get(TRUST_PICKLE_ENV)
    os.environ[TRUST_PICKLE_ENV] = "1"  # the environment, so executor worker processes inherit it
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_PICKLE_ENV, None)
        else:
            os.environ[TRUST_PICKLE_ENV] = before


def _pickle_refused(what: str) -> StorageError:
    return StorageError(f"{what} is a pickle, which can run code when loaded: pass --trust-pickle or set "
                        f"{TRUST_PICKLE_ENV}=1 only if you trust this repository's artifacts")


def _estimator(spec: ModelSpec, seed: int):
    from sklearn import ensemble, linear_model
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = dict(spec.parameters)
    a, cls = spec.architecture, spec.task == "tabular-classification"
    if a == "random_forest":
        depth = int(p["max_depth"]) or None
        est = (ensemble.RandomForestClassifier if cls else ensemble.RandomForestRegressor)(
            n_estimators=int(p["n_estimators"]), max_depth=depth, random_state=seed)
    elif a == "gradient_boosting":
        est = (ensemble.GradientBoostingClassifier if cls else ensemble.GradientBoostingRegressor)(
            n_estimators=int(p["n_estimators"]), max_depth=int(p["max_depth"]), learning_rate=float(p["learning_rate"]), random_state=seed)
    elif a == "logistic_regression":
        est = linear_model.LogisticRegression(C=float(p["C"]), max_iter=int(p["max_iter"]))
    else:
        est = linear_model.Ridge(alpha=float(p["alpha"]))
    return make_pipeline(StandardScaler(), est)


#: the scikit-learn estimator classes VeML's architectures are (what a registered model is recognised as)
_ARCH_OF = {"RandomForestClassifier": "random_forest", "RandomForestRegressor": "random_forest",
            "LogisticRegression": "logistic_regression", "GradientBoostingClassifier": "gradient_boosting",
            "GradientBoostingRegressor": "gradient_boosting", "Ridge": "ridge"}


def describe(obj: Any) -> tuple[str, str, dict[str, Any]]:
    """(task, architecture, parameters) of a fitted estimator or pipeline ending in one (``model register``)."""
    from sklearn.base import is_classifier
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    final = obj.steps[-1][1] if hasattr(obj, "steps") and obj.steps else obj
    arch = _ARCH_OF.get(type(final).__name__)
    if arch is None:
        raise InvalidInput(f"a {type(final).__name__}: VeML runs scikit-learn's {', '.join(sorted(_ARCH_OF))}")
    try:
        check_is_fitted(obj)
    except NotFittedError:
        raise InvalidInput(f"the {type(final).__name__} in the file was never fitted") from None
    given = final.get_params()
    params = {k: (0 if given.get(k) is None else given.get(k, default)) for k, default in _PARAMS[arch].items()}
    return ("tabular-classification" if is_classifier(obj) else "tabular-regression"), arch, params


def _clean(x: np.ndarray) -> np.ndarray:
    """Estimators reject NaN: missing features become 0 after standardisation (the column mean)."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        col_mean = np.nanmean(np.where(np.isnan(x).all(0), 0.0, x), axis=0)
        x = np.where(np.isnan(x), np.nan_to_num(col_mean), x)
    return x


def _dump(est: Any, meta: Mapping[str, Any]) -> bytes:
    import skops.io as sio

    return sio.dumps({"estimator": est, "meta": dict(meta)}, compression=zipfile.ZIP_DEFLATED)


def _untrusted(schema: Any) -> set[str]:
    """Types (and node kinds) in a skops schema that are not VeML's own: one walk over every node."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                kind = f"{node.get('__module__')}.{node.get('__class__')}"
                if kind not in TRUSTED_TYPES:
                    found.add(kind)
                if node["__loader__"] not in _LOADERS:
                    found.add(f"{node['__loader__']} {kind}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _load_skops(blob: bytes) -> Any:
    import skops.io as sio

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            schema = json.loads(zf.read("schema.json"))
        extra = set(sio.get_untrusted_types(data=blob)) - TRUSTED_TYPES  # skops' own audit, for good measure
    except Exception as exc:  # noqa: BLE001 - a damaged zip or schema: whatever zipfile/json/skops raise
        raise StorageError(f"cannot read skops model: {type(exc).__name__}: {exc}") from None
    untrusted = _untrusted(schema) | extra
    if untrusted:
        raise StorageError(f"refusing to load a skops model holding types VeML does not trust: {', '.join(sorted(untrusted))}")
    try:
        return sio.loads(blob, trusted=sorted(TRUSTED_TYPES))
    except Exception as exc:  # noqa: BLE001 - skops raises many types for malformed content
        raise StorageError(f"cannot load skops model: {type(exc).__name__}: {exc}") from None


_CACHE: OrderedDict[bytes, tuple[Any, dict[str, Any]]] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4  # loaded models by the sha256 of their bytes: a skops load takes ~0.1 s, a server predicts often


class SklearnAdapter:
    name = "sklearn"
    warm_start = False
    ADAPT_METHODS: tuple[str, ...] = ()

    def validate(self, spec: ModelSpec) -> ModelSpec:
        params = check_spec(spec, "sklearn", _ARCHS, _PARAMS.get(spec.architecture, {}))
        return ModelSpec(spec.adapter, spec.task, spec.architecture, spec.backbone, spec.neck, spec.head, params)

    def train_defaults(self, spec: ModelSpec) -> dict[str, Any]:
        return {"seed": 0, "val_fraction": 0.2}

    def train(self, spec: ModelSpec, data: TaskData, params: Mapping[str, Any], init: bytes | None, log: LogFn) -> TrainOutcome:
        if data.table is None:
            raise InvalidInput("the sklearn adapter trains on table data versions")
        if init is not None:
            raise InvalidInput("--init-from is not supported by the sklearn adapter (estimators are refitted)")
        y = data.labels if spec.task == "tabular-classification" else data.targets
        est = _estimator(spec, int(params["seed"]))
        t0 = time.perf_counter()
        est.fit(_clean(data.table), y)
        fit_s = time.perf_counter() - t0
        score = float(est.score(_clean(data.table), y))
        log(1, 0, {"train_score": score})
        blob = _dump(est, {"class_names": list(data.class_names), "features": int(data.table.shape[1])})
        return TrainOutcome(blob, {"train_score": score}, {"forward_backward_s": fit_s, "samples": len(data),
                                                            "samples_per_s": len(data) / fit_s if fit_s else 0.0, "data_s": 0.0})

    def _load(self, blob: bytes) -> tuple[Any, dict[str, Any]]:
        """The estimator and meta of a checkpoint or deployment: skops, or a pickle if the user trusts pickles."""
        is_skops = blob[:4] == b"PK\x03\x04"
        if not is_skops and not pickle_trusted():
            raise _pickle_refused("this scikit-learn model (from an older VeML or a --format pickle deployment)")
        key = hashlib.sha256(blob).digest()
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
        if is_skops:
            obj = _load_skops(blob)
        else:
            try:
                obj = pickle.loads(blob)  # noqa: S301 - the user opted in (VEML_TRUST_PICKLE); bytes digest-checked
            except Exception as exc:  # noqa: BLE001 - unpickling raises anything
                raise StorageError(f"cannot load checkpoint: {type(exc).__name__}") from None
        if not isinstance(obj, dict) or "estimator" not in obj or not isinstance(obj.get("meta"), dict):
            raise StorageError("cannot load checkpoint: not a VeML scikit-learn model")
        loaded = (obj["estimator"], obj["meta"])
        with _CACHE_LOCK:
            _CACHE[key] = loaded
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return loaded

    def checkpoint_meta(self, checkpoint: bytes) -> dict[str, Any]:
        return dict(self._load(checkpoint)[1])

    def predict(self, spec: ModelSpec, checkpoint: bytes, data: TaskData) -> Predictions:
        est, meta = self._load(checkpoint)
        if data.table is None or data.table.shape[1] != meta["features"]:
            raise InvalidInput(f"this model takes {meta['features']} features; the data has "
                               f"{None if data.table is None else data.table.shape[1]}")
        x = _clean(data.table)
        if spec.task == "tabular-classification":
            return Predictions(spec.task, scores=est.predict_proba(x))
        return Predictions(spec.task, values=est.predict(x))

    def export(self, spec: ModelSpec, checkpoint: bytes, fmt: str, quantize: str, sample: TaskData, device: str = "cpu") -> ExportOutcome:
        if fmt not in FORMATS or quantize != "none":
            raise InvalidInput("sklearn models deploy as --format skops (or --format pickle with --trust-pickle), "
                               "without --quantize")
        if fmt == "pickle" and not pickle_trusted():
            raise _pickle_refused("--format pickle writes a model that")
        est, meta = self._load(checkpoint)
        artifact = pickle.dumps({"estimator": est, "meta": meta}) if fmt == "pickle" else _dump(est, meta)
        t0 = time.perf_counter()
        original = self.predict(spec, checkpoint, sample)
        original_ms = (time.perf_counter() - t0) * 1000 / max(len(sample), 1)
        t0 = time.perf_counter()
        exported = self.predict_exported(spec, artifact, fmt, meta, sample, device)
        ms = (time.perf_counter() - t0) * 1000 / max(len(sample), 1)
        a, b = (original.scores, exported.scores) if original.scores is not None else (original.values, exported.values)
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        same = (a.argmax(1) == b.argmax(1)) if a.ndim == 2 else np.isclose(a, b)
        agreement = float(same.mean()) if a.size else 1.0
        return ExportOutcome(artifact, fmt, "none", diff, 0.0, agreement, ms, original_ms, len(artifact))

    def predict_exported(self, spec: ModelSpec, artifact: bytes, fmt: str, checkpoint_meta: Mapping[str, Any],
                         data: TaskData, device: str = "cpu") -> Predictions:
        return self.predict(spec, artifact, data)


__all__ = ["SklearnAdapter", "describe", "TRUSTED_TYPES", "TRUST_PICKLE_ENV", "pickle_trusted", "trusting_pickle"]
