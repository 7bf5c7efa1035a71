"""The scikit-learn adapter: tabular classification and regression.

A fitted estimator is stored with pickle, the format scikit-learn itself documents.  Pickle can run
code, so a checkpoint is only ever unpickled after its sha256 matched the digest its training
version recorded (the version modules check it first): the same trust boundary as a local MLflow
artifact store.  There is no ONNX converter among the pinned packages, so deployments are
``--format pickle``.
"""

from __future__ import annotations

import pickle
import time
from typing import Any, Mapping

import numpy as np

from veml.adapters.base import ExportOutcome, LogFn, ModelSpec, Predictions, TaskData, TrainOutcome, check_spec
from veml.errors import InvalidInput, StorageError

_ARCHS = {
    "tabular-classification": ("random_forest", "logistic_regression", "gradient_boosting"),
    "tabular-regression": ("random_forest", "ridge", "gradient_boosting"),
}
_PARAMS = {"random_forest": {"n_estimators": 100, "max_depth": 0}, "logistic_regression": {"C": 1.0, "max_iter": 500},
           "gradient_boosting": {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1}, "ridge": {"alpha": 1.0}}


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


def _clean(x: np.ndarray) -> np.ndarray:
    """Estimators reject NaN: missing features become 0 after standardisation (the column mean)."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        col_mean = np.nanmean(np.where(np.isnan(x).all(0), 0.0, x), axis=0)
        x = np.where(np.isnan(x), np.nan_to_num(col_mean), x)
    return x


class SklearnAdapter:
    name = "sklearn"

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
        blob = pickle.dumps({"estimator": est, "meta": {"class_names": list(data.class_names), "features": data.table.shape[1]}})
        return TrainOutcome(blob, {"train_score": score}, {"forward_backward_s": fit_s, "samples": len(data),
                                                            "samples_per_s": len(data) / fit_s if fit_s else 0.0, "data_s": 0.0})

    def _load(self, checkpoint: bytes) -> tuple[Any, dict[str, Any]]:
        try:
            blob = pickle.loads(checkpoint)  # digest-checked by the caller before we get here
        except Exception as exc:
            raise StorageError(f"cannot load checkpoint: {type(exc).__name__}") from None
        return blob["estimator"], blob["meta"]

    def checkpoint_meta(self, checkpoint: bytes) -> dict[str, Any]:
        return self._load(checkpoint)[1]

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
        if fmt != "pickle" or quantize != "none":
            raise InvalidInput("sklearn models deploy as --format pickle (no ONNX converter is installed), without --quantize")
        t0 = time.perf_counter()
        self.predict(spec, checkpoint, sample)
        ms = (time.perf_counter() - t0) * 1000 / max(len(sample), 1)
        return ExportOutcome(checkpoint, "pickle", "none", 0.0, 0.0, 1.0, ms, ms, len(checkpoint))

    def predict_exported(self, spec: ModelSpec, artifact: bytes, fmt: str, checkpoint_meta: Mapping[str, Any],
                         data: TaskData, device: str = "cpu") -> Predictions:
        return self.predict(spec, artifact, data)


__all__ = ["SklearnAdapter"]
