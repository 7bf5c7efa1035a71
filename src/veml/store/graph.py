"""The graph/metadata store interface.

Every version of every kind is a node; every derivation an edge.  :meth:`GraphStore.record` is the
one atomic write ("record one step", as ML Metadata calls it): the node, its incoming edges, its id
sets and its tags commit together or not at all, so a killed process never leaves half a version.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, Sequence

from veml.entities import Alias, Edge, IdSetRef, Lineage, Node
from veml.store.idsets import BitMap

if TYPE_CHECKING:
    import numpy as np

#: (parent id, edge kind, edge properties)
ParentLink = tuple[int, str, Mapping[str, Any]]


class GraphReader(Protocol):
    """What listing and the check for dead runs read: :class:`GraphStore` does it all, and a SQLite
    repository answers it without SQLAlchemy (:class:`veml.store.sql_read.SqliteGraphReader`)."""

    read_only: bool

    def list(self, kinds: Sequence[str] | None = None, limit: int | None = None, offset: int = 0) -> list[Node]: ...

    def count(self, kinds: Sequence[str] | None = None) -> int: ...

    def open_runs(self) -> tuple[dict[int, tuple[int, dict[str, Any]]], list[Node]]:
        """(run node id -> (event id, event) of every run whose latest event is ``running``, the training
        versions with no event yet): the runs that may have been left running by a killed process."""

    def close(self) -> None: ...


class GraphStore(GraphReader, Protocol):
    def record(
        self,
        kind: str,
        name: str,
        props: Mapping[str, Any],
        parents: Sequence[ParentLink] = (),
        idsets: Mapping[str, BitMap] | None = None,
        allocations: Sequence[int] = (),
    ) -> Node:
        """Create a node atomically; ``allocations`` are id ranges this node now owns (marked done)."""

    def get(self, node_id: int) -> Node: ...

    def resolve(self, ref: str | int, kinds: Sequence[str] | None = None) -> Node:
        """A node by id, unique name, tag or alias; :class:`~veml.errors.NotFound` otherwise.

        The one place a version reference is resolved: every face and module goes through it."""

    def name_taken(self, name: str) -> bool:
        """True if a version, tag or alias answers to ``name`` or to a name differing only by case or spaces."""

    def check_new_name(self, name: str, kind: str | None = None, what: str = "name") -> None:
        """Refuse a malformed or reserved ``name``, or one clashing with an existing version or tag
        (:class:`~veml.errors.InvalidInput` / :class:`~veml.errors.Conflict` naming the existing one)."""

    def add_edge(self, src: int, dst: int, kind: str, props: Mapping[str, Any] | None = None) -> Edge: ...

    def idset(self, node_id: int, name: str) -> BitMap: ...

    def idset_ref(self, node_id: int, name: str) -> IdSetRef: ...

    def iter_idsets(self, name: str) -> Iterator[tuple[int, BitMap, IdSetRef]]: ...

    def lineage(self, node_id: int, direction: str = "up", hops: int | None = None) -> Lineage: ...

    def lineage_ids(self, node_id: int, direction: str = "up", hops: int | None = None) -> np.ndarray:
        """Sorted int64 ids of the node and every node the walk reaches; fast on any answer size."""

    def nodes_of(self, node_ids: Sequence[int]) -> list[Node]:
        """The nodes with these ids, in id order."""

    def edges_into(self, node_ids: Sequence[int]) -> list[Edge]:
        """Every edge ending at one of these nodes, in the order the edges were made."""

    def edges_of(self, node_ids: Sequence[int]) -> list[Edge]: ...

    def tag(self, node_id: int, tag: str) -> None: ...

    def untag(self, tag: str) -> None: ...

    def set_alias(self, alias: str, node_id: int) -> tuple[Alias, bool]:
        """Point ``alias`` (a name no version or tag holds) at a version, creating or moving it, and
        record the move in its history; (the alias, whether anything changed)."""

    def delete_alias(self, alias: str) -> Alias:
        """Remove an alias (its history records the deletion); :class:`~veml.errors.NotFound` if there is none."""

    def aliases(self) -> list[Alias]: ...

    def alias_history(self, alias: str) -> list[Alias]:
        """Every set, move and deletion of ``alias``, oldest first; a deletion has no version."""

    def allocate(self, space: str, count: int) -> tuple[int, int]:
        """Reserve ``count`` consecutive ids in ``space`` ('data' or 'ann'); returns (allocation id, first id).

        Until :meth:`record` claims it (or :meth:`drop_allocations` gives it up) this process keeps
        the reservation's lease alive from a background thread (``VEML_ALLOCATION_LEASE_S``), so a
        gc on another host can tell a running writer from a dead one."""

    def pending_allocations(self) -> list[tuple[int, str, int, int, float, str | None, float | None]]:
        """Allocations no node has claimed yet: (id, space, start, count, created_at, owner, lease_left).

        ``owner`` is ``host:pid:pid-namespace[:start-time]`` of the writer, None for rows written
        before schema 2; ``lease_left`` the seconds its lease still runs by the database's clock
        (negative once expired), None for rows written before schema 3."""

    def drop_allocations(self, allocation_ids: Sequence[int]) -> list[int]:
        """Give up these reservations unless a node claimed them meanwhile; returns the ids dropped.

        A node recorded with an allocation that was dropped fails (nothing is recorded)."""

    def append_event(self, node_id: int, status: str, payload: Mapping[str, Any] | None = None,
                     if_latest: int | None = None) -> bool:
        """Run status (running/finished/failed) as insert-only events: the latest one wins.  With
        ``if_latest`` the event is appended only while the run's latest event has that id (0: it has
        none yet), in one transaction; whether it was appended."""

    def events(self, node_id: int) -> list[dict[str, Any]]: ...

    def latest_events(self, node_ids: Sequence[int]) -> dict[int, dict[str, Any]]: ...

    def append_logs(self, node_id: int, rows: Sequence[tuple[int, int, str, float, float]]) -> None: ...

    def read_logs(self, node_id: int, after_id: int = 0, limit: int | None = None) -> list[dict[str, Any]]: ...

    def schema_version(self) -> int:
        """The metadata schema version of the database (``veml_meta.schema_version``)."""

    def upgrade(self) -> tuple[int, int]:
        """Migrate to this VeML's schema; (version before, version after)."""



def process_owner() -> str:
    """Who holds an allocation until its version is recorded: ``host:pid:pid-namespace:start``,
    read at call time so a forked worker names itself.  The namespace (an inode number on Linux)
    tells two containers with one host name apart, so gc never judges a process it cannot see; the
    start time (clock ticks since boot, ``-`` where unknown) tells the writer from a later process
    that reuses its pid."""
    pid = os.getpid()
    state = process_state(pid)
    return f"{socket.gethostname()}:{pid}:{pid_namespace()}:{state[1] if state else '-'}"


def pid_namespace() -> str:
    """This process's PID namespace (an inode number on Linux, ``-`` where there is no ``/proc``)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def process_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) of a process from ``/proc/PID/stat``; None where it cannot be
    read (no such process, or no ``/proc``).  The command name may hold spaces and parentheses,
    so the fields are counted from the last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def owner_alive(owner: str | None) -> bool | None:
    """Whether the writer that holds a reservation is alive: True or False only when it ran on this
    host in this PID namespace (``host:pid:ns[:start]``) and the kernel can tell; None otherwise
    (another host or container, or an owner from before schema 2).  A zombie, or a pid now held by
    a process that started later than the writer did, is a writer that died."""
    parts = (owner or "").split(":")
    if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) <= 0:
        return None
    if parts[0] != socket.gethostname() or parts[2] != pid_namespace():
        return None  # not ours to judge
    pid, start = int(parts[1]), (parts[3] if len(parts) > 3 else "-")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    except (OverflowError, OSError):
        return None
    state = process_state(pid)
    if state is None:
        return True  # no /proc here: the signal said it is there
    if state[0] in ("Z", "X") or (start != "-" and state[1] != start):
        return False
    return True
