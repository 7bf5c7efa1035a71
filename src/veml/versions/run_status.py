"""A run's status as readers report it, and the reaper that records the runs whose process died.

A run (``veml train`` or the SDK's ``start_run``) is running while its process is: the latest of its
insert-only events says ``running`` and names that process (``owner``: host, pid, PID namespace and
start time).  A process killed outright (SIGKILL, the OOM killer, a lost node) writes nothing more,
so every reader judges a ``running`` run by its process (:func:`effective`), and every open of the
repository records the verdict for good (:func:`reap_dead_runs`): one ``failed`` event, appended
only while the ``running`` event it judged is still the latest (a run resumed meanwhile is left
alone).  Runs of other hosts or containers are never judged here.

Apart from :mod:`veml.versions.training` so that opening a repository imports neither numpy nor the
adapters: the check is two indexed queries when nothing is running.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

from veml.entities import Node
from veml.errors import StorageError
from veml.store.graph import GraphReader, GraphStore, owner_alive, process_owner

DIED = "the training process died without finishing"


def running_here() -> dict[str, Any]:
    """Who runs a training: pid and host (read by older VeMLs) and ``owner`` (host:pid:pid-namespace:start,
    which also tells a dead run from a later process that reuses its pid, or one in another container)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "owner": process_owner()}


def alive(pid: int, host: str, owner: str | None = None) -> bool:
    if owner:  # judged by pid, pid namespace and start time; another host's or container's run is trusted
        judged = owner_alive(owner)
        return True if judged is None else judged
    if host != socket.gethostname():
        return True  # another machine's run: trust its events
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def before_first_event(node: Node) -> dict[str, Any]:
    """The status of a run node with no event: running, by the process its props name.

    The node and its first event are two commits; a process killed between them leaves a run with
    no event, which :func:`effective` then reports as failed once that process is gone.  (A run
    recorded before ``started_by`` existed has nothing to go by: "unknown".)"""
    if isinstance(node.props.get("registered"), dict):  # a model file registered (no run): finished when recorded
        return {"status": "finished", "checkpoint": node.props["checkpoint"], "metrics": None}
    who = node.props.get("started_by")
    if not isinstance(who, dict):
        return {"status": "unknown"}
    return {"status": "running", "pid": who.get("pid", -1), "host": who.get("host", ""), "owner": who.get("owner")}


def effective(ev: dict[str, Any]) -> dict[str, Any]:
    """A run's latest event as readers report it: a ``running`` run whose process this host can see is
    gone reads as failed."""
    if ev.get("status") == "running" and not alive(_pid(ev.get("pid")), str(ev.get("host", "")), ev.get("owner")):
        return {**ev, "status": "failed", "error": DIED}
    return ev


def _pid(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def reap_dead_runs(reader: GraphReader, writer: Callable[[], GraphStore]) -> list[int]:
    """Record as failed, for good, every run of this host whose process died while it was running; the
    ids marked.  ``writer`` opens the store to write to, only when there is something to record."""
    running, silent = reader.open_runs()
    dead: list[tuple[int, int, dict[str, Any]]] = []
    for node_id, (event_id, ev) in running.items():
        if effective(ev)["status"] == "failed":
            dead.append((node_id, event_id, ev))
    for node in silent:
        ev = before_first_event(node)
        if ev["status"] == "running" and effective(ev)["status"] == "failed":
            dead.append((node.id, 0, {}))
    marked = []
    if not dead:
        return marked
    graph = writer()
    for node_id, event_id, ev in dead:
        keep = {k: v for k, v in ev.items() if k not in ("status", "at", "pid", "host", "owner")}
        if graph.append_event(node_id, "failed", {**keep, "error": DIED, "finished_at": time.time()}, if_latest=event_id):
            marked.append(node_id)
    return marked


def reap_quietly(reader: GraphReader, writer: Callable[[], GraphStore]) -> list[int]:
    """:func:`reap_dead_runs` as a repository opens: a database it cannot write (read-only, locked for
    long) leaves the runs as they are; readers still report them failed."""
    try:
        return reap_dead_runs(reader, writer)
    except StorageError:
        return []
