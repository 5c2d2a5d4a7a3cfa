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

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
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
    Mark,
    Run,
    checkpoint_of as _checkpoint,
    checkpoint_values,
    checkpoints_query,
    entries_query,
    entry_of as _entry,
    entry_values as _values,
    find_nodes_sqlite,
    find_replays,
    seam,
    statements,
)
from conveyor.ledger.store import (
    Ledger,
    LedgerView,
    NodeTableProofs,
    duplicate_error,
    new_entry,
    plan_append,
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
_CHECKPOINT_COLUMNS = [c for c in checkpoints_table.c if c.name != "id"]

_LOCK_HEAD = (
    sa.select(head_table.c.size, head_table.c.frontier, head_table.c.root)
    .where(head_table.c.id == 1)
    .with_for_update()
)
# PostgreSQL: entry, nodes and head in one round trip (data-modifying CTEs always run).
_WRITE_ALL_PG = (
    f"WITH entry AS ({statements('%s').insert_entry}), "  # noqa: S608 (our statements)
    "nodes AS (INSERT INTO ledger_nodes (level, idx, hash) SELECT * FROM unnest("
    f"%s::smallint[], %s::bigint[], %s::bytea[])) {statements('%s').update_head}"
)


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
        # The driver's parameter mark: psycopg's, or sqlite3's under SQLAlchemy.
        self._mark: Mark = "%s" if self._postgres else "?"
        self._sql = statements(self._mark)
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
            lock = " FOR UPDATE" if self._postgres else ""  # SQLite: BEGIN IMMEDIATE holds it
            size, frontier = conn.exec_driver_sql(sql.lock_head + lock).one()
            held = conn.exec_driver_sql(sql.find_statement, (fresh.statement_sha256,)).scalar()
            plan = plan_append(fresh, size, frontier, held)
            row = _values(plan.entry)
            try:
                if self._postgres:
                    nodes = plan.nodes
                    columns = ([n[0] for n in nodes], [n[1] for n in nodes], [n[2] for n in nodes])
                    conn.exec_driver_sql(_WRITE_ALL_PG, (*row, *columns, *plan.head))
                    return plan.entry
                conn.exec_driver_sql(sql.insert_entry, row)
            except exc.IntegrityError as error:
                if "statement" in str(error.orig):
                    raise duplicate_error(fresh.statement_sha256, None) from None
                raise
            if plan.nodes:
                conn.exec_driver_sql(sql.insert_node, list(plan.nodes))
            conn.exec_driver_sql(sql.update_head, plan.head)
            return plan.entry

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
        sql, params = entries_query(
            self._mark,
            subject_digest=subject_digest,
            kind=kind,
            environment=environment,
            commit=commit,
            start=start,
            limit=limit,
            end=end,
            newest_first=newest_first,
            commit_prefix=commit_prefix,
        )
        with self._read() as conn:
            return [_entry(row) for row in conn.exec_driver_sql(sql, params)]

    def _head(self, conn: Connection) -> tuple[int, bytes]:
        size, root = conn.exec_driver_sql(self._sql.read_head).one()
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
            row = conn.exec_driver_sql(self._sql.select_entry, (index,)).one_or_none()
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
            conn.exec_driver_sql(self._sql.insert_checkpoint, checkpoint_values(cp))
            return cp

    def checkpoints(self, *, last: int | None = None) -> list[Checkpoint]:
        with self._read() as conn:
            rows = conn.exec_driver_sql(*checkpoints_query(self._mark, last=last)).all()
            return [_checkpoint(row) for row in reversed(rows)]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._read() as conn:
            row = conn.exec_driver_sql(*checkpoints_query(self._mark, last=1)).one_or_none()
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
                    return find_replays(_runner(conn), self._mark, digests)

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


def _runner(conn: Connection) -> Run:
    """``conn``'s driver SQL with positional parameters (a tuple: a list means many rows)."""

    def run(sql: str, params: tuple[Any, ...]) -> Iterable[Sequence[Any]]:
        return conn.exec_driver_sql(sql, params)

    return run


def _find_nodes(conn: Connection, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
    """The stored nodes among ``wanted`` (level 0: entries' stored leaf hashes); missing ones
    are left out."""
    if conn.dialect.name == "postgresql":
        return _find_nodes_postgres(conn, wanted)
    return find_nodes_sqlite(_runner(conn), wanted)


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


@dataclass(frozen=True)
class Database:
    """The ledger's database, for the tables that live beside the ledger (API tokens, drift
    snapshots): its engine, its URL as it may be shown, and the one error seam."""

    engine: Engine
    display: str
    secrets: tuple[str, ...]

    def seam(self) -> AbstractContextManager[None]:
        """Driver and OS errors as one ``LedgerError`` with every credential hidden."""
        return ledger_seam(self.display, self.secrets)


def open_database(url: str) -> Database:
    """The ledger's database at ``url``, created and migrated like the ledger: one way to
    connect, one redaction."""
    ledger = open_ledger(url)
    return Database(ledger._engine, ledger._display, ledger._secrets)


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
