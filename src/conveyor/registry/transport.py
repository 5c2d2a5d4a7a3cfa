"""HTTP plumbing of the registry client.

The one seam where httpx exceptions become ``RegistryError`` (``raise ... from exc``), the
retry policy (capped exponential backoff with full jitter, ``Retry-After``), the command's
overall ``Deadline`` and the blobs' ``RateFloor``, the translation of error answers (OCI
error JSON, HTML pages) and ``redact``, which every error message passes through so no
token, password or signed URL leaks.

Requests are sent through a ``Sender``: one request, no redirects, no retries, a streamed
answer as a ``WireResponse``. The client layers auth, redirects and retries on top, the same
way for every sender (http.client in ``blobio`` for real registries, httpx here for an injected
transport or a proxy). Neither httpx nor the CA bundle is loaded until a request needs it.
"""

from __future__ import annotations

import contextlib
import functools
import http
import json
import logging
import os
import random
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from conveyor.errors import AuthenticationError, NotFoundError, RegistryError

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger("conveyor.registry")

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# A 500 may be a passing fault too, but only a request that may be repeated is sent again.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEADLINE_ENV = "CONVEYOR_DEADLINE"
DEFAULT_DEADLINE = 600.0
# Blob bodies slower than this over a whole window are cut off (and the blob sent again).
DEFAULT_MIN_RATE = 10 * 1024
DEFAULT_RATE_WINDOW = 30.0
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_SIZE = 1 << 20
ERROR_BODY_LIMIT = 64 * 1024

Body = bytes | Iterable[bytes] | None

# --- redaction -------------------------------------------------------------------------

_known_secrets: set[str] = set()
_secrets_lock = threading.Lock()


@functools.cache
def _redactions() -> tuple[tuple[re.Pattern[str], str], ...]:
    # Compiled on the first error message, not at import: most commands never print one.
    return (
        (
            re.compile(r"(?i)\b((?:https?|oci|docker)://[^\s?#\"'<>]*)\?[^\s#\"'<>]*"),
            r"\1?<redacted>",
        ),
        (re.compile(r"(?i)\b(https?://)[^\s/@\"'<>]+@"), r"\1<redacted>@"),
        (
            re.compile(r"(?i)\b(authorization|proxy-authorization)(\"?\s*[:=]\s*\"?)[^\r\n\"]+"),
            r"\1\2<redacted>",
        ),
        (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}"), r"\1\2<redacted>"),
        (
            re.compile(
                r"(?i)\b(access_token|refresh_token|identitytoken|identity_token|token|password|"
                r"passwd|secret|client_secret|sig|signature|x-amz-signature|x-amz-credential|"
                r"x-amz-security-token|x-goog-signature|x-goog-credential|auth)"
                r"(\"?\s*[=:]\s*\"?)[^\s&\"',;}]+"
            ),
            r"\1\2<redacted>",
        ),
    )


def register_secret(value: str | None) -> None:
    """Remember a secret (password, token) so ``redact`` removes it wherever it appears."""
    if value and len(value) >= 6:
        with _secrets_lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Remove tokens, passwords, Authorization values and URL query strings from ``text``."""
    for pattern, replacement in _redactions():
        text = pattern.sub(replacement, text)
    with _secrets_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


class RedactingFilter(logging.Filter):
    """Scrubs log records of the HTTP libraries, which log full URLs (signed query strings
    included) at INFO/DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = ()
        return True


_LOGGERS_TO_SCRUB = (
    "conveyor.registry",
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
)


def install_log_redaction() -> None:
    """Attach ``RedactingFilter`` to the loggers that may see URLs or headers (idempotent)."""
    for name in _LOGGERS_TO_SCRUB:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


install_log_redaction()


# --- responses and senders -------------------------------------------------------------


@dataclass
class WireResponse:
    """One HTTP answer whose body is read lazily. Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    url: str
    chunks: Iterator[bytes]
    closer: Callable[[], None]
    # One receive of the body into the buffer given, its length (0 at the end): the body
    # without a new bytes object per chunk. Only senders that can offer it (http.client).
    read_into: Callable[[memoryview], int] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    def read_capped(self, limit: int) -> bytes:
        """Read at most ``limit + 1`` bytes, so a caller can tell an oversized body apart
        without ever holding more than that in memory."""
        parts: list[bytes] = []
        total = 0
        for chunk in self.chunks:
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                break
        return b"".join(parts)[: limit + 1]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.closer()


class Sender(Protocol):
    """Sends exactly one request; never follows redirects, never retries."""

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse: ...

    def close(self) -> None: ...


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by httpx and urllib3. Loading the CA
    bundle costs more than a whole cached copy, so it is done once, on the first HTTPS
    request: a command that only talks plain HTTP to a loopback registry never pays it."""
    import ssl

    ca_file = os.environ.get("SSL_CERT_FILE") or _certifi_file()
    ca_dir = os.environ.get("SSL_CERT_DIR")
    return ssl.create_default_context(cafile=ca_file, capath=ca_dir)


def _certifi_file() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return None
    return str(certifi.where())


# --- the deadline and the rate floor ---------------------------------------------------


class DeadlineExceeded(RegistryError):
    """The command's overall deadline passed; nothing more is sent. Never retried."""


def deadline_from_environment(default: float = DEFAULT_DEADLINE) -> float:
    """``CONVEYOR_DEADLINE`` (seconds) or ``default``; a bad value is refused, not ignored."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        from conveyor.errors import InputError

        raise InputError(f"{DEADLINE_ENV}={text[:40]!r}: expected a positive number of seconds")
    return seconds


class Deadline:
    """The one wall-clock budget of a command's registry traffic.

    Retries, connects and reads are clipped to what remains, and a watchdog thread shuts
    down every socket still open when it passes: a registry that trickles one byte at a
    time, or never answers, cannot hold a command past it, whatever the socket time-outs.
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._ends = clock() + seconds
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._fired = False

    def remaining(self) -> float:
        return self._ends - self._clock()

    @property
    def expired(self) -> bool:
        return self._fired or self.remaining() <= 0

    def clip(self, seconds: float) -> float:
        """A socket time-out no longer than what remains (and never zero: that means
        non-blocking)."""
        return max(0.001, min(seconds, self.remaining()))

    def error(self, method: str, url: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{method} {redact(url)}: gave up at the overall deadline of {self.seconds:g} s "
            f"(set {DEADLINE_ENV} to change it); the registry is too slow or does not answer",
            url=redact(url),
        )

    def check(self, method: str, url: str) -> None:
        if self.expired:
            raise self.error(method, url)

    def watch(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it already has)."""
        if sock is None:
            return
        with self._lock:
            if not self._fired:
                self._sockets.add(sock)
                if self._timer is None:
                    self._timer = threading.Timer(max(0.0, self.remaining()), self._fire)
                    self._timer.name = "conveyor-deadline"
                    self._timer.daemon = True
                    self._timer.start()
                return
        _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _shutdown(sock)

    def close(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: that one drops its SSL object, which
    # another thread may be reading from; a plain shutdown wakes that read with EOF.
    with contextlib.suppress(OSError):  # already closed: nothing left to stop
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class TransferTooSlow(RegistryError):
    """A blob body moved slower than the minimum rate for a whole window."""


@dataclass(frozen=True)
class RateFloor:
    """The minimum transfer rate of a blob body, averaged over ``window`` seconds (curl's
    ``--speed-limit``/``--speed-time``). A stall is the socket time-out's job; this catches
    the trickle that keeps every read inside it."""

    bytes_per_second: float = DEFAULT_MIN_RATE
    window: float = DEFAULT_RATE_WINDOW
    clock: Callable[[], float] = time.monotonic

    def watch(self, chunks: Iterable[bytes], method: str, url: str) -> Iterator[bytes]:
        if self.bytes_per_second <= 0:
            yield from chunks
            return
        started = self.clock()
        moved = 0
        for chunk in chunks:
            moved += len(chunk)
            now = self.clock()
            elapsed = now - started
            if elapsed >= self.window:
                if moved < self.bytes_per_second * elapsed:
                    raise TransferTooSlow(
                        f"{method} {redact(url)}: the blob moved at {moved / elapsed:.0f} "
                        f"bytes/s over {elapsed:.0f} s, below the minimum of "
                        f"{self.bytes_per_second:.0f} bytes/s; the registry is too slow",
                        url=redact(url),
                        retryable=True,
                    )
                started, moved = now, 0
            yield chunk


# --- httpx (an injected transport, or proxies) -------------------------------------------


def import_httpx() -> None:
    """Import httpx, without the command-line tool its package imports when click and rich
    are installed (~0.1 s; httpx documents the ImportError fallback this triggers)."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx  # noqa: F401


def make_httpx_client(
    transport: httpx.BaseTransport | None = None, *, timeout: float = 60.0
) -> httpx.Client:
    """The httpx client for API calls: TLS verified, no automatic redirects (we decide
    which headers a redirect target may see)."""
    import_httpx()
    import httpx

    return httpx.Client(
        transport=transport,
        # An injected transport does its own I/O: no CA bundle to load for it.
        verify=tls_context() if transport is None else True,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
    )


class HttpxSender:
    """A ``Sender`` over an ``httpx.Client``; translates every httpx exception."""

    def __init__(
        self, client: httpx.Client, *, deadline: Deadline | None = None, timeout: float = 120.0
    ) -> None:
        self._client = client
        self._deadline = deadline or Deadline(DEFAULT_DEADLINE)
        self._timeout = timeout

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse:
        import httpx

        deadline = self._deadline
        deadline.check(method, url)
        read = deadline.clip(self._timeout)
        try:
            request = self._client.build_request(
                method,
                url,
                headers=dict(headers),
                content=body,
                timeout=httpx.Timeout(read, connect=min(read, 15.0)),
                extensions={"trace": self._trace},
            )
            response = self._client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise translate_network_error(exc, method, url, deadline) from exc
        return WireResponse(
            status=response.status_code,
            headers=lower_headers(response.headers.multi_items()),
            url=url,
            chunks=_httpx_chunks(response, method, url, deadline),
            closer=response.close,
        )

    def _trace(self, event: str, info: Mapping[str, object]) -> None:
        # httpcore's trace hook hands over each new connection's stream as soon as it is
        # connected, before a byte of the answer: the deadline can cut a trickled header.
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            get_extra_info = getattr(stream, "get_extra_info", None)
            if callable(get_extra_info):
                self._deadline.watch(get_extra_info("socket"))

    def close(self) -> None:
        self._client.close()


def _httpx_chunks(
    response: httpx.Response, method: str, url: str, deadline: Deadline
) -> Iterator[bytes]:
    import httpx

    try:
        for chunk in response.iter_bytes():
            deadline.check(method, url)
            yield chunk
    except httpx.HTTPError as exc:
        raise translate_network_error(exc, method, url, deadline) from exc


def translate_network_error(
    exc: BaseException, method: str, url: str, deadline: Deadline | None = None
) -> RegistryError:
    if deadline is not None and deadline.expired:
        return deadline.error(method, url)
    refusal = _tls_refusal(exc)
    if refusal is not None:
        # Trying again gets the same certificate: say so at once instead of six times.
        return RegistryError(
            f"{method} {redact(url)} failed: TLS refused: {redact(str(refusal))}; the registry's "
            "certificate is not trusted here (add its CA to SSL_CERT_FILE)",
            url=redact(url),
            retryable=False,
        )
    kind = type(exc).__name__
    detail = redact(str(exc)) or kind
    return RegistryError(
        f"{method} {redact(url)} failed: {kind}: {detail}; check the registry address and "
        "the network",
        url=redact(url),
        retryable=True,
    )


def _tls_refusal(exc: BaseException) -> BaseException | None:
    """The certificate or TLS handshake refusal in ``exc``'s chain, if there is one."""
    if "ssl" not in sys.modules:
        return None  # no TLS was spoken in this process: nothing to refuse
    import ssl

    # Failures of the connection, not of the TLS agreement: worth another try.
    transient = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        if isinstance(current, ssl.SSLError) and not isinstance(current, transient):
            return current
        # urllib3 wraps the ssl error as its first argument as well as its cause.
        nested = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        current = current.__cause__ or current.__context__ or (nested[0] if nested else None)
    return None


# --- error answers ---------------------------------------------------------------------


def looks_like_html(content_type: str, body: bytes) -> bool:
    if content_type in ("text/html", "application/xhtml+xml"):
        return True
    head = body[:256].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def html_error(method: str, url: str, status: int) -> RegistryError:
    return RegistryError(
        f"{method} {redact(url)} answered an HTML page (HTTP {status}), not the OCI "
        "distribution API: is this a registry? Check the host name and port",
        status=status,
        url=redact(url),
    )


def error_from_response(
    method: str, url: str, status: int, content_type: str, body: bytes
) -> RegistryError:
    """A ``RegistryError`` (or subclass) for a failed answer, with the OCI error code."""
    if looks_like_html(content_type, body):
        return html_error(method, url, status)
    code, detail = oci_error(body)
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "unknown status"
    text = f"{method} {redact(url)}: HTTP {status} {reason}"
    if code:
        text += f" ({code}"
        text += f": {redact(detail)[:200]})" if detail else ")"
    hint = {
        401: "; check your credentials (docker login)",
        403: "; the credentials lack permission for this repository",
        404: "; check the repository name, tag and digest",
        429: "; the registry is rate limiting, try again later",
    }.get(status, "")
    retryable = status in RETRYABLE_STATUSES
    kind: type[RegistryError] = RegistryError
    if status == 401:
        kind = AuthenticationError
    elif status == 404:
        kind = NotFoundError
    return kind(text + hint, status=status, code=code, url=redact(url), retryable=retryable)


def oci_error(body: bytes) -> tuple[str | None, str | None]:
    """The code and message of an OCI error body (``errors[0]``); (None, None) otherwise."""
    try:
        doc = json.loads(body[:ERROR_BODY_LIMIT])
    except (ValueError, UnicodeDecodeError):
        return None, None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    code = errors[0].get("code")
    message = errors[0].get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def raise_for_response(method: str, response: WireResponse) -> None:
    """Close ``response`` and raise the error it carries (callers decide what is OK)."""
    try:
        body = response.read_capped(ERROR_BODY_LIMIT) if method != "HEAD" else b""
    except RegistryError:
        body = b""
    finally:
        response.close()
    raise error_from_response(method, response.url, response.status, response.content_type, body)


# --- retries ---------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """Capped exponential backoff with full jitter, bounded by attempts (and by the
    session's ``Deadline``)."""

    max_attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 10.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[float, float], float] = random.uniform

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        waited = parse_retry_after(retry_after, now=time.time()) if retry_after else None
        if waited is not None:
            return min(waited, self.max_retry_after)
        return self.rng(0.0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))


def parse_retry_after(value: str, *, now: float) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # rare (an HTTP date), and not needed by commands without a registry

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
