"""Which compute back-end a repository asks for, read and checked without importing any back-end (or numpy),
so a repository with a bad ``compute_url`` / ``$VEML_COMPUTE`` fails when it opens, before any command runs."""

from __future__ import annotations

import os
from typing import Any, Mapping

from veml.errors import InvalidInput

ENV_VAR = "VEML_COMPUTE"
URL_KEY = "compute_url"
PARTITION_KEY = "compute_partition_size"
DEFAULT_PARTITION_SIZE = 2048


def compute_target(config: Mapping[str, Any]) -> tuple[str, str | None, int]:
    """(kind, address, partition size): ``("local", None, n)`` or ``("ray", address or None, n)``."""
    url = str(os.environ.get(ENV_VAR) or config.get(URL_KEY) or "local").strip()
    raw_size = config.get(PARTITION_KEY, DEFAULT_PARTITION_SIZE)
    try:
        size = int(raw_size)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or isinstance(raw_size, bool):
        raise InvalidInput(f"{PARTITION_KEY} must be a positive integer, got {raw_size!r}")
    if url == "local":
        return "local", None, size
    if url == "ray":
        return "ray", None, size
    if url.startswith("ray://"):
        return "ray", url, size
    if url.startswith("ray:") and len(url) > 4:
        return "ray", url[4:], size
    source = f"${ENV_VAR}" if os.environ.get(ENV_VAR) else URL_KEY
    raise InvalidInput(f"unsupported {source} {url!r}: use local, ray, ray:ADDRESS or ray://HOST:PORT")


__all__ = ["compute_target", "ENV_VAR", "URL_KEY", "PARTITION_KEY", "DEFAULT_PARTITION_SIZE"]
