"""``veml verify`` and ``veml gc``: prove every version intact, reclaim what none references.

verify recomputes, for every data version, its bitmaps' digests, that every referenced row exists,
and the sha256 of every referenced sample's payload; and checks every artifact a version points
at.  gc deletes sample and annotation rows outside every version's bitmaps, except those of an id
range a writer reserved and has not recorded yet while that writer may still be at work (see
:func:`_reservation_is_live`), then the decoded pixels cached for digests no sample row holds any more.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veml.errors import InvalidInput
from veml.formats.images import check_decodes
from veml.store.graph import owner_alive
from veml.store.idsets import BitMap, digest
from veml.schemas import ID_SPACE, SCHEMAS
from veml.versions import pixels
from veml.versions.context import Stores

DEFAULT_GRACE_S = 3600.0


@dataclass
class VerifyReport:
    versions: int = 0
    samples: int = 0
    annotations: int = 0
    artifacts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "versions": self.versions, "samples": self.samples, "annotations": self.annotations,
                "artifacts": self.artifacts, "problems": self.problems}


def verify(stores: Stores, deep: bool = False) -> VerifyReport:
    """Every version against its digests; ``deep`` also decodes every stored image completely."""
    report = VerifyReport()
    g = stores.graph
    nodes = {n.id: n for n in g.list(kinds=["DataVersion"])}
    checked: BitMap = BitMap()
    sample_sets = {nid: (bm, ref) for nid, bm, ref in g.iter_idsets("samples")}
    ann_sets = {nid: (bm, ref) for nid, bm, ref in g.iter_idsets("annotations")}
    for nid, node in nodes.items():
        report.versions += 1
        for label, sets in (("samples", sample_sets), ("annotations", ann_sets)):
            bm, ref = sets.get(nid, (BitMap(), None))
            if ref is not None and (len(bm) != ref.count or digest(bm) != ref.digest):
                report.problems.append(f"version {nid} ({node.name}): {label} id set does not match its digest")
        ids, _ = sample_sets.get(nid, (BitMap(), None))
        todo = ids - checked
        if len(todo):
            rows = stores.samples.read("samples", todo, columns=["payload", "content_hash", "meta", "modality"])
            found = BitMap(rows["data_id"].to_numpy().astype(np.uint32))
            for missing in list(todo - found)[:5]:
                report.problems.append(f"version {nid} ({node.name}): sample {missing} is missing from the sample store")
            for did, payload, expect, meta, modality in zip(
                rows["data_id"].to_pylist(), rows["payload"].to_pylist(), rows["content_hash"].to_pylist(),
                rows["meta"].to_pylist(), rows["modality"].to_pylist(),
            ):
                data = payload if modality != "table" else (meta or "").encode()
                if hashlib.sha256(data or b"").hexdigest() != expect:
                    report.problems.append(f"version {nid} ({node.name}): sample {did} content hash mismatch")
                elif deep and modality == "image":
                    try:
                        check_decodes(payload or b"")
                    except InvalidInput as exc:
                        report.problems.append(f"version {nid} ({node.name}): sample {did} {exc}")
            checked |= found
        ann, _ = ann_sets.get(nid, (BitMap(), None))
        if len(ann):
            present = BitMap()
            for table in node.props.get("annotation_tables", []):
                present |= BitMap(stores.samples.read(table, ann, columns=["ann_id"])["ann_id"].to_numpy().astype(np.uint32))
            lost = ann - present
            if len(lost):
                report.problems.append(f"version {nid} ({node.name}): {len(lost)} annotation rows are missing")
            report.annotations += len(ann)
        for key in ("adjacency",):
            d = node.props.get(key)
            if d:
                report.artifacts += 1
                if not stores.artifacts.verify(d):
                    report.problems.append(f"version {nid} ({node.name}): artifact {key} {d[:12]} is missing or damaged")
    report.samples = len(checked)
    _verify_model_artifacts(stores, report)
    return report


def _verify_model_artifacts(stores: Stores, report: VerifyReport) -> None:
    """Checkpoints (from finished runs' events), imported runs' artifact files (``"artifacts"``), files logged with
    SDK runs, deployed artifacts and core-set matrices, by their sha256."""
    g = stores.graph
    runs = g.list(kinds=["TrainingVersion"])
    events = g.latest_events([n.id for n in runs])
    found = [(n, "checkpoint", events[n.id]["checkpoint"]) for n in runs if events.get(n.id, {}).get("checkpoint")]
    found += [(n, f"artifact {path!r}", sha) for n in runs for path, sha in (n.props.get("artifacts") or {}).items()]
    for n in runs:  # the files a run logged with the SDK kept (a model VeML cannot run is kept as its file)
        logged = events.get(n.id, {}).get("run") or {}
        found += [(n, f"artifact {a['name']!r}", a["sha256"]) for a in logged.get("artifacts") or ()]
        model = logged.get("logged_model")
        if model and not model.get("runnable"):
            found.append((n, f"model file {model['name']!r}", model["sha256"]))
    found += [(n, "deployed artifact", n.props["artifact"]) for n in g.list(kinds=["InferenceVersion"]) if n.props.get("artifact")]
    found += [(n, "core-set matrix", n.props["matrix"]) for n in g.list(kinds=["CoreSet"]) if n.props.get("matrix")]
    for node, what, sha in found:
        report.versions += 1
        report.artifacts += 1
        if not stores.artifacts.verify(sha):
            report.problems.append(f"version {node.id} ({node.name}): {what} {sha[:12]} is missing or damaged (digest mismatch)")


@dataclass
class GcReport:
    samples: int = 0
    annotations: int = 0
    allocations: int = 0
    temp_files: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    pixel_cache_bytes_freed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"samples_reclaimed": self.samples, "annotations_reclaimed": self.annotations,
                "allocations_released": self.allocations, "temp_files_removed": self.temp_files, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "pixel_cache_bytes_freed": self.pixel_cache_bytes_freed}


def _reservation_is_live(owner: str | None, lease_left: float | None, age_s: float, grace_s: float) -> bool:
    """Must gc keep the rows of an id range no version has claimed yet?

    A writer on this host is judged by its process, whatever the grace: alive, its rows are kept
    (an import of any length, against ``--grace 0`` too); dead, they are reclaimed at once.  A
    writer gc cannot see (another host, a container) is alive while its lease runs (it renews it
    as it works, :mod:`veml.store.leases`); once the lease ran out its rows are kept only for the
    grace period.  A reservation from before schema 3 has no lease and waits out the grace."""
    alive = owner_alive(owner)
    if alive is not None:
        return alive
    if lease_left is not None and lease_left > 0:
        return True
    return age_s < grace_s


TEMP_FILE_MIN_AGE_S = 60.0


def gc(stores: Stores, grace_s: float = DEFAULT_GRACE_S) -> GcReport:
    g = stores.graph
    report = GcReport(bytes_before=stores.samples.size_bytes())
    # The rows present are read FIRST, then the reservations; the stale ones are dropped, THEN the
    # versions are read.  Every row is appended after its id range was reserved, and a version
    # commits and claims its range in one transaction that fails if the range was dropped; so a
    # row seen here is in a range still pending below (kept while its writer may be at work), or
    # in one claimed before the versions are read (referenced), or in one dropped here or before
    # (its version can never commit: garbage).  Read in another order, an import that commits
    # between two of these steps would lose rows it had appended.
    tables = [t for t in SCHEMAS if t != "samples"]  # "samples" first: a digests entry goes with its row
    present = {t: stores.samples.keys(t) for t in ["samples", *tables]}
    now = time.time()
    protected = {"data": BitMap(), "ann": BitMap()}
    stale = []
    for alloc_id, space, start, count, created, owner, lease_left in g.pending_allocations():
        if _reservation_is_live(owner, lease_left, now - created, grace_s):
            protected[space] |= BitMap(range(start, start + count))
        else:
            stale.append(alloc_id)
    report.allocations = len(g.drop_allocations(stale))  # a range claimed meanwhile stays: its version is read next
    referenced = {"data": BitMap(), "ann": BitMap()}
    for _, bm, _ in g.iter_idsets("samples"):
        referenced["data"] |= bm
    for _, bm, _ in g.iter_idsets("annotations"):
        referenced["ann"] |= bm
    dead = present["samples"] - referenced["data"] - protected["data"]
    report.samples = stores.samples.reclaim("samples", dead)
    for table in tables:
        space = ID_SPACE[table]
        reclaimed = stores.samples.reclaim(table, present[table] - referenced[space] - protected[space])
        if space == "ann":
            report.annotations += reclaimed
    # a live writer touches its temp file on every write, so one untouched for a minute is a killed writer's, even at --grace 0
    report.temp_files = stores.artifacts.remove_stale_temps(max(grace_s, TEMP_FILE_MIN_AGE_S))
    report.bytes_after = stores.samples.size_bytes()
    # decoded pixels of a digest no sample row holds any more (read after the reclaim: a row appended since keeps its entry)
    if pixels.cache_exists(stores):
        hashes = stores.samples.read("samples", stores.samples.keys("samples"), columns=["content_hash"])["content_hash"]
        report.pixel_cache_bytes_freed = pixels.prune(stores, hashes.to_pylist())
    return report
