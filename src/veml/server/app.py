"""The FastAPI application: one repository, the ``/api/v1`` routes, the guard and the error mapping.

Every error answer is ``{"error": "..."}``: VeML's own errors by kind (not found 404, bad input
400, conflict 409), request validation 422, a missing or wrong token 401, a body over its cap 413,
a full work queue 503 (with Retry-After), a request past its time budget 504; anything else is a
bug and answers 500 without its message (the traceback goes to the server log).
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from typing import Any, Iterable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

import veml
from veml.errors import VemlError
from veml.server import routes_data, routes_lifecycle, routes_ml, routes_versions, ui
from veml.server.common import status_of
from veml.server.limits import Limits
from veml.server.links import add_links
from veml.server.predict import RunnerCache
from veml.server.throttle import BodyLimit, Budget, WorkPool

PREFIX = "/api/v1"


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8000
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _public(scope: dict) -> bool:
    """The UI's page and static files, answered without the token (they hold no repository data)."""
    path = scope.get("path", "")
    return scope.get("method") in ("GET", "HEAD") and (path == "/" or path.startswith("/ui/"))


class Guard:
    """ASGI middleware in front of everything (routes, the OpenAPI document, unknown paths).

    With a token: ``Authorization: Bearer <token>`` or 401, except for ``GET``/``HEAD`` of the web UI's
    static files (``/`` and ``/ui/...``: no data, so a browser can load the page, which then asks for
    the token and sends it on every API call).  Without one (loopback only): the Host header must name
    this machine, so a web page cannot reach the API through DNS rebinding.
    """

    def __init__(self, app: Any, token: str | None, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed = {h.lower() for h in (allowed_hosts or ())} | {"127.0.0.1", "localhost", "::1"}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = None
        if self.token is not None:
            if _public(scope):
                await self.app(scope, receive, send)
                return
            scheme, _, credential = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(credential.strip().encode(), self.token):
                refusal = _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        elif _hostname(headers.get("host", "").lower()) not in self.allowed:
            refusal = _error(400, "unexpected Host header: this server answers only on its loopback address "
                                  "(serve with a token to reach it under other names)")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(VemlError)
    async def _veml(request: Request, exc: VemlError) -> JSONResponse:
        status = status_of(exc)
        return _error(status, str(exc) if status < 500 or status == 501 else f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


def create_app(repo_path: Any = None, token: str | None = None, *, allowed_hosts: Iterable[str] | None = None,
               limits: Limits | None = None) -> FastAPI:
    """The REST API over the repository at ``repo_path`` (or the nearest one upward / ``$VEML_REPO``).

    The repository is opened now, so a wrong path fails here rather than on the first request.
    Without a token only requests whose Host header names a loopback address (or one of
    ``allowed_hosts``) are answered: pass ``allowed_hosts={"testserver"}`` to use Starlette's
    ``TestClient`` against an app built without a token.  ``limits`` (default :class:`Limits`) caps
    bodies, multipart parts, the work pool and each request's time (see :mod:`veml.server.throttle`).
    """
    limits = limits or Limits()
    repo = veml.open(repo_path)
    pool = WorkPool(limits.workers, limits.queue, limits.retry_after_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            pool.shutdown()
            repo.close()

    deps = []
    if token:
        # documents the scheme in the OpenAPI document; the Guard middleware enforces it on every API request
        deps.append(Depends(HTTPBearer(auto_error=False, description="the token the server was started with")))
    app = FastAPI(title="VeML", version=veml.__version__, description=__doc__, lifespan=lifespan,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None, dependencies=deps)
    app.state.repo, app.state.limits, app.state.pool = repo, limits, pool
    app.state.runners = RunnerCache()
    for module in (routes_versions, routes_data, routes_ml, routes_lifecycle):
        app.include_router(module.router, prefix=PREFIX)
    ui.mount(app)  # the web UI: GET / and /ui/... (static files, not in the OpenAPI document)
    generate = app.openapi

    def openapi() -> dict[str, Any]:  # FastAPI's document plus the links between operations (veml.server.links)
        if app.openapi_schema is None:
            app.openapi_schema = add_links(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    _install_handlers(app)
    # the last added runs first: body caps, then the token / Host check, then the time budget
    app.add_middleware(Budget, seconds=limits.budget_s)
    app.add_middleware(Guard, token=token or None, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, limits=limits)
    return app


__all__ = ["create_app", "PREFIX", "Guard"]
