"""A private, throw-away PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` on a loopback port.

No external service is used: the cluster lives in a temporary directory, listens on 127.0.0.1 on a
free port (and on a Unix socket inside its own directory), trusts local connections, runs with
``fsync=off`` (it is thrown away at the end) and is stopped and deleted when the context exits.

PostgreSQL refuses to run as root; when the tests run as root the server is started as an
unprivileged user (``VEML_PG_USER``, else ``postgres`` if that account exists, else ``nobody``)
through ``runuser`` and the data directory is handed to that user.

The binaries are looked up in ``$VEML_PG_BIN``, then ``/usr/lib/postgresql/<newest>/bin``, then
``$PATH``.  When they cannot be found :class:`PostgresUnavailable` is raised with a message saying
what to install; the tests turn it into a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SUPERUSER = "veml"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries are missing or the private cluster could not be started."""


def find_pg_bin() -> Path:
    from veml.doctor import postgres_bin_dir  # the one search (veml doctor reports the same directory)

    found = postgres_bin_dir()
    if found is not None:
        return found
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: looked in $VEML_PG_BIN, "
        "/usr/lib/postgresql/*/bin and $PATH. "
        "Install PostgreSQL 15 (e.g. apt-get install postgresql-15) or set VEML_PG_BIN to its bin directory."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The account to run the server as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("VEML_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailable("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")


@dataclass
class PgCluster:
    bin_dir: Path
    base: Path
    port: int
    user: str | None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def _cmd(self, exe: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / exe), *args]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _run(self, exe: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        res = subprocess.run(self._cmd(exe, *args), capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if res.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            raise PostgresUnavailable(f"{exe} {' '.join(args)} failed ({res.returncode}): {res.stderr or res.stdout}\n{log}")
        return res

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh empty database; returns its ``postgresql://`` URL."""
        name = name or f"veml_test_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C", timeout=120)
        opts = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.base}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=200",
            "-c shared_buffers=32MB",
        ])
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", opts, "-w", "-t", "60", "start",
                  timeout=90)
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w waited for "ready"; also make sure the TCP port answers
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(f"PostgreSQL did not accept connections on 127.0.0.1:{self.port}")
                time.sleep(0.1)

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"),
                           capture_output=True, timeout=60, cwd=self.base)


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """Start a private cluster; yield it; stop it and delete its files."""
    bin_dir = find_pg_bin()
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="veml-pg-"))
    try:
        if user:
            pw = pwd.getpwnam(user)
            os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chmod(base, 0o700)
        cluster = None
        for attempt in range(3):  # the free port may be taken between probing and binding
            cluster = PgCluster(bin_dir, base, _free_port(), user)
            try:
                if attempt:
                    shutil.rmtree(cluster.data_dir, ignore_errors=True)
                cluster.start()
                break
            except PostgresUnavailable:
                cluster.stop()
                if attempt == 2:
                    raise
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A private cluster with one database: yields ``postgresql://veml@127.0.0.1:PORT/veml_test``."""
    with pg_cluster() as cluster:
        yield cluster.create_database("veml_test")
