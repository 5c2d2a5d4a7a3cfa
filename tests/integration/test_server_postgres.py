"""Two ``conveyor serve`` replicas on one PostgreSQL: tokens made once work on both, and
parallel promotions through both give one linear history, each digest recorded once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from conveyor.server.tokens import TokenRefused, TokenStore
from tests.support.postgres import RunningPostgres, start_postgres
from tests.support.server import (
    COMMIT,
    IDENTITIES,
    PASSING_JUNIT,
    RunningServer,
    Team,
    make_team,
    start_server,
    trivy_report,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_database: Callable[[], str]
) -> Iterator[tuple[Team, list[RunningServer], dict[str, str]]]:
    team = make_team(tmp_path / "team", ledger_url=postgres_database())
    tokens = {identity: team.token(f"{identity}-token", identity) for identity in IDENTITIES}
    servers = [start_server(team), start_server(team)]
    try:
        yield team, servers, tokens
    finally:
        for server in servers:
            server.stop()


def _post(server: RunningServer, token: str, path: str, **kwargs: object) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=300) as client:
        return client.post(path, headers={"Authorization": f"Bearer {token}"}, **kwargs)  # type: ignore[arg-type]


def _ready(team: Team, server: RunningServer, tokens: dict[str, str], tag: str) -> str:
    ref = team.image(tag)
    ci = tokens["ci"]
    build = {"reference": ref, "commit": COMMIT, "run_id": "42"}
    assert _post(server, ci, "/api/v1/builds", json=build).status_code == 200
    files = [("files", ("junit.xml", PASSING_JUNIT.encode(), "application/xml"))]
    assert (
        _post(server, ci, "/api/v1/tests", data={"reference": ref}, files=files).status_code == 200
    )
    scan = [("file", ("t.json", json.dumps(trivy_report()).encode(), "application/json"))]
    assert (
        _post(server, ci, "/api/v1/scans", data={"reference": ref}, files=scan).status_code == 200
    )
    return ref


def test_parallel_promotions_through_two_replicas_are_each_recorded_once(
    replicas: tuple[Team, list[RunningServer], dict[str, str]],
) -> None:
    team, servers, tokens = replicas
    refs = [_ready(team, servers[i % 2], tokens, f"p{i}") for i in range(10)]
    jobs = [(servers[(i + n) % 2], ref) for n in range(2) for i, ref in enumerate(refs)]

    def promote(job: tuple[RunningServer, str]) -> httpx.Response:
        server, ref = job
        body = {"reference": ref, "environment": "staging"}
        return _post(server, tokens["deployer"], "/api/v1/promotions", json=body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(promote, jobs))
    assert all(a.status_code == 200 for a in answers), [
        a.text for a in answers if a.status_code != 200
    ]
    recorded = [a.json() for a in answers if a.json()["recorded"]]
    assert len(recorded) >= 10  # a digest moved on by another may be placed again: never lost
    with httpx.Client(base_url=servers[1].url, timeout=60) as client:
        history = client.get(
            "/api/v1/environments/staging/history",
            headers={"Authorization": f"Bearer {tokens['viewer']}"},
        ).json()["history"]
    indexes = [item["ledger_index"] for item in history]
    assert indexes == sorted(indexes, reverse=True)
    assert len(set(indexes)) == len(indexes)
    assert {item["digest"] for item in history} == {ref.split("@")[1] for ref in refs}
    assert len(history) == len(recorded)
    for server in servers:
        verify = _post(server, tokens["viewer"], "/api/v1/audit/verify", json={})
        assert verify.json()["ok"] is True
    # Tags moved after the commits, each under the tag lock while no later promotion was
    # recorded: the tag names the last recorded, and every promotion's attestation is listed.
    from conveyor.oci.layout import LayoutRepository

    staging = LayoutRepository(team.root / "staging")
    assert str(staging.get_manifest("staging").digest) == history[0]["digest"]
    with httpx.Client(base_url=servers[0].url, timeout=60) as client:
        status = client.get(
            "/api/v1/status", headers={"Authorization": f"Bearer {tokens['viewer']}"}
        ).json()
    (env,) = [e for e in status["environments"] if e["environment"] == "staging"]
    assert env["tags_apart"] == []
    report = team.cli("repair", "staging", "--check", "--json")
    assert report.returncode == 0, report.stdout
    assert json.loads(report.stdout)["referrers_missing"] == []


def test_a_token_revoked_on_one_replica_is_refused_by_the_other(
    replicas: tuple[Team, list[RunningServer], dict[str, str]],
) -> None:
    team, servers, tokens = replicas
    made = _post(
        servers[0], tokens["root"], "/api/v1/tokens", json={"name": "shared", "identity": "alice"}
    )
    token = made.json()["token"]
    with httpx.Client(base_url=servers[1].url) as client:
        who = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert who.json()["identity"] == "alice"
        assert team.cli("token", "revoke", "shared").returncode == 0
        again = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 401


def test_the_token_store_on_postgresql(postgres_database: Callable[[], str]) -> None:
    store = TokenStore.open(postgres_database())
    try:
        now = datetime(2026, 12, 1, tzinfo=UTC)
        made = store.create(
            "ci", identity="ci", lifetime=timedelta(hours=1), created_by="t", now=now
        )
        assert store.authenticate(made.token, now=now).identity == "ci"
        with pytest.raises(TokenRefused, match="expired"):
            store.authenticate(made.token, now=now + timedelta(hours=1))
        store.revoke("ci", now=now)
        with pytest.raises(TokenRefused, match="revoked"):
            store.authenticate(made.token, now=now)
        assert [info.state(now) for info in store.list()] == ["revoked"]
    finally:
        store.close()


def test_database_down_means_not_ready_and_503_then_back(tmp_path: Path) -> None:
    cluster = start_postgres()
    try:
        team = make_team(tmp_path / "team", ledger_url=cluster.create_database())
        token = team.token("viewer", "viewer")
        server = start_server(team)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, timeout=60, headers=headers) as client:
                assert client.get("/readyz").status_code == 200
                cluster.crash_and_restart()  # the same port; connections in the pool are dead
                assert client.get("/api/v1/status").status_code == 200  # pre-ping reconnects
                subprocess_stop(cluster)
                ready = client.get("/readyz")
                assert ready.status_code == 503
                assert ready.headers["content-type"] == "application/problem+json"
                status = client.get("/api/v1/status")
                assert status.status_code == 503
                problem = status.json()
                assert problem["error"] == "LedgerError"
                assert problem["exit_code"] == 3
                assert "check that the database is reachable" in problem["detail"]
                subprocess_start(cluster)
                assert client.get("/readyz").status_code == 200
        finally:
            server.stop()
    finally:
        cluster.stop()


def subprocess_stop(cluster: RunningPostgres) -> None:
    subprocess.run(
        [*cluster.as_user, cluster.pg_ctl, "-D", str(cluster.data), "-m", "fast", "-w", "stop"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip


def subprocess_start(cluster: RunningPostgres) -> None:
    subprocess.run(
        [*cluster.as_user, cluster.pg_ctl, "-D", str(cluster.data), "-l",
         str(cluster.root / "postgres.log"), "-o", cluster.options, "-w", "-t", "60", "start"],
        capture_output=True, timeout=90, check=True,
    )  # fmt: skip
