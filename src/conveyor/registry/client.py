"""OCI Distribution client: manifests, blobs, tags and referrers, every byte verified.

``RegistryClient`` owns the connections, credentials and retry policy;
``client.repository(ref)`` gives a ``RegistryRepository``, which implements
``conveyor.oci.store.Repository``.

Guarantees:
- every manifest and blob received is hashed and compared with the digest asked for
  (``DigestMismatch`` otherwise); fetched by tag, a manifest's digest is the hash of its bytes.
  ``Docker-Content-Digest`` is only ever a hint;
- manifests are read with a hard cap (``MAX_MANIFEST_BYTES``): a larger body is not loaded;
- credentials never reach another host: a redirect to another host (blob storage) is
  followed without ``Authorization``;
- plain HTTP only for the hosts named insecure; everything else is HTTPS with TLS verified;
- one overall deadline per client (``CONVEYOR_DEADLINE``, default 600 s) that no slow or
  silent registry can stretch, and a minimum transfer rate for blob bodies.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from conveyor import __version__
from conveyor.errors import (
    AuthenticationError,
    ConveyorError,
    ManifestError,
    NotFoundError,
    RegistryError,
)
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest, SizeMismatch, sized_chunks, verified_chunks, verify_bytes
from conveyor.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageIndex,
    parse_manifest,
)
from conveyor.oci.name import Reference
from conveyor.oci.referrers import FallbackWrites, add_all_to_fallback, read_fallback
from conveyor.oci.store import RawManifest, Repository
from conveyor.registry.blobio import BlobIO, HttpxBlobIO, StdlibSender, transient_chunks
from conveyor.registry.transport import (
    DEFAULT_MIN_RATE,
    DEFAULT_RATE_WINDOW,
    ERROR_BODY_LIMIT,
    IDEMPOTENT_METHODS,
    REDIRECT_STATUSES,
    RETRYABLE_STATUSES,
    Body,
    Deadline,
    HttpxSender,
    RateFloor,
    RetryPolicy,
    Sender,
    WireResponse,
    deadline_from_environment,
    error_from_response,
    html_error,
    looks_like_html,
    make_httpx_client,
    oci_error,
    raise_for_response,
    redact,
)

if TYPE_CHECKING:
    import httpx

    from conveyor.registry.auth import Authenticator, Scopes, TokenRequest

__all__ = ["RegistryClient", "RegistryRepository"]

log = logging.getLogger("conveyor.registry")

INSECURE_ENV = "CONVEYOR_INSECURE_REGISTRIES"
DOCKER_HUB_API = "registry-1.docker.io"
MAX_REDIRECTS = 5
MAX_TAG_PAGES = 10_000
TAGS_BODY_LIMIT = 16 * 1024 * 1024
MANIFEST_READ_CHUNK = 64 * 1024
UPLOAD_CONTENT_TYPE = "application/octet-stream"
SEEN_MANIFEST_BYTES = 8 * 1024 * 1024  # manifests a client remembers by digest, at most
SEEN_ENTRIES = 8192  # blobs and stored manifests it remembers, at most


def api_host(registry: str) -> str:
    """The host that serves the API of ``registry`` (Docker Hub's differs from its name)."""
    return DOCKER_HUB_API if registry in ("docker.io", "index.docker.io") else registry


def _host_key(netloc: str) -> str:
    return netloc.lower()


class _Seen:
    """What one client has learnt this command of content-addressed things, so it never
    asks twice: manifests read by digest or tag (their bytes hashed when they arrived),
    the blobs a repository holds, whether a manifest stored by digest was indexed as a
    referrer (``OCI-Subject``), and the registries without a referrers API.

    Keyed by repository URL. Tags are never remembered, and ``has_manifest`` always asks:
    they can change. A digest names the same bytes forever, so a manifest read once is
    that manifest. Bounded (oldest forgotten first); thread-safe (a copy runs threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._manifests: dict[tuple[str, Digest], RawManifest] = {}
        self._manifest_bytes = 0
        self._blobs: dict[tuple[str, Digest], int | None] = {}  # size, None: not known
        self._stored: dict[tuple[str, Digest], bool] = {}  # True: the registry indexed it
        self._without_referrers_api: set[str] = set()
        self._asking: dict[tuple[str, Digest], threading.Event] = {}  # blobs being mounted

    def manifest(self, repository: str, digest: Digest) -> RawManifest | None:
        with self._lock:
            return self._manifests.get((repository, digest))

    def add_manifest(self, repository: str, manifest: RawManifest) -> None:
        key = (repository, manifest.digest)
        with self._lock:
            if key in self._manifests or len(manifest.data) > SEEN_MANIFEST_BYTES:
                return
            self._manifests[key] = manifest
            self._manifest_bytes += len(manifest.data)
            while self._manifest_bytes > SEEN_MANIFEST_BYTES:
                oldest = next(iter(self._manifests))
                self._manifest_bytes -= len(self._manifests.pop(oldest).data)

    def forget_manifest(self, repository: str, digest: Digest) -> None:
        with self._lock:
            dropped = self._manifests.pop((repository, digest), None)
            if dropped is not None:
                self._manifest_bytes -= len(dropped.data)
            self._stored.pop((repository, digest), None)

    def blob(self, repository: str, digest: Digest) -> tuple[bool, int | None]:
        """(held, size): whether the repository is known to hold the blob, and its size
        when that is known too."""
        with self._lock:
            key = (repository, digest)
            return key in self._blobs, self._blobs.get(key)

    def add_blob(self, repository: str, digest: Digest, size: int | None) -> None:
        with self._lock:
            key = (repository, digest)
            if size is None and self._blobs.get(key) is not None:
                return
            self._blobs[key] = size
            _bound(self._blobs)

    def stored(self, repository: str, digest: Digest) -> bool | None:
        """For a manifest this client stored by digest: was it indexed (None: not stored)."""
        with self._lock:
            return self._stored.get((repository, digest))

    def add_stored(self, repository: str, digest: Digest, *, indexed: bool) -> None:
        with self._lock:
            self._stored[(repository, digest)] = indexed
            _bound(self._stored)

    def ask(self, repository: str, digest: Digest) -> threading.Event | None:
        """None: the caller asks the registry about the blob (then calls ``answered``);
        else the event another thread sets once it has the answer."""
        with self._lock:
            other = self._asking.get((repository, digest))
            if other is None:
                self._asking[(repository, digest)] = threading.Event()
            return other

    def answered(self, repository: str, digest: Digest) -> None:
        with self._lock:
            event = self._asking.pop((repository, digest), None)
        if event is not None:
            event.set()

    def has_referrers_api(self, host: str) -> bool:
        with self._lock:
            return host not in self._without_referrers_api

    def no_referrers_api(self, host: str) -> None:
        with self._lock:
            self._without_referrers_api.add(host)


def _bound(entries: dict[Any, Any]) -> None:
    while len(entries) > SEEN_ENTRIES:
        del entries[next(iter(entries))]


class _Session:
    """One place for auth, redirects, retries and the deadline, over any ``Sender``."""

    def __init__(
        self,
        *,
        api: Sender,
        blobs: BlobIO,
        docker_config_dir: Path | None,
        policy: RetryPolicy,
        deadline: Deadline,
        rate_floor: RateFloor,
        insecure: frozenset[str],
        user_agent: str,
    ) -> None:
        self.api = api
        self.blobs = blobs
        self.policy = policy
        self.deadline = deadline
        self.rate_floor = rate_floor
        self.insecure = insecure
        self.user_agent = user_agent
        self.seen = _Seen()
        self._docker_config_dir = docker_config_dir
        self._auth: Authenticator | None = None
        self._auth_lock = threading.Lock()

    @property
    def auth(self) -> Authenticator:
        """Credentials and tokens, from the first challenge on: a registry that never asks
        (a loopback one) never loads them, nor the auth module."""
        with self._auth_lock:
            if self._auth is None:
                from conveyor.registry.auth import Authenticator, DockerCredentials

                self._auth = Authenticator(
                    DockerCredentials(self._docker_config_dir),
                    self._fetch_token,
                    clock=self.policy.clock,
                    insecure=self.is_insecure,
                )
            return self._auth

    def is_insecure(self, host: str) -> bool:
        return _host_key(host) in self.insecure

    def base_url(self, registry: str) -> str:
        host = api_host(registry)
        scheme = "http" if self.is_insecure(host) or self.is_insecure(registry) else "https"
        return f"{scheme}://{host}"

    def _fetch_token(self, request: TokenRequest) -> tuple[int, str, bytes]:
        response = self._with_retries(
            request.method, request.url, dict(request.headers), request.form, self.api
        )
        try:
            return response.status, response.content_type, response.read_capped(1 << 20)
        finally:
            response.close()

    def _with_retries(
        self, method: str, url: str, headers: dict[str, str], body: Body, sender: Sender
    ) -> WireResponse:
        """Send with retries (for bodies that can be replayed); no auth, no redirects.

        Retried: network failures (not TLS refusals), 429/502/503/504, and 500 for
        idempotent methods; never past ``max_attempts`` or the deadline. When it gives up
        after more than one attempt, the error says so."""
        replayable = body is None or isinstance(body, bytes)
        attempt = 0
        while True:
            attempt += 1
            self.deadline.check(method, url)
            try:
                response = sender.send(method, url, headers, body)
            except RegistryError as exc:
                if not (exc.retryable and replayable):
                    raise
                delay = self._delay(attempt, None)
                if delay is None:
                    raise _gave_up(exc, attempt) from exc
                self._pause(method, url, attempt, delay)
                continue
            status = response.status
            if replayable and (
                status in RETRYABLE_STATUSES or (status == 500 and method in IDEMPOTENT_METHODS)
            ):
                retry_after = response.header("retry-after")
                delay = self._delay(attempt, retry_after)
                if delay is not None:
                    response.close()
                    self._pause(method, url, attempt, delay)
                    continue
                if attempt > 1:
                    raise _gave_up(_error_of(method, response), attempt)
            return response

    def _delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none left."""
        if attempt >= self.policy.max_attempts:
            return None
        delay = self.policy.delay(attempt, retry_after)
        return delay if delay < self.deadline.remaining() else None

    def _pause(self, method: str, url: str, attempt: int, delay: float) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "retrying %s %s in %.2f s (attempt %d of %d)",
                method,
                redact(url),
                delay,
                attempt + 1,
                self.policy.max_attempts,
            )
        self.policy.sleep(delay)

    def request(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        scopes: Scopes,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        sender: Sender | None = None,
        follow_redirects: bool = True,
    ) -> WireResponse:
        """Send a request to ``registry`` with auth, retries and safe redirects.

        The answer may have any status; callers decide what is an error. A 401 after fresh
        credentials raises ``AuthenticationError``.
        """
        sender = sender or self.api
        origin = _host_key(urlsplit(url).netloc)
        replayable = body is None or isinstance(body, bytes)
        reauthenticated = False
        redirects = 0
        current = url
        while True:
            same_host = _host_key(urlsplit(current).netloc) == origin
            sent = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
            sent.update(headers or {})
            if not same_host:
                sent.pop("Authorization", None)
            elif self._auth is not None:  # before a challenge there is nothing to send
                sent.update(self._auth.authorization(registry, scopes))
            response = self._with_retries(method, current, sent, body, sender)
            status = response.status
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s -> %d", method, redact(current), status)
            if status == 401 and same_host:
                challenge = response.header("www-authenticate")
                response.close()
                if reauthenticated or not replayable:
                    raise self._refused(registry, method, current)
                self.auth.challenged(registry, challenge, scopes)
                reauthenticated = True
                continue
            if status in REDIRECT_STATUSES and follow_redirects and method in ("GET", "HEAD"):
                location = response.header("location")
                response.close()
                redirects += 1
                if not location or redirects > MAX_REDIRECTS:
                    raise RegistryError(
                        f"{method} {redact(url)}: too many or empty redirects",
                        status=status,
                        url=redact(url),
                    )
                current = self._redirect_target(current, location)
                continue
            return response

    def _redirect_target(self, current: str, location: str) -> str:
        target = urljoin(current, location)
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryError(f"refusing a redirect to {redact(target)}: not an HTTP URL")
        if (
            parts.scheme == "http"
            and urlsplit(current).scheme == "https"
            and not self.is_insecure(parts.netloc)
        ):
            raise RegistryError(
                f"refusing a redirect from HTTPS to plain HTTP ({redact(target)})",
                url=redact(target),
            )
        return target

    def _refused(self, registry: str, method: str, url: str) -> AuthenticationError:
        creds = self.auth.credentials(registry)
        if creds is None:
            what = (
                f"no credentials were found for {registry} (run 'docker login {registry}'), "
                "or the repository does not exist or is private"
            )
        else:
            what = (
                f"the credentials from {creds.source} were refused; check them "
                f"('docker login {registry}')"
            )
        return AuthenticationError(
            f"{method} {redact(url)}: HTTP 401 Unauthorized after authenticating: {what}",
            status=401,
            url=redact(url),
        )

    def close(self) -> None:
        self.api.close()
        if self.blobs is not self.api:
            self.blobs.close()
        self.deadline.close()


def _error_of(method: str, response: WireResponse) -> RegistryError:
    try:
        body = response.read_capped(ERROR_BODY_LIMIT) if method != "HEAD" else b""
    except RegistryError:
        body = b""
    finally:
        response.close()
    return error_from_response(method, response.url, response.status, response.content_type, body)


def _gave_up(error: RegistryError, attempts: int) -> RegistryError:
    if attempts <= 1:
        return error
    return RegistryError(
        f"{error} (gave up after {attempts} attempts)",
        status=error.status,
        code=error.code,
        url=error.url,
    )


class RegistryClient:
    """Connections, credentials and retry policy shared by the repositories it hands out."""

    def __init__(
        self,
        *,
        insecure_registries: Iterable[str] = (),
        docker_config_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        deadline: float | None = None,
        max_attempts: int = 6,
        user_agent: str = f"conveyor/{__version__}",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 120.0,
        min_rate: float = DEFAULT_MIN_RATE,
        rate_window: float = DEFAULT_RATE_WINDOW,
    ) -> None:
        """``deadline``: seconds for everything this client sends (default
        ``CONVEYOR_DEADLINE``, else 600), counted from now; ``min_rate`` (bytes/s, 0 for
        none) averaged over ``rate_window`` seconds is the slowest a blob body may move."""
        insecure = {_host_key(h.strip()) for h in insecure_registries if h.strip()}
        insecure |= {
            _host_key(h.strip()) for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()
        }
        self.insecure_registries = frozenset(insecure)
        seconds = deadline_from_environment() if deadline is None else deadline
        self.deadline = Deadline(seconds, clock=clock)
        api: Sender
        blobs: BlobIO
        self._http: httpx.Client | None = None
        if transport is not None or _proxies_configured():
            self._http = make_httpx_client(transport, timeout=timeout)
            api = HttpxSender(self._http, deadline=self.deadline, timeout=timeout)
            blobs = HttpxBlobIO(self._http, deadline=self.deadline, timeout=timeout)
        else:
            # http.client is leaner per request, and imports in a fraction of httpx's time.
            api = blobs = StdlibSender(deadline=self.deadline, timeout=timeout)
        policy = RetryPolicy(max_attempts=max_attempts, sleep=sleep, clock=clock)
        self._session = _Session(
            api=api,
            blobs=blobs,
            docker_config_dir=docker_config_dir,
            policy=policy,
            deadline=self.deadline,
            rate_floor=RateFloor(min_rate, rate_window),
            insecure=self.insecure_registries,
            user_agent=user_agent,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def ping(self, registry: str) -> None:
        """Check that ``registry`` speaks the distribution API and accepts our credentials."""
        url = self._session.base_url(registry) + "/v2/"
        response = self._session.request("GET", url, registry=registry, scopes=())
        try:
            body = response.read_capped(64 * 1024)
        finally:
            response.close()
        if looks_like_html(response.content_type, body):
            raise html_error("GET", url, response.status)
        if response.status != 200:
            raise error_from_response("GET", url, response.status, response.content_type, body)

    def repository(self, ref: Reference) -> RegistryRepository:
        return RegistryRepository(self._session, ref.registry, ref.repository)


_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


def _proxies_configured() -> bool:
    # The http.client path does not implement proxies; httpx honours the proxy variables (the
    # environment is where urllib.request.getproxies looks on Linux, without its import).
    return any(v.strip() for k, v in os.environ.items() if k.lower() in _PROXY_VARIABLES)


class RegistryRepository:
    """One repository on one registry. Implements ``conveyor.oci.store.Repository``."""

    def __init__(self, session: _Session, registry: str, name: str) -> None:
        self._session = session
        self.registry = registry
        self.name = name
        self._base = session.base_url(registry) + "/v2/" + name
        self._seen = session.seen
        self._fallback = FallbackWrites()  # this writer's referrers-index updates here

    def __repr__(self) -> str:
        return f"RegistryRepository({self.display_name!r})"

    @property
    def display_name(self) -> str:
        return f"{self.registry}/{self.name}"

    # --- plumbing ----------------------------------------------------------------------

    @property
    def _pull(self) -> Scopes:
        return (f"repository:{self.name}:pull",)

    @property
    def _push(self) -> Scopes:
        return (f"repository:{self.name}:pull,push",)

    def _request(
        self,
        method: str,
        url: str,
        scopes: Scopes,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        sender: Sender | None = None,
    ) -> WireResponse:
        return self._session.request(
            method,
            url,
            registry=self.registry,
            scopes=scopes,
            headers=headers,
            body=body,
            sender=sender,
        )

    def _expect(
        self, method: str, response: WireResponse, ok: Iterable[int], *, what: str = ""
    ) -> None:
        if response.status in ok:
            return
        if response.status == 404:
            body = b"" if method == "HEAD" else response.read_capped(64 * 1024)
            response.close()
            error = error_from_response(method, response.url, 404, response.content_type, body)
            if looks_like_html(response.content_type, body):
                raise error
            raise NotFoundError(
                f"{what or 'content'} not found in {self.display_name}"
                + (f" ({error.code})" if error.code else ""),
                status=404,
                code=error.code,
                url=error.url,
            )
        raise_for_response(method, response)

    def _absolute(self, location: str | None, base: str) -> str:
        if not location:
            raise RegistryError(
                f"{self.display_name}: the registry started an upload without a Location header"
            )
        target = urljoin(base, location)
        if _host_key(urlsplit(target).netloc) != _host_key(urlsplit(base).netloc):
            # Upload sessions on another host would need our credentials: refuse.
            raise RegistryError(
                f"{self.display_name}: the registry sent an upload location on another host "
                f"({redact(target)}); refusing to send credentials there"
            )
        return target

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        sep = "&" if "?" in url else "?"
        return url + sep + urlencode(params, quote_via=quote)

    # --- manifests ---------------------------------------------------------------------

    def get_manifest(self, reference: str | Digest) -> RawManifest:
        expected = _as_digest(reference)
        if expected is not None:
            seen = self._seen.manifest(self._base, expected)
            if seen is not None:
                return seen
        ref_text = str(reference)
        url = f"{self._base}/manifests/{ref_text}"
        response = self._request("GET", url, self._pull, headers={"Accept": mt.ACCEPT_MANIFESTS})
        self._expect("GET", response, (200,), what=f"manifest {ref_text}")
        try:
            declared = response.header("content-length")
            if declared and declared.isdigit() and int(declared) > MAX_MANIFEST_BYTES:
                raise ManifestError(
                    f"manifest {ref_text} in {self.display_name} is {declared} bytes, over the "
                    f"{MAX_MANIFEST_BYTES}-byte limit; refusing it"
                )
            data = _read_limited(response, MAX_MANIFEST_BYTES)
        finally:
            response.close()
        content_type = response.content_type
        if looks_like_html(content_type, data):
            raise html_error("GET", url, response.status)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest {ref_text} in {self.display_name} is over the "
                f"{MAX_MANIFEST_BYTES}-byte limit; refusing it (stopped reading)"
            )
        where = f"{self.display_name}@{ref_text}"
        if expected is not None:
            verify_bytes(data, expected, where=where)
            digest = expected
        else:
            digest = Digest.of(data)
        parsed = parse_manifest(data, content_type=content_type or None)
        raw = RawManifest(data=data, media_type=parsed.media_type, digest=digest)
        self._seen.add_manifest(self._base, raw)
        return raw

    resolve = get_manifest

    def head_manifest(
        self, reference: str | Digest
    ) -> tuple[Digest | None, str | None, int | None]:
        url = f"{self._base}/manifests/{reference}"
        response = self._request("HEAD", url, self._pull, headers={"Accept": mt.ACCEPT_MANIFESTS})
        self._expect("HEAD", response, (200,), what=f"manifest {reference}")
        response.close()
        if looks_like_html(response.content_type, b""):
            raise html_error("HEAD", url, response.status)
        hint: Digest | None = None
        try:
            header = response.header("docker-content-digest")
            hint = Digest.parse(header.strip()) if header else None
        except ConveyorError:
            hint = None
        length = response.header("content-length")
        size = int(length) if length and length.isdigit() else None
        return hint, response.content_type or None, size

    def has_manifest(self, digest: Digest) -> bool:
        try:
            self.head_manifest(digest)
        except NotFoundError:
            return False
        return True

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        self._put_manifest(manifest, tag=tag)

    def _put_manifest(self, manifest: RawManifest, *, tag: str | None) -> Mapping[str, str]:
        verify_bytes(manifest.data, manifest.digest, where="manifest to upload")
        target = tag if tag is not None else str(manifest.digest)
        url = f"{self._base}/manifests/{target}"
        response = self._request(
            "PUT",
            url,
            self._push,
            headers={"Content-Type": manifest.media_type},
            body=manifest.data,
        )
        self._expect("PUT", response, (200, 201, 202), what=f"manifest {target}")
        response.close()
        self._check_hint(response, manifest.digest, "manifest")
        if tag is None:
            indexed = bool(response.header("oci-subject"))
            self._seen.add_stored(self._base, manifest.digest, indexed=indexed)
        return response.headers

    def _check_hint(self, response: WireResponse, digest: Digest, what: str) -> None:
        header = response.header("docker-content-digest")
        if not header:
            return
        try:
            stored = Digest.parse(header.strip())
        except ConveyorError:
            return
        if stored.algorithm == digest.algorithm and stored != digest:
            raise RegistryError(
                f"{self.display_name} stored the {what} as {stored}, not {digest}: the registry "
                "changed the content",
                url=redact(response.url),
            )

    def delete_manifest(self, digest: Digest) -> None:
        url = f"{self._base}/manifests/{digest}"
        self._seen.forget_manifest(self._base, digest)
        response = self._request("DELETE", url, self._push)
        self._expect("DELETE", response, (200, 202, 204), what=f"manifest {digest}")
        response.close()

    # --- blobs -------------------------------------------------------------------------

    def blob_size(self, digest: Digest) -> int | None:
        held, size = self._seen.blob(self._base, digest)
        if held and size is not None:
            return size
        url = f"{self._base}/blobs/{digest}"
        response = self._request("HEAD", url, self._pull)
        if response.status == 404:
            response.close()
            return None
        self._expect("HEAD", response, (200,), what=f"blob {digest}")
        response.close()
        length = response.header("content-length")
        if length is None or not length.isdigit():
            raise RegistryError(
                f"{self.display_name}: HEAD of blob {digest.short} gave no Content-Length"
            )
        self._seen.add_blob(self._base, digest, int(length))
        return int(length)

    def open_blob(
        self, digest: Digest, *, size: int | None = None, transient: bool = False
    ) -> AbstractContextManager[Iterator[bytes]]:
        """``transient``: the chunks are views into two reused buffers, each valid only until
        the one after the next is read (``blobio.transient_chunks``): for a consumer that
        sends each chunk before asking for more, such as ``write_blob`` here."""
        return self._open_blob(digest, size, transient)

    @contextmanager
    def _open_blob(
        self, digest: Digest, size: int | None, transient: bool
    ) -> Iterator[Iterator[bytes]]:
        url = f"{self._base}/blobs/{digest}"
        response = self._request("GET", url, self._pull, sender=self._session.blobs)
        try:
            self._expect("GET", response, (200,), what=f"blob {digest}")
            where = f"{self.display_name}@{digest.short}"
            declared = response.header("content-length")
            if size is not None and declared and declared.isdigit() and int(declared) != size:
                raise SizeMismatch(str(digest), announced=int(declared), expected=size, where=where)
            body = transient_chunks(response) if transient else response.chunks
            chunks = self._session.rate_floor.watch(body, "GET", url)
            yield verified_chunks(chunks, digest, size=size, where=where)
        finally:
            response.close()

    def write_blob(
        self,
        digest: Digest,
        size: int,
        chunks: Iterable[bytes],
        *,
        chunk_size: int | None = None,
    ) -> None:
        """Upload a blob: monolithic (POST, then one streamed PUT ``?digest=``) by default,
        chunked PATCHes of ``chunk_size`` bytes when given. The upload is only committed
        (the final PUT) after ``chunks`` completed; if it raises, the session is cancelled."""
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        location = self._start_upload()
        try:
            if chunk_size is None:
                self._put_monolithic(location, digest, size, chunks)
            else:
                self._put_chunked(location, digest, size, chunks, chunk_size)
        except BaseException:
            self._cancel_upload(location)
            raise
        self._seen.add_blob(self._base, digest, size)

    def _start_upload(self) -> str:
        url = f"{self._base}/blobs/uploads/"
        response = self._request("POST", url, self._push, body=b"")
        self._expect("POST", response, (202,), what="upload session")
        response.close()
        return self._absolute(response.header("location"), url)

    def _put_monolithic(
        self, location: str, digest: Digest, size: int, chunks: Iterable[bytes]
    ) -> None:
        url = self._with_query(location, digest=str(digest))
        body = self._session.rate_floor.watch(sized_chunks(chunks, size, digest), "PUT", url)
        response = self._request(
            "PUT",
            url,
            self._push,
            headers={"Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": str(size)},
            body=body,
            sender=self._session.blobs,
        )
        self._finish_upload(response, digest)

    def _put_chunked(
        self, location: str, digest: Digest, size: int, chunks: Iterable[bytes], chunk_size: int
    ) -> None:
        offset = 0
        buffer = bytearray()

        def send(part: bytes) -> None:
            nonlocal location, offset
            response = self._request(
                "PATCH",
                location,
                self._push,
                headers={
                    "Content-Type": UPLOAD_CONTENT_TYPE,
                    "Content-Length": str(len(part)),
                    "Content-Range": f"{offset}-{offset + len(part) - 1}",
                },
                body=part,
                sender=self._session.blobs,
            )
            self._expect("PATCH", response, (202, 204), what="upload chunk")
            response.close()
            location = self._absolute(response.header("location") or location, location)
            offset += len(part)

        for chunk in sized_chunks(chunks, size, digest):
            buffer += chunk
            while len(buffer) >= chunk_size:
                send(bytes(buffer[:chunk_size]))
                del buffer[:chunk_size]
        if buffer:
            send(bytes(buffer))
        url = self._with_query(location, digest=str(digest))
        response = self._request(
            "PUT",
            url,
            self._push,
            headers={"Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": "0"},
            body=b"",
            sender=self._session.blobs,
        )
        self._finish_upload(response, digest)

    def _finish_upload(self, response: WireResponse, digest: Digest) -> None:
        self._expect("PUT", response, (201, 204), what=f"blob {digest}")
        response.close()
        self._check_hint(response, digest, "blob")

    def _cancel_upload(self, location: str) -> None:
        try:
            response = self._request("DELETE", location, self._push)
            response.close()
        except ConveyorError as exc:
            log.debug("could not cancel upload session: %s", exc)

    def mounts_from(self, source: Repository) -> bool:
        """True when ``mount_blob`` can link blobs from ``source`` (same registry, other
        repository): then a mount is the cheapest first step, cheaper than asking first."""
        return (
            isinstance(source, RegistryRepository)
            and api_host(source.registry) == api_host(self.registry)
            and source.name != self.name
        )

    def mount_blob(self, digest: Digest, source: Repository) -> bool:
        if not isinstance(source, RegistryRepository) or api_host(source.registry) != api_host(
            self.registry
        ):
            return False
        if source.name == self.name:
            return self.blob_size(digest) is not None
        # One mount per blob: threads copying referrers that share a blob (the empty
        # config) wait for the first one's answer instead of asking too.
        while not self._seen.blob(self._base, digest)[0]:
            other = self._seen.ask(self._base, digest)
            if other is None:
                try:
                    return self._mount(digest, source)
                finally:
                    self._seen.answered(self._base, digest)
            other.wait()
        return True  # mounted or written here by this client already

    def _mount(self, digest: Digest, source: RegistryRepository) -> bool:
        url = self._with_query(
            f"{self._base}/blobs/uploads/", mount=str(digest), **{"from": source.name}
        )
        scopes = tuple(sorted((*self._push, *source._pull)))
        response = self._request("POST", url, scopes, body=b"")
        if response.status == 201:
            response.close()
            self._seen.add_blob(self._base, digest, None)
            return True
        if response.status == 202:
            response.close()
            location = response.header("location")
            if location:
                try:
                    self._cancel_upload(self._absolute(location, url))
                except RegistryError as exc:
                    log.debug("not cancelling upload session: %s", exc)
            return False
        raise_for_response("POST", response)
        return False  # pragma: no cover - raise_for_response always raises

    # --- tags --------------------------------------------------------------------------

    def list_tags(self, *, page_size: int | None = None) -> list[str]:
        url = f"{self._base}/tags/list"
        if page_size is not None:
            url = self._with_query(url, n=str(page_size))
        tags: list[str] = []
        seen_pages: set[str] = set()
        while url:
            if url in seen_pages or len(seen_pages) >= MAX_TAG_PAGES:
                raise RegistryError(f"{self.display_name}: the tag list pagination loops")
            seen_pages.add(url)
            response = self._request("GET", url, self._pull, headers={"Accept": "application/json"})
            self._expect("GET", response, (200,), what="repository")
            try:
                body = _read_limited(response, TAGS_BODY_LIMIT)
            finally:
                response.close()
            if looks_like_html(response.content_type, body):
                raise html_error("GET", url, response.status)
            if len(body) > TAGS_BODY_LIMIT:
                raise RegistryError(f"{self.display_name}: tag list page is too large")
            doc = _json_object(body, f"tag list of {self.display_name}")
            page = doc.get("tags")
            if page is None:
                page = []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(f"{self.display_name}: tag list 'tags' is not a list of text")
            tags.extend(page)
            url = self._next_page(response, url)
        return tags

    def _next_page(self, response: WireResponse, url: str) -> str:
        link = response.header("link")
        if not link:
            return ""
        for part in link.split(","):
            target, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
                target = target.strip().lstrip("<").rstrip(">")
                nxt = urljoin(url, target)
                if _host_key(urlsplit(nxt).netloc) != _host_key(urlsplit(url).netloc):
                    raise RegistryError(
                        f"{self.display_name}: the next page link points to another host "
                        f"({redact(nxt)}); refusing to follow it"
                    )
                return nxt
        return ""

    # --- referrers ---------------------------------------------------------------------

    def referrers(self, digest: Digest, *, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, or the tag schema
        fallback (``<alg>-<hex>`` index) where the registry has no such API."""
        found = self._referrers_api(digest, artifact_type)
        if found is None:
            found = self._referrers_fallback(digest)
        if artifact_type is not None:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    def _referrers_api(self, digest: Digest, artifact_type: str | None) -> list[Descriptor] | None:
        host = api_host(self.registry)
        if not self._seen.has_referrers_api(host):
            return None
        url = f"{self._base}/referrers/{digest}"
        if artifact_type is not None:
            url = self._with_query(url, artifactType=artifact_type)
        found: list[Descriptor] = []
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= MAX_TAG_PAGES:
                raise RegistryError(f"{self.display_name}: the referrers pagination loops")
            seen.add(url)
            response = self._request("GET", url, self._pull, headers={"Accept": mt.OCI_INDEX})
            if response.status in (404, 405):
                # 404 plain text: distribution 2.8 and others without the API. A registry
                # with it answers 200 for any digest, so a 404 that is not an OCI error
                # (NAME_UNKNOWN: no such repository) means the route itself is missing.
                body = response.read_capped(ERROR_BODY_LIMIT) if response.status == 404 else b""
                response.close()
                if response.status == 405 or oci_error(body)[0] is None:
                    self._seen.no_referrers_api(host)
                return None
            self._expect("GET", response, (200,), what="referrers")
            try:
                body = _read_limited(response, MAX_MANIFEST_BYTES)
            finally:
                response.close()
            if response.content_type != mt.OCI_INDEX or len(body) > MAX_MANIFEST_BYTES:
                return found or None
            index = parse_manifest(body, content_type=mt.OCI_INDEX)
            if not isinstance(index, ImageIndex):  # pragma: no cover - content type says index
                return None
            found.extend(index.manifests)
            url = self._next_page(response, url)
        return found

    def _referrers_fallback(self, digest: Digest) -> list[Descriptor]:
        return read_fallback(self, digest)

    def attach_referrer(self, manifest: RawManifest) -> None:
        """Push a manifest that has a ``subject``; where the registry does not index it
        (no ``OCI-Subject`` answer) add it to the ``<alg>-<hex>`` fallback index."""
        self.attach_referrers([manifest])

    def attach_referrers(self, manifests: Sequence[RawManifest], *, settle: bool = True) -> None:
        """``attach_referrer`` for several manifests, with one fallback index update.

        A manifest this client already stored here by digest (a copy did) is not sent
        again: the registry's answer then said whether it indexed the subject.
        ``settle=False``: return before the fallback index is read back after its pause;
        ``settle_referrers`` (or the next ``attach_referrers``) completes it."""
        unindexed = []
        for manifest in manifests:
            parsed = parse_manifest(manifest.data, content_type=manifest.media_type)
            if parsed.subject is None:
                raise ManifestError("attach_referrer needs a manifest with a 'subject'")
            indexed = self._seen.stored(self._base, manifest.digest)
            if indexed is None:
                indexed = bool(self._put_manifest(manifest, tag=None).get("oci-subject"))
            if not indexed:
                unindexed.append(manifest)
        if unindexed:
            add_all_to_fallback(self, unindexed, writes=self._fallback, settle=settle)
        elif settle:
            self._fallback.settle(self)

    def settle_referrers(self) -> None:
        """Read back the fallback indexes ``attach_referrers(settle=False)`` wrote."""
        self._fallback.settle(self)


def _as_digest(reference: str | Digest) -> Digest | None:
    if isinstance(reference, Digest):
        return reference
    if ":" in reference:
        return Digest.parse(reference)
    return None


def _read_limited(response: WireResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    for chunk in response.chunks:
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            break
    return b"".join(parts)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{what} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc
