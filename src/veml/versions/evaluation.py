"""Metrics and error analysis of predictions against the labels a data version holds."""

from __future__ import annotations

from typing import Any

import numpy as np

from veml import metrics
from veml.adapters.base import Predictions, TaskData

WORST_K = 10


def has_labels(data: TaskData) -> bool:
    if data.task in ("classification", "tabular-classification"):
        return data.labels is not None and bool((np.asarray(data.labels) >= 0).any())
    if data.task == "detection":
        return data.boxes is not None and any(len(b[0]) for b in data.boxes)
    if data.task == "forecasting":
        return data.series is not None
    return data.targets is not None and not np.isnan(data.targets).all()


def evaluate(data: TaskData, preds: Predictions) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(metrics, worst samples with their data ids); (None, []) when the data has no labels."""
    if not has_labels(data):
        return None, []
    ids = data.data_ids
    if data.task in ("classification", "tabular-classification"):
        known = np.asarray(data.labels) >= 0
        y, scores = np.asarray(data.labels)[known], preds.scores[known]
        report = metrics.classification_report(y.tolist(), scores.argmax(-1).tolist(), list(data.class_names), scores=scores)
        worst = metrics.worst_classification(y.tolist(), scores, WORST_K)
        for w in worst:
            w["data_id"] = int(ids[known][w["index"]])
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], **report}, worst
    if data.task == "detection":
        report = metrics.detection_report(list(data.boxes), list(preds.detections), list(data.class_names))
        worst = metrics.worst_detection(list(data.boxes), list(preds.detections), WORST_K)
        for w in worst:
            w["data_id"] = int(ids[w["index"]])
        return report, worst
    if data.task == "forecasting":
        report = metrics.forecasting_report(preds.forecast_targets, preds.forecasts, data.missing_value)
        worst = metrics.worst_forecasting(preds.forecast_targets, preds.forecasts, WORST_K, data.missing_value)
        for w in worst:
            w["data_id"] = int(ids[preds.forecast_sample[w["index"]]])
        return report, worst
    report = metrics.regression_report(data.targets, preds.values)
    err = np.abs(np.asarray(preds.values) - np.asarray(data.targets))
    order = np.argsort(-err, kind="stable")[:WORST_K]
    return report, [{"index": int(i), "data_id": int(ids[i]), "abs_error": float(err[i])} for i in order]


def key_metric(task: str, report: dict[str, Any] | None) -> tuple[str, float | None]:
    """The one number a lifecycle list shows."""
    name = {"classification": "accuracy", "tabular-classification": "accuracy", "detection": "map50",
            "forecasting": "mae", "tabular-regression": "rmse"}[task]
    return name, None if report is None else report.get(name)


LOWER_IS_BETTER = frozenset({"mae", "rmse", "mape", "loss"})


def better(name: str, a: float, b: float) -> bool:
    """Whether metric value ``a`` is strictly better than ``b``."""
    return a < b if name in LOWER_IS_BETTER else a > b
