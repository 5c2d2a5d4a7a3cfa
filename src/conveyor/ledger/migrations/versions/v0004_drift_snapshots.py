"""The last drift snapshot of each environment (conveyor serve, issue 15).

Revision ID: 0004_drift_snapshots
Revises: 0003_api_tokens
Create Date: 2026-12-01

What ran, as the last ``POST /api/v1/environments/{env}/drift`` reported it, classified
against the ledger at that time. Not evidence: the ledger never reads it, and a snapshot
replaces the one before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_drift_snapshots"
down_revision = "0003_api_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_snapshots",
        sa.Column("environment", sa.String(64), primary_key=True),
        sa.Column("reported_at", sa.String(32), nullable=False),
        sa.Column("reported_by", sa.String(64), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_snapshots")
