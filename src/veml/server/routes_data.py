"""Data versions: statistics, sample rows, stored images, filter and merge."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from PIL import Image

from veml.errors import StorageError
from veml.server.common import CONFLICT, ERRORS, Limit, Offset, Repo, jsonable, page, ref_of
from veml.server.models import DataStatsOut, FilterIn, MergeIn, SampleDetailOut, SamplePage, VersionOut
from veml.server.throttle import pooled
from veml.versions.stats import compute_stats

router = APIRouter(prefix="/data", tags=["data"], responses=ERRORS)

RefPath = Annotated[str, Path(min_length=1, max_length=255, description="data version id, name or tag")]
DataId = Annotated[int, Path(ge=0, lt=2**32, description="sample id (data_id)")]
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "gif": "image/gif", "bmp": "image/bmp",
         "webp": "image/webp", "tiff": "image/tiff"}
_IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}


@router.get("/{ref}/stats", response_model=DataStatsOut, summary="A data version with its statistics (as `veml data show`)")
@pooled
def stats(repo: Repo, ref: RefPath) -> Any:
    node = repo.data.get(ref)
    s = compute_stats(repo.data.checkout(node))
    return jsonable({**node.to_json(), "categories": s["categories"], "stats": s})


Where = Annotated[str | None, Query(max_length=4000, description="filter expression, as `veml data filter --where` "
                                                               "(an allow-listed SQL subset: docs/SECURITY.md)")]
Sort = Annotated[str | None, Query(max_length=255, description="column to sort by: a sample column, a typed column or "
                                                              "an annotation column (a sample's smallest value)")]


@router.get("/{ref}/samples", response_model=SamplePage,
            summary="A page of sample rows (no payload) with their annotations, optionally filtered and sorted")
@pooled
def samples(repo: Repo, ref: RefPath, limit: Limit = 50, offset: Offset = 0, where: Where = None, sort: Sort = None,
            order: Literal["asc", "desc"] = "asc") -> Any:
    p = repo.data.samples_page(ref, where, sort, order == "desc", limit, offset)
    return page(p.rows, p.total, limit, offset, version=p.version.id, where=p.where, sort=p.sort, order=order)


@router.get("/{ref}/samples/{data_id}", response_model=SampleDetailOut,
            summary="One sample with its annotations, the data versions holding it and (series) its values")
@pooled
def sample(repo: Repo, ref: RefPath, data_id: DataId) -> Any:
    d = repo.data.sample_detail(ref, data_id)
    return jsonable({"version": d.version.id, "sample": d.row, "versions": list(d.versions), "series": d.series})


@router.get("/{ref}/samples/{data_id}/image", response_class=Response, summary="A stored image, as stored (or a PNG thumbnail)",
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "the image bytes"}})
@pooled
def image(repo: Repo, request: Request, ref: RefPath, data_id: DataId,
          thumbnail: Annotated[int | None, Query(ge=8, le=1024, description="longest side of a PNG thumbnail")] = None) -> Response:
    node = repo.data.get(ref)
    payload, fmt, digest = repo.data.sample_payload(node, data_id)
    etag = f'"{digest}{"-t" + str(thumbnail) if thumbnail else ""}"' if digest else None
    headers = {**_IMMUTABLE, **({"ETag": etag} if etag else {})}
    if etag and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if thumbnail is None:
        return Response(payload, media_type=_MIME.get(fmt.lower(), "application/octet-stream"), headers=headers)
    try:
        with Image.open(io.BytesIO(payload)) as im:
            im = im.convert("RGB")
            im.thumbnail((thumbnail, thumbnail))
            out = io.BytesIO()
            im.save(out, format="PNG")
    except (OSError, ValueError) as exc:
        raise StorageError(f"stored image of sample {data_id} cannot be decoded: {exc}") from None
    return Response(out.getvalue(), media_type="image/png", headers=headers)


@router.post("/{ref}/filter", response_model=VersionOut, status_code=201, responses=CONFLICT,
             summary="A new version: samples with a row matching a filter expression")
@pooled
def filter_version(repo: Repo, ref: RefPath, body: FilterIn) -> Any:
    return jsonable(repo.data.filter(ref, body.where, body.name, body.keep_annotations).to_json())


@router.post("/merge", response_model=VersionOut, status_code=201, responses=CONFLICT, summary="A new version: the union")
@pooled
def merge(repo: Repo, body: MergeIn) -> Any:
    return jsonable(repo.data.merge([ref_of(v) for v in body.versions], body.name).to_json())
