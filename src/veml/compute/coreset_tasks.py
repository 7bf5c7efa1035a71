"""k-center core sets over partitions of a version, one task per partition (DESIGN.md section 4).

This is :func:`veml.coreset.kcenter.k_center_partitioned` with its loop over parts turned into
tasks: each task reads only its partition's vectors from the embedding cache, runs greedy on
them and sends back its ``per_part`` centres (per_part x d floats, not N x d); the driver runs
greedy once more on the union.  A second round of tasks measures the covering radius of the
chosen centres partition by partition, so the full embedding matrix is never in one process.
Same seeds, same float32 vectors, same greedy: the result equals ``k_center_partitioned`` on
the same parts, which the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from veml.compute.executor import Executor, RepoLocation
from veml.coreset.kcenter import covering_radius, k_center_greedy
from veml.errors import InvalidInput, StorageError


@dataclass(frozen=True)
class PartTask:
    """One partition's work: read these ids' vectors of embedder ``key``, then run ``k`` greedy steps."""

    location: RepoLocation
    key: str
    ids: np.ndarray
    k: int
    seed: int


@dataclass(frozen=True)
class RadiusTask:
    location: RepoLocation
    key: str
    ids: np.ndarray
    centres: np.ndarray


@dataclass(frozen=True)
class PartCentres:
    ids: np.ndarray  # data ids of the partition's centres, in selection order
    vectors: np.ndarray  # float32 (per_part, d)
    rows_read: float


@dataclass(frozen=True)
class CoreSetResult:
    """The merged core set: data ids in selection order, their vectors, how well they cover the version."""

    ids: np.ndarray
    vectors: np.ndarray
    radius: float
    parts: int
    union: int
    rows_read: float


def _vectors(location: RepoLocation, key: str, ids: np.ndarray) -> np.ndarray:
    found, vectors = location.open_embeddings().get(key, ids)
    if len(found) != len(ids) or not np.array_equal(found, np.sort(ids)):
        raise StorageError(f"the embedding cache {key!r} lacks {len(ids) - len(found)} of a partition's "
                           f"{len(ids)} samples (embed the version before computing its core set)")
    if len({len(v) for v in vectors}) != 1:
        raise InvalidInput("samples of one partition embed to vectors of different lengths")
    order = np.argsort(np.argsort(ids, kind="stable"), kind="stable")  # back to the caller's id order
    return np.stack(vectors)[order]


def part_centres(task: PartTask) -> PartCentres:
    """Greedy k-center on one partition (a task: runs wherever the executor puts it)."""
    x = _vectors(task.location, task.key, task.ids)
    r = k_center_greedy(x, min(task.k, len(x)), seed=task.seed)
    return PartCentres(np.asarray(task.ids)[r.indices], x[r.indices], float(r.stats["rows_read"]))


def part_radius(task: RadiusTask) -> float:
    """Largest distance from a sample of one partition to its nearest centre (a task)."""
    return covering_radius(_vectors(task.location, task.key, task.ids), task.centres)


def k_center(executor: Executor, location: RepoLocation, key: str, parts: list[np.ndarray], k: int, *,
             seed: int = 0, per_part: int | None = None,
             progress: Callable[[int], None] | None = None) -> CoreSetResult:
    """Composable core set of the samples in ``parts`` (their vectors cached under ``key``).

    Part ``p`` runs greedy with seed ``seed + p`` and the union with ``seed``, exactly as
    ``k_center_partitioned`` does, so both give the same centres for the same parts.
    """
    if not parts:
        raise InvalidInput("a partitioned core set needs at least one part")
    total = sum(len(p) for p in parts)
    if isinstance(k, bool) or not 1 <= int(k) <= total:
        raise InvalidInput(f"k must be an integer between 1 and {total} (samples over all parts), got {k!r}")
    per = int(per_part or k)
    if per < 1:
        raise InvalidInput(f"per_part must be at least 1, got {per_part!r}")
    tasks = [PartTask(location, key, np.asarray(p, np.int64), per, seed + i) for i, p in enumerate(parts)]
    done = (lambda i, _: progress(len(parts[i]))) if progress else None
    picked = executor.map(part_centres, tasks, on_done=done)
    if len({c.vectors.shape[1] for c in picked}) != 1:
        raise InvalidInput("partitions embed to vectors of different lengths")
    union_ids = np.concatenate([c.ids for c in picked])
    union = np.concatenate([c.vectors for c in picked])
    if len(union) < k:  # only when per_part < k and the parts are small
        raise InvalidInput(f"the parts yield only {len(union)} centres for k={k}; raise per_part")
    top = k_center_greedy(union, int(k), seed=seed)
    centres = union[top.indices]
    radii = executor.map(part_radius, [RadiusTask(location, key, t.ids, centres) for t in tasks])
    rows = sum(c.rows_read for c in picked) + top.stats["rows_read"] + total
    return CoreSetResult(union_ids[top.indices], centres, float(max(radii)), len(parts), len(union), rows)
