"""The blob data path: the sender that carries blob bytes (streamed GET, upload PUT/PATCH).

Two implementations of one protocol, both thread-safe (the copy runs several blobs at once):

- ``HttpxBlobIO`` — over the client's httpx client; used when a custom httpx transport is
  injected (the in-memory fake registry), so tests see every request.
- ``Urllib3BlobIO`` — over urllib3's connection pools (thin over ``http.client``), used for
  real registries: streamed request bodies in httpx cost ~1.5x the time of this path
  (see the measurements in the report / ENVIRONMENT.md).

Neither follows redirects nor retries nor adds credentials: the client does that the same
way for both, stripping ``Authorization`` whenever a redirect leads to another host. This
module is the seam where urllib3 and socket errors become ``RegistryError``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from typing import Protocol

import httpx
import urllib3
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from conveyor.registry.transport import (
    CHUNK_SIZE,
    Body,
    HttpxSender,
    WireResponse,
    lower_headers,
    tls_context,
    translate_network_error,
)

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
    """Blob bytes through httpx (the injected transport in tests)."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__(client)

    def close(self) -> None:
        # The client belongs to RegistryClient, which closes it.
        pass


class Urllib3BlobIO:
    """Blob bytes through urllib3 pools: TLS verified with the system (or certifi) CAs."""

    def __init__(
        self, *, pool_size: int = 16, timeout: float = 120.0, connect_timeout: float = 15.0
    ) -> None:
        self._pools = urllib3.PoolManager(
            num_pools=32,
            maxsize=pool_size,
            block=False,
            ssl_context=tls_context(),
            cert_reqs=ssl.CERT_REQUIRED,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=timeout),
        )

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
    ) -> WireResponse:
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
            )
        except (Urllib3HTTPError, OSError) as exc:
            raise translate_network_error(exc, method, url) from exc
        state = {"done": False}

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    chunk = response.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    yield chunk
            except (Urllib3HTTPError, OSError) as exc:
                raise translate_network_error(exc, method, url) from exc
            state["done"] = True

        def close() -> None:
            try:
                if not state["done"]:
                    remaining = response.length_remaining
                    if remaining is not None and remaining <= DRAIN_LIMIT:
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
