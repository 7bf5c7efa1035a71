"""Statistics of a data version: what ``veml data show`` prints and the UI draws.

Counts come from the annotation tables (cheap, exact); pixel statistics decode at most
``PIXEL_SAMPLE`` images, spread evenly over the version, and say how many they used.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from veml.versions.checkout import DataView

PIXEL_SAMPLE = 1000


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "max": float(q[4]),
            "mean": float(values.mean())}


def category_counts(anns: dict[str, pa.Table]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in ("boxes", "labels"):
        t = anns.get(kind)
        if t is None or t.num_rows == 0:
            continue
        vc = pc.value_counts(t["category"]).to_pylist()
        for item in vc:
            if item["values"] is not None:
                counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])
    return dict(sorted(counts.items()))


def compute_stats(view: DataView) -> dict[str, Any]:
    modality = view.node.props.get("modality")
    anns = view.annotations()
    samples = view.metadata()
    out: dict[str, Any] = {"samples": len(view), "categories": category_counts(anns)}
    if modality == "image":
        sizes: dict[str, int] = {}
        for w, h in zip(samples["width"].to_pylist(), samples["height"].to_pylist()):
            sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
        out["image_sizes"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
        boxes = anns.get("boxes")
        if boxes is not None and boxes.num_rows:
            out["boxes"] = {
                "count": boxes.num_rows,
                "per_image": _quantiles(np.bincount(np.searchsorted(view.data_ids, boxes["data_id"].to_numpy()), minlength=len(view)).astype(float)),
                "width": _quantiles(boxes["bbox_w"].to_numpy()),
                "height": _quantiles(boxes["bbox_h"].to_numpy()),
                "area": _quantiles(boxes["area"].to_numpy()),
            }
        n = len(view)
        if n:
            picks = np.unique(np.linspace(0, n - 1, min(n, PIXEL_SAMPLE)).astype(int))
            sums, sq, count = np.zeros(3), np.zeros(3), 0
            for img in view.read_images(picks):
                px = img.reshape(-1, 3).astype(np.float64) / 255.0
                sums += px.sum(0)
                sq += (px**2).sum(0)
                count += len(px)
            mean = sums / count
            out["pixels"] = {
                "channels": ["r", "g", "b"],
                "mean": mean.round(5).tolist(),
                "std": np.sqrt(np.maximum(sq / count - mean**2, 0)).round(5).tolist(),
                "images_used": len(picks),
            }
    elif modality == "series":
        series = anns.get("series")
        total_missing = int(pc.sum(series["missing"]).as_py() or 0) if series is not None and series.num_rows else 0
        steps = samples["height"].to_numpy() if samples.num_rows else np.zeros(0)
        sensors = len(view.node.props.get("sensors", []))
        cells = int(steps.sum()) * sensors
        out["series"] = {
            "windows": len(view),
            "window_steps": _quantiles(steps.astype(float)),
            "sensors": sensors,
            "total_steps": int(steps.sum()),
            "missing_values": total_missing,
            "missing_fraction": round(total_missing / cells, 6) if cells else 0.0,
        }
        if series is not None and series.num_rows:
            out["series"]["mean_speed"] = _quantiles(series["mean"].drop_null().to_numpy())
    elif modality == "table":
        rows = [json.loads(m) for m in samples["meta"].to_pylist()]
        cols: dict[str, Any] = {}
        for name, typ in view.node.props.get("columns", {}).items():
            vals = [r.get(name) for r in rows]
            nulls = sum(v is None for v in vals)
            entry: dict[str, Any] = {"type": typ, "missing": nulls}
            if typ in ("BIGINT", "DOUBLE"):
                arr = np.array([v for v in vals if v is not None], dtype=float)
                entry.update({k: v for k, v in _quantiles(arr).items() if k in ("min", "mean", "max")})
                entry["std"] = float(arr.std()) if len(arr) else None
            cols[name] = entry
        out["columns"] = cols
    return out
