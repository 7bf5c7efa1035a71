"""Seeded procedural demo data sets (numpy + Pillow only).

Real driving and traffic data cannot be downloaded where VeML is tested and
demonstrated, so these generators stand in for them: ``driving`` writes COCO
detection sets whose :class:`Domain` controls distribution shift, ``traffic``
simulates METR-LA-like loop-detector speeds on a road graph. Same seed, same
bytes.
"""

from veml.datasets.driving import (
    CAMERAS,
    CATEGORIES,
    CITIES,
    TIMES_OF_DAY,
    WEATHERS,
    Domain,
    generate_driving_coco,
    render_scene,
)
from veml.datasets.traffic import NETWORKS, TrafficData, generate_traffic, write_csv, write_npz

__all__ = [
    "CAMERAS",
    "CATEGORIES",
    "CITIES",
    "NETWORKS",
    "TIMES_OF_DAY",
    "WEATHERS",
    "Domain",
    "TrafficData",
    "generate_driving_coco",
    "generate_traffic",
    "render_scene",
    "write_csv",
    "write_npz",
]
