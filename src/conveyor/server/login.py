"""People sign in with the team's OpenID Connect provider (``server.login``).

``/login`` runs the authorization-code flow with PKCE (S256), ``state`` and ``nonce``
(authlib builds the requests; PyJWT verifies the ID token against the provider's JWKS), maps
the verified ``email`` (``email_verified`` must be true) to the one identity whose
``login.email`` it is, and sets a session cookie: HttpOnly, SameSite=Lax, Secure unless
``server.url`` is loopback http, expiring after ``SESSION_LIFETIME``.

Sessions are stateless: a session token is ``cvs_`` + a payload signed by the server's own
signing key (domain-separated from DSSE: the signed bytes start with ``SESSION_PURPOSE``),
so every replica holding ``server.signing_key`` accepts it and nothing lives in process
memory. ``/logout`` clears the cookie; a session token copied elsewhere stays valid until it
expires (at most ``SESSION_LIFETIME``) or its identity loses its ``login.email`` binding.

Browser requests authenticated by the cookie that change anything must carry the session's
CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field; ``GET /login/session``
tells it). Bearer session tokens (``conveyor login``) need none: a browser never sends them
by itself.

``conveyor login`` (a terminal) uses the same flow with a loopback redirect: ``/login`` with
``cli_port`` and ``cli_challenge`` ends by redirecting to ``http://127.0.0.1:PORT/callback``
with a one-minute exchange code that only the holder of the challenge's verifier can turn
into a session token (``POST /login/token``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import InputError
from conveyor.server.principal import LOGIN, Principal
from conveyor.server.problems import Unavailable
from conveyor.server.tokens import TokenRefused

if TYPE_CHECKING:
    from conveyor.policy.config import Config, LoginSpec
    from conveyor.server.state import ServerState

SESSION_PREFIX = "cvs_"
SESSION_COOKIE = "conveyor_session"
FLOW_COOKIE = "conveyor_login"
SESSION_PURPOSE = b"conveyor-session-v1\n"
FLOW_PURPOSE = b"conveyor-login-flow-v1\n"
EXCHANGE_PURPOSE = b"conveyor-login-exchange-v1\n"
SESSION_LIFETIME = 12 * 3600
FLOW_LIFETIME = 600
EXCHANGE_LIFETIME = 60
MAX_SESSION_TOKEN = 4096
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ID_TOKEN_ALGORITHMS = ["RS256", "ES256", "PS256"]
DISCOVERY_MAX_AGE = 3600.0

router = APIRouter(include_in_schema=False)


class LoginRefused(TokenRefused):
    """A login that failed, or a session that is invalid or expired (HTTP 401)."""


# --- signed, stateless blobs (sessions, the flow cookie, CLI exchange codes) -------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal(signer: Any, purpose: bytes, claims: dict[str, Any]) -> str:
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(payload)}.{_b64(signer.sign(purpose + payload))}"


def _open(signer: Any, purpose: bytes, blob: str, what: str) -> dict[str, Any]:
    try:
        encoded, signature = blob.split(".")
        payload = _unb64(encoded)
        good = signer.verifier().verify(_unb64(signature), purpose + payload)
        claims = json.loads(payload) if good else None
    except (ValueError, TypeError) as error:
        raise LoginRefused(f"bad or missing credentials: the {what} is malformed") from error
    if not isinstance(claims, dict):
        raise LoginRefused(f"bad or missing credentials: the {what} is not signed by this server")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires < time.time():
        raise LoginRefused(f"bad or missing credentials: the {what} has expired; sign in again")
    return claims


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison of text a sender chose: ``hmac.compare_digest`` refuses
    non-ASCII str with a TypeError (a 500), so both sides are compared as bytes."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def csrf_matches(session: str, given: str | None) -> bool:
    """Whether ``given`` is the CSRF token of ``session``: the one check every form and
    state-changing request of a browser passes (constant time, any text)."""
    return bool(given) and _same(given or "", csrf_token(session))


def csrf_token(session: str) -> str:
    """The CSRF token of a session: derived from it, so nothing is stored."""
    return _b64(hashlib.sha256(b"conveyor-csrf-v1\n" + session.encode()).digest())


# --- the provider ------------------------------------------------------------------------------


class _Discovery:
    """The provider's OpenID configuration, fetched once an hour per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, issuer: str) -> dict[str, Any]:
        from conveyor.server.oidc import fetch_json

        with self._lock:
            found = self._cached.get(issuer)
            if found is not None and time.monotonic() - found[0] < DISCOVERY_MAX_AGE:
                return found[1]
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            document = fetch_json(url, "OIDC discovery")
        except TokenRefused as error:
            raise Unavailable(f"the login provider cannot be reached: {error}") from error
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise Unavailable(f"{url} does not describe the issuer {issuer}")
        for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(needed), str):
                raise Unavailable(f"{url} names no {needed}")
        with self._lock:
            self._cached[issuer] = (time.monotonic(), document)
        return document


DISCOVERY = _Discovery()


def _login_spec(config: Config) -> LoginSpec:
    server = config.model.server
    if server is None or server.login is None:
        raise Unavailable(f"no login here: {config.path.name} sets no server.login")
    return server.login


def _server_url(config: Config) -> str:
    server = config.model.server
    if server is None or not server.url:  # config refuses server.login without server.url
        raise Unavailable("no login: server.url is not set")
    return server.url.rstrip("/")


def _secure(config: Config) -> bool:
    from conveyor.server.oidc import is_loopback

    parts = urlsplit(_server_url(config))
    return not (parts.scheme == "http" and is_loopback(parts.hostname))


def _client_secret(spec: LoginSpec) -> str:
    secret = os.environ.get(spec.client_secret_env)
    if not secret:
        raise Unavailable(f"no login: the environment variable {spec.client_secret_env} is unset")
    return secret


def _verify_id_token(id_token: str, spec: LoginSpec, nonce: str | None) -> dict[str, Any]:
    """Verify the provider's ID token; ``nonce`` None: the device flow, which has none."""
    import jwt

    from conveyor.policy.config import OidcIssuerSpec
    from conveyor.server.oidc import CACHE, MAX_TOKEN_BYTES, OidcRefused

    if len(id_token) > MAX_TOKEN_BYTES:
        raise LoginRefused("login failed: the ID token is too large")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as error:
        raise LoginRefused(f"login failed: the ID token is malformed: {error}") from error
    alg = header.get("alg")
    if alg not in _ID_TOKEN_ALGORITHMS:
        raise LoginRefused(f"login failed: the ID token's algorithm {alg!r} is not allowed")
    jwks_uri = DISCOVERY.get(spec.issuer)["jwks_uri"]
    source = OidcIssuerSpec(issuer=spec.issuer, jwks_uri=jwks_uri)
    kid = header.get("kid")
    try:
        key = CACHE.key(source, kid if isinstance(kid, str) else None, base_dir=None)
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=[alg],
            audience=spec.client_id,
            issuer=spec.issuer,
            leeway=60,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except OidcRefused as error:
        raise LoginRefused(f"login failed: {error}") from error
    except jwt.PyJWTError as error:
        raise LoginRefused(f"login failed: the ID token is invalid: {error}") from error
    if nonce is not None and (
        not isinstance(claims.get("nonce"), str) or not _same(claims["nonce"], nonce)
    ):
        raise LoginRefused("login failed: the ID token's nonce is not this login's")
    return claims


def identity_for_email(config: Config, email: str) -> str:
    wanted = email.strip().lower()
    found = [
        name
        for name, spec in config.model.identities.items()
        if spec.login is not None and spec.login.email.lower() == wanted
    ]
    if len(found) != 1:
        why = "no identity" if not found else f"more than one identity ({', '.join(found)})"
        from conveyor.server.auth import NotAllowed

        raise NotAllowed(f"not allowed: {email} signs in as {why} in {config.path.name}")
    return found[0]


def _token_request(spec: LoginSpec, body: str) -> tuple[int, Any]:
    """POST to the provider's token endpoint with the client's credentials: (status, JSON)."""
    import httpx

    provider = DISCOVERY.get(spec.issuer)
    try:
        answer = httpx.post(
            provider["token_endpoint"],
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(spec.client_id, _client_secret(spec)),
            timeout=15,
            follow_redirects=False,
        )
    except httpx.HTTPError as failure:
        raise Unavailable(
            f"the login provider's token endpoint failed: {type(failure).__name__}"
        ) from failure
    try:
        document = answer.json() if len(answer.content) <= 256 * 1024 else None
    except ValueError:
        document = None
    return answer.status_code, document


def _id_token_of(answer: Any) -> str:
    id_token = answer.get("id_token") if isinstance(answer, dict) else None
    if not isinstance(id_token, str):
        raise LoginRefused("login failed: the provider sent no ID token")
    return id_token


def _verified_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is not True:
        raise LoginRefused("login failed: the provider did not vouch for a verified email")
    return email


# --- sessions ----------------------------------------------------------------------------------


def is_session_token(token: str) -> bool:
    return token.startswith(SESSION_PREFIX)


def new_session(state: ServerState, identity: str, email: str, issuer: str, kind: str) -> str:
    now = int(time.time())
    claims = {
        "sub": identity,
        "email": email,
        "idp": issuer,
        "kind": kind,
        "iat": now,
        "exp": now + SESSION_LIFETIME,
        "jti": secrets.token_urlsafe(12),
    }
    return SESSION_PREFIX + _seal(state.signer(), SESSION_PURPOSE, claims)


def authenticate(state: ServerState, token: str, *, request_id: str | None = None) -> Principal:
    """The principal of a session token, checked against conveyor.yaml as it is now."""
    if len(token) > MAX_SESSION_TOKEN:
        raise LoginRefused("bad or missing credentials: the session token is too long")
    claims = _open(state.signer(), SESSION_PURPOSE, token[len(SESSION_PREFIX) :], "session")
    config = state.config()
    identity, email = claims.get("sub"), claims.get("email")
    spec = config.model.identities.get(identity) if isinstance(identity, str) else None
    if spec is None or spec.login is None or not isinstance(email, str) or identity is None:
        raise LoginRefused(
            f"bad or missing credentials: the session's identity {identity!r} no longer "
            "signs in by login"
        )
    if spec.login.email.lower() != email.lower():
        raise LoginRefused(f"bad or missing credentials: {email} no longer signs in as {identity}")
    roles = frozenset(str(role) for role in config.identities[str(identity)].roles)
    details = {"issuer": str(claims.get("idp", "")), "email": email}
    return Principal(str(identity), roles, LOGIN, email, request_id, details)


def from_cookie(state: ServerState, request: Request, request_id: str | None) -> Principal | None:
    """A browser's session cookie; state-changing requests must carry its CSRF token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    who = authenticate(state, cookie, request_id=request_id)
    if request.method not in SAFE_METHODS and not csrf_matches(
        cookie, request.headers.get(CSRF_HEADER)
    ):
        from conveyor.server.auth import NotAllowed

        raise NotAllowed(
            "not allowed: a browser request that changes something needs the session's "
            f"CSRF token in the {CSRF_HEADER} header (GET /login/session tells it)"
        )
    return who


# --- routes ------------------------------------------------------------------------------------


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.conveyor
    return state


def _safe_next(value: str | None) -> str:
    """Only a path on this server: never an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value[:1024]
    return "/"


@router.get("/api/v1/authentication", summary="How to authenticate here (no credentials)")
def methods(request: Request) -> dict[str, Any]:
    server = _state(request).config().model.server
    oidc = server.oidc if server else None
    device = False
    if server is not None and server.login is not None:
        try:
            device = _device_endpoint(server.login) is not None
        except Unavailable:
            device = False
    return {
        "oidc_audience": oidc.audience if oidc else None,
        "login": bool(server and server.login),
        "device": device,
    }


@router.get("/login")
def login(
    request: Request,
    next: Annotated[str | None, Query(max_length=1024)] = None,  # noqa: A002 - the usual name
    cli_port: Annotated[int | None, Query(ge=1024, le=65535)] = None,
    cli_challenge: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{43}$")] = None,
) -> Response:
    from authlib.common.security import generate_token
    from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    state = _state(request)
    config = state.config()
    spec = _login_spec(config)
    if (cli_port is None) != (cli_challenge is None):
        raise InputError("give cli_port and cli_challenge together (conveyor login)")
    provider = DISCOVERY.get(spec.issuer)
    flow = {
        "state": generate_token(32),
        "nonce": generate_token(32),
        "verifier": generate_token(64),
        "next": _safe_next(next),
        "cli_port": cli_port,
        "cli_challenge": cli_challenge,
        "exp": int(time.time()) + FLOW_LIFETIME,
    }
    target = prepare_grant_uri(
        provider["authorization_endpoint"],
        client_id=spec.client_id,
        response_type="code",
        redirect_uri=_server_url(config) + "/login/callback",
        scope="openid email",
        state=flow["state"],
        nonce=flow["nonce"],
        code_challenge=create_s256_code_challenge(flow["verifier"]),
        code_challenge_method="S256",
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        _seal(state.signer(), FLOW_PURPOSE, flow),
        max_age=FLOW_LIFETIME,
        path="/login",
        secure=_secure(config),
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/login/callback")
def callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(alias="state", max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    from authlib.oauth2.rfc6749.parameters import prepare_token_request

    server = _state(request)
    config = server.config()
    spec = _login_spec(config)
    cookie = request.cookies.get(FLOW_COOKIE)
    if not cookie:
        raise LoginRefused("login failed: no login in progress in this browser; start at /login")
    flow = _open(server.signer(), FLOW_PURPOSE, cookie, "login flow")
    if error:
        raise LoginRefused(f"login failed: the provider answered {error!r}")
    if not state or not _same(state, str(flow.get("state"))):
        raise LoginRefused("login failed: the state does not match this browser's login")
    if not code:
        raise LoginRefused("login failed: the provider sent no code")
    body = prepare_token_request(
        "authorization_code",
        code=code,
        redirect_uri=_server_url(config) + "/login/callback",
        code_verifier=flow["verifier"],
    )
    status, answer = _token_request(spec, body)
    if status != 200:
        raise LoginRefused(f"login failed: the provider refused the code ({status})")
    claims = _verify_id_token(_id_token_of(answer), spec, str(flow["nonce"]))
    email = _verified_email(claims)
    identity = identity_for_email(config, email)
    if flow.get("cli_port"):
        exchange = _seal(
            server.signer(),
            EXCHANGE_PURPOSE,
            {
                "sub": identity,
                "email": email,
                "idp": spec.issuer,
                "challenge": flow["cli_challenge"],
                "exp": int(time.time()) + EXCHANGE_LIFETIME,
            },
        )
        target = f"http://127.0.0.1:{int(flow['cli_port'])}/callback?code={exchange}"
        response: Response = RedirectResponse(target, status_code=303)
    else:
        session = new_session(server, identity, email, spec.issuer, "browser")
        response = RedirectResponse(str(flow.get("next") or "/"), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=SESSION_LIFETIME,
            path="/",
            secure=_secure(config),
            httponly=True,
            samesite="lax",
        )
    response.delete_cookie(FLOW_COOKIE, path="/login")
    return response


class _Exchange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    code: Annotated[str, Field(min_length=1, max_length=4096)]
    verifier: Annotated[str, Field(min_length=43, max_length=128)]


@router.post("/login/token")
def exchange(request: Request, body: _Exchange) -> dict[str, Any]:
    """``conveyor login``: an exchange code and its verifier become a session token."""
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    state = _state(request)
    claims = _open(state.signer(), EXCHANGE_PURPOSE, body.code, "login exchange code")
    challenge = create_s256_code_challenge(body.verifier)
    if not _same(challenge, str(claims.get("challenge"))):
        raise LoginRefused("login failed: the verifier does not match this login")
    identity = identity_for_email(state.config(), str(claims["email"]))
    token = new_session(state, identity, str(claims["email"]), str(claims["idp"]), "cli")
    return {"token": token, "identity": identity, "expires_in": SESSION_LIFETIME}


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_PURPOSE = b"conveyor-login-device-v1\n"
_PENDING = frozenset({"authorization_pending", "slow_down"})


def _device_endpoint(spec: LoginSpec) -> str | None:
    endpoint = DISCOVERY.get(spec.issuer).get("device_authorization_endpoint")
    return endpoint if isinstance(endpoint, str) else None


@router.post("/login/device")
def device_start(request: Request) -> dict[str, Any]:
    """``conveyor login``: start the provider's device-authorization flow (RFC 8628)."""
    import httpx

    from conveyor.server.problems import NotFound

    state = _state(request)
    spec = _login_spec(state.config())
    endpoint = _device_endpoint(spec)
    if endpoint is None:
        raise NotFound("the login provider offers no device flow; sign in with the browser")
    try:
        answer = httpx.post(
            endpoint,
            data={"client_id": spec.client_id, "scope": "openid email"},
            auth=(spec.client_id, _client_secret(spec)),
            timeout=15,
            follow_redirects=False,
        )
        document = answer.json()
    except (httpx.HTTPError, ValueError) as failure:
        raise Unavailable(f"the provider's device endpoint failed: {failure}") from failure
    needed = ("device_code", "user_code", "verification_uri")
    if answer.status_code != 200 or not all(isinstance(document.get(k), str) for k in needed):
        raise Unavailable(f"the provider's device endpoint answered {answer.status_code}")
    lifetime = min(int(document.get("expires_in") or 600), 1800)
    handle = _seal(
        state.signer(),
        DEVICE_PURPOSE,
        {"device_code": document["device_code"], "exp": int(time.time()) + lifetime},
    )
    complete = document.get("verification_uri_complete")
    return {
        "handle": handle,
        "user_code": document["user_code"],
        "verification_uri": document["verification_uri"],
        "verification_uri_complete": complete if isinstance(complete, str) else None,
        "interval": max(1, min(int(document.get("interval") or 5), 60)),
        "expires_in": lifetime,
    }


class _DevicePoll(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    handle: Annotated[str, Field(min_length=1, max_length=8192)]


@router.post("/login/device/token")
def device_token(request: Request, body: _DevicePoll) -> Response:
    """Poll: 202 while the person has not finished, then the session token."""
    from authlib.oauth2.rfc6749.parameters import prepare_token_request

    state = _state(request)
    config = state.config()
    spec = _login_spec(config)
    device = _open(state.signer(), DEVICE_PURPOSE, body.handle, "device login")
    status, answer = _token_request(
        spec, prepare_token_request(DEVICE_GRANT, device_code=str(device["device_code"]))
    )
    error = answer.get("error") if isinstance(answer, dict) else None
    if status != 200 and error in _PENDING:
        return JSONResponse({"status": "pending", "slow_down": error == "slow_down"}, 202)
    if status != 200:
        raise LoginRefused(f"login failed: the provider answered {str(error or status)[:100]!r}")
    email = _verified_email(_verify_id_token(_id_token_of(answer), spec, None))
    identity = identity_for_email(config, email)
    token = new_session(state, identity, email, spec.issuer, "cli")
    return JSONResponse({"token": token, "identity": identity, "expires_in": SESSION_LIFETIME})


@router.get("/login/session")
def session(request: Request) -> Response:
    """The browser's own session: who, until when, and its CSRF token."""
    state = _state(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginRefused("bad or missing credentials: not signed in; start at /login")
    who = authenticate(state, cookie)
    return JSONResponse({**who.to_dict(), "csrf_token": csrf_token(cookie)})


@router.post("/logout")
def logout(
    request: Request,
    csrf: Annotated[str | None, Form(alias="csrf_token", max_length=128)] = None,
) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and not csrf_matches(cookie, request.headers.get(CSRF_HEADER) or csrf):
        from conveyor.server.auth import NotAllowed

        raise NotAllowed("not allowed: /logout needs the session's CSRF token")
    response = HTMLResponse("<!doctype html><meta charset=utf-8><p>Signed out.</p>")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
