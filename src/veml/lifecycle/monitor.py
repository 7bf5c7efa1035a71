"""Monitoring: check each new batch of test data as it lands; rebuild when it drifts, with a cooldown.

A batch is a sub-directory of the watched directory holding ``annotations.json`` (COCO; it may
omit ``annotations``) and its ``images/``.  Writers put the images first and the JSON last (an
atomic rename), so a batch is ready once its JSON exists.  Each batch becomes a data version of
role ``test`` named after the watched directory and its own (so a restarted monitor skips what it already saw), gets a
``DriftReport``, and — when it drifts, a rebuild method is configured and the last rebuild is
older than the cooldown — triggers that rebuild; later batches are then checked against the new
deployment.  One shift therefore causes one rebuild, not one per batch.

The decision also weighs harm: each report carries the deployed model's accuracy estimated on the
unlabeled batch (:mod:`veml.lifecycle.estimate`).  A batch *calls for a rebuild* when it drifts, or
when the estimate's upper bound lies at least ``max_drop`` below the lower 95 % bound of the model's
accuracy on its held-out data (``reference_low``: a held-out split of 20 samples says little) — the
model is losing accuracy even though the two-sample test saw no shift.  For an error metric (a forecaster's
MAE, ``"higher_is_better": false``) the rule is mirrored and relative: the estimate's lower bound lies at least
``max_drop`` x the held-out error above that error's upper 95 % bound.  (A batch whose
estimate is missing is decided on drift alone.)  ``out["decision"]`` says which rule fired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from veml.errors import InvalidInput, VemlError
from veml.lifecycle.drift import Drift
from veml.lifecycle.rebuild import METHODS as REBUILD_METHODS
from veml.lifecycle.rebuild import Rebuild
from veml.versions.data import DataVersions
from veml.versions.inference import InferenceVersions

BATCH_FILE = "annotations.json"


def decide(drift: bool, estimate: dict[str, Any] | None, max_drop: float) -> str | None:
    """Why a batch calls for a rebuild: ``"drift"``, ``"estimated drop"`` (no drift seen, but the estimated
    accuracy's upper bound is ``max_drop`` or more below the held-out accuracy's lower bound), or None."""
    if drift:
        return "drift"
    if estimate is None:
        return None
    if estimate.get("higher_is_better", True):
        worse = estimate.get("reference_low", estimate["reference_value"]) - estimate["high"] >= max_drop
    else:
        worse = estimate["low"] - estimate.get("reference_high", estimate["reference_value"]) >= max_drop * estimate["reference_value"]
    return "estimated drop" if worse else None


@dataclass
class MonitorState:
    inference: int
    last_rebuild_at: float | None = None
    seen: set[str] = field(default_factory=set)


class Monitor:
    def __init__(self, data: DataVersions, inference: InferenceVersions, drift: Drift, rebuild: Rebuild) -> None:
        self._data, self._inference, self._drift, self._rebuild = data, inference, drift, rebuild

    @staticmethod
    def ready_batches(watch: Path) -> list[Path]:
        return sorted(p for p in watch.iterdir() if p.is_dir() and (p / BATCH_FILE).is_file())

    @staticmethod
    def _version_name(watch: Path, batch: Path) -> str:
        return f"{watch.resolve().name}-{batch.name}"

    def run(self, inference: str | int, watch: str | Path, *, reference: str | int | None = None, method: str | None = None,
            rebuild: str | None = None, rebuild_options: dict[str, Any] | None = None, cooldown_s: float = 3600.0,
            interval_s: float = 5.0, once: bool = False, max_batches: int | None = None, alpha: float = 0.05,
            max_drop: float = 0.05, log: Callable[[str], None] = print,
            clock: Callable[[], float] = time.time) -> list[dict[str, Any]]:
        watch = Path(watch)
        if not watch.is_dir():
            raise InvalidInput(f"--watch {watch}: not a directory")
        if rebuild is not None and rebuild not in REBUILD_METHODS:
            raise InvalidInput(f"unknown rebuild method {rebuild!r}: use one of {', '.join(REBUILD_METHODS)}")
        if rebuild == "active":
            raise InvalidInput("a monitor cannot wait for a human to label: use --rebuild full, transfer or adapt")
        if cooldown_s < 0 or interval_s <= 0:
            raise InvalidInput("--cooldown must be zero or positive and --interval positive")
        if not 0 < max_drop < 1:
            raise InvalidInput(f"--max-drop must lie in (0, 1), got {max_drop}")
        state = MonitorState(self._inference.get(inference).id)
        results: list[dict[str, Any]] = []
        while True:
            for batch in self.ready_batches(watch):
                if max_batches is not None and len(results) >= max_batches:
                    return results
                name = self._version_name(watch, batch)
                if name in state.seen or self._exists(name):
                    state.seen.add(name)
                    continue
                results.append(self._one(state, batch, name, reference, method, rebuild, rebuild_options or {},
                                         cooldown_s, alpha, max_drop, log, clock))
                state.seen.add(name)
            if once or (max_batches is not None and len(results) >= max_batches):
                return results
            time.sleep(interval_s)

    def _exists(self, name: str) -> bool:
        try:
            self._data.get(name)
            return True
        except VemlError:
            return False

    def _one(self, state: MonitorState, batch: Path, name: str, reference: str | int | None, method: str | None,
             rebuild: str | None, options: dict[str, Any], cooldown_s: float, alpha: float, max_drop: float,
             log: Callable[[str], None], clock: Callable[[], float]) -> dict[str, Any]:
        out: dict[str, Any] = {"batch": str(batch), "inference": state.inference}
        try:
            version = self._data.import_("coco", batch / BATCH_FILE, name, role="test", images=batch / "images")
        except VemlError as exc:
            log(f"batch {batch.name}: not imported: {exc}")
            return {**out, "error": str(exc)}
        out["test"] = version.id
        try:
            report = self._drift.check(reference, version.id, inference=state.inference, method=method, alpha=alpha)
        except VemlError as exc:
            log(f"batch {batch.name}: drift check failed: {exc}")
            return {**out, "error": str(exc)}
        out.update(drift=report["drift"], p_value=report["p_value"], method=report["method"], report=report["report"],
                   estimate=report.get("estimate"))
        out["decision"] = decide(report["drift"], out["estimate"], max_drop)
        est = out["estimate"]
        seen = f", estimated {est['metric']} {est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]" if est else ""
        log(f"batch {batch.name}: {'DRIFT' if report['drift'] else 'no drift'} (p={report['p_value']:.3g}, {report['method']}{seen})"
            + (f": {out['decision']}" if out["decision"] == "estimated drop" else ""))
        if out["decision"] is None or rebuild is None:
            return out
        now = clock()
        if state.last_rebuild_at is not None and now - state.last_rebuild_at < cooldown_s:
            out["rebuild"] = {"skipped": f"cooldown: last rebuild {now - state.last_rebuild_at:.0f} s ago (< {cooldown_s:g} s)"}
            log(f"batch {batch.name}: rebuild skipped ({out['rebuild']['skipped']})")
            return out
        try:
            built = self._rebuild.rebuild(state.inference, version.id, rebuild, **options)
        except VemlError as exc:
            out["rebuild"] = {"error": str(exc)}
            log(f"batch {batch.name}: rebuild {rebuild} failed: {exc}")
            return out
        state.last_rebuild_at = now
        out["rebuild"] = built
        log(f"batch {batch.name}: rebuilt ({rebuild}) -> inference {built['inference']}; later batches are checked against it")
        state.inference = built["inference"]
        return out
