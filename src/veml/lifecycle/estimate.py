"""Label-free performance estimation: the deployed model's metric on a batch nobody has labelled yet.

Classifiers: average thresholded confidence (ATC, Garg et al. 2022).  On labelled data the model never
trained on (the training's validation split, or its test version) a threshold ``t`` on a per-sample
confidence score is chosen so that the share of samples scoring above ``t`` equals the model's accuracy
there; on a new batch the estimated accuracy is the share of its samples scoring above ``t``.  The
score is the negative entropy of the softmax (ATC-NE, the variant Garg et al. found best) or the top
softmax probability.  The interval is a percentile bootstrap that resamples both the held-out split
(refitting ``t``) and the batch, so it covers the uncertainty of the threshold as well as the batch's.

Detectors and forecasters have no estimator yet: their estimate is ``None`` with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veml.adapters.base import Predictions
from veml.entities import Node
from veml.errors import InvalidInput
from veml.versions.inference import InferenceVersions
from veml.versions.training import TrainingVersions

CLASSIFIERS = ("classification", "tabular-classification")
SCORES = ("entropy", "maxconf")
BOOTSTRAP = 200


def confidence(scores: np.ndarray, score: str = "entropy") -> np.ndarray:
    """One confidence per sample from softmax rows: negative entropy, or the top probability."""
    p = np.clip(np.asarray(scores, np.float64), 1e-12, 1.0)
    p = p / p.sum(1, keepdims=True)
    if score == "maxconf":
        return p.max(1)
    if score == "entropy":
        return (p * np.log(p)).sum(1)
    raise InvalidInput(f"unknown confidence score {score!r}: use one of {', '.join(SCORES)}")


def atc_threshold(conf: np.ndarray, correct: np.ndarray) -> float:
    """The ``t`` with mean(conf > t) = mean(correct) on labelled held-out data."""
    conf = np.sort(np.asarray(conf, np.float64))
    n, wrong = len(conf), int(round(len(conf) * (1.0 - float(np.mean(correct)))))
    if wrong <= 0:
        return float(conf[0] - 1.0)  # every sample counts as right
    if wrong >= n:
        return float(conf[-1])
    return float(conf[wrong - 1] + conf[wrong]) / 2.0


@dataclass(frozen=True)
class FittedATC:
    conf: np.ndarray  # held-out confidences
    correct: np.ndarray  # held-out correctness (0/1)
    threshold: float
    score: str
    seed: int = 0

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, score: str = "entropy", seed: int = 0) -> "FittedATC":
        scores, labels = np.asarray(scores), np.asarray(labels)
        if len(labels) < 10:
            raise InvalidInput(f"accuracy estimation needs at least 10 labelled held-out samples, got {len(labels)}")
        conf = confidence(scores, score)
        correct = (scores.argmax(1) == labels).astype(np.float64)
        return cls(conf, correct, atc_threshold(conf, correct), score, seed)

    @property
    def reference_accuracy(self) -> float:
        return float(self.correct.mean())

    def estimate(self, scores: np.ndarray, level: float = 0.95, bootstrap: int = BOOTSTRAP) -> dict[str, Any]:
        """``{"metric": "accuracy", "value", "low", "high", ...}`` for a batch of softmax rows."""
        conf = confidence(scores, self.score)
        if not len(conf):
            raise InvalidInput("accuracy estimation needs at least one sample")
        value = float(np.mean(conf > self.threshold))
        rng = np.random.default_rng(self.seed)
        m, n = len(self.conf), len(conf)
        boots = np.empty(bootstrap)
        for b in range(bootstrap):
            ref = rng.integers(0, m, m)
            t = atc_threshold(self.conf[ref], self.correct[ref])
            boots[b] = np.mean(conf[rng.integers(0, n, n)] > t)
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
        return {"metric": "accuracy", "value": value, "low": float(min(lo, value)), "high": float(max(hi, value)),
                "level": level, "method": f"atc-{self.score}", "reference_value": self.reference_accuracy,
                "threshold": self.threshold}


class Estimates:
    """Estimates for deployments, fitted once per (inference, score) on the training's held-out split."""

    def __init__(self, training: TrainingVersions, inference: InferenceVersions) -> None:
        self._training, self._inference = training, inference
        self._fitted: dict[tuple[int, str], FittedATC | str] = {}

    def fitted(self, inode: Node, score: str = "entropy") -> FittedATC | str:
        """The fitted estimator of a deployment, or why it has none."""
        key = (inode.id, score)
        if key not in self._fitted:
            self._fitted[key] = self._fit(inode, score)
        return self._fitted[key]

    def _fit(self, inode: Node, score: str) -> FittedATC | str:
        tnode = self._training.get(inode.props["training"])
        task = tnode.props.get("task")
        if task not in CLASSIFIERS:
            return f"no label-free estimator for {task} models yet (only classifiers: ATC)"
        data, ids, split = self._training.held_out(tnode)
        if split == "training":
            return (f"training {tnode.name!r} recorded no held-out split: accuracy cannot be calibrated on samples "
                    "the model trained on")
        _, _, td, preds = self._inference.run(inode.id, data.id, data_ids=ids)
        if preds.scores is None or td.labels is None or not (td.labels >= 0).any():
            return f"the {split} split of training {tnode.name!r} has no class labels to calibrate on"
        keep = td.labels >= 0
        try:
            return FittedATC.fit(np.asarray(preds.scores)[keep], td.labels[keep], score)
        except InvalidInput as exc:
            return str(exc)

    def estimate(self, inference: str | int, test: str | int, preds: Predictions | None = None,
                 score: str = "entropy") -> tuple[dict[str, Any] | None, str | None]:
        """(estimate, None) or (None, reason) for the deployment's metric on ``test`` (its outputs ``preds`` if known)."""
        inode = self._inference.get(inference)
        fitted = self.fitted(inode, score)
        if isinstance(fitted, str):
            return None, fitted
        if preds is None:
            _, _, _, preds = self._inference.run(inode.id, test)
        if preds.scores is None:
            return None, "the model gives no class scores"
        return fitted.estimate(np.asarray(preds.scores)), None
