"""Keep-better: after a fine-tuning, keep whichever model scores best on the run's validation split.

The candidates are the fine-tuned model and the model it started from (:func:`keep_better`), and — for a classifier
whose chosen model shows no sign of beating guessing — a model trained from the model version's own starting weights
with the recipe the starting model was trained with (:func:`scratch_fallback`).  A fine-tuning that starts from a
model trained for another domain (digits drawn inverted, say) can end no better than guessing while a model trained
from scratch on the same labels reaches 0.6 (BENCHMARKS.md, "A from-scratch fallback for transfer").

"Guessing" is always answering the validation split's most frequent class; each comparison with it is a one-sided
exact binomial test at :data:`CHANCE_ALPHA`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import numpy as np

from veml.adapters.base import ModelSpec, TaskData, TrainOutcome
from veml.entities import Node
from veml.errors import InvalidInput
from veml.versions import evaluation

CHANCE_ALPHA = 0.05
CLASSIFICATION = ("classification", "tabular-classification")
#: the keys a from-scratch recipe never takes from the chain's first training (they belong to a fine-tuning)
FINETUNE_ONLY = {"keep_better": False, "scratch_fallback": False, "head_epochs": 0}
SCRATCH_REASON = ("neither the fine-tuned nor the starting model beat guessing on the validation split, and a model "
                  "trained from scratch with the source's recipe did")
#: the same, when the starting model could not be compared (other classes, another input shape)
SCRATCH_REASON_UNCOMPARED = ("the fine-tuned model did not beat guessing on the validation split (the starting model "
                             "could not be compared), and a model trained from scratch with the source's recipe did")


def keep_better(adapter: Any, spec: ModelSpec, outcome: TrainOutcome, init_bytes: bytes, init_node: Node,
                class_names: tuple[str, ...], val_td: TaskData) -> tuple[TrainOutcome, dict[str, Any]]:
    """The trained model or the one it started from, whichever scores better on the validation split.

    The starting model competes only when it speaks the training data's classes in the same order;
    on a tie the trained model is kept."""
    t0 = time.perf_counter()
    trained, _ = evaluation.evaluate(val_td, adapter.predict(spec, outcome.checkpoint, val_td))
    name, trained_v = evaluation.key_metric(spec.task, trained)
    out: dict[str, Any] = {"kept": "trained", "split": "validation", "samples": len(val_td), "metric": name,
                           "trained": trained_v, "init": None, "init_from": init_node.id}
    init_names = init_node.props.get("class_names")
    if init_names is not None and list(init_names) != list(class_names):
        out["reason"] = "the starting model predicts other classes than this data holds"
    elif trained_v is None:
        out["reason"] = "the validation split has no labels"
    else:
        try:
            start, _ = evaluation.evaluate(val_td, adapter.predict(spec, init_bytes, val_td))
        except InvalidInput as exc:  # e.g. a forecaster of another sensor count
            out["reason"] = f"the starting model cannot run on this data: {exc}"
        else:
            out["init"] = evaluation.key_metric(spec.task, start)[1]
            if out["init"] is not None and evaluation.better(name, out["init"], trained_v):
                out["kept"] = "init"
                outcome = dataclasses.replace(outcome, checkpoint=init_bytes)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return outcome, out


def chance_rate(data: TaskData) -> tuple[int, float] | None:
    """(labelled samples, share of the most frequent class among them): what always answering that class scores.
    None for a task that is not a classification, no labels, or a single class."""
    if data.task not in CLASSIFICATION or data.labels is None:
        return None
    y = np.asarray(data.labels)
    y = y[y >= 0]
    if len(y) == 0:
        return None
    p0 = float(np.unique(y, return_counts=True)[1].max()) / len(y)
    return (len(y), p0) if p0 < 1.0 else None


def beats_chance(accuracy: float, chance: tuple[int, float]) -> bool:
    """Whether an accuracy on ``chance[0]`` labelled samples is above the rate ``chance[1]`` (exact binomial)."""
    from scipy.stats import binomtest

    n, p0 = chance
    return bool(binomtest(int(round(accuracy * n)), n, p0, alternative="greater").pvalue < CHANCE_ALPHA)


def scratch_recipe(first: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of the training that began the chain (``first``), with this run's seed and no fine-tuning keys."""
    recipe = {**first, **{k: v for k, v in FINETUNE_ONLY.items() if k in first or k in params}}
    if "seed" in params:
        recipe["seed"] = params["seed"]
    return recipe


def scratch_fallback(adapter: Any, spec: ModelSpec, outcome: TrainOutcome, selection: dict[str, Any],
                     train_td: TaskData, val_td: TaskData, recipe: Mapping[str, Any]) -> tuple[TrainOutcome, dict[str, Any]]:
    """Keep-better's last resort for a classifier (module doc): when the model it chose does not beat guessing on the
    validation split, train one from the model version's own starting weights with ``recipe`` on the same training
    split, and keep it when it beats guessing and the chosen model.  Skipped when the split is too small for even a
    perfect score to beat guessing.  The time of that training counts in the run's ``train_s``."""
    chosen = selection["init"] if selection.get("kept") == "init" else selection.get("trained")
    chance = chance_rate(val_td)
    if chance is None or chosen is None or selection.get("metric") != "accuracy" or not beats_chance(1.0, chance) \
            or beats_chance(chosen, chance):
        return outcome, selection
    scratch = adapter.train(spec, train_td, recipe, None, lambda *_: None)
    report, _ = evaluation.evaluate(val_td, adapter.predict(spec, scratch.checkpoint, val_td))
    value = evaluation.key_metric(spec.task, report)[1]
    spent = float(scratch.profile.get("train_s") or 0.0)
    selection = {**selection, "scratch": value, "scratch_train_s": round(spent, 3)}
    if value is not None and beats_chance(value, chance) and value > chosen:
        selection.update(kept="scratch", reason=SCRATCH_REASON if selection.get("init") is not None
                         else SCRATCH_REASON_UNCOMPARED)
        kept = scratch
    else:
        kept = outcome
    profile = {**kept.profile, "train_s": float(outcome.profile.get("train_s") or 0.0) + spent}
    return dataclasses.replace(kept, profile=profile), selection
