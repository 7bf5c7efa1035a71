"""One error hierarchy for the whole package.

Faces (CLI, server) catch :class:`VemlError` and print its message as a single ``error:`` line;
anything else escaping is a bug and keeps its traceback.  Each subclass exists because a caller
may want to react to it differently (HTTP status, retry, exit code), not for decoration.
"""

from __future__ import annotations


class VemlError(Exception):
    """Base of every error VeML raises on purpose."""


class RepositoryNotFound(VemlError):
    """No ``.veml/`` directory where one was expected."""


class RepositoryExists(VemlError):
    """``init`` on a path that already holds a repository."""


class NotFound(VemlError):
    """An unknown version id, name or tag."""


class AmbiguousName(VemlError):
    """A reference that matches more than one version."""


class Conflict(VemlError):
    """A name already taken, or a write that lost a race it cannot retry."""


class InvalidInput(VemlError):
    """Malformed user input: files, annotations, arrays, expressions, arguments."""


class FilterError(InvalidInput):
    """A filter expression that does not parse or names an unknown column."""


class StorageError(VemlError):
    """The storage layer failed or found damaged data."""


class SchemaOutdated(StorageError):
    """The metadata database was made by an older VeML; ``veml upgrade`` migrates it."""


class MissingExtra(VemlError):
    """An optional back-end is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'veml[{extra}]'")
        self.module = module
        self.extra = extra
