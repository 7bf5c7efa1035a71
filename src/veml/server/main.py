"""Running the server: the bind rule (DESIGN.md section 7) and uvicorn.

Loopback addresses may be served without a token; binding anything else without one is refused
before a socket is opened, because the API can create versions and read every stored sample.
"""

from __future__ import annotations

from typing import Any

from veml.errors import InvalidInput, MissingExtra

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("fastapi/uvicorn", "server") from exc


def check_bind(host: str, port: int, token: str | None) -> str | None:
    """The token to use (None for none), or :class:`InvalidInput` for a bind that is not allowed."""
    token = token.strip() if isinstance(token, str) else token
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidInput(f"port must be an integer in 0..65535, not {port!r}")
    if not host or not isinstance(host, str):
        raise InvalidInput("host must be a host name or address")
    if host not in LOOPBACK and not token:
        raise InvalidInput(f"veml serve refuses to bind {host} without --token: anyone who can reach it could read every "
                           f"sample and create versions (only {', '.join(LOOPBACK)} may be served without a token)")
    return token or None


def build_server(repo_path: Any = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 log_level: str = "info"):
    """A configured, not yet started ``uvicorn.Server`` (tests run it in a thread)."""
    token = check_bind(host, port, token)
    _require_extra()
    import uvicorn

    from veml.server.app import create_app

    allowed = None if token else {host, *LOOPBACK}
    app = create_app(repo_path, token=token, allowed_hosts=allowed)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)
    return uvicorn.Server(config)


def serve(repo_path: Any = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log_level: str = "info") -> None:
    build_server(repo_path, host, port, token, log_level).run()


__all__ = ["serve", "build_server", "check_bind", "LOOPBACK"]
