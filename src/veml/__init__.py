"""VeML: version management for the whole ML lifecycle.

``veml.init(path)`` creates a repository, ``veml.open(path)`` finds one (upward from ``path``, or
``$VEML_REPO``); the returned :class:`~veml.repository.Repository` exposes ``.data``,
``.lineage`` and the integrity checks.
"""

from veml.repository import Repository, init
from veml.repository import open as open  # noqa: A004

__version__ = "0.1.0"
__all__ = ["Repository", "init", "open", "__version__"]
