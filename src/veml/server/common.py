"""What every route module shares: the repository dependency, pagination, JSON cleaning, errors."""

from __future__ import annotations

import math
from typing import Annotated, Any, Sequence

import numpy as np
from fastapi import Depends, Query, Request

from veml.errors import AmbiguousName, Conflict, InvalidInput, MissingExtra, NotFound, RepositoryNotFound, VemlError
from veml.repository import Repository
from veml.server.models import ErrorOut

MAX_LIMIT = 500
DEFAULT_LIMIT = 50

#: VeML errors → HTTP status, most specific first (FilterError is an InvalidInput).
STATUS: tuple[tuple[type[VemlError], int], ...] = (
    (NotFound, 404), (RepositoryNotFound, 404), (AmbiguousName, 400), (Conflict, 409), (InvalidInput, 400),
    (MissingExtra, 501),
)

#: Documented error answers of every route: one shape, ``{"error": "..."}``.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Bad input (also an ambiguous name)"},
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token (servers started with a token)"},
    404: {"model": ErrorOut, "description": "Unknown version, sample or route"},
    413: {"model": ErrorOut, "description": "Request body over the server's limit"},
    422: {"model": ErrorOut, "description": "Request parameters or body failed validation"},
    503: {"model": ErrorOut, "description": "The server's work queue is full (see the Retry-After header)"},
    504: {"model": ErrorOut, "description": "No answer within the request time budget"},
}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut, "description": "Name or tag already taken"}}


def status_of(exc: VemlError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def repo_of(request: Request) -> Repository:
    return request.app.state.repo


Repo = Annotated[Repository, Depends(repo_of)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size (at most {MAX_LIMIT})")]
Offset = Annotated[int, Query(ge=0, le=2**62, description="items to skip")]


def jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN and infinities become null, numpy scalars and arrays Python values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, bytes):
        return None
    return obj


def page(items: Sequence[Any], total: int, limit: int, offset: int, **extra: Any) -> dict[str, Any]:
    return {**extra, "items": jsonable(list(items)), "total": int(total), "limit": limit, "offset": offset}


def sliced(items: Sequence[Any], limit: int, offset: int, **extra: Any) -> dict[str, Any]:
    return page(items[offset:offset + limit], len(items), limit, offset, **extra)


def ref_of(value: str | int) -> str | int:
    """A reference from a JSON body: an id or a name, never anything else (lists, objects, empties)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"a version reference is an id or a name, not {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise InvalidInput("a version reference must not be empty")
    return value
