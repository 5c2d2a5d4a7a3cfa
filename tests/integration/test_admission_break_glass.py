"""Break-glass at admission over HTTPS against a real ``conveyor serve`` (SQLite).

Staging is frozen now, with a break-glass of 1 approval; canary has a break-glass but its
freeze window is far ahead (not frozen); production has no freeze. Nothing is promoted
anywhere, so every digest needs the break-glass to run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.admission import (
    BREAK_GLASS_CONFIG,
    IDENTITIES,
    REASON,
    TlsServer,
    approve,
    asset,
    build,
    glass,
    pod_review,
    start_tls_server,
)
from tests.support.server import Team, make_team

pytestmark = pytest.mark.slow
K8S_USER = "kubernetes user system:serviceaccount:kube-system:replicaset-controller"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Team, TlsServer]]:
    team = make_team(tmp_path_factory.mktemp("break-glass"))
    team.config.write_text(BREAK_GLASS_CONFIG)
    tokens = {i: team.token(f"{i}-token", i) for i in (*IDENTITIES, "alice")}
    tls = start_tls_server(team)
    tls.tokens.update(tokens)
    try:
        yield team, tls
    finally:
        tls.stop()


def _entries(team: Team, kind: str = "break-glass") -> list[tuple[int, str]]:
    with sqlite3.connect(team.root / ".conveyor" / "conveyor.db") as conn:
        rows = conn.execute(
            "SELECT idx, subject_digest FROM ledger_entries WHERE kind = ? ORDER BY idx", (kind,)
        ).fetchall()
    return [(int(i), str(d)) for i, d in rows]


def test_allowed_during_a_freeze_recorded_once_and_shown_in_trace(served: Any) -> None:
    team, tls = served
    ref, digest = build(tls, team, "hotfix")
    document = glass(pod_review(digest, namespace="payment-api-staging"), uid="bg-allowed-1")
    # Frozen, but the break-glass approval is missing: denied, nothing recorded.
    response = tls.review(document)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert f"digest {digest} was never promoted to staging" in message
    assert "break-glass refused" in message
    assert "0 of 1 approvals" in message
    assert _entries(team) == []

    approve(tls, ref, "staging")
    response = tls.review(document)
    assert response["allowed"] is True, response
    (warning,) = response["warnings"]
    assert warning.startswith(f"conveyor: BREAK-GLASS in staging ({REASON}): recorded as ledger #")
    ((index, recorded),) = _entries(team)
    assert recorded == digest
    assert warning.endswith(f"ledger #{index}")

    # The same request again (the API server retries with the same uid): allowed, no new entry.
    again = tls.review(document)
    assert again["allowed"] is True
    assert again["warnings"] == [warning]
    assert len(_entries(team)) == 1
    # The same uid with other content is a replay: denied, nothing recorded.
    forged = glass(document, "another reason", uid="bg-allowed-1")
    refused = tls.review(forged)
    assert refused["allowed"] is False
    assert (
        "request uid bg-allowed-1 was admitted by break-glass as ledger #"
        in (refused["status"]["message"])
    )
    assert len(_entries(team)) == 1

    # The server's verified reader shows it, and counts it for nothing.
    with tls.client("viewer") as client:
        answer = client.get("/api/v1/trace", params={"query": ref})
    assert answer.status_code == 200, answer.text
    trace = answer.json()
    (event,) = [e for e in trace["events"] if e["kind"] == "break-glass"]
    assert event["ledger_index"] == index
    assert event["verified"] is True
    assert event["environment"] == "staging"
    assert event["signer"] == K8S_USER
    assert event["via"] == "admission webhook (signed by server)"
    summary = event["summary"]
    assert "BREAK-GLASS admission into staging: Pod payment-api-7d9f8b6c5-x2k4q" in summary
    assert "namespace payment-api-staging" in summary
    assert f"reason {REASON!r}, request bg-allowed-1" in summary
    assert "counts as no approval or promotion" in summary
    # The same through a CLI reading the database itself, and the attestations on the image.
    text = team.cli("trace", ref)
    assert text.returncode == 0, text.stderr
    assert f"by {K8S_USER} via admission webhook (signed by server) [verified]" in text.stdout
    listed = team.cli("attestations", ref, "--json")
    assert listed.returncode == 0, listed.stderr
    (attached,) = [
        a
        for a in json.loads(listed.stdout)["attestations"]
        if a["predicate_type"].endswith("/break-glass-admission/v1")
    ]
    assert attached["verified"]
    assert attached["in_ledger"]
    assert attached["signer"] == K8S_USER
    history = team.cli("history", "staging", "--json")
    assert json.loads(history.stdout)["history"] == []  # not a promotion
    plain = tls.review(pod_review(digest, namespace="payment-api-staging"))
    assert plain["allowed"] is False  # the next pod without break-glass is not admitted
    audit = team.cli("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr  # columns agree with the statement


def test_dry_run_decides_and_records_nothing(served: Any) -> None:
    team, tls = served
    ref, digest = build(tls, team, "dry")
    approve(tls, ref, "staging")
    before = len(_entries(team))
    document = glass(pod_review(digest, namespace="payment-api-staging"), uid="bg-dry")
    document["request"]["dryRun"] = True
    response = tls.review(document)
    assert response["allowed"] is True, response
    assert response["warnings"] == [
        f"conveyor: BREAK-GLASS in staging ({REASON}): dry run: nothing recorded"
    ]
    assert len(_entries(team)) == before


def test_denied_outside_the_rules(served: Any) -> None:
    team, tls = served
    ref, digest = build(tls, team, "outside")
    approve(tls, ref, "canary")
    approve(tls, ref, "staging")
    before = len(_entries(team))
    # canary has a break-glass, but no freeze is open: nothing to break, promote instead.
    canary = tls.review(glass(pod_review(digest, namespace="payment-api-canary")))
    assert canary["allowed"] is False
    assert "canary is not frozen, so there is no freeze to break" in canary["status"]["message"]
    # production has no freeze break-glass at all.
    production = tls.review(glass(pod_review(digest)))
    assert production["allowed"] is False
    assert "production has no freeze break-glass rule" in production["status"]["message"]
    # An image not pinned by digest: a break-glass cannot name what it admits.
    cron = glass(asset("cronjob-create.json", d1=digest))
    message = tls.review(cron)["status"]["message"]
    assert "ephemeral container 'debugger': image busybox:1.36 is not pinned" in message
    assert "break-glass refused: it admits only images pinned by digest" in message
    # A digest conveyor never built.
    stranger = "sha256:" + "5" * 64
    response = tls.review(glass(pod_review(stranger, namespace="payment-api-staging")))
    assert response["allowed"] is False
    assert (
        f"break-glass refused for {stranger}: conveyor has no build record"
        in (response["status"]["message"])
    )
    assert len(_entries(team)) == before


def test_denied_when_the_recording_fails(served: Any) -> None:
    team, tls = served
    ref, digest = build(tls, team, "unrecordable")
    approve(tls, ref, "staging")
    before = len(_entries(team))
    db = team.root / ".conveyor" / "conveyor.db"
    with sqlite3.connect(db) as conn:  # the database refuses the append itself
        conn.execute(
            "CREATE TRIGGER refuse_break_glass BEFORE INSERT ON ledger_entries "
            "WHEN NEW.kind = 'break-glass' BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    try:
        document = glass(pod_review(digest, namespace="payment-api-staging"), uid="bg-fail")
        for _ in range(2):
            response = tls.review(document)
            assert response["allowed"] is False
            assert "conveyor could not decide, so it denies" in response["status"]["message"]
        assert len(_entries(team)) == before
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER refuse_break_glass")
    assert tls.review(document)["allowed"] is True  # and it recovers
    assert len(_entries(team)) == before + 1


def test_denied_without_a_server_signing_key(served: Any) -> None:
    team, tls = served
    ref, digest = build(tls, team, "unsigned")
    approve(tls, ref, "staging")
    before = len(_entries(team))
    text = team.config.read_text()
    team.config.write_text(text.replace("  signing_key: keys/server.key\n", ""))
    try:
        for dry_run in (False, True):
            document = glass(pod_review(digest, namespace="payment-api-staging"))
            document["request"]["dryRun"] = dry_run
            response = tls.review(document)
            assert response["allowed"] is False
            assert (
                "break-glass refused: conveyor.yaml sets no server.signing_key, so no signed "
                "break-glass admission can be recorded"
            ) in response["status"]["message"]
    finally:
        team.config.write_text(text)
    assert len(_entries(team)) == before


def test_one_entry_per_digest_for_a_deployment(served: Any, tmp_path: Path) -> None:
    team, tls = served
    ref1, d1 = build(tls, team, "multi-1")
    ref2, d2 = build(tls, team, "multi-2")
    approve(tls, ref1, "staging")
    approve(tls, ref2, "staging")
    document = asset("deployment-update.json", d1=d1, d2=d2)
    document["request"]["namespace"] = "payment-api-staging"
    document["request"]["oldObject"] = None  # a create-like update: every container is new
    document["request"]["dryRun"] = False
    pod = document["request"]["object"]["spec"]["template"]
    pod.setdefault("metadata", {})["annotations"] = {"conveyor.dev/break-glass": REASON}
    pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if "@" in c["image"]]
    before = len(_entries(team))
    response = tls.review(document)
    assert response["allowed"] is True, response
    assert "BREAK-GLASS" in response["warnings"][0], response
    added = _entries(team)[before:]
    assert sorted(d for _, d in added) == sorted({d1, d2})
