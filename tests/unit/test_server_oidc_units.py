"""Issue 13 pieces one by one: the config keys, claim matching, the JWKS cache, token
verification with a JWKS file, what trace says, and the CLI's token discovery (GitHub's
token service served on loopback by the test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from conveyor import ci_token
from conveyor.errors import ConfigError, ExternalError, InputError
from conveyor.policy.config import load_config
from conveyor.server import oidc
from conveyor.server.oidc import JwksCache, OidcRefused
from conveyor.server.principal import describe_authenticated
from tests.support.oidc import CiIssuer

ISSUE_CONFIG = """\
version: 1
server:
  url: https://conveyor.example.com          # external URL (login redirect, token audience)
  signing_key: keys/server.key
  oidc:
    audience: conveyor                       # the aud every CI token must carry
    issuers:
      github:
        issuer: https://token.actions.githubusercontent.com
        jwks_uri: https://token.actions.githubusercontent.com/.well-known/jwks   # or jwks_file:
      gitlab:
        issuer: https://gitlab.example.com
  login:
    issuer: https://login.example.com        # OIDC discovery at /.well-known/openid-configuration
    client_id: conveyor
    client_secret_env: CONVEYOR_LOGIN_SECRET # the secret itself never in the file
identities:
  ci:                                        # jobs on main that are not bound to an environment
    oidc: {issuer: github, claims: {sub: "repo:acme/payment-api:ref:refs/heads/main"}}
    roles: [builder, tester, scanner]
  deployer-prod:                             # jobs bound to the GitHub environment "production"
    oidc: {issuer: github, claims: {sub: "repo:acme/payment-api:environment:production"}}
    roles: [deployer]
  alice:
    login: {email: alice@example.com}
    roles: [approver]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conveyor.yaml"
    path.write_text(text)
    return path


def test_the_issue_s_configuration_loads_exactly_as_written(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, ISSUE_CONFIG))
    server = config.model.server
    assert server is not None
    assert server.oidc is not None
    assert server.oidc.audience == "conveyor"
    assert server.oidc.issuers["gitlab"].jwks_uri is None  # discovery
    assert server.login is not None
    assert server.login.client_secret_env == "CONVEYOR_LOGIN_SECRET"
    binding = config.model.identities["ci"].oidc
    assert binding is not None
    assert binding.claims == {"sub": "repo:acme/payment-api:ref:refs/heads/main"}
    assert config.identities["alice"].key_path is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("issuer: github, claims", "issuer: githib, claims"), "'githib' is not under"),
        (("  url: https://conveyor.example.com ", "  # no url "), "server.login needs server.url"),
        (
            (
                "jwks_uri: https://token.actions.githubusercontent.com/.well-known/jwks",
                "jwks_uri: https://x.example/jwks\n        jwks_file: jwks.json",
            ),
            "not both",
        ),
        (('claims: {sub: "repo:acme/payment-api:ref:refs/heads/main"}', "claims: {}"), "claims"),
        (("email: alice@example.com", "email: alice"), "email"),
        (("client_secret_env: CONVEYOR_LOGIN_SECRET", "client_secret_env: s3cr3t value"), "secret"),
        (("audience: conveyor ", "audience: "), "audience"),
        (("issuer: https://gitlab.example.com", "issuer: gitlab.example.com"), "issuer"),
        (("{issuer: github, claims", "{issuer: github, claim"), "unknown key"),
        (('sub: "repo:acme/payment-api:environment:production"', "sub: ~"), "sub"),
    ],
)
def test_bad_oidc_and_login_configuration_is_refused(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in ISSUE_CONFIG
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, ISSUE_CONFIG.replace(old, new, 1)))
    assert message in str(raised.value) + " ".join(raised.value.problems)


def test_the_server_identity_cannot_be_reached_by_a_token(tmp_path: Path) -> None:
    from conveyor import service

    service.generate_keys("server", out_dir=tmp_path / "keys")
    text = ISSUE_CONFIG + (
        "  server:\n    key: keys/server.pub\n    roles: [server]\n"
        '    oidc: {issuer: github, claims: {sub: "repo:evil/x:ref:refs/heads/main"}}\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, text))
    assert "cannot be reached by an OIDC token" in " ".join(raised.value.problems)


# --- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "without", "claims", "matches"),
    [
        (
            {"sub": "repo:a/b:ref:refs/heads/main"},
            (),
            {"sub": "repo:a/b:ref:refs/heads/main"},
            True,
        ),
        (
            {"sub": "repo:a/b:ref:refs/heads/main"},
            (),
            {"sub": "repo:a/b:ref:refs/heads/mainx"},
            False,
        ),
        (
            {"workflow_ref": "a/b/.github/workflows/p.yml@refs/heads/*"},
            (),
            {"workflow_ref": "a/b/.github/workflows/p.yml@refs/heads/release/1"},
            True,
        ),
        (
            {"workflow_ref": "a/b/.github/workflows/p.yml@refs/heads/*"},
            (),
            {"workflow_ref": "a/b/.github/workflows/evil.yml@refs/heads/main"},
            False,
        ),
        (
            {"sub": "repo:a/b:*", "ref": "refs/heads/main"},
            (),
            {"sub": "repo:a/b:ref:refs/heads/main", "ref": "refs/heads/dev"},
            False,
        ),  # all must match
        ({"ref_protected": "true"}, (), {"ref_protected": True}, True),
        ({"run_id": "123"}, (), {"run_id": 123}, True),
        ({"repository": "a/b"}, (), {}, False),
        ({"repository": "a/b"}, (), {"repository": ["a/b"]}, False),  # a list is no claim value
        ({"project_path": "a/b"}, ("environment",), {"project_path": "a/b"}, True),
        (
            {"project_path": "a/b"},
            ("environment",),
            {"project_path": "a/b", "environment": "p"},
            False,
        ),
        ({"sub": "REPO:A/B"}, (), {"sub": "repo:a/b"}, False),  # case matters
    ],
)
def test_claims_match_exactly_or_as_globs_and_all_must(
    wanted: dict[str, str], without: tuple[str, ...], claims: dict[str, Any], matches: bool
) -> None:
    assert oidc._matches(wanted, claims, without) is matches


# --- the JWKS cache and verification with a JWKS file ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def air_gapped(tmp_path: Path) -> Iterator[tuple[CiIssuer, Path, Any]]:
    """A GitHub-shaped issuer whose JWKS is a file next to conveyor.yaml (jwks_file)."""
    issuer = CiIssuer(url="https://token.actions.githubusercontent.com")
    issuer.add_key("k1")
    jwks = tmp_path / "github-jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    text = ISSUE_CONFIG.replace(
        "jwks_uri: https://token.actions.githubusercontent.com/.well-known/jwks",
        "jwks_file: github-jwks.json",
    )
    config = load_config(_write(tmp_path, text))
    return issuer, jwks, config


def test_a_jwks_file_verifies_tokens_and_is_reread_when_it_changes(
    air_gapped: tuple[CiIssuer, Path, Any],
) -> None:
    issuer, jwks, config = air_gapped
    cache = JwksCache(clock=Clock())
    who = oidc.authenticate(issuer.sign(issuer.github_claims()), config, cache)
    assert who.identity == "ci"
    assert who.details is not None
    assert who.details["claims"]["sha"] == issuer.github_claims()["sha"]
    issuer.keys.clear()
    issuer.add_key("k2")
    jwks.write_text(json.dumps(issuer.jwks()) + "\n")  # rotated: a new file, a new size
    who = oidc.authenticate(
        issuer.sign(issuer.github_claims(environment="production")), config, cache
    )
    assert who.identity == "deployer-prod"


def test_an_unknown_kid_refreshes_at_most_once_per_interval(
    air_gapped: tuple[CiIssuer, Path, Any],
) -> None:
    _issuer, _, config = air_gapped
    clock = Clock()
    cache = JwksCache(clock=clock)
    spec = config.model.server.oidc.issuers["github"]
    cache.key(spec, "k1", config.base_dir)
    assert cache.fetches == 1
    for _ in range(5):
        with pytest.raises(OidcRefused, match="'nope' is not in the JWKS"):
            cache.key(spec, "nope", config.base_dir)
    assert cache.fetches == 2  # one refresh, then rate limited
    clock.now += oidc.REFRESH_INTERVAL
    with pytest.raises(OidcRefused):
        cache.key(spec, "nope", config.base_dir)
    assert cache.fetches == 3
    clock.now += oidc.MAX_AGE + 1
    cache.key(spec, "k1", config.base_dir)
    assert cache.fetches == 4  # stale after MAX_AGE


def test_a_cold_cache_fetches_once_for_an_unknown_kid(
    air_gapped: tuple[CiIssuer, Path, Any],
) -> None:
    """The fetch that fills a cold cache is as fresh as a refresh: no second one at once."""
    _issuer, _, config = air_gapped
    cache = JwksCache(clock=Clock())
    spec = config.model.server.oidc.issuers["github"]
    with pytest.raises(OidcRefused, match="'nope' is not in the JWKS"):
        cache.key(spec, "nope", config.base_dir)
    assert cache.fetches == 1
    with pytest.raises(OidcRefused):
        cache.key(spec, "nope", config.base_dir)
    assert cache.fetches == 2  # then the one refresh an unknown kid gets per interval


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_the_public_key_as_hmac_secret_trick_fails_even_with_an_oct_key_published(
    air_gapped: tuple[CiIssuer, Path, Any],
) -> None:
    issuer, jwks, config = air_gapped
    public = (
        issuer.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # a symmetric key in the JWKS (a misconfigured provider) must never be used
    document = issuer.jwks()
    document["keys"].append({"kty": "oct", "kid": "sym", "k": _b64(public)})
    jwks.write_text(json.dumps(document))
    claims = issuer.github_claims()
    for kid in ("k1", "sym"):
        header = _b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
        signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(OidcRefused, match="'HS256' is not allowed"):
            oidc.authenticate(f"{signing_input}.{_b64(mac)}", config, JwksCache())
    assert "sym" not in oidc._parse_jwks(document, "test")


def test_a_private_key_in_the_jwks_is_not_a_verification_key() -> None:
    issuer = CiIssuer(url="https://x.example")
    key = issuer.add_key("k1")
    import jwt

    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    private["kid"] = "k1"
    assert oidc._parse_jwks({"keys": [private]}, "test") == {}
    with pytest.raises(OidcRefused, match="not a JWKS"):
        oidc._parse_jwks({"keys": "nope"}, "test")


def test_es256_signed_with_an_rsa_kid_is_refused(air_gapped: tuple[CiIssuer, Path, Any]) -> None:
    issuer, _, config = air_gapped
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    token = issuer.sign(issuer.github_claims(), kid="k1", alg="ES256", key=other)
    with pytest.raises(OidcRefused, match=r"invalid|does not verify"):
        oidc.authenticate(token, config, JwksCache())


def test_a_token_sha_must_be_the_recorded_commit(air_gapped: tuple[CiIssuer, Path, Any]) -> None:
    from conveyor.server.auth import NotAllowed

    issuer, _, config = air_gapped
    who = oidc.authenticate(issuer.sign(issuer.github_claims()), config, JwksCache())
    oidc.check_commit(who, issuer.github_claims()["sha"].upper())
    with pytest.raises(NotAllowed, match="issued for commit"):
        oidc.check_commit(who, "f" * 40)


def test_trace_says_how_each_principal_authenticated() -> None:
    github = {
        "method": "oidc",
        "issuer": "https://token.actions.githubusercontent.com",
        "provider": "github",
        "claims": {
            "sub": "repo:acme/payment-api:ref:refs/heads/main",
            "repository": "acme/payment-api",
            "ref": "refs/heads/main",
            "run_id": "123",
        },
    }
    assert describe_authenticated("ci", github) == (
        "ci via GitHub OIDC (acme/payment-api, refs/heads/main, run 123)"
    )
    gitlab = {
        "method": "oidc",
        "issuer": "https://gitlab.example.com",
        "claims": {"project_path": "acme/app", "ref": "main", "pipeline_id": "574"},
    }
    assert (
        describe_authenticated("ci", gitlab) == "ci via GitLab OIDC (acme/app, main, pipeline 574)"
    )
    login = {"method": "login", "issuer": "https://login.example.com", "email": "a@example.com"}
    assert describe_authenticated("alice", login) == "alice via login a@example.com"
    token = {"method": "api-token", "token": "alice-laptop"}
    assert describe_authenticated("alice", token) == "alice (API token alice-laptop)"


# --- the CLI finds its token -------------------------------------------------------------------


@pytest.fixture
def github_token_service() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """GitHub's ID-token service, as a runner sees it: bearer request token, ?audience=."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
            if self.headers.get("Authorization") != "bearer request-token-xyz":
                self.send_error(401)
                return
            body = json.dumps({"count": 1, "value": "eyJ.id-token.sig"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0", seen
    finally:
        server.shutdown()
        server.server_close()


def test_in_github_actions_the_cli_requests_a_token_for_the_audience(
    github_token_service: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = github_token_service
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token-xyz",
        "CONVEYOR_OIDC_AUDIENCE": "conveyor prod",
    }
    assert ci_token.discover("https://conveyor.example.com", env) == "eyJ.id-token.sig"
    assert seen[-1]["path"] == "/token?api-version=2.0&audience=conveyor%20prod"
    # an explicit CONVEYOR_TOKEN wins; GitLab's variable is read as it is
    assert ci_token.discover("https://c.example", {**env, "CONVEYOR_TOKEN": "cvt_x"}) == "cvt_x"
    assert (
        ci_token.discover("https://c.example", {"CONVEYOR_ID_TOKEN": "eyJ.gl.sig"}) == "eyJ.gl.sig"
    )


def test_a_refused_token_request_never_shows_the_request_token(
    github_token_service: tuple[str, list[dict[str, str]]],
) -> None:
    url, _ = github_token_service
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong-secret-value",
        "CONVEYOR_OIDC_AUDIENCE": "conveyor",
    }
    with pytest.raises(ExternalError) as raised:
        ci_token.discover("https://conveyor.example.com", env)
    assert "wrong-secret-value" not in str(raised.value)
    assert "401" in str(raised.value)
    plain = {**env, "ACTIONS_ID_TOKEN_REQUEST_URL": "http://tokens.example.com/x"}
    with pytest.raises(InputError, match="not an https URL"):
        ci_token.discover("https://conveyor.example.com", plain)


def test_stored_sessions_are_private_to_the_user(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = ci_token.store_session("https://c.example/", "cvs_abc", "alice", env)
    assert path == tmp_path / "conveyor" / "sessions.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ci_token.discover("https://c.example", env) == "cvs_abc"
    assert ci_token.discover("https://other.example", env) is None
    ci_token.store_session("https://other.example", "cvs_def", "bob", env)
    assert ci_token.stored_session("https://c.example", env) == "cvs_abc"
    path.write_text("not json")
    assert ci_token.stored_session("https://c.example", env) is None


def test_jwt_shape_decides_the_authenticator() -> None:
    assert oidc.looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9.c2ln")
    assert not oidc.looks_like_jwt("cvt_" + "a" * 43)
    assert not oidc.looks_like_jwt("cvs_eyJ9.c2ln")


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("https://conveyor.example.com", True),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://conveyor.internal", True),  # plain http elsewhere still gets Secure cookies
    ],
)
def test_session_cookies_are_secure_unless_the_server_is_loopback_http(
    tmp_path: Path, url: str, secure: bool
) -> None:
    from conveyor.server import login

    text = ISSUE_CONFIG.replace("url: https://conveyor.example.com", f"url: {url}", 1)
    assert login._secure(load_config(_write(tmp_path, text))) is secure


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("/login/session", "/login/session"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        (None, "/"),
    ],
)
def test_login_redirects_only_to_paths_of_this_server(given: str | None, safe: str) -> None:
    from conveyor.server import login

    assert login._safe_next(given) == safe


# --- sessions and hostile JWKS sources -------------------------------------------------------


@pytest.fixture
def session_state(tmp_path: Path) -> Any:
    from conveyor import service
    from conveyor.server.app import ServerSettings, ServerState

    service.generate_keys("server", out_dir=tmp_path / "keys")
    text = ISSUE_CONFIG + "  server:\n    key: keys/server.pub\n    roles: [server]\n"
    return ServerState(ServerSettings(config_path=_write(tmp_path, text)))


def test_sessions_verify_and_expire_and_follow_the_config(
    session_state: Any, tmp_path: Path
) -> None:
    from conveyor.server import login

    token = login.new_session(session_state, "alice", "alice@example.com", "https://idp", "cli")
    who = login.authenticate(session_state, token)
    assert (who.identity, who.method, who.credential) == ("alice", "login", "alice@example.com")
    assert who.roles == frozenset({"approver"})
    payload, signature = token.removeprefix("cvs_").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = {**claims, "sub": "ci"}
    tampered = "cvs_" + _b64(json.dumps(forged, separators=(",", ":")).encode()) + "." + signature
    with pytest.raises(login.LoginRefused, match="not signed by this server"):
        login.authenticate(session_state, tampered)
    old = login._seal(session_state.signer(), login.SESSION_PURPOSE, {**claims, "exp": 1})
    with pytest.raises(login.LoginRefused, match="expired"):
        login.authenticate(session_state, "cvs_" + old)
    # a flow cookie or exchange code is not a session (domain separation)
    flow = login._seal(session_state.signer(), login.FLOW_PURPOSE, claims)
    with pytest.raises(login.LoginRefused, match="not signed by this server"):
        login.authenticate(session_state, "cvs_" + flow)
    for garbage in ("cvs_", "cvs_a.b.c", "cvs_!!!.???", "cvs_" + "A" * 5000):
        with pytest.raises(login.LoginRefused):
            login.authenticate(session_state, garbage)
    # alice loses her login binding: her session stops working at once
    config = session_state.settings.config_path
    config.write_text(config.read_text().replace("login: {email: alice@example.com}\n", ""))
    with pytest.raises(login.LoginRefused, match="no longer signs in"):
        login.authenticate(session_state, token)


@pytest.fixture
def hostile_jwks() -> Iterator[str]:
    bodies = {
        "/big": b'{"keys": [' + b" " * (oidc.MAX_JWKS_BYTES + 10) + b"]}",
        "/html": b"<html>not json</html>",
        "/nokeys": b'{"keys": 3}',
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "https://evil.example/jwks")
                self.end_headers()
                return
            body = bodies.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/big", "larger than"),
        ("/html", "not JSON"),
        ("/nokeys", "not a JWKS"),
        ("/redirect", "answered 302"),
        ("/missing", "answered 404"),
    ],
)
def test_a_hostile_jwks_source_is_refused(hostile_jwks: str, path: str, message: str) -> None:
    from conveyor.policy.config import OidcIssuerSpec

    spec = OidcIssuerSpec(issuer="https://issuer.example", jwks_uri=hostile_jwks + path)
    with pytest.raises(OidcRefused, match=message):
        JwksCache().key(spec, "k", None)


def test_keys_are_never_fetched_in_clear_from_elsewhere() -> None:
    from conveyor.policy.config import OidcIssuerSpec

    spec = OidcIssuerSpec(issuer="https://issuer.example", jwks_uri="http://issuer.example/jwks")
    with pytest.raises(OidcRefused, match="not https"):
        JwksCache().key(spec, "k", None)
