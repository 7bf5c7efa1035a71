"""Label-free drift detection: does new test data still look like the data the model was trained on?

Features come from the version APIs — embeddings (cached per sample) for core-set MMD and the
univariate tests, or the deployed model's own outputs for black-box shift detection (BBSD,
Lipton et al. 2018 / Rabanser et al. 2019) — and go to a pure detector from
:mod:`veml.coreset.twosample`.  A fitted detector is kept per (reference, method, settings) for
the life of the process, so a monitor fits once and tests every batch against the same state.
Each check is recorded as a ``DriftReport`` with ``DRIFT_CHECK`` edges from what it compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veml.adapters.base import Predictions
from veml.coreset import twosample as T
from veml.coreset.combined import Combined, black_box
from veml.coreset.kcenter import k_center_greedy
from veml.entities import Node
from veml.errors import InvalidInput
from veml.lifecycle.estimate import CLASSIFIERS, Estimates
from veml.progress import ProgressLike
from veml.versions.context import Stores, unique_name
from veml.versions.coresets import CoreSets
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions
from veml.versions.reports import Reports
from veml.versions.training import TrainingVersions

KIND = "DriftReport"
METHODS = ("mmd", "bbsd", "ks", "cvm")
#: the fewest permutations bbsd's combined test on a classifier runs (its p-value's resolution is 1 / (P + 1))
MIN_PERMUTATIONS = 200
#: what bbsd on a classifier's image data also reads: the inputs as pixel thumbnails
PIXELS = "pixels"


def projection(reference: np.ndarray, test: np.ndarray, k: int, seed: int = 0, digits: int = 4) -> dict[str, Any]:
    """A 2-D picture of a core-set MMD check: PCA (by SVD, fitted on the pooled points) of the reference
    core set (the detector's landmarks) and of a k-center core set of the test batch (``k`` capped by its size).

    ``{"reference": [[x, y], ...], "test": [[x, y], ...], "explained_variance": [v1, v2]}``, coordinates
    rounded to ``digits`` decimals; ``explained_variance`` is each axis's share of the pooled variance.
    """
    ref = np.asarray(reference, np.float64)
    x = np.asarray(test, np.float32)
    idx = k_center_greedy(x, min(int(k), len(x)), seed=seed).indices
    tst = x[np.sort(np.asarray(idx))].astype(np.float64)
    pooled = np.concatenate([ref, tst])
    centred = pooled - pooled.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    coords = centred @ axes.T
    if coords.shape[1] < 2:  # one feature (or one point): pad the missing axis with zeros
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = sv ** 2
    total = float(var.sum())
    shares = [float(v / total) if total > 0 else 0.0 for v in var[:2]] + [0.0] * max(0, 2 - len(var))
    coords = np.round(coords, digits)
    return {"reference": coords[:len(ref)].tolist(), "test": coords[len(ref):].tolist(),
            "explained_variance": [round(v, digits) for v in shares]}


def output_features(preds: Predictions, n_classes: int) -> np.ndarray:
    """One vector per sample from a model's outputs: softmax for classifiers; for detectors the count of
    confident boxes and each class's highest and mean score; for forecasters the forecast's level and spread."""
    if preds.scores is not None:
        return np.asarray(preds.scores, np.float32)
    if preds.detections is not None:
        rows = []
        for boxes, scores, labels in preds.detections:
            row = [float(np.sum(scores >= 0.5))]
            for c in range(n_classes):
                s = scores[labels == c]
                row += [float(s.max()) if len(s) else 0.0, float(s.mean()) if len(s) else 0.0]
            rows.append(row)
        return np.asarray(rows, np.float32).reshape(len(rows), 1 + 2 * n_classes)
    if preds.forecasts is not None:
        f, owner = np.asarray(preds.forecasts), np.asarray(preds.forecast_sample)
        rows = [np.concatenate([f[owner == i].mean((0, 1)), f[owner == i].std((0, 1))]) for i in np.unique(owner)]
        return np.asarray(rows, np.float32)
    if preds.values is not None:
        return np.asarray(preds.values, np.float32).reshape(-1, 1)
    raise InvalidInput("the model's outputs cannot be turned into drift features")


#: what a report's ``reference_split`` says the detector was fitted on
SPLITS = {"validation": "the training's validation split (samples the model never trained on)",
          "test": "the training's test version (samples the model never trained on)",
          "given": "the reference version as given",
          "training": "the model's training data"}
SEEN_WARNING = ("training {name!r} recorded no held-out split (or {why}), so the reference is the model's own "
                "training data, where it is more confident than on any new data: this test flags drift too often "
                "(retrain to record a validation split)")


class Drift:
    def __init__(self, stores: Stores, data: DataVersions, coresets: CoreSets, inference: InferenceVersions,
                 training: TrainingVersions, reports: Reports) -> None:
        self._s, self._data, self._coresets, self._inference = stores, data, coresets, inference
        self._training, self._reports = training, reports
        self.estimates = Estimates(training, inference, coresets)
        self._fitted: dict[tuple[Any, ...], Any] = {}

    def default_method(self, node: Node, inference: Node | None) -> str:
        if inference is not None:
            return "bbsd"
        return "mmd" if node.props.get("modality") == "image" else "ks"

    def reference_of(self, inference: str | int) -> Node:
        """The training data version behind a deployment (what a monitor compares against)."""
        inode = self._inference.get(inference)
        tnode = self._training.get(inode.props["training"])
        return self._data.get(tnode.props["data"])

    def reference_samples(self, reference: Node, inode: Node | None, model_features: bool,
                          minimum: int = 0) -> tuple[Node, np.ndarray | None, str]:
        """(version, its sample ids or None for all, which split of ``SPLITS``) a detector is fitted on.

        Features that come from the deployed model (its outputs, or its own embedder) are fitted on data the
        model never trained on — on its training data it is more confident than on any new data, so a test
        against it flags unshifted batches far above alpha.  A reference other than the training data is
        taken as given.  A held-out split with fewer than ``minimum`` samples (what the test needs) gives way
        to the training data too."""
        if inode is None or not model_features:
            return reference, None, "given"
        tnode = self._training.get(inode.props["training"])
        if reference.id != tnode.props["data"]:
            return reference, None, "given"
        node, ids, split = self._training.held_out(tnode)
        if split != "training" and (len(ids) if ids is not None else int(node.props.get("samples", 0))) < minimum:
            return reference, None, "training"
        return node, ids, split

    def features(self, node: Node, method: str, inode: Node | None = None, embedder: str | None = None,
                 progress: ProgressLike | None = None, ids: np.ndarray | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """What a ``method`` detector reads of ``node`` (only its samples ``ids`` when given, in id order).

        bbsd on a classifier: ``{"softmax": outputs, "pixels": thumbnails}`` (pixels for image data only), the
        blocks of its combined test; otherwise one (samples x features) matrix."""
        if method == "bbsd":
            assert inode is not None
            _, _, td, preds = self._inference.run(inode.id, node.id, data_ids=ids, progress=progress)
            out = output_features(preds, len(inode.props.get("class_names", [])))
            return self._bbsd_blocks(node, inode, out, td.data_ids) if self._classifier(inode) else out
        all_ids, x = self._coresets.embeddings(node, embedder, progress)
        return x if ids is None else x[np.isin(all_ids, ids)]

    def _bbsd_blocks(self, node: Node, inode: Node, softmax: np.ndarray, data_ids: np.ndarray,
                     seed: int = 0) -> dict[str, np.ndarray]:
        """The combined test's blocks, of at most ``Combined.cap`` samples (chosen by ``seed``): the test reads no
        more, so no more thumbnails are made."""
        if len(softmax) > Combined.cap:
            rows = np.sort(np.random.default_rng(seed).choice(len(softmax), Combined.cap, replace=False))
            softmax, data_ids = softmax[rows], data_ids[rows]
        blocks = {"softmax": softmax}
        if node.props.get("modality") == "image":
            order = np.argsort(data_ids, kind="stable")
            got, pixels = self._coresets.embeddings(node, PIXELS, ids=data_ids)
            if len(got) != len(data_ids):
                raise InvalidInput(f"the deployment's outputs and the pixels of {node.name!r} cover different samples")
            aligned = np.empty_like(pixels)
            aligned[order] = pixels  # back to the order of the outputs
            blocks["pixels"] = aligned
        return blocks

    def _classifier(self, inode: Node | None) -> bool:
        """Whether a deployment's outputs are class scores (bbsd then runs its combined test)."""
        return inode is not None and self._training.get(inode.props["training"]).props.get("task") in CLASSIFIERS

    def detector(self, reference: Node, method: str, inode: Node | None = None, embedder: str | None = None,
                 alpha: float = 0.05, k: int = 200, permutations: int = 100, seed: int = 0,
                 progress: ProgressLike | None = None, ids: np.ndarray | None = None, split: str = "given") -> Any:
        """The detector fitted on ``reference`` (only its samples ``ids`` when given; ``split`` names them)."""
        key = (reference.id, split, method, inode.id if inode else None, embedder, alpha, k, permutations, seed)
        if key not in self._fitted:
            x = self.features(reference, method, inode, embedder, progress, ids)
            if isinstance(x, dict):  # a classifier's outputs (and inputs): one combined permutation test
                images = PIXELS in x
                self._fitted[key] = Combined(black_box(images), alpha, max(permutations, MIN_PERMUTATIONS), seed).fit(x)
            elif method == "mmd":
                self._fitted[key] = T.CoreSetMMD(alpha, k, permutations, seed).fit(x)
            else:
                test = "ks" if method == "bbsd" else method
                self._fitted[key] = T.Univariate(alpha, test, method).fit(x)
        return self._fitted[key]

    def check(self, reference: str | int | None, test: str | int, inference: str | int | None = None,
              method: str | None = None, alpha: float = 0.05, k: int = 200, permutations: int = 100, seed: int = 0,
              embedder: str | None = None, progress: ProgressLike | None = None, name: str | None = None) -> dict[str, Any]:
        """Test ``test`` against ``reference`` (default: the inference's training data) and record a report."""
        inode = self._inference.get(inference) if inference is not None else None
        if reference is None:
            if inode is None:
                raise InvalidInput("drift needs --reference D (or --inference I, whose training data is the reference)")
            rnode = self.reference_of(inode.id)
        else:
            rnode = self._data.get(reference)
        tnode = self._data.get(test)
        if rnode.props.get("modality") != tnode.props.get("modality"):
            raise InvalidInput(f"reference {rnode.name!r} holds {rnode.props.get('modality')} data and test {tnode.name!r} "
                               f"holds {tnode.props.get('modality')} data: different modalities have nothing to compare")
        method = method or self.default_method(rnode, inode)
        if method not in METHODS:
            raise InvalidInput(f"unknown drift method {method!r}: use one of {', '.join(METHODS)}")
        if method == "bbsd" and inode is None:
            raise InvalidInput("bbsd tests the deployed model's outputs: pass --inference I")
        if not 0 < alpha < 1:
            raise InvalidInput(f"--alpha must lie in (0, 1), got {alpha}")
        if permutations < 10:
            raise InvalidInput(f"--permutations must be at least 10, got {permutations}")
        n_test = int(tnode.props.get("samples", 0))
        minimum = T.MIN_SAMPLES[method]
        if n_test < minimum:
            raise InvalidInput(f"test version {tnode.name!r} has {n_test} samples; the {method} drift test needs at least {minimum}")
        if inode is not None and method != "bbsd" and embedder is None:
            embedder = f"training:{inode.props['training']}"  # the deployed model's own features
        own = inode is not None and (method == "bbsd" or embedder == f"training:{inode.props['training']}")
        need = 2 * T.MIN_SAMPLES["mmd"] if method == "mmd" else T.MIN_SAMPLES[method]
        fit_node, fit_ids, split = self.reference_samples(rnode, inode, own, need)
        fitted = self.detector(fit_node, method, inode if method == "bbsd" else None, embedder, alpha, k, permutations, seed,
                               progress, fit_ids, split)
        preds, pred_ids = None, None
        if method == "bbsd":  # the model's outputs, kept for the estimate below
            assert inode is not None
            _, _, td, preds = self._inference.run(inode.id, tnode.id)
            pred_ids = td.data_ids
            features = output_features(preds, len(inode.props.get("class_names", [])))
            if self._classifier(inode):
                features = self._bbsd_blocks(tnode, inode, features, td.data_ids, seed)
        else:
            features = self.features(tnode, method, inode, embedder, progress)
        result = fitted.test(features)
        out = result.to_json()
        if preds is not None and preds.scores is not None:
            out["n_test"] = len(preds.scores)  # the batch's size (the combined test reads at most Combined.cap of it)
        if method == "mmd":  # embeddings: the reference core set and a test core set of the same size, in 2-D
            out["projection"] = projection(fitted.centres, features, len(fitted.centres), seed)
        rnode = fit_node
        props = {**out, "reference": rnode.id, "reference_split": split, "test": tnode.id,
                 "inference": inode.id if inode else None,
                 "embedder": None if method == "bbsd" else self._coresets.embedder(rnode, embedder).key}
        if inode is not None:  # the deployed model's metric on the batch, estimated without labels
            props["estimate"], why = self.estimates.estimate(inode.id, tnode.id, preds, data_ids=pred_ids)
            if why is not None:
                props["estimate_reason"] = why
        if split == "training":
            assert inode is not None
            tname = self._training.get(inode.props["training"]).name
            props["warning"] = SEEN_WARNING.format(name=tname, why=f"held out fewer than the {need} samples {method} needs")
        parents = [(rnode.id, "DRIFT_CHECK", {"role": "reference"}), (tnode.id, "DRIFT_CHECK", {"role": "test"})]
        if inode is not None:
            parents.append((inode.id, "DRIFT_CHECK", {"role": "inference"}))
        report = self._reports.record(KIND, name or unique_name(self._s, f"drift-{tnode.name}-vs-{rnode.name}"), props,
                                      parents)
        return {**props, "report": report.id, "reference_name": rnode.name, "test_name": tnode.name}
