"""Request and response schemas: what ``/api/v1/openapi.json`` documents.

Response models allow extra keys because a version object carries its kind's fields beside the
common ones (DESIGN.md section 8); request models forbid them, so a misspelt field is a 422,
never silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Ref = str | int
KIND_NAMES = Literal["data", "model", "training", "inference", "prediction", "coreset", "drift", "similarity",
                     "project", "architecture", "backbone", "neck", "head"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error: str = Field(description="one line saying what went wrong")


class VersionOut(_Out):
    """A version object: the common keys, then the kind's own fields."""

    id: int
    kind: str
    name: str
    parents: list[int]
    created_at: str = Field(description="UTC ISO-8601")
    tags: list[str] = []


class _Page(BaseModel):
    total: int = Field(description="items in the whole list")
    limit: int
    offset: int


class VersionPage(_Page):
    items: list[VersionOut]


class DataStatsOut(VersionOut):
    categories: dict[str, int] = Field(description="annotations per category")
    stats: dict[str, Any] = Field(description="samples, image sizes, boxes, pixels, series or column statistics")


class SampleOut(_Out):
    data_id: int
    file_name: str | None = None
    modality: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict, description="the sample's extra columns")
    annotations: list[dict[str, Any]] = Field(default_factory=list, description="rows of every annotation table, with 'kind'")


class SamplePage(_Page):
    version: int
    items: list[SampleOut]
    where: str | None = Field(default=None, description="the filter applied (null: none)")
    sort: str | None = Field(default=None, description="the sort column (null: data_id)")
    order: Literal["asc", "desc"] = "asc"


class SampleDetailOut(BaseModel):
    version: int
    sample: SampleOut
    versions: list[int] = Field(description="ids of every data version holding this sample, oldest first")
    series: dict[str, Any] | None = Field(description="series samples: shape, values (steps x sensors), sensors, t0")


class FilterIn(_In):
    where: str = Field(description="filter expression over sample and annotation columns (an allow-listed SQL subset: docs/SECURITY.md)")
    name: str = Field(description="name of the new version")
    keep_annotations: Literal["all", "matching"] = "all"


class MergeIn(_In):
    versions: list[Ref] = Field(min_length=2, max_length=1000)
    name: str


class TagIn(_In):
    tag: str


class EdgeOut(_Out):
    src: int
    dst: int
    kind: str
    props: dict[str, Any]


class LineageOut(_Out):
    root: int
    direction: str
    nodes: list[VersionOut] = Field(description="this page's versions, in id order")
    edges: list[EdgeOut] = Field(description="edges between two versions of this page")
    boundary_edges: list[EdgeOut] = Field(description="edges ending on this page that start on another page of the answer")
    total: int = Field(description="versions in the whole answer")
    limit: int
    next_cursor: str | None = Field(description="pass as cursor for the next page; null after the last page")


class LineageIdsOut(_Out):
    root: int
    direction: str
    total: int
    ids: list[int] = Field(description="every version of the answer, ascending, the root included")


class TrainingOut(VersionOut):
    status: str | None = Field(description="running, finished, failed or unknown")
    metrics: dict[str, Any] | None = None


class ComparedVersion(_Out):
    id: int
    name: str
    kind: Literal["model", "training"]
    model: int | None = Field(description="the model version (a model version's own id; null: a logged run that names none)")


class CompareRowOut(BaseModel):
    section: Literal["model", "training", "metrics"]
    key: str = Field(description="e.g. architecture, parameters.image_size, params.lr, data, accuracy")
    values: list[Any] = Field(description="one per compared version, in their order; null where a version has no such key")
    differs: bool = Field(description="the values are not all equal")


class CompareOut(BaseModel):
    versions: list[ComparedVersion] = Field(description="the compared versions, in the order named")
    rows: list[CompareRowOut] = Field(description="section model, then training, then metrics; keys sorted in each")
    differing: int = Field(description="rows whose values differ")


class LogRow(_Out):
    id: int
    step: int
    epoch: int
    key: str
    value: float | None
    at: float


class TrainingLogsOut(BaseModel):
    training: int
    status: str | None
    logs: list[LogRow]
    next_after_id: int = Field(description="pass as after_id to read on")
    more: bool = Field(description="true when more rows follow than this answer holds")


class LifecycleOut(_Out):
    data: int
    model: int
    training: int
    inference: int
    prediction: int | None
    task: str
    metric: dict[str, Any]


class LifecyclePage(_Page):
    items: list[LifecycleOut]


class PredictionOut(VersionOut):
    inference: int
    data: int
    metrics: dict[str, Any] | None = None
    worst: list[dict[str, Any]] = []
    key_metric: dict[str, Any] = {}


class PredictedRow(BaseModel):
    category: str | None = Field(default=None, description="classification and detection: the predicted class")
    score: float | None = Field(default=None, description="its score (classification: probability; regression: the value)")
    bbox: list[float] | None = Field(default=None, description="detection: x, y, width, height in the stored image's pixels")
    values: list[float] | None = Field(default=None, description="classification: one probability per class; forecasting: the forecast")


class PredictionSampleOut(_Page):
    """One sample's rows of a prediction version, highest score first (detection: one row per predicted box)."""

    prediction: int
    data_id: int
    task: str
    items: list[PredictedRow]


class SimilarIn(_In):
    top: int | None = Field(default=None, ge=1)
    method: Literal["mean_pairwise", "mmd", "gromov_wasserstein", "label_ot", "leep", "logme", "hscore", "knn_probe",
                    "ensemble", "as_is", "finetune_probe", "estimate"] | None = None
    with_lifecycle: bool = False
    include_related: bool = False
    k: int | None = Field(default=None, ge=1, description="core-set size")
    embedder: str | None = None


class RankRow(_Out):
    id: int
    name: str
    distance: float | None


class SimilarOut(_Out):
    target: int
    target_name: str
    method: str
    ranking: list[RankRow]
    skipped: list[dict[str, Any]]
    report: int


class DriftIn(_In):
    reference: Ref | None = Field(default=None, description="default: the inference's training data")
    test: Ref
    inference: Ref | None = None
    method: Literal["mmd", "bbsd", "ks", "cvm"] | None = None
    alpha: float = Field(default=0.05, gt=0, lt=1)
    k: int = Field(default=200, ge=1)
    permutations: int = Field(default=100, ge=10, le=100_000)
    embedder: str | None = None
    name: str | None = None


class DriftOut(_Out):
    drift: bool
    p_value: float | None
    statistic: float | None
    method: str
    report: int


class ReportPage(_Page):
    items: list[VersionOut]


class Detection(BaseModel):
    category: str
    score: float | None
    bbox: list[float] = Field(description="x, y, width, height in the uploaded image's pixels")


class PredictOut(_Out):
    """The deployed model's output for one input; which fields are set depends on ``task``."""

    inference: int
    name: str
    task: str
    class_names: list[str] = []
    category: str | None = Field(default=None, description="classification: the top class")
    score: float | None = Field(default=None, description="classification: its probability")
    scores: list[float] | None = Field(default=None, description="classification: one probability per class")
    detections: list[Detection] | None = None
    forecast: list[list[float]] | None = Field(default=None, description="forecasting: horizon x sensors")
    categories: list[str] | None = Field(default=None, description="tabular classification: the top class per row")
    probabilities: list[list[float]] | None = Field(default=None, description="tabular classification: per row and class")
    values: list[float] | None = Field(default=None, description="tabular regression: one value per row")


class PredictJsonIn(_In):
    window: list[list[float]] | None = Field(default=None, description="series model: steps x sensors, at least the "
                                                                        "model's history; the last history steps are used")
    features: list[list[float]] | None = Field(default=None, description="tabular model: rows x features")


class OutcomeOut(BaseModel):
    data_id: int
    true: str | None = Field(description="the true class (null: the sample has no known label)")
    pred: str
    correct: bool | None
    confidence: float = Field(description="probability of the predicted class")
    loss: float | None = Field(description="-log p(true class)")


class DetectionOutcomeOut(BaseModel):
    data_id: int
    gt: int = Field(description="ground-truth boxes")
    predicted: int = Field(description="predicted boxes scored at or above the threshold")
    tp: int
    fp: int = Field(description="predicted boxes (at or above the threshold) matching no ground truth at IoU 0.5")
    fn: int = Field(description="ground-truth boxes no such box matched")
    errors: int = Field(description="fp + fn")
    confidence: float | None = Field(description="the image's highest box score (null: no box)")


class ErrorCountsOut(BaseModel):
    tp: int
    fp: int
    fn: int
    fp_images: int = Field(description="images with a false positive of this class")
    fn_images: int = Field(description="images with a missed box of this class")


class OutcomePageOut(_Page):
    prediction: int
    task: str
    classes: list[str]
    true: str | None
    pred: str | None
    sort: str
    order: str
    items: list[OutcomeOut | DetectionOutcomeOut]
    class_: str | None = Field(default=None, alias="class", description="detection: only images with this class's errors")
    error: str | None = Field(default=None, description="detection: fp or fn (null: either)")
    threshold: float | None = Field(default=None, description="detection: the confidence threshold")
    iou: float | None = Field(default=None, description="detection: the matching IoU")
    per_class: dict[str, ErrorCountsOut] | None = Field(default=None, description="detection: counts over every image")


class PrCurveOut(BaseModel):
    class_: str = Field(alias="class")
    positives: int = Field(description="samples of the class (detection: ground-truth boxes)")
    ap: float | None = Field(description="average precision (detection: 101-point AP at IoU 0.5; null: no positive)")
    recall: list[float]
    precision: list[float]
    thresholds: list[float] = Field(description="the class probability (detection: the box score) at each point")


class PrCurvesOut(BaseModel):
    prediction: int
    task: str
    iou: float | None = Field(default=None, description="detection: the IoU a box must reach to count")
    curves: list[PrCurveOut]
