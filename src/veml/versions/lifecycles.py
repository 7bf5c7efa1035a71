"""Lifecycles: data → model → training → inference (→ predictions), read off the graph.

A lifecycle is complete once a finished training has been deployed; its key metric is the best
evidence available: the latest prediction version's metric, else the training's evaluation.
"""

from __future__ import annotations

from typing import Any

from veml.entities import Node
from veml.versions import evaluation
from veml.versions.context import Stores
from veml.versions.training import TrainingVersions


class Lifecycles:
    def __init__(self, stores: Stores, training: TrainingVersions) -> None:
        self._s, self._training = stores, training

    def member(self, ref: str | int) -> Node:
        """A version a lifecycle is made of and can be named by: a data, training or inference version."""
        return self._s.graph.resolve(ref, kinds=["DataVersion", "TrainingVersion", "InferenceVersion"])

    def list(self) -> list[dict[str, Any]]:
        g = self._s.graph
        trainings = {t["id"]: t for t in self._training.list()}
        deployments = g.list(kinds=["InferenceVersion"])
        predictions = g.list(kinds=["PredictionVersion"])
        latest_pred: dict[int, Any] = {}
        for p in predictions:
            latest_pred[p.props["inference"]] = p
        out = []
        for inf in deployments:
            t = trainings.get(inf.props["training"])
            if t is None or t["status"] != "finished":
                continue
            pred = latest_pred.get(inf.id)
            if pred is not None:
                metric = pred.props.get("key_metric", {})
                name, value, source = metric.get("name"), metric.get("value"), "prediction"
            else:
                name, value = evaluation.key_metric(t["task"], t.get("metrics"))
                source = "training"
            out.append({
                "data": t["data"], "model": t["model"], "training": t["id"], "inference": inf.id,
                "prediction": pred.id if pred is not None else None, "task": t["task"],
                "metric": {"name": name, "value": value, "from": source},
                "format": inf.props.get("format"), "quantize": inf.props.get("quantize"),
                "latency_ms": inf.props.get("latency_ms"),
            })
        return out
