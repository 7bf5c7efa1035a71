"""Model-based transferability: how well a stored lifecycle's *model* fits a target's labelled samples.

The core-set distances of :mod:`veml.coreset.distance` compare the data.  These scores look at what a
candidate source lifecycle learned, on the target's core set (its k-center samples and their labels):

- ``leep``: the source deployment's softmax over those samples against their labels (Nguyen et al., 2020);
- ``logme``: the evidence of a Bayesian linear model on the source model's penultimate features (You et al., 2021);
- ``hscore``: the regularised H-score of those features (Bao et al., 2019; Ibrahim et al., 2022);
- ``knn_probe``: leave-one-out-style k-NN accuracy of those features on the target's labels.

Higher is better for all four.  ``veml similar`` reports them negated as the ``distance`` (so its ranking
stays ascending) and as ``score`` as they are.  They need the target's labels, and a lifecycle per
candidate (a model to look through): data without one cannot be scored.

- ``as_is``: the source deployment's own key metric on the target's labelled core-set samples, unchanged (accuracy
  for a classifier, the masked MAE negated for a forecaster).  It needs no class labels beyond the task's own
  targets, so it is the one model-based score for forecasters, whose "labels" are the futures in the series.  On the
  issue-14 sensor suite every data distance ranked sources at random; as_is ranked them better, though weakly
  (rho 0.15 pooled over 30 cells, BENCHMARKS.md).
- ``finetune_probe``: what ``veml transfer`` would end with from each candidate, run in memory on the target's
  core-set samples and recorded nowhere -- transfer's own recipe (a third of the epochs at a tenth of the learning
  rate), its seeded validation split and its keep-the-better choice -- scored by its key metric.  A forecaster is
  scored on all those samples: its as-is error mixes a level bias that a few fine-tuning steps remove with dynamics
  they do not, a light fine-tuning of its few shared weights learns little by heart, and one held-out day is too
  noisy to rank by.  A classifier is scored on the held-out split alone, since its head learns a few labels by
  heart.  It costs one short fine-tuning per candidate, and it is the default for ranking forecasters' lifecycles
  (BENCHMARKS.md, issue 14: sensor series).

- ``estimate``: the source deployment's metric on the target's core-set samples as
  :mod:`veml.lifecycle.estimate` estimates it without labels (agreement with the source's own nearest training
  thumbnail for an image classifier, else ATC; direct loss estimation for a forecaster), each fitted on the
  source's own held-out split.  It reads no target labels, so it ranks lifecycles for a target nobody has
  labelled, where the data distances cannot see what a model is sensitive to (on the issue-14 image suites every
  data distance chose the same wrong source for an inverted target, BENCHMARKS.md).

- ``ensemble``: each candidate's rank by LogME, LEEP, the k-NN probe and ``finetune_probe``, averaged
  (:func:`mean_ranks`; a candidate the probe cannot run on ranks last on that score alone).  The first three tied
  for best on the issue-14 suites, with run-to-run swings larger than their differences; their mean rank averages
  that noise out.  ``finetune_probe`` joined by a rule fixed before the fifth image suite ran (BENCHMARKS.md); it
  makes the default ranking cost one short fine-tuning per candidate.  It ranks candidates against each other, so
  it has a value only within a ranking.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from veml.coreset import transferability as TR
from veml.entities import Node
from veml.errors import InvalidInput
from veml.lifecycle.estimate import Estimates
from veml.lifecycle.finetune_recipe import finetune_params
from veml.versions import evaluation
from veml.versions.coresets import CoreSets
from veml.versions.inference import InferenceVersions
from veml.versions.training import TrainingVersions

SINGLE = ("leep", "logme", "hscore", "knn_probe", "as_is", "finetune_probe", "estimate")
#: the scores that read the target's class labels (the others read whatever the task evaluates against)
CLASS_LABELS = ("leep", "logme", "hscore", "knn_probe")
#: the scores that read only the task's own targets (a forecaster's futures): usable on unlabelled series
TASK_TARGETS = ("as_is", "finetune_probe")
#: the scores that read no labels or targets of the target at all
LABEL_FREE = ("estimate",)
#: the scores ``ensemble`` averages the ranks of
ENSEMBLE = ("logme", "leep", "knn_probe", "finetune_probe")
METHODS = SINGLE + ("ensemble",)


def mean_ranks(parts: Sequence[Mapping[str, float]], methods: Sequence[str] = ENSEMBLE) -> np.ndarray:
    """Each candidate's rank by each score (1 = the highest score), averaged over ``methods``; tied scores share
    their mean rank and a score that is not finite ranks last."""
    from scipy.stats import rankdata

    if not parts:
        return np.zeros(0)
    ranks = []
    for m in methods:
        v = np.asarray([p[m] for p in parts], np.float64)
        ranks.append(rankdata(-np.where(np.isfinite(v), v, -np.inf)))
    return np.mean(ranks, axis=0)


class ModelScores:
    def __init__(self, coresets: CoreSets, inference: InferenceVersions, training: TrainingVersions) -> None:
        self._coresets, self._inference, self._training = coresets, inference, training
        self._estimates = Estimates(training, inference, coresets)  # fitted once per deployment, then reused

    @staticmethod
    def labelled(core: Node, target: Node) -> tuple[np.ndarray, np.ndarray]:
        """(data ids, label indices) of the core-set samples that carry a class label."""
        ids = np.asarray(core.props.get("ids", []), np.int64)
        labels = list(core.props.get("labels") or [None] * len(ids))
        keep = np.asarray([label is not None for label in labels], bool)
        if keep.sum() < 2 or len({label for label in labels if label is not None}) < 2:
            raise InvalidInput(f"model-based scores need class labels on {target.name!r} (at least two classes)")
        _, y = np.unique(np.asarray([str(label) for label in labels], dtype=object)[keep].astype(str), return_inverse=True)
        return ids[keep], y.astype(np.int64)

    def score(self, method: str, target: Node, core: Node, lifecycle: Mapping[str, Any]) -> float:
        if method == "ensemble":
            raise InvalidInput("ensemble ranks candidates against each other, so one source alone has no ensemble value: "
                               f"name one of {', '.join(SINGLE)} (or rank with veml similar)")
        return self.scores((method,), target, core, lifecycle)[method]

    def scores(self, methods: Sequence[str], target: Node, core: Node, lifecycle: Mapping[str, Any]) -> dict[str, float]:
        """Each of ``methods`` (of :data:`SINGLE`) for one lifecycle; its model embeds the core set once for all."""
        unknown = [m for m in methods if m not in SINGLE]
        if unknown:
            raise InvalidInput(f"unknown model-based score {unknown[0]!r}: use one of {', '.join(METHODS)}")
        out: dict[str, float] = {}
        if "as_is" in methods:
            out["as_is"] = self.as_is(target, core, lifecycle)
        if "estimate" in methods:
            out["estimate"] = self.estimate(target, core, lifecycle)
        if any(m in CLASS_LABELS for m in methods):  # first: a model they refuse is refused before any fine-tuning
            self._class_label_scores(methods, target, core, lifecycle, out)
        if "finetune_probe" in methods:
            try:
                out["finetune_probe"] = self.finetune_probe(target, core, lifecycle)
            except InvalidInput:
                if len(methods) == 1:
                    raise
                # within the ensemble a candidate the probe cannot run on (a core set too small to hold any out, a
                # recipe without a validation split) ranks last on this score alone: None, which mean_ranks puts last
                out["finetune_probe"] = None  # type: ignore[assignment]
        return {m: out[m] for m in methods}

    def _class_label_scores(self, methods: Sequence[str], target: Node, core: Node, lifecycle: Mapping[str, Any],
                            out: dict[str, float]) -> None:
        """The scores of :data:`CLASS_LABELS` among ``methods``, into ``out``."""
        ids, y = self.labelled(core, target)
        if "leep" in methods:
            _, _, td, preds = self._inference.run(lifecycle["inference"], target.id, data_ids=ids)
            if preds.scores is None:
                raise InvalidInput("leep needs a classifier's class probabilities; this lifecycle's model has none")
            pos = {int(d): i for i, d in enumerate(td.data_ids)}
            probs = np.asarray(preds.scores, np.float64)[[pos[int(d)] for d in ids]]
            out["leep"] = TR.leep(probs, y)
        if any(m in CLASS_LABELS and m != "leep" for m in methods):
            fid, feats = self._coresets.embed_samples(target, f"training:{lifecycle['training']}", ids)
            pos = {int(d): i for i, d in enumerate(fid)}
            f = feats[[pos[int(d)] for d in ids]].reshape(len(ids), -1)
            for m in methods:
                if m == "logme":
                    out[m] = TR.logme(f, y)
                elif m == "hscore":
                    out[m] = TR.hscore(f, y)
                elif m == "knn_probe":
                    out[m] = TR.knn_probe(f, y, k=5)

    def as_is(self, target: Node, core: Node, lifecycle: Mapping[str, Any]) -> float:
        """The lifecycle's deployment on the target's core-set samples, unchanged: its key metric, higher = better."""
        ids = np.asarray(core.props.get("ids", []), np.int64)
        _, _, td, preds = self._inference.run(lifecycle["inference"], target.id, data_ids=ids)
        report, _ = evaluation.evaluate(td, preds)
        name, value = evaluation.key_metric(td.task, report)
        if value is None or not np.isfinite(value):
            raise InvalidInput(f"as_is scores a model on the target's labels, and {target.name!r} has none its "
                               f"{td.task} model can be scored against")
        return -float(value) if name in evaluation.LOWER_IS_BETTER else float(value)

    def estimate(self, target: Node, core: Node, lifecycle: Mapping[str, Any]) -> float:
        """The lifecycle's deployment on the target's core-set samples, its key metric estimated without labels
        (:class:`veml.lifecycle.estimate.Estimates`, fitted on the source's own held-out split): higher = better."""
        ids = np.asarray(core.props.get("ids", []), np.int64)
        inode, _, td, preds = self._inference.run(lifecycle["inference"], target.id, data_ids=ids)
        found, why = self._estimates.estimate(inode.id, target.id, preds, data_ids=td.data_ids)
        if found is None:
            raise InvalidInput(f"estimate needs a label-free estimate of {inode.name!r}'s metric, and it has none: {why}")
        value = float(found["value"])
        return -value if found["metric"] in evaluation.LOWER_IS_BETTER else value

    def finetune_probe(self, target: Node, core: Node, lifecycle: Mapping[str, Any]) -> float:
        """What transfer's recipe would end with from this lifecycle's model on the target's core-set samples (the
        fine-tuned model, or the unchanged one where keep-better keeps it), run in memory: its key metric, higher =
        better.  A forecaster is scored on all those samples (a light fine-tuning of its few shared weights learns
        little by heart, and one held-out day is too noisy to rank by); a classifier on keep-better's held-out
        split alone, since its head learns a few labels by heart."""
        run = self._training.describe(self._training.get(lifecycle["training"]))
        recipe = dict(run.get("params") or {})
        held_out = run.get("task") != "forecasting"
        new_rows = False
        if run.get("task") == "classification":
            source = set(run.get("class_names") or [])
            new_rows = any(c not in source for c in self._training.class_names(lifecycle["model"], target.id))
        params = finetune_params({**self._training.defaults(lifecycle["model"]), **recipe}, recipe, None, new_rows)
        ids = np.asarray(core.props.get("ids", []), np.int64)
        name, value = self._training.probe(target, lifecycle["training"], params, ids, held_out_only=held_out)
        if value is None or not np.isfinite(value):
            raise InvalidInput(f"finetune_probe scores a model on the target's own labels, and {target.name!r} has none "
                               "it can be scored against")
        return -float(value) if name in evaluation.LOWER_IS_BETTER else float(value)
