"""A token check is one statement (issue 12 benchmark: it was a pre-ping, BEGIN, SELECT and
ROLLBACK on PostgreSQL, BEGIN, SELECT and ROLLBACK on SQLite), and it still reads the row
every time: a revocation or an expiry holds on the very next check, on any store of the
database. The same checks on PostgreSQL: tests/integration/test_tokens_postgres.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.server.tokens import TokenRefused, TokenStore
from tests.support.roundtrips import RoundTrips, counting_round_trips

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def check_one_round_trip_per_token_check(url: str) -> None:
    with counting_round_trips() as trips:
        store = TokenStore.open(url)
        try:
            made = store.create("ci", identity="ci", lifetime=timedelta(hours=1), created_by="t")
            # The first checks open the connection, and psycopg prepares a statement its
            # connection has run 5 times (one extra round trip, once): warm up past both.
            for _ in range(8):
                store.authenticate(made.token)
            for _ in range(3):
                assert _trips(trips, lambda: store.authenticate(made.token).identity) == 1
            unknown = "cvt_" + "A" * 43
            assert _trips(trips, lambda: _refused(store, unknown, "unknown token")) == 1
            later = NOW + timedelta(days=400)
            assert _trips(trips, lambda: _refused(store, made.token, "expired", now=later)) == 1
        finally:
            store.close()


def check_revocation_holds_on_the_next_check_of_another_store(url: str) -> None:
    """Two stores on one database, as two replicas: no answer is remembered."""
    first, second = TokenStore.open(url), TokenStore.open(url)
    try:
        made = first.create("shared", identity="ci", lifetime=timedelta(hours=1), created_by="t")
        for _ in range(3):
            assert first.authenticate(made.token).name == "shared"
            assert second.authenticate(made.token).name == "shared"
        second.revoke("shared")
        _refused(first, made.token, "revoked")
        _refused(second, made.token, "revoked")
        _refused(first, made.token, "revoked")
    finally:
        first.close()
        second.close()


def _trips(trips: RoundTrips, check: Callable[[], object]) -> int:
    before = trips.count()
    check()
    return trips.count() - before


def _refused(store: TokenStore, token: str, why: str, now: datetime | None = None) -> None:
    with pytest.raises(TokenRefused, match=why):
        store.authenticate(token, now=now)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_a_token_check_on_sqlite_is_one_statement(sqlite_url: str) -> None:
    check_one_round_trip_per_token_check(sqlite_url)


def test_a_revocation_on_sqlite_holds_on_the_next_check_of_another_store(
    sqlite_url: str,
) -> None:
    check_revocation_holds_on_the_next_check_of_another_store(sqlite_url)


def test_listing_tokens_opens_no_second_pool(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``conveyor token list`` (and create, revoke) never checks a token: the check pool is
    made by the first check, not by opening the store."""
    import sqlalchemy

    engines: list[object] = []
    real = sqlalchemy.create_engine

    def counted(*args: object, **kwargs: object) -> object:
        engines.append(real(*args, **kwargs))  # type: ignore[call-overload]
        return engines[-1]

    monkeypatch.setattr(sqlalchemy, "create_engine", counted)
    store = TokenStore.open(sqlite_url)
    try:
        made = store.create("ci", identity="ci", lifetime=timedelta(hours=1), created_by="t")
        assert [info.name for info in store.list()] == ["ci"]
        assert len(engines) == 1  # the ledger's engine only
        for _ in range(2):
            assert store.authenticate(made.token).name == "ci"
        assert len(engines) == 2  # the check pool, made once
    finally:
        store.close()
