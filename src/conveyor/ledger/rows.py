"""What both SQL stores share and that needs no SQLAlchemy: rows as entries and checkpoints
(and back), the statements they run, the schema revision a ledger must carry, and the error
seam's message.

``ledger.sql`` (SQLAlchemy: SQLite and PostgreSQL, creating and migrating) and
``ledger.sqlite`` (the standard library's sqlite3: a SQLite file at the current schema) use
the same tables; keeping the conversions and the driver SQL here keeps what a row means and
what a query asks in one place. The statements are written once per parameter mark: ``%s``
for psycopg, ``?`` for sqlite3 (under SQLAlchemy or not). Only our own column names are
interpolated; values always travel as parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.errors import InputError, LedgerError
from conveyor.ledger import merkle
from conveyor.ledger.models import Checkpoint, Entry

# The newest migration's revision. Opening a ledger already at it skips importing Alembic
# (a third of a second on every command); a test keeps this equal to the scripts' head.
SCHEMA_HEAD = "0004_drift_snapshots"

# Column order = Entry field order: rows become entries positionally.
ENTRY_NAMES = (
    "idx", "envelope", "envelope_sha256", "leaf_hash", "subject_digest", "subject_name",
    "predicate_type", "kind", "environment", "source_commit", "signer", "keyid",
    "recorded_at", "tree_root", "statement_sha256", "occurrence",
)  # fmt: skip
CHECKPOINT_NAMES = (
    "origin", "size", "root", "time", "keyid", "signature", "key_name", "key_hash",
)  # fmt: skip
HIDDEN = "***"
# Every connection to a SQLite ledger file, whichever store opens it (ledger.sql, ledger.sqlite).
BUSY_TIMEOUT_SECONDS = 60
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)


def entry_of(row: Sequence[Any]) -> Entry:
    v = tuple(row)
    return Entry(
        v[0], bytes(v[1]), v[2], bytes(v[3]), v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
        v[12], bytes(v[13]), v[14], v[15],
    )  # fmt: skip


def entry_values(entry: Entry) -> tuple[Any, ...]:
    """An entry as a row, in ``ENTRY_NAMES`` order."""
    return (
        entry.index,
        entry.envelope,
        entry.envelope_sha256,
        entry.leaf_hash,
        entry.subject_digest,
        entry.subject_name,
        entry.predicate_type,
        entry.kind,
        entry.environment,
        entry.commit,
        entry.signer,
        entry.keyid,
        entry.recorded_at,
        entry.tree_root,
        entry.statement_sha256,
        entry.occurrence,
    )


def checkpoint_of(row: Sequence[Any]) -> Checkpoint:
    origin, size, root, time, keyid, signature, key_name, key_hash = tuple(row)
    return Checkpoint(
        origin,
        size,
        bytes(root),
        time,
        keyid,
        bytes(signature),
        key_name,
        None if key_hash is None else bytes(key_hash),
    )


def checkpoint_values(cp: Checkpoint) -> tuple[Any, ...]:
    """A checkpoint as a row, in ``CHECKPOINT_NAMES`` order."""
    return (
        cp.origin, cp.size, cp.root, cp.time, cp.keyid, cp.signature, cp.key_name, cp.key_hash,
    )  # fmt: skip


# -- the statements ---------------------------------------------------------------------------

Mark = Literal["%s", "?"]
# Runs one statement with positional parameters and gives its rows: a DB-API cursor's
# ``execute`` (sqlite3) or SQLAlchemy's ``exec_driver_sql`` (which needs them as a tuple).
Run = Callable[[str, tuple[Any, ...]], Iterable[Sequence[Any]]]


@dataclass(frozen=True)
class Statements:
    """The fixed statements of both SQL stores, for one parameter mark."""

    select_entries: str
    select_entry: str  # by index
    select_checkpoints: str
    read_head: str
    lock_head: str  # PostgreSQL appends ``FOR UPDATE``; SQLite's write lock is the transaction
    find_statement: str
    insert_entry: str
    insert_node: str
    update_head: str
    insert_checkpoint: str


@functools.cache
def statements(mark: Mark) -> Statements:
    entries = ", ".join(ENTRY_NAMES)
    checkpoints = ", ".join(CHECKPOINT_NAMES)

    def marks(n: int) -> str:
        return ", ".join([mark] * n)

    return Statements(
        select_entries=f"SELECT {entries} FROM ledger_entries",  # noqa: S608
        select_entry=f"SELECT {entries} FROM ledger_entries WHERE idx = {mark}",  # noqa: S608
        select_checkpoints=f"SELECT {checkpoints} FROM ledger_checkpoints",  # noqa: S608
        read_head="SELECT size, root FROM ledger_head WHERE id = 1",
        lock_head="SELECT size, frontier FROM ledger_head WHERE id = 1",
        find_statement=f"SELECT min(idx) FROM ledger_entries WHERE statement_sha256 = {mark}",  # noqa: S608
        insert_entry=f"INSERT INTO ledger_entries ({entries}) VALUES ({marks(len(ENTRY_NAMES))})",  # noqa: S608
        insert_node=f"INSERT INTO ledger_nodes (level, idx, hash) VALUES ({marks(3)})",  # noqa: S608
        update_head=f"UPDATE ledger_head SET size = {mark}, root = {mark}, frontier = {mark} "  # noqa: S608
        "WHERE id = 1",
        insert_checkpoint=f"INSERT INTO ledger_checkpoints ({checkpoints}) "  # noqa: S608
        f"VALUES ({marks(len(CHECKPOINT_NAMES))})",
    )


# Entry filters by equality: the protocol's keyword, then the column.
_EQUAL = (
    ("subject_digest", "subject_digest"),
    ("kind", "kind"),
    ("environment", "environment"),
    ("commit", "source_commit"),
)


def entries_query(
    mark: Mark,
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
) -> tuple[str, tuple[Any, ...]]:
    """The ``Ledger.entries`` query and its parameters: entries with ``start <= index < end``
    matching every filter given, in index order (``newest_first``: reversed, so ``limit``
    keeps the newest). ``commit_prefix`` is compared exactly (``substr``, not ``LIKE``,
    which ignores case in SQLite and treats ``%`` and ``_`` as wildcards), so ``limit``
    counts only real matches."""
    if limit is not None and limit < 0:
        raise InputError("limit must be >= 0")
    given = {"subject_digest": subject_digest, "kind": kind}
    given |= {"environment": environment, "commit": commit}
    equal = tuple(name for name, _ in _EQUAL if given[name] is not None)
    params: list[Any] = [given[name] for name in equal]
    if commit_prefix is not None:
        params.append(commit_prefix)
    if start > 0:
        params.append(start)
    if end is not None:
        params.append(end)
    if limit is not None:
        params.append(limit)
    prefix = None if commit_prefix is None else len(commit_prefix)
    shape = (equal, prefix, start > 0, end is not None, limit is not None, newest_first)
    return _entries_sql(mark, *shape), tuple(params)


@functools.cache
def _entries_sql(
    mark: Mark,
    equal: tuple[str, ...],
    prefix: int | None,
    start: bool,
    end: bool,
    limit: bool,
    newest_first: bool,
) -> str:
    columns = dict(_EQUAL)
    where = [f"{columns[name]} = {mark}" for name in equal]
    if prefix is not None:  # the length is ours (an int); the prefix travels as a parameter
        where.append(f"substr(source_commit, 1, {int(prefix)}) = {mark}")
    if start:
        where.append(f"idx >= {mark}")
    if end:
        where.append(f"idx < {mark}")
    sql = statements(mark).select_entries
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY idx DESC" if newest_first else " ORDER BY idx"
    if limit:
        sql += f" LIMIT {mark}"
    return sql


def checkpoints_query(mark: Mark, *, last: int | None = None) -> tuple[str, tuple[Any, ...]]:
    """The newest ``last`` checkpoints (every one when None), newest first."""
    sql = f"{statements(mark).select_checkpoints} ORDER BY id DESC"
    if last is None:
        return sql, ()
    return f"{sql} LIMIT {mark}", (max(last, 0),)


def find_replays(run: Run, mark: Mark, digests: Sequence[str] | None) -> list[list[int]]:
    """Indexes per statement digest stored more than once (among ``digests``, or all)."""
    pairs: list[tuple[str, int]] = []
    if digests is None:
        pairs = [
            (d, int(i))
            for d, i in run(
                "SELECT statement_sha256, idx FROM ledger_entries WHERE statement_sha256 IN "
                "(SELECT statement_sha256 FROM ledger_entries GROUP BY statement_sha256 "
                "HAVING count(*) > 1)",
                (),
            )
        ]
    else:
        for part in chunks(sorted(set(digests)), 500):
            pairs.extend(
                (d, int(i))
                for d, i in run(
                    "SELECT statement_sha256, idx FROM ledger_entries "  # noqa: S608
                    f"WHERE statement_sha256 IN ({', '.join([mark] * len(part))})",
                    tuple(part),
                )
            )
    return group_replays(pairs)


def group_replays(pairs: Iterable[tuple[str, int]]) -> list[list[int]]:
    """``(statement digest, index)`` pairs as the sorted indexes of each digest held more
    than once."""
    groups: dict[str, list[int]] = {}
    for digest, index in pairs:
        groups.setdefault(digest, []).append(index)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def find_nodes_sqlite(run: Run, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
    """SQLite: the stored nodes among ``wanted`` (level 0: entries' stored leaf hashes);
    missing ones are left out. Chunked: SQLite limits the number of parameters and the depth
    of an expression."""
    found: dict[merkle.NodeId, bytes] = {}
    leaves = sorted(ix for lv, ix in wanted if lv == 0)
    for part in chunks(leaves, 500):
        marks = ", ".join("?" * len(part))
        rows = run(f"SELECT idx, leaf_hash FROM ledger_entries WHERE idx IN ({marks})", tuple(part))  # noqa: S608
        found.update({(0, int(ix)): bytes(h) for ix, h in rows})
    inner = sorted(n for n in wanted if n[0] > 0)
    for part in chunks(inner, 200):
        # OR of primary-key probes: the planner answers each from the index (a row-value IN
        # list makes SQLite scan the table).
        probes = " OR ".join("(level = ? AND idx = ?)" for _ in part)
        node_rows = run(
            f"SELECT level, idx, hash FROM ledger_nodes WHERE {probes}",  # noqa: S608
            tuple(value for node in part for value in node),
        )
        found.update({(int(lv), int(ix)): bytes(h) for lv, ix, h in node_rows})
    return found


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return text


@contextmanager
def seam(
    display: str,
    secrets: Sequence[str] | str | None,
    errors: tuple[type[BaseException], ...],
) -> Iterator[None]:
    """``errors`` raised in the block become one ``LedgerError`` naming the database by its
    shown URL, with the driver's text scrubbed of ``secrets``."""
    hidden = [secrets] if isinstance(secrets, str) else list(secrets or ())
    try:
        yield
    except errors as error:
        cause: BaseException = getattr(error, "orig", None) or error
        reason = scrub(" ".join(str(cause).split()), hidden)[:300] or type(cause).__name__
        raised = LedgerError(
            f"ledger database {display} failed: {type(cause).__name__}: {reason}; "
            "check that the database is reachable and holds a conveyor ledger"
        )
        if hidden and any(s in str(error) for s in hidden):
            raise raised from None  # the driver's own text quotes a secret: do not chain it
        raise raised from error
