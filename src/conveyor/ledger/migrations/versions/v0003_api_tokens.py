"""API tokens of conveyor serve: hashed, expiring, revocable, bound to one identity.

Revision ID: 0003_api_tokens
Revises: v0002_one_statement_one_entry
Create Date: 2026-12-01

The token store (src/conveyor/server/tokens.py) reads and writes this table; the ledger
never does. Only the SHA-256 of a token is stored: a token is 256 random bits, so its hash
cannot be reversed or guessed, and a copy of the database grants nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_api_tokens"
down_revision = "v0002_one_statement_one_entry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
