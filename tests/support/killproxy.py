"""A loopback HTTP proxy in front of a real registry that SIGKILLs a client process at a
chosen request: on its arrival (before the registry sees it) or once the registry has
answered it (the write is accepted, the client never hears so).

Every request is relayed byte for byte (``Host`` kept, so the registry's upload
``Location`` URLs name the proxy). ``log`` lists ``(method, path)`` in arrival order, so
one clean run tells a test how many steps there are to kill at.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length"}


@dataclass
class KillPlan:
    pid: int | None = None
    at: int | None = None  # 1-based request number
    when: str = "arrival"  # "arrival" | "answered"
    log: list[tuple[str, str]] = field(default_factory=list)
    killed: tuple[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, pid: int | None = None, at: int | None = None, when: str = "arrival") -> None:
        with self.lock:
            self.pid, self.at, self.when = pid, at, when
            self.log.clear()
            self.killed = None


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _kill(self) -> None:
        plan = self.server.plan
        if plan.pid is not None:
            os.kill(plan.pid, signal.SIGKILL)
        self.close_connection = True

    def _relay(self) -> None:
        plan = self.server.plan
        body = self._body()
        with plan.lock:
            plan.log.append((self.command, self.path))
            number = len(plan.log)
            chosen = plan.at == number and plan.pid is not None
            if chosen:
                plan.killed = (self.command, self.path)
        if chosen and plan.when == "arrival":
            self._kill()
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            answer = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
            length = response.getheader("Content-Length")
        finally:
            upstream.close()
        if chosen:  # the registry accepted it; the client never hears
            self._kill()
            return
        self.send_response(response.status, response.reason)
        for key, value in answer:
            self.send_header(key, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", length or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, plan: KillPlan) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.upstream = upstream
        self.plan = plan

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client we killed hung up mid-request: expected
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def kill_proxy(upstream: str) -> Iterator[tuple[str, KillPlan]]:
    """``(host:port of the proxy, its plan)`` in front of ``upstream`` (``host:port``)."""
    plan = KillPlan()
    server = _Server(upstream, plan)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", plan
    finally:
        server.shutdown()
        server.server_close()
