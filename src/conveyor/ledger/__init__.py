"""conveyor.ledger: the append-only, Merkle-hashed log of every attestation.

    from conveyor.ledger import open_ledger, verify_ledger
    ledger = open_ledger("sqlite:///.conveyor/conveyor.db")   # or postgresql+psycopg://…
    entry = ledger.append(envelope_bytes, subject_digest=…, kind="build", …)
    report = verify_ledger(ledger, verify_envelope=…, checkpoint=…, checkpoint_verifiers=…)
    ledger.verify_inclusion(entries, size=checkpoint.size, root=checkpoint.root)

Errors: ``LedgerError`` (3) → ``DuplicateEvidence`` (1: a replayed statement refused),
``LedgerTampered`` (1: rows outside the signed tree); ``CheckpointError`` is an ``InputError``.

``open_ledger`` (SQLAlchemy) is imported lazily so that importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.ledger.audit import AuditReport, verify_ledger
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
    from conveyor.ledger.sql import SqlLedger, open_database, open_ledger

__all__ = [
    "UNSTATED",
    "AuditReport",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "CheckpointVerifier",
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


def __getattr__(name: str) -> Any:
    if name in ("open_database", "open_ledger", "SqlLedger"):
        from conveyor.ledger import sql

        return getattr(sql, name)
    raise AttributeError(f"module 'conveyor.ledger' has no attribute {name!r}")
