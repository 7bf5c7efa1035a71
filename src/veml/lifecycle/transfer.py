"""Lifecycle transfer: a new training dataset inherits the lifecycle of the most similar stored one.

What is reused from the source lifecycle: its model version (architecture and parameters), its
training recipe (hyper-parameters), its trained weights as the starting point, and its deployment
settings (format, quantisation).  Because training starts from weights that already fit a similar
domain, the recipe's epoch count is cut to a third (rounded up) unless ``--set epochs=N`` says
otherwise — that is where the saved cost comes from, and benchmarks/bench_transfer.py checks the
shorter run still reaches the accuracy of training from scratch.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

from veml.errors import InvalidInput, NotFound
from veml.lifecycle.similarity import Similarity
from veml.versions import evaluation
from veml.versions.context import Stores, unique_name
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions
from veml.versions.lifecycles import Lifecycles
from veml.versions.training import TrainingVersions, parse_sets

Progress = Callable[[int], None]


class Transfer:
    def __init__(self, stores: Stores, data: DataVersions, training: TrainingVersions, inference: InferenceVersions,
                 lifecycles: Lifecycles, similarity: Similarity) -> None:
        self._s, self._data, self._training, self._inference = stores, data, training, inference
        self._lifecycles, self._similarity = lifecycles, similarity

    def source_lifecycle(self, ref: str | int) -> dict[str, Any]:
        """The lifecycle ``--from`` names: a data version's latest complete one, or the one a training/inference belongs to."""
        node = self._s.graph.resolve(ref, kinds=["DataVersion", "TrainingVersion", "InferenceVersion"])
        key = {"DataVersion": "data", "TrainingVersion": "training", "InferenceVersion": "inference"}[node.kind]
        matches = [lc for lc in self._lifecycles.list() if lc[key] == node.id]
        if not matches:
            raise NotFound(f"{node.name!r} has no complete lifecycle (a finished training that was deployed) to transfer from")
        return max(matches, key=lambda lc: lc["inference"])

    def transfer(self, target: str | int, source: str | int | None = None, sets: Mapping[str, Any] | list[str] | None = None,
                 test: str | int | None = None, name: str | None = None, method: str | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
        tnode = self._data.get(target)
        if int(tnode.props.get("samples", 0)) == 0:
            raise InvalidInput(f"data version {tnode.name!r} is empty: there is nothing to train on")
        report_id, distance = None, None
        if source is None:
            ranking = self._similarity.rank(tnode.id, method=method, with_lifecycle=True, progress=progress)
            best = ranking["ranking"][0] if ranking["ranking"] else None
            if best is None:
                raise InvalidInput(f"no stored lifecycle is comparable with {tnode.name!r}")
            lc, report_id, distance = self.source_lifecycle(best["id"]), ranking["report"], best["distance"]
        else:
            lc = self.source_lifecycle(source)
            if lc["data"] == tnode.id:
                raise InvalidInput(f"{tnode.name!r} is the source lifecycle's own data: train on new data instead")
            try:
                distance = self._similarity.distance(tnode, lc["data"], method=method, progress=progress)
            except InvalidInput:
                distance = None  # incomparable embeddings do not forbid an explicit --from
        src_train = self._training.describe(self._training.get(lc["training"]))
        src_inf = self._inference.get(lc["inference"])
        recipe = dict(src_train["params"])
        given = parse_sets(sets, recipe) if sets else {}
        params = {**recipe, **given}
        if not sets or "epochs" not in (sets if isinstance(sets, Mapping) else [s.split("=", 1)[0].strip() for s in sets]):
            params["epochs"] = max(1, math.ceil(int(recipe.get("epochs", 1)) / 3))
        src_data = self._data.get(lc["data"])
        link = {"distance": distance, "report": report_id, "source_data": src_data.id}
        name = name or unique_name(self._s, f"transfer-{tnode.name}-from-{src_data.name}")
        t0 = time.perf_counter()
        run = self._training.train(tnode.id, lc["model"], sets=params, init_from=lc["training"], test=test, name=name,
                                   extra_parents=[(src_data.id, "TRANSFER_FROM", link)])
        dep = self._inference.deploy(run["id"], src_inf.props.get("format", "onnx"), src_inf.props.get("quantize", "none"),
                                     name=unique_name(self._s, f"{name}-{src_inf.props.get('format', 'onnx')}"),
                                     extra_parents=[(src_inf.id, "TRANSFER_FROM", link)])
        pred, src_pred, src_error = None, None, None
        if test is not None:  # the new and the source inference on the same data: what the transfer bought
            test_name = self._data.get(test).name
            pred = self._inference.predict(dep.id, test, name=unique_name(self._s, f"{name}-on-{test_name}"))
            try:
                src_pred = self._inference.predict(src_inf.id, test, name=unique_name(self._s, f"{src_inf.name}-on-{test_name}"))
            except InvalidInput as exc:  # e.g. a forecaster of another sensor count cannot run on the target at all
                src_error = str(exc)
        seconds = time.perf_counter() - t0
        metric_name, value = evaluation.key_metric(run["task"], run.get("metrics"))
        if pred is not None:
            metric_name, value = pred.props["key_metric"]["name"], pred.props["key_metric"]["value"]
        return {
            "target": tnode.id, "source": src_data.id, "source_name": src_data.name, "distance": distance,
            "report": report_id, "model": lc["model"], "training": run["id"], "inference": dep.id,
            "prediction": pred.id if pred is not None else None, "params": params,
            "metric": {"name": metric_name, "value": value}, "train_s": (run.get("profile") or {}).get("train_s"),
            "seconds": round(seconds, 3),
            "source_lifecycle": {"training": lc["training"], "inference": lc["inference"], "metric": lc["metric"],
                                 "train_s": (src_train.get("profile") or {}).get("train_s"),
                                 "epochs": recipe.get("epochs"),
                                 "on_test": None if src_pred is None else src_pred.props["key_metric"]["value"],
                                 "on_test_error": src_error},
        }
