"""conveyor.ledger: the append-only, Merkle-hashed log of every attestation.

    from conveyor.ledger import open_ledger, verify_ledger
    ledger = open_ledger("sqlite:///.conveyor/conveyor.db")   # or postgresql+psycopg://…
    entry = ledger.append(envelope_bytes, subject_digest=…, kind="build", …)
    report = verify_ledger(ledger, verify_envelope=…, checkpoint=…, checkpoint_verifiers=…)
    ledger.verify_inclusion(entries, size=checkpoint.size, root=checkpoint.root)

Errors: ``LedgerError`` (3) → ``DuplicateEvidence`` (1: a replayed statement refused),
``LedgerTampered`` (1: rows outside the signed tree); ``CheckpointError`` is an ``InputError``.

The audit (``verify_ledger``) and SQLAlchemy (a SQL ledger opened) are imported when used,
so importing this package stays cheap; ``open_ledger(url, lazy=True)`` reads a SQLite file
through the standard library's sqlite3 and loads SQLAlchemy only when something is written
(``ledger.sqlite``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from conveyor.ledger.models import (
    UNSTATED,
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
    DuplicateEvidence,
    Entry,
    EnvelopeVerifier,
    LedgerTampered,
    SignedFacts,
    parse_checkpoint,
    statement_sha256,
)
from conveyor.ledger.store import Ledger, LedgerView, MemoryLedger

if TYPE_CHECKING:
    from conveyor.ledger.audit import AuditReport, verify_ledger
    from conveyor.ledger.sql import Database, SqlLedger, open_database

__all__ = [
    "UNSTATED",
    "AuditReport",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "CheckpointVerifier",
    "Database",
    "DuplicateEvidence",
    "Entry",
    "EnvelopeVerifier",
    "Ledger",
    "LedgerTampered",
    "LedgerView",
    "MemoryLedger",
    "SignedFacts",
    "SqlLedger",
    "open_database",
    "open_ledger",
    "parse_checkpoint",
    "statement_sha256",
    "verify_ledger",
]


@overload
def open_ledger(url: str, *, lazy: Literal[False] = False) -> SqlLedger: ...


@overload
def open_ledger(url: str, *, lazy: bool) -> Ledger: ...


def open_ledger(url: str, *, lazy: bool = False) -> Ledger:
    """Open (creating and migrating when needed) the ledger at a SQLAlchemy URL
    (``sqlite:///PATH`` or ``postgresql+psycopg://…``; see ``ledger.sql.open_ledger``).

    ``lazy``: a plain ``sqlite:///PATH`` file already at the current schema is read through
    sqlite3, and SQLAlchemy is loaded only for the first write (for commands that only read).
    """
    if lazy:
        from conveyor.ledger.sqlite import open_sqlite

        found = open_sqlite(url)
        if found is not None:
            return found
    from conveyor.ledger import sql

    return sql.open_ledger(url)


def __getattr__(name: str) -> Any:
    if name in ("AuditReport", "verify_ledger"):  # the audit's pools: only when auditing
        from conveyor.ledger import audit

        return getattr(audit, name)
    if name in ("Database", "open_database", "SqlLedger"):
        from conveyor.ledger import sql

        return getattr(sql, name)
    raise AttributeError(f"module 'conveyor.ledger' has no attribute {name!r}")
