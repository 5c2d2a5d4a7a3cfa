"""The senders that carry registry traffic, both thread-safe (a copy runs several blobs at
once):

- ``StdlibSender`` — ``http.client`` connections in a small keep-alive pool, used for every
  request to a real registry. Streamed request bodies in httpx cost ~1.5x the time of this
  path (ENVIRONMENT.md), and a command should not pay for what it does not use: httpx takes
  ~100 ms to import, urllib3 ~20 ms on top of ``http.client`` (its URL regexes alone ~5 ms),
  while the pool this needs is a dict of idle connections (see ``benchmarks/startup.py``);
- ``HttpxBlobIO`` — over the client's httpx client; used when a custom httpx transport is
  injected (the in-memory fake registry), so tests see every request, and behind a proxy.

Neither follows redirects nor retries nor adds credentials: the client does that the same
way for both, stripping ``Authorization`` whenever a redirect leads to another host. This
module is the seam where ``http.client`` and socket errors become ``RegistryError``. Every
socket the pool opens is handed to the command's ``Deadline``, which shuts it down when the
deadline passes, so a slow-loris registry cannot stretch a command. TLS is the ``ssl``
module's: certificate and host name verified (``check_hostname``) with ``tls_context()``.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

from conveyor.errors import RegistryError
from conveyor.registry.transport import (
    CHUNK_SIZE,
    Body,
    Deadline,
    HttpxSender,
    WireResponse,
    lower_headers,
    redact,
    tls_context,
    translate_network_error,
)

if TYPE_CHECKING:
    import httpx

DRAIN_LIMIT = 64 * 1024


class BlobIO(Protocol):
    """A thread-safe ``Sender`` for blob bytes."""

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse: ...

    def close(self) -> None: ...


class HttpxBlobIO(HttpxSender):
    """Blob bytes through httpx (the injected transport in tests, or a proxy)."""

    def __init__(
        self, client: httpx.Client, *, deadline: Deadline | None = None, timeout: float = 120.0
    ) -> None:
        super().__init__(client, deadline=deadline, timeout=timeout)

    def close(self) -> None:
        # The client belongs to RegistryClient, which closes it.
        pass


class _Connection(http.client.HTTPConnection):
    """A plain connection whose socket the deadline may shut down."""

    deadline: Deadline

    def connect(self) -> None:
        super().connect()
        self.deadline.watch(self.sock)


class _TLSConnection(http.client.HTTPConnection):
    """A verified TLS connection; the TCP socket is watched before the handshake (a
    handshake trickled byte by byte is cut too), the TLS socket after it."""

    default_port = http.client.HTTPS_PORT
    deadline: Deadline

    def connect(self) -> None:
        super().connect()
        self.deadline.watch(self.sock)
        self.sock = tls_context().wrap_socket(self.sock, server_hostname=self.host)
        self.deadline.watch(self.sock)


# A kept-alive connection the registry closed meanwhile fails like this before any answer.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class StdlibSender:
    """Requests over ``http.client``, with up to ``pool_size`` idle connections kept per
    host. TLS verified with the system (or certifi) CAs, loaded on the first HTTPS
    request only."""

    def __init__(
        self,
        *,
        deadline: Deadline | None = None,
        pool_size: int = 16,
        timeout: float = 120.0,
        connect_timeout: float = 15.0,
    ) -> None:
        self._deadline = deadline or Deadline(600.0)
        self._pool_size = pool_size
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _checkout(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop(), True
        cls = _TLSConnection if scheme == "https" else _Connection
        conn = cls(netloc, timeout=self._deadline.clip(self._connect_timeout))
        conn.deadline = self._deadline
        return conn, False

    def _checkin(self, scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault((scheme, netloc), [])
            if not self._closed and len(idle) < self._pool_size and not self._deadline.expired:
                idle.append(conn)
                return
        conn.close()

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse:
        deadline = self._deadline
        deadline.check(method, url)
        parts = urlsplit(url)
        scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
        if scheme not in ("http", "https") or not netloc:
            raise RegistryError(f"{method} {redact(url)}: not an http(s) URL", url=redact(url))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        replayable = body is None or isinstance(body, bytes)
        while True:
            conn, reused = self._checkout(scheme, netloc)
            try:
                if conn.sock is None:
                    conn.timeout = deadline.clip(self._connect_timeout)
                    conn.connect()
                conn.sock.settimeout(deadline.clip(self._timeout))
                conn.request(method, target, body=body, headers=dict(headers))
                response = conn.getresponse()
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                if reused and replayable and isinstance(exc, _STALE) and not deadline.expired:
                    continue  # the next idle (or a new) connection; not a retry of the request
                raise translate_network_error(exc, method, url, deadline) from exc
            except ValueError as exc:  # a header http.client refuses to send (not latin-1)
                conn.close()
                raise RegistryError(
                    f"{method} {redact(url)}: cannot send the request: {redact(str(exc))[:200]}",
                    url=redact(url),
                ) from exc
            except BaseException:
                conn.close()  # the body's iterator failed mid-request: the connection is spent
                raise
            break
        return self._wire(response, conn, scheme, netloc, method, url)

    def _wire(
        self,
        response: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        scheme: str,
        netloc: str,
        method: str,
        url: str,
    ) -> WireResponse:
        deadline = self._deadline
        state = {"started": False, "done": False}

        def cut_short() -> RegistryError:
            deadline.check(method, url)  # cut off by the deadline: say that
            return RegistryError(
                f"{method} {redact(url)}: the connection closed "
                f"{response.length} bytes before the end of the answer",
                url=redact(url),
                retryable=True,
            )

        def chunks() -> Iterator[bytes]:
            state["started"] = True
            try:
                while True:
                    # read1: whatever one receive brings, so a trickle is seen as it comes
                    # (the rate floor and the deadline look between chunks).
                    chunk = response.read1(CHUNK_SIZE)
                    if not chunk:
                        if response.length:  # http.client does not say when a body ends short
                            raise cut_short()
                        break
                    deadline.check(method, url)
                    yield chunk
            except (http.client.HTTPException, OSError) as exc:
                raise translate_network_error(exc, method, url, deadline) from exc
            state["done"] = True

        def read_into(view: memoryview) -> int:
            # As one step of ``chunks``, into the caller's buffer. http.client's response
            # has no readinto1, so a body of known length is read from its buffered socket
            # file as read1 does (one receive at most), keeping ``length`` as it does.
            state["started"] = True
            try:
                if response.chunked or response.length is None or response.fp is None:
                    chunk = response.read1(len(view))  # rare for a blob: copied, not spared
                    n = len(chunk)
                    view[:n] = chunk
                elif response.length:
                    n = response.fp.readinto1(view[: response.length])
                    response.length -= n
                else:
                    n = 0
            except (http.client.HTTPException, OSError) as exc:
                raise translate_network_error(exc, method, url, deadline) from exc
            if n:
                deadline.check(method, url)
                return n
            if response.length:
                raise cut_short()
            state["done"] = True
            return 0

        def close() -> None:
            finished = state["done"] or response.length == 0
            if not finished and not state["started"] and not deadline.expired:
                # Drain a small unread answer (a 401's body) to keep the connection; a body
                # cut off mid-way (too slow, wrong bytes) may never end: close it.
                length = response.length
                if length is not None and length <= DRAIN_LIMIT and not response.chunked:
                    try:
                        response.read()
                        finished = True
                    except (http.client.HTTPException, OSError):
                        finished = False
            response.close()
            if finished and not response.will_close:
                self._checkin(scheme, netloc, conn)
            else:
                conn.close()

        return WireResponse(
            status=response.status,
            headers=lower_headers(response.getheaders()),
            url=url,
            chunks=chunks(),
            closer=close,
            read_into=read_into,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()


def transient_chunks(response: WireResponse, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The body of ``response`` as ``chunks`` gives it, but each chunk a view into one of two
    buffers used in turn: no new object, no fresh memory per chunk (a new 1 MiB bytes object
    per receive costs page faults and ~10% of a copy's CPU, measured in
    benchmarks/copy.py). A chunk stays valid until the one after the next is read, so a
    consumer may hold one chunk back (``verified_chunks`` does) but must be done with it by
    then: sending or writing each chunk before asking for more, never keeping it.

    Without ``read_into`` (httpx), the body's own chunks."""
    if response.read_into is None:
        yield from response.chunks
        return
    read_into = response.read_into
    buffers = (memoryview(bytearray(chunk_size)), memoryview(bytearray(chunk_size)))
    turn = 0
    while n := read_into(buffers[turn]):
        # A bytes-like view, typed as bytes: its consumers only take len(), hash, send or
        # write it, which every buffer supports.
        yield cast("bytes", buffers[turn][:n])
        turn ^= 1


# The names of this path when it went through urllib3.
Urllib3Sender = Urllib3BlobIO = StdlibSender
