"""Label-free performance estimation: the deployed model's metric on a batch nobody has labelled yet.

Image classifiers: agreement with a reference that makes different mistakes.  The reference is the nearest
neighbour, among the training split's pixel thumbnails (the drift test's covariate view) and their copies rotated by
±15 degrees, of each sample; a sample counts as right when the deployed model predicts that neighbour's label.  Scaled by accuracy / agreement on the
held-out split (exact there), the batch's agreement estimates its accuracy.  This sees what confidence cannot: a
model that is confidently and consistently wrong (rotated digits: accuracy 0.22 with ATC estimating 0.75) mostly
disagrees with the neighbour (BENCHMARKS.md, issue 15).  It rests on the reference seldom disagreeing with a correct
model, so it is used only when the held-out split shows that (accuracy / agreement <= ``AGREEMENT_RATIO``), and
otherwise ATC is.

All classifiers: average thresholded confidence (ATC, Garg et al. 2022).  On labelled data the model never
trained on (the training's validation split, or its test version) a threshold ``t`` on a per-sample
confidence score is chosen so that the share of samples scoring above ``t`` equals the model's accuracy
there; on a new batch the estimated accuracy is the share of its samples scoring above ``t``.  The
score is the negative entropy of the softmax (ATC-NE, the variant Garg et al. found best) or the top
softmax probability.  The interval is a percentile bootstrap that resamples both the held-out split
(refitting ``t``) and the batch, so it covers the uncertainty of the threshold as well as the batch's.

Forecasters: direct loss estimation of the masked MAE (:mod:`veml.lifecycle.estimate_forecast`).  Detectors have no
estimator yet: their estimate is ``None`` with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veml.adapters.base import Predictions
from veml.entities import Node
from veml.errors import InvalidInput
from veml.lifecycle.estimate_forecast import FittedLoss
from veml.versions.coresets import CoreSets
from veml.versions.inference import InferenceVersions
from veml.versions.training import TrainingVersions

CLASSIFIERS = ("classification", "tabular-classification")
SCORES = ("entropy", "maxconf")
METHODS = ("auto", "agreement", "atc", "dle")
BOOTSTRAP = 200
PIXELS = "pixels"
#: agreement is used when, on the held-out split, accuracy / agreement is at most this (the reference seldom
#: disagrees with a correct model); the digits suite's splits gave 0.99-1.02
AGREEMENT_RATIO = 1.1
#: the most training samples the nearest-neighbour reference keeps (chosen by the seed)
REFERENCE_CAP = 5_000
#: the reference also holds each training thumbnail rotated by these angles (degrees): a neighbour as robust as
#: the usual small-rotation augmentation, so that it stays right where a model that lacks that invariance fails
REFERENCE_ROTATIONS = (-15.0, 15.0)


def confidence(scores: np.ndarray, score: str = "entropy") -> np.ndarray:
    """One confidence per sample from softmax rows: negative entropy, or the top probability."""
    p = np.clip(np.asarray(scores, np.float64), 1e-12, 1.0)
    p = p / p.sum(1, keepdims=True)
    if score == "maxconf":
        return p.max(1)
    if score == "entropy":
        return (p * np.log(p)).sum(1)
    raise InvalidInput(f"unknown confidence score {score!r}: use one of {', '.join(SCORES)}")


def accuracy_low(correct: np.ndarray, level: float = 0.95) -> float:
    """The lower bound of the (two-sided, Clopper-Pearson) ``level`` interval of held-out accuracy."""
    from scipy import stats

    k, n = int(np.sum(correct)), len(correct)
    return 0.0 if k == 0 else float(stats.beta.ppf((1 - level) / 2, k, n - k + 1))


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
                "reference_low": accuracy_low(self.correct, level),
                "threshold": self.threshold}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def with_rotations(thumbnails: np.ndarray, labels: np.ndarray,
                   angles: tuple[float, ...] = REFERENCE_ROTATIONS) -> tuple[np.ndarray, np.ndarray]:
    """The flattened square RGB thumbnails, plus a copy of each rotated by every angle (corners filled with 0)."""
    from scipy import ndimage

    x = np.asarray(thumbnails, np.float32)
    side = int(round(np.sqrt(x.shape[1] / 3))) if x.ndim == 2 else 0
    if not angles or len(x) == 0 or side * side * 3 != x.shape[1]:
        return x, np.asarray(labels)
    images = x.reshape(len(x), side, side, 3)
    copies = [ndimage.rotate(images, a, axes=(1, 2), reshape=False, order=1, mode="constant").reshape(len(x), -1)
              for a in angles]
    return np.concatenate([x, *copies]), np.tile(np.asarray(labels), 1 + len(angles))


def nearest_labels(reference: np.ndarray, labels: np.ndarray, x: np.ndarray, chunk: int = 512) -> np.ndarray:
    """The label of each row's nearest reference row by cosine similarity (``reference`` rows of unit length)."""
    x = _unit(x)
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), chunk):
        out[i:i + chunk] = labels[np.argmax(x[i:i + chunk] @ reference.T, axis=1)]
    return out


@dataclass(frozen=True)
class FittedAgreement:
    reference: np.ndarray  # unit-length training thumbnails
    labels: np.ndarray  # their class indices
    agree: np.ndarray  # held-out: 1 where the deployed model predicts the nearest neighbour's label
    correct: np.ndarray  # held-out correctness (0/1)
    seed: int = 0

    @classmethod
    def fit(cls, reference: np.ndarray, reference_labels: np.ndarray, scores: np.ndarray, labels: np.ndarray,
            features: np.ndarray, seed: int = 0) -> "FittedAgreement":
        scores, labels = np.asarray(scores), np.asarray(labels)
        if len(labels) < 10:
            raise InvalidInput(f"accuracy estimation needs at least 10 labelled held-out samples, got {len(labels)}")
        if len(reference_labels) == 0:
            raise InvalidInput("agreement needs labelled training samples as its reference")
        ref = _unit(reference)
        agree = (scores.argmax(1) == nearest_labels(ref, np.asarray(reference_labels, np.int64), features)).astype(np.float64)
        return cls(ref, np.asarray(reference_labels, np.int64), agree, (scores.argmax(1) == labels).astype(np.float64), seed)

    @property
    def reference_accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def ratio(self) -> float:
        """Held-out accuracy / agreement (inf when nothing agrees)."""
        agree = float(self.agree.mean())
        return float(self.correct.mean()) / agree if agree > 0 else float("inf")

    def estimate(self, scores: np.ndarray, features: np.ndarray, level: float = 0.95,
                 bootstrap: int = BOOTSTRAP) -> dict[str, Any]:
        scores = np.asarray(scores)
        if not len(scores):
            raise InvalidInput("accuracy estimation needs at least one sample")
        if len(features) != len(scores):
            raise InvalidInput(f"{len(scores)} outputs but {len(features)} thumbnails: they must cover the same samples")
        agree = (scores.argmax(1) == nearest_labels(self.reference, self.labels, features)).astype(np.float64)
        value = min(1.0, float(agree.mean()) * self.ratio)
        rng = np.random.default_rng(self.seed)
        m, n = len(self.agree), len(agree)
        boots = np.empty(bootstrap)
        for b in range(bootstrap):
            ref = rng.integers(0, m, m)
            held = float(self.agree[ref].mean())
            ratio = float(self.correct[ref].mean()) / held if held > 0 else self.ratio
            boots[b] = min(1.0, float(agree[rng.integers(0, n, n)].mean()) * ratio)
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
        return {"metric": "accuracy", "value": value, "low": float(min(lo, value)), "high": float(max(hi, value)),
                "level": level, "method": "agreement-1nn-pixels", "reference_value": self.reference_accuracy,
                "reference_low": accuracy_low(self.correct, level),
                "reference_agreement": float(self.agree.mean()), "reference_samples": len(self.labels)}


Fitted = FittedATC | FittedAgreement | FittedLoss


class Estimates:
    """Estimates for deployments, fitted once per (inference, score, method) on the training's held-out split."""

    def __init__(self, training: TrainingVersions, inference: InferenceVersions, coresets: CoreSets | None = None) -> None:
        self._training, self._inference, self._coresets = training, inference, coresets
        self._fitted: dict[tuple[int, str, str], Fitted | str] = {}

    def fitted(self, inode: Node, score: str = "entropy", method: str = "auto") -> Fitted | str:
        """The fitted estimator of a deployment (``auto``: agreement where it applies, else ATC), or why it has none."""
        if method not in METHODS:
            raise InvalidInput(f"unknown estimation method {method!r}: use one of {', '.join(METHODS)}")
        key = (inode.id, score, method)
        if key not in self._fitted:
            self._fitted[key] = self._fit_method(inode, score, method)
        return self._fitted[key]

    def _fit_method(self, inode: Node, score: str, method: str) -> Fitted | str:
        if self._training.get(inode.props["training"]).props.get("task") == "forecasting":
            return self._fit_loss(inode) if method in ("auto", "dle") else f"{method} needs a classifier"
        if method == "dle":
            return "direct loss estimation needs a forecaster"
        atc = self._fitted_atc(inode, score)
        return atc if method == "atc" or isinstance(atc, str) else self._fit_agreement(inode, atc, method)

    def _fitted_atc(self, inode: Node, score: str) -> FittedATC | str:
        key = (inode.id, score, "atc")
        if key not in self._fitted:
            self._fitted[key] = self._fit(inode, score)
        return self._fitted[key]

    def _fit_agreement(self, inode: Node, atc: FittedATC, method: str) -> Fitted | str:
        """Agreement with the training split's nearest neighbour, where the held-out split supports it; else (auto)
        ATC, or (agreement asked for) why not."""
        tnode = self._training.get(inode.props["training"])
        held_data, held_ids, split = self._training.held_out(tnode)  # the validation split, or the test version
        train_data = int(tnode.props["data"])
        if self._coresets is None or tnode.props.get("task") != "classification" or held_data.props.get("modality") != "image":
            return atc if method == "auto" else "agreement needs an image classifier"
        ids, labels = self._inference.class_labels(inode.id, train_data)
        train = labels >= 0
        if split == "validation":
            train &= ~np.isin(ids, held_ids)
        ids, labels = ids[train], labels[train]
        if len(ids) > REFERENCE_CAP:
            keep = np.random.default_rng(atc.seed).choice(len(ids), REFERENCE_CAP, replace=False)
            ids, labels = ids[keep], labels[keep]
        order = np.argsort(ids, kind="stable")  # the thumbnails come in id order
        ids, labels = ids[order], labels[order]
        if len(ids) == 0:
            return atc if method == "auto" else f"training {tnode.name!r} has no labelled samples outside its held-out split"
        got, reference = self._coresets.embeddings(train_data, PIXELS, ids=ids)
        _, _, td, preds = self._inference.run(inode.id, held_data.id, data_ids=held_ids)
        keep = td.labels >= 0
        held = self.thumbnails(held_data, td.data_ids)
        reference, reference_labels = with_rotations(reference, labels[np.isin(ids, got)])
        try:
            fitted = FittedAgreement.fit(reference, reference_labels, np.asarray(preds.scores)[keep],
                                         td.labels[keep], held[keep], atc.seed)
        except InvalidInput as exc:
            return atc if method == "auto" else str(exc)
        if method == "auto" and not fitted.ratio <= AGREEMENT_RATIO:
            return atc
        return fitted

    def _fit_loss(self, inode: Node) -> FittedLoss | str:
        """A forecaster's direct loss estimator, fitted on its held-out split, or why it has none."""
        tnode = self._training.get(inode.props["training"])
        data, ids, split = self._training.held_out(tnode)
        if split == "training":
            return (f"training {tnode.name!r} recorded no held-out split: errors cannot be calibrated on series "
                    "the model trained on")
        _, _, _, preds = self._inference.run(inode.id, data.id, data_ids=ids)
        inputs, missing = self._inference.forecast_inputs(inode.id, data.id, data_ids=ids)
        try:
            return FittedLoss.fit(inputs, np.asarray(preds.forecasts), np.asarray(preds.forecast_targets), missing,
                                  preds.forecast_sample)
        except InvalidInput as exc:
            return str(exc)

    def thumbnails(self, data: str | int | Node, data_ids: np.ndarray) -> np.ndarray:
        """Pixel thumbnails of ``data``'s samples ``data_ids``, in that order."""
        assert self._coresets is not None
        data_ids = np.asarray(data_ids, np.int64)
        got, pixels = self._coresets.embeddings(data, PIXELS, ids=data_ids)
        if len(got) != len(np.unique(data_ids)):
            raise InvalidInput("the deployment's outputs and the data version's pixels cover different samples")
        return pixels[np.searchsorted(got, data_ids)]

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
                 score: str = "entropy", data_ids: np.ndarray | None = None,
                 method: str = "auto") -> tuple[dict[str, Any] | None, str | None]:
        """(estimate, None) or (None, reason) for the deployment's metric on ``test`` (its outputs ``preds`` on the
        samples ``data_ids``, in that order, if known)."""
        inode = self._inference.get(inference)
        fitted = self.fitted(inode, score, method)
        if isinstance(fitted, str):
            return None, fitted
        if preds is None or data_ids is None:
            _, _, td, preds = self._inference.run(inode.id, test)
            data_ids = td.data_ids
        if isinstance(fitted, FittedLoss):
            inputs, _ = self._inference.forecast_inputs(inode.id, test, data_ids=data_ids)
            if preds.forecasts is None or len(inputs) != len(preds.forecasts):
                return None, "the forecasts and the data version's input windows do not match"
            return fitted.estimate(inputs, np.asarray(preds.forecasts), preds.forecast_sample), None
        if preds.scores is None:
            return None, "the model gives no class scores"
        if isinstance(fitted, FittedAgreement):
            return fitted.estimate(np.asarray(preds.scores), self.thumbnails(test, data_ids)), None
        return fitted.estimate(np.asarray(preds.scores)), None
