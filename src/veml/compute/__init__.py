"""Compute back-ends: run per-partition work in this process or on a Ray cluster (optional ``[ray]`` extra).

Sits beside ``store/`` and ``adapters/`` in the layers (DESIGN.md section 2): it may use stores,
core-set algorithms and adapters, never the version modules above it — they pass it plain
functions and a :class:`RepoLocation`, and it hands back plain results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from veml.compute.target import ENV_VAR, PARTITION_KEY, URL_KEY

if TYPE_CHECKING:
    from veml.compute.executor import (
        ComputeError,
        Executor,
        LocalExecutor,
        RayExecutor,
        RepoLocation,
        open_executor,
        partition,
    )

_LAZY = ("ComputeError", "Executor", "LocalExecutor", "RayExecutor", "RepoLocation", "open_executor", "partition")


def __getattr__(name: str) -> Any:
    """The executors load numpy: imported on first use, so opening a repository checks its compute URL for free."""
    if name in _LAZY:
        from veml.compute import executor

        return getattr(executor, name)
    raise AttributeError(f"module 'veml.compute' has no attribute {name!r}")


__all__ = ["ComputeError", "Executor", "LocalExecutor", "RayExecutor", "RepoLocation", "open_executor", "partition",
           "ENV_VAR", "URL_KEY", "PARTITION_KEY"]
