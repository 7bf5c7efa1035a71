"""Per-sample predictions written to a file (``veml predict --out FILE``): JSON Lines or Parquet.

One row per sample of the data version, in data-id order: ``data_id``, ``file_name`` (the sample's
source file, null for rows of a table or windows of a series), and by task
``category`` + ``score`` + ``scores`` (classification: the predicted class, its probability, every
class's probability), ``boxes`` (detection: a list of ``{category, score, bbox: [x, y, w, h]}`` in the
image's pixels), ``value`` (regression) or ``forecast`` (forecasting: every forecast value of the
sample's windows, flattened).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from veml.errors import InvalidInput

SUFFIXES = (".jsonl", ".parquet")


def check_target(out: Path | str, force: bool) -> Path:
    """Refuse before any work: an unknown suffix, a missing directory, or an existing file without ``force``."""
    path = Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise InvalidInput(f"--out {out}: write .jsonl (JSON Lines) or .parquet, not {path.suffix or 'no suffix'!r}")
    if path.is_dir():
        raise InvalidInput(f"--out {out}: is a directory; give the file to write")
    if not path.parent.is_dir():
        raise InvalidInput(f"--out {out}: no such directory {path.parent}")
    if path.exists() and not force:
        raise InvalidInput(f"--out {out}: exists (pass --force to replace it)")
    return path


def sample_rows(rows: pa.Table, data_ids: list[int], file_names: dict[int, str | None], task: str) -> list[dict[str, Any]]:
    """The prediction rows (one per class decision, box or forecast) grouped into one dict per sample."""
    out: dict[int, dict[str, Any]] = {}
    for did in data_ids:
        rec: dict[str, Any] = {"data_id": int(did), "file_name": file_names.get(int(did))}
        if task == "detection":
            rec["boxes"] = []
        out[int(did)] = rec
    for r in rows.to_pylist():
        rec = out[int(r["data_id"])]
        if task in ("classification", "tabular-classification"):
            rec.update(category=r["category"], score=r["score"], scores=r["values"])
        elif task == "detection":
            rec["boxes"].append({"category": r["category"], "score": r["score"],
                                 "bbox": [r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]]})
        elif task == "forecasting":
            rec.setdefault("forecast", []).extend(r["values"] or [])
        else:
            rec["value"] = r["score"]
    return list(out.values())


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write to a temporary name beside ``path``, then rename: a failed write leaves no half file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidInput(f"--out {path}: cannot write: {exc.strerror}") from None
    return path.resolve()


__all__ = ["SUFFIXES", "check_target", "sample_rows", "write"]
