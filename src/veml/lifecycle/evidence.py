"""What the benchmarks measured for each rebuild method, per task: ``veml rebuild`` says it next to its result.

Why this file exists: a rebuild method that missed its target stays available (issue 15), so the user must be
told, at the moment they use it, whether the method was shown to work for their model's task, on what, and
where the figures and the command that produced them are.  The entries are copied from BENCHMARKS.md; a test
checks that each figure quoted here appears there, so the two cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

REBUILD_SECTION = "Rebuilds that recover, on real handwriting"
REBUILD_COMMAND = "python -m benchmarks.lifecycle_eval.rebuild --seeds 3"


@dataclass(frozen=True)
class Evidence:
    """``status``: ``met`` / ``not met`` against ``target``, or ``not measured`` for this task."""

    task: str
    method: str
    status: str
    target: str = ""
    measured: str = ""
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_CLASSIFICATION = {  # (target, measured, verdict) from BENCHMARKS.md, REBUILD_SECTION
    "full": ("recovery >= 0.9", "0.94 [0.63, 1.25]", "met"),
    "transfer": ("recovery >= 0.8 in <= 1/3 of full's training time", "1.07 [0.66, 1.49] in 0.12", "met"),
    "active": ("beats random labels at the same budget (30, then 100) on unseen seeds, interval excluding 0",
               "0.6 [-2.0, 3.3] points on seeds 6-8 (100 new digits per class; 0.4 [-3.5, 4.3] at 30); on seeds 6-14, "
               "1.2 [0.05, 2.40] over 27 cells but 1.2 [-0.28, 2.73] over 9 seeds; on 18 more fresh seeds (15-32) "
               "0.20 [-0.52, 0.93] over 54 cells: level with random; at budget 100 (uncertainty plus diversity) on "
               "18 other fresh seeds (33-50) 0.56 [-0.17, 1.28]", "not met"),
    "adapt": ("recovers > 0 without labels (tent; adabn 0.64 [0.25, 1.03])", "0.64 [0.25, 1.04]", "met"),
}
_UNMEASURED = {
    "detection": "the benchmark detector does not learn (mAP50 0.045), so detection rebuild figures are noise",
}


def rebuild_evidence(task: str, method: str) -> Evidence:
    """What is known about ``method`` rebuilding a ``task`` model."""
    if task == "classification" and method in _CLASSIFICATION:
        target, measured, status = _CLASSIFICATION[method]
        return Evidence(task, method, status, target, measured, f"'{REBUILD_SECTION}': {REBUILD_COMMAND}")
    why = _UNMEASURED.get(task, "no benchmark covers this task yet; classification is the measured one")
    return Evidence(task, method, "not measured", source=why)
