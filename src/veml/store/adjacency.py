"""The edge table as two compressed adjacency arrays, for walks whose answer is large.

A recursive CTE visits one node per step of the database's executor (about 1.5 µs a node on SQLite,
4 µs on PostgreSQL here), so an answer of 300,000 ancestors costs about half a second on SQLite and
well over a second on PostgreSQL.  Reading the whole edge table once as two integer columns and
walking it breadth-first with numpy costs about the same as one such walk, and every later walk in
the same process only the breadth-first search (about 0.1 s for 500,000 ancestors).

Edges are insert-only (nothing in VeML deletes one), so the number of edges identifies the edge set
a process has read: :class:`SqlGraphStore <veml.store.sql_graph.SqlGraphStore>` keeps one
:class:`Adjacency` and reads the table again when ``count(*)`` differs.  Memory: about 32 bytes per
edge plus 16 per node id, for each direction walked.  The table is read as one text value, which
both databases cap at about 1 GB: some 70 million edges, far beyond the 1.5 million of the benchmark
graph; a graph that large would need the read split by edge id ranges.
"""

from __future__ import annotations

import functools

import numpy as np


def parse_pairs(text: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``"src,dst,src,dst,…"`` (one aggregated string from the database) as two int64 arrays.

    Text is the one bulk format both SQLite (``group_concat``) and PostgreSQL (``string_agg``)
    hand back in a single row, and numpy parses it without a Python object per edge."""
    if not text:
        empty = np.zeros(0, np.int64)
        return empty, empty
    flat = np.fromstring(text, dtype=np.int64, sep=",")
    if flat.size % 2:
        raise ValueError("edge list has an odd number of ends")
    return flat[0::2].copy(), flat[1::2].copy()


class Adjacency:
    """Parents and children of every node id, as CSR arrays built on first use per direction."""

    def __init__(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.edges = int(src.size)
        self._src = src
        self._dst = dst
        self._size = int(max(src.max(initial=0), dst.max(initial=0))) + 1

    @functools.cached_property
    def _up(self) -> tuple[np.ndarray, np.ndarray]:
        return _csr(self._dst, self._src, self._size)  # by child: its parents

    @functools.cached_property
    def _down(self) -> tuple[np.ndarray, np.ndarray]:
        return _csr(self._src, self._dst, self._size)  # by parent: its children

    def reach(self, root: int, direction: str, hops: int | None = None) -> np.ndarray:
        """Sorted ids of ``root`` and every node within ``hops`` steps ``up`` (ancestors) or ``down``."""
        if root < 0 or root >= self._size:  # a node without edges
            return np.array([root], np.int64)
        ptr, idx = self._up if direction == "up" else self._down
        seen = np.zeros(self._size, bool)
        seen[root] = True
        front = np.array([root], np.int64)
        level = 0
        while front.size and (hops is None or level < hops):
            starts = ptr[front]
            counts = ptr[front + 1] - starts
            total = int(counts.sum())
            if not total:
                break
            # positions of every neighbour of the frontier in idx, without a Python loop
            offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
            found = idx[offsets]
            front = np.unique(found[~seen[found]])
            seen[front] = True
            level += 1
        return np.flatnonzero(seen)


def _csr(key: np.ndarray, value: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(key, kind="stable")
    ptr = np.zeros(size + 1, np.int64)
    np.cumsum(np.bincount(key, minlength=size), out=ptr[1:])
    return ptr, value[order]
