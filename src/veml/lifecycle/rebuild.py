"""Rebuild after drift: the next lifecycle from the one a deployment belongs to, by one of four methods.

- ``full``: the new (labelled) data merged with the previous training data, retrained with the previous recipe,
  starting from the previous weights where the adapter can (``scratch=True``, or a refitting back-end such as
  scikit-learn: from a fresh initialisation, as the first training did);
- ``transfer``: the previous checkpoint fine-tuned on the new labelled data only, with transfer's fine-tuning
  recipe (a third of the epochs, a tenth of the learning rate, warm-up, keep the better of fine-tuned and
  previous on a validation split of the new data, and for a classifier still at guessing there, one trained from
  scratch: ``versions/keep_better.py``);
- ``active``: the most informative new samples chosen for labelling (a classifier: typical samples of its
  own feature space's clusters at a few labels per class, uncertainty plus diversity above that; otherwise k-center core-set selection, Sener & Savarese 2018), exported,
  the labels accepted back as a data version of their own, then fine-tuning on it as ``transfer`` does — two
  calls, one to export and one with ``labels``;
- ``adapt``: no new labels: ``adabn`` (batch-norm statistics re-estimated on the new data) or ``tent``
  (AdaBN, then entropy minimisation of the batch-norm scale and shift; classifiers).

The new data is split once (seeded) into a held-back labelled slice and the rest; every method
evaluates the old and the new inference on that same slice and records both predictions, so the
user sees what the rebuild bought.  The new training and inference get ``REBUILD {method}`` edges
from the ones they replace.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from veml.adapters import get_adapter
from veml.coreset.kcenter import k_center_greedy
from veml.coreset.typical import typical_clusters
from veml.entities import Node
from veml.errors import InvalidInput
from veml.lifecycle.evidence import rebuild_evidence
from veml.lifecycle.finetune_recipe import few_label_params, finetune_params
from veml.versions.context import Stores, unique_name
from veml.versions.coresets import CoreSets
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions
from veml.versions.model import spec_of
from veml.versions.training import TrainingVersions, parse_sets

METHODS = ("full", "transfer", "active", "adapt")
ACTIVE_REASON = "active learning: k-center selection for inference {inference}"
UNCERTAIN_SHARE = 0.5  # active learning on a classifier: k-center among the least certain half of the new samples
LOW_BUDGET_PER_CLASS = 10  # below this many labels per class, typical samples teach more than uncertain ones


class Rebuild:
    def __init__(self, stores: Stores, data: DataVersions, training: TrainingVersions, inference: InferenceVersions,
                 coresets: CoreSets) -> None:
        self._s, self._data, self._training, self._inference, self._coresets = stores, data, training, inference, coresets

    # --- the split ----------------------------------------------------------------------------
    def _labelled(self, node: Node, spec: Any) -> bool:
        if spec.task == "forecasting":
            return True  # the future readings are the labels
        col = spec.parameters.get("label_column")
        if col:
            return col in node.props.get("columns", {})
        return int(node.props.get("annotations", 0)) > 0

    def split(self, test: Node, holdout: float, seed: int, labelled: bool, create: bool = True) -> tuple[Node | None, Node | None]:
        """(held-back slice, rest) of the new data, made once per (version, fraction, seed) and reused
        (``create=False``: only find them; (None, None) when they were never made)."""
        if not labelled:
            return None, test
        if not 0 < holdout < 1:
            raise InvalidInput(f"--holdout must lie in (0, 1), got {holdout}")
        n = int(test.props.get("samples", 0))
        k = max(1, int(round(n * holdout)))
        if n - k < 1:
            raise InvalidInput(f"test version {test.name!r} has {n} samples: too few to hold back {holdout:.0%} and learn from the rest")
        reason = f"rebuild hold-out {holdout:g} seed {seed}"
        found = {}
        for child in self._data.derived(test):
            src = child.props.get("source", {})
            if src.get("base") == test.id and src.get("select", "").startswith(reason):
                found[src["select"]] = child
        if f"{reason}: held back" in found and f"{reason}: rest" in found:
            return found[f"{reason}: held back"], found[f"{reason}: rest"]
        if not create:
            return None, None
        ids = self._data.checkout(test).data_ids
        order = np.random.default_rng(seed).permutation(len(ids))
        held = self._data.select(test, np.sort(ids[order[:k]]), unique_name(self._s, f"{test.name}-heldback"),
                                 f"{reason}: held back", role="test")
        rest = self._data.select(test, np.sort(ids[order[k:]]), unique_name(self._s, f"{test.name}-rest"), f"{reason}: rest")
        return held, rest

    # --- rebuild ------------------------------------------------------------------------------
    def rebuild(self, inference: str | int, test: str | int, method: str, *, holdout: float = 0.3, seed: int = 0,
                budget: int | None = None, export: str | Path | None = None, labels: str | Path | None = None,
                sets: Mapping[str, Any] | list[str] | None = None, adapt: str = "adabn", name: str | None = None,
                scratch: bool = False) -> dict[str, Any]:
        if method not in METHODS:
            raise InvalidInput(f"unknown rebuild method {method!r}: use one of {', '.join(METHODS)}")
        if scratch and method != "full":
            raise InvalidInput(f"--scratch applies to --method full only (--method {method} starts from the previous weights"
                               f"{' or uses none' if method == 'adapt' else ''})")
        inode = self._inference.get(inference)
        tnode = self._training.get(inode.props["training"])
        if self._training.status(tnode).get("status") != "finished":
            raise InvalidInput(f"training {tnode.name!r} of {inode.name!r} did not finish: there is no lifecycle to rebuild")
        old_data, model = self._data.get(tnode.props["data"]), self._training.model_of(tnode)
        spec = spec_of(model)
        new = self._data.get(test)
        if new.props.get("modality") != old_data.props.get("modality"):
            raise InvalidInput(f"{new.name!r} holds {new.props.get('modality')} data; the lifecycle of {inode.name!r} "
                               f"was trained on {old_data.props.get('modality')} data")
        labelled = self._labelled(new, spec)
        if method in ("full", "transfer") and not labelled:
            raise InvalidInput(f"--method {method} needs the new data labelled; {new.name!r} has no labels "
                               "(label it with 'veml data update', or use --method active or adapt)")
        if method == "active" and spec.parameters.get("label_column"):
            raise InvalidInput(f"--method active sends samples out for annotation; this model reads its labels from the "
                               f"column {spec.parameters['label_column']!r} (use --method transfer or full)")
        if method == "active" and labels is None and export is None:
            raise InvalidInput("--method active needs labels for the samples it chooses: run it with --export DIR, "
                               "label the exported COCO file, then rerun with --labels FILE")
        if method == "adapt":  # refuse a model AdaBN cannot adapt before any version is written
            adapter = get_adapter(spec.adapter)
            if not adapter.ADAPT_METHODS:
                raise InvalidInput(f"the {spec.adapter} adapter cannot adapt models without labels")
            adapter.check_adapt(spec, self._training.checkpoint(tnode), adapt)
        if method == "active" and export is not None and labels is None and Path(export).exists() and any(Path(export).iterdir()):
            raise InvalidInput(f"{export}: export directory is not empty")
        recipe = dict(tnode.props["params"])
        params = {**recipe, **(parse_sets(sets, recipe) if sets else {})}
        if method in ("transfer", "active"):  # from the checkpoint: transfer's fine-tuning recipe, keep-better included
            params = finetune_params(self._training.defaults(model.id), recipe, sets)
        returning_labels = method == "active" and labels is not None
        held, rest = self.split(new, holdout, seed, labelled, create=not returning_labels)
        pick = self._existing_pick(inode, rest) if method == "active" and rest is not None else None
        if returning_labels and pick is None:
            raise InvalidInput("no samples were chosen for labelling yet: run --method active with --export DIR first")
        base = name or unique_name(self._s, f"rebuild-{method}-{inode.name}")
        link = [(tnode.id, "REBUILD", {"method": method, "test": new.id})]
        labels_used, created = 0, [n.id for n in (held, rest) if n is not None and n.id != new.id]
        warm = method != "full" or (not scratch and get_adapter(spec.adapter).warm_start)
        if method == "full":
            train_on = self._data.merge([old_data.id, rest.id], unique_name(self._s, f"{old_data.name}+{rest.name}"))
            created.append(train_on.id)
            run = self._training.train(train_on.id, model.id, sets=params, test=held.id if held else None, name=base,
                                       extra_parents=link, init_from=tnode.id if warm else None)
            labels_used = int(rest.props["samples"])
        elif method == "transfer":
            run = self._training.train(rest.id, model.id, sets=params, init_from=tnode.id, test=held.id if held else None,
                                       name=base, extra_parents=link)
            labels_used = int(rest.props["samples"])
        elif method == "adapt":
            run = self._training.train(rest.id, model.id, sets=params, init_from=tnode.id, test=held.id if held else None,
                                       name=base, extra_parents=link, adapt=adapt)
        elif labels is None:
            chosen = pick or self._active_selection(inode, old_data, rest, budget)
            out = Path(export)  # type: ignore[arg-type]
            path = self._data.export(chosen.id, "coco", out)
            self._strip_annotations(path / "annotations.json" if path.is_dir() else path)
            return {"method": method, "status": "awaiting_labels", "selection": chosen.id, "selection_name": chosen.name,
                    "samples": chosen.props["samples"], "export": str(out), "versions": created + [chosen.id],
                    "evidence": rebuild_evidence(spec.task, method).as_dict(),
                    "next": f"label {out}, then: veml rebuild --inference {inode.name} --test {new.name} "
                            f"--method active --labels FILE"}
        else:
            chosen = pick
            assert chosen is not None  # checked before anything was written
            self._check_labels(chosen, Path(labels))
            labelled_pick = self._data.update(chosen.id, labels, unique_name(self._s, f"{chosen.name}-labelled"))
            created += [chosen.id, labelled_pick.id]
            params = few_label_params(params, int(chosen.props["samples"]), sets)
            run = self._training.train(labelled_pick.id, model.id, sets=params, init_from=tnode.id,
                                       test=held.id if held else None, name=base, extra_parents=link)
            labels_used = int(chosen.props["samples"])
        dep = self._inference.deploy(run["id"], inode.props.get("format", "onnx"), inode.props.get("quantize", "none"),
                                     name=unique_name(self._s, f"{base}-{inode.props.get('format', 'onnx')}"),
                                     extra_parents=[(inode.id, "REBUILD", {"method": method, "test": new.id})])
        created += [run["id"], dep.id]
        result: dict[str, Any] = {"method": method, "status": "finished", "training": run["id"], "inference": dep.id,
                                  "previous": {"inference": inode.id, "training": tnode.id}, "evaluated_on": None,
                                  "labels_used": labels_used, "train_s": (run.get("profile") or {}).get("train_s"),
                                  "warm_start": warm and method != "adapt",
                                  "evidence": rebuild_evidence(spec.task, method).as_dict(), "versions": created}
        if held is not None:
            old_pred = self._inference.predict(inode.id, held.id, name=unique_name(self._s, f"{inode.name}-on-{held.name}"))
            new_pred = self._inference.predict(dep.id, held.id, name=unique_name(self._s, f"{dep.name}-on-{held.name}"))
            result["evaluated_on"] = held.id
            result["previous"]["metric"] = old_pred.props["key_metric"]
            result["metric"] = new_pred.props["key_metric"]
            result["versions"] += [old_pred.id, new_pred.id]
        return result

    # --- active learning ----------------------------------------------------------------------
    def _existing_pick(self, inode: Node, rest: Node) -> Node | None:
        reason = ACTIVE_REASON.format(inference=inode.id)
        for child in self._data.derived(rest):
            if child.props.get("source", {}).get("select") == reason:
                return child
        return None

    def _active_selection(self, inode: Node, old_data: Node, rest: Node, budget: int | None) -> Node:
        """The budget's worth of new samples to label.

        Classifiers, in the deployed model's own (penultimate) feature space: at budgets below
        ``LOW_BUDGET_PER_CLASS`` labels per class, typical-cluster selection (TypiClust, Hacohen et al. 2022:
        the most typical sample of each of ``budget`` k-means clusters, so the few labels cover the data's
        modes); above it, uncertainty plus diversity (cluster-margin style, Citovsky et al. 2021): the
        ``UNCERTAIN_SHARE`` of samples (at least the budget) with the smallest margin between the model's two
        most likely classes, then k-center greedy over those, so the batch is both uncertain and spread out.  Other tasks: k-center greedy
        in the embedding space, farthest from everything already labelled (Sener & Savarese 2018)."""
        n = int(rest.props.get("samples", 0))
        budget = budget if budget is not None else max(1, math.ceil(0.1 * n))
        if not 1 <= budget <= n:
            raise InvalidInput(f"--budget must lie in 1..{n} (the samples of {rest.name!r}), got {budget}")
        ids = self._data.checkout(rest).data_ids
        if self._training.describe(self._training.get(inode.props["training"])).get("task") == "classification":
            pick = self._classifier_pick(inode, rest, ids, budget)
        else:
            _, pool = self._coresets.embeddings(rest)
            _, known = self._coresets.embeddings(old_data)
            if pool.shape[1] != known.shape[1]:
                raise InvalidInput("the new data embeds to another dimension than the training data: cannot select by distance")
            x = np.concatenate([known, pool])
            pick = k_center_greedy(x, budget, already=np.arange(len(known))).indices - len(known)
        return self._data.select(rest, np.sort(ids[pick]), unique_name(self._s, f"{rest.name}-to-label"),
                                 ACTIVE_REASON.format(inference=inode.id), keep_annotations=False)

    def _classifier_pick(self, inode: Node, rest: Node, ids: np.ndarray, budget: int) -> np.ndarray:
        """Positions in ``ids`` to label, in the deployed model's own feature space.

        Below ``LOW_BUDGET_PER_CLASS`` labels per class (the cold-start regime of Hacohen et al. 2022, where
        uncertainty sampling loses to random): the most typical sample of each of ``budget`` clusters.  Above
        it: the smallest-margin candidates, spread by k-center."""
        _, _, td, preds = self._inference.run(inode.id, rest.id, data_ids=ids)
        pos = {int(d): i for i, d in enumerate(td.data_ids)}
        probs = np.asarray(preds.scores, np.float64)[[pos[int(d)] for d in ids]]
        if budget < LOW_BUDGET_PER_CLASS * probs.shape[1]:
            return typical_clusters(self._model_features(inode, rest, ids), budget)
        top2 = np.sort(probs, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        pool = np.argsort(margin, kind="stable")[: max(budget, int(math.ceil(len(ids) * UNCERTAIN_SHARE)))]
        f = self._model_features(inode, rest, ids[pool])
        spread = k_center_greedy(f, budget - 1, already=np.array([0])).indices if budget > 1 else np.array([], np.int64)
        return pool[np.concatenate([[0], spread]).astype(np.int64)]  # the least certain first, then the farthest

    def _model_features(self, inode: Node, rest: Node, ids: np.ndarray) -> np.ndarray:
        """The deployed model's penultimate features of ``ids`` (in that order), L2-normalised, float64."""
        fid, feats = self._coresets.embed_samples(rest, f"training:{inode.props['training']}", ids)
        fpos = {int(d): i for i, d in enumerate(fid)}
        f = feats[[fpos[int(d)] for d in ids]].reshape(len(ids), -1).astype(np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def _strip_annotations(path: Path) -> None:
        """What goes out for labelling carries no labels (the selection version has none; say so in the file)."""
        doc = json.loads(path.read_text())
        doc["annotations"] = []
        path.write_text(json.dumps(doc))

    def _check_labels(self, chosen: Node, labels: Path) -> None:
        """Every chosen sample must come back (an image with no objects comes back with no boxes)."""
        try:
            doc = json.loads(Path(labels).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{labels}: cannot read the returned labels: {exc}") from None
        names = {im.get("file_name") for im in doc.get("images", []) if isinstance(im, dict)}
        wanted = set(self._data.sample_metadata(chosen)["file_name"].to_pylist())
        missing = wanted - names
        if missing:
            raise InvalidInput(f"{labels}: labels came back for {len(wanted) - len(missing)} of the {len(wanted)} chosen "
                               f"samples (missing e.g. {sorted(missing)[0]}): label every one of them")
        if not doc.get("annotations"):
            raise InvalidInput(f"{labels}: no annotations came back")
