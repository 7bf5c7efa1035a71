"""Persistence only: graph/metadata (SQL), samples and annotations (Lance), artifacts (files).

Each store is chosen by URL scheme through :func:`open_graph_store`, :func:`open_sample_store`
and :func:`open_artifact_store`, so a new back-end (PostgreSQL, ``s3://``) slots in here without
touching any caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from veml.errors import InvalidInput, MissingExtra, VemlError
from veml.store.artifacts import ArtifactStore, LocalArtifactStore, ObjectArtifactStore

if TYPE_CHECKING:  # imported on first use (below): they pull in Arrow, which a graph-only command never needs
    from veml.store.embeddings import EmbeddingStore
    from veml.store.graph import GraphReader, GraphStore
    from veml.store.samples import SampleStore


def open_graph_store(url: str, base: Path, check_schema: bool = True) -> GraphStore:
    """``sqlite:///relative/or/absolute.db`` (relative to the repository's ``.veml/``) or ``postgresql://``.

    ``check_schema=False`` opens a database at an older schema, for ``veml upgrade`` only."""
    from veml.store.sql_graph import SqlGraphStore

    if url.startswith("sqlite:///"):
        return SqlGraphStore(f"sqlite:///{_sqlite_path(url, base)}", check_schema=check_schema)
    if url.startswith(("postgresql://", "postgresql+psycopg://")):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("psycopg", "postgres") from exc
        return SqlGraphStore(url.replace("postgresql://", "postgresql+psycopg://", 1), check_schema=check_schema)
    raise InvalidInput(f"unsupported metadata URL {url!r}: use sqlite:/// or postgresql://")


def open_graph_reader(url: str, base: Path) -> GraphReader | None:
    """A reader of a SQLite metadata database at this VeML's schema, without SQLAlchemy (listing and the
    check for dead runs need nothing more); None where :func:`open_graph_store` must open it."""
    if not url.startswith("sqlite:///"):
        return None
    from veml.store.sql_read import SqliteGraphReader

    return SqliteGraphReader.open(_sqlite_path(url, base))


def _sqlite_path(url: str, base: Path) -> Path:
    path = Path(url[len("sqlite:///"):])
    return path if path.is_absolute() else base / path


def _local_or_s3(url: str, base: Path, what: str, s3: Mapping[str, Any] | None) -> Path | str:
    """``s3://…`` stays a URL (after checking the extra and the ``[s3]`` table, so a bad setting fails
    when the repository opens, not halfway through a command); a path is made absolute under ``base``."""
    if url.startswith("s3://"):
        from veml.store.object_store import S3Settings, require_s3fs, split_s3_url

        require_s3fs()
        split_s3_url(url)
        S3Settings.resolve(s3)
        return url
    if "://" in url and not url.startswith("file://"):
        raise InvalidInput(f"unsupported {what} URL {url!r}: use a local path or s3://bucket/prefix")
    path = Path(url.removeprefix("file://"))
    return path if path.is_absolute() else base / path


_STORE_URLS = (("storage_url", "storage"), ("artifacts_url", "artifact"), ("embeddings_url", "embeddings"))


def check_store_urls(config: Mapping[str, Any], base: Path) -> None:
    """Refuse a malformed storage, artifact or embeddings URL (or ``[s3]`` table) without opening the
    stores: a repository whose stores open on first use still fails on a bad setting when it opens."""
    for key, what in _STORE_URLS:
        _local_or_s3(config[key], base, what, config.get("s3"))


def probe_store_urls(config: Mapping[str, Any], base: Path) -> dict[str, str | None]:
    """Per URL key of ``config.toml``: ``None`` when that location answers (an ``s3://`` bucket is
    listed; a local directory is made on demand), else the one-line reason (``veml doctor``)."""
    from veml.store.object_store import location

    out: dict[str, str | None] = {}
    for key, what in _STORE_URLS:
        try:
            location(_local_or_s3(config[key], base, what, config.get("s3")), config.get("s3")).check()
            out[key] = None
        except VemlError as exc:
            out[key] = str(exc)
    return out


def open_sample_store(url: str, base: Path, s3: Mapping[str, Any] | None = None) -> SampleStore:
    """A local directory (relative to ``.veml/``) or, with the ``[s3]`` extra, ``s3://bucket/prefix``.

    ``s3`` is the ``[s3]`` table of ``config.toml`` (``endpoint_url``, ``region``, ``allow_http``,
    ``anon``, ``max_retries``, ``retry_timeout_s``, ``connect_timeout_s``), over the AWS variables.
    """
    from veml.store.lance_samples import LanceSampleStore

    return LanceSampleStore(_local_or_s3(url, base, "storage", s3), s3=s3)


def open_artifact_store(url: str, base: Path, s3: Mapping[str, Any] | None = None) -> ArtifactStore:
    """A local directory (relative to ``.veml/``) or ``s3://bucket/prefix`` (see :func:`open_sample_store`)."""
    where = _local_or_s3(url, base, "artifact", s3)
    if isinstance(where, str):
        return ObjectArtifactStore(where, s3=s3)
    return LocalArtifactStore(where)


def open_embedding_store(url: str, base: Path, s3: Mapping[str, Any] | None = None) -> EmbeddingStore:
    """The embedding cache: a local directory (relative to ``.veml/``) or ``s3://bucket/prefix``."""
    from veml.store.embeddings import LanceEmbeddingStore

    return LanceEmbeddingStore(_local_or_s3(url, base, "embeddings", s3), s3=s3)


_LAZY = {"GraphStore": "veml.store.graph", "GraphReader": "veml.store.graph", "SampleStore": "veml.store.samples", "EmbeddingStore": "veml.store.embeddings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'veml.store' has no attribute {name!r}")


__all__ = ["GraphStore", "GraphReader", "open_graph_reader", "SampleStore", "ArtifactStore", "EmbeddingStore", "check_store_urls", "probe_store_urls",
           "open_graph_store", "open_sample_store", "open_artifact_store", "open_embedding_store"]
