"""What one client may ask of the server: body sizes, multipart parts, the work pool, a time budget.

Plain data (no web framework imported), so ``veml serve`` can check its flags before anything
starts.  :mod:`veml.server.throttle` enforces these limits; docs/SECURITY.md lists them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

MIB = 1024 * 1024


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _positive(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Limits:
    """Caps on each request and on the work the server takes on at once."""

    max_body: int = 1 * MIB  #: bytes of any request body but an upload (JSON bodies); more: 413
    max_upload: int = 32 * MIB  #: bytes of a body sent to ``POST /inference/{ref}/predict``; more: 413
    max_files: int = 1  #: file parts in a multipart upload; more: 400
    max_fields: int = 16  #: other (non-file) parts in a multipart upload; more: 400
    max_field: int = 64 * 1024  #: bytes of one non-file multipart part; more: 400
    workers: int = default_workers()  #: threads running CPU-bound work (predict, filter, images, ...)
    queue: int = 16  #: jobs that may wait for a worker; more: 503 with Retry-After
    budget_s: float = 60.0  #: seconds from a request's arrival to its answer's first byte; more: 504
    retry_after_s: int = 5  #: the Retry-After a 503 carries

    def __post_init__(self) -> None:
        from veml.errors import InvalidInput

        for f in fields(self):
            value = getattr(self, f.name)
            if not _positive(value):
                raise InvalidInput(f"server limit {f.name} must be a positive number, not {value!r}")

    @classmethod
    def of(cls, max_body_mb: float | None = None, max_upload_mb: float | None = None, workers: int | None = None,
           queue: int | None = None, request_timeout: float | None = None) -> "Limits":
        """The defaults with ``veml serve``'s options applied (None keeps a default)."""
        from veml.errors import InvalidInput

        given = {"max_body": max_body_mb, "max_upload": max_upload_mb, "workers": workers, "queue": queue,
                 "budget_s": request_timeout}
        flags = {"max_body": "--max-body-mb", "max_upload": "--max-upload-mb", "workers": "--workers",
                 "queue": "--queue", "budget_s": "--request-timeout"}
        values = {}
        for key, value in given.items():
            if value is None:
                continue
            if not _positive(value):
                raise InvalidInput(f"{flags[key]} must be a positive number, not {value!r}")
            values[key] = int(value * MIB) if key in ("max_body", "max_upload") else value
        return cls(**values)


__all__ = ["Limits", "MIB", "default_workers"]
