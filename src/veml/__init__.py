"""VeML: version management for the whole ML lifecycle.

``veml.init(path)`` creates a repository, ``veml.open(path)`` finds one (upward from ``path``, or
``$VEML_REPO``); the returned :class:`~veml.repository.Repository` exposes ``.data``,
``.lineage`` and the integrity checks; ``veml.start_run(...)`` (or ``repo.start_run``) logs training that
runs outside VeML.

The names are imported on first use (PEP 562), so ``import veml.cli.main`` and ``veml --help`` do
not pay for the storage stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veml.repository import Repository, init, start_run
    from veml.repository import open as open  # noqa: A004

__version__ = "0.1.0"
__all__ = ["Repository", "init", "open", "start_run", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Repository", "init", "open", "start_run"):
        import veml.repository

        return getattr(veml.repository, name)
    raise AttributeError(f"module 'veml' has no attribute {name!r}")
