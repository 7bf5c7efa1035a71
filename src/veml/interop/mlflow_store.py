"""An MLflow tracking store, checked before mlflow's own client is let near it.

mlflow's client is generous with a URI it is given: a file store path that does not exist becomes a
new store, an SQLite file or a PostgreSQL database without MLflow's tables gets them created, and an
unreachable database is retried for minutes.  An import must leave everything as it found it and
fail at once, so :func:`check` looks first (a read-only SQLite connection, a PostgreSQL connection
with a short timeout, a directory listing) and only then is the client opened, in :func:`session`,
which also keeps mlflow's log lines off stderr and turns its exceptions into one VeML error.

A store is recorded and printed by its *label*: the URI without password or database driver, with
local paths made absolute, so the same store reads the same however it was typed (a re-import
recognises it) and no credential lands in the version graph.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sqlite3
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from veml.errors import InvalidInput, MissingExtra, StorageError

#: Tables an MLflow database has (the tracking store's own and its migration marker).
MLFLOW_TABLES = frozenset({"experiments", "runs", "alembic_version"})
CONNECT_TIMEOUT_S = 5
DATABASES = ("postgresql", "mysql", "mssql")
PAGE = 500


@dataclass(frozen=True)
class TrackingStore:
    """Where an MLflow tracking store is: ``uri`` for mlflow's client, ``label`` to record and print."""

    uri: str
    label: str
    kind: str  # file | sqlite | postgresql | mysql | mssql | http

    @property
    def path(self) -> Path:
        """The local file or folder of a file store or SQLite database."""
        return Path(urlsplit(self.uri).path) if self.kind == "file" else Path(self.uri[len("sqlite:///"):])


def parse(uri: str) -> TrackingStore:
    """A tracking URI as MLflow accepts it: a folder (``file:`` URI or plain path), ``sqlite:///FILE``,
    ``postgresql://…`` (``mysql://``, ``mssql://``) or an ``http(s)://`` tracking server."""
    text = (uri or "").strip()
    if not text or "\x00" in text or any(c in text for c in "\r\n"):
        raise InvalidInput(f"malformed MLflow tracking URI {_redacted(text)!r}")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise InvalidInput(f"malformed MLflow tracking URI {_redacted(text)!r}: {exc}") from None
    shown = _redacted(text)
    scheme = parts.scheme.lower()
    base, _, driver = scheme.partition("+")
    if scheme in ("", "file"):
        if scheme == "file" and parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"{shown!r}: a file: tracking URI names a local folder (file:///path), not host "
                               f"{_netloc(parts.netloc)!r}")
        path = Path(parts.path if scheme == "file" else text).expanduser().resolve()
        return TrackingStore(path.as_uri(), path.as_uri(), "file")
    if scheme == "sqlite":
        rest = text[len("sqlite:"):]
        if not rest.startswith("///") or len(rest) == 3 or "?" in rest:
            raise InvalidInput(f"{shown!r}: an SQLite tracking URI is sqlite:///relative/file.db or sqlite:////absolute/file.db")
        path = Path(rest[3:]).expanduser().resolve()
        return TrackingStore(f"sqlite:///{path}", f"sqlite:///{path}", "sqlite")
    if base in ("postgresql", "postgres", "mysql", "mssql"):
        base = "postgresql" if base == "postgres" else base
        if not parts.hostname and not parts.path.strip("/"):
            raise InvalidInput(f"{shown!r}: a database tracking URI names a host and a database")
        if base == "postgresql" and not driver:  # SQLAlchemy's default driver is psycopg2; VeML's extra installs psycopg 3
            driver = "" if importlib.util.find_spec("psycopg2") else "psycopg"
        scheme_out = f"{base}+{driver}" if driver else base
        return TrackingStore(f"{scheme_out}:{text.split(':', 1)[1]}", f"{base}://{_netloc(parts.netloc)}{parts.path}", base)
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidInput(f"{shown!r}: an MLflow tracking server URI names a host")
        return TrackingStore(text, f"{scheme}://{_netloc(parts.netloc)}{parts.path.rstrip('/')}", "http")
    raise InvalidInput(f"unsupported MLflow tracking URI {shown!r}: use a folder (file:), sqlite:///FILE, "
                       "postgresql://… or an http(s):// tracking server")


def _redacted(text: str) -> str:
    """``text`` for a message: the password of a ``scheme://user:password@host`` URI left out."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text.split("@", 1)[-1] if "://" in text and "@" in text else text
    return parts._replace(netloc=_netloc(parts.netloc)).geturl() if parts.password is not None else text


def _netloc(netloc: str) -> str:
    """``user:password@host:port`` without the password."""
    userinfo, at, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{user}@{hostport}" if at and user else hostport


def check(store: TrackingStore, write: bool) -> None:
    """Refuse a store that is not there, not MLflow's, or not reachable, before mlflow's client sees it.

    For reading (an import) the store must exist and hold MLflow's layout or tables; for writing (an
    export) it may also be new (a missing folder or SQLite file, a database without tables), but an
    existing folder or database must be MLflow's: nothing is added to someone else's data."""
    if store.kind == "file":
        _check_folder(store, write)
    elif store.kind == "sqlite":
        _check_tables(store, _sqlite_tables(store, write), write)
    elif store.kind in DATABASES:
        _check_tables(store, _database_tables(store), write)


def _check_folder(store: TrackingStore, write: bool) -> None:
    path = store.path
    if not path.exists():
        if write and path.parent.is_dir():
            return
        raise InvalidInput(f"no MLflow file store at {path}: the folder does not exist")
    if not path.is_dir():
        raise InvalidInput(f"{path} is a file, not an MLflow file store folder")
    entries = list(path.iterdir())
    if write and not entries:
        return
    looks = (path / "models").is_dir() or (path / ".trash").is_dir() or any(
        (e / "meta.yaml").is_file() for e in entries if e.is_dir())
    if not looks:
        raise InvalidInput(f"{path} is not an MLflow file store (no experiment folder with a meta.yaml)")


def _sqlite_tables(store: TrackingStore, write: bool) -> set[str] | None:
    """The tables of the SQLite file, read without writing to it; None when there is no file yet."""
    path = store.path
    if not path.exists():
        if write and path.parent.is_dir():
            return None
        raise InvalidInput(f"no MLflow database at {path}: the file does not exist")
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file, so not an SQLite database")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise InvalidInput(f"{path} is not a readable SQLite database ({exc})") from None


def _database_tables(store: TrackingStore) -> set[str]:
    """The tables of a database server's default schema, through a connection that gives up quickly."""
    import sqlalchemy as sa

    args = {"connect_timeout": CONNECT_TIMEOUT_S} if store.kind in ("postgresql", "mysql") else {}
    try:
        engine = sa.create_engine(store.uri, connect_args=args, poolclass=sa.pool.NullPool)
    except Exception as exc:  # noqa: BLE001 - a bad URL or a driver that is not installed, in many types
        raise InvalidInput(f"cannot open the MLflow database {store.label}: {_first_line(exc)}") from None
    try:
        return set(sa.inspect(engine).get_table_names())
    except Exception as exc:  # noqa: BLE001 - refused, unreachable, unknown database, bad password
        raise InvalidInput(f"cannot reach the MLflow database {store.label}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _check_tables(store: TrackingStore, tables: set[str] | None, write: bool) -> None:
    """An MLflow database; for an export also a new one (no file yet, or no tables at all)."""
    if write and not tables:
        return  # mlflow's client creates its tables
    if not tables or not MLFLOW_TABLES <= tables:
        raise InvalidInput(f"{store.label} is not an MLflow tracking database (it lacks MLflow's "
                           f"{', '.join(sorted(MLFLOW_TABLES - (tables or set())))} tables)")


@contextmanager
def session(store: TrackingStore) -> Iterator[Any]:
    """An ``MlflowClient`` on ``store`` (tracking and registry); mlflow's errors become one :class:`InvalidInput`."""
    # mlflow resolves some URIs (runs:/ of a file store's model versions) through its *default* store, which
    # in mlflow 3 is sqlite:///mlflow.db in the working directory: point the default at this store instead
    env = {"MLFLOW_TRACKING_URI": store.uri, "MLFLOW_REGISTRY_URI": store.uri,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # stderr is the CLI's one error line
    if store.kind == "file":
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"  # mlflow 3 keeps file stores readable on request
    if store.kind == "http":  # one try, a bounded wait: a face must answer, not back off for minutes
        env |= {k: v for k, v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}.items()
                if k not in os.environ}
    with _environment(env):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                from mlflow import MlflowClient
                from mlflow.exceptions import MlflowException
            except ImportError as exc:
                raise MissingExtra("mlflow", "mlflow") from exc
        import sqlalchemy.exc
        from requests.exceptions import RequestException

        with _quiet():  # after the import: importing mlflow configures its loggers
            try:
                yield MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
            except (MlflowException, sqlalchemy.exc.SQLAlchemyError, RequestException) as exc:
                message = getattr(exc, "message", None) or str(exc)
                raise InvalidInput(f"MLflow at {store.label}: {_first_line(message)}") from None
            except OSError as exc:
                raise StorageError(f"MLflow at {store.label}: {exc}") from None


def pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged mlflow search: ``fetch(page_token)`` returns one page (a ``PagedList``)."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _quiet() -> Iterator[None]:
    """mlflow's and Alembic's INFO lines and deprecation warnings kept off stderr (the CLI's stderr is one line)."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: object) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


__all__ = ["TrackingStore", "parse", "check", "session", "pages", "PAGE"]
