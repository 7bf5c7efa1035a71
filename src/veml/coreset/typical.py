"""Typical-cluster selection for tiny labelling budgets (TypiClust, Hacohen, Dekel & Weinshall, ICML 2022).

Why this file exists: with only a few labels per class, the samples a model is least sure about are
mostly outliers and confusable pairs from a few classes, and a batch of them teaches the model less
than the same number drawn at random ("cold start").  At such budgets the labels should cover the
data's modes instead: split the pool into ``budget`` clusters and take from each its most *typical*
sample, the one in the densest neighbourhood (inverse mean distance to its nearest neighbours).
Large clusters are served first, so when the budget is below the number of clusters kept the batch
follows the data's mass.

Arrays in, indices out; deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.spatial import cKDTree

from veml.errors import InvalidInput

NEIGHBOURS = 20  # the paper's K for typicality
MIN_CLUSTER = 5  # clusters smaller than this are skipped while larger ones remain (the paper's rule)


def typicality(x: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """1 / mean Euclidean distance to each row's ``k`` nearest other rows (``k`` capped by the rows)."""
    n = len(x)
    if n == 1:
        return np.ones(1)
    k = min(k, n - 1)
    dist, _ = cKDTree(x).query(x, k=k + 1)
    return 1.0 / (np.asarray(dist, np.float64).reshape(n, -1)[:, 1:].mean(axis=1) + 1e-12)


def typical_clusters(x: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Indices of ``budget`` rows of ``x``: the most typical row of each of ``budget`` k-means clusters.

    Clusters are taken largest first; clusters of fewer than ``MIN_CLUSTER`` rows come only after every
    larger one has given its sample.  Returns sorted by the order chosen (largest cluster first)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or not len(x):
        raise InvalidInput(f"typical_clusters needs a non-empty 2-D array, got shape {x.shape}")
    if not 1 <= budget <= len(x):
        raise InvalidInput(f"budget must lie in 1..{len(x)}, got {budget}")
    if budget == len(x):
        return np.arange(len(x))
    _, assign = kmeans2(x, budget, minit="++", seed=np.random.default_rng(seed), iter=30)
    sizes = np.bincount(assign, minlength=budget)
    order = sorted(np.flatnonzero(sizes), key=lambda c: (sizes[c] < MIN_CLUSTER, -sizes[c], c))
    picked: list[int] = []
    for c in order:
        members = np.flatnonzero(assign == c)
        picked.append(int(members[np.argmax(typicality(x[members]))]))
    if len(picked) < budget:  # empty clusters: fill with the most typical rows not yet taken
        rest = np.setdiff1d(np.arange(len(x)), picked)
        extra = rest[np.argsort(-typicality(x)[rest], kind="stable")]
        picked += [int(i) for i in extra[: budget - len(picked)]]
    return np.asarray(picked[:budget], np.int64)
