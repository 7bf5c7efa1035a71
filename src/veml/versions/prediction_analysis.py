"""Per-sample analysis of a classification prediction version: outcomes and precision-recall curves.

What the web UI's prediction page reads (``repo.inference.outcomes_page`` / ``repo.inference.pr_curves``):
every sample's true class, predicted class, confidence (the predicted class's probability) and loss
(``-log p(true class)``, the per-sample term of the log loss the metrics report), filterable by true
and predicted class (a confusion-matrix cell) and sortable by loss or confidence; and, per class,
the one-vs-rest precision-recall curve of its probability with its average precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from veml.errors import InvalidInput

TASKS = ("classification", "tabular-classification")
SORTS = ("loss", "confidence", "data_id")
EPS = 1e-12  # p(true) floor: the loss of a zero probability is large, not infinite
CURVE_POINTS = 101  # at most this many points per curve (evenly spaced over the ranked samples)


@dataclass(frozen=True)
class Outcomes:
    """Every predicted sample of a classification prediction version, in data_id order."""

    classes: tuple[str, ...]
    data_ids: np.ndarray  # int64
    true: np.ndarray  # class index, -1 where the sample has no (known) label
    pred: np.ndarray  # class index
    scores: np.ndarray  # n x classes probabilities

    @property
    def confidence(self) -> np.ndarray:
        return self.scores[np.arange(len(self.pred)), self.pred]

    @property
    def loss(self) -> np.ndarray:
        """-log p(true); NaN where the truth is unknown."""
        known = self.true >= 0
        p = np.where(known, self.scores[np.arange(len(self.true)), np.maximum(self.true, 0)], np.nan)
        return -np.log(np.maximum(p, EPS))


@dataclass(frozen=True)
class OutcomePage:
    items: tuple[dict[str, Any], ...]  # data_id, true, pred, correct, confidence, loss
    total: int  # samples matching the class filters
    classes: tuple[str, ...]


def outcomes(task: str, classes: Sequence[str], predictions: pa.Table, truth: dict[int, str | None]) -> Outcomes:
    """The outcomes from a prediction version's rows (one per sample, ``values`` the probabilities) and
    each sample's true class name."""
    if task not in TASKS:
        raise InvalidInput(f"per-sample outcomes are computed for classification predictions, not {task}")
    classes = tuple(str(c) for c in classes)
    index = {c: i for i, c in enumerate(classes)}
    ids = predictions["data_id"].to_numpy().astype(np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    values = predictions["values"].to_pylist()
    scores = np.array([values[i] for i in order], dtype=np.float64).reshape(len(ids), len(classes))
    true = np.array([index.get(truth.get(int(d)) or "", -1) for d in ids], dtype=np.int64)
    return Outcomes(classes, ids, true, scores.argmax(-1) if len(ids) else np.zeros(0, np.int64), scores)


def _class(o: Outcomes, name: str | None, what: str) -> int | None:
    if name is None:
        return None
    if name not in o.classes:
        raise InvalidInput(f"unknown {what} class {name!r}; classes: {', '.join(o.classes)}")
    return o.classes.index(name)


def ranked(rows: np.ndarray, key: np.ndarray, data_ids: np.ndarray, descending: bool) -> np.ndarray:
    """``rows`` ordered by ``key`` (indexed like ``data_ids``): NaN keys (unknown) last, ties by data_id."""
    k = key[rows]
    missing = np.isnan(k)
    return rows[np.lexsort((data_ids[rows], np.where(missing, 0.0, -k if descending else k), missing))]


def page(o: Outcomes, true: str | None = None, pred: str | None = None, sort: str = "loss", descending: bool = True,
         limit: int = 50, offset: int = 0) -> OutcomePage:
    """One page of outcomes: only ``true``/``pred`` (class names) when given, sorted by ``sort`` (ties by data_id)."""
    if sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    keep = np.ones(len(o.data_ids), bool)
    t, p = _class(o, true, "true"), _class(o, pred, "predicted")
    if t is not None:
        keep &= o.true == t
    if p is not None:
        keep &= o.pred == p
    rows = np.flatnonzero(keep)
    key = {"loss": o.loss, "confidence": o.confidence, "data_id": o.data_ids.astype(np.float64)}[sort]
    rows = ranked(rows, key, o.data_ids, descending)
    loss, conf = o.loss, o.confidence
    items = []
    for i in rows[offset:offset + limit]:
        known = o.true[i] >= 0
        items.append({"data_id": int(o.data_ids[i]), "true": o.classes[o.true[i]] if known else None,
                      "pred": o.classes[o.pred[i]], "correct": bool(o.true[i] == o.pred[i]) if known else None,
                      "confidence": float(conf[i]), "loss": float(loss[i]) if known else None})
    return OutcomePage(tuple(items), int(len(rows)), o.classes)


def pr_curves(o: Outcomes, points: int = CURVE_POINTS) -> list[dict[str, Any]]:
    """Per class, one-vs-rest over the labelled samples: precision and recall at each rank of its
    probability (thinned to ``points``), and the average precision (the step-wise area)."""
    known = o.true >= 0
    out = []
    for c, name in enumerate(o.classes):
        scores, positive = o.scores[known, c], o.true[known] == c
        n_pos = int(positive.sum())
        order = np.argsort(-scores, kind="stable")
        hits = positive[order]
        tp = np.cumsum(hits)
        precision = tp / np.arange(1, len(hits) + 1)
        recall = tp / n_pos if n_pos else np.zeros(len(hits))
        ap = float(precision[hits].sum() / n_pos) if n_pos else None
        pick = np.unique(np.linspace(0, len(hits) - 1, min(points, len(hits))).round().astype(int)) if len(hits) else []
        out.append({"class": name, "positives": n_pos, "ap": ap, "recall": [float(recall[i]) for i in pick],
                    "precision": [float(precision[i]) for i in pick], "thresholds": [float(scores[order][i]) for i in pick]})
    return out
