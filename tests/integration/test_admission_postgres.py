"""Fault injection: the webhook denies every time the database is slow or gone (PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.server.admission import DECISION_TIMEOUT
from tests.support.admission import (
    BREAK_GLASS_CONFIG,
    IDENTITIES,
    TlsServer,
    admission_team,
    approve,
    build,
    glass,
    pod_review,
    promote,
    start_tls_server,
)
from tests.support.postgres import RunningPostgres, start_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def cluster() -> Iterator[RunningPostgres]:
    running = start_postgres()
    try:
        yield running
    finally:
        running.stop()


def _served(tmp_path: Path, url: str) -> tuple[TlsServer, str]:
    team = admission_team(tmp_path / "team", ledger_url=url)
    tokens = {identity: team.token(f"{identity}-token", identity) for identity in IDENTITIES}
    tls = start_tls_server(team)
    tls.tokens.update(tokens)
    ref, digest = build(tls, team, "v1")
    promote(tls, ref, "production")
    assert tls.review(pod_review(digest))["allowed"] is True  # warm
    return tls, digest


def test_slow_database_past_the_timeout_denies(tmp_path: Path, cluster: RunningPostgres) -> None:
    url = cluster.create_database()
    tls, digest = _served(tmp_path, url)
    release = threading.Event()
    locked = threading.Event()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")

    def hold_lock() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("LOCK TABLE ledger_head, ledger_entries IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(60)
            conn.rollback()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(30)
        for _ in range(2):
            started = time.monotonic()
            response = tls.review(pod_review(digest))
            took = time.monotonic() - started
            assert response["allowed"] is False
            assert f"no decision within {DECISION_TIMEOUT:g} s" in response["status"]["message"]
            assert took < DECISION_TIMEOUT + 3
    finally:
        release.set()
        holder.join(30)
    assert tls.review(pod_review(digest))["allowed"] is True  # and it recovers
    tls.stop()


def test_database_stopped_denies(tmp_path: Path, cluster: RunningPostgres) -> None:
    tls, digest = _served(tmp_path, cluster.create_database())
    try:
        cluster.stop()
        for _ in range(3):
            response = tls.review(pod_review(digest))
            assert response["allowed"] is False
            assert "conveyor could not decide, so it denies" in response["status"]["message"]
    finally:
        tls.stop()


def test_two_replicas_given_one_break_glass_record_it_once(
    tmp_path: Path, cluster: RunningPostgres
) -> None:
    """The API server may send the same request again, to another replica: 2 replicas x 4
    concurrent copies of one break-glass review give 8 allows and one ledger entry."""
    from concurrent.futures import ThreadPoolExecutor

    url = cluster.create_database()
    team = admission_team(tmp_path / "team", ledger_url=url)
    team.config.write_text(BREAK_GLASS_CONFIG)
    tokens = {i: team.token(f"{i}-token", i) for i in (*IDENTITIES, "alice")}
    replicas = [start_tls_server(team), start_tls_server(team)]
    try:
        for replica in replicas:
            replica.tokens.update(tokens)
        ref, digest = build(replicas[0], team, "hotfix")
        approve(replicas[1], ref, "staging")
        document = glass(pod_review(digest, namespace="payment-api-staging"), uid="bg-pg")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: replicas[n % 2].review(document), range(8)))
        assert all(a["allowed"] is True for a in answers), answers
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT idx, subject_digest FROM ledger_entries WHERE kind = 'break-glass'"
            ).fetchall()
        assert [d for _, d in rows] == [digest]
        (index,) = [i for i, _ in rows]
        assert {a["warnings"][0].rsplit(" ", 1)[1] for a in answers} == {f"#{index}"}
    finally:
        for replica in replicas:
            replica.stop()
