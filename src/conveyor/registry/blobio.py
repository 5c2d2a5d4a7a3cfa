"""The senders that carry registry traffic, both thread-safe (a copy runs several blobs at
once):

- ``Urllib3Sender`` — over urllib3's connection pools (thin over ``http.client``), used for
  every request to a real registry: streamed request bodies in httpx cost ~1.5x the time of
  this path, and importing httpx costs more than a whole cached copy (ENVIRONMENT.md);
- ``HttpxBlobIO`` — over the client's httpx client; used when a custom httpx transport is
  injected (the in-memory fake registry), so tests see every request, and behind a proxy.

Neither follows redirects nor retries nor adds credentials: the client does that the same
way for both, stripping ``Authorization`` whenever a redirect leads to another host. This
module is the seam where urllib3 and socket errors become ``RegistryError``. Every socket
the urllib3 pools open is handed to the command's ``Deadline``, which shuts it down when the
deadline passes, so a slow-loris registry cannot stretch a command.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from conveyor.registry.transport import (
    CHUNK_SIZE,
    Body,
    Deadline,
    HttpxSender,
    WireResponse,
    lower_headers,
    tls_context,
    translate_network_error,
)

if TYPE_CHECKING:
    import socket

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


def _watched_pool_classes(deadline: Deadline) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections hand their sockets to ``deadline``."""

    def watch_new(conn: HTTPConnection, sock: socket.socket) -> socket.socket:
        deadline.watch(sock)  # the TCP socket: covers a TLS handshake that never ends
        return sock

    class PlainConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return watch_new(self, super()._new_conn())

    class TLSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return watch_new(self, super()._new_conn())

        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)  # the TLS socket that took the TCP socket's place

    class PlainPool(HTTPConnectionPool):
        ConnectionCls = PlainConnection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    return {"http": PlainPool, "https": TLSPool}


class Urllib3Sender:
    """Requests through urllib3 pools: TLS verified with the system (or certifi) CAs,
    loaded on the first HTTPS request only."""

    def __init__(
        self,
        *,
        deadline: Deadline | None = None,
        pool_size: int = 16,
        timeout: float = 120.0,
        connect_timeout: float = 15.0,
    ) -> None:
        self._deadline = deadline or Deadline(600.0)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pools = urllib3.PoolManager(
            num_pools=32, maxsize=pool_size, block=False, retries=False
        )
        self._pools.pool_classes_by_scheme = _watched_pool_classes(self._deadline)
        self._tls_lock = threading.Lock()
        self._tls_ready = False

    def _prepare_tls(self) -> None:
        with self._tls_lock:
            if not self._tls_ready:
                kw: dict[str, Any] = self._pools.connection_pool_kw
                kw["ssl_context"] = tls_context()
                kw["cert_reqs"] = ssl.CERT_REQUIRED
                self._tls_ready = True

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse:
        deadline = self._deadline
        deadline.check(method, url)
        if not self._tls_ready and url[:6].lower() == "https:":
            self._prepare_tls()
        timeout = urllib3.Timeout(
            connect=deadline.clip(self._connect_timeout), read=deadline.clip(self._timeout)
        )
        try:
            response = self._pools.urlopen(
                method,
                url,
                body=body,
                headers=dict(headers),
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=True,
                chunked=False,
                timeout=timeout,
            )
        except (Urllib3HTTPError, OSError) as exc:
            raise translate_network_error(exc, method, url, deadline) from exc
        state = {"started": False, "done": False}

        def chunks() -> Iterator[bytes]:
            state["started"] = True
            try:
                while True:
                    # read1: whatever one receive brings, so a trickle is seen as it comes
                    # (the rate floor and the deadline look between chunks).
                    chunk = response.read1(CHUNK_SIZE)
                    if not chunk:
                        break
                    deadline.check(method, url)
                    yield chunk
            except (Urllib3HTTPError, OSError) as exc:
                raise translate_network_error(exc, method, url, deadline) from exc
            state["done"] = True

        def close() -> None:
            try:
                if not state["done"]:
                    # Drain a small unread answer (a 401's body) to keep the connection; a
                    # body cut off mid-way (too slow, wrong bytes) may never end: close it.
                    remaining = response.length_remaining
                    if (
                        not state["started"]
                        and remaining is not None
                        and remaining <= DRAIN_LIMIT
                        and not deadline.expired
                    ):
                        response.drain_conn()
                    else:
                        response.close()
                response.release_conn()
            except (Urllib3HTTPError, OSError):
                response.close()

        return WireResponse(
            status=response.status,
            headers=lower_headers(response.headers.items()),
            url=url,
            chunks=chunks(),
            closer=close,
        )

    def close(self) -> None:
        self._pools.clear()


# The name of the blob path before it carried every request.
Urllib3BlobIO = Urllib3Sender
