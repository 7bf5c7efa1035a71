"""The embedding cache: one insert-only Lance table per embedder, keyed by ``data_id``.

Why per (data_id, embedder): a sample belongs to many versions (filters, merges, the version
that added it), and embedding it is the expensive step of a core set — so it is done once per
sample and embedder, whatever version asks.  Vectors are stored as raw float32 bytes with their
dimension, because one embedder may produce different lengths (sensor networks of different
sizes).  Two processes embedding the same sample both append; readers keep the first row.
The cache lives in a local directory or under ``s3://bucket/prefix`` (see :mod:`veml.store.object_store`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import pyarrow as pa

from veml.errors import InvalidInput, StorageError
from veml.store.object_store import S3Settings, location

SCHEMA = pa.schema([("data_id", pa.int64()), ("dim", pa.int32()), ("vector", pa.binary())])


class EmbeddingStore(Protocol):
    def get(self, key: str, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(the wanted ids that are cached, ascending; their vectors in that order)."""

    def put(self, key: str, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def keys(self) -> list[str]: ...

    def size_bytes(self) -> int: ...


def _slug(key: str) -> str:
    if not key:
        raise InvalidInput("an embedder key must not be empty")
    clean = re.sub(r"[^a-z0-9._-]+", "-", key.lower()).strip("-.")[:80]
    return f"{clean}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


class LanceEmbeddingStore:
    """``root`` is a local directory or an ``s3://bucket/prefix`` string (``s3``: the ``[s3]`` table)."""

    def __init__(self, root: Path | str, s3: S3Settings | Mapping[str, Any] | None = None) -> None:
        self.loc = location(root, s3)
        self.root = self.loc.root  # a Path for a local cache, the s3:// URI otherwise
        self._opts = self.loc.storage_options

    def _name(self, key: str) -> str:
        return f"{_slug(key)}.lance"

    def get(self, key: str, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        import lance

        ids = np.asarray(ids, np.int64)
        name = self._name(key)
        if len(ids) == 0 or not self.loc.dataset_exists(name):
            return np.zeros(0, np.int64), []
        with self.loc.errors(f"cannot read the embedding cache {name} in"):
            ds = lance.dataset(self.loc.child(name), storage_options=self._opts)
            keys = ds.to_table(columns=["data_id"])["data_id"].to_numpy()
        hit = np.isin(keys, ids)
        pos = np.nonzero(hit)[0]
        _, first = np.unique(keys[pos], return_index=True)  # duplicates from concurrent writers: keep the first
        pos = pos[first]
        if len(pos) == 0:
            return np.zeros(0, np.int64), []
        with self.loc.errors(f"cannot read the embedding cache {name} in"):
            rows = ds.take(pos, columns=["data_id", "dim", "vector"])
        found = rows["data_id"].to_numpy()
        order = np.argsort(found, kind="stable")
        dims, blobs = rows["dim"].to_numpy(), rows["vector"].to_pylist()
        vectors = []
        for i in order:
            v = np.frombuffer(blobs[i], dtype="<f4")
            if len(v) != dims[i]:
                raise StorageError(f"embedding cache {name}: row for data_id {found[i]} is damaged")
            vectors.append(v)
        return found[order], vectors

    def put(self, key: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        import lance

        ids = np.asarray(ids, np.int64)
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise InvalidInput(f"{len(ids)} ids but vectors of shape {vectors.shape}")
        if len(ids) == 0:
            return
        if not np.isfinite(vectors).all():
            raise InvalidInput("an embedder produced NaN or infinite values; nothing was cached")
        blobs = [v.astype("<f4").tobytes() for v in vectors]
        table = pa.table({"data_id": ids, "dim": np.full(len(ids), vectors.shape[1], np.int32),
                          "vector": pa.array(blobs, pa.binary())}, schema=SCHEMA)
        self.loc.makedirs()
        name = self._name(key)
        uri = self.loc.child(name)
        if not self.loc.dataset_exists(name):
            try:
                lance.write_dataset(table, uri, mode="create", max_rows_per_group=1024, storage_options=self._opts)
                return
            except (OSError, ValueError):
                pass  # another process created it first (or the store is down: the append below says so)
        with self.loc.errors(f"cannot write the embedding cache {name} in"):
            lance.write_dataset(table, uri, mode="append", max_rows_per_group=1024, storage_options=self._opts)

    def keys(self) -> list[str]:
        return [n[: -len(".lance")] for n in self.loc.list_children(".lance")]

    def size_bytes(self) -> int:
        return self.loc.size_bytes()
