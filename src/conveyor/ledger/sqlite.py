"""A SQLite ledger file through the standard library's ``sqlite3``, with no SQLAlchemy.

Importing SQLAlchemy costs more than most commands do on a CI step (``conveyor check``,
``status``, ``promote`` …), so ``open_sqlite`` serves a SQLite file that is already a ledger
at ``SCHEMA_HEAD`` with plain SQL on ``sqlite3`` connections: the same tables, the same
statements as ``ledger.sql`` runs on SQLite, the same transactions (a read is one deferred
transaction, a write or a ``serialized`` block one ``BEGIN IMMEDIATE``, the database's write
lock), the same pragmas. Creating, migrating and PostgreSQL stay with ``ledger.sql``: a file
that is not a current ledger (missing, not a database, another schema, no head row) is left
to ``SqlLedger``, which migrates it or reports it exactly as before.

Nothing is trusted that the SQLAlchemy store would not trust: rows become entries in
``ledger.rows``, appends are validated by ``store.new_entry`` and refused as replays by the
same check and unique index, and inclusion is checked against the signed tree by
``store.check_inclusion``; the proofs are ``store.NodeTableProofs``, shared with ``ledger.sql``.
The contract tests run on both.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from urllib.parse import quote

from conveyor.errors import InputError, LedgerError
from conveyor.ledger import merkle
from conveyor.ledger.models import Checkpoint, CheckpointSigner, Entry, format_time, sign_checkpoint
from conveyor.ledger.rows import (
    BUSY_TIMEOUT_SECONDS,
    SCHEMA_HEAD,
    SQLITE_PRAGMAS,
    checkpoint_of,
    checkpoint_values,
    checkpoints_query,
    entries_query,
    entry_of,
    entry_values,
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

PREFIX = "sqlite:///"
_SQL = statements("?")


def file_of(url: str) -> str | None:
    """The database file of a plain ``sqlite:///PATH`` URL, or ``None`` for anything else
    (query parameters, escapes, a host, ``:memory:``): those take the SQLAlchemy path, which
    parses and shows them its own way. For a plain URL both read the same file and show the
    same text."""
    if not url.startswith(PREFIX):
        return None
    database = url[len(PREFIX) :]
    # Only URLs SQLAlchemy would render back unchanged: the message text stays the same.
    if not database or quote(database, safe=" +/") != database:
        return None
    return os.path.abspath(database)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def open_sqlite(url: str) -> SqliteLedger | None:
    """The ledger in the SQLite file of ``url`` read through ``sqlite3``, or ``None`` when
    ``url`` is not a plain file URL or the file is not a ledger at the current schema (the
    caller opens it with ``ledger.sql.open_ledger``, which creates, migrates or reports)."""
    path = file_of(url)
    if path is None or not os.path.isfile(path):
        return None
    try:
        conn = _connect(path)
    except sqlite3.Error:
        return None
    origin: str | None = None
    try:
        conn.execute("BEGIN")
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        if [row[0] for row in versions] == [SCHEMA_HEAD]:
            origins = conn.execute("SELECT origin FROM ledger_head").fetchall()
            if len(origins) == 1 and isinstance(origins[0][0], str):
                origin = origins[0][0]
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        origin = None
    finally:
        if origin is None:
            conn.close()
    return None if origin is None else SqliteLedger(url, path, origin, conn)


class SqliteLedger(NodeTableProofs[sqlite3.Connection]):
    """The ledger in a SQLite file, on ``sqlite3`` connections (one per thread)."""

    def __init__(self, url: str, path: str, origin: str, conn: sqlite3.Connection) -> None:
        self._url = url
        self._path = path
        self._origin = origin
        self._lock = threading.Lock()
        self._local = threading.local()
        self._local.conn = conn
        self._connections = [conn]

    # -- plumbing -------------------------------------------------------------------------

    def _translate(self) -> AbstractContextManager[None]:
        """The one seam where driver and OS errors become ``LedgerError``."""
        return seam(self._url, (), (sqlite3.Error, OSError))

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self._path)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _serialized_here(self) -> bool:
        return bool(getattr(self._local, "serialized", 0))

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (one snapshot) on this thread's connection; inside a
        ``serialized`` block (or another read), that transaction."""
        with self._translate():
            conn = self._conn()
            if conn.in_transaction:
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, begun with the database's write lock (a deferred
        transaction that later upgrades cannot wait for the lock in WAL mode); inside a
        ``serialized`` block, that block's transaction."""
        with self._translate():
            conn = self._conn()
            if self._serialized_here():
                yield conn
                return
            if conn.in_transaction:  # a write inside a read block: not a snapshot to upgrade
                raise LedgerError(f"ledger database {self._url}: a write inside a read")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- the Ledger protocol ---------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def url(self) -> str:
        """The database URL as it may be shown (a plain file URL holds no credential)."""
        return self._url

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
        with self._write() as conn:
            size, frontier = self._locked_head(conn)
            held = conn.execute(_SQL.find_statement, (fresh.statement_sha256,)).fetchone()[0]
            plan = plan_append(fresh, size, frontier, held)
            try:
                conn.execute(_SQL.insert_entry, entry_values(plan.entry))
            except sqlite3.IntegrityError as error:
                if "statement" in str(error):
                    raise duplicate_error(fresh.statement_sha256, None) from None
                raise
            if plan.nodes:
                conn.executemany(_SQL.insert_node, plan.nodes)
            conn.execute(_SQL.update_head, plan.head)
            return plan.entry

    def _locked_head(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        row = conn.execute(_SQL.lock_head).fetchone()
        if row is None:
            raise self._no_head()
        return int(row[0]), bytes(row[1])

    def _no_head(self) -> LedgerError:
        return LedgerError(
            f"ledger database {self._url} has no head row; "
            "run `conveyor audit verify`: the ledger may have been tampered with"
        )

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
        """Entries with ``start <= index < end`` matching every filter given, in index order
        (``newest_first``: reversed, so ``limit`` keeps the newest)."""
        sql, params = entries_query(
            "?",
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
            return [entry_of(row) for row in conn.execute(sql, params)]

    def _head(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        row = conn.execute(_SQL.read_head).fetchone()
        if row is None:
            raise self._no_head()
        return int(row[0]), bytes(row[1])

    def size(self) -> int:
        with self._read() as conn:
            return self._head(conn)[0]

    def head(self) -> tuple[int, bytes]:
        """The size and root of the head, read together."""
        with self._read() as conn:
            return self._head(conn)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One operation's reads: each is already one statement or snapshot on this thread's
        connection, and a ``serialized`` block may follow inside, so nothing is held here."""
        yield

    def root(self) -> bytes:
        with self._read() as conn:
            return self._head(conn)[1]

    def entry(self, index: int) -> Entry:
        if not 0 <= index < 2**63:
            raise InputError(f"no ledger entry {index}: indexes run from 0")
        with self._read() as conn:
            row = conn.execute(_SQL.select_entry, (index,)).fetchone()
            if row is None:
                raise InputError(
                    f"no ledger entry {index}: the ledger has {self._head(conn)[0]} entries"
                )
            return entry_of(row)

    def _find_nodes(
        self, conn: sqlite3.Connection, wanted: set[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        return find_nodes_sqlite(conn.execute, wanted)

    def checkpoint(self, signer: CheckpointSigner) -> Checkpoint:
        with self._write() as conn:
            size, root = self._head(conn)
            cp = sign_checkpoint(
                signer,
                origin=self._origin,
                size=size,
                root=root,
                time=format_time(datetime.now(UTC)),
            )
            conn.execute(_SQL.insert_checkpoint, checkpoint_values(cp))
            return cp

    def checkpoints(self, *, last: int | None = None) -> list[Checkpoint]:
        with self._read() as conn:
            rows = conn.execute(*checkpoints_query("?", last=last)).fetchall()
            return [checkpoint_of(row) for row in reversed(rows)]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._read() as conn:
            row = conn.execute(*checkpoints_query("?", last=1)).fetchone()
            return None if row is None else checkpoint_of(row)

    @contextmanager
    def serialized(self, lock_name: str) -> Iterator[None]:
        """The database write lock for the block, in one ``BEGIN IMMEDIATE`` transaction
        (SQLite has one writer; ``lock_name`` matters on PostgreSQL only). Ledger calls made
        inside the block from this thread run in that transaction; it commits when the block
        ends and rolls back if the block raises. Nesting is allowed."""
        if self._serialized_here():
            self._local.serialized += 1
            try:
                yield
            finally:
                self._local.serialized -= 1
            return
        with self._translate():
            conn = self._conn()
            if conn.in_transaction:
                raise LedgerError(f"ledger database {self._url}: a write inside a read")
            conn.execute("BEGIN IMMEDIATE")
        self._local.serialized = 1
        try:
            yield
        except BaseException:
            self._local.serialized = 0
            with self._translate():
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        self._local.serialized = 0
        with self._translate():
            conn.execute("COMMIT")

    @contextmanager
    def audit_view(self, *, start: int = 0) -> Iterator[LedgerView]:
        """Head, checkpoints and a streamed scan of the entry rows from ``start``, from one
        snapshot of a connection of its own (inside ``serialized``: the block's)."""
        start = max(start, 0)
        own = not self._serialized_here()
        with self._translate():
            conn = _connect(self._path) if own else self._conn()
        try:
            with self._translate():
                if own:
                    conn.execute("BEGIN")
                size, root = self._head(conn)
                rows = conn.execute(f"{_SQL.select_checkpoints} ORDER BY id").fetchall()
                checkpoints = [checkpoint_of(r) for r in rows]

            def stream() -> Iterator[Entry]:
                with self._translate():
                    cursor = conn.execute(*entries_query("?", start=start))
                    try:
                        while batch := cursor.fetchmany(2000):
                            for row in batch:
                                yield entry_of(row)
                    finally:
                        cursor.close()

            def nodes(wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
                with self._translate():
                    return find_nodes_sqlite(conn.execute, wanted)

            def replays(digests: Sequence[str] | None) -> list[list[int]]:
                with self._translate():
                    return find_replays(conn.execute, "?", digests)

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
        finally:
            if own:
                conn.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()


def _satisfies_protocol(ledger: SqliteLedger) -> Ledger:
    return ledger  # mypy checks SqliteLedger against the Ledger protocol here
