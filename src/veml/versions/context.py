"""The stores a version module works on, opened once by the repository."""

from __future__ import annotations

from dataclasses import dataclass

from veml.store import ArtifactStore, EmbeddingStore, GraphStore, SampleStore


@dataclass(frozen=True)
class Stores:
    graph: GraphStore
    samples: SampleStore
    artifacts: ArtifactStore
    embeddings: EmbeddingStore


def unique_name(stores: Stores, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` … — the first name no version holds yet."""
    name, i = base, 1
    while stores.graph.name_taken(name):
        i += 1
        name = f"{base}-{i}"
    return name
