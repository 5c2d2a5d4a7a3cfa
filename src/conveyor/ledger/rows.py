"""What both SQL stores share and that needs no SQLAlchemy: rows as entries and checkpoints
(and back), the schema revision a ledger must carry, and the error seam's message.

``ledger.sql`` (SQLAlchemy: SQLite and PostgreSQL, creating and migrating) and
``ledger.sqlite`` (the standard library's sqlite3: a SQLite file at the current schema) use
the same tables; keeping the conversions here keeps what a row means in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from conveyor.errors import LedgerError
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
