"""Using what is stored: similar data versions (core-set distances) and label-free drift tests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from veml.server.common import CONFLICT, ERRORS, Repo, jsonable, ref_of
from veml.server.models import DriftIn, DriftOut, SimilarIn, SimilarOut
from veml.server.throttle import pooled

router = APIRouter(tags=["lifecycles"], responses=ERRORS)

RefPath = Annotated[str, Path(min_length=1, max_length=255, description="data version id, name or tag")]


@router.post("/similar/{ref}", response_model=SimilarOut, status_code=201,
             summary="Rank the other stored data versions by core-set distance (records a similarity report)")
@pooled
def similar(repo: Repo, ref: RefPath, body: SimilarIn | None = None) -> Any:
    body = body or SimilarIn()
    out = repo.similarity.rank(ref, top=body.top, method=body.method, with_lifecycle=body.with_lifecycle, k=body.k,
                               embedder=body.embedder, include_related=body.include_related)
    return jsonable(out)


@router.post("/drift", response_model=DriftOut, status_code=201, responses=CONFLICT,
             summary="Label-free drift test of a test version against a reference (records a drift report)")
@pooled
def drift(repo: Repo, body: DriftIn) -> Any:
    out = repo.drift.check(None if body.reference is None else ref_of(body.reference), ref_of(body.test),
                           inference=None if body.inference is None else ref_of(body.inference), method=body.method,
                           alpha=body.alpha, k=body.k, permutations=body.permutations, embedder=body.embedder,
                           name=body.name)
    return jsonable(out)
