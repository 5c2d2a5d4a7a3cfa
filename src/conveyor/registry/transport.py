"""HTTP plumbing of the registry client.

The one seam where httpx exceptions become ``RegistryError`` (``raise ... from exc``), the
retry policy (capped exponential backoff with full jitter, ``Retry-After``, an overall
deadline), the translation of error answers (OCI error JSON, HTML pages) and ``redact``,
which every error message passes through so no token, password or signed URL leaks.

Requests are sent through a ``Sender``: one request, no redirects, no retries, a streamed
answer as a ``WireResponse``. The client layers auth, redirects and retries on top, the same
way for every sender (httpx here, urllib3 in ``blobio``).
"""

from __future__ import annotations

import email.utils
import functools
import http
import json
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from conveyor.errors import AuthenticationError, NotFoundError, RegistryError

log = logging.getLogger("conveyor.registry")

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_SIZE = 1 << 20
ERROR_BODY_LIMIT = 64 * 1024

Body = bytes | Iterable[bytes] | None

# --- redaction -------------------------------------------------------------------------

_known_secrets: set[str] = set()
_secrets_lock = threading.Lock()

_URL_QUERY = re.compile(r"(?i)\b((?:https?|oci|docker)://[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
_URL_USERINFO = re.compile(r"(?i)\b(https?://)[^\s/@\"'<>]+@")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization|proxy-authorization)(\"?\s*[:=]\s*\"?)[^\r\n\"]+")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}")
_SECRET_PARAM = re.compile(
    r"(?i)\b(access_token|refresh_token|identitytoken|identity_token|token|password|passwd|"
    r"secret|client_secret|sig|signature|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token|x-goog-signature|x-goog-credential|auth)"
    r"(\"?\s*[=:]\s*\"?)[^\s&\"',;}]+"
)


def register_secret(value: str | None) -> None:
    """Remember a secret (password, token) so ``redact`` removes it wherever it appears."""
    if value and len(value) >= 6:
        with _secrets_lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Remove tokens, passwords, Authorization values and URL query strings from ``text``."""
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    text = _URL_USERINFO.sub(r"\1<redacted>@", text)
    text = _AUTH_HEADER.sub(r"\1\2<redacted>", text)
    text = _AUTH_SCHEME.sub(r"\1\2<redacted>", text)
    text = _SECRET_PARAM.sub(r"\1\2<redacted>", text)
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
    """One verifying TLS context per process, shared by httpx and urllib3: loading the CA
    bundle costs more than a whole cached copy, so it is done once and only when needed."""
    ca_file = os.environ.get("SSL_CERT_FILE") or _certifi_file()
    ca_dir = os.environ.get("SSL_CERT_DIR")
    return ssl.create_default_context(cafile=ca_file, capath=ca_dir)


def _certifi_file() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return None
    return str(certifi.where())


def make_httpx_client(
    transport: httpx.BaseTransport | None = None, *, timeout: float = 60.0
) -> httpx.Client:
    """The httpx client for API calls: TLS verified, no automatic redirects (we decide
    which headers a redirect target may see)."""
    return httpx.Client(
        transport=transport,
        verify=tls_context(),
        follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
    )


class HttpxSender:
    """A ``Sender`` over an ``httpx.Client``; translates every httpx exception."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse:
        try:
            request = self._client.build_request(method, url, headers=dict(headers), content=body)
            response = self._client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise translate_network_error(exc, method, url) from exc
        return WireResponse(
            status=response.status_code,
            headers=lower_headers(response.headers.multi_items()),
            url=url,
            chunks=_httpx_chunks(response, method, url),
            closer=response.close,
        )

    def close(self) -> None:
        self._client.close()


def _httpx_chunks(response: httpx.Response, method: str, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes(CHUNK_SIZE)
    except httpx.HTTPError as exc:
        raise translate_network_error(exc, method, url) from exc


def translate_network_error(exc: BaseException, method: str, url: str) -> RegistryError:
    kind = type(exc).__name__
    detail = redact(str(exc)) or kind
    return RegistryError(
        f"{method} {redact(url)} failed: {kind}: {detail}; check the registry address and "
        "the network",
        url=redact(url),
        retryable=True,
    )


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
    code, detail = _oci_error(body)
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


def _oci_error(body: bytes) -> tuple[str | None, str | None]:
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
    """Capped exponential backoff with full jitter, bounded by attempts and a deadline."""

    max_attempts: int = 6
    deadline: float = 600.0
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
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
