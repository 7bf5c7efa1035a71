"""Versions of every kind, tags, lineage, lifecycles and the stored drift / similarity reports."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from veml.server import queries
from veml.server.common import CONFLICT, ERRORS, Limit, Offset, Repo, jsonable, page, sliced
from veml.server.models import KIND_NAMES, LifecyclePage, LineageIdsOut, LineageOut, ReportPage, TagIn, VersionOut, VersionPage
from veml.versions.lineage import DEFAULT_PAGE, MAX_PAGE

router = APIRouter(responses=ERRORS)

RefPath = Annotated[str, Path(min_length=1, max_length=255, description="version id, name or tag")]


@router.get("/versions", response_model=VersionPage, tags=["versions"], summary="List versions, oldest first")
def list_versions(repo: Repo, kind: Annotated[list[KIND_NAMES] | None, Query(description="only these kinds")] = None,
                  limit: Limit = 50, offset: Offset = 0) -> Any:
    nodes, total = repo.versions(queries.kinds_of(kind), limit, offset)
    return page([n.to_json() for n in nodes], total, limit, offset)


@router.get("/versions/{ref}", response_model=VersionOut, tags=["versions"], summary="One version of any kind")
def get_version(repo: Repo, ref: RefPath) -> Any:
    return jsonable(repo.get(ref).to_json())


@router.post("/versions/{ref}/tags", response_model=VersionOut, tags=["versions"], responses=CONFLICT,
             summary="Tag a version (a tag is another unique name for it)")
def tag_version(repo: Repo, ref: RefPath, body: TagIn) -> Any:
    return jsonable(repo.data.tag(ref, body.tag).to_json())


Direction = Literal["up", "down", "both"]
Hops = Annotated[int | None, Query(ge=0, le=10_000, description="hop limit (none: the whole walk)")]


@router.get("/lineage/{ref}", response_model=LineageOut, tags=["versions"],
            summary="Ancestors and/or descendants, a page of versions at a time (in id order)")
def lineage(repo: Repo, ref: RefPath, direction: Direction = "up", hops: Hops = None,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"versions per page (at most {MAX_PAGE:,})")] = DEFAULT_PAGE,
            cursor: Annotated[str | None, Query(max_length=40, description="next_cursor of the previous page")] = None) -> Any:
    return jsonable(repo.lineage.page(ref, direction, hops, limit, cursor).to_json())


@router.get("/lineage/{ref}/ids", response_model=LineageIdsOut, tags=["versions"],
            summary="Every version id of the walk at once (no node or edge is read)")
def lineage_ids(repo: Repo, ref: RefPath, direction: Direction = "up", hops: Hops = None) -> Any:
    return repo.lineage.ids(ref, direction, hops).to_json()


@router.get("/lifecycles", response_model=LifecyclePage, tags=["lifecycles"],
            summary="Complete lifecycles: data → model → training → inference, with the key metric")
def lifecycles(repo: Repo, limit: Limit = 50, offset: Offset = 0) -> Any:
    return sliced(repo.lifecycles.list(), limit, offset)


@router.get("/reports", response_model=ReportPage, tags=["lifecycles"], summary="Stored drift and similarity reports")
def reports(repo: Repo, kind: Literal["drift", "similarity"] | None = None, limit: Limit = 50, offset: Offset = 0) -> Any:
    kinds = [queries.REPORT_KINDS[kind]] if kind else sorted(queries.REPORT_KINDS.values())
    nodes, total = repo.versions(kinds, limit, offset)
    return page([n.to_json() for n in nodes], total, limit, offset)
