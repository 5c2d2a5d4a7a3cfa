"""A canary secret pushed through every error path must appear in no message, log or output."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conveyor.errors import ConveyorError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry.client import RegistryClient
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import auth_entry, push_image, write_docker_config

CANARY = "CANARY-7f1d-s3cr3t"


def _chain(exc: BaseException) -> list[ConveyorError]:
    found: list[ConveyorError] = []
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConveyorError):
            found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def _texts(error: ConveyorError) -> list[str]:
    texts = [str(error), repr(error), error.message, *map(str, error.args)]
    url = getattr(error, "url", None)
    if url:
        texts.append(url)
    return texts


def _fake() -> FakeRegistry:
    fake = FakeRegistry(require_auth=("canary-user", CANARY), bearer=True)
    fake.token_prefix = f"{CANARY}-token-"
    fake.url_signature = CANARY
    return fake


class _Echo(httpx.BaseTransport):
    """A registry that echoes the request (headers, URL) back in its error messages."""

    def __init__(self, inner: httpx.BaseTransport, status: int) -> None:
        self._inner = inner
        self._status = status

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if response.status_code == 200 and "/manifests/" in request.url.path:
            echo = f"{request.method} {request.url} {dict(request.headers)}"
            return httpx.Response(
                self._status,
                json={"errors": [{"code": "DENIED", "message": echo}]},
            )
        return response


class _Storage(httpx.BaseTransport):
    """Blob storage that fails in the ways a signed URL reaches an error message."""

    def __init__(self, fake: FakeRegistry, mode: str) -> None:
        self._fake = fake
        self._mode = mode

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.example":
            if self._mode == "connect":
                raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)
            if self._mode == "403":
                return httpx.Response(403, text=f"SignatureDoesNotMatch for {request.url}")
        return self._fake.transport.handle_request(request)


def _scenarios(tmp_path: Path) -> list[tuple[str, Callable[[], object]]]:
    cfg = write_docker_config(
        tmp_path / "cfg", {"auths": {"fake.example": auth_entry("canary-user", CANARY)}}
    )
    scenarios: list[tuple[str, Callable[[], object]]] = []

    def run(
        fake_setup: Callable[[FakeRegistry], httpx.BaseTransport | None], action: str
    ) -> Callable[[], object]:
        def go() -> object:
            fake = _fake()
            image = push_image(fake)
            fake.redirect_blobs_to("storage.example")
            transport = fake_setup(fake) or fake.transport
            with RegistryClient(
                transport=transport, docker_config_dir=cfg, sleep=lambda s: None, max_attempts=2
            ) as client:
                r = client.repository(Reference.parse("fake.example/team/app:v1"))
                layer = Digest.parse(next(iter(image.layers)))
                if action == "manifest":
                    return r.get_manifest("v1")
                if action == "missing":
                    return r.get_manifest("no-such-tag")
                if action == "manifest-digest":
                    return r.get_manifest(Digest.parse(image.digest))
                if action == "blob":
                    with r.open_blob(layer) as chunks:
                        return b"".join(chunks)
                if action == "tags":
                    return r.list_tags()
                if action == "ping":
                    client.ping("fake.example")
                    return None
                if action == "push":
                    data = os.urandom(100)
                    return r.write_blob(Digest.of(b"other"), len(data), [data])
                raise AssertionError(action)

        return go

    def always_401(f: FakeRegistry) -> None:
        f.always_401 = True

    def wrong_user(f: FakeRegistry) -> None:
        f.require_auth = ("someone-else", CANARY + "x")

    def html(f: FakeRegistry) -> None:
        f.answer_html = True

    def storage_404(f: FakeRegistry) -> None:
        f.storage_status = 404

    def fail_503(f: FakeRegistry) -> None:
        f.fail_next(503, times=50)

    def lie(f: FakeRegistry) -> None:
        for digest in f.digests():
            f.lie(digest, b"lies " + CANARY.encode())

    scenarios += [
        ("endless 401", run(always_401, "manifest")),
        ("token service refuses", run(wrong_user, "manifest")),
        ("html", run(html, "ping")),
        ("missing manifest tag", run(lambda f: None, "missing")),
        ("storage 404", run(storage_404, "blob")),
        ("storage 403 echoing the URL", run(lambda f: _Storage(f, "403"), "blob")),
        ("storage unreachable", run(lambda f: _Storage(f, "connect"), "blob")),
        ("503 exhausted", run(fail_503, "tags")),
        ("lying storage", run(lie, "blob")),
        ("lying manifest", run(lie, "manifest-digest")),
        ("registry echoes our headers (403)", run(lambda f: _Echo(f.transport, 403), "manifest")),
        ("registry echoes our headers (400)", run(lambda f: _Echo(f.transport, 400), "manifest")),
        ("digest refused", run(lambda f: None, "push")),
    ]
    return scenarios


def test_canary_appears_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    failures = 0
    for name, scenario in _scenarios(tmp_path):
        try:
            scenario()
        except ConveyorError as exc:
            failures += 1
            for error in _chain(exc):
                for text in _texts(error):
                    assert CANARY not in text, f"{name}: canary in {text!r}"
        else:
            raise AssertionError(f"{name}: expected an error")
    assert failures == 13
    for record in caplog.records:
        assert CANARY not in record.getMessage()
    out = capsys.readouterr()
    assert CANARY not in out.out
    assert CANARY not in out.err
