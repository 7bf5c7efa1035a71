"""Fine-tuning from a stored model: transfer's recipe (lower learning rate, warm-up, head first, keep the better).

Shared by ``veml transfer``, the rebuilds that start from a checkpoint, and the ``finetune_probe`` model score
(:mod:`veml.lifecycle.model_scores`), which runs the same recipe in memory to rank candidate sources.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from veml.errors import InvalidInput
from veml.versions.training import check_params, parse_sets

# lower learning rate, warm-up, head first, and keep the better of fine-tuned and source (see the module doc); a
# classifier whose kept model does not beat guessing also tries one trained from scratch (versions/keep_better.py)
FINETUNE: dict[str, Any] = {"lr_factor": 0.1, "warmup_steps": 10, "head_epochs": 1, "keep_better": True,
                            "scratch_fallback": True}
MIN_FINETUNE_STEPS = 40  # a few labels still get four warm-ups' worth of steps (see few_label_params)
MIN_KEEP_BETTER_VAL = 30  # keep-better needs this many validation samples to mean anything (few_label_params)


def finetune_params(defaults: Mapping[str, Any], recipe: Mapping[str, Any], sets: Mapping[str, Any] | list[str] | None,
                    new_head_rows: bool = False) -> dict[str, Any]:
    """A fine-tuning's parameters (transfer, and the rebuilds that start from a checkpoint): the source's
    recipe over the adapter's ``defaults``, the fine-tuning settings over both, the caller's ``sets`` last."""
    defaults = {**defaults, **recipe}
    parsed = parse_sets(sets, defaults) if sets else {}
    given = list(sets) if isinstance(sets, Mapping) else [item.split("=", 1)[0].strip() for item in sets or []]
    params = {**defaults, **finetune_recipe(recipe, defaults, new_head_rows), **{key: parsed[key] for key in given}}
    check_params(params)
    if params.get("keep_better") and float(params.get("val_fraction", 0)) <= 0:
        raise InvalidInput("keep_better compares on a validation split of the training data: set val_fraction above 0")
    return params


def few_label_params(params: Mapping[str, Any], samples: int, sets: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """Fine-tuning on a labelling budget (active learning): every label trains, for enough steps to matter.

    - Keep-better is dropped when its validation split would hold fewer than ``MIN_KEEP_BETTER_VAL`` samples: on
      6 of 30 labels its choice between the fine-tuned and the previous model is a coin toss, and it costs a fifth
      of the labels.  (The rebuild still scores both models on its held-back slice and reports both.)
    - At least ``MIN_FINETUNE_STEPS`` optimiser steps: a third of the source's epochs over a few dozen labels is two
      or three steps inside the warm-up, so the labels would barely reach the weights, whichever were chosen.
    Settings the caller gave are kept."""
    given = set(sets) if isinstance(sets, Mapping) else {item.split("=", 1)[0].strip() for item in sets or []}
    out = dict(params)
    val = float(out.get("val_fraction", 0))
    if out.get("keep_better") and not given & {"keep_better", "val_fraction"} and samples * val < MIN_KEEP_BETTER_VAL:
        out["keep_better"] = False
    if "epochs" in given or "batch_size" not in out:
        return out
    train = max(1, math.floor(samples * (1 - val))) if out.get("keep_better") else samples
    per_epoch = math.ceil(train / max(1, int(out["batch_size"])))
    out["epochs"] = max(int(out["epochs"]), math.ceil(MIN_FINETUNE_STEPS / per_epoch))
    return out


def finetune_recipe(recipe: Mapping[str, Any], accepted: Mapping[str, Any], new_head_rows: bool = False) -> dict[str, Any]:
    """Transfer's own fine-tuning settings on top of the source's recipe (only the keys its adapter accepts).

    The head-only epoch is added only when the head has rows no training has seen (``new_head_rows``)."""
    out: dict[str, Any] = {"epochs": max(1, math.ceil(int(recipe.get("epochs", 1)) / 3))}
    for key, value in FINETUNE.items():
        if key == "lr_factor":
            if "lr" in accepted:
                out["lr"] = float(recipe.get("lr", accepted["lr"])) * value
        elif key == "head_epochs":
            if key in accepted:
                out[key] = value if new_head_rows else 0
        elif key in accepted:
            out[key] = value
    out["epochs"] += int(out.get("head_epochs", 0))
    return out
