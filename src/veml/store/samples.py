"""The sample store interface: insert-only tables keyed by an integer id.

Reads take an id set (a version's bitmap), so the version layer never learns how rows are laid
out; writes only append.  The one exception is :meth:`SampleStore.reclaim`, used by ``veml gc``
for rows no version references.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import pyarrow as pa

from veml.store.idsets import BitMap


class SampleStore(Protocol):
    def create(self) -> None:
        """Create the empty tables (at ``veml init``)."""

    def append(self, table: str, rows: pa.Table) -> None: ...

    def read(self, table: str, ids: BitMap, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows whose key is in ``ids``, in key order; a sample's payload stored by content digest
        (null in its row) comes back filled from the row holding those bytes."""

    def holders(self, hashes: pa.Array | Sequence[str]) -> pa.Table:
        """The content index's rows (``data_id``, ``content_hash``) for these sha256 digests."""

    def keys(self, table: str) -> BitMap:
        """Every key present in ``table``."""

    def reclaim(self, table: str, ids: BitMap) -> int:
        """Delete rows with these keys and free their space; returns the number deleted."""

    def size_bytes(self) -> int: ...
