from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conveyor.errors import (
    DigestMismatch,
    ManifestError,
    NotFoundError,
    RegistryError,
)
from conveyor.oci.digest import Digest, verified_chunks
from conveyor.oci.manifest import MAX_MANIFEST_BYTES
from conveyor.oci.name import Reference
from conveyor.oci.store import RawManifest, Repository
from conveyor.registry.client import RegistryClient
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import OCI_MANIFEST, client_for, push_image, repo

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def test_repository_implements_the_store_protocol() -> None:
    fake = FakeRegistry()
    with client_for(fake) as client:
        r = repo(client, fake)
        assert isinstance(r, Repository)
        assert r.display_name == "fake.example/team/app"
        assert (r.registry, r.name) == ("fake.example", "team/app")


# --- manifests --------------------------------------------------------------------------


def test_get_manifest_by_tag_and_digest() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client:
        r = repo(client, fake)
        by_tag = r.get_manifest("v1")
        by_digest = r.get_manifest(Digest.parse(image.digest))
        resolved = r.resolve(image.digest)
    assert by_tag.data == by_digest.data == resolved.data == image.manifest
    assert str(by_tag.digest) == image.digest
    assert by_tag.media_type == OCI_MANIFEST
    accept = fake.requests[0].headers["accept"]
    for media_type in (
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
    ):
        assert media_type in accept


def test_by_tag_the_digest_is_the_hash_of_the_bytes_not_the_header() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    other = image.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":2')
    fake.lie(image.digest, other)  # the header still claims image.digest
    with client_for(fake) as client:
        got = repo(client, fake).get_manifest("v1")
        assert got.digest == Digest.of(other)
        with pytest.raises(DigestMismatch) as info:
            repo(client, fake).get_manifest(image.digest)
    assert image.digest in str(info.value)
    assert info.value.exit_code == 3


def test_head_manifest_gives_a_hint_only() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client:
        r = repo(client, fake)
        hint, media_type, size = r.head_manifest("v1")
        assert (str(hint), media_type, size) == (image.digest, OCI_MANIFEST, len(image.manifest))
        assert r.has_manifest(Digest.parse(image.digest))
        assert not r.has_manifest(Digest.of(b"absent"))
        with pytest.raises(NotFoundError):
            r.head_manifest("nope")


def test_manifest_not_found_is_clear() -> None:
    fake = FakeRegistry()
    push_image(fake)
    with client_for(fake) as client, pytest.raises(NotFoundError) as info:
        repo(client, fake).get_manifest("missing-tag")
    assert "manifest missing-tag not found in fake.example/team/app" in str(info.value)
    assert info.value.code == "MANIFEST_UNKNOWN"


def test_put_and_delete_manifest() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client:
        r = repo(client, fake)
        raw = r.get_manifest("v1")
        r.put_manifest(raw, tag="v2")
        assert fake.tags("team/app")["v2"] == image.digest
        put = [q for q in fake.requests if q.method == "PUT"][-1]
        assert put.headers["content-type"] == OCI_MANIFEST
        r.delete_manifest(raw.digest)
        assert fake.manifest("team/app", image.digest) is None
        with pytest.raises(NotFoundError):
            r.delete_manifest(raw.digest)


def test_put_manifest_refuses_bytes_that_do_not_match_their_digest() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client, pytest.raises(DigestMismatch):
        repo(client, fake).put_manifest(
            RawManifest(image.manifest + b" ", OCI_MANIFEST, Digest.parse(image.digest)), tag="x"
        )
    assert not [q for q in fake.requests if q.method == "PUT"]


def test_content_type_disagreeing_with_media_type_is_refused() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    fake.add_manifest("team/app", image.manifest, OCI_INDEX, tag="confused")
    with client_for(fake) as client, pytest.raises(ManifestError):
        repo(client, fake).get_manifest("confused")


def test_oversized_manifest_stops_reading_early() -> None:
    fake = FakeRegistry()
    fake.huge_manifest("team/app", "huge", 64 * 1024 * 1024)
    with client_for(fake) as client, pytest.raises(ManifestError) as info:
        repo(client, fake).get_manifest("huge")
    assert "limit" in str(info.value)
    assert MAX_MANIFEST_BYTES < fake.huge_bytes_served <= MAX_MANIFEST_BYTES + 2 * 1024 * 1024


def test_declared_oversized_manifest_is_not_read_at_all() -> None:
    served: list[int] = []

    def body() -> Iterator[bytes]:
        for _ in range(100):
            served.append(1)
            yield b"x" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(100 * 65536)},
            stream=_Stream(body()),
        )

    with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        r = client.repository(Reference.parse("r.example/a:b"))
        with pytest.raises(ManifestError, match="over the"):
            r.get_manifest("b")
    assert len(served) <= 1


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


@pytest.mark.parametrize("where", ["ping", "manifest", "tags"])
def test_html_answer_is_a_clear_error(where: str) -> None:
    fake = FakeRegistry()
    push_image(fake)
    fake.answer_html = True
    with client_for(fake) as client:
        r = repo(client, fake)
        action = {
            "ping": lambda: client.ping(fake.host),
            "manifest": lambda: r.get_manifest("v1"),
            "tags": r.list_tags,
        }[where]
        with pytest.raises(RegistryError) as info:
            action()
    assert "HTML" in str(info.value)
    assert "is this a registry?" in str(info.value)


def test_html_404_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html><body>Not Found</body></html>")

    with (
        RegistryClient(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(RegistryError, match="HTML"),
    ):
        client.repository(Reference.parse("r.example/a:b")).get_manifest("b")


# --- blobs ------------------------------------------------------------------------------


def test_blob_size_and_streaming() -> None:
    fake = FakeRegistry()
    image = push_image(fake, layer_size=3 * 1024 * 1024 + 7)
    with client_for(fake) as client:
        r = repo(client, fake)
        for digest_text, data in image.layers.items():
            digest = Digest.parse(digest_text)
            assert r.blob_size(digest) == len(data)
            with r.open_blob(digest, size=len(data)) as chunks:
                assert b"".join(chunks) == data
        assert r.blob_size(Digest.of(b"absent")) is None
        with pytest.raises(NotFoundError), r.open_blob(Digest.of(b"absent")):
            pass


def test_lying_blob_never_yields_its_last_chunk() -> None:
    fake = FakeRegistry()
    image = push_image(fake, layer_size=3 * 1024 * 1024)
    layer = next(d for d, b in image.layers.items() if len(b) > 1024)
    fake.lie(layer, os.urandom(len(image.layers[layer])))
    received = 0
    with client_for(fake) as client:

        def drain() -> None:
            nonlocal received
            with repo(client, fake).open_blob(Digest.parse(layer)) as chunks:
                for chunk in chunks:
                    received += len(chunk)

        with pytest.raises(DigestMismatch):
            drain()
    assert received < len(image.layers[layer])


def test_blob_with_wrong_announced_size() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    layer, data = next(iter(image.layers.items()))
    with (
        client_for(fake) as client,
        pytest.raises(DigestMismatch) as info,
        repo(client, fake).open_blob(Digest.parse(layer), size=len(data) + 1) as chunks,
    ):
        b"".join(chunks)
    # Issue 9 #15: it once read "received bytes hash to 192 bytes announced where 384 ...".
    assert str(info.value) == (
        f"size mismatch from {fake.host}/team/app@{Digest.parse(layer).short}: {layer} is "
        f"{len(data) + 1} bytes but the registry announced {len(data)}; refusing the content"
    )


def test_short_blob_body_names_the_sizes() -> None:
    data = b"x" * 384
    digest = Digest.of(data)
    with pytest.raises(DigestMismatch) as info:
        b"".join(verified_chunks([data[:192]], digest, size=384, where="r/x"))
    assert str(info.value) == (
        f"size mismatch from r/x: {digest} is 384 bytes but 192 arrived; refusing the content"
    )


def test_lying_registry_copy_writes_no_manifest() -> None:
    from conveyor.registry.copy import copy

    source = FakeRegistry("source.example")
    destination = FakeRegistry("dest.example")
    image = push_image(source)
    layer = max(image.layers, key=lambda d: len(image.layers[d]))
    source.lie(layer, os.urandom(len(image.layers[layer])))
    mux = _Mux(source, destination)
    with RegistryClient(transport=mux) as client:
        src = client.repository(Reference.parse("source.example/team/app:v1"))
        dst = client.repository(Reference.parse("dest.example/team/app:v1"))
        with pytest.raises(DigestMismatch):
            copy(src, "v1", dst)
    assert destination.manifest_count() == 0
    assert not destination.has_blob("team/app", layer)
    assert destination.open_uploads == 0


class _Mux(httpx.BaseTransport):
    """Routes requests to several fakes by host."""

    def __init__(self, *fakes: FakeRegistry) -> None:
        self._routes: dict[str, httpx.BaseTransport] = {}
        for fake in fakes:
            self._routes[fake.host] = fake.transport
            self._routes[fake.auth_host] = fake.transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._routes[request.url.netloc.decode()].handle_request(request)


@pytest.mark.parametrize("chunk_size", [None, 1000, 4096, 10_000])
def test_write_blob(chunk_size: int | None) -> None:
    fake = FakeRegistry()
    data = os.urandom(10_000)
    digest = Digest.of(data)
    with client_for(fake) as client:
        r = repo(client, fake)
        r.write_blob(
            digest,
            len(data),
            (data[i : i + 777] for i in range(0, 10_000, 777)),
            chunk_size=chunk_size,
        )
    assert fake.blob(str(digest)) == data
    assert fake.has_blob("team/app", str(digest))
    patches = [q for q in fake.requests if q.method == "PATCH"]
    if chunk_size is None:
        assert patches == []
    else:
        assert len(patches) == -(-10_000 // chunk_size)
        assert patches[0].headers["content-range"] == f"0-{min(chunk_size, 10_000) - 1}"
    final = [q for q in fake.requests if q.method == "PUT"]
    assert len(final) == 1
    assert f"digest={digest.algorithm}%3A{digest.encoded}" in final[0].url


def test_write_blob_from_a_failing_iterator_commits_nothing() -> None:
    fake = FakeRegistry()
    data = os.urandom(5000)
    digest = Digest.of(data)

    def chunks() -> Iterator[bytes]:
        yield data[:2000]
        raise DigestMismatch(str(digest), "something else", where="source")

    for chunk_size in (None, 1000):
        with client_for(fake) as client, pytest.raises(DigestMismatch):
            repo(client, fake).write_blob(digest, len(data), chunks(), chunk_size=chunk_size)
        assert fake.blob(str(digest)) is None
        assert fake.open_uploads == 0
        assert fake.requests[-1].method == "DELETE"


@pytest.mark.parametrize("extra", [b"", b"!"])
def test_write_blob_with_the_wrong_amount_of_bytes(extra: bytes) -> None:
    fake = FakeRegistry()
    data = os.urandom(3000)
    digest = Digest.of(data)
    size = len(data) + 10 if not extra else len(data)
    with client_for(fake) as client, pytest.raises(DigestMismatch, match="size mismatch"):
        repo(client, fake).write_blob(digest, size, [data, extra], chunk_size=1024)
    assert fake.blob(str(digest)) is None
    assert fake.open_uploads == 0


def test_write_blob_with_a_wrong_digest_is_refused_by_the_registry() -> None:
    fake = FakeRegistry()
    data = os.urandom(100)
    with client_for(fake) as client, pytest.raises(RegistryError, match="DIGEST_INVALID"):
        repo(client, fake).write_blob(Digest.of(b"other"), len(data), [data])


def test_blob_redirect_drops_credentials(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    from tests.unit._registry_support import auth_entry, write_docker_config

    fake = FakeRegistry(require_auth=("u", "pw-for-registry-only"), bearer=True)
    image = push_image(fake)
    fake.redirect_blobs_to("storage.example")
    mux = _Mux(fake)
    mux._routes["storage.example"] = fake.transport
    cfg = write_docker_config(
        Path(tmp_path), {"auths": {fake.host: auth_entry("u", "pw-for-registry-only")}}
    )
    with RegistryClient(transport=mux, docker_config_dir=cfg) as client:
        r = client.repository(Reference.parse(f"{fake.host}/team/app:v1"))
        for digest_text, data in image.layers.items():
            with r.open_blob(Digest.parse(digest_text), size=len(data)) as chunks:
                assert b"".join(chunks) == data
    storage = [q for q in fake.requests if q.host == "storage.example"]
    assert len(storage) == len(image.layers)
    assert all("authorization" not in q.headers for q in storage)
    blob_gets = [q for q in fake.requests if q.host == fake.host and "/blobs/" in q.path]
    with_token = [q for q in blob_gets if q.headers.get("authorization", "").startswith("Bearer ")]
    assert len(with_token) == len(image.layers)  # plus one anonymous GET that got the challenge


def test_redirect_from_https_to_plain_http_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": "http://storage.example/blob"})

    with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        r = client.repository(Reference.parse("r.example/a:b"))
        with pytest.raises(RegistryError, match="plain HTTP"), r.open_blob(Digest.of(b"x")):
            pass


def test_mount() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    layer = next(iter(image.layers))
    with client_for(fake) as client:
        src = repo(client, fake)
        dst = repo(client, fake, "team/copy")
        assert dst.mount_blob(Digest.parse(layer), src) is True
        assert fake.has_blob("team/copy", layer)
        missing = Digest.of(b"not in the source")
        assert dst.mount_blob(missing, src) is False
        assert fake.open_uploads == 0  # the 202 session was cancelled
        assert fake.requests[-1].method == "DELETE"
        other = FakeRegistry("other.example")
        with RegistryClient(transport=other.transport) as other_client:
            foreign = other_client.repository(Reference.parse("other.example/team/app:v1"))
            before = len(fake.requests)
            assert dst.mount_blob(Digest.parse(layer), foreign) is False
            assert len(fake.requests) == before


def test_concurrent_blob_traffic_is_safe() -> None:
    fake = FakeRegistry(bearer=True)
    blobs = [os.urandom(50_000 + i) for i in range(16)]
    with client_for(fake) as client:
        r = repo(client, fake)

        def roundtrip(data: bytes) -> bytes:
            digest = Digest.of(data)
            r.write_blob(digest, len(data), [data[:1000], data[1000:]])
            with r.open_blob(digest, size=len(data)) as chunks:
                return b"".join(chunks)

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(roundtrip, blobs)) == blobs
    assert len(fake.tokens_issued) <= 2


# --- tags ------------------------------------------------------------------------------


def test_list_tags_follows_pagination() -> None:
    fake = FakeRegistry()
    for tag in ("e", "a", "d", "b", "c"):
        push_image(fake, tag=tag)
    with client_for(fake) as client:
        r = repo(client, fake)
        assert r.list_tags(page_size=2) == ["a", "b", "c", "d", "e"]
        assert len([q for q in fake.requests if q.path.endswith("/tags/list")]) == 3
        assert sorted(r.list_tags()) == ["a", "b", "c", "d", "e"]


def test_list_tags_refuses_a_link_to_another_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"name": "a", "tags": ["x"]},
            headers={"Link": '<https://evil.example/v2/a/tags/list?last=x>; rel="next"'},
        )

    with (
        RegistryClient(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(RegistryError, match="another host"),
    ):
        client.repository(Reference.parse("r.example/a:b")).list_tags()


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"tags": "x"}', b'{"tags": [1]}'])
def test_list_tags_hostile_bodies(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    with (
        RegistryClient(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(RegistryError),
    ):
        client.repository(Reference.parse("r.example/a:b")).list_tags()


def test_list_tags_of_unknown_repository() -> None:
    fake = FakeRegistry()
    with client_for(fake) as client, pytest.raises(NotFoundError):
        repo(client, fake, "nobody/here").list_tags()


# --- referrers --------------------------------------------------------------------------


def _referrer(fake: FakeRegistry, subject: str, subject_size: int, kind: str) -> RawManifest:
    empty = b"{}"
    empty_digest = fake.add_blob("team/app", empty)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": kind,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": empty_digest,
            "size": 2,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2}
        ],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
        "annotations": {"kind": kind},
    }
    data = json.dumps(doc).encode()
    return RawManifest(data, OCI_MANIFEST, Digest.of(data))


@pytest.mark.parametrize("api", [True, False])
def test_attach_and_list_referrers(api: bool) -> None:
    fake = FakeRegistry(referrers_api=api)
    image = push_image(fake)
    subject = Digest.parse(image.digest)
    sbom = _referrer(fake, image.digest, len(image.manifest), "application/spdx+json")
    sig = _referrer(fake, image.digest, len(image.manifest), "application/vnd.dev.sig")
    with client_for(fake) as client:
        r = repo(client, fake)
        assert r.referrers(subject) == []
        r.attach_referrer(sbom)
        r.attach_referrer(sig)
        r.attach_referrer(sbom)  # again: no duplicate
        found = r.referrers(subject)
        assert sorted(str(d.digest) for d in found) == sorted([str(sbom.digest), str(sig.digest)])
        only = r.referrers(subject, artifact_type="application/vnd.dev.sig")
        assert [d.digest for d in only] == [sig.digest]
        assert only[0].annotations == {"kind": "application/vnd.dev.sig"}
    fallback_tag = f"sha256-{subject.encoded}"
    if api:
        assert fallback_tag not in fake.tags("team/app")
    else:
        stored = fake.manifest("team/app", fallback_tag)
        assert stored is not None
        index = json.loads(stored[0])
        assert len(index["manifests"]) == 2
        assert stored[1] == OCI_INDEX


def test_fallback_keeps_existing_entries() -> None:
    fake = FakeRegistry(referrers_api=False)
    image = push_image(fake)
    foreign = {
        "mediaType": OCI_MANIFEST,
        "digest": "sha256:" + "ab" * 32,
        "size": 123,
        "artifactType": "application/x-other-tool",
        "annotations": {"by": "another tool"},
    }
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [foreign]}
    ).encode()
    fake.add_manifest("team/app", index, OCI_INDEX, tag=f"sha256-{image.digest.split(':')[1]}")
    ours = _referrer(fake, image.digest, len(image.manifest), "application/spdx+json")
    with client_for(fake) as client:
        repo(client, fake).attach_referrer(ours)
    stored = fake.manifest("team/app", f"sha256-{image.digest.split(':')[1]}")
    assert stored is not None
    entries = json.loads(stored[0])["manifests"]
    assert entries[0] == foreign
    assert entries[1]["digest"] == str(ours.digest)
    assert entries[1]["artifactType"] == "application/spdx+json"


def test_referrers_api_answering_non_index_falls_back() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "/referrers/" in request.url.path:
            return httpx.Response(200, json={"what": "ever"})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "x"}]})

    with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        r = client.repository(Reference.parse("r.example/a:b"))
        assert r.referrers(Digest.of(b"subject")) == []


def test_attach_referrer_needs_a_subject() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client, pytest.raises(ManifestError, match="subject"):
        repo(client, fake).attach_referrer(
            RawManifest(image.manifest, OCI_MANIFEST, Digest.parse(image.digest))
        )


def test_html_answer_to_head_is_not_a_manifest() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    fake.answer_html = True
    with client_for(fake) as client, pytest.raises(RegistryError, match="HTML"):
        repo(client, fake).has_manifest(Digest.parse(image.digest))
