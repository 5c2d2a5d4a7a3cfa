"""``conveyor serve`` as users meet it: a real server process on loopback, real API tokens
made with ``conveyor token create``, the seed pipeline through the API, refusals, hostile
bodies, logs and metrics.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import (
    COMMIT,
    PASSING_JUNIT,
    ServedTeam,
    serve_team,
    trivy_report,
)

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTeam]:
    yield from serve_team(tmp_path_factory.mktemp("team"))


def _call(
    served: ServedTeam, identity: str | None, method: str, path: str, **kw: object
) -> httpx.Response:
    with served.server.client(identity) as client:
        return client.request(method, path, **kw)  # type: ignore[arg-type]


def _ok(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


def _record_ready(served: ServedTeam, ref: str, *, builder: str = "ci") -> None:
    _ok(
        _call(
            served,
            builder,
            "POST",
            "/api/v1/builds",
            json={"reference": ref, "commit": COMMIT, "run_id": "42"},
        )
    )
    files = [("files", ("junit.xml", PASSING_JUNIT.encode(), "application/xml"))]
    _ok(_call(served, "ci", "POST", "/api/v1/tests", data={"reference": ref}, files=files))
    scan = [("file", ("trivy.json", json.dumps(trivy_report()).encode(), "application/json"))]
    _ok(_call(served, "ci", "POST", "/api/v1/scans", data={"reference": ref}, files=scan))


# --- health, readiness, metrics ---------------------------------------------------------------


def test_health_and_readiness_need_no_token(served: ServedTeam) -> None:
    assert _ok(_call(served, None, "GET", "/healthz")) == {"status": "ok"}
    assert _ok(_call(served, None, "GET", "/readyz"))["status"] == "ready"


def test_metrics_count_requests_promotions_and_gate_denials(served: ServedTeam) -> None:
    ref = served.team.image("metrics")
    _call(
        served,
        "deployer",
        "POST",
        "/api/v1/promotions",
        json={"reference": ref, "environment": "staging"},
    )
    text = _call(served, None, "GET", "/metrics").text
    assert (
        'conveyor_http_requests_total{method="POST",route="/api/v1/promotions",status="409"}'
        in text
    )
    assert 'conveyor_promotions_total{environment="staging",outcome="denied"}' in text
    assert 'conveyor_gate_denials_total{gate="build"}' in text
    assert "conveyor_http_request_duration_seconds_bucket" in text


# --- the seed pipeline through the API --------------------------------------------------------


def test_the_seed_pipeline_through_the_server_names_every_principal(served: ServedTeam) -> None:
    ref = served.team.image("seed")
    digest = ref.split("@")[1]
    _record_ready(served, ref)
    staged = _ok(
        _call(
            served,
            "deployer",
            "POST",
            "/api/v1/promotions",
            json={"reference": ref, "environment": "staging"},
        )
    )
    assert staged["digest"] == digest
    assert staged["recorded"] is True
    staging = f"oci:{served.team.root / 'staging'}:staging"
    _ok(
        _call(
            served,
            "ci",
            "POST",
            "/api/v1/smoke",
            json={"reference": staging, "environment": "staging", "passed": True},
        )
    )
    _ok(
        _call(
            served,
            "alice",
            "POST",
            "/api/v1/approvals",
            json={"reference": staging, "environment": "production"},
        )
    )
    denied = _call(
        served,
        "deployer",
        "POST",
        "/api/v1/promotions",
        json={"reference": staging, "environment": "production"},
    )
    assert denied.status_code == 409
    assert denied.headers["content-type"] == "application/problem+json"
    problem = denied.json()
    assert problem["error"] == "PromotionDenied"
    assert problem["exit_code"] == 1
    assert "approvals: 1 of 2" in problem["detail"]
    gates = {g["gate"]: g for g in problem["gates"]}
    assert gates["approvals"]["passed"] is False
    assert gates["tests"]["passed"] is True
    # bob has no key: he acts only through the server, which signs for him
    _ok(
        _call(
            served,
            "bob",
            "POST",
            "/api/v1/approvals",
            json={"reference": staging, "environment": "production", "comment": "ok"},
        )
    )
    prod = _ok(
        _call(
            served,
            "deployer",
            "POST",
            "/api/v1/promotions",
            json={"reference": staging, "environment": "production"},
        )
    )
    assert prod["digest"] == digest
    assert prod["recorded"] is True
    status = _ok(_call(served, "viewer", "GET", "/api/v1/status"))
    current = {e["environment"]: e["current"] for e in status["environments"]}
    assert current["production"]["digest"] == digest
    assert current["production"]["promoted_by"] == "deployer"
    trace = _ok(_call(served, "viewer", "GET", "/api/v1/trace", params={"query": ref}))
    signers = [(e["kind"], e["signer"], e["verified"]) for e in trace["events"]]
    assert ("approval", "alice", True) in signers
    assert ("approval", "bob", True) in signers
    assert ("build", "ci", True) in signers
    assert ("promotion", "deployer", True) in signers
    history = _ok(_call(served, "viewer", "GET", "/api/v1/environments/production/history"))
    assert history["history"][0]["digest"] == digest
    promoted = _ok(
        _call(served, "viewer", "GET", "/api/v1/environments/production/promoted-digests")
    )
    assert digest in promoted["digests"]
    # what was signed names the principal and how it authenticated, with the server's key
    approval = _ledger_statements(served, digest, "approval")
    named = {s["predicate"][PRINCIPAL_V1]["identity"]: s for s in approval}
    assert set(named) == {"alice", "bob"}
    assert named["bob"]["predicate"][PRINCIPAL_V1]["authenticated"] == {
        "method": "api-token",
        "token": "bob-token",
    }
    verify = _ok(_call(served, "viewer", "POST", "/api/v1/audit/verify", json={}))
    assert verify["ok"] is True


def _ledger_statements(served: ServedTeam, digest: str, kind: str) -> list[dict[str, object]]:
    from conveyor.ledger import open_ledger

    ledger = open_ledger(f"sqlite:///{served.team.root / '.conveyor' / 'conveyor.db'}")
    try:
        entries = ledger.entries(subject_digest=digest, kind=kind)
        out = []
        for entry in entries:
            envelope = json.loads(entry.envelope)
            statement = json.loads(base64.b64decode(envelope["payload"]))
            statement["_ledger_signer"] = entry.signer
            out.append(statement)
        return out
    finally:
        ledger.close()


def test_a_builder_approving_its_own_build_is_recorded_but_not_counted(served: ServedTeam) -> None:
    ref = served.team.image("own")
    _record_ready(served, ref, builder="carol")
    _ok(
        _call(
            served,
            "deployer",
            "POST",
            "/api/v1/promotions",
            json={"reference": ref, "environment": "staging"},
        )
    )
    staging = f"oci:{served.team.root / 'staging'}:staging"
    _ok(
        _call(
            served,
            "ci",
            "POST",
            "/api/v1/smoke",
            json={"reference": staging, "environment": "staging", "passed": True},
        )
    )
    for who in ("carol", "alice"):
        _ok(
            _call(
                served,
                who,
                "POST",
                "/api/v1/approvals",
                json={"reference": staging, "environment": "production"},
            )
        )
    check = _ok(
        _call(
            served,
            "deployer",
            "POST",
            "/api/v1/check",
            json={"reference": staging, "environment": "production"},
        )
    )
    assert check["allowed"] is False
    approvals = next(g for g in check["gates"] if g["gate"] == "approvals")
    assert "1 of 2" in approvals["reason"]
    assert "carol" in approvals["reason"]
    # the builder's token cannot approve at all when it holds no approver role
    refused = _call(
        served,
        "ci",
        "POST",
        "/api/v1/approvals",
        json={"reference": staging, "environment": "production"},
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "NotAllowed"


# --- tokens -------------------------------------------------------------------------------------


def test_token_cli_prints_only_the_token_and_revocation_is_immediate(served: ServedTeam) -> None:
    team = served.team
    token = team.token("short-lived", "alice")
    assert token.startswith("cvt_")
    assert len(token) == 47
    assert (
        _ok(
            _call(
                served, None, "GET", "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
            )
        )["identity"]
        == "alice"
    )
    listed = team.cli("token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)["tokens"]}
    assert rows["short-lived"]["state"] == "active"
    assert token not in listed.stdout
    assert team.cli("token", "revoke", "short-lived").returncode == 0
    refused = _call(
        served, None, "GET", "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    again = team.cli("token", "create", "short-lived", "--identity", "alice")
    assert again.returncode == 2
    assert "exists already" in again.stderr
    unknown = team.cli("token", "create", "x", "--identity", "mallory")
    assert unknown.returncode == 2
    assert "unknown identity 'mallory'" in unknown.stderr
    server = team.cli("token", "create", "y", "--identity", "server")
    assert server.returncode == 2
    assert "server" in server.stderr


def test_an_expired_token_is_refused(served: ServedTeam) -> None:
    token = served.team.token("one-second", "viewer", expires="1s")
    time.sleep(1.2)
    refused = _call(
        served, None, "GET", "/api/v1/status", headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")


def test_admin_manages_tokens_through_the_api(served: ServedTeam) -> None:
    made = _ok(
        _call(
            served,
            "root",
            "POST",
            "/api/v1/tokens",
            json={"name": "api-made", "identity": "viewer", "expires": "2h"},
        )
    )
    token = made["token"]
    assert (
        _ok(
            _call(
                served, None, "GET", "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
            )
        )["identity"]
        == "viewer"
    )
    names = [t["name"] for t in _ok(_call(served, "root", "GET", "/api/v1/tokens"))["tokens"]]
    assert "api-made" in names
    assert not any("token" in t and t == token for t in names)
    assert _call(served, "viewer", "GET", "/api/v1/tokens").status_code == 403
    assert (
        _call(
            served, "alice", "POST", "/api/v1/tokens", json={"name": "z", "identity": "alice"}
        ).status_code
        == 403
    )
    assert _ok(_call(served, "root", "DELETE", "/api/v1/tokens/api-made"))["state"] == "revoked"
    assert _call(served, "root", "DELETE", "/api/v1/tokens/never-made").status_code == 404
    assert (
        _call(
            served, None, "GET", "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )


# --- authorisation matrix ---------------------------------------------------------------------

ROLES = {
    "ci": {"builder", "tester", "scanner"},
    "deployer": {"deployer"},
    "alice": {"approver"},
    "viewer": {"reader"},
    "root": {"admin"},
}
# Inside server.layouts (relative to the server's directory), and no layout there.
_BAD_REF = "oci:build/nonexistent@sha256:" + "0" * 64
_UPLOAD = [("files", ("junit.xml", PASSING_JUNIT.encode(), "application/xml"))]
_SCAN = [("file", ("scan.json", b"{}", "application/json"))]
# (method, path, request keywords, roles that may; empty = every identity)
ENDPOINTS: list[tuple[str, str, dict[str, object], set[str]]] = [
    ("GET", "/api/v1/whoami", {}, set()),
    ("GET", "/api/v1/resolve", {"params": {"ref": _BAD_REF}}, set()),
    ("GET", "/api/v1/inspect", {"params": {"ref": _BAD_REF}}, set()),
    ("POST", "/api/v1/builds", {"json": {"reference": _BAD_REF, "commit": COMMIT}}, {"builder"}),
    ("POST", "/api/v1/tests", {"data": {"reference": _BAD_REF}, "files": _UPLOAD}, {"tester"}),
    ("POST", "/api/v1/scans", {"data": {"reference": _BAD_REF}, "files": _SCAN}, {"scanner"}),
    (
        "POST",
        "/api/v1/smoke",
        {"json": {"reference": _BAD_REF, "environment": "staging", "passed": True}},
        {"tester"},
    ),
    (
        "POST",
        "/api/v1/approvals",
        {"json": {"reference": _BAD_REF, "environment": "production"}},
        {"approver"},
    ),
    ("POST", "/api/v1/envelopes", {"json": {"reference": _BAD_REF, "envelope": "eA=="}}, set()),
    ("POST", "/api/v1/check", {"json": {"reference": _BAD_REF, "environment": "staging"}}, set()),
    (
        "POST",
        "/api/v1/promotions",
        {"json": {"reference": _BAD_REF, "environment": "staging"}},
        {"deployer"},
    ),
    (
        "POST",
        "/api/v1/rollbacks",
        {"json": {"environment": "staging", "to": "sha256:" + "1" * 64}},
        {"deployer"},
    ),
    ("GET", "/api/v1/status", {}, set()),
    ("GET", "/api/v1/environments/staging/history", {}, set()),
    ("GET", "/api/v1/environments/staging/promoted-digests", {}, set()),
    ("GET", "/api/v1/trace", {"params": {"query": COMMIT}}, set()),
    ("GET", "/api/v1/attestations", {"params": {"ref": _BAD_REF}}, set()),
    ("POST", "/api/v1/audit/verify", {"json": {}}, set()),
    ("POST", "/api/v1/audit/checkpoints", {}, {"admin", "deployer"}),
    ("GET", "/api/v1/tokens", {}, {"admin"}),
    ("POST", "/api/v1/tokens", {"json": {"name": "matrix", "identity": "mallory"}}, {"admin"}),
    ("DELETE", "/api/v1/tokens/never-made", {}, {"admin"}),
    ("POST", "/api/v1/admin/reload", {}, {"admin"}),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS]
)
def test_every_endpoint_for_every_role_and_bad_credentials(
    served: ServedTeam, method: str, path: str, kwargs: dict[str, object], allowed: set[str]
) -> None:
    for identity, roles in ROLES.items():
        response = _call(served, identity, method, path, **kwargs)
        may = not allowed or bool(roles & allowed)
        if may:
            assert response.status_code not in (401, 403), (identity, response.text)
        else:
            assert response.status_code == 403, (identity, response.text)
            assert response.json()["detail"].startswith(f"not allowed: {identity} may not")
        assert response.status_code < 500 or response.status_code in (502, 503), response.text
    wrong = "cvt_" + "A" * 43
    for headers in (
        {},
        {"Authorization": "Bearer " + wrong},
        {"Authorization": "Basic eDp5"},
        {"Authorization": "Bearer not-a-token"},
    ):
        response = _call(served, None, method, path, headers=headers, **kwargs)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["exit_code"] == 2


def test_a_reader_can_write_nothing_and_every_refusal_is_logged(served: ServedTeam) -> None:
    writes = [(m, p, k) for m, p, k, allowed in ENDPOINTS if allowed]
    for method, path, kwargs in writes:
        assert _call(served, "viewer", method, path, **kwargs).status_code == 403
    refusals = [line for line in served.server.log_lines() if line.get("message") == "refused"]
    assert any(line.get("principal") == "viewer" and line.get("status") == 403 for line in refusals)


def test_one_json_log_line_a_request_with_its_id_and_never_a_token(served: ServedTeam) -> None:
    response = _call(
        served, "alice", "GET", "/api/v1/whoami", headers={"X-Request-Id": "trace-me-1"}
    )
    assert response.headers["x-request-id"] == "trace-me-1"
    generated = _call(
        served, "alice", "GET", "/api/v1/whoami", headers={"X-Request-Id": "bad id; drop table"}
    )
    assert generated.headers["x-request-id"] != "bad id; drop table"
    assert len(generated.headers["x-request-id"]) == 32
    time.sleep(0.2)
    lines = served.server.log_lines()
    mine = [line for line in lines if line.get("request_id") == "trace-me-1"]
    assert len(mine) == 1
    line = mine[0]
    assert line["route"] == "/api/v1/whoami"
    assert line["status"] == 200
    assert line["principal"] == "alice"
    assert isinstance(line["duration_ms"], float)
    text = served.server.log.read_text()
    for token in served.tokens.values():
        assert token not in text
    assert "sig" not in {key for line in lines for key in line}


# --- hostile bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            b'{"reference": "a", "reference": "b", "environment": "staging"}',
            "application/json",
            "duplicate JSON key 'reference'",
        ),
        (
            b'{"reference": "a", "environment": "staging", "passed": "yes"}',
            "application/json",
            "passed",
        ),
        (
            b'{"reference": 1, "environment": "staging", "passed": true}',
            "application/json",
            "reference",
        ),
        (
            b'{"reference": "a", "environment": "staging", "passed": true, "extra": 1}',
            "application/json",
            "unknown field",
        ),
        (
            b'{"reference": "a", "environment": "staging", "passed": NaN}',
            "application/json",
            "non-finite",
        ),
        (b'{"reference": "a", ', "application/json", "not valid JSON"),
        (b"[" * 100 + b"]" * 100, "application/json", "nests"),
        (b"\xff\xfe", "application/json", "UTF-8"),
        (b"reference=a", "text/plain", "body"),
    ],
)
def test_hostile_json_is_refused_with_one_line(
    served: ServedTeam, body: bytes, content_type: str, expected: str
) -> None:
    response = _call(
        served, "ci", "POST", "/api/v1/smoke", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert expected in problem["detail"]
    assert "\n" not in problem["detail"]
    assert problem["exit_code"] == 2


def test_oversized_bodies_are_refused_before_they_are_read(served: ServedTeam) -> None:
    big = b'{"comment": "' + b"x" * (1024 * 1024) + b'"}'
    response = _call(
        served,
        "alice",
        "POST",
        "/api/v1/approvals",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "larger than 1048576 bytes" in response.json()["detail"]

    def stream() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield (
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="j.xml"\r\n'
            b"Content-Type: application/xml\r\n\r\n"
        )
        chunk = b"x" * (1024 * 1024)
        for _ in range(52):
            yield chunk

    streamed = _call(
        served,
        "ci",
        "POST",
        "/api/v1/tests",
        content=stream(),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert streamed.status_code == 413, streamed.text
    # A declared length over the cap is refused at once, before any of the body is read.
    host, port = served.server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(
            b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n"
            b"Authorization: Bearer " + served.tokens["ci"].encode() + b"\r\n\r\n"
        )
        answer = raw.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_unknown_things_are_404_problems(served: ServedTeam) -> None:
    for path in ("/api/v1/environments/nowhere/history", "/api/v1/nothing-here"):
        response = _call(served, "viewer", "GET", path)
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    smoke = _call(
        served,
        "ci",
        "POST",
        "/api/v1/smoke",
        json={"reference": _BAD_REF, "environment": "nowhere", "passed": True},
    )
    assert smoke.status_code == 404
    assert "unknown environment 'nowhere'" in smoke.json()["detail"]


def test_a_client_signed_statement_naming_a_principal_is_not_believed(
    served: ServedTeam, tmp_path: Path
) -> None:
    """alice holds a key; an approval she signs that claims to be bob's counts for nobody
    (without the rule it would count as hers, or as bob's)."""
    from conveyor.attest import (
        APPROVAL_V1,
        IN_TOTO_PAYLOAD_TYPE,
        approval,
        load_signing_key,
        make_statement,
        sign_envelope,
    )
    from conveyor.ledger import open_ledger
    from conveyor.oci.digest import Digest

    ref = served.team.image("forged")
    digest = ref.split("@")[1]
    _record_ready(served, ref)
    predicate = dict(approval(environment="staging", comment=None))
    predicate[PRINCIPAL_V1] = {
        "identity": "bob",
        "authenticated": {"method": "api-token", "token": "bob-token"},
    }
    statement = make_statement("example/app", Digest.parse(digest), APPROVAL_V1, predicate)
    signer = load_signing_key(str(served.team.root / "keys" / "alice.key"))
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    ledger = open_ledger(f"sqlite:///{served.team.root / '.conveyor' / 'conveyor.db'}")
    try:
        ledger.append(
            envelope,
            subject_digest=digest,
            subject_name="example/app",
            predicate_type=APPROVAL_V1,
            kind="approval",
            signer="bob",
            keyid=signer.keyid,
            environment="staging",
        )
    finally:
        ledger.close()
    trace = _ok(_call(served, "viewer", "GET", "/api/v1/trace", params={"query": ref}))
    forged = [e for e in trace["events"] if e["kind"] == "approval"]
    assert forged
    assert all(e["verified"] is False for e in forged)


def test_an_upload_is_recorded_under_its_base_name_and_never_written(served: ServedTeam) -> None:
    ref = served.team.image("traversal")
    build = {"reference": ref, "commit": COMMIT, "run_id": "42"}
    _ok(_call(served, "ci", "POST", "/api/v1/builds", json=build))
    files = [("files", ("../../../../tmp/evil.xml", PASSING_JUNIT.encode(), "application/xml"))]
    recorded = _ok(
        _call(served, "ci", "POST", "/api/v1/tests", data={"reference": ref}, files=files)
    )
    (name,) = recorded["summary"]["files"]  # type: ignore[index]
    assert name == "evil.xml"  # the statement names the file, not the client's path
    assert not Path("/tmp/evil.xml").exists()


def test_a_wrong_token_is_never_logged(served: ServedTeam) -> None:
    wrong = "cvt_" + "Q" * 43
    response = _call(
        served, None, "GET", "/api/v1/status", headers={"Authorization": f"Bearer {wrong}"}
    )
    assert response.status_code == 401
    query = _call(served, None, "GET", f"/api/v1/status?token={wrong}")
    assert query.status_code == 401  # a token in a query string is not a credential
    time.sleep(0.2)
    assert wrong not in served.server.log.read_text()


def test_concurrent_principals_each_sign_as_themselves(served: ServedTeam) -> None:
    """The server signs for many principals at once: no statement names another's."""
    from concurrent.futures import ThreadPoolExecutor

    ref = served.team.image("concurrent")
    digest = ref.split("@")[1]
    jobs = [("alice", "bob", "carol")[i % 3] for i in range(18)]

    def approve(who: str) -> int:
        body = {"reference": ref, "environment": "production", "comment": who}
        return _call(served, who, "POST", "/api/v1/approvals", json=body).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(approve, jobs)) == {200}
    statements = _ledger_statements(served, digest, "approval")
    assert len(statements) == 18
    for statement in statements:
        predicate = statement["predicate"]
        named = predicate[PRINCIPAL_V1]["identity"]  # type: ignore[index]
        assert named == statement["_ledger_signer"] == predicate["comment"]  # type: ignore[index]


def _signed(
    served: ServedTeam, key: str, digest: str, predicate_type: str, predicate: dict[str, object]
) -> str:
    from conveyor.attest import (
        IN_TOTO_PAYLOAD_TYPE,
        load_signing_key,
        make_statement,
        sign_envelope,
    )
    from conveyor.oci.digest import Digest

    statement = make_statement("example/app", Digest.parse(digest), predicate_type, predicate)
    signer = load_signing_key(str(served.team.root / "keys" / f"{key}.key"))
    return base64.b64encode(sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])).decode()


def test_pre_signed_envelopes_are_verified_and_bound_to_their_signer(served: ServedTeam) -> None:
    from conveyor.attest import APPROVAL_V1, PROMOTION_V1, approval

    ref = served.team.image("presigned")
    digest = ref.split("@")[1]
    body = dict(approval(environment="production", comment="signed on my laptop"))
    envelope = _signed(served, "alice", digest, APPROVAL_V1, body)
    recorded = _ok(
        _call(
            served,
            "alice",
            "POST",
            "/api/v1/envelopes",
            json={"reference": ref, "envelope": envelope},
        )
    )
    assert recorded["signer"] == "alice"
    assert recorded["kind"] == "approval"
    assert recorded["environment"] == "production"
    trace = _ok(_call(served, "viewer", "GET", "/api/v1/trace", params={"query": ref}))
    assert ("approval", "alice", True) in [
        (e["kind"], e["signer"], e["verified"]) for e in trace["events"]
    ]
    # a token of bob cannot submit alice's statement
    other = _signed(
        served, "alice", digest, APPROVAL_V1, dict(approval(environment="production", comment="2"))
    )
    refused = _call(
        served, "bob", "POST", "/api/v1/envelopes", json={"reference": ref, "envelope": other}
    )
    assert refused.status_code == 403
    assert "signed by alice" in refused.json()["detail"]
    # a builder's key signing an approval: it lacks the role
    ci = _signed(served, "ci", digest, APPROVAL_V1, dict(approval(environment="production")))
    assert (
        _call(
            served, "ci", "POST", "/api/v1/envelopes", json={"reference": ref, "envelope": ci}
        ).status_code
        == 403
    )
    # tampered: the payload no longer matches its signature
    doc = json.loads(base64.b64decode(other))
    doc["payload"] = base64.b64encode(
        base64.b64decode(doc["payload"]).replace(b"production", b"staging")
    ).decode()
    tampered = base64.b64encode(json.dumps(doc).encode()).decode()
    bad = _call(
        served, "alice", "POST", "/api/v1/envelopes", json={"reference": ref, "envelope": tampered}
    )
    assert bad.status_code == 409, bad.text
    # about another digest than the reference names
    elsewhere = _signed(
        served, "alice", "sha256:" + "9" * 64, APPROVAL_V1, dict(approval(environment="production"))
    )
    wrong = _call(
        served, "alice", "POST", "/api/v1/envelopes", json={"reference": ref, "envelope": elsewhere}
    )
    assert wrong.status_code == 409
    assert "not sha256:" in wrong.json()["detail"]
    # promotions are placed by the server, never submitted
    promo = _signed(served, "deployer", digest, PROMOTION_V1, {"to": "production"})
    assert (
        _call(
            served,
            "deployer",
            "POST",
            "/api/v1/envelopes",
            json={"reference": ref, "envelope": promo},
        ).status_code
        == 400
    )
    # a client cannot name a principal
    named = dict(approval(environment="production"))
    named[PRINCIPAL_V1] = {"identity": "bob"}
    claim = _signed(served, "alice", digest, APPROVAL_V1, named)
    assert (
        _call(
            served, "alice", "POST", "/api/v1/envelopes", json={"reference": ref, "envelope": claim}
        ).status_code
        == 400
    )
    assert (
        _call(
            served, "alice", "POST", "/api/v1/envelopes", json={"reference": ref, "envelope": "%%%"}
        ).status_code
        == 400
    )


def _without_ages(status: dict[str, object]) -> dict[str, object]:
    for env in status["environments"]:  # type: ignore[attr-defined]
        if env["current"]:
            env["current"].pop("age_seconds")
            env["current"].pop("age")
    return status


def test_a_local_cli_and_the_server_agree_on_server_signed_evidence(served: ServedTeam) -> None:
    ref = served.team.image("agree")
    digest = ref.split("@")[1]
    _record_ready(served, ref)
    _ok(
        _call(
            served,
            "deployer",
            "POST",
            "/api/v1/promotions",
            json={"reference": ref, "environment": "staging"},
        )
    )
    staging = f"oci:{served.team.root / 'staging'}:staging"
    approval = {"reference": staging, "environment": "production"}
    _ok(_call(served, "bob", "POST", "/api/v1/approvals", json=approval))
    # A CLI process reading the same ledger directly applies the same rule: the server's
    # signatures count for the principals they name.
    local = served.team.cli("status", "--json")
    assert local.returncode == 0, local.stderr
    remote_status = _ok(_call(served, "viewer", "GET", "/api/v1/status"))
    assert _without_ages(json.loads(local.stdout)) == _without_ages(remote_status)
    current = {e["environment"]: e["current"] for e in json.loads(local.stdout)["environments"]}
    assert current["staging"]["digest"] == digest
    assert current["staging"]["promoted_by"] == "deployer"
    traced = served.team.cli("trace", ref, "--json")
    assert traced.returncode == 0, traced.stderr
    events = json.loads(traced.stdout)["events"]
    remote_trace = _ok(_call(served, "viewer", "GET", "/api/v1/trace", params={"query": ref}))
    assert events == remote_trace["events"]
    bob = next(e for e in events if e["kind"] == "approval")
    assert (bob["signer"], bob["verified"]) == ("bob", True)
    assert bob["via"] == "API token bob-token (signed by server)"
    text = served.team.cli("trace", ref)
    assert "bob via API token bob-token (signed by server)" in text.stdout
    attached = served.team.cli("attestations", staging, "--json")
    assert attached.returncode == 0, attached.stderr + attached.stdout
    by = {a["signer"]: a for a in json.loads(attached.stdout)["attestations"]}
    assert by["bob"]["via"] == "API token bob-token (signed by server)"
    assert by["bob"]["verified"] is True
    # the promoter-side check agrees too: bob's approval counts for production
    checked = served.team.cli("check", staging, "--to", "production", "--json")
    gates = {g["gate"]: g for g in json.loads(checked.stdout)["gates"]}
    assert "1 of 2" in gates["approvals"]["reason"]
    # the audit compares each row with its statement: the server's rows name their principal
    # (other tests of this module store forgeries on purpose; none of ours is flagged)
    audit = json.loads(served.team.cli("audit", "verify", "--json").stdout)
    ours = {e["ledger_index"] for e in events}
    assert not [p for p in audit["problems"] if int(p.split()[1].rstrip(":")) in ours]
