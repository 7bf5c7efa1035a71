"""``veml.server``: the REST API (``/api/v1``) over one repository, a thin face like ``veml.cli``.

Routes parse the request, call the Python API of :class:`~veml.repository.Repository` and render
its answer as the JSON the CLI prints with ``--json``.  FastAPI and uvicorn are the ``server``
extra; they are imported only when a server is built, so ``import veml.server`` stays cheap.
"""

from __future__ import annotations

from typing import Any


def create_app(repo_path: Any = None, token: str | None = None, **kwargs: Any):
    """The FastAPI application (see :func:`veml.server.app.create_app`)."""
    from veml.server.main import _require_extra

    _require_extra()
    from veml.server.app import create_app as _create

    return _create(repo_path, token=token, **kwargs)


def serve(repo_path: Any = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log_level: str = "info", limits: Any = None) -> None:
    """Serve the REST API with uvicorn until interrupted (see :func:`veml.server.main.serve`)."""
    from veml.server.main import serve as _serve

    _serve(repo_path, host=host, port=port, token=token, log_level=log_level, limits=limits)


__all__ = ["create_app", "serve"]
