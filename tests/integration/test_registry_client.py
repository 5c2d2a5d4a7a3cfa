"""The registry client against real CNCF distribution registries, cross-checked by skopeo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import AuthenticationError, DigestMismatch, NotFoundError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.oci.store import RawManifest
from conveyor.registry.client import RegistryClient, RegistryRepository
from tests.support.images import OCI_MANIFEST, BuiltImage, build_image
from tests.support.registry import RunningRegistry, skopeo

pytestmark = pytest.mark.registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _push(image: BuiltImage, registry: RunningRegistry, target: str) -> None:
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        *(
            ["--dest-creds", f"{registry.username}:{registry.password}"]
            if registry.username
            else []
        ),
        f"oci:{image.layout}:latest",
        f"docker://{registry.host}/{target}",
    )


def _inspect_digest(registry: RunningRegistry, target: str) -> str:
    done = skopeo(
        "inspect",
        "--tls-verify=false",
        *registry.skopeo_creds(),
        f"docker://{registry.host}/{target}",
    )
    return str(json.loads(done.stdout)["Digest"])


def _blob_file(image: BuiltImage, digest: str) -> Path:
    return image.layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _chunks(path: Path, size: int = 1 << 16) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


@pytest.fixture
def client(registry: RunningRegistry, registry_b: RunningRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(insecure_registries=[registry.host, registry_b.host]) as c:
        yield c


def _repo(client: RegistryClient, registry: RunningRegistry, name: str) -> RegistryRepository:
    return client.repository(Reference.parse(f"{registry.host}/{name}:latest"))


def test_resolve_and_stream_an_image_pushed_by_skopeo(
    tmp_path: Path, registry: RunningRegistry, client: RegistryClient
) -> None:
    image = build_image(tmp_path / "img", labels={"git.commit": "abc123"})
    _push(image, registry, "it/resolve:v1")
    client.ping(registry.host)
    repo = _repo(client, registry, "it/resolve")
    raw = repo.get_manifest("v1")
    assert str(raw.digest) == image.digest == _inspect_digest(registry, "it/resolve:v1")
    assert raw.data == _blob_file(image, image.digest).read_bytes()
    assert raw.media_type == OCI_MANIFEST
    hint, media_type, size = repo.head_manifest("v1")
    assert (str(hint), media_type, size) == (image.digest, OCI_MANIFEST, len(raw.data))
    assert repo.resolve(raw.digest).data == raw.data
    for digest, size in image.blobs.items():
        assert repo.blob_size(Digest.parse(digest)) == size
        with repo.open_blob(Digest.parse(digest), size=size) as chunks:
            assert b"".join(chunks) == _blob_file(image, digest).read_bytes()
    with pytest.raises(NotFoundError):
        repo.get_manifest("no-such-tag")


@pytest.mark.parametrize("chunk_size", [None, 1500])
def test_upload_then_skopeo_sees_it(
    tmp_path: Path, registry: RunningRegistry, client: RegistryClient, chunk_size: int | None
) -> None:
    image = build_image(tmp_path / "img", layer_sizes=(5000, 3000))
    name = f"it/upload-{chunk_size or 'mono'}"
    repo = _repo(client, registry, name)
    for digest, size in image.blobs.items():
        repo.write_blob(
            Digest.parse(digest),
            size,
            _chunks(_blob_file(image, digest), 700),
            chunk_size=chunk_size,
        )
    data = _blob_file(image, image.digest).read_bytes()
    repo.put_manifest(RawManifest(data, OCI_MANIFEST, Digest.parse(image.digest)), tag="v1")
    assert _inspect_digest(registry, f"{name}:v1") == image.digest
    assert repo.list_tags() == ["v1"]
    assert repo.has_manifest(Digest.parse(image.digest))
    repo.delete_manifest(Digest.parse(image.digest))
    assert not repo.has_manifest(Digest.parse(image.digest))


def test_failed_upload_commits_nothing(registry: RunningRegistry, client: RegistryClient) -> None:
    repo = _repo(client, registry, "it/failed-upload")
    data = os.urandom(200_000)
    digest = Digest.of(data)

    def broken() -> Iterator[bytes]:
        yield data[:100_000]
        raise DigestMismatch(str(digest), "something else", where="test source")

    for chunk_size in (None, 50_000):
        with pytest.raises(DigestMismatch):
            repo.write_blob(digest, len(data), broken(), chunk_size=chunk_size)
        assert repo.blob_size(digest) is None


def test_mount_between_repositories(
    tmp_path: Path, registry: RunningRegistry, client: RegistryClient
) -> None:
    image = build_image(tmp_path / "img")
    _push(image, registry, "it/mount-src:v1")
    src = _repo(client, registry, "it/mount-src")
    dst = _repo(client, registry, "it/mount-dst")
    layer = next(iter(image.blobs))
    assert dst.blob_size(Digest.parse(layer)) is None
    assert dst.mount_blob(Digest.parse(layer), src) is True
    assert dst.blob_size(Digest.parse(layer)) == image.blobs[layer]
    # the source lacks this blob: the registry answers 202, we cancel and say False
    assert dst.mount_blob(Digest.of(os.urandom(64)), src) is False


def test_tags_pagination(tmp_path: Path, registry: RunningRegistry, client: RegistryClient) -> None:
    image = build_image(tmp_path / "img")
    _push(image, registry, "it/tags:t0")
    repo = _repo(client, registry, "it/tags")
    raw = repo.get_manifest("t0")
    for tag in ("t1", "t2", "t3", "t4"):
        repo.put_manifest(raw, tag=tag)
    # distribution 2.8 ignores n= (one unsorted page, no Link); paging itself is unit-tested
    # against the fake. Asking with n must still return every tag, once.
    assert sorted(repo.list_tags(page_size=2)) == ["t0", "t1", "t2", "t3", "t4"]
    assert sorted(repo.list_tags()) == ["t0", "t1", "t2", "t3", "t4"]


def _referrer(repo: RegistryRepository, subject: RawManifest, kind: str) -> RawManifest:
    empty = b"{}"
    empty_digest = Digest.of(empty)
    repo.write_blob(empty_digest, 2, [empty])
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": kind,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": str(empty_digest),
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": str(empty_digest),
                "size": 2,
            }
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": len(subject.data),
        },
    }
    data = json.dumps(doc).encode()
    return RawManifest(data, OCI_MANIFEST, Digest.of(data))


def test_referrers_fallback_on_distribution_2_8(
    tmp_path: Path, registry: RunningRegistry, client: RegistryClient
) -> None:
    image = build_image(tmp_path / "img")
    _push(image, registry, "it/referrers:v1")
    repo = _repo(client, registry, "it/referrers")
    subject = repo.get_manifest("v1")
    assert repo.referrers(subject.digest) == []
    sbom = _referrer(repo, subject, "application/spdx+json")
    sig = _referrer(repo, subject, "application/vnd.example.signature")
    repo.attach_referrer(sbom)
    repo.attach_referrer(sig)
    repo.attach_referrer(sbom)
    found = repo.referrers(subject.digest)
    assert sorted(str(d.digest) for d in found) == sorted([str(sbom.digest), str(sig.digest)])
    assert [
        d.digest for d in repo.referrers(subject.digest, artifact_type="application/spdx+json")
    ] == [sbom.digest]
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{registry.host}/it/referrers:sha256-{subject.digest.encoded}",
    ).stdout
    index = json.loads(raw)
    assert index["mediaType"] == OCI_INDEX
    assert len(index["manifests"]) == 2


def test_basic_auth_registry_with_docker_config(
    tmp_path: Path, auth_registry: RunningRegistry
) -> None:
    image = build_image(tmp_path / "img")
    _push(image, auth_registry, "it/auth:v1")
    assert auth_registry.username is not None
    assert auth_registry.password is not None
    config = tmp_path / "docker"
    config.mkdir()
    token = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    with RegistryClient(
        insecure_registries=[auth_registry.host], docker_config_dir=config
    ) as client:
        client.ping(auth_registry.host)
        repo = _repo(client, auth_registry, "it/auth")
        assert str(repo.get_manifest("v1").digest) == image.digest
        layer = next(iter(image.blobs))
        with repo.open_blob(Digest.parse(layer)) as chunks:
            assert hashlib.sha256(b"".join(chunks)).hexdigest() == layer.split(":")[1]
    with (
        RegistryClient(insecure_registries=[auth_registry.host]) as anonymous,
        pytest.raises(AuthenticationError) as info,
    ):
        _repo(anonymous, auth_registry, "it/auth").get_manifest("v1")
    assert auth_registry.password not in str(info.value)
    (config / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"username": "tester", "password": "not-it-x9"}}})
    )
    with (
        RegistryClient(insecure_registries=[auth_registry.host], docker_config_dir=config) as wrong,
        pytest.raises(AuthenticationError) as info,
    ):
        _repo(wrong, auth_registry, "it/auth").get_manifest("v1")
    assert "not-it-x9" not in str(info.value)


def test_tampered_blob_on_disk_is_detected(
    tmp_path: Path, registry: RunningRegistry, client: RegistryClient
) -> None:
    image = build_image(tmp_path / "img", layer_sizes=(300_000,))
    _push(image, registry, "it/tampered:v1")
    layer = max(image.blobs, key=lambda d: image.blobs[d])
    hex_digest = layer.split(":", 1)[1]
    stored = (
        registry.root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    )
    assert stored.read_bytes() == _blob_file(image, layer).read_bytes()
    stored.write_bytes(os.urandom(image.blobs[layer]))
    src = _repo(client, registry, "it/tampered")
    dst = _repo(client, registry, "it/tampered-copy")
    with (
        pytest.raises(DigestMismatch) as info,
        src.open_blob(Digest.parse(layer), size=image.blobs[layer]) as chunks,
    ):
        dst.write_blob(Digest.parse(layer), image.blobs[layer], chunks)
    assert layer in str(info.value)
    assert dst.blob_size(Digest.parse(layer)) is None
    # a tampered manifest is caught the same way
    manifest_hex = image.digest.split(":", 1)[1]
    manifest_file = (
        registry.root / "docker/registry/v2/blobs/sha256" / manifest_hex[:2] / manifest_hex / "data"
    )
    manifest_file.write_bytes(
        manifest_file.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":  2')
    )
    with pytest.raises(DigestMismatch):
        src.get_manifest(Digest.parse(image.digest))


def test_blob_across_registries(
    registry: RunningRegistry, registry_b: RunningRegistry, client: RegistryClient
) -> None:
    data = os.urandom(20 * 1024 * 1024)
    digest = Digest.of(data)
    src = _repo(client, registry, "it/big")
    dst = _repo(client, registry_b, "it/big")
    src.write_blob(
        digest, len(data), (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    )
    with src.open_blob(digest, size=len(data)) as chunks:
        dst.write_blob(digest, len(data), chunks)
    assert dst.blob_size(digest) == len(data)
    assert dst.mount_blob(digest, src) is False  # another registry: never a mount
