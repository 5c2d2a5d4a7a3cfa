"""CI identity from OIDC ID tokens: verify a job's token, map its claims to one identity.

A GitHub Actions or GitLab CI job sends its provider-signed ID token as its bearer token.
``authenticate`` verifies it with PyJWT against the issuer's JWKS (RS256 or ES256 only;
``iss`` exact; ``aud`` must contain ``server.oidc.audience``; ``exp``/``nbf``/``iat`` with at
most 60 s skew; size capped), then finds the ONE identity whose ``oidc.claims`` all match.
Every refusal is a ``TokenRefused`` (HTTP 401) whose message says why; the token itself is
never in a message or a log line.

JWKS are cached per process (``JwksCache``): fetched on first use, re-fetched when a token
names an unknown ``kid`` (at most once per ``REFRESH_INTERVAL`` per issuer) and when older
than ``MAX_AGE``; ``jwks_file`` is re-read when the file changes. Nothing here is state
another replica needs.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from conveyor.server.principal import OIDC, Principal
from conveyor.server.tokens import TokenRefused

if TYPE_CHECKING:
    from conveyor.policy.config import Config, OidcIssuerSpec

MAX_TOKEN_BYTES = 16 * 1024  # GitHub's tokens are ~1.2 KB; GitLab's smaller
MAX_JWKS_BYTES = 512 * 1024
LEEWAY_SECONDS = 60
ALGORITHMS = ("RS256", "ES256")  # never none, never HS* (a public key is no HMAC secret)
REFRESH_INTERVAL = 30.0  # seconds between re-fetches forced by an unknown kid
MAX_AGE = 3600.0  # a cached JWKS is re-fetched after this long anyway
FETCH_TIMEOUT = 10.0
# Claims recorded with the principal besides the ones an identity matched.
RECORDED_CLAIMS = (
    "sub",
    "repository",
    "project_path",
    "ref",
    "environment",
    "sha",
    "workflow_ref",
    "run_id",
    "run_attempt",
    "pipeline_id",
    "job_id",
)
_JWT_SHAPE_MIN_DOTS = 2


class OidcRefused(TokenRefused):
    """A CI OIDC token that is invalid, untrusted, or maps to no single identity (HTTP 401)."""


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (``header.payload.signature``) rather than an API token."""
    return token.startswith("eyJ") and token.count(".") == _JWT_SHAPE_MIN_DOTS


def is_loopback(host: str | None) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def fetch_json(url: str, what: str) -> Any:
    """GET a small JSON document over verified TLS (plain http only on loopback)."""
    import httpx

    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
        raise OidcRefused(f"{what} {url} is not https; refusing to trust keys fetched in clear")
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False) as http,
            http.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise OidcRefused(f"{what} {url} answered {response.status_code}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise OidcRefused(f"{what} {url} is larger than {MAX_JWKS_BYTES} bytes")
    except httpx.HTTPError as error:
        raise OidcRefused(f"cannot fetch {what} {url}: {type(error).__name__}") from error
    try:
        return json.loads(body)
    except ValueError as error:
        raise OidcRefused(f"{what} {url} is not JSON") from error


def _parse_jwks(document: Any, source: str) -> dict[str, Any]:
    """``kid`` → public key object, for the RSA and EC keys of a JWKS document."""
    import jwt

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise OidcRefused(f"{source} is not a JWKS (no 'keys' list)")
    keys: dict[str, Any] = {}
    for number, item in enumerate(document["keys"]):
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC"):
            continue  # symmetric ("oct") and unknown key types are never trusted
        if "d" in item:
            continue  # a private key published by mistake: not a verification key
        try:
            jwk = jwt.PyJWK.from_dict(item)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        kid = item.get("kid")
        keys[kid if isinstance(kid, str) else f"#{number}"] = jwk.key
    return keys


@dataclass
class _Cached:
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = 0.0
    last_forced: float = float("-inf")
    stamp: tuple[int, int] | None = None  # jwks_file: (mtime_ns, size)


class JwksCache:
    """Verification keys per issuer, kept in memory and refreshed as described above."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, _Cached] = {}
        self.fetches = 0  # how many times a JWKS was fetched or read (tests, metrics)

    def _load(self, spec: OidcIssuerSpec, base_dir: Path | None) -> tuple[dict[str, Any], Any]:
        if spec.jwks_file:
            path = Path(spec.jwks_file).expanduser()
            path = path if path.is_absolute() or base_dir is None else base_dir / path
            try:
                stat = path.stat()
                if stat.st_size > MAX_JWKS_BYTES:
                    raise OidcRefused(f"JWKS file {path} is larger than {MAX_JWKS_BYTES} bytes")
                document = json.loads(path.read_bytes())
            except OSError as error:
                raise OidcRefused(f"cannot read JWKS file {path}: {error.strerror}") from error
            except ValueError as error:
                raise OidcRefused(f"JWKS file {path} is not JSON") from error
            return _parse_jwks(document, f"JWKS file {path}"), (stat.st_mtime_ns, stat.st_size)
        uri = spec.jwks_uri
        if not uri:
            discovery = spec.issuer.rstrip("/") + "/.well-known/openid-configuration"
            found = fetch_json(discovery, "OIDC discovery")
            uri = found.get("jwks_uri") if isinstance(found, dict) else None
            if not isinstance(uri, str):
                raise OidcRefused(f"OIDC discovery {discovery} names no jwks_uri")
        return _parse_jwks(fetch_json(uri, "JWKS"), f"JWKS {uri}"), None

    def key(self, spec: OidcIssuerSpec, kid: str | None, base_dir: Path | None) -> Any:
        """The public key ``kid`` of ``spec``'s JWKS, fetching or refreshing as needed."""
        with self._lock:
            now = self._clock()
            where = (spec.issuer, spec.jwks_uri, spec.jwks_file, str(base_dir))
            cached = self._cached.setdefault(repr(where), _Cached())
            stale = not cached.keys or now - cached.fetched_at > MAX_AGE
            if spec.jwks_file and not stale:
                try:
                    path = Path(spec.jwks_file).expanduser()
                    path = path if path.is_absolute() or base_dir is None else base_dir / path
                    st = path.stat()
                    stale = (st.st_mtime_ns, st.st_size) != cached.stamp
                except OSError:
                    stale = True
            if stale:
                self._refresh(cached, spec, base_dir, now)
            found = self._pick(cached, kid)
            # A JWKS fetched by this very call is as fresh as a forced refresh would be.
            if found is None and not stale and now - cached.last_forced >= REFRESH_INTERVAL:
                cached.last_forced = now
                self._refresh(cached, spec, base_dir, now)
                found = self._pick(cached, kid)
            if found is None:
                raise OidcRefused(
                    f"the token's key id {kid!r} is not in the JWKS of {spec.issuer} "
                    "(after a refresh)"
                )
            return found

    def _refresh(
        self, cached: _Cached, spec: OidcIssuerSpec, base_dir: Path | None, now: float
    ) -> None:
        self.fetches += 1
        cached.keys, cached.stamp = self._load(spec, base_dir)
        cached.fetched_at = now

    @staticmethod
    def _pick(cached: _Cached, kid: str | None) -> Any:
        if kid is not None:
            return cached.keys.get(kid)
        only = list(cached.keys.values())
        return only[0] if len(only) == 1 else None  # no kid: only an unambiguous JWKS


CACHE = JwksCache()  # one per process: each worker fetches for itself


def _claim_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    return None


def _matches(
    wanted: Mapping[str, str], claims: Mapping[str, Any], without: Sequence[str] = ()
) -> bool:
    if any(name in claims for name in without):
        return False
    for name, pattern in wanted.items():
        value = _claim_text(claims.get(name))
        if value is None or not fnmatch.fnmatchcase(value, pattern):
            return False
    return True


def _carried(claims: Mapping[str, Any], names: set[str]) -> str:
    shown = []
    for name in [*RECORDED_CLAIMS, *sorted(names - set(RECORDED_CLAIMS))]:
        value = _claim_text(claims.get(name))
        if value is not None:
            shown.append(f"{name}={value[:200]!r}")
    return ", ".join(shown) or "no claims conveyor matches on"


def verify_token(
    token: str, config: Config, cache: JwksCache
) -> tuple[str, OidcIssuerSpec, dict[str, Any]]:
    """The issuer's name and spec and the verified claims of ``token``; or ``OidcRefused``."""
    import jwt

    oidc = config.model.server.oidc if config.model.server else None
    if oidc is None:
        raise OidcRefused("bad or missing credentials: this server accepts no OIDC tokens")
    if len(token) > MAX_TOKEN_BYTES:
        raise OidcRefused(f"the OIDC token is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise OidcRefused(f"the OIDC token is malformed: {error}") from error
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise OidcRefused(f"the OIDC token's algorithm {alg!r} is not allowed (RS256, ES256)")
    iss = unverified.get("iss")
    named = [(name, spec) for name, spec in oidc.issuers.items() if spec.issuer == iss]
    if not named:
        raise OidcRefused(f"the OIDC token's issuer {str(iss)[:200]!r} is not trusted here")
    name, spec = named[0]
    kid = header.get("kid")
    key = cache.key(spec, kid if isinstance(kid, str) else None, config.base_dir)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=oidc.audience,
            issuer=spec.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise OidcRefused("the OIDC token has expired") from error
    except jwt.ImmatureSignatureError as error:
        raise OidcRefused(f"the OIDC token is not yet valid: {error}") from error
    except jwt.InvalidAudienceError as error:
        raise OidcRefused(
            f"the OIDC token's audience is not {oidc.audience!r} (server.oidc.audience)"
        ) from error
    except jwt.InvalidSignatureError as error:
        raise OidcRefused("the OIDC token's signature does not verify") from error
    except (jwt.PyJWTError, ValueError, TypeError) as error:
        raise OidcRefused(f"the OIDC token is invalid: {error}") from error
    return name, spec, claims


def authenticate(
    token: str, config: Config, cache: JwksCache, *, request_id: str | None = None
) -> Principal:
    """The principal of a CI job's OIDC token: the one identity its claims match."""
    name, spec, claims = verify_token(token, config, cache)
    candidates = [
        (identity, binding.oidc)
        for identity, binding in config.model.identities.items()
        if binding.oidc is not None and binding.oidc.issuer == name
    ]
    names = {claim for _, wanted in candidates if wanted for claim in wanted.claims}
    matched = [
        (identity, wanted)
        for identity, wanted in candidates
        if wanted is not None and _matches(wanted.claims, claims, wanted.without)
    ]
    if not matched:
        raise OidcRefused(
            f"the OIDC token of {name} matches no identity in {config.path.name}; it carried: "
            f"{_carried(claims, names)}"
        )
    if len(matched) > 1:
        both = ", ".join(identity for identity, _ in matched)
        raise OidcRefused(
            f"the OIDC token of {name} matches more than one identity ({both}); make their "
            f"oidc.claims exclusive. It carried: {_carried(claims, names)}"
        )
    identity_name, wanted = matched[0]
    identity = config.identities[identity_name]
    roles = frozenset(str(role) for role in identity.roles)
    recorded = {
        claim: text
        for claim in [*wanted.claims, *RECORDED_CLAIMS]
        if (text := _claim_text(claims.get(claim))) is not None
    }
    details = {"issuer": spec.issuer, "provider": name, "claims": recorded}
    return Principal(identity_name, roles, OIDC, name, request_id, details)


def check_commit(principal: Principal, commit: str) -> None:
    """``record build``: a CI token's ``sha`` claim, when present, must be ``--commit``."""
    if principal.method != OIDC or principal.details is None:
        return
    sha = principal.details.get("claims", {}).get("sha")
    if sha is not None and sha.lower() != commit.lower():
        from conveyor.server.auth import NotAllowed

        raise NotAllowed(
            f"not allowed: the OIDC token of {principal.identity} was issued for commit {sha}, "
            f"not {commit}"
        )
