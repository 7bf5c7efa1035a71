"""``veml verify`` and ``veml gc``: prove every version intact, reclaim what none references.

verify recomputes, for every data version, its bitmaps' digests, that every referenced row exists,
and the sha256 of every referenced sample's payload; and checks every artifact a version points
at.  gc deletes sample and annotation rows outside every version's bitmaps, except those of an
id range reserved less than ``grace`` seconds ago (an import may be running right now).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veml.store.graph import process_owner
from veml.store.idsets import BitMap, digest
from veml.schemas import SCHEMAS
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


def verify(stores: Stores) -> VerifyReport:
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
    """Checkpoints (from finished runs' events), deployed artifacts and core-set matrices, by their sha256."""
    g = stores.graph
    runs = g.list(kinds=["TrainingVersion"])
    events = g.latest_events([n.id for n in runs])
    found = [(n, "checkpoint", events[n.id]["checkpoint"]) for n in runs if events.get(n.id, {}).get("checkpoint")]
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

    def to_json(self) -> dict[str, Any]:
        return {"samples_reclaimed": self.samples, "annotations_reclaimed": self.annotations,
                "allocations_released": self.allocations, "temp_files_removed": self.temp_files, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after}


def _owner_is_gone(owner: str | None) -> bool:
    """True only when the allocation's writer provably died: it ran on this host, in this PID
    namespace, and no process has its pid.  Anything else (another machine, a reused pid, an owner
    from before schema 2) waits out the grace period, which is the safe side."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_s, _, ns = rest.partition(":")
    if not pid_s.isdigit() or process_owner(int(pid_s)) != owner:
        return False  # another host or PID namespace: not ours to judge
    pid = int(pid_s)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def gc(stores: Stores, grace_s: float = DEFAULT_GRACE_S) -> GcReport:
    g = stores.graph
    report = GcReport(bytes_before=stores.samples.size_bytes())
    # The rows present are read FIRST, then the reservations, then the versions.  Every row is
    # appended after its id range was reserved, and a version commits and claims its range in one
    # transaction; so a row seen here is either in a range still pending below (protected) or in
    # one already claimed, whose version is then among those read after it (referenced).  Read in
    # the other order, an import that reserves after the reservations were read and commits after
    # the versions were read would lose rows it had appended before the keys were read.
    tables = [t for t in SCHEMAS if t != "samples"]
    present = {t: stores.samples.keys(t) for t in ["samples", *tables]}
    now = time.time()
    protected = {"data": BitMap(), "ann": BitMap()}
    stale = []
    for alloc_id, space, start, count, created, owner in g.pending_allocations():
        if now - created < grace_s and not _owner_is_gone(owner):
            protected[space] |= BitMap(range(start, start + count))
        else:
            stale.append(alloc_id)
    referenced = {"data": BitMap(), "ann": BitMap()}
    for _, bm, _ in g.iter_idsets("samples"):
        referenced["data"] |= bm
    for _, bm, _ in g.iter_idsets("annotations"):
        referenced["ann"] |= bm
    dead = present["samples"] - referenced["data"] - protected["data"]
    report.samples = stores.samples.reclaim("samples", dead)
    for table in tables:
        dead_ann = present[table] - referenced["ann"] - protected["ann"]
        report.annotations += stores.samples.reclaim(table, dead_ann)
    g.drop_allocations(stale)
    report.allocations = len(stale)
    report.temp_files = stores.artifacts.remove_stale_temps(grace_s)
    report.bytes_after = stores.samples.size_bytes()
    return report
