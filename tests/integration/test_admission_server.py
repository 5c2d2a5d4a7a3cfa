"""The admission webhook and drift over HTTPS against a real ``conveyor serve`` (SQLite).

Production's history: D1, then D3 (current); staging: D2. D4 is built, never promoted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.admission import (
    IDENTITIES,
    TlsServer,
    admission_team,
    asset,
    build,
    pod_review,
    promote,
    start_tls_server,
)
from tests.support.server import COMMIT, Team

pytestmark = pytest.mark.slow
DRIFT_ASSETS = Path(__file__).parent.parent / "assets" / "drift"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Team, TlsServer, dict[str, str]]]:
    team = admission_team(tmp_path_factory.mktemp("admission"))
    tokens = {identity: team.token(f"{identity}-token", identity) for identity in IDENTITIES}
    tls = start_tls_server(team)
    tls.tokens.update(tokens)
    try:
        r1, d1 = build(tls, team, "v1")
        r2, d2 = build(tls, team, "v2")
        r3, d3 = build(tls, team, "v3")
        _r4, d4 = build(tls, team, "v4")
        promote(tls, r1, "production")
        promote(tls, r3, "production")
        promote(tls, r2, "staging")
        yield team, tls, {"d1": d1, "d2": d2, "d3": d3, "d4": d4, "r3": r3}
    finally:
        tls.stop()


def test_current_digest_allowed_and_uid_echoed(served: Any) -> None:
    _team, tls, d = served
    response = tls.review(pod_review(d["d3"]))
    assert response == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}


def test_previous_digest_allowed_for_rollback(served: Any) -> None:
    _team, tls, d = served
    assert tls.review(pod_review(d["d1"]))["allowed"] is True


def test_staging_digest_denied_in_production(served: Any) -> None:
    _team, tls, d = served
    response = tls.review(pod_review(d["d2"]))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        f"container 'api': digest {d['d2']} was never promoted to production"
    )
    assert tls.review(pod_review(d["d2"], namespace="payment-api-staging"))["allowed"] is True


def test_never_promoted_and_unpinned_denied(served: Any) -> None:
    _team, tls, d = served
    assert "never promoted" in tls.review(pod_review(d["d4"]))["status"]["message"]
    document = pod_review(d["d3"])
    document["request"]["object"]["spec"]["containers"][0]["image"] = "payment-api:production"
    response = tls.review(document)
    assert response["allowed"] is False
    assert (
        "container 'api': image payment-api:production is not pinned by digest"
        in (response["status"]["message"])
    )


def test_moved_tag_is_allowed_with_a_warning(served: Any) -> None:
    _team, tls, d = served
    response = tls.review(pod_review(d["d1"], tag="production"))
    assert response["allowed"] is True
    assert "tag production now names" in response["warnings"][0]
    assert "warnings" not in tls.review(pod_review(d["d3"], tag="production"))


def test_ungoverned_namespace_allowed_with_warning(served: Any) -> None:
    _team, tls, d = served
    response = tls.review(pod_review(d["d4"], namespace="someone-else"))
    assert response["allowed"] is True
    assert "not governed" in response["warnings"][0]


def test_deployment_with_dry_run_and_unpromoted_init_container(served: Any) -> None:
    _team, tls, d = served
    document = asset("deployment-update.json", d1=d["d3"], d2=d["d2"])
    response = tls.review(document)
    assert response["uid"] == "b2d4c0ee-2f9a-4f39-9c33-6a0f1e2d3c4b"
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert f"init container 'migrate': digest {d['d2']} was never promoted" in message
    assert "container 'envoy': image envoyproxy/envoy:v1.31.0 is not pinned" in message


def test_cronjob_break_glass_with_an_unpinned_image_is_denied(served: Any) -> None:
    _team, tls, d = served
    document = asset("cronjob-create.json", d1=d["d2"])
    response = tls.review(document)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "ephemeral container 'debugger': image busybox:1.36 is not pinned" in message
    assert "break-glass refused: it admits only images pinned by digest" in message
    # The same pods in production, whose rules have no break-glass:
    document["request"]["namespace"] = "payment-api-production"
    message = tls.review(document)["status"]["message"]
    assert "ephemeral container 'debugger': image busybox:1.36 is not pinned" in message
    assert "production has no freeze break-glass rule" in message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"a": 1, "a": 2}', "duplicate JSON key"),
        (b"[]", "not a JSON object"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}
            ).encode(),
            "not an AdmissionReview admission.k8s.io/v1",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", '
            b'"request": {"uid": "u"}}',
            "request.kind",
        ),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 5000, "nests too deeply"),
        (b" " * (9 * 1024 * 1024), "over 8388608 bytes"),
    ],
)
def test_hostile_bodies_are_denied_with_a_reason(served: Any, body: bytes, reason: str) -> None:
    _team, tls, _d = served
    with tls.client() as client:
        answer = client.post(
            "/admission/validate", content=body, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["allowed"] is False
    assert reason in response["status"]["message"]


def test_a_new_promotion_is_seen_at_once(served: Any) -> None:
    team, tls, d = served
    r5, d5 = build(tls, team, "v5")
    assert tls.review(pod_review(d5))["allowed"] is False  # warms the cache without d5
    promote(tls, r5, "production")
    assert tls.review(pod_review(d5))["allowed"] is True
    # d1 is now two promotions back: out of the window (previous: 1)
    assert "not within the last 2" in tls.review(pod_review(d["d1"]))["status"]["message"]
    promote(tls, d["r3"], "production")  # d3 current again, for the tests after this one


def test_a_promotion_through_another_replica_is_seen_at_once(served: Any) -> None:
    team, tls, d = served
    other = start_tls_server(team)  # a second replica on the same database
    other.tokens.update(tls.tokens)
    try:
        ref, digest = build(other, team, "v6")
        assert tls.review(pod_review(digest))["allowed"] is False  # cached without it
        promote(other, ref, "production")
        assert tls.review(pod_review(digest))["allowed"] is True
        promote(other, d["r3"], "production")
    finally:
        other.stop()


def _counted(text: str, outcome: str) -> float:
    prefix = f'conveyor_admission_decisions_total{{outcome="{outcome}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line[len(prefix) :])


def test_metrics_count_decisions(served: Any) -> None:
    _team, tls, d = served
    with tls.client() as client:
        before = client.get("/metrics").text
        assert tls.review(pod_review(d["d3"]))["allowed"] is True
        assert tls.review(pod_review(d["d4"]))["allowed"] is False
        after = client.get("/metrics").text
    for outcome in ("allowed", "denied"):
        assert _counted(after, outcome) == _counted(before, outcome) + 1


def test_drift_endpoint_stores_the_snapshot_and_sets_the_gauge(served: Any) -> None:
    _team, tls, d = served
    text = (DRIFT_ASSETS / "kubectl-pods.json").read_text()
    text = text.replace("sha256:" + "1" * 64, d["d3"]).replace("sha256:" + "2" * 64, d["d2"])
    body = text.encode()
    denied = tls.post("viewer", "/api/v1/environments/production/drift", content=body)
    assert denied.status_code == 403
    answer = tls.post("watcher", "/api/v1/environments/production/drift", content=body)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["summary"]["production"]["never"] == 2  # the staging digest; migrations
    assert report["summary"]["staging"]["current"] == 1
    with tls.client("viewer") as client:
        last = client.get("/api/v1/environments/production/drift").json()
        metrics = client.get("/metrics").text
    assert last["reported_by"] == "watcher"
    assert last["summary"]["never"] == 2
    assert {c["status"] for c in last["containers"]} == {"current", "never", "unknown"}
    assert 'conveyor_drift_containers{environment="production",status="never"} 2.0' in metrics
    # Nothing of staging runs any more: staging's snapshot says so (not the last one's pods).
    only_production = json.loads(text)
    only_production["items"] = only_production["items"][:1]
    answer = tls.post(
        "watcher", "/api/v1/environments/staging/drift", content=json.dumps(only_production)
    )
    assert answer.status_code == 200, answer.text
    with tls.client("viewer") as client:
        staging = client.get("/api/v1/environments/staging/drift").json()
    assert staging["containers"] == []
    assert sum(staging["summary"].values()) == 0
    bad = tls.post("watcher", "/api/v1/environments/production/drift", content=b"nope")
    assert bad.status_code == 400


def test_tampered_ledger_denies_after_restart(tmp_path: Path) -> None:
    """A writer with database access but no key moves the production promotion onto its own
    digest: neither digest is admitted (the row no longer belongs to the signed tree, so the
    reader raises LedgerTampered and the webhook fails closed)."""
    team = admission_team(tmp_path / "team")
    tokens = {identity: team.token(f"{identity}-token", identity) for identity in IDENTITIES}
    tls = start_tls_server(team)
    tls.tokens.update(tokens)
    try:
        ref, digest = build(tls, team, "v1")
        _evil_ref, evil = build(tls, team, "evil")
        promote(tls, ref, "production")
        assert tls.review(pod_review(digest))["allowed"] is True
    finally:
        tls.stop()
    db = team.root / ".conveyor" / "conveyor.db"
    with sqlite3.connect(db) as conn:
        changed = conn.execute(
            "UPDATE ledger_entries SET subject_digest = ? WHERE kind = 'promotion'", (evil,)
        ).rowcount
        assert changed == 1
    tls = start_tls_server(team)
    try:
        for running in (evil, digest):
            response = tls.review(pod_review(running))
            assert response["allowed"] is False
            message = response["status"]["message"]
            assert "could not decide, so it denies" in message
            assert "do not belong to the signed tree" in message
    finally:
        tls.stop()


def _cli_ok(team: Team, *args: str) -> None:
    done = team.cli(*args)
    assert done.returncode == 0, done.stderr


def test_drift_cli_counts_server_signed_promotions(served: Any) -> None:
    """Direct-database mode on the server's ledger: promotions the server signed for the
    deployer's token count for the deployer, as in the server's own reader."""
    team, _tls, d = served
    text = (DRIFT_ASSETS / "kubectl-pods.json").read_text()
    text = text.replace("sha256:" + "1" * 64, d["d3"]).replace("sha256:" + "2" * 64, d["d2"])
    pods = team.root / "served-pods.json"
    pods.write_text(text)
    done = team.cli("drift", "production", "--from", str(pods), "--json")
    report = json.loads(done.stdout)
    statuses = {
        (c["owner"], c["container"]): (c["environment"], c["status"]) for c in report["containers"]
    }
    assert statuses[("payment-api-7d9f8b6c5-x2k4q", "api")] == ("production", "current")
    assert statuses[("payment-api-6b5a4c3-r7t6y", "api")] == ("staging", "current")
    assert statuses[("payment-api-canary-5c4b3a2-q9w8e", "api")] == ("production", "never")
    assert done.returncode == 1, done.stderr  # the canary's staging digest


def test_drift_cli_reports_a_staging_digest_in_production(tmp_path: Path) -> None:
    # Direct-database mode, client-signed.
    team = admission_team(tmp_path / "team")
    d = {}
    for name, tag, environments in (
        ("d1", "v1", ["production"]),
        ("d2", "v2", ["staging"]),
        ("d3", "v3", ["production"]),
    ):
        ref = team.image(tag)
        _cli_ok(team, "record", "build", ref, "--commit", COMMIT, "--key", "keys/ci.key")
        for environment in environments:
            _cli_ok(team, "promote", ref, "--to", environment, "--key", "keys/deployer.key")
        d[name] = ref.split("@", 1)[1]
    text = (DRIFT_ASSETS / "kubectl-pods.json").read_text()
    text = text.replace("sha256:" + "1" * 64, d["d3"]).replace("sha256:" + "2" * 64, d["d2"])
    pods = tmp_path / "pods.json"
    pods.write_text(text)
    done = team.cli("drift", "production", "--from", str(pods), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    statuses = {
        (c["owner"], c["container"]): (c["environment"], c["status"]) for c in report["containers"]
    }
    assert statuses[("payment-api-canary-5c4b3a2-q9w8e", "api")] == ("production", "never")
    assert statuses[("payment-api-7d9f8b6c5-x2k4q", "api")] == ("production", "current")
    assert statuses[("payment-api-6b5a4c3-r7t6y", "api")] == ("staging", "current")
    assert ("coredns-76f75df574-abcde", "coredns") not in statuses  # exempt namespace
    table = team.cli("drift", "production", "--from", str(pods))
    assert table.returncode == 1
    assert "never    production   payment-api-production/payment-api-canary" in table.stdout
    # Only the current production pod: exit 0.
    document = json.loads(text)
    document["items"] = document["items"][:1]
    pods.write_text(json.dumps(document))
    assert team.cli("drift", "production", "--from", str(pods)).returncode == 0
    # As staging (a map naming everything staging): the production digest was never there.
    mapped = team.cli(
        "drift", "staging", "--from", str(pods), "--namespace-map", "payment-api-production=staging"
    )
    assert mapped.returncode == 1
    pods.write_text("not json")
    bad = team.cli("drift", "production", "--from", str(pods))
    assert bad.returncode == 2
    assert bad.stderr.startswith("conveyor: error: ")
    assert "Traceback" not in bad.stderr
    unknown = team.cli("drift", "nowhere", "--from", str(DRIFT_ASSETS / "kubectl-pods.json"))
    assert unknown.returncode == 2
