"""Version membership as roaring bitmaps.

A data version is a set of ``data_id``s (and a set of annotation ids); filter, merge and diff are
bitmap operations, and a derived version costs a few bytes of compressed runs instead of copies.
Ids are 32-bit, which bounds one repository at four billion samples.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterable

from pyroaring import BitMap

if TYPE_CHECKING:
    import numpy as np

# numpy is imported inside the functions: the metadata store needs this module, and a command that only
# reads the graph (`veml data list`) should not pay for numpy.

__all__ = ["BitMap", "serialize", "deserialize", "digest", "from_array", "to_numpy", "runs"]


def serialize(ids: BitMap) -> bytes:
    ids.run_optimize()
    return ids.serialize()


def deserialize(blob: bytes) -> BitMap:
    return BitMap.deserialize(blob)


def digest(ids: BitMap) -> str:
    """Content digest of the set itself (not of its encoding, which may change with run_optimize)."""
    import numpy as np

    h = hashlib.sha256()
    for start, stop in runs(ids):
        h.update(np.array([start, stop], dtype="<u8").tobytes())
    return h.hexdigest()


def from_array(values: Iterable[int] | np.ndarray) -> BitMap:
    import numpy as np

    arr = np.asarray(values, dtype=np.uint32) if not isinstance(values, np.ndarray) else values.astype(np.uint32, copy=False)
    return BitMap(arr)


def to_numpy(ids: BitMap) -> np.ndarray:
    """Sorted ids as int64 (the dtype of the tables' key columns)."""
    import numpy as np

    return np.frombuffer(ids.to_array(), dtype=np.uint32).astype(np.int64)


def runs(ids: BitMap) -> list[tuple[int, int]]:
    """Half-open ``[start, stop)`` runs of consecutive ids; one import is one run."""
    import numpy as np

    arr = to_numpy(ids)
    if len(arr) == 0:
        return []
    breaks = np.nonzero(np.diff(arr) != 1)[0]
    starts = np.concatenate(([arr[0]], arr[breaks + 1]))
    stops = np.concatenate((arr[breaks], [arr[-1]])) + 1
    return list(zip(starts.tolist(), stops.tolist()))
