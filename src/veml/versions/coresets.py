"""Core-set versions: the k samples that cover a data version in embedding space, stored once.

Why a version kind: a core set is expensive (every sample embedded, k passes over the vectors)
and is what similarity and drift compare, so it is computed once per (data version, embedder, k,
seed), recorded as a ``CoreSet`` node with a ``CORESET_OF`` edge from its data version, and
reused.  Its embedding matrix is an artifact (content-addressed), so a distance between two
datasets reads two small matrices, not two datasets.  Embeddings themselves are cached per
(data_id, embedder), so derived versions (filters, merges) reuse their parents' vectors.

With a distributed executor (``compute_url = "ray"``) the missing samples are split into
partitions embedded by one task each (:func:`embed_partition`, which reopens the stores from the
repository's location); the tasks return their vectors and the driver appends them to the cache
in one write — Lance appends from many tasks at once would race on the table's manifest and
leave one small fragment per task.  The core set is then the partitioned k-center of
:mod:`veml.compute.coreset_tasks` (per-partition greedy, greedy on the union), recorded with
``method`` and ``partitions`` so a reader knows which algorithm chose it.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from veml.compute import RepoLocation, coreset_tasks, partition
from veml.compute.executor import DEFAULT_PARTITION_SIZE
from veml.coreset import embed as E
from veml.coreset.kcenter import coverage, k_center_greedy
from veml.entities import Node
from veml.errors import InvalidInput
from veml.progress import Progress, ProgressLike, as_progress
from veml.store.idsets import from_array
from veml.versions.context import Stores, stores_at, unique_name
from veml.versions.data import DataVersions
from veml.versions.model import ModelVersions
from veml.versions.training import TrainingVersions

KIND = "CoreSet"
DEFAULT_K = 200
NO_OBJECTS = "(no objects)"
EMBEDDERS = {"image": ("lite0", "pixels"), "series": ("summary",), "table": ("columns",)}


class CoreSets:
    def __init__(self, stores: Stores, data: DataVersions, training: TrainingVersions) -> None:
        self._s, self._data, self._training = stores, data, training
        self._embedders: dict[tuple[str, str | None, float], E.Embedder] = {}

    # --- embedders ----------------------------------------------------------------------------
    def embedder(self, node: Node, name: str | None = None) -> E.Embedder:
        """The embedder for a data version: the modality's default, a named one, or ``training:REF``."""
        modality = node.props.get("modality")
        mv = float(node.props.get("missing_value", 0.0))
        cache_key = (str(modality), name, mv)
        if cache_key in self._embedders:
            return self._embedders[cache_key]
        if name is not None and name.startswith("training:"):
            emb = self._training_embedder(node, name.split(":", 1)[1])
        else:
            choice = name or EMBEDDERS.get(str(modality), ("",))[0]
            if choice not in EMBEDDERS.get(str(modality), ()):
                raise InvalidInput(f"embedder {choice!r} does not apply to {modality} data version {node.name!r} "
                                   f"(use one of: {', '.join(EMBEDDERS.get(str(modality), ()))}, training:NAME)")
            if choice == "lite0":
                emb = E.lite0_imagenet()
            elif choice == "pixels":
                emb = E.Thumbnail()
            elif choice == "summary":
                emb = E.SeriesSummary(mv)
                emb.key = f"{emb.key}-mv{mv:g}"
            else:
                emb = E.TableColumns()
                features = node.props.get("features") or list(node.props.get("columns", {}))
                emb.key = f"{emb.key}-{hashlib.sha256(','.join(features).encode()).hexdigest()[:12]}"
        self._embedders[cache_key] = emb
        return emb

    def _training_embedder(self, node: Node, ref: str) -> E.Embedder:
        from veml.adapters import get_adapter
        from veml.adapters.base import ProvidesModel
        from veml.adapters.torch_embed import feature_function, normalises
        from veml.versions.model import spec_of

        tnode = self._training.get(ref)
        spec = spec_of(self._s.graph.get(tnode.props["model"]))
        want = {"classification": "image", "detection": "image", "forecasting": "series"}.get(spec.task)
        if want != node.props.get("modality"):
            raise InvalidInput(f"training {tnode.name!r} embeds {want} data; {node.name!r} holds {node.props.get('modality')} data")
        checkpoint = self._training.checkpoint(tnode)
        adapter = get_adapter(spec.adapter)
        if not isinstance(adapter, ProvidesModel):
            raise InvalidInput(f"the {spec.adapter} adapter cannot provide features for embedding")
        model, meta = adapter.model_and_meta(spec, checkpoint)
        key = f"training-{tnode.id}-{hashlib.sha256(checkpoint).hexdigest()[:12]}"
        fn = feature_function(spec, model)
        if spec.task == "forecasting":
            return E.SeriesEncoder(key, fn, int(spec.parameters["history"]), meta["mean"], meta["std"])
        return E.torch_backbone(key, fn, int(spec.parameters["image_size"]), normalises(spec))

    # --- embeddings ---------------------------------------------------------------------------
    def embeddings(self, ref: str | int | Node, embedder: str | None = None,
                   progress: ProgressLike | None = None, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(data ids, (N, d) float32) of every sample of the version (only those of ``ids`` when given, in id
        order); only uncached samples are embedded."""
        node = ref if isinstance(ref, Node) else self._data.get(ref)
        view = self._data.checkout(node)
        if len(view) == 0:
            raise InvalidInput(f"data version {node.name!r} is empty: there is nothing to embed")
        emb = self.embedder(node, embedder)
        all_ids = view.data_ids.astype(np.int64)
        ids = all_ids if ids is None else np.intersect1d(all_ids, np.asarray(ids, np.int64))
        if len(ids) == 0:
            raise InvalidInput(f"none of the given samples is in data version {node.name!r}")
        found, vectors = self._s.embeddings.get(emb.key, ids)
        missing = np.setdiff1d(ids, found, assume_unique=True)
        bar = as_progress(progress)
        bar.add_total(len(ids))
        bar.advance(len(found))
        if len(missing) and self._s.distributed:
            self._embed_distributed(node, embedder, emb, missing, bar)
            found, vectors = self._s.embeddings.get(emb.key, ids)
        elif len(missing):
            pos = np.searchsorted(all_ids, missing)
            step = max(emb.batch_size, 1)
            flush_every = max(2048 // step, 1) * step
            pending_ids, pending = [], []
            for start in range(0, len(pos), step):
                chunk = pos[start:start + step]
                pending.append(emb.embed(self._raw(view, node, chunk)))
                pending_ids.append(all_ids[chunk])
                bar.advance(len(chunk))
                if (start + step) % flush_every == 0:
                    self._s.embeddings.put(emb.key, np.concatenate(pending_ids), np.concatenate(pending))
                    pending_ids, pending = [], []
            if pending:
                self._s.embeddings.put(emb.key, np.concatenate(pending_ids), np.concatenate(pending))
            found, vectors = self._s.embeddings.get(emb.key, ids)
        dims = {len(v) for v in vectors}
        if len(found) != len(ids) or len(dims) != 1:
            raise InvalidInput(f"samples of {node.name!r} embed to vectors of different lengths {sorted(dims)} "
                               "(series of different sensor counts in one version?)")
        return found, np.stack(vectors)

    def _embed_distributed(self, node: Node, embedder: str | None, emb: E.Embedder, missing: np.ndarray,
                           progress: Progress) -> None:
        """One task per partition of ``missing``; the vectors come back here and are cached in one append."""
        parts = partition(missing, self._s.compute.partition_size)
        tasks = [EmbedTask(self._s.location, node, embedder, p) for p in parts]
        results = self._s.compute.map(embed_partition, tasks, on_done=lambda i, _: progress.advance(len(parts[i])))
        if len({v.shape[1] for _, v in results}) != 1:
            raise InvalidInput(f"samples of {node.name!r} embed to vectors of different lengths "
                               "(series of different sensor counts in one version?)")
        self._s.embeddings.put(emb.key, np.concatenate([i for i, _ in results]), np.concatenate([v for _, v in results]))

    def embed_samples(self, node: Node, embedder: str | None, data_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(data ids, (n, d) float32) of these samples of the version, embedded now (no cache read or write).

        Reads only these samples' rows, so one partition of a large version costs one partition of I/O."""
        view = self._data.checkout_samples(node, data_ids)
        emb = self.embedder(node, embedder)
        step = max(emb.batch_size, 1)
        chunks = [emb.embed(self._raw(view, node, np.arange(a, min(a + step, len(view))))) for a in range(0, len(view), step)]
        if len({c.shape[1] for c in chunks}) > 1:
            raise InvalidInput(f"samples of {node.name!r} embed to vectors of different lengths "
                               "(series of different sensor counts in one version?)")
        return view.data_ids.astype(np.int64), np.concatenate(chunks).astype(np.float32, copy=False)

    @staticmethod
    def _raw(view: Any, node: Node, positions: np.ndarray) -> list[Any]:
        modality = node.props.get("modality")
        if modality == "image":
            return view.read_images(positions)
        if modality == "series":
            return [view.raw_array(int(i)) for i in positions]
        return list(view.raw_table_matrix()[positions])

    # --- core sets ----------------------------------------------------------------------------
    def find(self, node: Node, embedder_key: str, k: int, seed: int) -> Node | None:
        for n in self._s.graph.lineage(node.id, "down", hops=1).nodes:
            if n.kind == KIND and n.props.get("data") == node.id and n.props.get("embedder") == embedder_key \
                    and n.props.get("k") == k and n.props.get("seed") == seed:
                return n
        return None

    def coreset(self, ref: str | int | Node, k: int | None = None, embedder: str | None = None, seed: int = 0,
                progress: ProgressLike | None = None) -> Node:
        """The version's core set, computed and recorded on first use, reused after."""
        node = ref if isinstance(ref, Node) else self._data.get(ref)
        n = int(node.props.get("samples", 0))
        if n == 0:
            raise InvalidInput(f"data version {node.name!r} is empty: a core set needs at least one sample")
        if k is not None and k < 1:
            raise InvalidInput(f"--k must be at least 1, got {k}")
        if k is not None and k > n:
            raise InvalidInput(f"--k {k} is larger than data version {node.name!r} ({n} samples)")
        k = k if k is not None else min(DEFAULT_K, n)
        emb = self.embedder(node, embedder)
        existing = self.find(node, emb.key, k, seed)
        if existing is not None:
            return existing
        ids, x = self.embeddings(node, embedder, progress)
        extra: dict[str, Any] = {}
        if self._s.distributed:
            # Every part sends k centres back, and the driver runs greedy once more on their union:
            # unless compute_partition_size was set, parts of at least 16 k samples keep that serial
            # step under 1/16 of the parallel work (2,048-sample parts would make it half of it).
            size = self._s.compute.partition_size
            parts = partition(ids, max(size, 16 * k) if size == DEFAULT_PARTITION_SIZE else size)
            merged = coreset_tasks.k_center(self._s.compute, self._s.location, emb.key, parts, k, seed=seed)
            chosen, core, radius = merged.ids, merged.vectors, merged.radius
            weights = coverage(x, core)
            extra = {"method": "k-center-partitioned", "partitions": merged.parts}
        else:
            result = k_center_greedy(x, k, seed=seed)
            chosen, core, radius = ids[result.indices], x[result.indices], result.radius
            weights = np.bincount(result.assign, minlength=k)
        buf = io.BytesIO()
        np.save(buf, core, allow_pickle=False)
        digest = self._s.artifacts.put_bytes(buf.getvalue())
        labels = self._labels(node, chosen)
        name = unique_name(self._s, f"coreset-{node.name}-k{k}-{emb.key}" + (f"-seed{seed}" if seed else ""))
        props = {"data": node.id, "modality": node.props.get("modality"), "embedder": emb.key, "k": k, "seed": seed,
                 "n": len(ids), "dim": int(x.shape[1]), "radius": float(radius), "matrix": digest,
                 "ids": [int(i) for i in chosen], "labels": labels, "weights": [int(w) for w in weights], **extra}
        return self._s.graph.record(KIND, name, props, parents=[(node.id, "CORESET_OF", {"k": k, "embedder": emb.key})],
                                    idsets={"samples": from_array(np.sort(chosen))})

    def matrix(self, core: Node) -> np.ndarray:
        digest = core.props["matrix"]
        blob = self._s.artifacts.get_verified(digest, f"core-set matrix {digest[:12]} of {core.name!r}")
        return np.load(io.BytesIO(blob), allow_pickle=False)

    def list(self) -> list[Node]:
        return self._s.graph.list(kinds=[KIND])

    def _labels(self, node: Node, chosen: np.ndarray) -> list[str | None]:
        """One class per core-set sample: its label, else its most frequent box category (for label_ot);
        ``NO_OBJECTS`` for a scene of a labelled version that has none (k-center likes such outliers)."""
        want = set(int(i) for i in chosen)
        anns = self._data.annotations(node)
        per: dict[int, Counter] = {}
        labelled = False
        for table in ("labels", "boxes"):
            t = anns.get(table)
            if t is None or t.num_rows == 0 or "category" not in t.column_names:
                continue
            labelled = True
            for did, cat in zip(t["data_id"].to_pylist(), t["category"].to_pylist()):
                if did in want and cat is not None:
                    per.setdefault(did, Counter())[cat] += 1
            break  # class labels win over boxes when a version has both
        if not labelled:
            return [None] * len(chosen)  # an unlabelled version: label_ot does not apply
        # a scene without boxes in a labelled version is a class of its own, not a missing label
        return [per[int(i)].most_common(1)[0][0] if int(i) in per else NO_OBJECTS for i in chosen]


@dataclass(frozen=True)
class EmbedTask:
    """One partition of a version to embed: what a task needs to reopen the stores and read its samples."""

    location: RepoLocation
    node: Node
    embedder: str | None
    ids: np.ndarray


def embed_partition(task: EmbedTask) -> tuple[np.ndarray, np.ndarray]:
    """(data ids, vectors) of one partition (an executor task: it opens the stores itself, writes nothing)."""
    stores = stores_at(task.location)
    try:
        data = DataVersions(stores)
        coresets = CoreSets(stores, data, TrainingVersions(stores, data, ModelVersions(stores)))
        return coresets.embed_samples(task.node, task.embedder, task.ids)
    finally:
        stores.graph.close()
