"""The ledger in SQLite or PostgreSQL through SQLAlchemy 2 Core (no ORM on any hot path).

Appends are serialised by the database, never by process memory: on SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` (the database write lock, waited for through
``busy_timeout``); on PostgreSQL an append locks the single ``ledger_head`` row with
``SELECT … FOR UPDATE``. The head row carries the Merkle frontier, so an append reads one row,
hashes O(log n) and writes the entry, the perfect nodes it completes, and the new head.

Driver exceptions become ``LedgerError`` in ``ledger_seam`` and nowhere else; messages carry
the URL with every credential hidden (``redact_url``: the userinfo password and the query
parameters libpq reads secrets from) and driver text scrubbed of those values.

One signed statement is one entry: ``(statement_sha256, occurrence)`` is unique and an append
always writes occurrence 0, so the database itself refuses a replay, whoever appends.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, make_url

from conveyor.errors import InputError, LedgerError
from conveyor.ledger import merkle
from conveyor.ledger.models import (
    Checkpoint,
    CheckpointSigner,
    Entry,
    format_time,
    sign_checkpoint,
)
from conveyor.ledger.rows import (
    BUSY_TIMEOUT_SECONDS as BUSY_TIMEOUT_SECONDS,  # re-exported: server.tokens reads it
    HIDDEN,
    SCHEMA_HEAD as SCHEMA_HEAD,  # re-exported: tests pin it
    SQLITE_PRAGMAS,
    checkpoint_of as _checkpoint,
    chunks,
    entry_of as _entry,
    entry_values as _values,
    seam,
)
from conveyor.ledger.store import (
    Ledger,
    LedgerView,
    NodeTableProofs,
    duplicate_error,
    new_entry,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WRITE = "conveyor_write"
_MIGRATION_LOCK = "conveyor.ledger.migrate"

metadata = sa.MetaData()
head_table = sa.Table(
    "ledger_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("origin", sa.String(256)),
    sa.Column("size", sa.BigInteger),
    sa.Column("root", sa.LargeBinary),
    sa.Column("frontier", sa.LargeBinary),
)
entries_table = sa.Table(
    "ledger_entries",
    metadata,
    # Column order = Entry field order: rows become entries positionally.
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("envelope", sa.LargeBinary),
    sa.Column("envelope_sha256", sa.String(64)),
    sa.Column("leaf_hash", sa.LargeBinary),
    sa.Column("subject_digest", sa.String(512)),
    sa.Column("subject_name", sa.String(1024)),
    sa.Column("predicate_type", sa.String(512)),
    sa.Column("kind", sa.String(64)),
    sa.Column("environment", sa.String(128)),
    sa.Column("source_commit", sa.String(128)),
    sa.Column("signer", sa.String(256)),
    sa.Column("keyid", sa.String(512)),
    sa.Column("recorded_at", sa.String(32)),
    sa.Column("tree_root", sa.LargeBinary),
    sa.Column("statement_sha256", sa.String(64)),
    sa.Column("occurrence", sa.Integer),
)
nodes_table = sa.Table(
    "ledger_nodes",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("hash", sa.LargeBinary),
)
checkpoints_table = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("origin", sa.String(256)),
    sa.Column("size", sa.BigInteger),
    sa.Column("root", sa.LargeBinary),
    sa.Column("time", sa.String(32)),
    sa.Column("keyid", sa.String(256)),
    sa.Column("signature", sa.LargeBinary),
    sa.Column("key_name", sa.String(256)),
    sa.Column("key_hash", sa.LargeBinary),
)
_ENTRY_COLUMNS = list(entries_table.c)
_ENTRY_NAMES = [c.name for c in _ENTRY_COLUMNS]
_CHECKPOINT_COLUMNS = [c for c in checkpoints_table.c if c.name != "id"]

_LOCK_HEAD = (
    sa.select(head_table.c.size, head_table.c.frontier, head_table.c.root)
    .where(head_table.c.id == 1)
    .with_for_update()
)
_READ_HEAD = sa.select(head_table.c.size, head_table.c.root).where(head_table.c.id == 1)
_READ_HEAD_SQL = "SELECT size, root FROM ledger_head WHERE id = 1"


class _AppendSql:
    """The append path's statements as driver SQL: an append runs four of them, and
    SQLAlchemy's per-statement compile-cache and result machinery cost more than the
    database does."""

    def __init__(self, postgres: bool) -> None:
        # Only our own column names are interpolated; values always travel as parameters.
        def p(*names: str) -> str:
            return ", ".join(f"%({n})s" if postgres else f":{n}" for n in names)

        columns = ", ".join(_ENTRY_NAMES)
        lock = " FOR UPDATE" if postgres else ""
        self.lock_head = f"SELECT size, frontier FROM ledger_head WHERE id = 1{lock}"  # noqa: S608
        self.find_statement = (
            "SELECT min(idx) FROM ledger_entries WHERE statement_sha256 = "  # noqa: S608
            + p("statement_sha256")
        )
        self.insert_entry = f"INSERT INTO ledger_entries ({columns}) VALUES ({p(*_ENTRY_NAMES)})"  # noqa: S608
        self.insert_node = (
            f"INSERT INTO ledger_nodes (level, idx, hash) VALUES ({p('level', 'idx', 'hash')})"  # noqa: S608
        )
        head = f"size = {p('size')}, root = {p('root')}, frontier = {p('frontier')}"
        self.update_head = f"UPDATE ledger_head SET {head} WHERE id = 1"  # noqa: S608
        # PostgreSQL: entry, nodes and head in one round trip (data-modifying CTEs always run).
        self.write_all = (
            f"WITH entry AS (INSERT INTO ledger_entries ({columns}) VALUES ({p(*_ENTRY_NAMES)})), "  # noqa: S608
            "nodes AS (INSERT INTO ledger_nodes (level, idx, hash) SELECT * FROM unnest("
            "%(levels)s::smallint[], %(idxs)s::bigint[], %(hashes)s::bytea[])) "
            f"UPDATE ledger_head SET {head} WHERE id = 1"
        )


@functools.cache
def _entries_sql(given: frozenset[str], newest_first: bool) -> str:
    """PostgreSQL: the entries query for the filters ``given`` (values travel as parameters;
    only our own column names are interpolated)."""
    where = [f"{name} = %({name})s" for name in _FILTERS if name in given]
    if "start" in given:
        where.append("idx >= %(start)s")
    if "end" in given:
        where.append("idx < %(end)s")
    sql = f"SELECT {', '.join(_ENTRY_NAMES)} FROM ledger_entries"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY idx DESC" if newest_first else " ORDER BY idx"
    if "limit" in given:
        sql += " LIMIT %(limit)s"
    return sql


_FILTERS = ("subject_digest", "kind", "environment", "source_commit")


def lock_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for a lock name."""
    return int.from_bytes(
        hashlib.sha256(b"conveyor:" + name.encode()).digest()[:8], "big", signed=True
    )


class SqlLedger(NodeTableProofs[Connection]):
    """The ledger in a SQL database; open it with ``open_ledger``."""

    def __init__(self, engine: Engine, display_url: str, secrets: Sequence[str]) -> None:
        self._engine = engine
        self._display = display_url
        self._secrets = tuple(secrets)
        self._local = threading.local()
        self._postgres = engine.dialect.name == "postgresql"
        self._sql = _AppendSql(self._postgres)
        with self._read() as conn:
            self._origin: str = conn.execute(sa.select(head_table.c.origin)).scalar_one()

    # -- plumbing -------------------------------------------------------------------------

    def _translate(self) -> AbstractContextManager[None]:
        """The one seam where driver and OS errors become ``LedgerError``."""
        return ledger_seam(self._display, self._secrets)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "conn", None)
        if current is None:  # else inside serialized(): its transaction
            current = getattr(self._local, "pinned", None)  # inside reading(): autocommit
        if current is not None:
            with self._translate():
                yield current
            return
        with self._translate(), self._engine.connect() as conn:
            yield conn
            conn.rollback()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:  # inside serialized(): its transaction
            with self._translate():
                yield current
            return
        with self._translate(), self._write_connection() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write_connection(self) -> Iterator[Connection]:
        """A connection for one write transaction (the caller begins it): a fresh one, closed
        afterwards; inside ``reading()`` its connection, switched to the default isolation
        for the transaction and back to autocommit afterwards."""
        pinned: Connection | None = getattr(self._local, "pinned", None)
        if pinned is None:
            with self._engine.connect().execution_options(**{_WRITE: True}) as fresh:
                yield fresh
            return
        pinned.rollback()  # no round trip: autocommit has no transaction open
        conn = pinned.execution_options(
            isolation_level=self._engine.dialect.default_isolation_level, **{_WRITE: True}
        )
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.execution_options(isolation_level="AUTOCOMMIT", **{_WRITE: False})

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Run this thread's ledger calls inside the block on one pooled connection.

        PostgreSQL only (SQLite: no change): an operation such as ``status`` makes a few dozen
        small reads, and each used to check a connection out of the pool (a ping), open a
        transaction and roll it back — four round trips per read, most of a request's time
        on a loaded machine. In the block reads run in autocommit on one connection (each
        statement sees the latest commits, as each read's own transaction did before);
        appends and ``serialized()`` run their transactions on that same connection, so a
        thread never holds two. Nested blocks reuse the outer one.
        """
        if (
            not self._postgres
            or getattr(self._local, "pinned", None) is not None
            or getattr(self._local, "conn", None) is not None
        ):
            yield
            return
        with self._translate():
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._local.pinned = conn
        try:
            yield
        finally:
            self._local.pinned = None
            with self._translate():
                conn.close()

    # -- the Ledger protocol ---------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def url(self) -> str:
        """The database URL with every credential hidden."""
        return self._display

    def append(
        self,
        envelope: bytes,
        *,
        subject_digest: str,
        subject_name: str,
        predicate_type: str,
        kind: str,
        signer: str,
        keyid: str,
        environment: str | None = None,
        commit: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Entry:
        fresh = new_entry(
            envelope,
            subject_digest=subject_digest,
            subject_name=subject_name,
            predicate_type=predicate_type,
            kind=kind,
            signer=signer,
            keyid=keyid,
            environment=environment,
            commit=commit,
            recorded_at=recorded_at,
        )
        sql = self._sql
        with self._write() as conn:
            size, frontier = conn.exec_driver_sql(sql.lock_head).one()
            # Under the head lock no other append can race this check; the unique index is
            # the backstop for writers that bypass this code.
            held = conn.exec_driver_sql(
                sql.find_statement, {"statement_sha256": fresh.statement_sha256}
            ).scalar()
            if held is not None:
                raise duplicate_error(fresh.statement_sha256, int(held))
            compact = merkle.CompactRange.from_bytes(size, bytes(frontier))
            leaf = fresh.leaf_hash(size)
            nodes: list[dict[str, Any]] = []
            compact.append(
                leaf, lambda lv, ix, h: nodes.append({"level": lv, "idx": ix, "hash": h})
            )
            entry = fresh.at(size, compact.root(), leaf)
            row = dict(zip(_ENTRY_NAMES, _values(entry), strict=True))
            head = {"size": size + 1, "root": entry.tree_root, "frontier": compact.to_bytes()}
            try:
                if self._postgres:
                    conn.exec_driver_sql(
                        sql.write_all,
                        {
                            **row,
                            **head,
                            "levels": [n["level"] for n in nodes],
                            "idxs": [n["idx"] for n in nodes],
                            "hashes": [n["hash"] for n in nodes],
                        },
                    )
                    return entry
                conn.exec_driver_sql(sql.insert_entry, row)
            except exc.IntegrityError as error:
                if "statement" in str(error.orig):
                    raise duplicate_error(fresh.statement_sha256, None) from None
                raise
            if nodes:
                conn.exec_driver_sql(sql.insert_node, nodes)
            conn.exec_driver_sql(sql.update_head, head)
            return entry

    def entries(
        self,
        *,
        subject_digest: str | None = None,
        kind: str | None = None,
        environment: str | None = None,
        commit: str | None = None,
        start: int = 0,
        limit: int | None = None,
        end: int | None = None,
        newest_first: bool = False,
        commit_prefix: str | None = None,
    ) -> list[Entry]:
        if limit is not None and limit < 0:
            raise InputError("limit must be >= 0")
        if self._postgres and commit_prefix is None:  # the hot read: driver SQL (_AppendSql)
            filters = {
                "subject_digest": subject_digest,
                "kind": kind,
                "environment": environment,
                "source_commit": commit,
                "start": start if start > 0 else None,
                "end": end,
                "limit": limit,
            }
            given = {k: v for k, v in filters.items() if v is not None}
            sql = _entries_sql(frozenset(given), newest_first)
            with self._read() as conn:
                return [_entry(row) for row in conn.exec_driver_sql(sql, given)]
        c = entries_table.c
        query = sa.select(*_ENTRY_COLUMNS).order_by(c.idx.desc() if newest_first else c.idx)
        for column, value in (
            (c.subject_digest, subject_digest),
            (c.kind, kind),
            (c.environment, environment),
            (c.source_commit, commit),
        ):
            if value is not None:
                query = query.where(column == value)
        if commit_prefix is not None:
            query = query.where(c.source_commit.startswith(commit_prefix, autoescape=True))
        if start > 0:
            query = query.where(c.idx >= start)
        if end is not None:
            query = query.where(c.idx < end)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            found = [_entry(row) for row in conn.execute(query)]
        if commit_prefix is not None:  # SQLite's LIKE ignores case
            found = [e for e in found if (e.commit or "").startswith(commit_prefix)]
        return found

    def _head(self, conn: Connection) -> tuple[int, bytes]:
        if self._postgres:
            size, root = conn.exec_driver_sql(_READ_HEAD_SQL).one()
        else:
            size, root = conn.execute(_READ_HEAD).one()
        return int(size), bytes(root)

    def size(self) -> int:
        with self._read() as conn:
            return self._head(conn)[0]

    def head(self) -> tuple[int, bytes]:
        """The head's size and root, read together (one statement)."""
        with self._read() as conn:
            return self._head(conn)

    def root(self) -> bytes:
        with self._read() as conn:
            return self._head(conn)[1]

    def entry(self, index: int) -> Entry:
        if not 0 <= index < 2**63:
            raise InputError(f"no ledger entry {index}: indexes run from 0")
        with self._read() as conn:
            row = conn.execute(
                sa.select(*_ENTRY_COLUMNS).where(entries_table.c.idx == index)
            ).one_or_none()
            if row is None:
                raise InputError(
                    f"no ledger entry {index}: the ledger has {self._head(conn)[0]} entries"
                )
            return _entry(row)

    def _find_nodes(
        self, conn: Connection, wanted: set[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        return _find_nodes(conn, wanted)

    def checkpoint(self, signer: CheckpointSigner) -> Checkpoint:
        with self._write() as conn:
            size, _, root = conn.execute(_LOCK_HEAD).one()
            cp = sign_checkpoint(
                signer,
                origin=self._origin,
                size=int(size),
                root=bytes(root),
                time=format_time(datetime.now(UTC)),
            )
            conn.execute(
                checkpoints_table.insert(),
                {
                    "origin": cp.origin,
                    "size": cp.size,
                    "root": cp.root,
                    "time": cp.time,
                    "keyid": cp.keyid,
                    "signature": cp.signature,
                    "key_name": cp.key_name,
                    "key_hash": cp.key_hash,
                },
            )
            return cp

    def checkpoints(self, *, last: int | None = None) -> list[Checkpoint]:
        query = sa.select(*_CHECKPOINT_COLUMNS).order_by(checkpoints_table.c.id.desc())
        if last is not None:
            query = query.limit(max(last, 0))
        with self._read() as conn:
            rows = conn.execute(query).all()
            return [_checkpoint(row) for row in reversed(rows)]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(*_CHECKPOINT_COLUMNS).order_by(checkpoints_table.c.id.desc()).limit(1)
            ).one_or_none()
            return None if row is None else _checkpoint(row)

    @contextmanager
    def serialized(self, lock_name: str) -> Iterator[None]:
        """Hold the database lock named ``lock_name`` for the block, in one transaction.

        SQLite: the block is one ``BEGIN IMMEDIATE`` transaction (the database-wide write lock).
        PostgreSQL: ``pg_advisory_xact_lock`` on a key derived from the name, taken in the
        block's transaction and released by its commit or rollback. Ledger calls made inside
        the block from this thread run in that transaction; it commits when the block ends
        and rolls back if the block raises.
        """
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:  # nested: the outer transaction already holds the write lock
            if self._postgres:
                with self._translate():
                    current.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(lock_name))))
            yield
            return
        with self._translate():
            owner = self._write_connection()
            conn = owner.__enter__()
        try:
            with self._translate():
                transaction = conn.begin()
                if self._postgres:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(lock_name))))
            self._local.conn = conn
            try:
                yield
            except BaseException:
                self._local.conn = None
                with self._translate():
                    transaction.rollback()
                raise
            self._local.conn = None
            with self._translate():
                transaction.commit()
        finally:
            self._local.conn = None
            with self._translate():
                owner.__exit__(None, None, None)

    @contextmanager
    def audit_view(self, *, start: int = 0) -> Iterator[LedgerView]:
        """Head, checkpoints and a streamed scan of the entry rows from ``start``, from one
        snapshot; Merkle nodes and replayed statements are looked up in that snapshot."""
        start = max(start, 0)
        with self._translate(), self._engine.connect() as conn:
            if self._postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.begin()
            size, root = self._head(conn)
            rows = conn.execute(sa.select(*_CHECKPOINT_COLUMNS).order_by(checkpoints_table.c.id))
            checkpoints = [_checkpoint(r) for r in rows]
            query = sa.select(*_ENTRY_COLUMNS).order_by(entries_table.c.idx)
            if start:
                query = query.where(entries_table.c.idx >= start)
            streamed: list[sa.CursorResult[Any]] = []

            def stream() -> Iterator[Entry]:
                with self._translate():
                    result = conn.execution_options(yield_per=2000).execute(query)
                    streamed.append(result)
                    for partition in result.partitions():
                        for row in partition:
                            yield _entry(row)
                    result.close()

            def nodes(wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
                with self._translate():
                    return _find_nodes(conn, wanted)

            def replays(digests: Sequence[str] | None) -> list[list[int]]:
                with self._translate():
                    return _replays(conn, digests)

            yield LedgerView(
                self._origin,
                size,
                root,
                checkpoints,
                stream(),
                start=start,
                nodes=nodes,
                replays=replays,
            )
            for result in streamed:
                result.close()
            conn.rollback()

    def close(self) -> None:
        self._engine.dispose()


def _find_nodes(conn: Connection, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
    """The stored nodes among ``wanted`` (level 0: entries' stored leaf hashes); missing ones
    are left out. Chunked: SQLite limits the depth of an expression."""
    found: dict[merkle.NodeId, bytes] = {}
    if conn.dialect.name == "postgresql":
        return _find_nodes_postgres(conn, wanted)
    leaves = sorted(ix for lv, ix in wanted if lv == 0)
    for part in chunks(leaves, 500):
        rows = conn.execute(
            sa.select(entries_table.c.idx, entries_table.c.leaf_hash).where(
                entries_table.c.idx.in_(part)
            )
        )
        found.update({(0, ix): bytes(h) for ix, h in rows})
    inner = sorted(n for n in wanted if n[0] > 0)
    c = nodes_table.c
    for part in chunks(inner, 200):
        # OR of primary-key probes: both planners answer it from the index (a row-value
        # IN list makes SQLite scan the table).
        node_rows = conn.execute(
            sa.select(c.level, c.idx, c.hash).where(
                sa.or_(*(sa.and_(c.level == lv, c.idx == ix) for lv, ix in part))
            )
        )
        found.update({(lv, ix): bytes(h) for lv, ix, h in node_rows})
    return found


# Every wanted node in one statement, as arrays (a proof batch is a few dozen nodes; building
# an OR of probes in SQLAlchemy cost more than the database did). Level 0 is the leaf hash.
_FIND_NODES_PG = (
    "SELECT 0, idx, leaf_hash FROM ledger_entries WHERE idx = ANY(%(leaves)s::bigint[]) "
    "UNION ALL SELECT n.level, n.idx, n.hash FROM ledger_nodes n "
    "JOIN unnest(%(levels)s::smallint[], %(idxs)s::bigint[]) AS w(level, idx) "
    "ON n.level = w.level AND n.idx = w.idx"
)


def _find_nodes_postgres(
    conn: Connection, wanted: set[merkle.NodeId]
) -> dict[merkle.NodeId, bytes]:
    inner = [n for n in wanted if n[0] > 0]
    rows = conn.exec_driver_sql(
        _FIND_NODES_PG,
        {
            "leaves": [ix for lv, ix in wanted if lv == 0],
            "levels": [lv for lv, _ in inner],
            "idxs": [ix for _, ix in inner],
        },
    )
    return {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows}


def _replays(conn: Connection, digests: Sequence[str] | None) -> list[list[int]]:
    """Indexes per statement digest stored more than once (among ``digests``, or all)."""
    c = entries_table.c
    pairs: list[tuple[str, int]] = []
    if digests is None:
        repeated = (
            sa.select(c.statement_sha256)
            .group_by(c.statement_sha256)
            .having(sa.func.count() > 1)
            .scalar_subquery()
        )
        pairs = [
            (d, int(i))
            for d, i in conn.execute(
                sa.select(c.statement_sha256, c.idx).where(c.statement_sha256.in_(repeated))
            )
        ]
    else:
        for part in chunks(sorted(set(digests)), 500):
            pairs.extend(
                (d, int(i))
                for d, i in conn.execute(
                    sa.select(c.statement_sha256, c.idx).where(c.statement_sha256.in_(part))
                )
            )
    groups: dict[str, list[int]] = {}
    for digest, index in pairs:
        groups.setdefault(digest, []).append(index)
    return [sorted(g) for g in groups.values() if len(g) > 1]


# -- opening ----------------------------------------------------------------------------------


def _sqlite_engine(url: sa.URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise InputError(
            "an in-memory SQLite ledger is not supported: give a file path "
            "(sqlite:///path/to/conveyor.db) or use MemoryLedger"
        )
    path = Path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LedgerError(
            f"cannot create the ledger directory {path.parent}: {error.strerror or error}"
        ) from error
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # The driver's own transaction handling is off; the "begin" hook emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write takes the database lock up front: a deferred transaction that later
        # upgrades cannot wait for the lock in WAL mode and fails with SQLITE_BUSY.
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN"
        )

    return engine


def _schema_is_current(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            conn.rollback()
    except sa.exc.DBAPIError:
        return False  # a fresh database: no version table yet
    return [row[0] for row in versions] == [SCHEMA_HEAD]


def _migrate(engine: Engine, postgres: bool) -> None:
    if _schema_is_current(engine):
        return
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            conn.rollback()
            return
        conn.rollback()
    # Two processes opening a fresh database: the lock makes the second wait, then find
    # the schema at head and do nothing.
    with engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
        if postgres:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(_MIGRATION_LOCK))))
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except CommandError as error:
            raise LedgerError(
                f"the ledger schema is not one this conveyor knows ({error}); "
                "upgrade conveyor or open the right database"
            ) from error


def open_ledger(url: str) -> SqlLedger:
    """Open (creating and migrating when needed) the ledger at a SQLAlchemy URL.

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
    ``postgresql+psycopg://user:password@host:port/dbname`` (``postgresql://`` means psycopg).
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        # ``from None``: the parser's message quotes the URL, credentials and all.
        raise InputError(
            "the ledger URL does not parse: use sqlite:///PATH or postgresql+psycopg://…"
        ) from None
    display, secrets = redact_url(parsed)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.get_driver_name() in ("pysqlite", ""):
        engine = _sqlite_engine(parsed)
    elif backend == "postgresql" and parsed.drivername in ("postgresql", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    else:
        raise InputError(
            f"unsupported ledger database {display}: use sqlite:///PATH or postgresql+psycopg://…"
        )
    ledger: SqlLedger | None = None
    try:
        with ledger_seam(display, secrets):
            _migrate(engine, backend == "postgresql")
        ledger = SqlLedger(engine, display, secrets)
        return ledger
    finally:
        if ledger is None:
            engine.dispose()


def open_database(url: str) -> tuple[Engine, str]:
    """The engine of the ledger's database at ``url`` (created and migrated like the ledger)
    and its URL as it may be shown, for the tables that live beside the ledger (API tokens,
    drift snapshots): one way to connect, one redaction."""
    ledger = open_ledger(url)
    return ledger._engine, ledger._display


# libpq connection parameters that carry a secret or point at one (``passfile``: the file of
# passwords; ``sslkey``: the client key). Any other parameter whose name says so, too.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword", "passfile", "sslkey"})
_SECRET_WORDS = ("password", "secret", "token", "passfile")
_PLACEHOLDER = "conveyor-hidden-value"


def _is_secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_PARAMETERS or any(w in lowered for w in _SECRET_WORDS)


def redact_url(url: sa.URL) -> tuple[str, list[str]]:
    """The URL as it may be shown (userinfo password and secret query parameters replaced by
    ``***``) and every secret value, in the spellings a message could quote it in."""
    values: list[str] = []
    if isinstance(url.password, str) and url.password:
        values.append(url.password)
    hidden: dict[str, str | tuple[str, ...]] = {}
    for name, value in url.query.items():
        if _is_secret_parameter(name):
            values.extend([value] if isinstance(value, str) else list(value))
            hidden[name] = _PLACEHOLDER
    if hidden:
        url = url.update_query_dict(hidden)
    secrets: set[str] = set()
    for value in values:
        if value:
            secrets.update({value, quote(value, safe=""), quote_plus(value)})
    # Longest first, so a secret containing another is hidden whole.
    shown = url.render_as_string(hide_password=True).replace(_PLACEHOLDER, HIDDEN)
    return shown, sorted(secrets, key=len, reverse=True)


@contextmanager
def ledger_seam(display: str, secrets: Sequence[str] | str | None) -> Iterator[None]:
    """Error translation for code that runs before a ``SqlLedger`` exists (opening)."""
    with seam(display, secrets, (exc.SQLAlchemyError, sqlite3.Error, OSError)):
        yield


def _satisfies_protocol(ledger: SqlLedger) -> Ledger:
    return ledger  # mypy checks SqlLedger against the Ledger protocol here
