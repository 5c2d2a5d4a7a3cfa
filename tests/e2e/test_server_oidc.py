"""Issue 13 against a real ``conveyor serve``: CI jobs authenticate with OIDC ID tokens signed
by an issuer the test runs (keys generated here, JWKS on loopback), people sign in through a
real OpenID provider (``oidc-provider-mock``) with the real redirect flow, and the seed
pipeline records every principal. Hostile tokens are each refused with 401 and a reason in
the server log.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.oidc import COMMIT, CiIssuer, ci_issuer
from tests.support.server import (
    PASSING_JUNIT,
    RunningServer,
    Team,
    free_port,
    make_team,
    trivy_report,
)

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"
LOGIN_SECRET = "login-secret-for-tests"

CONFIG = """\
version: 1
identities:
  ci:
    oidc:
      issuer: github
      claims:
        sub: "repo:acme/payment-api:ref:refs/heads/main"
        workflow_ref: "acme/payment-api/.github/workflows/promote.yml@refs/heads/*"
    roles: [builder, tester, scanner]
  deployer-staging:
    oidc: {{issuer: github, claims: {{sub: "repo:acme/payment-api:environment:staging"}}}}
    roles: [deployer]
  deployer-prod:
    oidc: {{issuer: github, claims: {{sub: "repo:acme/payment-api:environment:production"}}}}
    roles: [deployer]
  gitlab-ci:
    oidc: {{issuer: gitlab, claims: {{project_path: acme/payment-api, ref_protected: "true"}}}}
    roles: [builder]
  twin-a:
    oidc: {{issuer: github, claims: {{repository: acme/twins}}}}
    roles: [builder]
  twin-b:
    oidc: {{issuer: github, claims: {{sub: "repo:acme/twins:*"}}}}
    roles: [builder]
  alice: {{login: {{email: alice@example.com}}, roles: [approver]}}
  bob:   {{login: {{email: bob@example.com}}, roles: [approver]}}
  server: {{key: keys/server.pub, roles: [server]}}
ledger:
  key: keys/ledger.key
  public_key: keys/ledger.pub
server:
  url: {url}
  signing_key: keys/server.key
  oidc:
    audience: conveyor
    issuers:
      github: {{issuer: "{github}", jwks_uri: "{github}/jwks"}}
      gitlab: {{issuer: "{gitlab}"}}
  login:
    issuer: {login}
    client_id: conveyor
    client_secret_env: CONVEYOR_LOGIN_SECRET
  layouts: [build]
environments:
  staging:
    repository: oci:staging
    tags: [staging]
    requires:
      provenance: {{}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
  production:
    repository: oci:production
    tags: [production]
    requires:
      after: {{environment: staging, smoke: true}}
      approvals: {{count: 2, role: approver, distinct_from: [builder, promoter]}}
      tests: {{min_passed: 1, max_failed: 0}}
"""


@dataclass
class World:
    team: Team
    server: RunningServer
    github: CiIssuer
    gitlab: CiIssuer
    login: str  # the provider's URL

    def call(self, token: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=120) as client:
            return client.request(method, path, **kw)

    def gh(self, **claims: Any) -> str:
        return self.github.sign(self.github.github_claims(**claims))


def _start(team: Team, port: int) -> RunningServer:
    log = team.root / f"serve-{port}.log"
    env = {**team.env(), "CONVEYOR_LOGIN_SECRET": LOGIN_SECRET}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=team.root,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    server = RunningServer(url, process, log, team)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"conveyor serve did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("oidc-team")
    with (
        ci_issuer("gh-1") as github,
        ci_issuer("gl-1") as gitlab,
        oidc_provider_mock.run_server_in_thread(port=0) as provider,
    ):
        login = f"http://localhost:{provider.server_port}"
        for sub, email, verified in (
            ("alice-sub", "alice@example.com", True),
            ("bob-sub", "bob@example.com", True),
            ("eve-sub", "bob@example.com", False),
            ("mallory-sub", "mallory@example.com", True),
        ):
            put = httpx.put(
                f"{login}/users/{sub}", json={"email": email, "email_verified": verified}
            )
            assert put.status_code == 204, put.text
        team = make_team(root)
        port = free_port()
        team.config.write_text(
            CONFIG.format(
                url=f"http://127.0.0.1:{port}", github=github.url, gitlab=gitlab.url, login=login
            )
        )
        server = _start(team, port)
        try:
            yield World(team, server, github, gitlab, login)
        finally:
            server.stop()


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


def _refusals(world: World) -> list[str]:
    return [
        str(line.get("reason"))
        for line in world.server.log_lines()
        if line.get("message") == "refused"
    ]


def _refused(world: World, token: str, reason: str) -> None:
    """401 on a real endpoint, and the reason in the server's log; never the token."""
    before = len(_refusals(world))
    answer = world.call(token, "GET", "/api/v1/whoami")
    assert answer.status_code == 401, answer.text
    assert re.search(reason, answer.json()["detail"]), answer.json()["detail"]
    logged = _refusals(world)[before:]
    assert any(re.search(reason, line) for line in logged), logged
    assert token not in world.server.log.read_text()


def sign_in(
    world: World, sub: str, *, next_path: str = "/login/session"
) -> tuple[httpx.Client, httpx.Response]:
    """The real browser flow: /login → the provider's form → post it → /login/callback."""
    client = httpx.Client(base_url=world.server.url, timeout=60, follow_redirects=True)
    form = client.get("/login", params={"next": next_path})
    assert form.status_code == 200, form.text
    assert str(form.url).startswith(world.login), form.url  # on the provider's page
    query = dict(form.url.params)
    assert query["code_challenge_method"] == "S256"
    for needed in ("state", "nonce", "code_challenge"):
        assert query[needed], needed
    return client, client.post(str(form.url), data={"sub": sub})


# --- CI tokens ------------------------------------------------------------------------------------


def test_a_github_token_acts_as_its_identity_and_names_its_claims(world: World) -> None:
    who = _ok(world.call(world.gh(), "GET", "/api/v1/whoami"))
    assert who["identity"] == "ci"
    assert who["roles"] == ["builder", "scanner", "tester"]
    auth = who["authenticated"]
    assert auth["method"] == "oidc"
    assert auth["issuer"] == world.github.url
    assert auth["claims"]["sub"] == "repo:acme/payment-api:ref:refs/heads/main"
    assert auth["claims"]["run_id"] == "123"
    assert auth["claims"]["sha"] == COMMIT
    assert auth["claims"]["workflow_ref"].endswith("promote.yml@refs/heads/main")
    assert "actor" not in auth["claims"]  # only the claims that identify the job
    prod = _ok(world.call(world.gh(environment="production"), "GET", "/api/v1/whoami"))
    assert prod["identity"] == "deployer-prod"


def test_gitlab_tokens_rs256_and_es256_with_the_jwks_found_by_discovery(world: World) -> None:
    world.gitlab.add_key("gl-ec", "EC")  # before the server first fetches GitLab's JWKS
    token = world.gitlab.sign(world.gitlab.gitlab_claims(), kid="gl-ec")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert _ok(world.call(token, "GET", "/api/v1/whoami"))["identity"] == "gitlab-ci"
    gitlab = world.gitlab.sign(world.gitlab.gitlab_claims(), kid="gl-1")
    who = _ok(world.call(gitlab, "GET", "/api/v1/whoami"))
    assert who["identity"] == "gitlab-ci"
    assert who["authenticated"]["claims"]["pipeline_id"] == "574"
    assert who["authenticated"]["claims"]["project_path"] == "acme/payment-api"


def _swap_payload(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'gh-1'})}.{part(claims)}."


def _hs256_with_public_key(world: World) -> str:
    """The "public key as HMAC secret" trick, signed by hand (PyJWT refuses to do it)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    public = (
        world.github.keys["gh-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT", "kid": "gh-1"})
    signing_input = f"{header}.{part(world.github.github_claims())}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_hostile_tokens_are_each_refused_with_a_reason_in_the_log(world: World) -> None:
    gh = world.github
    now = int(time.time())
    stranger = CiIssuer(url="https://token.actions.githubusercontent.com")
    stranger.add_key("gh-1")
    cases = [
        ("wrong issuer", stranger.sign(stranger.github_claims()), "issuer .* is not trusted"),
        ("wrong audience", gh.sign(gh.github_claims("sigstore")), "audience is not 'conveyor'"),
        ("expired", gh.sign(gh.github_claims(now=now - 3600)), "has expired"),
        (
            "not yet valid",
            gh.sign({**gh.github_claims(), "nbf": now + 600, "iat": now}),
            "not yet valid",
        ),
        ("issued in the future", gh.sign(gh.github_claims(now=now + 600)), "not yet valid"),
        ("alg none", _unsigned(gh.github_claims()), "algorithm 'none' is not allowed"),
        ("HS256 with the public key", _hs256_with_public_key(world), "'HS256' is not allowed"),
        ("another repository", world.gh(repo="evil/payment-api"), "matches no identity.*evil"),
        (
            "tampered payload",
            _swap_payload(world.gh(), sub="repo:acme/payment-api:environment:production"),
            "signature does not verify",
        ),
        ("oversized", world.gh() + "A" * 20000, "larger than"),
        ("garbage", "eyJhbGciOi.bad.token", "malformed"),
        (
            "two identities",
            world.gh(repo="acme/twins"),
            r"more than one identity \(twin-a, twin-b\)",
        ),
    ]
    for name, token, reason in cases:
        try:
            _refused(world, token, reason)
        except AssertionError as failure:
            raise AssertionError(f"{name}: {failure}") from failure


def test_no_identity_names_the_claims_the_token_carried(world: World) -> None:
    answer = world.call(world.gh(ref="refs/heads/feature"), "GET", "/api/v1/whoami")
    assert answer.status_code == 401
    detail = answer.json()["detail"]
    assert "sub='repo:acme/payment-api:ref:refs/heads/feature'" in detail
    assert "ref='refs/heads/feature'" in detail


def test_an_unknown_kid_refreshes_the_jwks_once_then_is_refused(world: World) -> None:
    gl = world.gitlab
    rogue = CiIssuer(url=gl.url)
    rogue.add_key("not-published")
    # The server's JWKS cache warm first (one good token), so the count below is the refresh
    # alone, whichever tests ran before this one.
    warm = world.call(gl.sign(gl.gitlab_claims()), "GET", "/api/v1/whoami")
    assert warm.status_code == 200, warm.text
    before = gl.fetches
    _refused(world, rogue.sign(rogue.gitlab_claims()), "key id 'not-published' is not in the JWKS")
    assert gl.fetches == before + 1  # one refresh
    _refused(world, rogue.sign(rogue.gitlab_claims()), "not in the JWKS")
    assert gl.fetches == before + 1  # rate limited: no second fetch right away


def test_jwks_rotation_works_without_restart(world: World) -> None:
    gh = world.github
    old = gh.keys["gh-1"]
    old_token = gh.sign(gh.github_claims(), kid="gh-1")
    gh.keys.clear()
    gh.add_key("gh-2")  # the provider rotates: old key removed, new key used
    answer = world.call(gh.sign(gh.github_claims(), kid="gh-2"), "GET", "/api/v1/whoami")
    assert answer.status_code == 200, answer.text
    assert answer.json()["identity"] == "ci"
    # a token still signed by the removed key no longer verifies
    _refused(world, old_token, "not in the JWKS")
    assert old not in gh.keys.values()  # later tests sign with the new key


# --- people ---------------------------------------------------------------------------------------


def test_a_person_signs_in_through_the_provider_and_gets_a_safe_cookie(world: World) -> None:
    client, done = sign_in(world, "alice-sub")
    assert done.status_code == 200, done.text
    session = done.json()
    assert session["identity"] == "alice"
    assert session["authenticated"] == {
        "method": "login",
        "issuer": world.login,
        "email": "alice@example.com",
    }
    cookie_header = next(
        r.headers["set-cookie"]
        for r in done.history
        if "conveyor_session" in r.headers.get("set-cookie", "")
    )
    lowered = cookie_header.lower()
    assert "httponly" in lowered
    assert "samesite=lax" in lowered
    assert "max-age=43200" in lowered
    assert "secure" not in lowered  # server.url is loopback http here
    session_cookie = client.cookies["conveyor_session"]
    assert session_cookie.startswith("cvs_")
    assert session_cookie not in world.server.log.read_text()  # nor the provider's code
    # the cookie authenticates reads; a write without the CSRF token is refused
    assert _ok(client.get("/api/v1/whoami"))["identity"] == "alice"
    refused = client.post(
        "/api/v1/approvals",
        json={"reference": "oci:x@sha256:" + "0" * 64, "environment": "production"},
    )
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    # logout needs the CSRF token too, and clears the cookie
    assert client.post("/logout").status_code == 403
    out = client.post("/logout", headers={"X-CSRF-Token": session["csrf_token"]})
    assert out.status_code == 200
    assert client.get("/api/v1/whoami").status_code == 401
    client.close()


def test_logins_that_map_to_no_identity_or_an_unverified_email_are_refused(world: World) -> None:
    client, done = sign_in(world, "mallory-sub")
    with closing(client):
        assert done.status_code == 403
        assert "mallory@example.com signs in as no identity" in done.json()["detail"]
    client, done = sign_in(world, "eve-sub")  # claims bob's email, unverified
    with closing(client):
        assert done.status_code == 401
        assert "verified email" in done.json()["detail"]
        assert client.get("/api/v1/whoami").status_code == 401


def test_a_forged_or_replayed_login_callback_is_refused(world: World) -> None:
    with httpx.Client(base_url=world.server.url, timeout=30) as client:
        no_flow = client.get("/login/callback", params={"code": "x", "state": "y"})
        assert no_flow.status_code == 401
        assert "no login in progress" in no_flow.json()["detail"]
        start = client.get("/login")
        assert start.status_code == 303
        wrong_state = client.get("/login/callback", params={"code": "x", "state": "forged"})
        assert wrong_state.status_code == 401
        assert "state does not match" in wrong_state.json()["detail"]
        forged = client.get("/api/v1/whoami", headers={"Authorization": "Bearer cvs_e30.AAAA"})
        assert forged.status_code == 401
    # an open redirect is not possible through next=
    client, done = sign_in(world, "bob-sub", next_path="//evil.example/")
    with closing(client):
        assert str(done.url) == world.server.url + "/"


def test_conveyor_login_from_a_terminal_stores_a_0600_session(world: World, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "BROWSER": "true",  # webbrowser opens nothing
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "login", "--server", world.server.url, "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        url = line.split("sign in: ", 1)[1].strip()
        with httpx.Client(timeout=60, follow_redirects=True) as browser:
            form = browser.get(url)
            done = browser.post(str(form.url), data={"sub": "bob-sub"})
            assert done.status_code == 200, done.text
            assert "Signed in" in done.text
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "as bob" in out
    stored = tmp_path / "config" / "conveyor" / "sessions.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    token = json.loads(stored.read_text())[world.server.url]["token"]
    assert token.startswith("cvs_")
    assert token not in out + err
    # the stored session is used as CONVEYOR_TOKEN would be
    from conveyor.client import ConveyorClient

    with ConveyorClient.from_environment(server=world.server.url, environ=env) as client:
        assert client.whoami()["identity"] == "bob"


# --- the seed flow ------------------------------------------------------------------------------


def _statements(world: World, digest: str, kind: str) -> list[dict[str, Any]]:
    from conveyor.ledger import open_ledger

    ledger = open_ledger(f"sqlite:///{world.team.root / '.conveyor' / 'conveyor.db'}")
    try:
        out = []
        for entry in ledger.entries(subject_digest=digest, kind=kind):
            envelope = json.loads(entry.envelope)
            out.append(json.loads(base64.b64decode(envelope["payload"])))
        return out
    finally:
        ledger.close()


def test_the_seed_flow_with_oidc_jobs_and_people_who_log_in(world: World) -> None:
    ref = world.team.image("oidc-seed")
    digest = ref.split("@")[1]
    ci = world.gh()
    # record build checks the token's sha against --commit
    wrong = world.call(
        ci, "POST", "/api/v1/builds", json={"reference": ref, "commit": "f" * 40, "run_id": "123"}
    )
    assert wrong.status_code == 403
    assert f"issued for commit {COMMIT}" in wrong.json()["detail"]
    build = {"reference": ref, "commit": COMMIT, "run_id": "42"}
    _ok(world.call(ci, "POST", "/api/v1/builds", json=build))
    files = [("files", ("junit.xml", PASSING_JUNIT.encode(), "application/xml"))]
    _ok(world.call(ci, "POST", "/api/v1/tests", data={"reference": ref}, files=files))
    scan = [("file", ("trivy.json", json.dumps(trivy_report()).encode(), "application/json"))]
    _ok(world.call(ci, "POST", "/api/v1/scans", data={"reference": ref}, files=scan))
    # the main-branch job is not a deployer; the staging-bound job is
    body = {"reference": ref, "environment": "staging"}
    assert world.call(ci, "POST", "/api/v1/promotions", json=body).status_code == 403
    _ok(world.call(world.gh(environment="staging"), "POST", "/api/v1/promotions", json=body))
    staging = f"oci:{world.team.root / 'staging'}:staging"
    smoke = {"reference": staging, "environment": "staging", "passed": True}
    _ok(world.call(ci, "POST", "/api/v1/smoke", json=smoke))
    # alice and bob sign in through the provider and approve in the browser session
    for person in ("alice-sub", "bob-sub"):
        browser, done = sign_in(world, person)
        with closing(browser):
            csrf = done.json()["csrf_token"]
            approval = {"reference": staging, "environment": "production"}
            _ok(browser.post("/api/v1/approvals", json=approval, headers={"X-CSRF-Token": csrf}))
    # the production deployer's token carries environment: production; a main-branch job
    # (or the same job without the environment) is no deployer
    prod = {"reference": staging, "environment": "production"}
    denied = world.call(ci, "POST", "/api/v1/promotions", json=prod)
    assert denied.status_code == 403
    assert "ci may not promote in production" in denied.json()["detail"]
    result = _ok(
        world.call(world.gh(environment="production"), "POST", "/api/v1/promotions", json=prod)
    )
    assert result["digest"] == digest
    assert result["recorded"] is True
    trace = _ok(world.call(ci, "GET", "/api/v1/trace", params={"query": ref}))
    signers = {(e["kind"], e["signer"]) for e in trace["events"] if e["verified"]}
    assert {
        ("build", "ci"),
        ("tests", "ci"),
        ("scan", "ci"),
        ("approval", "alice"),
        ("approval", "bob"),
        ("promotion", "deployer-prod"),
    } <= signers
    # trace says how each principal authenticated (the reader's via, from PRINCIPAL_V1)
    vias = {(e["kind"], e["signer"]): e["via"] for e in trace["events"] if e["verified"]}
    assert vias[("build", "ci")].endswith(
        " OIDC (acme/payment-api, refs/heads/main, run 123) (signed by server)"
    )
    assert vias[("approval", "alice")] == "login alice@example.com (signed by server)"
    assert vias[("promotion", "deployer-prod")].endswith(
        "OIDC (acme/payment-api, refs/heads/main, production, run 123) (signed by server)"
    )
    # what was signed names each principal and how it authenticated
    build = _statements(world, digest, "build")[0]["predicate"][PRINCIPAL_V1]
    assert build["identity"] == "ci"
    assert build["authenticated"]["method"] == "oidc"
    assert build["authenticated"]["claims"]["sha"] == COMMIT
    approvals = {
        s["predicate"][PRINCIPAL_V1]["identity"]: s["predicate"][PRINCIPAL_V1]["authenticated"]
        for s in _statements(world, digest, "approval")
    }
    assert approvals["alice"] == {
        "method": "login",
        "issuer": world.login,
        "email": "alice@example.com",
    }
    promotion = _statements(world, digest, "promotion")
    deployed = [s["predicate"][PRINCIPAL_V1] for s in promotion]
    assert any(
        d["identity"] == "deployer-prod"
        and d["authenticated"]["claims"]["environment"] == "production"
        for d in deployed
    )


def test_in_github_actions_the_cli_gets_its_token_with_the_server_s_audience(
    world: World,
) -> None:
    """The runner's token service on loopback: it signs with the test's GitHub key for the
    audience the CLI asked, which the CLI learnt from the server."""
    import http.server
    import threading
    from urllib.parse import parse_qs, urlsplit

    from conveyor.client import ConveyorClient

    asked: list[str] = []

    class Runner(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            audience = parse_qs(urlsplit(self.path).query).get("audience", [""])[0]
            asked.append(audience)
            if self.headers.get("Authorization") != "bearer runner-request-token":
                self.send_error(403)
                return
            body = json.dumps({"value": world.github.sign(world.github.github_claims(audience))})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    runner = http.server.HTTPServer(("127.0.0.1", 0), Runner)
    threading.Thread(target=runner.serve_forever, daemon=True).start()
    try:
        env = {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{runner.server_address[1]}/t?v=2",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-request-token",
        }
        with ConveyorClient.from_environment(server=world.server.url, environ=env) as client:
            who = client.whoami()
    finally:
        runner.shutdown()
        runner.server_close()
    assert asked == ["conveyor"]
    assert who["identity"] == "ci"
    assert "runner-request-token" not in world.server.log.read_text()


def test_the_cli_in_remote_mode_sends_a_gitlab_id_token_and_its_commit_is_checked(
    world: World, tmp_path: Path
) -> None:
    """``conveyor --server URL record build`` with only ``CONVEYOR_ID_TOKEN`` (GitLab's
    ``id_tokens:``): the CLI's remote mode finds the token; the token's sha must be --commit."""
    ref = world.team.image("oidc-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "ACTIONS_"))}
    env["HOME"] = str(tmp_path)  # no stored login session
    env["XDG_CONFIG_HOME"] = str(tmp_path / ".config")
    env["CONVEYOR_ID_TOKEN"] = world.gitlab.sign(world.gitlab.gitlab_claims())

    def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", "--server", world.server.url, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,  # no conveyor.yaml here: remote mode reads none
            timeout=120,
        )

    wrong = conveyor("record", "build", ref, "--commit", "f" * 40)
    assert wrong.returncode == 1, wrong.stderr
    assert f"issued for commit {COMMIT}" in wrong.stderr
    done = conveyor("record", "build", ref, "--commit", COMMIT, "--json")
    assert done.returncode == 0, done.stderr
    trace = conveyor("trace", ref, "--json")
    assert trace.returncode == 0, trace.stderr
    builds = [e for e in json.loads(trace.stdout)["events"] if e["kind"] == "build"]
    assert [e["signer"] for e in builds] == ["gitlab-ci"]
    assert builds[0]["via"].endswith(
        " OIDC (acme/payment-api, main, pipeline 574) (signed by server)"
    )
    assert env["CONVEYOR_ID_TOKEN"] not in world.server.log.read_text()
