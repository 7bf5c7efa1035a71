"""Where heavy per-sample work runs: in this process, or as tasks on a Ray cluster.

Why an executor and not ``ray.remote`` sprinkled through the version modules: embedding,
core-set and batch-prediction work all have the same shape — split a data version's sample ids
into partitions, run one pure function per partition, gather the results in order — so one
``map(fn, items)`` serves them all, and the local executor runs the very same functions in a loop.
The functions receive a :class:`RepoLocation` (the repository's store URLs), never live store
objects: a task opens the stores itself, so it runs on any node that reaches the same PostgreSQL
and object store (or, on one machine, the same paths).

Ray is an optional extra, imported only when an executor first connects.  Connecting fails
cleanly (:class:`ComputeError`, or :class:`~veml.errors.MissingExtra` naming ``veml[ray]``)
before anything is written, so a command either runs on the cluster or leaves no trace.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, TypeVar

import numpy as np

from veml.compute.target import DEFAULT_PARTITION_SIZE, ENV_VAR, PARTITION_KEY, URL_KEY, compute_target
from veml.errors import InvalidInput, MissingExtra, VemlError

if TYPE_CHECKING:
    from veml.store import ArtifactStore, EmbeddingStore, GraphStore, SampleStore

T = TypeVar("T")
R = TypeVar("R")

#: the repository config keys of the compute back-end (``.veml/config.toml``)
#: overrides ``compute_url`` for one shell or job, like ``MLFLOW_TRACKING_URI`` does for MLflow
OnDone = Callable[[int, Any], None]


class ComputeError(VemlError):
    """The compute back-end could not be reached, or one of its tasks died for a reason of its own."""


@dataclass(frozen=True)
class RepoLocation:
    """The repository's store URLs and its ``.veml/`` directory: enough to reopen every store.

    Relative store paths resolve against ``base`` exactly as :class:`veml.repository.Repository`
    resolves them, so on a single machine (or one with the repository on a shared file system) a
    task opens the same files; ``postgresql://`` and ``s3://`` URLs work from any node.
    """

    base: str
    urls: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, config: Mapping[str, Any], base: Path | str) -> "RepoLocation":
        keep = tuple(sorted((k, v) for k, v in config.items() if k not in (URL_KEY, PARTITION_KEY)))
        return cls(str(Path(base).resolve()), keep)

    def url(self, key: str) -> Any:
        return dict(self.urls)[key]

    def _s3(self) -> dict[str, Any]:
        """The ``[s3]`` table of config.toml, passed on as the repository passes it (credentials stay in
        each node's AWS environment, never in the task)."""
        s3 = dict(self.urls).get("s3")
        return {"s3": dict(s3)} if s3 is not None else {}

    def open_graph(self) -> "GraphStore":
        from veml.store import open_graph_store

        return open_graph_store(self.url("metadata_url"), Path(self.base))

    def open_samples(self) -> "SampleStore":
        from veml.store import open_sample_store

        return open_sample_store(self.url("storage_url"), Path(self.base), **self._s3())

    def open_artifacts(self) -> "ArtifactStore":
        from veml.store import open_artifact_store

        return open_artifact_store(self.url("artifacts_url"), Path(self.base), **self._s3())

    def open_embeddings(self) -> "EmbeddingStore":
        from veml.store import open_embedding_store

        return open_embedding_store(self.url("embeddings_url"), Path(self.base), **self._s3())


class Executor(Protocol):
    """Runs ``fn`` once per item and returns the results in item order."""

    name: str
    distributed: bool
    partition_size: int

    def connect(self) -> None:
        """Make sure the back-end is reachable; raise a :class:`~veml.errors.VemlError` if not."""

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        """``[fn(x) for x in items]``; ``on_done(i, result)`` is called as each one finishes."""


def partition(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """Contiguous, nearly equal parts of at most ``size`` ids (ascending ids stay ascending)."""
    ids = np.asarray(ids)
    if len(ids) == 0:
        return []
    parts = -(-len(ids) // max(int(size), 1))
    return [p for p in np.array_split(ids, parts) if len(p)]


class LocalExecutor:
    """The default: every partition in this process, one after the other."""

    name = "local"
    distributed = False

    def __init__(self, partition_size: int = DEFAULT_PARTITION_SIZE) -> None:
        self.partition_size = int(partition_size)

    def connect(self) -> None:
        return None

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            if on_done is not None:
                on_done(i, out[-1])
        return out


def import_ray() -> Any:
    """``ray``, or one error naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtra("ray", "ray") from exc
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of an explicit cluster address, None for ``auto``/``local`` and the like."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


class RayExecutor:
    """Each partition is one Ray task (``num_cpus`` each), gathered in order as they finish.

    ``address`` is what ``ray.init`` takes: None (``$RAY_ADDRESS``, else the cluster ``ray start``
    left on this machine, else a new local one), ``auto``, ``HOST:6379`` (a node of the cluster)
    or ``ray://HOST:10001`` (Ray Client, from outside the cluster).  A process already connected
    to Ray (a notebook, a Ray job, the tests) is reused as it is.  The connection is made on first
    use, so opening a repository configured for Ray costs nothing until work is sent.
    """

    name = "ray"
    distributed = True

    def __init__(self, address: str | None = None, partition_size: int = DEFAULT_PARTITION_SIZE,
                 num_cpus: float = 1.0, connect_timeout_s: float = 5.0) -> None:
        self.address = address or None
        self.partition_size = int(partition_size)
        self.num_cpus = float(num_cpus)
        self.connect_timeout_s = float(connect_timeout_s)
        self._remote: dict[Callable[..., Any], Any] = {}
        self._connected = False

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, partition_size={self.partition_size})"

    def connect(self) -> None:
        ray = import_ray()
        if self._connected and ray.is_initialized():
            return
        where = self.address or os.environ.get("RAY_ADDRESS") or "a local Ray instance"
        target = _host_port(self.address) if self.address else None
        if target is not None:  # fail in seconds on a wrong address, before ray.init retries for a minute
            try:
                socket.create_connection(target, timeout=self.connect_timeout_s).close()
            except OSError as exc:
                raise ComputeError(f"cannot reach the Ray cluster at {self.address}: {exc.strerror or exc}") from None
        if ray.is_initialized():
            if target is not None and not self._connected_to(ray, target):
                raise ComputeError(f"this process is already connected to another Ray cluster; "
                                   f"cannot also connect to {self.address}")
            self._connected = True
            return
        try:
            with warnings.catch_warnings():
                # Ray starts its daemons with fork+exec; lance's fork warning is about forks that keep running Python
                warnings.filterwarnings("ignore", message="lance is not fork-safe")
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:  # ConnectionError, RuntimeError, TimeoutError … all mean "no cluster"
            raise ComputeError(f"cannot connect to Ray ({where}): {type(exc).__name__}: {exc}".splitlines()[0]) from None
        self._connected = True

    @staticmethod
    def _connected_to(ray: Any, target: tuple[str, int]) -> bool:
        try:
            current = ray.get_runtime_context().gcs_address
        except Exception:  # a Ray Client connection has no local GCS address: trust it
            return True
        host, _, port = str(current).rpartition(":")
        same_host = {host, target[0]} <= {"127.0.0.1", "localhost", socket.gethostname()} or host == target[0]
        return same_host and port == str(target[1])

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_done: OnDone | None = None) -> list[R]:
        if not items:
            return []
        self.connect()
        ray = import_ray()
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=self.num_cpus, max_retries=1)(fn)
        pending = {remote.remote(item): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    results[i] = ray.get(ref)
                    if on_done is not None:
                        on_done(i, results[i])
        except ray.exceptions.RayTaskError as exc:
            _cancel(ray, pending)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, VemlError):  # bad input found by a task: the same error a local run raises
                raise cause from None
            raise ComputeError(f"a Ray task failed: {type(cause).__name__}: {cause}".splitlines()[0]) from None
        except ray.exceptions.RayError as exc:  # a worker or node died, the object store lost a result …
            _cancel(ray, pending)
            raise ComputeError(f"Ray lost a task: {type(exc).__name__}: {exc}".splitlines()[0]) from None
        return results


def _cancel(ray: Any, pending: Mapping[Any, int]) -> None:
    for ref in pending:
        try:
            ray.cancel(ref)
        except Exception:  # already finished or gone: nothing left to stop
            pass


def open_executor(config: Mapping[str, Any]) -> Executor:
    """The executor a repository's config (``compute_url``), or ``$VEML_COMPUTE``, asks for.

    ``local`` (default) · ``ray`` (``$RAY_ADDRESS``, else a running local cluster, else a new one)
    · ``ray:auto`` / ``ray:HOST:6379`` (``ray.init(address=...)``) · ``ray://HOST:10001`` (Ray Client).
    """
    kind, address, size = compute_target(config)
    return LocalExecutor(size) if kind == "local" else RayExecutor(address, size)
