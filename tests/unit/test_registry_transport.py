from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator

import httpx
import pytest

from conveyor.errors import AuthenticationError, InputError, NotFoundError, RegistryError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry.client import RegistryClient
from conveyor.registry.testing import FakeRegistry
from conveyor.registry.transport import (
    Deadline,
    DeadlineExceeded,
    RateFloor,
    RetryPolicy,
    TransferTooSlow,
    deadline_from_environment,
    error_from_response,
    parse_retry_after,
    redact,
    register_secret,
)
from tests.unit._registry_support import client_for, push_image, repo

# --- redaction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET https://s3.example/b/k?X-Amz-Signature=abc123def&X-Amz-Expires=60", "abc123def"),
        ("GET https://blob.example/x?sig=SIGSIGSIG&se=2026", "SIGSIGSIG"),
        ("https://cdn.example/p?token=tok-value-1", "tok-value-1"),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig", "eyJhbGciOiJSUzI1NiJ9"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("sent Bearer abcdefghijklmnop to it", "abcdefghijklmnop"),
        ('{"token": "json-token-value", "expires_in": 60}', "json-token-value"),
        ('{"access_token":"at-value-xyz"}', "at-value-xyz"),
        ("password=hunter2-very-secret&user=x", "hunter2-very-secret"),
        ("https://user:pa55word@reg.example/v2/", "pa55word"),
        ("refresh_token=rt-123456&grant_type=refresh_token", "rt-123456"),
    ],
)
def test_redact_removes_secrets(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "<redacted>" in cleaned


def test_redact_keeps_harmless_text() -> None:
    text = "GET https://reg.example/v2/team/app/manifests/v1: HTTP 404 Not Found"
    assert redact(text) == text


def test_registered_secret_is_redacted_anywhere() -> None:
    register_secret("Zq8-registered-canary")
    assert "Zq8-registered-canary" not in redact("oops Zq8-registered-canary leaked")
    register_secret("abc")  # too short to redact safely: ignored
    assert redact("abc") == "abc"


# --- Retry-After and error answers ------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after("7", now=0) == 7.0
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("-5", now=now) is None


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=20)
    assert policy.delay(1, "3600") == 20


def test_backoff_is_capped_full_jitter() -> None:
    calls: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        calls.append((low, high))
        return high

    policy = RetryPolicy(base_delay=0.5, max_delay=4, rng=rng)
    assert [policy.delay(n, None) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert all(low == 0 for low, _ in calls)


def test_oci_error_json_becomes_code() -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    error = error_from_response("GET", "https://r/v2/a/manifests/x", 404, "", body.encode())
    assert isinstance(error, NotFoundError)
    assert error.code == "MANIFEST_UNKNOWN"
    assert "manifest unknown" in str(error)
    assert error.status == 404


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, AuthenticationError, False),
        (403, RegistryError, False),
        (429, RegistryError, True),
        (500, RegistryError, False),
        (503, RegistryError, True),
    ],
)
def test_error_kinds(status: int, kind: type[RegistryError], retryable: bool) -> None:
    error = error_from_response("GET", "https://r/v2/", status, "text/plain", b"nope")
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.exit_code == 3


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"[]", b'{"errors": "x"}', b'{"errors": [1]}'])
def test_garbage_error_bodies(body: bytes) -> None:
    error = error_from_response("GET", "https://r/v2/", 400, "application/json", body)
    assert error.code is None
    assert "HTTP 400" in str(error)


# --- retries against the fake ----------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_then_succeeds(status: int) -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    fake.fail_next(status, times=3)
    sleeps: list[float] = []
    with client_for(fake, sleeps=sleeps) as client:
        assert repo(client, fake).get_manifest(image.tag).data == image.manifest
    assert len(fake.requests) == 4
    assert len(sleeps) == 3


def test_retry_after_is_honoured() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    fake.fail_next(429, times=2, retry_after="7")
    sleeps: list[float] = []
    with client_for(fake, sleeps=sleeps) as client:
        repo(client, fake).get_manifest(image.tag)
    assert sleeps == [7.0, 7.0]


def test_gives_up_after_max_attempts() -> None:
    fake = FakeRegistry()
    push_image(fake)
    fake.fail_next(503, times=100)
    sleeps: list[float] = []
    with (
        client_for(fake, sleeps=sleeps, max_attempts=4) as client,
        pytest.raises(RegistryError) as info,
    ):
        repo(client, fake).get_manifest("v1")
    assert info.value.status == 503
    assert len(fake.requests) == 4
    assert len(sleeps) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405])
def test_no_retry_on_other_errors(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"errors": [{"code": "X", "message": "no"}]})

    calls: list[float] = []
    with (
        RegistryClient(transport=httpx.MockTransport(handler), sleep=calls.append) as client,
        pytest.raises(RegistryError),
    ):
        client.ping("r.example")
    assert calls == []


def test_500_on_get_is_retried_and_the_give_up_says_how_often() -> None:
    # Issue 9 #13: a 500 on GET was never retried, and a give-up did not say it gave up.
    fake = FakeRegistry()
    image = push_image(fake)
    fake.fail_next(500, times=2)
    sleeps: list[float] = []
    with client_for(fake, sleeps=sleeps) as client:
        assert repo(client, fake).get_manifest(image.tag).data == image.manifest
    assert len(sleeps) == 2
    fake.fail_next(503, times=100)
    with client_for(fake, max_attempts=3) as client, pytest.raises(RegistryError) as info:
        repo(client, fake).get_manifest(image.tag)
    assert info.value.status == 503
    assert str(info.value).endswith("(gave up after 3 attempts)")


def test_500_on_post_is_not_retried() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(500, json={"errors": [{"code": "UNKNOWN", "message": "boom"}]})

    with (
        RegistryClient(transport=httpx.MockTransport(handler), sleep=lambda s: None) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.repository(Reference.parse("r.example/a/b:c")).write_blob(Digest.of(b"x"), 1, [b"x"])
    assert seen == ["POST"]
    assert "attempts" not in str(info.value)


def test_deadline_stops_retrying() -> None:
    fake = FakeRegistry()
    push_image(fake)
    fake.fail_next(429, times=100, retry_after="30")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with (
        RegistryClient(
            transport=fake.transport,
            sleep=sleep,
            clock=lambda: now[0],
            deadline=100,
            max_attempts=50,
        ) as client,
        pytest.raises(RegistryError) as info,
    ):
        repo(client, fake).get_manifest("v1")
    assert info.value.status == 429
    assert now[0] <= 100
    assert len(fake.requests) == 4  # 3 waits of 30 s fit in 100 s, a fourth would not


def test_connection_errors_are_retried_and_translated() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={})

    sleeps: list[float] = []
    with RegistryClient(transport=httpx.MockTransport(handler), sleep=sleeps.append) as client:
        client.ping("r.example")
    assert len(attempts) == 3
    assert len(sleeps) == 2


def test_persistent_connection_error_is_registry_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with (
        RegistryClient(
            transport=httpx.MockTransport(handler), sleep=lambda s: None, max_attempts=3
        ) as client,
        pytest.raises(RegistryError) as info,
    ):
        client.ping("r.example")
    assert "ConnectTimeout" in str(info.value)
    assert "3 attempts" in str(info.value)
    assert isinstance(info.value.__cause__, RegistryError)


def test_streamed_upload_is_not_replayed_on_503() -> None:
    fake = FakeRegistry()
    with client_for(fake) as client:
        r = repo(client, fake)
        data = b"x" * 1000
        fake.fail_next(503, times=1)  # hits the POST, which is replayable
        r.write_blob(Digest.of(data), len(data), iter([data]))
        assert fake.has_blob("team/app", str(Digest.of(data)))
        posts = [q for q in fake.requests if q.method == "POST"]
        assert len(posts) == 2


def test_insecure_hosts_use_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200, json={})

    monkeypatch.setenv("CONVEYOR_INSECURE_REGISTRIES", "env.example:5000, ")
    with RegistryClient(
        transport=httpx.MockTransport(handler), insecure_registries=["Flag.example"]
    ) as client:
        for host in ("secure.example", "flag.example", "env.example:5000", "env.example"):
            client.ping(host)
    assert urls == [
        "https://secure.example/v2/",
        "http://flag.example/v2/",
        "http://env.example:5000/v2/",
        "https://env.example/v2/",
    ]


# --- the deadline and the rate floor (issue 9 #6) ----------------------------------------


def test_the_deadline_wakes_a_read_that_would_block_forever() -> None:
    import socket
    import threading

    deadline = Deadline(0.3)
    ours, theirs = socket.socketpair()
    deadline.watch(ours)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(ours.recv(1)), daemon=True)
    reader.start()
    reader.join(30)  # a guard against a hang, not a measure of speed
    try:
        assert not reader.is_alive()
        assert got == [b""]  # woken with EOF: the peer never wrote
        assert deadline.expired
        with pytest.raises(DeadlineExceeded, match=r"overall deadline of 0\.3 s"):
            deadline.check("GET", "http://r.example/v2/?token=secret-value")
        # Sockets handed over after the deadline are shut down at once.
        late, _peer = socket.socketpair()
        deadline.watch(late)
        assert late.recv(1) == b""
    finally:
        deadline.close()
        theirs.close()
        ours.close()


def test_deadline_error_is_one_line_without_secrets() -> None:
    error = Deadline(5).error("GET", "https://r.example/v2/a/blobs/x?sig=SECRETSIG")
    assert "SECRETSIG" not in str(error)
    assert "CONVEYOR_DEADLINE" in str(error)
    assert error.exit_code == 3
    assert not error.retryable


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan", "inf", "1e400"])
def test_a_bad_deadline_setting_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("CONVEYOR_DEADLINE", text)
    with pytest.raises(InputError, match="CONVEYOR_DEADLINE"):
        deadline_from_environment()


def test_deadline_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert deadline_from_environment() == 600.0
    monkeypatch.setenv("CONVEYOR_DEADLINE", " 42.5 ")
    assert deadline_from_environment() == 42.5
    with RegistryClient(transport=FakeRegistry().transport) as client:
        assert client.deadline.seconds == 42.5


def test_rate_floor_cuts_a_trickle_and_spares_a_steady_stream() -> None:
    now = [0.0]
    floor = RateFloor(1000, 10, clock=lambda: now[0])

    def stream(step: float, size: int, count: int) -> Iterator[bytes]:
        for _ in range(count):
            now[0] += step
            yield b"x" * size

    assert sum(map(len, floor.watch(stream(1.0, 2000, 50), "GET", "u"))) == 100_000
    with pytest.raises(TransferTooSlow, match="below the minimum of 1000 bytes/s") as info:
        for _ in floor.watch(stream(1.0, 10, 50), "GET", "u"):
            pass
    assert info.value.retryable
    assert now[0] == 50 + 10  # cut off at the end of the first slow window
    assert list(RateFloor(0).watch([b"a", b"b"], "GET", "u")) == [b"a", b"b"]


def test_deadline_stops_a_slow_fake_between_chunks() -> None:
    now = [0.0]

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            now[0] += 1.0
            yield b"y" * 10

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Chunks(chunks()), headers={"Content-Length": "1000"})

    data = b"y" * 1000
    with RegistryClient(
        transport=httpx.MockTransport(handler), clock=lambda: now[0], deadline=5, min_rate=0
    ) as client:
        blob = client.repository(Reference.parse("r.example/a/b:c")).open_blob(
            Digest.of(data), size=1000
        )
        with pytest.raises(DeadlineExceeded), blob as body:
            b"".join(body)
    assert now[0] <= 6


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
