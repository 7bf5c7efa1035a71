"""The stores a version module works on, opened once by the repository.

``location`` and ``compute`` say where the stores are and where heavy work runs: a version module
that splits work into partitions hands ``location`` (URLs, not open connections) to functions
the executor runs, and each of those reopens the stores with :func:`stores_at` — in this
process with the local executor, on any node of the cluster with Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veml.compute import Executor, LocalExecutor, RepoLocation
from veml.errors import InvalidInput
from veml.store import ArtifactStore, EmbeddingStore, GraphStore, SampleStore


@dataclass(frozen=True)
class Stores:
    graph: GraphStore
    samples: SampleStore
    artifacts: ArtifactStore
    embeddings: EmbeddingStore
    location: RepoLocation | None = None  # None for stores opened by hand: partitioned work then runs here
    compute: Executor = field(default_factory=LocalExecutor)

    @property
    def distributed(self) -> bool:
        """Whether partitioned work goes to a cluster (it needs a location the workers can reopen)."""
        if self.compute.distributed and self.location is None:
            raise InvalidInput("these stores were opened without a repository location: they cannot be sent to Ray workers")
        return self.compute.distributed


def stores_at(location: RepoLocation) -> Stores:
    """The repository's stores reopened from their URLs (inside a task); close ``graph`` when done.

    The executor is local: a task never fans out again."""
    return Stores(graph=location.open_graph(), samples=location.open_samples(), artifacts=location.open_artifacts(),
                  embeddings=location.open_embeddings(), location=location)


def unique_name(stores: Stores, base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` … — the first name no version holds yet."""
    name, i = base, 1
    while stores.graph.name_taken(name):
        i += 1
        name = f"{base}-{i}"
    return name
