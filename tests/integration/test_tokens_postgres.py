"""The token store on PostgreSQL: one round trip per token check (no pre-ping, BEGIN or
ROLLBACK), revocation seen by another store on the next check, and a connection the
database dropped is replaced without the caller noticing (what the pre-ping did)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa

from conveyor.server.tokens import TokenStore
from tests.unit.server.test_tokens_round_trips import (
    check_one_round_trip_per_token_check,
    check_revocation_holds_on_the_next_check_of_another_store,
)

pytestmark = [pytest.mark.postgres]


def test_a_token_check_on_postgresql_is_one_round_trip(
    postgres_database: Callable[[], str],
) -> None:
    check_one_round_trip_per_token_check(postgres_database())


def test_a_revocation_on_postgresql_holds_on_the_next_check_of_another_store(
    postgres_database: Callable[[], str],
) -> None:
    check_revocation_holds_on_the_next_check_of_another_store(postgres_database())


def test_a_token_check_survives_the_database_dropping_its_connections(
    postgres_database: Callable[[], str],
) -> None:
    url = postgres_database()
    store = TokenStore.open(url)
    try:
        made = store.create("ci", identity="ci", lifetime=timedelta(hours=1), created_by="t")
        for _ in range(3):
            assert store.authenticate(made.token).name == "ci"
        dsn = sa.make_url(url).set(drivername="postgresql", query={})
        with psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True) as c:
            dropped = c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            ).fetchone()
        assert dropped is not None
        assert dropped[0] >= 1
        for _ in range(3):
            assert store.authenticate(made.token).name == "ci"
    finally:
        store.close()
