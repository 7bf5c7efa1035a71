"""The stores a version module works on, opened once by the repository."""

from __future__ import annotations

from dataclasses import dataclass

from veml.store import ArtifactStore, GraphStore, SampleStore


@dataclass(frozen=True)
class Stores:
    graph: GraphStore
    samples: SampleStore
    artifacts: ArtifactStore
