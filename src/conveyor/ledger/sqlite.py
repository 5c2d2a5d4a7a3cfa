"""A SQLite ledger file read through the standard library's ``sqlite3``; SQLAlchemy is loaded
only when something is written.

Importing SQLAlchemy costs more than most read commands do (``conveyor check``, ``trace``,
``history``, ``status`` on a CI step), so ``open_sqlite`` answers reads with plain SQL on
``sqlite3`` connections and hands every write (``append``, ``checkpoint``, ``serialized``) to
a ``SqlLedger`` it opens on first use. Inside that ledger's ``serialized`` block reads go to
its transaction, so a write and the reads it rests on still see one snapshot.

Nothing is trusted that the SQLAlchemy store would not trust: the same rows become the same
entries (``ledger.rows``), inclusion is checked against the signed tree by the same code
(``store.check_inclusion``), and a file that is not a ledger at ``SCHEMA_HEAD`` (missing, not
a database, an older schema, no head row) is opened by ``SqlLedger`` instead, which migrates it
or reports it exactly as before.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from conveyor.errors import InputError, LedgerError
from conveyor.ledger import merkle
from conveyor.ledger.models import Checkpoint, CheckpointSigner, Entry
from conveyor.ledger.rows import (
    CHECKPOINT_NAMES,
    ENTRY_NAMES,
    SCHEMA_HEAD,
    checkpoint_of,
    chunks,
    entry_of,
    seam,
)
from conveyor.ledger.store import Ledger, LedgerView, check_inclusion, check_proof_sizes

if TYPE_CHECKING:
    from conveyor.ledger.sql import SqlLedger

PREFIX = "sqlite:///"
# As ledger.sql sets them on every connection it opens.
BUSY_TIMEOUT_SECONDS = 60
_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)
_ENTRY_COLUMNS = ", ".join(ENTRY_NAMES)
_CHECKPOINT_COLUMNS = ", ".join(CHECKPOINT_NAMES)
_SELECT_ENTRIES = f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries"  # noqa: S608 (our names)
_SELECT_CHECKPOINTS = f"SELECT {_CHECKPOINT_COLUMNS} FROM ledger_checkpoints"  # noqa: S608
_ENTRY_FILTERS = (
    ("subject_digest", "subject_digest"),
    ("kind", "kind"),
    ("environment", "environment"),
    ("commit", "source_commit"),
)


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
        for pragma in _PRAGMAS:
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


class SqliteLedger:
    """The ledger in a SQLite file: reads on ``sqlite3``, writes through a ``SqlLedger``."""

    def __init__(self, url: str, path: str, origin: str, conn: sqlite3.Connection) -> None:
        self._url = url
        self._path = path
        self._origin = origin
        self._lock = threading.Lock()
        self._local = threading.local()
        self._local.conn = conn
        self._local.depth = 0
        self._connections = [conn]
        self._writer: SqlLedger | None = None

    # -- plumbing -------------------------------------------------------------------------

    def _translate(self) -> AbstractContextManager[None]:
        """The one seam where driver and OS errors become ``LedgerError``."""
        return seam(self._url, (), (sqlite3.Error, OSError))

    def _open_writer(self) -> SqlLedger:
        with self._lock:
            if self._writer is None:
                from conveyor.ledger.sql import open_ledger

                self._writer = open_ledger(self._url)
            return self._writer

    def _writing(self) -> SqlLedger | None:
        """The writer, if this thread is inside its ``serialized`` block (reads go there)."""
        writer = self._writer
        if writer is not None and getattr(writer._local, "conn", None) is not None:
            return writer
        return None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self._path)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
            self._local.depth = 0
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (one snapshot) on this thread's connection."""
        with self._translate():
            conn = self._conn()
            if self._local.depth:
                self._local.depth += 1
                try:
                    yield conn
                finally:
                    self._local.depth -= 1
                return
            conn.execute("BEGIN")
            self._local.depth = 1
            try:
                yield conn
            finally:
                self._local.depth = 0
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

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
        return self._open_writer().append(
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

    def entries(
        self,
        *,
        subject_digest: str | None = None,
        kind: str | None = None,
        environment: str | None = None,
        commit: str | None = None,
        start: int = 0,
        limit: int | None = None,
    ) -> list[Entry]:
        writer = self._writing()
        if writer is not None:
            return writer.entries(
                subject_digest=subject_digest,
                kind=kind,
                environment=environment,
                commit=commit,
                start=start,
                limit=limit,
            )
        if limit is not None and limit < 0:
            raise InputError("limit must be >= 0")
        given = {"subject_digest": subject_digest, "kind": kind}
        given |= {"environment": environment, "commit": commit}
        where: list[str] = []
        params: list[Any] = []
        for name, column in _ENTRY_FILTERS:
            if given[name] is not None:
                where.append(f"{column} = ?")
                params.append(given[name])
        if start > 0:
            where.append("idx >= ?")
            params.append(start)
        sql = _SELECT_ENTRIES
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY idx"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._read() as conn:
            return [entry_of(row) for row in conn.execute(sql, params)]

    def _head(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        row = conn.execute("SELECT size, root FROM ledger_head WHERE id = 1").fetchone()
        if row is None:
            raise LedgerError(
                f"ledger database {self._url} has no head row; "
                "run `conveyor audit verify`: the ledger may have been tampered with"
            )
        return int(row[0]), bytes(row[1])

    def size(self) -> int:
        writer = self._writing()
        if writer is not None:
            return writer.size()
        with self._read() as conn:
            return self._head(conn)[0]

    def root(self) -> bytes:
        writer = self._writing()
        if writer is not None:
            return writer.root()
        with self._read() as conn:
            return self._head(conn)[1]

    def entry(self, index: int) -> Entry:
        writer = self._writing()
        if writer is not None:
            return writer.entry(index)
        if not 0 <= index < 2**63:
            raise InputError(f"no ledger entry {index}: indexes run from 0")
        with self._read() as conn:
            row = conn.execute(f"{_SELECT_ENTRIES} WHERE idx = ?", (index,)).fetchone()
            if row is None:
                raise InputError(
                    f"no ledger entry {index}: the ledger has {self._head(conn)[0]} entries"
                )
            return entry_of(row)

    def _nodes(
        self, conn: sqlite3.Connection, wanted: set[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        found = find_nodes(conn, wanted)
        missing = wanted - found.keys()
        if missing:
            raise LedgerError(
                f"ledger database {self._url} lacks Merkle node {min(missing)}; "
                "run `conveyor audit verify`: the ledger may have been tampered with"
            )
        return found

    def _proof(self, conn: sqlite3.Connection, plan: merkle.ProofPlan) -> list[bytes]:
        return merkle.assemble_proof(plan, self._nodes(conn, merkle.plan_nodes(plan)))

    def verify_inclusion(self, entries: Iterable[Entry], *, size: int, root: bytes) -> None:
        writer = self._writing()
        if writer is not None:
            writer.verify_inclusion(entries, size=size, root=root)
            return
        with self._read() as conn:
            check_inclusion(entries, size=size, root=root, nodes=lambda w: find_nodes(conn, w))

    def root_at(self, size: int) -> bytes:
        writer = self._writing()
        if writer is not None:
            return writer.root_at(size)
        with self._read() as conn:
            check_proof_sizes(self._head(conn)[0], old=size)
            if size == 0:
                return merkle.EMPTY_ROOT
            needed = merkle.range_nodes(0, size)
            nodes = self._nodes(conn, set(needed))
            return merkle.fold([nodes[n] for n in needed])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        writer = self._writing()
        if writer is not None:
            return writer.inclusion_proof(index, size)
        with self._read() as conn:
            current = self._head(conn)[0]
            size = current if size is None else size
            check_proof_sizes(current, old=size)
            check_proof_sizes(size, index=index)
            return self._proof(conn, merkle.inclusion_nodes(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        writer = self._writing()
        if writer is not None:
            return writer.consistency_proof(old_size, new_size)
        with self._read() as conn:
            current = self._head(conn)[0]
            new_size = current if new_size is None else new_size
            check_proof_sizes(current, old=new_size)
            check_proof_sizes(new_size, old=old_size)
            return self._proof(conn, merkle.consistency_nodes(old_size, new_size))

    def checkpoint(self, signer: CheckpointSigner) -> Checkpoint:
        return self._open_writer().checkpoint(signer)

    def checkpoints(self) -> list[Checkpoint]:
        writer = self._writing()
        if writer is not None:
            return writer.checkpoints()
        with self._read() as conn:
            rows = conn.execute(f"{_SELECT_CHECKPOINTS} ORDER BY id").fetchall()
            return [checkpoint_of(row) for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        writer = self._writing()
        if writer is not None:
            return writer.latest_checkpoint()
        with self._read() as conn:
            row = conn.execute(f"{_SELECT_CHECKPOINTS} ORDER BY id DESC LIMIT 1").fetchone()
            return None if row is None else checkpoint_of(row)

    def serialized(self, lock_name: str) -> AbstractContextManager[None]:
        return self._open_writer().serialized(lock_name)

    @contextmanager
    def audit_view(self, *, start: int = 0) -> Iterator[LedgerView]:
        """Head, checkpoints and a streamed scan of the entry rows from ``start``, from one
        snapshot of a connection of its own."""
        writer = self._writing()
        if writer is not None:
            with writer.audit_view(start=start) as view:
                yield view
            return
        start = max(start, 0)
        with self._translate():
            conn = _connect(self._path)
        try:
            with self._translate():
                conn.execute("BEGIN")
                size, root = self._head(conn)
                rows = conn.execute(f"{_SELECT_CHECKPOINTS} ORDER BY id").fetchall()
                checkpoints = [checkpoint_of(r) for r in rows]

            def stream() -> Iterator[Entry]:
                with self._translate():
                    cursor = conn.execute(
                        f"{_SELECT_ENTRIES} WHERE idx >= ? ORDER BY idx", (start,)
                    )
                    try:
                        while batch := cursor.fetchmany(2000):
                            for row in batch:
                                yield entry_of(row)
                    finally:
                        cursor.close()

            def nodes(wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
                with self._translate():
                    return find_nodes(conn, wanted)

            def replays(digests: Sequence[str] | None) -> list[list[int]]:
                with self._translate():
                    return find_replays(conn, digests)

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
            conn.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            writer, self._writer = self._writer, None
        for conn in connections:
            conn.close()
        self._local = threading.local()
        if writer is not None:
            writer.close()


def find_nodes(conn: sqlite3.Connection, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
    """The stored nodes among ``wanted`` (level 0: entries' stored leaf hashes); missing ones
    are left out. Chunked: SQLite limits the number of parameters and expression depth."""
    found: dict[merkle.NodeId, bytes] = {}
    leaves = sorted(ix for lv, ix in wanted if lv == 0)
    for part in chunks(leaves, 500):
        marks = ", ".join("?" * len(part))
        rows = conn.execute(
            f"SELECT idx, leaf_hash FROM ledger_entries WHERE idx IN ({marks})",  # noqa: S608
            part,
        )
        found.update({(0, ix): bytes(h) for ix, h in rows})
    inner = sorted(n for n in wanted if n[0] > 0)
    for part in chunks(inner, 200):
        # OR of primary-key probes: the planner answers each from the index (a row-value IN
        # list makes SQLite scan the table).
        probes = " OR ".join("(level = ? AND idx = ?)" for _ in part)
        node_rows = conn.execute(
            f"SELECT level, idx, hash FROM ledger_nodes WHERE {probes}",  # noqa: S608
            [value for node in part for value in node],
        )
        found.update({(lv, ix): bytes(h) for lv, ix, h in node_rows})
    return found


def find_replays(conn: sqlite3.Connection, digests: Sequence[str] | None) -> list[list[int]]:
    """Indexes per statement digest stored more than once (among ``digests``, or all)."""
    pairs: list[tuple[str, int]] = []
    if digests is None:
        pairs = [
            (d, int(i))
            for d, i in conn.execute(
                "SELECT statement_sha256, idx FROM ledger_entries WHERE statement_sha256 IN "
                "(SELECT statement_sha256 FROM ledger_entries GROUP BY statement_sha256 "
                "HAVING count(*) > 1)"
            )
        ]
    else:
        for part in chunks(sorted(set(digests)), 500):
            marks = ", ".join("?" * len(part))
            pairs.extend(
                (d, int(i))
                for d, i in conn.execute(
                    "SELECT statement_sha256, idx FROM ledger_entries "  # noqa: S608
                    f"WHERE statement_sha256 IN ({marks})",
                    part,
                )
            )
    groups: dict[str, list[int]] = {}
    for digest, index in pairs:
        groups.setdefault(digest, []).append(index)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _satisfies_protocol(ledger: SqliteLedger) -> Ledger:
    return ledger  # mypy checks SqliteLedger against the Ledger protocol here
