"""Registry authentication: challenges, Docker credentials, Bearer tokens.

- ``parse_www_authenticate`` reads ``WWW-Authenticate`` (Basic, Bearer; several challenges;
  quoted values with commas and escapes).
- ``DockerCredentials`` reads ``$DOCKER_CONFIG/config.json`` (or ``~/.docker/config.json``):
  ``auths`` (``auth`` base64, ``username``/``password``, ``identitytoken``), ``credHelpers``
  and ``credsStore`` (``docker-credential-NAME get``).
- ``Authenticator`` turns a registry's challenge into an ``Authorization`` header, fetching
  Bearer tokens per (registry, scope) and caching them until they expire. Thread-safe.

Credentials only ever go to the registry itself or, for the token request, to the realm the
registry names; the client strips them from requests to any other host.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from conveyor.errors import AuthenticationError, ConfigError, RegistryError
from conveyor.registry.transport import redact, register_secret

log = logging.getLogger("conveyor.registry")

DOCKER_HUB = "docker.io"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
DEFAULT_TOKEN_LIFETIME = 60.0
HELPER_TIMEOUT = 30.0
TOKEN_BODY_LIMIT = 1 << 20


# --- challenges ------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer", ...
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Every challenge in a ``WWW-Authenticate`` value (RFC 7235 grammar, leniently)."""
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and header[i] not in " \t,=":
            i += 1
        token = header[start:i]
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and current is not None:
            # auth-param of the current challenge
            i = j + 1
            while i < n and header[i] in " \t":
                i += 1
            value, i = _param_value(header, i)
            current.params[token.lower()] = value  # type: ignore[index]
        elif j < n and header[j] == "=":
            # a parameter without a scheme before it: malformed, skip the value
            _, i = _param_value(header, j + 1)
        else:
            current = Challenge(token.lower(), {})
            challenges.append(current)
            i = j
    return challenges


def _param_value(text: str, i: int) -> tuple[str, int]:
    n = len(text)
    if i < n and text[i] == '"':
        out: list[str] = []
        i += 1
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            out.append(text[i])
            i += 1
        return "".join(out), i + 1
    start = i
    while i < n and text[i] not in ", \t":
        i += 1
    return text[start:i], i


# --- credentials -----------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""  # where they came from, for messages ("config.json auths", "helper x")

    def __post_init__(self) -> None:
        register_secret(self.password)
        register_secret(self.identity_token)
        if self.username is not None and self.password:
            register_secret(basic_value(self.username, self.password))

    def basic_header(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        return "Basic " + basic_value(self.username, self.password)


def basic_value(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def config_key_host(key: str) -> str:
    """The host[:port] an ``auths`` key names (keys may be URLs with paths)."""
    text = key.strip()
    if "://" in text:
        text = urlsplit(text).netloc or text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    return DOCKER_HUB if text in _DOCKER_HUB_ALIASES else text


def server_url(registry: str) -> str:
    """The server URL Docker uses as key and sends to credential helpers."""
    return DOCKER_HUB_KEY if config_key_host(registry) == DOCKER_HUB else registry


_MAX_DOCKER_CONFIG_BYTES = 4 * 1024 * 1024


class DockerCredentials:
    """Credentials from a Docker ``config.json``; helpers are run at most once per registry."""

    def __init__(self, config_dir: Path | None = None) -> None:
        if config_dir is None:
            env = os.environ.get("DOCKER_CONFIG")
            config_dir = Path(env) if env else Path.home() / ".docker"
        self.path = config_dir / "config.json"
        self._config: dict[str, object] | None = None
        self._cache: dict[str, Credentials | None] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, object]:
        if self._config is None:
            from conveyor.files import UnreadableFile, read_bounded

            try:
                text = read_bounded(self.path, max_bytes=_MAX_DOCKER_CONFIG_BYTES).decode(
                    "utf-8", errors="replace"
                )
            except UnreadableFile as exc:
                if not self.path.exists() and not self.path.is_symlink():
                    self._config = {}
                    return self._config
                raise ConfigError(f"cannot read {self.path}: {exc.reason}") from exc
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise ConfigError(
                    f"{self.path} is not valid JSON (line {getattr(exc, 'lineno', '?')}); "
                    "fix or remove it"
                ) from exc
            if not isinstance(doc, dict):
                raise ConfigError(f"{self.path} must hold a JSON object")
            self._config = doc
        return self._config

    def get(self, registry: str) -> Credentials | None:
        host = config_key_host(registry)
        with self._lock:
            if host in self._cache:
                return self._cache[host]
            found = self._lookup(host)
            self._cache[host] = found
            return found

    def _lookup(self, host: str) -> Credentials | None:
        config = self._load()
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if isinstance(helper, str) and config_key_host(key) == host:
                    return run_credential_helper(helper, server_url(key))
        auths = config.get("auths")
        if isinstance(auths, dict):
            for key, entry in auths.items():
                if config_key_host(key) == host and isinstance(entry, dict):
                    creds = self._from_auth_entry(key, entry)
                    if creds is not None:
                        return creds
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return run_credential_helper(store, server_url(host))
        return None

    def _from_auth_entry(self, key: str, entry: dict[str, object]) -> Credentials | None:
        source = f"{self.path} auths[{key!r}]"
        identity = entry.get("identitytoken")
        identity_token = identity if isinstance(identity, str) and identity else None
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                decoded = base64.b64decode(auth, validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ConfigError(f"{source}: 'auth' is not base64 of user:password") from exc
            user, sep, password = decoded.partition(":")
            if not sep:
                raise ConfigError(f"{source}: 'auth' is not base64 of user:password")
            return Credentials(user, password, identity_token, source)
        user_value = entry.get("username")
        password_value = entry.get("password")
        if isinstance(user_value, str) and isinstance(password_value, str):
            return Credentials(user_value, password_value, identity_token, source)
        if identity_token:
            name = user_value if isinstance(user_value, str) else None
            return Credentials(name, None, identity_token, source)
        return None


def run_credential_helper(name: str, server: str) -> Credentials | None:
    """``docker-credential-NAME get`` with the server URL on stdin; None when it has none."""
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise ConfigError(
            f"the Docker config names credential helper {name!r} but {program} is not on "
            "PATH; install it or remove it from config.json"
        )
    try:
        done = subprocess.run(
            [path, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AuthenticationError(
            f"credential helper {program} did not answer within {HELPER_TIMEOUT:.0f} s"
        ) from exc
    except OSError as exc:
        raise AuthenticationError(
            f"cannot run credential helper {program}: {exc.strerror}"
        ) from exc
    if done.returncode != 0:
        said = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
        if "credentials not found" in said.lower():
            return None
        raise AuthenticationError(
            f"credential helper {program} failed for {server} (exit {done.returncode})"
        )
    try:
        doc = json.loads(done.stdout)
        username = doc["Username"]
        secret = doc["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthenticationError(
            f"credential helper {program} answered something other than the expected JSON"
        ) from exc
    if not isinstance(username, str) or not isinstance(secret, str):
        raise AuthenticationError(f"credential helper {program} answered non-string fields")
    source = f"credential helper {program}"
    if username == "<token>":
        return Credentials(None, None, secret, source)
    return Credentials(username, secret, None, source)


# --- tokens ----------------------------------------------------------------------------

Scopes = tuple[str, ...]


@dataclass(frozen=True)
class TokenRequest:
    """What ``Authenticator`` asks its fetcher to send to a token realm."""

    method: str  # GET (docker token) or POST (OAuth2 refresh token)
    url: str
    headers: Mapping[str, str]
    form: bytes | None = None


# status, content type, body
TokenFetcher = Callable[[TokenRequest], tuple[int, str, bytes]]


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Authorization headers per registry and scope. Thread-safe."""

    def __init__(
        self,
        credentials: DockerCredentials,
        fetch: TokenFetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
        insecure: Callable[[str], bool] = lambda host: False,
    ) -> None:
        self._credentials = credentials
        self._fetch = fetch
        self._clock = clock
        self._insecure = insecure
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, Scopes], _Token] = {}
        self._lock = threading.RLock()

    def credentials(self, registry: str) -> Credentials | None:
        return self._credentials.get(registry)

    def authorization(self, registry: str, scopes: Scopes) -> dict[str, str]:
        """Headers for a request to ``registry`` needing ``scopes``; {} before any challenge."""
        with self._lock:
            challenge = self._challenges.get(registry)
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = self.credentials(registry)
            header = creds.basic_header() if creds else None
            return {"Authorization": header} if header else {}
        token = self._token(registry, challenge, scopes, refresh=False)
        return {"Authorization": f"Bearer {token}"}

    def challenged(self, registry: str, header: str | None, scopes: Scopes) -> None:
        """A 401 arrived: remember the challenge and get fresh credentials for ``scopes``."""
        challenges = parse_www_authenticate(header or "")
        by_scheme = {c.scheme: c for c in challenges}
        chosen = by_scheme.get("bearer") or by_scheme.get("basic")
        if chosen is None:
            offered = ", ".join(sorted(by_scheme)) or "none"
            raise AuthenticationError(
                f"{registry} asks for authentication with an unsupported scheme ({offered}); "
                "conveyor supports Basic and Bearer"
            )
        with self._lock:
            self._challenges[registry] = chosen
        if chosen.scheme == "basic":
            if self.credentials(registry) is None:
                raise AuthenticationError(
                    f"{registry} requires authentication and no credentials were found for it; "
                    f"run 'docker login {registry}' or add it to config.json"
                )
            return
        extra = chosen.params.get("scope")
        wanted = tuple(sorted(set(scopes) | set(extra.split() if extra else ())))
        self._token(registry, chosen, scopes, refresh=True, request_scopes=wanted)

    def _token(
        self,
        registry: str,
        challenge: Challenge,
        scopes: Scopes,
        *,
        refresh: bool,
        request_scopes: Scopes | None = None,
    ) -> str:
        key = (registry, scopes)
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not refresh and cached.expires_at > self._clock():
                return cached.value
            token = self._fetch_token(registry, challenge, request_scopes or scopes)
            self._tokens[key] = token
            return token.value

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: Scopes) -> _Token:
        realm = challenge.realm
        if not realm:
            raise AuthenticationError(f"{registry} sent a Bearer challenge without a realm")
        parts = urlsplit(realm)
        if parts.scheme == "http" and not self._insecure(parts.netloc):
            raise AuthenticationError(
                f"{registry} names a token service over plain HTTP ({redact(realm)}); "
                "refusing to authenticate there (add it with --insecure-registry if intended)"
            )
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AuthenticationError(f"{registry} names an unusable token realm")
        service = challenge.params.get("service")
        creds = self.credentials(registry)
        headers = {"Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form: list[tuple[str, str]] = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token),
                ("client_id", "conveyor"),
            ]
            if service:
                form.append(("service", service))
            form.extend(("scope", s) for s in scopes)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = TokenRequest("POST", realm, headers, urlencode(form).encode())
        else:
            query: list[tuple[str, str]] = []
            if service:
                query.append(("service", service))
            query.extend(("scope", s) for s in scopes)
            basic = creds.basic_header() if creds else None
            if basic:
                headers["Authorization"] = basic
            sep = "&" if "?" in realm else "?"
            url = realm + (sep + urlencode(query) if query else "")
            request = TokenRequest("GET", url, headers)
        status, content_type, body = self._fetch(request)
        if status in (401, 403):
            who = f"the credentials from {creds.source}" if creds else "anonymous access"
            raise AuthenticationError(
                f"the token service of {registry} refused {who} (HTTP {status}); check "
                f"'docker login {registry}'",
            )
        if status != 200:
            raise RegistryError(
                f"the token service of {registry} answered HTTP {status}",
                status=status,
                retryable=status >= 500,
            )
        try:
            doc = json.loads(body[:TOKEN_BODY_LIMIT])
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuthenticationError(
                f"the token service of {registry} answered something other than JSON "
                f"({content_type or 'no content type'})"
            ) from exc
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"the token service of {registry} answered without a token")
        register_secret(value)
        lifetime = doc.get("expires_in")
        seconds = (
            float(lifetime)
            if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0
            else DEFAULT_TOKEN_LIFETIME
        )
        margin = min(5.0, seconds / 10)
        log.debug("token for %s scopes=%s valid %.0f s", registry, " ".join(scopes), seconds)
        return _Token(value, self._clock() + seconds - margin)

    def forget(self, registry: str, scopes: Scopes) -> None:
        with self._lock:
            self._tokens.pop((registry, scopes), None)
