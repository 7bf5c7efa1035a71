"""The metadata database's read queries as plain SQL, and a reader that runs them on a SQLite file
through the standard library alone.

Why: importing SQLAlchemy costs a command 0.1 s, a third of the CLI's start-up budget (0.3 s), and a
listing (``veml data list``, the server's version pages) and the check for runs left running by a
killed process need four read queries.  The queries are written once, here, with ``:name``
parameters that both :mod:`sqlite3` and SQLAlchemy's ``text()`` bind; :class:`SqlGraphStore`
runs them on its engine (SQLite or PostgreSQL) and :class:`SqliteGraphReader` on a
:mod:`sqlite3` connection.  The reader only opens a database that is already at this VeML's schema:
anything else (a missing file, an older or newer schema, PostgreSQL) goes to the full store, which
creates it or fails with its own message.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from veml.entities import Node

# The integer kept in ``veml_meta`` since 0.1; each Alembic revision maps to one (migrations.SCHEMA_VERSIONS).
SCHEMA_VERSION = 4
RUN_KIND = "TrainingVersion"
CHUNK = 5000  # ids per IN (...) list: well under SQLite's (32,766) and PostgreSQL's (65,535) parameter limits

#: ``execute(sql, params)`` -> rows (tuples): a sqlite3 connection's, or SQLAlchemy's ``conn.execute(text(sql), params)``
Execute = Callable[[str, Mapping[str, Any]], Iterable[Sequence[Any]]]

SCHEMA_VERSION_SQL = "SELECT value FROM veml_meta WHERE key = 'schema_version'"
_NODE_COLUMNS = "id, kind, name, created_at, props"


def chunks(seq: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(seq), CHUNK):
        yield seq[i : i + CHUNK]


def _in(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:p0, :p1, …)`` and its parameters: an IN list both drivers bind."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(":" + k for k in params) + ")", params


def list_nodes(execute: Execute, kinds: Sequence[str] | None = None, limit: int | None = None, offset: int = 0) -> list[Node]:
    """Nodes (of ``kinds``), oldest first, a page at a time."""
    sql, params = f"SELECT {_NODE_COLUMNS} FROM nodes", {}
    if kinds:
        in_list, params = _in("k", list(kinds))
        sql += f" WHERE kind IN {in_list}"
    sql += " ORDER BY id"
    if limit is not None or offset:
        sql += " LIMIT :limit OFFSET :offset"  # no limit: a bound no table reaches (SQLite wants a LIMIT before OFFSET)
        params.update(limit=limit if limit is not None else 2**62, offset=int(offset))
    return nodes_from_rows(execute, execute(sql, params))


def count_nodes(execute: Execute, kinds: Sequence[str] | None = None) -> int:
    sql, params = "SELECT COUNT(*) FROM nodes", {}
    if kinds:
        in_list, params = _in("k", list(kinds))
        sql += f" WHERE kind IN {in_list}"
    return int(next(iter(execute(sql, params)))[0])


def nodes_from_rows(execute: Execute, rows: Iterable[Sequence[Any]]) -> list[Node]:
    """Nodes from ``(id, kind, name, created_at, props)`` rows, with their parents and tags."""
    rows = list(rows)
    if not rows:
        return []
    parents: dict[int, list[int]] = {}
    tags: dict[int, list[str]] = {}
    for chunk in chunks([r[0] for r in rows]):
        in_list, params = _in("n", chunk)
        for src, dst in execute(f"SELECT src, dst FROM edges WHERE dst IN {in_list} ORDER BY id", params):
            parents.setdefault(dst, []).append(src)
        for tag, nid in execute(f"SELECT tag, node_id FROM tags WHERE node_id IN {in_list} ORDER BY tag", params):
            tags.setdefault(nid, []).append(tag)
    return [Node(r[0], r[1], r[2], r[3], json.loads(r[4]), tuple(parents.get(r[0], ())), tuple(tags.get(r[0], ())))
            for r in rows]


def event_of(status: str, at: float, payload: str) -> dict[str, Any]:
    """A run event as every reader sees it: ``{"status", "at", **payload}``."""
    return {"status": status, "at": at, **json.loads(payload)}


def open_runs(execute: Execute) -> tuple[dict[int, tuple[int, dict[str, Any]]], list[Node]]:
    """What may be a run left running: (node id -> (event id, event) of the runs whose latest event is
    ``running``, the training versions with no event yet).  Two indexed queries, so every open of a
    repository can afford them."""
    running = {
        int(r[1]): (int(r[0]), event_of(r[2], r[3], r[4]))
        for r in execute("SELECT e.id, e.node_id, e.status, e.at, e.payload FROM run_events e "
                         "WHERE e.status = 'running' AND e.id IN (SELECT MAX(id) FROM run_events GROUP BY node_id)", {})
    }
    silent = nodes_from_rows(execute, execute(
        f"SELECT {_NODE_COLUMNS} FROM nodes n WHERE n.kind = :kind "
        "AND NOT EXISTS (SELECT 1 FROM run_events e WHERE e.node_id = n.id) ORDER BY n.id", {"kind": RUN_KIND}))
    return running, silent


def sqlite_read_only_uri(path: Path) -> str | None:
    """A ``file:`` URI opening the SQLite file read-only when its directory (or the file) cannot be
    written (a read-only mount, a snapshot); None when it can, or when there is no file yet.

    ``immutable`` (no locks, no ``-shm``) on a file system mounted read-only, or when no ``-shm`` is
    left beside the file (nobody has it open; SQLite cannot open it ``mode=ro`` without creating one);
    otherwise another user (the owner) may be writing it, and ``mode=ro`` reads through the live
    ``-shm``/``-wal``. A leftover non-empty ``-wal`` is always read ``mode=ro``."""
    path = path.resolve()
    if not path.is_file() or (os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)):
        return None
    wal = path.with_name(path.name + "-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    frozen = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    live = path.with_name(path.name + "-shm").exists()  # opened by a writer (immutable would read stale pages)
    return path.as_uri() + ("?mode=ro" if pending or (live and not frozen) else "?mode=ro&immutable=1")


class SqliteGraphReader:
    """The read queries above on a SQLite file, with :mod:`sqlite3` (no SQLAlchemy).  Each call reads
    one snapshot (a deferred transaction); one connection, shared by threads under a lock."""

    def __init__(self, conn: sqlite3.Connection, read_only: bool) -> None:
        self._conn, self.read_only = conn, read_only
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> "SqliteGraphReader | None":
        """A reader on ``path`` when it holds a VeML database at this VeML's schema; None otherwise
        (no file, an empty, older or newer database, something unreadable): the full store decides."""
        if not path.is_file():
            return None
        ro_uri = sqlite_read_only_uri(path)
        try:
            conn = sqlite3.connect(ro_uri or str(path), uri=ro_uri is not None, timeout=60, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error:
            return None
        reader = cls(conn, ro_uri is not None)
        try:
            with reader._snapshot() as execute:
                found = next(iter(execute(SCHEMA_VERSION_SQL, {})), None)
        except sqlite3.Error:
            found = None
        if found is None or str(found[0]) != str(SCHEMA_VERSION):
            conn.close()
            return None
        return reader

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Execute]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield lambda sql, params: self._conn.execute(sql, params).fetchall()
            finally:
                self._conn.execute("COMMIT")

    def list(self, kinds: Sequence[str] | None = None, limit: int | None = None, offset: int = 0) -> list[Node]:
        with self._snapshot() as execute:
            return list_nodes(execute, kinds, limit, offset)

    def count(self, kinds: Sequence[str] | None = None) -> int:
        with self._snapshot() as execute:
            return count_nodes(execute, kinds)

    def open_runs(self) -> tuple[dict[int, tuple[int, dict[str, Any]]], list[Node]]:
        with self._snapshot() as execute:
            return open_runs(execute)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
