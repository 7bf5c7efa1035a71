"""Training runs (with their logs, streamed while they run), prediction versions, and serving a deployment."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, AsyncIterator, Literal

import pyarrow.compute as pc
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from veml.errors import InvalidInput, NotFound
from veml.metrics import SCORE_THRESHOLD as DETECTION_THRESHOLD
from veml.server import predict as P
from veml.server.common import ERRORS, Limit, Offset, Repo, jsonable, repo_of
from veml.server.models import (CompareOut, ErrorOut, OutcomePageOut, PrCurvesOut, PredictionOut, PredictionSampleOut, PredictJsonIn, PredictOut, TrainingLogsOut,
                                TrainingOut)
from veml.server.throttle import pooled

router = APIRouter(responses=ERRORS)

RefPath = Annotated[str, Path(min_length=1, max_length=255, description="version id, name or tag")]
DataId = Annotated[int, Path(ge=0, lt=2**32, description="sample id (data_id)")]
AfterId = Annotated[int, Query(ge=0, le=2**62, description="only log rows with a larger id")]
POLL_S = 0.5
KEEPALIVE_S = 15.0


@router.get("/training/{ref}", response_model=TrainingOut, tags=["training"], summary="A training run: status, metrics, profile")
def training(repo: Repo, ref: RefPath) -> Any:
    return jsonable(repo.training.describe(repo.training.get(ref)))


CompareRefs = Annotated[list[str], Query(min_length=1, max_length=20, alias="ref",
                                         description="a model or training version (id, name or tag); repeat for each, 1 to 20")]


@router.get("/models/compare", response_model=CompareOut, tags=["training"],
            summary="Model and training versions side by side: model spec, training parameters, final metrics")
def models_compare(repo: Repo, refs: CompareRefs) -> Any:
    return jsonable(repo.training.compare(refs).to_json())


@router.get("/training/{ref}/logs", response_model=TrainingLogsOut, tags=["training"],
            summary="Logged metric rows after a cursor (read on with next_after_id)")
def training_logs(repo: Repo, ref: RefPath, after_id: AfterId = 0, limit: Limit = 50) -> Any:
    node = repo.training.get(ref)
    status = repo.training.status(node)["status"]  # read before the rows: a finished run's rows are all there
    rows = repo.training.logs(node.id, after_id)
    shown = rows[:limit]
    return jsonable({"training": node.id, "status": status, "logs": shown,
                     "next_after_id": shown[-1]["id"] if shown else after_id, "more": len(rows) > limit})


def _event(kind: str, payload: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(jsonable(payload))}\n\n"


@router.get("/training/{ref}/stream", tags=["training"], response_class=StreamingResponse,
            summary="Server-sent events: one 'log' event per new row until the run stops, then one 'end' event",
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "event: log (data: a log row, id: its id), then event: end (data: status)"}})
async def training_stream(request: Request, ref: RefPath, after_id: AfterId = 0,
                          last_event_id: Annotated[str | None, Header(description="resume after this row id")] = None):
    repo = repo_of(request)
    node = await run_in_threadpool(repo.training.get, ref)
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidInput("Last-Event-ID must be a log row id")
        after_id = max(after_id, int(last_event_id))

    async def events() -> AsyncIterator[str]:
        after, beat = after_id, time.monotonic()
        while True:
            status = (await run_in_threadpool(repo.training.status, node))["status"]
            rows = await run_in_threadpool(repo.training.logs, node.id, after)
            for row in rows:
                after = row["id"]
                yield _event("log", row, row["id"])
            if status != "running":
                yield _event("end", {"training": node.id, "status": status})
                return
            if time.monotonic() - beat > KEEPALIVE_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/predictions/{ref}", response_model=PredictionOut, tags=["inference"],
            summary="A prediction version: metrics (confusion matrix, per class) and the worst samples")
@pooled
def prediction(repo: Repo, ref: RefPath) -> Any:
    return jsonable(repo.inference.get_prediction(ref).to_json())


@router.get("/predictions/{ref}/samples/{data_id}", response_model=PredictionSampleOut, tags=["inference"],
            summary="One sample's predicted rows (detection: boxes in image pixels with category and score), best first")
@pooled
def prediction_sample(repo: Repo, ref: RefPath, data_id: DataId, limit: Limit = 100, offset: Offset = 0) -> Any:
    node = repo.inference.get_prediction(ref)
    if data_id not in repo.data.ids(node.props["data"]):
        raise NotFound(f"sample {data_id} is not in prediction version {node.name!r}")
    table = repo.inference.predictions(node.id)
    rows = table.filter(pc.equal(table["data_id"], data_id)).to_pylist()
    rows.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
    items = []
    for r in rows[offset:offset + limit]:
        box = [r[k] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        items.append({"category": r["category"], "score": r["score"],
                      "bbox": None if any(v is None for v in box) else box, "values": r["values"]})
    return jsonable({"prediction": node.id, "data_id": data_id, "task": node.props.get("task"), "items": items,
                     "total": len(rows), "limit": limit, "offset": offset})


ClassName = Annotated[str | None, Query(max_length=255, description="only samples of this class")]


ErrorKind = Annotated[Literal["fp", "fn"] | None, Query(description="detection: only images with false positives (fp) or misses (fn)")]
Threshold = Annotated[float, Query(ge=0.0, le=1.0, description="detection: boxes scored below this are not shown")]


@router.get("/predictions/{ref}/outcomes", response_model=OutcomePageOut, response_model_by_alias=True, tags=["inference"],
            summary="Every sample's outcome: classification true/pred class, confidence, loss (a confusion cell with "
                    "true/pred); detection TP/FP/FN per image at IoU 0.5 (a class's fp or fn with class/error)")
@pooled
def prediction_outcomes(repo: Repo, ref: RefPath, true: ClassName = None, pred: ClassName = None,
                        cls: Annotated[str | None, Query(alias="class", max_length=255, description="detection: only images with this class's errors")] = None,
                        error: ErrorKind = None, threshold: Threshold = DETECTION_THRESHOLD,
                        sort: Literal["loss", "confidence", "data_id", "errors"] | None = None, order: Literal["asc", "desc"] = "desc",
                        limit: Limit = 50, offset: Offset = 0) -> Any:
    node = repo.inference.get_prediction(ref)
    out = {"prediction": node.id, "task": node.props.get("task"), "sort": sort, "order": order, "limit": limit, "offset": offset}
    if out["task"] == "detection":
        out["sort"] = sort = sort or "errors"
        d = repo.inference.detection_outcomes_page(node.id, cls, error, threshold, sort, order == "desc", limit, offset)
        return jsonable({**out, "classes": list(d.classes), "true": None, "pred": None, "class": cls, "error": error,
                         "threshold": threshold, "iou": 0.5, "per_class": d.per_class, "items": list(d.items), "total": d.total})
    out["sort"] = sort = sort or "loss"
    p = repo.inference.outcomes_page(node.id, true, pred, sort, order == "desc", limit, offset)
    return jsonable({**out, "classes": list(p.classes), "true": true, "pred": pred, "items": list(p.items), "total": p.total})


@router.get("/predictions/{ref}/curves", response_model=PrCurvesOut, tags=["inference"],
            summary="Each class's precision-recall curve and average precision (classification: one-vs-rest; detection: boxes at IoU 0.5)")
@pooled
def prediction_curves(repo: Repo, ref: RefPath) -> Any:
    node = repo.inference.get_prediction(ref)
    task = node.props.get("task")
    return jsonable({"prediction": node.id, "task": task, "iou": 0.5 if task == "detection" else None,
                     "curves": repo.inference.pr_curves(node.id)})


_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": PredictJsonIn.model_json_schema()},
}}


def _predict(repo: Any, cache: P.RunnerCache, ref: str, image: bytes | None, body: bytes | None) -> dict[str, Any]:
    """The work of one prediction, in the server's work pool: parse, load (cached), run, render."""
    doc = None
    if body is not None:
        try:
            doc = PredictJsonIn.model_validate(json.loads(body))
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep for json
            if isinstance(exc, ValidationError):
                raise RequestValidationError(exc.errors()) from None
            raise InvalidInput(f"malformed JSON body: {exc}") from None
    pixels = P.decode_image(image) if image is not None else None  # refuse a bad upload before loading anything
    loaded = cache.get(repo, ref)
    if pixels is not None:
        data = P.image_data(loaded, pixels)
        size = (pixels.shape[1], pixels.shape[0])
    else:
        assert doc is not None
        data, size = P.json_data(loaded, doc.window, doc.features), None
    return jsonable(P.render(loaded, data, loaded.run(data), size))


@router.post("/inference/{ref}/predict", response_model=PredictOut, response_model_exclude_none=True,
             tags=["inference"], openapi_extra={"requestBody": _BODY},
             summary="Run the deployed model on one uploaded image (or a JSON series window / table rows)",
             responses={413: {"model": ErrorOut, "description": "Body too large"},
                        415: {"model": ErrorOut, "description": "Unsupported content type"}})
async def predict(request: Request, ref: RefPath) -> Any:
    ctype = request.headers.get("content-type", "").strip()
    base = ctype.split(";", 1)[0].strip().lower()
    image, body = None, None
    if base == "multipart/form-data":
        image = await P.multipart_image(request, request.app.state.limits)
    elif base.startswith("image/") or base == "application/octet-stream":
        image = await request.body()
    elif base == "application/json":
        body = await request.body()
    else:
        raise HTTPException(415, "send multipart/form-data with one image, raw image bytes (image/png, image/jpeg), "
                                 "or application/json")
    # the body is capped as it streams (413); decoding and the model run in the bounded work pool
    return await request.app.state.pool.run(_predict, repo_of(request), request.app.state.runners, ref, image, body)
