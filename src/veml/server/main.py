"""Running the server: the bind rule (DESIGN.md section 7) and uvicorn.

Loopback addresses may be served without a token; binding anything else without one is refused
before a socket is opened, because the API can create versions and read every stored sample.
The token comes from ``$VEML_TOKEN`` or a file, so it never shows in the process list.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from veml.errors import InvalidInput, MissingExtra
from veml.server.limits import Limits

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "VEML_TOKEN"
MAX_TOKEN_FILE = 4096


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
        raise InvalidInput(f"veml serve refuses to bind {host} without a token (--token-file PATH or ${TOKEN_ENV}): "
                           f"anyone who can reach it could read every "
                           f"sample and create versions (only {', '.join(LOOPBACK)} may be served without a token)")
    return token or None


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> str | None:
    """The server's token: ``--token``, else the first line of ``--token-file``, else ``$VEML_TOKEN``, else none.

    A token file may be a pipe (``--token-file <(pass show veml)``); only its first
    ``MAX_TOKEN_FILE`` bytes are read, and an empty or unreadable one is :class:`InvalidInput`.
    """
    if token is not None:
        return token
    if token_file is not None:
        try:
            with open(token_file, "rb") as f:
                raw = f.read(MAX_TOKEN_FILE + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
        if len(raw) > MAX_TOKEN_FILE:
            raise InvalidInput(f"token file {token_file} is over {MAX_TOKEN_FILE} bytes: it should hold one token")
        lines = raw.decode("utf-8", "replace").strip().splitlines()
        if not lines or not lines[0].strip():
            raise InvalidInput(f"token file {token_file} is empty")
        return lines[0].strip()
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None


def build_server(repo_path: Any = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 log_level: str = "info", limits: Limits | None = None):
    """A configured, not yet started ``uvicorn.Server`` (tests run it in a thread)."""
    token = check_bind(host, port, token)
    _require_extra()
    import uvicorn

    from veml.server.app import create_app

    allowed = None if token else {host, *LOOPBACK}
    app = create_app(repo_path, token=token, allowed_hosts=allowed, limits=limits)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)
    return uvicorn.Server(config)


def serve(repo_path: Any = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log_level: str = "info", limits: Limits | None = None) -> None:
    build_server(repo_path, host, port, token, log_level, limits).run()


__all__ = ["serve", "build_server", "check_bind", "resolve_token", "LOOPBACK", "TOKEN_ENV"]
