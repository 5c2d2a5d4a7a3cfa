"""A fault-injecting HTTP proxy on loopback, in front of a real registry (or of nothing).

``FaultProxy(upstream)`` forwards each request to the upstream registry unless ``rule``
(method, path, n-th time this method+path kind was seen) returns a ``Fault``:

- ``Fault.status(503)``         drain the request body, answer that status (OCI error JSON);
- ``Fault.silent()``            read the request, never answer;
- ``Fault.trickle(interval)``   forward, then send the answer one byte every ``interval``
                                seconds (``body_only=True``: headers at once, body trickled).

It speaks just enough HTTP/1.1 for the registry clients under test (Content-Length bodies,
keep-alive); it keeps the client's ``Host`` header, so a registry's ``Location`` answers
point back at the proxy. ``log`` records (method, path, action) for assertions.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    kind: str
    status_code: int = 0
    interval: float = 0.0
    body_only: bool = False

    @classmethod
    def status(cls, code: int) -> Fault:
        return cls("status", status_code=code)

    @classmethod
    def silent(cls) -> Fault:
        return cls("silent")

    @classmethod
    def trickle(cls, interval: float, *, body_only: bool = False) -> Fault:
        return cls("trickle", interval=interval, body_only=body_only)


Rule = Callable[[str, str, int], Fault | None]


class FaultProxy:
    def __init__(self, upstream: str | None, rule: Rule) -> None:
        self.upstream = upstream  # "127.0.0.1:PORT", or None: 64 bytes of "x" for everything
        self.rule = rule
        self.log: list[tuple[str, str, str]] = []
        self.connections = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer.connections += 1
                    outer._clients.append(self.request)
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one connection -------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                kind = _kind(path)
                with self._lock:
                    n = self._counts.get((method, kind), 0) + 1
                    self._counts[(method, kind)] = n
                fault = self.rule(method, path, n)
                self.log.append((method, path, fault.kind if fault else "forward"))
                if fault is not None and fault.kind == "status":
                    body_text = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
                    answer = (
                        f"HTTP/1.1 {fault.status_code} Injected\r\n"
                        "Content-Type: application/json\r\n"
                        f"Content-Length: {len(body_text)}\r\n\r\n"
                    ).encode() + body_text
                    sock.sendall(answer)
                    continue
                if fault is not None and fault.kind == "silent":
                    self._stop.wait()
                    return
                answer = self._forward(method, path, headers, body)
                if fault is not None and fault.kind == "trickle":
                    head_end = answer.index(b"\r\n\r\n") + 4
                    start = head_end if fault.body_only else 0
                    sock.sendall(answer[:start])
                    for i in range(start, len(answer)):
                        if self._stop.wait(fault.interval):
                            return
                        sock.sendall(answer[i : i + 1])
                    continue
                sock.sendall(answer)
        except OSError:
            return
        finally:
            reader.close()

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> bytes:
        if self.upstream is None:  # no registry behind: a small answer for the rules to spoil
            return b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            lines = [f"HTTP/1.1 {response.status} {response.reason}"]
            for name, value in response.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    lines.append(f"{name}: {value}")
            # A HEAD answer keeps the length of the body it describes.
            length = response.getheader("Content-Length") if method == "HEAD" else len(data)
            lines.append(f"Content-Length: {length or 0}")
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
        finally:
            conn.close()


def _kind(path: str) -> str:
    for kind in ("/blobs/uploads/", "/blobs/", "/manifests/", "/tags/"):
        if kind in path:
            return kind
    return path.split("?", 1)[0]


def _read_request(reader: object) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    readline = reader.readline  # type: ignore[attr-defined]
    line = readline(65537)
    if not line:
        return None
    method, path, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: list[tuple[str, str]] = []
    length = 0
    while True:
        raw = readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = reader.read(length) if length else b""  # type: ignore[attr-defined]
    return method, path, headers, body


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
