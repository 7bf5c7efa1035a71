"""Enforcing :class:`~veml.server.limits.Limits`: ASGI layers in front of the app and the bounded work pool.

* :class:`BodyLimit` refuses a body over its cap with 413: a declared ``Content-Length`` before a
  byte is read, a chunked body as soon as the bytes counted so far pass the cap (never buffered whole).
* :class:`Budget` answers 504 when a request has no answer within its time budget (reading a slow
  body counts); a response that has started (the server-sent events of a live run) is not cut.
* :class:`WorkPool` runs CPU-bound work (models, image decoding, DuckDB, table scans) on a few
  threads, off the event loop, with a bounded number of waiting jobs: past it, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from typing import Any, Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from veml.server.limits import MIB, Limits

CLOSE = {"Connection": "close"}  # a refused body is not read to its end: the connection cannot be reused


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB else f"{n} bytes"


class BodyTooLarge(HTTPException):
    def __init__(self, cap: int, what: str) -> None:
        super().__init__(413, f"request body over the {_size(cap)} limit for {what}", headers=dict(CLOSE))


class Busy(HTTPException):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(503, "the server is busy (its work queue is full); retry later",
                         headers={"Retry-After": str(retry_after_s)})


def is_upload(scope: dict) -> bool:
    """Requests that carry an upload (the predict route) get the upload cap; every other body the JSON cap."""
    return scope.get("method") == "POST" and scope.get("path", "").endswith("/predict")


class BodyLimit:
    def __init__(self, app: Any, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = is_upload(scope)
        cap, what = (self.limits.max_upload, "uploads") if upload else (self.limits.max_body, "request bodies")
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            exc = BodyTooLarge(cap, what)
            await JSONResponse({"error": exc.detail}, 413, headers=exc.headers)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap, what)
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no exception handler answered it
            if started:
                raise
            await JSONResponse({"error": exc.detail}, 413, headers=exc.headers)(scope, receive, send)


class Budget:
    def __init__(self, app: Any, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = asyncio.timeout(self.seconds)
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                budget.reschedule(None)  # the answer has begun: a stream may run on
            await send(message)

        try:
            async with budget:
                await self.app(scope, receive, watched)
        except TimeoutError:
            if not budget.expired() or started:
                raise
            await JSONResponse({"error": f"no answer within the request time budget of {self.seconds:g} s"}, 504,
                               headers=dict(CLOSE))(scope, receive, send)


class WorkPool:
    """A few worker threads and at most ``queue`` jobs waiting for one; a job past that is :class:`Busy`."""

    def __init__(self, workers: int, queue: int, retry_after_s: int = 5) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="veml-work")
        self.capacity, self.retry_after_s = workers + queue, retry_after_s
        self._lock = threading.Lock()
        self.pending = 0  # running + waiting

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        with self._lock:
            if self.pending >= self.capacity:
                raise Busy(self.retry_after_s)
            self.pending += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)  # a job cancelled while waiting frees its place too
        return future

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def _release(self, _: Any) -> None:
        with self._lock:
            self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def pooled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A plain route function run in the app's :class:`WorkPool` instead of Starlette's unbounded wait.

    FastAPI sees ``fn``'s parameters plus the request (to reach the pool), so the route keeps its
    parameters, validation and OpenAPI document.
    """
    sig = inspect.signature(fn, eval_str=True)  # the annotations resolve in fn's module, not this one
    own = [p.name for p in sig.parameters.values() if p.annotation is Request]
    name = own[0] if own else "pool_request_"  # FastAPI passes the request to one parameter only
    params = list(sig.parameters.values())
    if not own:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Request))

    async def route(**kwargs: Any) -> Any:
        request = kwargs[name] if own else kwargs.pop(name)
        return await request.app.state.pool.run(functools.partial(fn, **kwargs))

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):  # not __wrapped__: FastAPI must see a coroutine
        setattr(route, attr, getattr(fn, attr))
    route.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return route


__all__ = ["BodyLimit", "Budget", "WorkPool", "Busy", "BodyTooLarge", "pooled", "is_upload"]
