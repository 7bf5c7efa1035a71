"""Pictures of a data version: a thumbnail grid with boxes drawn, and its distributions.

Pure rendering: arrays and statistics in, a PNG file out.  Used by ``veml data show --grid/--plot``
and, later, the web UI.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from veml.errors import InvalidInput

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def colour(category: str, categories: Sequence[str]) -> tuple[int, int, int]:
    idx = list(categories).index(category) if category in categories else zlib.crc32(category.encode())
    return _PALETTE[idx % len(_PALETTE)]


def thumbnail_grid(
    items: Sequence[tuple[np.ndarray, Sequence[Mapping[str, Any]]]],
    path: str | Path,
    categories: Sequence[str] = (),
    cell: int = 128,
    cols: int = 8,
) -> Path:
    """Images (H, W, 3 uint8) with their box/label annotations, drawn into one PNG grid."""
    n = max(len(items), 1)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * cell, rows * cell), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for k, (img, anns) in enumerate(items):
        im = Image.fromarray(np.asarray(img, dtype=np.uint8))
        scale = min(cell / im.width, cell / im.height)
        tw, th = max(1, int(im.width * scale)), max(1, int(im.height * scale))
        ox, oy = (k % cols) * cell + (cell - tw) // 2, (k // cols) * cell + (cell - th) // 2
        grid.paste(im.resize((tw, th), Image.NEAREST), (ox, oy))
        label_y = oy
        for a in anns:
            c = colour(str(a.get("category")), categories)
            if a.get("kind") == "boxes":
                x0, y0 = ox + a["bbox_x"] * scale, oy + a["bbox_y"] * scale
                x1, y1 = x0 + a["bbox_w"] * scale, y0 + a["bbox_h"] * scale
                draw.rectangle([x0, y0, x1, y1], outline=c, width=1)
                draw.text((x0 + 1, max(oy, y0 - 10)), str(a.get("category", ""))[:10], fill=c)
            elif a.get("kind") == "labels":
                draw.text((ox + 2, label_y + 2), str(a.get("category", "")), fill=c)
                label_y += 11
    return _save(path, grid.save)


def plot_distributions(stats: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Category histogram, box-size and image-size distributions (what the stats hold) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("categories", "annotations per category")]
    if "boxes" in stats:
        panels.append(("boxes", "box width / height (px)"))
    if "image_sizes" in stats:
        panels.append(("image_sizes", "image sizes"))
    if "pixels" in stats:
        panels.append(("pixels", "pixel mean ± std per channel"))
    if "series" in stats:
        panels.append(("series", "series"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        ax.set_title(label, fontsize=10)
        if key in ("categories", "image_sizes"):
            data = stats.get(key, {})
            ax.bar(list(data)[:30], list(data.values())[:30], color="#4e79a7")
            ax.tick_params(axis="x", rotation=45, labelsize=8)
        elif key == "boxes":
            b = stats["boxes"]
            for j, dim in enumerate(("width", "height")):
                q = b[dim]
                ax.boxplot([[q["min"], q["p25"], q["median"], q["p75"], q["max"]]], positions=[j], widths=0.5)
            ax.set_xticks([0, 1], ["width", "height"])
        elif key == "pixels":
            p = stats["pixels"]
            ax.bar(p["channels"], p["mean"], yerr=p["std"], color=["#e15759", "#59a14f", "#4e79a7"])
        elif key == "series":
            s = stats["series"]
            ax.bar(["windows", "sensors"], [s["windows"], s["sensors"]], color="#76b7b2")
            ax.set_xlabel(f"missing: {s['missing_fraction']:.2%}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return _save(path, lambda p: fig.savefig(p, dpi=90))
    finally:
        plt.close(fig)


def _save(path: str | Path, write) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot write picture ({getattr(exc, 'strerror', None) or exc})") from None
    return path
