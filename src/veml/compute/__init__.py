"""Compute back-ends: run per-partition work in this process or on a Ray cluster (optional ``[ray]`` extra).

Sits beside ``store/`` and ``adapters/`` in the layers (DESIGN.md section 2): it may use stores,
core-set algorithms and adapters, never the version modules above it — they pass it plain
functions and a :class:`RepoLocation`, and it hands back plain results.
"""

from __future__ import annotations

from veml.compute.executor import (
    ENV_VAR,
    PARTITION_KEY,
    URL_KEY,
    ComputeError,
    Executor,
    LocalExecutor,
    RayExecutor,
    RepoLocation,
    open_executor,
    partition,
)

__all__ = ["ComputeError", "Executor", "LocalExecutor", "RayExecutor", "RepoLocation", "open_executor", "partition",
           "ENV_VAR", "URL_KEY", "PARTITION_KEY"]
