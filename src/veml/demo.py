"""``veml demo``: the self-driving walk-through on generated data (DESIGN.md section 9).

It builds a fresh repository from generated driving scenes of several domains and a generated
traffic-sensor network, versions them (import, filter, merge, add, prepare, tag) and returns a
summary of what was built and where to look.  Later stages of the paper's story (similarity,
transfer, drift, rebuild) join this walk-through as those modules land.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from veml.datasets import Domain, generate_driving_coco, generate_traffic, write_npz
from veml.errors import InvalidInput
from veml.repository import init

MARKER = ".veml-demo"

DOMAINS = {
    "amsterdam-day": Domain(city="amsterdam", weather="clear", time_of_day="day"),
    "tokyo-night-rain": Domain(city="tokyo", weather="rain", time_of_day="night"),
    "phoenix-dusk-fog": Domain(city="phoenix", weather="fog", time_of_day="dusk", camera="wide"),
}


def _prepare_dir(path: Path) -> None:
    if path.exists():
        if (path / MARKER).exists():
            shutil.rmtree(path)  # a previous demo: the demo owns it and starts over
        elif any(path.iterdir()):
            raise InvalidInput(f"{path} exists and is not an earlier demo: pass an empty or new --path")
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("created by veml demo; rerunning the demo replaces this directory\n")


def run_demo(path: str | Path = "veml-demo", images: int = 300, log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    root = Path(path).resolve()
    _prepare_dir(root)
    raw = root / "generated"
    repo = init(root)
    created: dict[str, int] = {}
    try:
        for seed, (name, domain) in enumerate(DOMAINS.items()):
            ann = generate_driving_coco(raw / name, images, seed=seed, domain=domain, file_prefix=name)
            v = repo.data.import_("coco", ann, name, images=ann.parent / "images")
            created[name] = v.id
            log(f"imported {name}: {v.props['samples']} images, {v.props['annotations']} boxes")
        extra = generate_driving_coco(raw / "amsterdam-day-2", images // 3, seed=10, domain=DOMAINS["amsterdam-day"],
                                      file_prefix="amsterdam-day-2")
        steps = [
            ("amsterdam-day+", lambda: repo.data.add("amsterdam-day", "coco", extra, "amsterdam-day+", images=extra.parent / "images")),
            ("pedestrians", lambda: repo.data.filter("amsterdam-day+", "category = 'pedestrian' AND area >= 12", "pedestrians")),
            ("night-cars", lambda: repo.data.filter("tokyo-night-rain", "category = 'car'", "night-cars", keep_annotations="matching")),
            ("all-cities", lambda: repo.data.merge(list(DOMAINS), "all-cities")),
            ("vulnerable-road-users", lambda: repo.data.merge(["pedestrians", "night-cars"], "vulnerable-road-users")),
            ("all-cities-32px", lambda: repo.data.prepare("all-cities", "all-cities-32px",
                                                          [{"op": "resize", "width": 32, "height": 32}, {"op": "normalize"}])),
        ]
        for name, make in steps:
            v = make()
            created[name] = v.id
            log(f"created {name}: {v.props['samples']} samples ({v.parents} -> {v.id})")
        repo.data.tag("all-cities", "release-1")

        for seed, network in enumerate(("grid", "ring")):
            data = generate_traffic(n_sensors=24, n_steps=288 * 14, seed=seed, network=network, missing_rate=0.01)
            npz = write_npz(data, raw / f"traffic-{network}.npz")
            v = repo.data.import_("timeseries", npz, f"traffic-{network}")
            created[f"traffic-{network}"] = v.id
            log(f"imported traffic-{network}: {v.props['samples']} daily windows x {len(v.props['sensors'])} sensors")
        v = repo.data.prepare("traffic-grid", "traffic-grid-imputed", [{"op": "impute", "strategy": "ffill"}, {"op": "normalize"}])
        created["traffic-grid-imputed"] = v.id

        lineage = repo.lineage.query("all-cities-32px", "up")
        report = repo.verify()
        summary = {
            "path": str(root),
            "versions": created,
            "lineage_of": "all-cities-32px",
            "lineage": {"nodes": [n.name for n in lineage.nodes], "edges": [[e.src, e.kind, e.dst] for e in lineage.edges]},
            "verify_ok": report.ok,
            "seconds": round(time.perf_counter() - t0, 2),
            "next": [
                f"cd {root} && veml data list",
                "veml lineage vulnerable-road-users --format dot",
                "veml data show all-cities --grid grid.png --plot stats.png",
            ],
        }
    finally:
        repo.close()
    return summary
