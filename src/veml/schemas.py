"""Schemas of the insert-only sample and annotation tables.

They are fixed so that every import appends to the same tables; what varies between data sets
(COCO's extra image keys, a CSV's columns) lives in the ``meta`` JSON column and is typed per data
version (``columns`` on the version), so a filter can still name it as a column.
"""

from __future__ import annotations

import pyarrow as pa

SAMPLES = pa.schema(
    [
        pa.field("data_id", pa.int64(), nullable=False),
        pa.field("modality", pa.string()),  # image | table | series
        pa.field("format", pa.string()),  # png, jpeg, ... for images; "f32" for arrays; "" for table rows
        pa.field("payload", pa.large_binary()),  # encoded image bytes as imported, or raw little-endian array bytes;
        # null when another sample row holds the same bytes (see DIGESTS), and for table rows
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("shape", pa.list_(pa.int32())),
        pa.field("file_name", pa.string()),
        pa.field("content_hash", pa.string()),  # sha256 of payload (of meta for table rows)
        pa.field("meta", pa.string()),  # JSON object of extra columns
    ]
)

LABELS = pa.schema(
    [
        pa.field("ann_id", pa.int64(), nullable=False),
        pa.field("data_id", pa.int64(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("value", pa.float64()),  # regression targets; NaN for classes
    ]
)

BOXES = pa.schema(
    [
        pa.field("ann_id", pa.int64(), nullable=False),
        pa.field("data_id", pa.int64(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("bbox_x", pa.float64()),
        pa.field("bbox_y", pa.float64()),
        pa.field("bbox_w", pa.float64()),
        pa.field("bbox_h", pa.float64()),
        pa.field("area", pa.float64()),
        pa.field("iscrowd", pa.int8()),
        pa.field("source_id", pa.int64()),  # the annotation id in the imported file, kept for export
    ]
)

SERIES = pa.schema(
    [
        pa.field("ann_id", pa.int64(), nullable=False),
        pa.field("data_id", pa.int64(), nullable=False),
        pa.field("sensor", pa.string()),
        pa.field("t0", pa.int64()),  # unix seconds of the window's first step
        pa.field("steps", pa.int32()),
        pa.field("missing", pa.int32()),
        pa.field("mean", pa.float64()),
    ]
)

PREDICTIONS = pa.schema(
    [
        pa.field("ann_id", pa.int64(), nullable=False),
        pa.field("data_id", pa.int64(), nullable=False),
        pa.field("category", pa.string()),  # predicted class (classification, detection)
        pa.field("score", pa.float64()),
        pa.field("bbox_x", pa.float64()),
        pa.field("bbox_y", pa.float64()),
        pa.field("bbox_w", pa.float64()),
        pa.field("bbox_h", pa.float64()),
        pa.field("values", pa.list_(pa.float32())),  # class probabilities, or a forecast (horizon x sensors, flattened)
    ]
)

# Content addressing: the sample row that first brought a payload keeps it; a later sample with the same
# sha256 (same or another data set) stores a null payload and is read through this index.  Keyed by the
# holder's data_id, so gc reclaims an entry with its row; only rows a recorded version references are
# ever made holders, and versions are never deleted, so a holder outlives every sample reading through it.
DIGESTS = pa.schema(
    [
        pa.field("data_id", pa.int64(), nullable=False),  # the sample row holding the payload
        pa.field("content_hash", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {"samples": SAMPLES, "labels": LABELS, "boxes": BOXES, "series": SERIES,
                                 "predictions": PREDICTIONS, "digests": DIGESTS}
ANNOTATION_TABLES = ("labels", "boxes", "series")  # what data versions hold; predictions belong to prediction versions
KEY = {"samples": "data_id", "labels": "ann_id", "boxes": "ann_id", "series": "ann_id", "predictions": "ann_id",
       "digests": "data_id"}
ID_SPACE = {table: "data" if key == "data_id" else "ann" for table, key in KEY.items()}  # which id range a table's keys come from
