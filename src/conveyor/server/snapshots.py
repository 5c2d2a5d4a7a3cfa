"""The ``drift_snapshots`` table: the last drift snapshot of each environment, in the ledger's
database (created by the ledger's migrations). One store per server process
(``ServerState.drift_store``), for the drift endpoints (``server.drift``) and the pages."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from conveyor.ledger import Database

_metadata = sa.MetaData()
snapshots_table = sa.Table(
    "drift_snapshots",
    _metadata,
    sa.Column("environment", sa.String(64), primary_key=True),
    sa.Column("reported_at", sa.String(32)),
    sa.Column("reported_by", sa.String(64)),
    sa.Column("snapshot", sa.Text()),
)


class DriftStore:
    """The ``drift_snapshots`` table (created by the ledger's migrations)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine

    @classmethod
    def open(cls, url: str) -> DriftStore:
        from conveyor.ledger import open_database

        return cls(open_database(url))

    def _seam(self) -> AbstractContextManager[None]:
        return self._database.seam()

    def put(self, environment: str, reported_by: str, snapshot: dict[str, Any]) -> str:
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        row = {
            "environment": environment,
            "reported_at": at,
            "reported_by": reported_by,
            "snapshot": json.dumps(snapshot, separators=(",", ":")),
        }
        with self._seam(), self._engine.begin() as conn:
            conn.execute(
                snapshots_table.delete().where(snapshots_table.c.environment == environment)
            )
            conn.execute(snapshots_table.insert().values(**row))
        return at

    def get(self, environment: str) -> dict[str, Any] | None:
        query = sa.select(snapshots_table).where(snapshots_table.c.environment == environment)
        with self._seam(), self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return {
            "environment": row.environment,
            "reported_at": row.reported_at,
            "reported_by": row.reported_by,
            **json.loads(row.snapshot),
        }

    def close(self) -> None:
        self._engine.dispose()
