"""The http.client sender against tiny loopback HTTP servers (no registry, no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conveyor.errors import DigestMismatch, RegistryError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry.blobio import StdlibSender, transient_chunks
from conveyor.registry.client import RegistryClient
from conveyor.registry.transport import Deadline, DeadlineExceeded, HttpxSender, make_httpx_client
from tests.support.faults import Fault, FaultProxy, wait_until

BLOB = os.urandom(3 * 1024 * 1024 + 11)
DIGEST = Digest.of(BLOB)


class _Server:
    """A registry-shaped loopback server that records what it was sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], int]] = []
        self.redirect_to: str | None = None
        self.serve: bytes = BLOB
        self.require: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _record(self, length: int) -> None:
                outer.seen.append((self.command, self.path, dict(self.headers.items()), length))

            def do_GET(self) -> None:
                self._record(0)
                if outer.require and self.headers.get("Authorization") != outer.require:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="loopback"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "/blobs/" in self.path and outer.redirect_to and "/v2/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", f"{outer.redirect_to}/storage/x?sig=abc")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.serve)))
                self.end_headers()
                self.wfile.write(outer.serve)

            def do_HEAD(self) -> None:
                self._record(0)
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.serve)))
                self.end_headers()

            def do_POST(self) -> None:
                self._record(0)
                self.send_response(202)
                self.send_header("Location", "/v2/a/blobs/uploads/123?_state=s")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self._record(len(body))
                ok = hashlib.sha256(body).hexdigest() in self.path
                self.send_response(201 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_DELETE(self) -> None:
                self._record(0)
                self.send_response(204)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def other_server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _client(*hosts: str) -> RegistryClient:
    client = RegistryClient(insecure_registries=hosts, sleep=lambda s: None, max_attempts=2)
    assert isinstance(client._session.blobs, StdlibSender)
    return client


def test_stream_and_upload_through_http_client(server: _Server) -> None:
    host = f"127.0.0.1:{server.port}"
    with _client(host) as client:
        repo = client.repository(Reference.parse(f"{host}/a:b"))
        with repo.open_blob(DIGEST, size=len(BLOB)) as chunks:
            assert b"".join(chunks) == BLOB
        repo.write_blob(
            DIGEST, len(BLOB), (BLOB[i : i + 65536] for i in range(0, len(BLOB), 65536))
        )
    put = [s for s in server.seen if s[0] == "PUT"]
    assert put[0][3] == len(BLOB)
    assert "_state=s" in put[0][1]


def test_lying_server_is_caught(server: _Server) -> None:
    server.serve = os.urandom(len(BLOB))
    host = f"127.0.0.1:{server.port}"
    with _client(host) as client:
        repo = client.repository(Reference.parse(f"{host}/a:b"))
        with pytest.raises(DigestMismatch), repo.open_blob(DIGEST) as chunks:
            b"".join(chunks)


def test_redirect_to_another_host_drops_authorization(
    server: _Server, other_server: _Server, tmp_path: Path
) -> None:
    # 127.0.0.1 and localhost are different hosts to the client
    host = f"127.0.0.1:{server.port}"
    server.redirect_to = f"http://localhost:{other_server.port}"
    server.require = "Basic " + base64.b64encode(b"user:pw-loopback-1").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {host: {"username": "user", "password": "pw-loopback-1"}}})
    )
    with RegistryClient(
        insecure_registries=[host, f"localhost:{other_server.port}"], docker_config_dir=tmp_path
    ) as client:
        repo = client.repository(Reference.parse(f"{host}/a:b"))
        with repo.open_blob(DIGEST, size=len(BLOB)) as chunks:
            assert b"".join(chunks) == BLOB
    assert [s[2].get("Authorization") for s in server.seen] == [None, server.require]
    assert len(other_server.seen) == 1
    assert other_server.seen[0][1].startswith("/storage/x?sig=abc")
    assert "Authorization" not in other_server.seen[0][2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_a_registry_error() -> None:
    host = f"127.0.0.1:{_closed_port()}"
    with (
        _client(host) as client,
        pytest.raises(RegistryError) as info,
        client.repository(Reference.parse(f"{host}/a:b")).open_blob(DIGEST),
    ):
        pass
    assert "check the registry address" in str(info.value)
    assert info.value.exit_code == 3


def test_tls_is_verified_for_hosts_not_marked_insecure(server: _Server) -> None:
    # the server speaks plain HTTP; without the insecure flag we talk TLS and must fail
    host = f"127.0.0.1:{server.port}"
    with (
        _client() as client,
        pytest.raises(RegistryError) as info,
        client.repository(Reference.parse(f"{host}/a:b")).open_blob(DIGEST),
    ):
        pass
    assert f"https://{host}/v2/" in str(info.value)
    assert "SSL" in str(info.value)


# --- TLS refusals are final (issue 9 #13) ----------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_untrusted_certificate_is_refused_once_not_six_times(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    sleeps: list[float] = []
    try:
        with (
            RegistryClient(sleep=sleeps.append) as client,
            pytest.raises(RegistryError) as info,
        ):
            client.ping(f"127.0.0.1:{port}")
    finally:
        listener.close()
    message = str(info.value)
    assert "TLS refused" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "\n" not in message
    assert not info.value.retryable
    assert (len(accepted), sleeps) == (1, [])


# --- the deadline on both senders (issue 9 #6) ---------------------------------------------


@pytest.mark.parametrize("sender_kind", ["stdlib", "httpx"])
@pytest.mark.parametrize(
    "fault",
    [Fault.silent(), Fault.trickle(0.2), Fault.trickle(0.2, body_only=True)],
    ids=["silent", "trickled-headers", "trickled-body"],
)
def test_a_slow_loris_cannot_stretch_the_deadline(sender_kind: str, fault: Fault) -> None:
    deadline = Deadline(1.0)
    sender: StdlibSender | HttpxSender
    if sender_kind == "stdlib":
        sender = StdlibSender(deadline=deadline)
    else:
        sender = HttpxSender(make_httpx_client(None), deadline=deadline)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            response = sender.send("GET", f"http://{proxy.host}/v2/a/manifests/b", {}, None)
            b"".join(response.chunks)
        except BaseException as exc:
            outcome.append(exc)

    with FaultProxy(None, lambda method, path, n: fault) as proxy:
        worker = threading.Thread(target=fetch, daemon=True)
        worker.start()
        worker.join(60)  # a guard against a hang; the old code read for minutes here
        alive = worker.is_alive()
    sender.close()
    deadline.close()
    assert not alive
    assert len(outcome) == 1
    assert isinstance(outcome[0], DeadlineExceeded), outcome[0]


# --- start-up: nothing loaded that a plain-HTTP command does not use (issue 11) ------------

_STARTUP_PROBE = """
import sys
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry import transport
from conveyor.registry.client import RegistryClient

host = sys.argv[1]
with RegistryClient(insecure_registries=[host]) as client:
    client.ping(host)
    client.repository(Reference.parse(host + "/a:b")).blob_size(Digest.of(b"x"))
loaded = transport.tls_context.cache_info().currsize
print(*(name in sys.modules for name in ("httpx", "urllib3", "urllib.request")), loaded)
"""


def test_plain_http_loads_no_http_library_and_no_ca_bundle(server: _Server) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _STARTUP_PROBE, f"127.0.0.1:{server.port}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["False", "False", "False", "0"]


def test_proxies_route_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.registry.blobio import HttpxBlobIO

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with RegistryClient() as client:
        assert isinstance(client._session.blobs, HttpxBlobIO)
    monkeypatch.setenv("HTTPS_PROXY", " ")
    with RegistryClient() as client:
        assert isinstance(client._session.blobs, StdlibSender)


_TLS_PROBE = """
import sys
from conveyor.errors import RegistryError
from conveyor.registry.client import RegistryClient

with RegistryClient(sleep=lambda s: None) as client:
    for host in sys.argv[1:]:
        try:
            client.ping(host)
            print("ok")
        except RegistryError as exc:
            print("refused", "TLS refused" in str(exc), "\\n" not in str(exc))
"""


def test_https_with_a_trusted_certificate_and_its_host_name(
    tmp_path: Path, server: _Server
) -> None:
    import ssl
    import subprocess
    import sys

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    env = {**os.environ, "SSL_CERT_FILE": str(cert)}
    done = subprocess.run(
        # The certificate names 127.0.0.1, not localhost: the second must be refused.
        [sys.executable, "-c", _TLS_PROBE, f"127.0.0.1:{server.port}", f"localhost:{server.port}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert done.stdout.splitlines() == ["ok", "refused True True"]


# --- blob bodies in two reused buffers (issue 11: the cross-registry copy's CPU) -----------


def test_a_transient_blob_lends_two_buffers_and_uploads_the_same_bytes(server: _Server) -> None:
    host = f"127.0.0.1:{server.port}"
    with _client(host) as client:
        repo = client.repository(Reference.parse(f"{host}/a:b"))
        received: list[bytes] = []
        buffers: set[int] = set()
        with repo.open_blob(DIGEST, size=len(BLOB), transient=True) as chunks:
            for chunk in chunks:
                assert isinstance(chunk, memoryview)
                buffers.add(id(chunk.obj))
                received.append(bytes(chunk))  # copied now: the view is lent, not given
        assert b"".join(received) == BLOB
        assert len(received) > 2  # 3 MiB in receives of at most 1 MiB
        assert len(buffers) == 2
        # Sent as it arrives; the server hashes what it got against the digest in the URL.
        with repo.open_blob(DIGEST, size=len(BLOB), transient=True) as chunks:
            repo.write_blob(DIGEST, len(BLOB), chunks)
    puts = [s for s in server.seen if s[0] == "PUT"]
    assert [length for _, _, _, length in puts] == [len(BLOB)]


def test_a_transient_blob_of_wrong_bytes_is_never_committed(server: _Server) -> None:
    server.serve = os.urandom(len(BLOB))
    host = f"127.0.0.1:{server.port}"
    with _client(host) as client:
        repo = client.repository(Reference.parse(f"{host}/a:b"))
        with (
            pytest.raises(DigestMismatch),
            repo.open_blob(DIGEST, size=len(BLOB), transient=True) as chunks,
        ):
            repo.write_blob(DIGEST, len(BLOB), chunks)
    # The last chunk was held back: the upload never got its whole body, and was cancelled.
    assert wait_until(lambda: any(s[0] == "DELETE" for s in server.seen))
    assert all(length < len(BLOB) for method, _, _, length in server.seen if method == "PUT")


class _RawServer:
    """One answer written by hand: ``head`` (status line and headers), then each part of
    ``parts`` after the event before it is set (None: at once); then the socket closes."""

    def __init__(self, head: bytes, parts: list[tuple[threading.Event | None, bytes]]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, args=(head, parts), daemon=True)
        self.thread.start()

    def _serve(self, head: bytes, parts: list[tuple[threading.Event | None, bytes]]) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)  # the request (one small GET)
            conn.sendall(head)
            for event, data in parts:
                if event is not None and not event.wait(10):
                    return
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


def test_a_transient_blob_is_read_one_receive_at_a_time() -> None:
    # The rate floor and the deadline look between chunks: a chunk must be what one receive
    # brought, not a buffer filled to the brim (that would wait for a trickle for minutes).
    first, rest = os.urandom(1000), os.urandom(5000)
    got_first = threading.Event()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(first) + len(rest)}\r\n\r\n".encode()
    raw = _RawServer(head, [(None, first), (got_first, rest)])
    sender = StdlibSender(deadline=Deadline(30.0))
    try:
        response = sender.send("GET", f"http://{raw.host}/v2/a/blobs/x", {}, None)
        received = []
        for chunk in transient_chunks(response):
            received.append(bytes(chunk))
            got_first.set()
        response.close()
    finally:
        sender.close()
        raw.close()
    assert received[0] == first
    assert b"".join(received) == first + rest


def test_a_transient_blob_cut_short_is_a_retryable_error() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    raw = _RawServer(head, [(None, b"x" * 1000)])
    sender = StdlibSender(deadline=Deadline(30.0))
    try:
        response = sender.send("GET", f"http://{raw.host}/v2/a/blobs/x", {}, None)
        with pytest.raises(RegistryError) as info:
            for _ in transient_chunks(response):
                pass
        response.close()
    finally:
        sender.close()
        raw.close()
    assert info.value.retryable
    assert "closed 4000 bytes before the end" in str(info.value)
