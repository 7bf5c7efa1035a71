"""The version graph in SQL through SQLAlchemy Core: one schema for SQLite and PostgreSQL.

Why SQL and not a graph database: the graph is small next to the samples, lineage is a recursive
CTE with indexes on both edge ends, and an embedded SQLite file is what a single user wants.
SQLite runs in WAL mode; write transactions start with ``BEGIN IMMEDIATE`` so two writers queue
on the busy timeout instead of failing half-way, and readers never block.

PostgreSQL (psycopg 3) runs the same schema with ``BIGINT`` (``BIGSERIAL``) keys and unbounded text:
writers are ordinary READ COMMITTED transactions; the id counters are taken with
``SELECT … FOR UPDATE`` (so concurrent allocations get disjoint ranges), and the checks that span
two tables (a name must not shadow a tag and vice versa) and schema creation are serialised by a
transaction-scoped advisory lock, which is what ``BEGIN IMMEDIATE`` gives SQLite.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
import unicodedata
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import event

from veml.entities import RESERVED_PREFIXES, SHARED_KINDS, SHORT_KIND, Alias, Edge, IdSetRef, Lineage, Node, name_key
from veml.errors import AmbiguousName, Conflict, InvalidInput, NotFound, SchemaOutdated, StorageError
from veml.store import idsets as ids
from veml.store import migrations
from veml.store.graph import ParentLink, process_owner
from veml.store.idsets import BitMap
from veml.store.leases import LeaseKeeper, lease_seconds
from veml.store.sql_aliases import AliasTables
from veml.store.sql_read import SCHEMA_VERSION, chunks, count_nodes, event_of, list_nodes, nodes_from_rows, open_runs
from veml.store.sql_read import sqlite_read_only_uri

if TYPE_CHECKING:  # numpy loads on the first lineage walk: `veml data list` reads the database alone
    import numpy as np

    from veml.store.adjacency import Adjacency

metadata = sa.MetaData()

# Row ids (and other integers): INTEGER on SQLite (64-bit already; for a primary key an alias of
# the rowid, so it autoincrements), BIGINT / BIGSERIAL on PostgreSQL (so every id that resolve() accepts, up to 2**63 - 1, is a valid parameter there).
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _Str(length: int) -> sa.types.TypeEngine:
    """SQLite never enforces VARCHAR lengths; TEXT on PostgreSQL keeps it that way (same behaviour)."""
    return sa.String(length).with_variant(sa.Text(), "postgresql")


nodes_t = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("kind", _Str(40), nullable=False),
    sa.Column("name", _Str(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("props", sa.Text, nullable=False),
    sa.UniqueConstraint("name", name="uq_nodes_name"),
    sa.Index("ix_nodes_kind", "kind", "id"),
)

edges_t = sa.Table(
    "edges",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("src", _Id, sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("dst", _Id, sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("kind", _Str(40), nullable=False),
    sa.Column("props", sa.Text, nullable=False),
    sa.Index("ix_edges_dst", "dst", "src"),
    sa.Index("ix_edges_src", "src", "dst"),
)

idsets_t = sa.Table(
    "idsets",
    metadata,
    sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), primary_key=True),
    sa.Column("name", _Str(40), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("digest", _Str(64), nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
)

tags_t = sa.Table(
    "tags",
    metadata,
    sa.Column("tag", _Str(255), primary_key=True),
    sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_tags_node", "node_id"),
)

alias_tables = AliasTables(metadata, nodes_t, _Id, _Str(255))  # revision 0004

counters_t = sa.Table(
    "counters",
    metadata,
    sa.Column("space", _Str(40), primary_key=True),
    sa.Column("next_id", sa.BigInteger, nullable=False),
)

allocations_t = sa.Table(
    "allocations",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("space", _Str(40), nullable=False),
    sa.Column("start", sa.BigInteger, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("node_id", _Id, nullable=True),
    sa.Column("owner", _Str(255), nullable=True),  # host:pid of the writer (revision 0002)
    sa.Column("lease_until", sa.Float, nullable=True),  # the writer's heartbeat, database clock (revision 0003)
    sa.Index("ix_allocations_node", "node_id"),
    sqlite_autoincrement=True,  # an id is never handed out twice, so a claim by id is exact (revision 0003)
)

events_t = sa.Table(
    "run_events",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("status", _Str(20), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Index("ix_run_events_node", "node_id", "id"),
)

logs_t = sa.Table(
    "logs",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("node_id", _Id, sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("step", _Id, nullable=False),
    sa.Column("epoch", _Id, nullable=False),
    sa.Column("key", _Str(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_logs_node", "node_id", "id"),
)

meta_t = sa.Table(
    "veml_meta",
    metadata,
    sa.Column("key", _Str(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

_STEPS = {"up": ("src", "dst"), "down": ("dst", "src")}  # (column stepped to, column matched)


def _walk_cte(name: str, step_to: str, step_from: str, limited: bool) -> str:
    """One recursive walk over the edges.  Without a hop limit only node ids are carried, so
    ``UNION`` visits each node once however many paths reach it (a lineage with diamonds would
    otherwise be walked once per path length); with a limit the depth is carried and bounded."""
    if not limited:
        return (f"{name}(id) AS (SELECT CAST(:root AS BIGINT) UNION "
                f"SELECT e.{step_to} FROM edges e JOIN {name} w ON e.{step_from} = w.id)")
    return (f"{name}_d(id, depth) AS (SELECT CAST(:root AS BIGINT), 0 UNION "
            f"SELECT e.{step_to}, w.depth + 1 FROM edges e JOIN {name}_d w ON e.{step_from} = w.id WHERE w.depth < :hops), "
            f"{name}(id) AS (SELECT DISTINCT id FROM {name}_d)")


def _lineage_cte(direction: str, limited: bool) -> str:
    """``WITH RECURSIVE …`` defining ``ids``: the root and every node the walk reaches."""
    parts, names = [], []
    if direction in ("up", "both"):
        parts.append(_walk_cte("up_walk", *_STEPS["up"], limited))
        names.append("up_walk")
    if direction in ("down", "both"):
        parts.append(_walk_cte("down_walk", *_STEPS["down"], limited))
        names.append("down_walk")
    union = " UNION ".join(f"SELECT id FROM {n}" for n in names)
    return "WITH RECURSIVE " + ", ".join(parts) + f", ids(id) AS ({union}) "


_MAX_HOPS = 1_000_000
#: rows a lineage walk may produce in SQL before it moves to the in-memory adjacency (lineage_ids)
_PROBE = 20_000


def _check_walk(direction: str, hops: int | None) -> None:
    if direction not in ("up", "down", "both"):
        raise InvalidInput(f"lineage direction must be up, down or both, not {direction!r}")
    if hops is not None and hops < 0:
        raise InvalidInput("hop limit must be >= 0")



# pg_advisory_xact_lock keys (PostgreSQL only): schema creation, and the name/tag namespace.
_LOCK_SCHEMA = 0x7665_6D6C_0001
_LOCK_NAMES = 0x7665_6D6C_0002
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _one_line(exc: BaseException) -> str:
    """A driver message on one line (libpq adds hints on more), for the CLI's single ``error:`` line."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


_chunks = chunks


def _text(conn: sa.Connection):
    """The shared read queries of :mod:`veml.store.sql_read`, run on ``conn``."""
    return lambda sql, params: conn.execute(sa.text(sql), params)


class SqlGraphStore:
    """:class:`~veml.store.graph.GraphStore` on any SQLAlchemy URL (SQLite file or PostgreSQL)."""

    def __init__(self, url: str, check_schema: bool = True) -> None:
        """``check_schema=False`` opens a database at an older schema revision (for ``upgrade``)."""
        self.url = url
        self._safe_url = sa.engine.make_url(url).render_as_string(hide_password=True)
        self._check_schema = check_schema
        self._lock_salt = 0
        self.is_sqlite = url.startswith("sqlite")
        self._leases = LeaseKeeper(self._renew_leases)
        self._adjacency_cache: Adjacency | None = None
        self._adjacency_lock = threading.Lock()
        self.read_only = False
        if self.is_sqlite:
            ro_uri = _sqlite_read_only_uri(url)
            if ro_uri is None:
                self.engine = sa.create_engine(url, connect_args={"timeout": 60})
            else:  # a read-only file system: open for reading, every write refused in _write
                self.read_only = True
                self.engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(
                    ro_uri, uri=True, timeout=60, check_same_thread=False), poolclass=sa.pool.NullPool)
            event.listen(self.engine, "connect", _sqlite_on_connect_ro if self.read_only else _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = self._postgres_engine(url)
        self._ensure_schema()

    def _postgres_engine(self, url: str) -> sa.Engine:
        """An engine on ``url``; ``?schema=NAME`` keeps this repository's tables in their own
        PostgreSQL schema (created if missing), so one team database holds many repositories."""
        parsed = sa.engine.make_url(url)
        schema = parsed.query.get("schema")
        if schema is None:
            return sa.create_engine(url, pool_pre_ping=True)
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidInput(f"schema={schema!r} in the metadata URL: use lower-case letters, digits and '_' (at most 63)")
        parsed = parsed.difference_update_query(["schema"])
        admin = sa.create_engine(parsed)
        try:
            with admin.begin() as conn:  # IF NOT EXISTS still races: serialise creators on a lock
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_SCHEMA)))
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except sa.exc.OperationalError as exc:
            raise StorageError(f"cannot open metadata database {self._safe_url}: {_one_line(exc.orig)}") from exc
        finally:
            admin.dispose()
        # Advisory locks are per database: salt them with the schema so repositories sharing a
        # database do not queue on each other's name checks.
        self._lock_salt = zlib.crc32(schema.encode()) << 16
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"options": f"-csearch_path={schema}"})

    # --- schema -------------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        """Create a new database at the head revision; refuse one at another revision.

        An older database is not upgraded here: see :mod:`veml.store.migrations` for why it takes
        ``veml upgrade``.  The integer in ``veml_meta`` is read first (one small query on every
        open); Alembic is only loaded when there is something to create."""
        try:
            # the writer lock: two processes opening a new database at once (a read-only one is only read)
            with self._read() if self.read_only else self._write(lock=_LOCK_SCHEMA) as conn:
                found = self._schema_version(conn)
                if found is None and self.read_only:
                    raise StorageError(f"metadata database {self._safe_url} is empty and read-only")
                if found is None:
                    migrations.upgrade(conn)
                elif found > SCHEMA_VERSION:
                    raise StorageError(
                        f"metadata schema version {found} is newer than this VeML ({SCHEMA_VERSION}): upgrade veml"
                    )
                elif found < SCHEMA_VERSION and self._check_schema:
                    raise SchemaOutdated(
                        f"metadata schema version {found} is older than this VeML ({SCHEMA_VERSION}): "
                        "back it up, then run 'veml upgrade'"
                    )
        except sa.exc.OperationalError as exc:
            raise StorageError(f"cannot open metadata database {self._safe_url}: {_one_line(exc.orig)}") from exc

    @staticmethod
    def _schema_version(conn: sa.Connection) -> int | None:
        """``veml_meta.schema_version``; None for an empty database."""
        inspector = sa.inspect(conn)
        if not inspector.has_table("veml_meta"):
            if inspector.has_table("nodes"):
                raise StorageError("metadata database has VeML tables but no veml_meta table: not a VeML database?")
            return None
        row = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).first()
        if row is None:
            raise StorageError("metadata database has no schema_version in veml_meta")
        return int(row[0])

    def schema_version(self) -> int:
        with self._read() as conn:
            found = self._schema_version(conn)
        return 0 if found is None else found

    def upgrade(self) -> tuple[int, int]:
        """Migrate this database to the head revision in one transaction; (version before, after).

        Under the schema lock (an advisory lock on PostgreSQL, the writer lock on SQLite), so two
        ``veml upgrade`` runs at once apply each revision once.  PostgreSQL DDL is transactional:
        a failure leaves the old schema whole; SQLite's ALTER TABLE ADD COLUMN is too."""
        with self._write(lock=_LOCK_SCHEMA) as conn:
            before = self._schema_version(conn) or 0
            migrations.upgrade(conn)
            after = self._schema_version(conn) or 0
        return before, after

    @contextlib.contextmanager
    def _write(self, lock: int | None = None) -> Iterator[sa.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite, so concurrent writers queue).

        On PostgreSQL ``lock`` names a transaction-scoped advisory lock taken first, for the few
        writes whose checks read other rows than they write (SQLite's writer lock covers those)."""
        if self.read_only:
            raise StorageError(f"repository is read-only: cannot write to {self._safe_url}")
        with self.engine.execution_options(veml_immediate=True).begin() as conn:
            if lock is not None and not self.is_sqlite:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock ^ self._lock_salt)))
            yield conn

    def _read(self):
        return self.engine.connect()

    def close(self) -> None:
        self._leases.close()
        self.engine.dispose()

    # --- nodes --------------------------------------------------------------------------------
    def record(
        self,
        kind: str,
        name: str,
        props: Mapping[str, Any],
        parents: Sequence[ParentLink] = (),
        idsets: Mapping[str, BitMap] | None = None,
        allocations: Sequence[int] = (),
    ) -> Node:
        try:
            node = self._record(kind, name, props, parents, idsets, allocations)
        except BaseException:
            self._abandon(allocations)
            raise
        self._leases.release(allocations)
        return node

    def _record(self, kind: str, name: str, props: Mapping[str, Any], parents: Sequence[ParentLink],
                idsets: Mapping[str, BitMap] | None, allocations: Sequence[int]) -> Node:
        now = time.time()
        self.check_new_name(name, kind)
        try:
            with self._write(lock=_LOCK_NAMES) as conn:
                _raise_clash(name, self._clash(conn, name, kind))  # again, under the writer lock: a tag may have appeared
                node_id = conn.execute(
                    nodes_t.insert().values(kind=kind, name=name, created_at=now, props=json.dumps(props, sort_keys=True))
                ).inserted_primary_key[0]
                if parents:
                    conn.execute(
                        edges_t.insert(),
                        [{"src": p, "dst": node_id, "kind": k, "props": json.dumps(dict(ep), sort_keys=True)} for p, k, ep in parents],
                    )
                for set_name, bitmap in (idsets or {}).items():
                    conn.execute(
                        idsets_t.insert().values(
                            node_id=node_id, name=set_name, count=len(bitmap), digest=ids.digest(bitmap), blob=ids.serialize(bitmap)
                        )
                    )
                if allocations:
                    self._claim(conn, kind, name, node_id, allocations)
        except sa.exc.IntegrityError as exc:
            if self.name_taken(name):
                raise Conflict(f"name {name!r} is already taken") from exc
            raise StorageError(f"cannot record {kind} {name!r}: {_one_line(exc.orig)}") from exc
        return Node(node_id, kind, name, now, dict(props), tuple(p for p, _, _ in parents), ())

    def _rows_to_nodes(self, conn, rows) -> list[Node]:
        return nodes_from_rows(_text(conn), rows)

    def get(self, node_id: int) -> Node:
        with self._read() as conn:
            found = self._rows_to_nodes(conn, conn.execute(sa.select(nodes_t).where(nodes_t.c.id == int(node_id))))
        if not found:
            raise NotFound(f"unknown version id {node_id}")
        return found[0]

    def resolve(self, ref: str | int, kinds: Sequence[str] | None = None) -> Node:
        ref_s = str(ref).strip()
        what = " or ".join(SHORT_KIND.get(k, k) + " version" for k in kinds) if kinds else "version"
        if "\x00" in ref_s:  # never a name or tag (PostgreSQL text cannot even be compared with it)
            raise NotFound(f"unknown {what} {ref_s!r}")
        with self._read() as conn:
            # an id only when SQL can hold it: '²' is str.isdigit() and 2**63 overflows SQLite's integer
            if ref_s.isascii() and ref_s.isdigit() and int(ref_s) < 2**63:
                cond = nodes_t.c.id == int(ref_s)
            else:
                tagged = sa.select(tags_t.c.node_id).where(tags_t.c.tag == ref_s).scalar_subquery()
                cond = sa.or_(nodes_t.c.name == ref_s, nodes_t.c.id == tagged, nodes_t.c.id == alias_tables.target_of(ref_s))
            q = sa.select(nodes_t).where(cond)
            if kinds:
                q = q.where(nodes_t.c.kind.in_(list(kinds)))
            found = self._rows_to_nodes(conn, conn.execute(q))
        if not found:
            raise NotFound(f"unknown {what} {ref_s!r}")
        if len(found) > 1:
            raise AmbiguousName(f"{ref_s!r} names more than one version ({', '.join(str(n.id) for n in found)}): use an id")
        return found[0]

    def list(self, kinds: Sequence[str] | None = None, limit: int | None = None, offset: int = 0) -> list[Node]:
        with self._read() as conn:
            return list_nodes(_text(conn), kinds, limit, offset)

    def count(self, kinds: Sequence[str] | None = None) -> int:
        with self._read() as conn:
            return count_nodes(_text(conn), kinds)

    def name_taken(self, name: str) -> bool:
        """True if a version or a tag already answers to ``name``, or to a name differing only by case or spaces."""
        if "\x00" in name:  # no stored name holds NUL (PostgreSQL text cannot)
            return False
        with self._read() as conn:
            return self._clash(conn, name) is not None

    def check_new_name(self, name: str, kind: str | None = None, what: str = "name") -> None:
        """Refuse ``name`` for a new version (or, ``what="tag"``, a new tag): malformed, reserved, or
        clashing with an existing version or tag (:func:`veml.entities.name_key` says what clashes)."""
        _check_name(name, kind, what)
        with self._read() as conn:
            _raise_clash(name, self._clash(conn, name, kind), what)

    def _clash(self, conn, name: str, kind: str | None = None) -> tuple[str, str] | None:
        """("version"|"tag"|"alias", the stored name) that ``name`` collides with, or None.

        Shared model-part nodes compare exactly (their names are made by VeML, never typed)."""
        named = (("version", nodes_t.c.name), ("tag", tags_t.c.tag), ("alias", alias_tables.names()))
        for what, col in named:
            exact = conn.execute(sa.select(col).where(col == name).limit(1)).first()
            if exact is not None:
                return what, exact[0]
        if kind in SHARED_KINDS:
            return None
        key = name_key(name)
        for what, col in named:
            # SQLite runs name_key itself; PostgreSQL's lower()/\s differ from casefold()/str.split()
            # (``Straße``/``STRASSE``, a no-break space), so there every name is read and name_key decides
            query = sa.select(col)
            if self.is_sqlite:
                query = query.where(sa.func.veml_name_key(col) == key)
            for (found,) in conn.execute(query.execution_options(yield_per=1000)):
                if name_key(found) == key:
                    return what, found
        return None

    # --- edges & lineage ----------------------------------------------------------------------
    def add_edge(self, src: int, dst: int, kind: str, props: Mapping[str, Any] | None = None) -> Edge:
        props = dict(props or {})
        with self._write() as conn:
            for nid in (src, dst):
                if conn.execute(sa.select(nodes_t.c.id).where(nodes_t.c.id == nid)).first() is None:
                    raise NotFound(f"unknown version id {nid}")
            conn.execute(edges_t.insert().values(src=src, dst=dst, kind=kind, props=json.dumps(props, sort_keys=True)))
        return Edge(src, dst, kind, props)

    def edges_of(self, node_ids: Sequence[int]) -> list[Edge]:
        """Edges whose both ends lie in ``node_ids``."""
        wanted = set(node_ids)
        out: list[Edge] = []
        with self._read() as conn:
            for chunk in _chunks(sorted(wanted)):
                rows = conn.execute(
                    sa.select(edges_t.c.src, edges_t.c.dst, edges_t.c.kind, edges_t.c.props, edges_t.c.id)
                    .where(edges_t.c.dst.in_(chunk))
                    .order_by(edges_t.c.id)
                )
                out.extend(Edge(r.src, r.dst, r.kind, json.loads(r.props)) for r in rows if r.src in wanted)
        return out

    def lineage(self, node_id: int, direction: str = "up", hops: int | None = None) -> Lineage:
        _check_walk(direction, hops)
        root = self.get(node_id)
        cte = _lineage_cte(direction, hops is not None)
        params = {"root": root.id, "hops": hops if hops is not None else _MAX_HOPS}
        with self._read() as conn:
            rows = conn.execute(sa.text(cte + "SELECT n.* FROM nodes n JOIN ids ON n.id = ids.id ORDER BY n.id"), params).all()
            nodes = self._rows_to_nodes(conn, rows)
            edge_rows = conn.execute(sa.text(
                cte + "SELECT e.src, e.dst, e.kind, e.props FROM edges e "
                "WHERE e.dst IN (SELECT id FROM ids) AND e.src IN (SELECT id FROM ids) ORDER BY e.id"), params).all()
        edges = tuple(Edge(r.src, r.dst, r.kind, json.loads(r.props)) for r in edge_rows)
        return Lineage(root.id, direction, tuple(nodes), edges)

    def lineage_ids(self, node_id: int, direction: str = "up", hops: int | None = None) -> np.ndarray:
        """Sorted ids of the node and of every node the walk reaches (int64), nothing else read.

        Each direction is first walked in SQL, stopped after :data:`_PROBE` rows: a small answer
        (the usual case) costs a few index look-ups.  A larger one is walked in memory over the
        whole edge table (:mod:`veml.store.adjacency`), read once per process and again only
        when edges were added."""
        import numpy as np

        _check_walk(direction, hops)
        parts = []
        for way in ("up", "down") if direction == "both" else (direction,):
            found = self._probe_walk(node_id, way, hops)
            parts.append(found if found is not None else self._adjacency().reach(node_id, way, hops))
        return parts[0] if len(parts) == 1 else np.union1d(parts[0], parts[1])

    def _probe_walk(self, node_id: int, way: str, hops: int | None) -> np.ndarray | None:
        """The walk in SQL when it ends within :data:`_PROBE` rows, else None."""
        cte = "WITH RECURSIVE " + _walk_cte("walk", *_STEPS[way], hops is not None)
        table = "walk_d" if hops is not None else "walk"  # rows as produced, before DISTINCT
        with self._read() as conn:
            rows = conn.execute(sa.text(f"{cte} SELECT id FROM {table} LIMIT :probe"),
                                {"root": int(node_id), "hops": hops, "probe": _PROBE + 1}).all()
        if len(rows) > _PROBE:
            return None
        import numpy as np

        return np.unique(np.fromiter((r[0] for r in rows), np.int64, len(rows)))

    def _adjacency(self) -> Adjacency:
        """The edge table in memory, read again when its row count moved (edges are insert-only)."""
        from veml.store.adjacency import Adjacency, parse_pairs

        with self._adjacency_lock:
            with self._read() as conn:
                held = self._adjacency_cache
                if held is not None and held.edges == conn.execute(sa.select(sa.func.count()).select_from(edges_t)).scalar_one():
                    return held
                agg = "group_concat(src || ',' || dst)" if self.is_sqlite else "string_agg(src || ',' || dst, ',')"
                count, text = conn.execute(sa.text(f"SELECT count(*), {agg} FROM edges")).one()  # one snapshot
            src, dst = parse_pairs(text)
            if src.size != count:
                raise StorageError(f"read {src.size} edges of {count} from {self._safe_url}")
            self._adjacency_cache = Adjacency(src, dst)
            return self._adjacency_cache

    def nodes_of(self, node_ids: Sequence[int]) -> list[Node]:
        """The nodes with these ids (unknown ids skipped), in id order."""
        out: list[Node] = []
        with self._read() as conn:
            for chunk in _chunks(sorted({int(i) for i in node_ids})):
                out += self._rows_to_nodes(conn, conn.execute(
                    sa.select(nodes_t).where(nodes_t.c.id.in_(chunk)).order_by(nodes_t.c.id)))
        return out

    def edges_into(self, node_ids: Sequence[int]) -> list[Edge]:
        """Every edge ending at one of ``node_ids``, in the order the edges were made."""
        rows: list[Any] = []
        with self._read() as conn:
            for chunk in _chunks(sorted({int(i) for i in node_ids})):
                rows += conn.execute(
                    sa.select(edges_t.c.id, edges_t.c.src, edges_t.c.dst, edges_t.c.kind, edges_t.c.props)
                    .where(edges_t.c.dst.in_(chunk))).all()
        rows.sort(key=lambda r: r.id)
        return [Edge(r.src, r.dst, r.kind, json.loads(r.props)) for r in rows]

    # --- id sets ------------------------------------------------------------------------------
    def idset(self, node_id: int, name: str) -> BitMap:
        with self._read() as conn:
            row = conn.execute(
                sa.select(idsets_t.c.blob).where(idsets_t.c.node_id == node_id, idsets_t.c.name == name)
            ).first()
        if row is None:
            return BitMap()
        return ids.deserialize(row[0])

    def idset_ref(self, node_id: int, name: str) -> IdSetRef:
        with self._read() as conn:
            row = conn.execute(
                sa.select(idsets_t.c.count, idsets_t.c.digest).where(idsets_t.c.node_id == node_id, idsets_t.c.name == name)
            ).first()
        if row is None:
            return IdSetRef(0, ids.digest(BitMap()))
        return IdSetRef(int(row[0]), row[1])

    def iter_idsets(self, name: str) -> Iterator[tuple[int, BitMap, IdSetRef]]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(idsets_t.c.node_id, idsets_t.c.blob, idsets_t.c.count, idsets_t.c.digest)
                .where(idsets_t.c.name == name)
                .order_by(idsets_t.c.node_id)
            ).all()
        for r in rows:
            yield r.node_id, ids.deserialize(r.blob), IdSetRef(int(r.count), r.digest)

    # --- tags ---------------------------------------------------------------------------------
    def tag(self, node_id: int, tag: str) -> None:
        self.check_new_name(tag, what="tag")
        try:
            with self._write(lock=_LOCK_NAMES) as conn:
                _raise_clash(tag, self._clash(conn, tag), "tag")
                conn.execute(tags_t.insert().values(tag=tag, node_id=node_id, created_at=time.time()))
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"tag {tag!r} already exists") from exc

    def untag(self, tag: str) -> None:
        if "\x00" in tag:
            raise NotFound(f"unknown tag {tag!r}")
        with self._write() as conn:
            if conn.execute(tags_t.delete().where(tags_t.c.tag == tag)).rowcount == 0:
                raise NotFound(f"unknown tag {tag!r}")

    # --- aliases (movable names; the SQL is in veml.store.sql_aliases) ------------------------
    def set_alias(self, alias: str, node_id: int) -> tuple[Alias, bool]:
        """Point ``alias`` at ``node_id``, creating or moving it; (the alias, whether it changed)."""
        _check_name(alias, what="alias")
        with self._write(lock=_LOCK_NAMES) as conn:  # the namespace check and the write, as one
            clash = self._clash(conn, alias)
            if clash != ("alias", alias):
                _raise_clash(alias, clash, "alias")
            if conn.execute(sa.select(nodes_t.c.id).where(nodes_t.c.id == node_id)).first() is None:
                raise NotFound(f"unknown version id {node_id}")
            changed = alias_tables.point(conn, alias, node_id, time.time())
            [found] = alias_tables.listed(conn, alias)
        return found, changed

    def delete_alias(self, alias: str) -> Alias:
        """Remove ``alias`` (its history keeps it); returns where it pointed."""
        with self._write(lock=_LOCK_NAMES) as conn:
            found = alias_tables.listed(conn, alias) if "\x00" not in alias else []
            if not found or not alias_tables.remove(conn, alias, time.time()):
                raise NotFound(f"unknown alias {alias!r}")
        return found[0]

    def aliases(self) -> list[Alias]:
        with self._read() as conn:
            return alias_tables.listed(conn)

    def alias_history(self, alias: str) -> list[Alias]:
        """Every set, move and deletion of ``alias``, oldest first (empty for a name never used as one)."""
        if "\x00" in alias:
            return []
        with self._read() as conn:
            return alias_tables.moves(conn, alias)

    # --- id allocation ------------------------------------------------------------------------
    def allocate(self, space: str, count: int) -> tuple[int, int]:
        if count < 0:
            raise InvalidInput("cannot allocate a negative number of ids")
        lease = lease_seconds()
        with self._write() as conn:
            if not self.is_sqlite:  # make sure the counter row exists, then lock it: allocations queue on it
                from sqlalchemy.dialects import postgresql as pg

                conn.execute(pg.insert(counters_t).values(space=space, next_id=0).on_conflict_do_nothing())
            row = conn.execute(
                sa.select(counters_t.c.next_id).where(counters_t.c.space == space).with_for_update()
            ).first()
            start = int(row[0]) if row else 0
            if start + count >= 2**32:
                raise StorageError(f"id space {space!r} exhausted (32-bit ids)")
            if row is None:
                conn.execute(counters_t.insert().values(space=space, next_id=start + count))
            else:
                conn.execute(counters_t.update().where(counters_t.c.space == space).values(next_id=start + count))
            alloc_id = int(conn.execute(
                allocations_t.insert().values(space=space, start=start, count=count, created_at=time.time(),
                                              owner=process_owner(), lease_until=self._db_now() + lease)
            ).inserted_primary_key[0])
        self._leases.hold(alloc_id, lease)
        return alloc_id, start

    def pending_allocations(self) -> list[tuple[int, str, int, int, float, str | None, float | None]]:
        a = allocations_t.c
        with self._read() as conn:
            rows = conn.execute(
                sa.select(a.id, a.space, a.start, a.count, a.created_at, a.owner, (a.lease_until - self._db_now()))
                .where(a.node_id.is_(None))
                .order_by(a.id)
            ).all()
        return [(int(r[0]), r[1], int(r[2]), int(r[3]), float(r[4]), r[5], None if r[6] is None else float(r[6])) for r in rows]

    def drop_allocations(self, allocation_ids: Sequence[int]) -> list[int]:
        """Delete the reservations no node has claimed (rows locked first: a concurrent claim
        either lands before, and the range is kept, or finds it gone and fails)."""
        self._leases.release(allocation_ids)
        dropped: list[int] = []
        if not allocation_ids:
            return dropped
        a = allocations_t.c
        with self._write() as conn:
            for chunk in _chunks(sorted(set(allocation_ids))):
                rows = conn.execute(
                    sa.select(a.id).where(a.id.in_(chunk), a.node_id.is_(None)).with_for_update()
                ).all()
                gone = [int(r[0]) for r in rows]
                if gone:
                    conn.execute(allocations_t.delete().where(a.id.in_(gone)))
                dropped += gone
        return dropped

    def _claim(self, conn: sa.Connection, kind: str, name: str, node_id: int, allocations: Sequence[int]) -> None:
        """Mark the reservations as this node's, inside its transaction; all or the node fails."""
        wanted = sorted(set(allocations))
        a = allocations_t.c
        claimed = sum(
            conn.execute(allocations_t.update().where(a.id.in_(chunk), a.node_id.is_(None)).values(node_id=node_id)).rowcount
            for chunk in _chunks(wanted)
        )
        if claimed != len(wanted):
            raise StorageError(
                f"cannot record {kind} {name!r}: the ids it reserved were released by 'veml gc' meanwhile "
                "(the writer's lease ran out while it was stalled); nothing was recorded, run it again"
            )

    def _abandon(self, allocations: Sequence[int]) -> None:
        """A write that failed gives up its reservations: its rows become garbage for gc at once
        (best effort; a range it cannot drop is reclaimed once this process has exited)."""
        if allocations:
            with contextlib.suppress(Exception):
                self.drop_allocations(allocations)

    def _renew_leases(self, allocation_ids: list[int], lease_s: float) -> None:
        a = allocations_t.c
        with self._write() as conn:
            for chunk in _chunks(allocation_ids):
                conn.execute(allocations_t.update().where(a.id.in_(chunk), a.node_id.is_(None))
                             .values(lease_until=self._db_now() + lease_s))

    def _db_now(self) -> sa.ColumnElement:
        """Now, in epoch seconds, by the clock every writer of this database shares: the server's
        on PostgreSQL (hosts' clocks may disagree), this host's for a SQLite file."""
        if self.is_sqlite:
            return sa.literal(time.time(), sa.Float)
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)


    # --- run status and logs (insert-only: the latest event is the status) -------------------
    def append_event(self, node_id: int, status: str, payload: Mapping[str, Any] | None = None,
                     if_latest: int | None = None) -> bool:
        """Appends one event, or with ``if_latest`` only while that event id (0: none) is the run's latest."""
        with self._write() as conn:
            # the run's row locked first (PostgreSQL; SQLite's writer lock covers it): appends to one run queue
            conn.execute(sa.select(nodes_t.c.id).where(nodes_t.c.id == node_id).with_for_update())
            if if_latest is not None:
                latest = conn.execute(sa.select(sa.func.max(events_t.c.id)).where(events_t.c.node_id == node_id)).scalar()
                if (latest or 0) != if_latest:
                    return False
            conn.execute(events_t.insert().values(node_id=node_id, status=status, at=time.time(),
                                                  payload=json.dumps(dict(payload or {}), sort_keys=True)))
        return True

    def events(self, node_id: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(sa.select(events_t).where(events_t.c.node_id == node_id).order_by(events_t.c.id)).all()
        return [event_of(r.status, r.at, r.payload) for r in rows]

    def latest_events(self, node_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        with self._read() as conn:
            for chunk in _chunks(list(node_ids)):
                rows = conn.execute(
                    sa.select(events_t).where(events_t.c.node_id.in_(chunk)).order_by(events_t.c.id)
                ).all()
                for r in rows:
                    out[r.node_id] = event_of(r.status, r.at, r.payload)
        return out

    def open_runs(self) -> tuple[dict[int, tuple[int, dict[str, Any]]], list[Node]]:
        with self._read() as conn:
            return open_runs(_text(conn))

    def append_logs(self, node_id: int, rows: Sequence[tuple[int, int, str, float, float]]) -> None:
        """(step, epoch, key, value, at) rows, one transaction for the lot."""
        if not rows:
            return
        with self._write() as conn:
            conn.execute(logs_t.insert(), [
                {"node_id": node_id, "step": s, "epoch": e, "key": k, "value": float(v), "at": t} for s, e, k, v, t in rows
            ])

    def read_logs(self, node_id: int, after_id: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        q = sa.select(logs_t).where(logs_t.c.node_id == node_id, logs_t.c.id > after_id).order_by(logs_t.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            rows = conn.execute(q).all()
        return [{"id": r.id, "step": r.step, "epoch": r.epoch, "key": r.key, "value": r.value, "at": r.at} for r in rows]


def _check_name(name: str, kind: str | None = None, what: str = "name") -> None:
    """The one check of every version name and tag (all kinds)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"a {what} must not be empty")
    if name.strip().isdigit():
        raise InvalidInput(f"{what} {name!r} is all digits, which would read as an id")
    if len(name) > 255:
        raise InvalidInput(f"a {what} must be at most 255 characters")
    if "\x00" in name:
        raise InvalidInput(f"a {what} must not contain a NUL character")
    if name != name.strip():
        raise InvalidInput(f"{what} {name!r} starts or ends with spaces: use {name.strip()!r}")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidInput(f"{what} {name!r} contains a control character")
    if kind not in SHARED_KINDS:
        for prefix in RESERVED_PREFIXES:
            if name.casefold().startswith(prefix):
                raise InvalidInput(f"{what} {name!r} starts with {prefix!r}, which is reserved for shared model parts "
                                   f"({', '.join(RESERVED_PREFIXES)})")


def _raise_clash(name: str, clash: tuple[str, str] | None, what: str = "name") -> None:
    if clash is None:
        return
    kind, found = clash
    if found == name:
        raise Conflict(f"{what} {name!r} is already taken by a {kind}")
    raise Conflict(f"{what} {name!r} differs only by case or spaces from the existing {kind} {found!r}")


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite's own BEGIN is deferred).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    dbapi_conn.create_function("veml_name_key", 1, lambda v: name_key(v) if isinstance(v, str) else v, deterministic=True)
    cur.close()


def _sqlite_read_only_uri(url: str) -> str | None:
    """:func:`veml.store.sql_read.sqlite_read_only_uri` of the file a ``sqlite:///`` URL names."""
    raw = url.split(":///", 1)[1] if ":///" in url else ""
    if not raw or raw.startswith(":memory:"):
        return None
    return sqlite_read_only_uri(Path(raw))


def _sqlite_on_connect_ro(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    dbapi_conn.create_function("veml_name_key", 1, lambda v: name_key(v) if isinstance(v, str) else v, deterministic=True)


def _sqlite_on_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("veml_immediate") else "BEGIN")
