"""The ledger: head, entries, perfect Merkle nodes, checkpoints.

Revision ID: 0001_ledger
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import hashlib
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0001_ledger"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("origin", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_ledger_head_single_row"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
        sa.Column("subject_digest", sa.String(512), nullable=False),
        sa.Column("subject_name", sa.String(1024), nullable=False),
        sa.Column("predicate_type", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(128), nullable=True),
        sa.Column("source_commit", sa.String(128), nullable=True),
        sa.Column("signer", sa.String(256), nullable=False),
        sa.Column("keyid", sa.String(512), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("tree_root", sa.LargeBinary, nullable=False),
    )
    # (column, idx): lookups return index order straight from the index.
    for column in ("subject_digest", "kind", "environment", "source_commit"):
        op.create_index(f"ix_ledger_entries_{column}", "ledger_entries", [column, "idx"])
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column("origin", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("time", sa.String(32), nullable=False),
        sa.Column("keyid", sa.String(256), nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    # The head row exists from the start so appends only ever lock and update it.
    op.bulk_insert(
        head,
        [
            {
                "id": 1,
                "origin": f"conveyor.ledger/{uuid.uuid4().hex}",
                "size": 0,
                "root": hashlib.sha256(b"").digest(),
                "frontier": b"",
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_nodes")
    for column in ("subject_digest", "kind", "environment", "source_commit"):
        op.drop_index(f"ix_ledger_entries_{column}", "ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_head")
