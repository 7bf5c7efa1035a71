"""Persistence only: graph/metadata (SQL), samples and annotations (Lance), artifacts (files).

Each store is chosen by URL scheme through :func:`open_graph_store`, :func:`open_sample_store`
and :func:`open_artifact_store`, so a new back-end (PostgreSQL, ``s3://``) slots in here without
touching any caller.
"""

from __future__ import annotations

from pathlib import Path

from veml.errors import InvalidInput, MissingExtra
from veml.store.artifacts import ArtifactStore, LocalArtifactStore
from veml.store.embeddings import EmbeddingStore, LanceEmbeddingStore
from veml.store.graph import GraphStore
from veml.store.samples import SampleStore


def open_graph_store(url: str, base: Path, check_schema: bool = True) -> GraphStore:
    """``sqlite:///relative/or/absolute.db`` (relative to the repository's ``.veml/``) or ``postgresql://``.

    ``check_schema=False`` opens a database at an older schema, for ``veml upgrade`` only."""
    from veml.store.sql_graph import SqlGraphStore

    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.is_absolute():
            path = base / path
        return SqlGraphStore(f"sqlite:///{path}", check_schema=check_schema)
    if url.startswith(("postgresql://", "postgresql+psycopg://")):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("psycopg", "postgres") from exc
        return SqlGraphStore(url.replace("postgresql://", "postgresql+psycopg://", 1), check_schema=check_schema)
    raise InvalidInput(f"unsupported metadata URL {url!r}: use sqlite:/// or postgresql://")


def open_sample_store(url: str, base: Path) -> SampleStore:
    """A local directory (relative to ``.veml/``) or, with the ``[s3]`` extra, ``s3://bucket/prefix``."""
    from veml.store.lance_samples import LanceSampleStore

    if "://" in url and not url.startswith("file://"):
        raise InvalidInput(f"unsupported storage URL {url!r}: only local paths are supported in this build")
    path = Path(url.removeprefix("file://"))
    return LanceSampleStore(path if path.is_absolute() else base / path)


def open_artifact_store(url: str, base: Path) -> ArtifactStore:
    if "://" in url and not url.startswith("file://"):
        raise InvalidInput(f"unsupported artifact URL {url!r}: only local paths are supported in this build")
    path = Path(url.removeprefix("file://"))
    return LocalArtifactStore(path if path.is_absolute() else base / path)


def open_embedding_store(url: str, base: Path) -> EmbeddingStore:
    """The embedding cache: a local directory (relative to ``.veml/``)."""
    if "://" in url and not url.startswith("file://"):
        raise InvalidInput(f"unsupported embeddings URL {url!r}: only local paths are supported in this build")
    path = Path(url.removeprefix("file://"))
    return LanceEmbeddingStore(path if path.is_absolute() else base / path)


__all__ = ["GraphStore", "SampleStore", "ArtifactStore", "EmbeddingStore", "open_graph_store", "open_sample_store",
           "open_artifact_store", "open_embedding_store"]
