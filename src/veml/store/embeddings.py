"""The embedding cache: one insert-only Lance table per embedder, keyed by ``data_id``.

Why per (data_id, embedder): a sample belongs to many versions (filters, merges, the version
that added it), and embedding it is the expensive step of a core set — so it is done once per
sample and embedder, whatever version asks.  Vectors are stored as raw float32 bytes with their
dimension, because one embedder may produce different lengths (sensor networks of different
sizes).  Two processes embedding the same sample both append; readers keep the first row.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from veml.errors import InvalidInput, StorageError

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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _uri(self, key: str) -> Path:
        return self.root / f"{_slug(key)}.lance"

    def get(self, key: str, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        import lance

        ids = np.asarray(ids, np.int64)
        uri = self._uri(key)
        if len(ids) == 0 or not uri.exists():
            return np.zeros(0, np.int64), []
        try:
            ds = lance.dataset(str(uri))
            keys = ds.to_table(columns=["data_id"])["data_id"].to_numpy()
        except (ValueError, OSError) as exc:
            raise StorageError(f"cannot read the embedding cache {uri.name}: {exc}") from exc
        hit = np.isin(keys, ids)
        pos = np.nonzero(hit)[0]
        _, first = np.unique(keys[pos], return_index=True)  # duplicates from concurrent writers: keep the first
        pos = pos[first]
        if len(pos) == 0:
            return np.zeros(0, np.int64), []
        rows = ds.take(pos, columns=["data_id", "dim", "vector"])
        found = rows["data_id"].to_numpy()
        order = np.argsort(found, kind="stable")
        dims, blobs = rows["dim"].to_numpy(), rows["vector"].to_pylist()
        vectors = []
        for i in order:
            v = np.frombuffer(blobs[i], dtype="<f4")
            if len(v) != dims[i]:
                raise StorageError(f"embedding cache {uri.name}: row for data_id {found[i]} is damaged")
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
        self.root.mkdir(parents=True, exist_ok=True)
        uri = self._uri(key)
        if not uri.exists():
            try:
                lance.write_dataset(table, str(uri), mode="create", max_rows_per_group=1024)
                return
            except (OSError, ValueError):
                pass  # another process created it first: append below
        lance.write_dataset(table, str(uri), mode="append", max_rows_per_group=1024)

    def keys(self) -> list[str]:
        return sorted(p.name[: -len(".lance")] for p in self.root.glob("*.lance")) if self.root.exists() else []

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file()) if self.root.exists() else 0
