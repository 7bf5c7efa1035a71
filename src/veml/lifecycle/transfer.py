"""Lifecycle transfer: a new training dataset inherits the lifecycle of the most similar stored one.

What is reused from the source lifecycle: its model version (architecture and parameters), its
training recipe (hyper-parameters), its trained weights as the starting point, and its deployment
settings (format, quantisation).

Transfer fine-tunes with a recipe of its own (``finetune_recipe.FINETUNE``), not the source's from-scratch one: a
third of the source's epochs (rounded up) at a tenth of its learning rate with a linear warm-up, and —
for a classifier whose head gains classes the source never saw — one extra epoch that trains only the
head first, so the fresh head rows do not tear up the pretrained features (benchmarks/lifecycle_eval
compared these settings on real handwriting: the lower learning rate is what turns losses into gains).  Then it compares the fine-tuned model with
the unchanged source model on a validation split of the target's labelled data (never the test
version) and keeps the better one, saying which (``"kept"``): a transfer never ends worse, on data the
choice could see, than what it started from.  When for a classifier neither beats guessing on that split (a source
from another domain, such as inverted digits, that fine-tuning cannot rescue), it also trains the model from its
own starting weights with the source's recipe and keeps that when it does beat guessing (``"kept": "scratch"``;
``versions/keep_better.py``).  ``--set`` overrides any of it (``scratch_fallback=false`` turns the last step off).

Before training, the source's task must fit the target (``TrainingVersions.fit_reason``): a detector's
lifecycle is not transferred to class labels.  A classifier's head is matched to the target's classes
by name: rows of classes both share are reused, new classes start fresh (reported as ``"head"``).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from veml.errors import InvalidInput, NotFound
from veml.lifecycle.finetune_recipe import finetune_params
from veml.lifecycle.similarity import Similarity
from veml.progress import ProgressLike
from veml.versions import evaluation
from veml.versions.context import Stores, unique_name
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions
from veml.versions.lifecycles import Lifecycles
from veml.versions.training import TrainingVersions, parse_sets

#: keep-better's choice (``selection["kept"]``) as transfer reports it
KEPT = {"init": "source", "trained": "fine-tuned", "scratch": "scratch"}


class Transfer:
    def __init__(self, stores: Stores, data: DataVersions, training: TrainingVersions, inference: InferenceVersions,
                 lifecycles: Lifecycles, similarity: Similarity) -> None:
        self._s, self._data, self._training, self._inference = stores, data, training, inference
        self._lifecycles, self._similarity = lifecycles, similarity

    def source_lifecycle(self, ref: str | int) -> dict[str, Any]:
        """The lifecycle ``--from`` names: a data version's latest complete one, or the one a training/inference belongs to."""
        node = self._lifecycles.member(ref)
        key = {"DataVersion": "data", "TrainingVersion": "training", "InferenceVersion": "inference"}[node.kind]
        matches = [lc for lc in self._lifecycles.list() if lc[key] == node.id]
        if not matches:
            raise NotFound(f"{node.name!r} has no complete lifecycle (a finished training that was deployed) to transfer from")
        return max(matches, key=lambda lc: lc["inference"])

    def transfer(self, target: str | int, source: str | int | None = None, sets: Mapping[str, Any] | list[str] | None = None,
                 test: str | int | None = None, name: str | None = None, method: str | None = None,
                 progress: ProgressLike | None = None) -> dict[str, Any]:
        tnode = self._data.get(target)
        if int(tnode.props.get("samples", 0)) == 0:
            raise InvalidInput(f"data version {tnode.name!r} is empty: there is nothing to train on")
        report_id, distance, chosen_by = None, None, self._similarity.method_for(tnode, method, with_lifecycle=True)
        if source is None and _asks_keep_better(sets):  # refused before the ranking records its report
            refusal = self._training.keep_better_refusal(tnode, {"keep_better": True, "val_fraction": 1.0})
            if refusal is not None:
                raise InvalidInput(refusal)
        if source is None:
            ranking = self._similarity.rank(tnode.id, method=method, with_lifecycle=True, progress=progress,
                                            lifecycle_filter=lambda lc: self._training.fit_reason(lc["model"], tnode))
            best = ranking["ranking"][0] if ranking["ranking"] else None
            if best is None:
                raise InvalidInput(f"no stored lifecycle is comparable with {tnode.name!r}")
            lc, report_id, distance = self.source_lifecycle(best["id"]), ranking["report"], best["distance"]
            chosen_by = ranking["method"]
        else:
            lc = self.source_lifecycle(source)
            reason = self._training.fit_reason(lc["model"], tnode)
            if reason is not None:
                raise InvalidInput(f"cannot transfer the lifecycle of {self._data.get(lc['data']).name!r} to "
                                   f"{tnode.name!r}: {reason}")
            if lc["data"] == tnode.id:
                raise InvalidInput(f"{tnode.name!r} is the source lifecycle's own data: train on new data instead")
        src_train = self._training.describe(self._training.get(lc["training"]))
        src_inf = self._inference.get(lc["inference"])
        recipe = dict(src_train["params"])
        head = self._head(src_train, lc["model"], tnode)
        params = self._params(recipe, lc["model"], sets, new_head_rows=bool(head and head["new"]))
        refusal = self._training.keep_better_refusal(tnode, params)
        if refusal is not None:
            raise InvalidInput(refusal)
        if source is not None:  # the recipe is checked first: a refused one leaves no core sets behind
            try:
                distance = self._similarity.distance(tnode, lc["data"], method=method, progress=progress, lifecycle=lc)
            except InvalidInput:
                distance, chosen_by = None, None  # incomparable embeddings do not forbid an explicit --from
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
        selection = run.get("selection") or {}
        if pred is not None:
            metric_name, value = pred.props["key_metric"]["name"], pred.props["key_metric"]["value"]
        return {
            "target": tnode.id, "source": src_data.id, "source_name": src_data.name, "distance": distance,
            "method": chosen_by, "report": report_id, "model": lc["model"], "training": run["id"], "inference": dep.id,
            "prediction": pred.id if pred is not None else None, "params": params,
            "metric": {"name": metric_name, "value": value}, "train_s": (run.get("profile") or {}).get("train_s"),
            "seconds": round(seconds, 3), "kept": KEPT.get(selection.get("kept"), "fine-tuned"),
            "selection": selection or None, "head": head,
            "source_lifecycle": {"training": lc["training"], "inference": lc["inference"], "metric": lc["metric"],
                                 "train_s": (src_train.get("profile") or {}).get("train_s"),
                                 "epochs": recipe.get("epochs"),
                                 "on_test": None if src_pred is None else src_pred.props["key_metric"]["value"],
                                 "on_test_error": src_error},
        }

    def _params(self, recipe: Mapping[str, Any], model: int, sets: Mapping[str, Any] | list[str] | None,
                new_head_rows: bool = False) -> dict[str, Any]:
        """The source's recipe, transfer's fine-tuning settings over it, the caller's ``--set`` over both."""
        return finetune_params({**self._training.defaults(model), **recipe}, recipe, sets, new_head_rows)

    def _head(self, src_train: Mapping[str, Any], model: int, target: Any) -> dict[str, Any] | None:
        """How a classifier's head meets the target's classes: reused by name, new, or left behind."""
        if src_train.get("task") != "classification":
            return None
        source = list(src_train.get("class_names") or [])
        target_names = list(self._training.class_names(model, target.id))
        common = [c for c in target_names if c in source]
        return {"reused": len(common), "new": [c for c in target_names if c not in source],
                "dropped": [c for c in source if c not in target_names]}


def _asks_keep_better(sets: Mapping[str, Any] | list[str] | None) -> bool:
    """Whether ``sets`` leaves transfer's keep-better on (only that key is read here)."""
    pairs = sets.items() if isinstance(sets, Mapping) else [item.split("=", 1) for item in sets or [] if "=" in item]
    given = {k.strip(): v.strip() if isinstance(v, str) else v for k, v in pairs if k.strip() == "keep_better"}
    return bool(parse_sets(given, {"keep_better": True})["keep_better"])
