"""One signed statement is one entry; checkpoints as C2SP signed notes; read indexes.

Revision ID: v0002_one_statement_one_entry
Revises: 0001_ledger
Create Date: 2026-12-01

- ``ledger_entries.statement_sha256``: the SHA-256 of the statement (the DSSE payload) each
  envelope signs, filled in from the stored envelopes; ``occurrence``: 0 for the first entry
  of a statement, 1, 2, … for later ones. ``(statement_sha256, occurrence)`` is unique and the
  append path only ever writes occurrence 0, so the database refuses every replay.
- Replays already in an old ledger are *kept* (the entries are leaves of a signed Merkle tree:
  deleting one would break every later root and every checkpoint) and *marked*: the first
  entry keeps occurrence 0, each later copy gets 1, 2, …. Neither the leaf hashes nor the
  tree change. ``audit verify`` reports every marked copy as a problem (a ledger that held a
  replay cannot be vouched for silently); a reader that counts evidence must skip
  ``occurrence > 0``.
- ``ledger_checkpoints.key_name`` / ``key_hash``: the signed-note key name and 4-byte key ID
  (NULL for checkpoints stored in the legacy form).
- ``ix_ledger_entries_environment_kind`` on (environment, kind, idx): "the promotions into
  production" reads only those rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "v0002_one_statement_one_entry"
down_revision = "0001_ledger"
branch_labels = None
depends_on = None

_BATCH = 2000


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _statement_sha256(envelope: bytes) -> str:
    # A migration is frozen in time: this repeats conveyor.ledger.models.statement_sha256 as it
    # was when written, so a later change there cannot change what this migration did.
    payload: bytes | None = None
    try:
        document = json.loads(envelope, object_pairs_hook=_refuse_duplicate_keys)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("payload"), str):
        normal = document["payload"].rstrip("=").replace("-", "+").replace("_", "/")
        try:
            payload = base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
        except (binascii.Error, ValueError):
            payload = None
    return hashlib.sha256(envelope if payload is None else payload).hexdigest()


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column(
        "ledger_entries",
        sa.Column("statement_sha256", sa.String(64), nullable=False, server_default=""),
    )
    op.add_column(
        "ledger_entries",
        sa.Column("occurrence", sa.Integer, nullable=False, server_default="0"),
    )
    entries = sa.table(
        "ledger_entries",
        sa.column("idx", sa.BigInteger),
        sa.column("envelope", sa.LargeBinary),
        sa.column("statement_sha256", sa.String),
        sa.column("occurrence", sa.Integer),
    )
    last = -1
    while True:
        rows = conn.execute(
            sa.select(entries.c.idx, entries.c.envelope)
            .where(entries.c.idx > last)
            .order_by(entries.c.idx)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            entries.update()
            .where(entries.c.idx == sa.bindparam("i"))
            .values(statement_sha256=sa.bindparam("s")),
            [{"i": idx, "s": _statement_sha256(bytes(envelope))} for idx, envelope in rows],
        )
        last = rows[-1][0]
    # Mark the replays: the n-th later entry of a statement gets occurrence n.
    repeated = (
        sa.select(entries.c.statement_sha256)
        .group_by(entries.c.statement_sha256)
        .having(sa.func.count() > 1)
        .scalar_subquery()
    )
    rank = (
        sa.func.row_number()
        .over(partition_by=entries.c.statement_sha256, order_by=entries.c.idx)
        .label("rank")
    )
    marks = [
        {"i": idx, "o": int(n) - 1}
        for idx, n in conn.execute(
            sa.select(entries.c.idx, rank).where(entries.c.statement_sha256.in_(repeated))
        )
        if int(n) > 1
    ]
    if marks:
        conn.execute(
            entries.update()
            .where(entries.c.idx == sa.bindparam("i"))
            .values(occurrence=sa.bindparam("o")),
            marks,
        )
    op.create_index(
        "ux_ledger_entries_statement",
        "ledger_entries",
        ["statement_sha256", "occurrence"],
        unique=True,
    )
    op.create_index(
        "ix_ledger_entries_environment_kind", "ledger_entries", ["environment", "kind", "idx"]
    )
    op.add_column("ledger_checkpoints", sa.Column("key_name", sa.String(256), nullable=True))
    op.add_column("ledger_checkpoints", sa.Column("key_hash", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    # Downgrading loses the replay markers and with them the database's refusal of replays.
    op.drop_column("ledger_checkpoints", "key_hash")
    op.drop_column("ledger_checkpoints", "key_name")
    op.drop_index("ix_ledger_entries_environment_kind", "ledger_entries")
    op.drop_index("ux_ledger_entries_statement", "ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("occurrence")
        batch.drop_column("statement_sha256")
