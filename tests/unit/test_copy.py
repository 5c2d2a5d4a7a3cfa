"""Copy engine between any two Repository implementations (here: OCI layouts and fakes)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from conveyor.errors import DigestMismatch, ManifestError, NotFoundError, RegistryError
from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.name import Reference
from conveyor.oci.store import RawManifest, Repository
from conveyor.registry.client import RegistryClient
from conveyor.registry.copy import BLOB_ATTEMPTS, CopyResult, copy
from conveyor.registry.testing import FakeRegistry
from tests.support.images import build_image, build_index


class Unmountable:
    """Delegates to a layout but never mounts, so blobs are streamed; records calls."""

    def __init__(self, inner: LayoutRepository) -> None:
        self.inner = inner
        self.written: list[Digest] = []
        self.manifests_put: list[tuple[Digest, str | None]] = []
        self.lock = threading.Lock()

    @property
    def display_name(self) -> str:
        return self.inner.display_name

    def get_manifest(self, reference: str | Digest) -> RawManifest:
        return self.inner.get_manifest(reference)

    def has_manifest(self, digest: Digest) -> bool:
        return self.inner.has_manifest(digest)

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        self.manifests_put.append((manifest.digest, tag))
        self.inner.put_manifest(manifest, tag=tag)

    def blob_size(self, digest: Digest) -> int | None:
        return self.inner.blob_size(digest)

    def open_blob(
        self, digest: Digest, *, size: int | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        return self.inner.open_blob(digest, size=size)

    def write_blob(self, digest: Digest, size: int, chunks: Iterable[bytes]) -> None:
        self.inner.write_blob(digest, size, chunks)
        with self.lock:
            self.written.append(digest)

    def mount_blob(self, digest: Digest, source: Repository) -> bool:
        return False

    def list_tags(self) -> list[str]:
        return self.inner.list_tags()


class LyingBlobs(Unmountable):
    """A broken source that serves wrong bytes for one blob without checking them."""

    def __init__(self, inner: LayoutRepository, victim: Digest) -> None:
        super().__init__(inner)
        self.victim = victim

    def open_blob(
        self, digest: Digest, *, size: int | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        if digest != self.victim:
            return self.inner.open_blob(digest, size=size)
        path = self.inner.path / "blobs" / digest.algorithm / digest.encoded
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        return contextlib.nullcontext(iter([bytes(data[:1000]), bytes(data[1000:])]))


class LyingManifest(Unmountable):
    """A broken source whose manifest bytes do not hash to the digest it claims."""

    def get_manifest(self, reference: str | Digest) -> RawManifest:
        real = self.inner.get_manifest(reference)
        return RawManifest(real.data + b" ", real.media_type, real.digest)


class Recorder:
    def __init__(self) -> None:
        self.total = 0
        self.blobs = 0
        self.advanced = 0
        self.done: list[tuple[Digest, str]] = []
        self.lock = threading.Lock()

    def start(self, total_bytes: int, blobs: int) -> None:
        self.total, self.blobs = total_bytes, blobs

    def advance(self, nbytes: int) -> None:
        with self.lock:
            self.advanced += nbytes

    def blob_done(self, digest: Digest, how: str) -> None:
        with self.lock:
            self.done.append((digest, how))


def _all_files(layout: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(layout)): p.read_bytes()
        for p in (layout / "blobs").rglob("*")
        if p.is_file()
    }


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_copy_image_streams_every_blob_and_keeps_digest(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", tag="v1", layer_sizes=(300_000, 5000, 2_000_000))
    source = LayoutRepository(img.layout)
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    progress = Recorder()
    result = copy(source, "v1", dest, tags=["v1", "stable"], progress=progress, concurrency=3)

    assert isinstance(result, CopyResult)
    assert str(result.digest) == img.digest
    assert result.manifests == 1
    assert result.blobs_copied == len(img.blobs)
    assert (result.blobs_mounted, result.blobs_skipped) == (0, 0)
    assert result.bytes_transferred == sum(img.blobs.values())
    assert progress.total == sum(img.blobs.values()) == progress.advanced
    assert sorted(how for _, how in progress.done) == ["copied"] * len(img.blobs)
    # Bytes identical to the source, and the manifest is the same bytes.
    for digest, data in _all_files(tmp_path / "dst").items():
        assert (img.layout / digest).read_bytes() == data
    copied = LayoutRepository(tmp_path / "dst")
    assert _sha(copied.get_manifest("stable").data) == img.digest
    assert sorted(copied.list_tags()) == ["stable", "v1"]
    # Manifest last: by digest first, then each tag.
    assert [tag for _, tag in dest.manifests_put] == [None, "v1", "stable"]


def test_blobs_go_largest_first(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", layer_sizes=(3000, 900_000, 40_000, 7_000_000))
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    copy(LayoutRepository(img.layout), "latest", dest, concurrency=1)
    sizes = [img.blobs[str(d)] for d in dest.written]
    assert sizes == sorted(img.blobs.values(), reverse=True)


def test_copy_is_idempotent(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", layer_sizes=(50_000, 70_000))
    source = LayoutRepository(img.layout)
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    first = copy(source, "latest", dest, tags=["latest"])
    second = copy(source, "latest", dest, tags=["latest"])
    assert first.blobs_copied == len(img.blobs)
    assert second.blobs_copied == 0
    assert second.blobs_skipped == len(img.blobs)
    assert second.bytes_transferred == 0
    assert second.digest == first.digest


def test_copy_completes_after_a_crash_midway(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", layer_sizes=(50_000, 70_000, 90_000))
    source = LayoutRepository(img.layout)
    dest_layout = LayoutRepository(tmp_path / "dst", create=True)
    # A previous run committed one blob and then died.
    some = Digest.parse(next(iter(img.blobs)))
    with source.open_blob(some) as chunks:
        dest_layout.write_blob(some, img.blobs[str(some)], chunks)
    result = copy(source, "latest", Unmountable(dest_layout), tags=["latest"])
    assert result.blobs_skipped == 1
    assert result.blobs_copied == len(img.blobs) - 1
    assert str(dest_layout.get_manifest("latest").digest) == img.digest


def test_copy_index_with_all_children(tmp_path: Path) -> None:
    idx = build_index(tmp_path / "src", tag="multi", architectures=("amd64", "arm64", "s390x"))
    source = LayoutRepository(idx.layout)
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    result = copy(source, "multi", dest, tags=["multi"])
    assert str(result.digest) == idx.digest
    assert result.manifests == 4
    top = json.loads(source.get_manifest("multi").data)
    children = [c["digest"] for c in top["manifests"]]
    # Children by digest before the index; the index last (by digest, then the tag).
    assert [str(d) for d, _ in dest.manifests_put] == [*children, idx.digest, idx.digest]
    copied = LayoutRepository(tmp_path / "dst")
    assert _sha(copied.get_manifest("multi").data) == idx.digest
    for child in children:
        assert _sha(copied.get_manifest(Digest.parse(child)).data) == child
    blob_digests = {d for d in idx.blobs if d not in children}
    assert result.blobs_copied == len(blob_digests)
    again = copy(source, "multi", dest, tags=["multi"])
    assert (again.blobs_copied, again.blobs_skipped) == (0, len(blob_digests))


def test_copy_by_digest(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src")
    dest = LayoutRepository(tmp_path / "dst", create=True)
    result = copy(LayoutRepository(img.layout), Digest.parse(img.digest), dest)
    assert str(result.digest) == img.digest
    assert dest.list_tags() == []
    assert dest.has_manifest(result.digest)


def test_layout_to_layout_mounts_by_hard_link(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", layer_sizes=(100_000,))
    dest = LayoutRepository(tmp_path / "dst", create=True)
    result = copy(LayoutRepository(img.layout), "latest", dest, tags=["latest"])
    assert result.blobs_mounted == len(img.blobs)
    assert result.bytes_transferred == 0
    assert str(dest.get_manifest("latest").digest) == img.digest


def test_lying_blob_aborts_and_no_manifest_is_written(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", layer_sizes=(100_000, 200_000, 300_000))
    victim = Digest.parse(sorted(img.blobs, key=lambda d: img.blobs[d])[1])
    source = LyingBlobs(LayoutRepository(img.layout), victim)
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    with pytest.raises(DigestMismatch):
        copy(source, "latest", dest, tags=["latest"])
    assert dest.manifests_put == []
    copied = LayoutRepository(tmp_path / "dst")
    assert copied.list_tags() == []
    assert copied.blob_size(victim) is None
    assert not copied.has_manifest(Digest.parse(img.digest))
    assert json.loads((tmp_path / "dst" / "index.json").read_text())["manifests"] == []


def test_lying_manifest_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src")
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    with pytest.raises(DigestMismatch):
        copy(LyingManifest(LayoutRepository(img.layout)), "latest", dest, tags=["latest"])
    assert dest.manifests_put == []
    assert dest.written == []


def test_manifest_by_digest_must_match(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src")
    other = build_image(tmp_path / "other")

    class WrongOne(Unmountable):
        def get_manifest(self, reference: str | Digest) -> RawManifest:
            data = (other.layout / "blobs/sha256" / other.digest.split(":")[1]).read_bytes()
            return RawManifest(data, "application/vnd.oci.image.manifest.v1+json", _d(data))

    def _d(data: bytes) -> Digest:
        return Digest.parse(_sha(data))

    dest = LayoutRepository(tmp_path / "dst", create=True)
    with pytest.raises(DigestMismatch):
        copy(WrongOne(LayoutRepository(img.layout)), Digest.parse(img.digest), dest)


def test_missing_blob_in_source_writes_no_manifest(tmp_path: Path) -> None:
    img = build_image(tmp_path / "src", layer_sizes=(10_000,))
    layer = max(img.blobs, key=lambda d: img.blobs[d])
    (img.layout / "blobs/sha256" / layer.split(":")[1]).unlink()
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    with pytest.raises(NotFoundError):
        copy(LayoutRepository(img.layout), "latest", dest, tags=["latest"])
    assert dest.manifests_put == []


def test_hostile_manifest_is_not_copied(tmp_path: Path) -> None:
    src = LayoutRepository(tmp_path / "src", create=True)
    bad = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "x/y", "digest": "sha256:" + "a" * 64, "size": -1},
            "layers": [],
        }
    ).encode()
    digest = Digest.parse(_sha(bad))
    src.write_blob(digest, len(bad), [bad])
    dest = Unmountable(LayoutRepository(tmp_path / "dst", create=True))
    with pytest.raises(ManifestError):
        copy(src, digest, dest)
    assert dest.written == []


# --- with the in-memory fake registry (offline) ---------------------------------------------


def _two_registries() -> tuple[FakeRegistry, FakeRegistry, httpx.MockTransport]:
    a, b = FakeRegistry("a.example"), FakeRegistry("b.example")

    def route(request: httpx.Request) -> httpx.Response:
        fake = a if request.url.host == "a.example" else b
        return fake.transport.handle_request(request)

    return a, b, httpx.MockTransport(route)


def _pushed(tmp_path: Path, client: RegistryClient, ref: str) -> tuple[Repository, str]:
    img = build_image(tmp_path / "img", layer_sizes=(40_000, 120_000), labels={"ci.run": "7"})
    repo = client.repository(Reference.parse(ref))
    result = copy(LayoutRepository(img.layout), "latest", repo, tags=["v1"])
    assert str(result.digest) == img.digest
    return repo, img.digest


def test_layout_to_registry_to_registry_keeps_digest(tmp_path: Path) -> None:
    a, b, transport = _two_registries()
    with RegistryClient(transport=transport) as client:
        source, digest = _pushed(tmp_path, client, "a.example/app:v1")
        assert a.manifest("app", "v1") is not None
        dest = client.repository(Reference.parse("b.example/team/app:v1"))
        result = copy(source, "v1", dest, tags=["v1"])
        assert str(result.digest) == digest
        assert result.blobs_copied == 3
        assert result.blobs_mounted == 0
        stored = b.manifest("team/app", "v1")
        assert stored is not None
        assert _sha(stored[0]) == digest
        # Idempotent: everything is there now; a new tag costs no blob request at all.
        before = len(b.requests)
        again = copy(source, "v1", dest, tags=["v1", "v2"])
        assert (again.blobs_copied, again.blobs_skipped, again.bytes_transferred) == (0, 3, 0)
        calls = [(r.method, r.path) for r in b.requests[before:]]
        assert not [c for c in calls if "/blobs/" in c[1]]
        assert ("PUT", "/v2/team/app/manifests/v2") in calls
        assert b.tags("team/app") == {"v1": digest, "v2": digest}


def test_same_registry_copy_mounts(tmp_path: Path) -> None:
    a, _b, transport = _two_registries()
    with RegistryClient(transport=transport) as client:
        source, digest = _pushed(tmp_path, client, "a.example/app:v1")
        dest = client.repository(Reference.parse("a.example/other:v1"))
        result = copy(source, "v1", dest, tags=["v1"])
    assert result.blobs_mounted == 3
    assert result.bytes_transferred == 0
    assert a.tags("other") == {"v1": digest}
    mounts = [r for r in a.requests if r.method == "POST" and "mount=" in r.url]
    assert len(mounts) == 3


def test_lying_registry_blob_gives_mismatch_and_no_manifest(tmp_path: Path) -> None:
    a, b, transport = _two_registries()
    with RegistryClient(transport=transport) as client:
        source, _digest = _pushed(tmp_path, client, "a.example/app:v1")
        manifest = json.loads(a.manifest("app", "v1")[0])  # type: ignore[index]
        victim = manifest["layers"][1]["digest"]
        real = a.blob(victim)
        assert real is not None
        a.lie(victim, bytes([real[0] ^ 1]) + real[1:])
        dest = client.repository(Reference.parse("b.example/app:v1"))
        with pytest.raises(DigestMismatch):
            copy(source, "v1", dest, tags=["v1"])
        layout_dest = LayoutRepository(tmp_path / "dst", create=True)
        with pytest.raises(DigestMismatch):
            copy(source, "v1", layout_dest, tags=["v1"])
    assert b.manifest_count() == 0
    assert not b.has_blob("app", victim)
    assert layout_dest.list_tags() == []
    assert layout_dest.blob_size(Digest.parse(victim)) is None


def test_lying_registry_manifest_is_refused(tmp_path: Path) -> None:
    a, b, transport = _two_registries()
    with RegistryClient(transport=transport) as client:
        source, digest = _pushed(tmp_path, client, "a.example/app:v1")
        data, _ = a.manifest("app", digest)  # type: ignore[misc]
        a.lie(digest, data.replace(b"layers", b"Layers", 1))
        dest = client.repository(Reference.parse("b.example/app:v1"))
        with pytest.raises(DigestMismatch):
            copy(source, Digest.parse(digest), dest, tags=["v1"])
    assert b.manifest_count() == 0


class FlakyBlobs(Unmountable):
    """A source whose first ``failures`` blob streams break off half-way."""

    def __init__(self, inner: LayoutRepository, failures: int, *, retryable: bool = True) -> None:
        super().__init__(inner)
        self.failures = failures
        self.retryable = retryable
        self.opened = 0
        self.broken_opens: dict[Digest, int] = {}

    def open_blob(
        self, digest: Digest, *, size: int | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        with self.lock:
            self.opened += 1
            broken = self.failures > 0
            self.failures -= 1 if broken else 0
            if broken:
                self.broken_opens[digest] = self.broken_opens.get(digest, 0) + 1
        if not broken:
            return self.inner.open_blob(digest, size=size)
        path = self.inner.path / "blobs" / digest.algorithm / digest.encoded
        data = path.read_bytes()

        def cut_off() -> Iterator[bytes]:
            yield data[: len(data) // 2]
            raise RegistryError("connection reset mid-stream", retryable=self.retryable)

        return contextlib.nullcontext(cut_off())


def test_a_blob_cut_off_mid_stream_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("conveyor.registry.copy.BLOB_RETRY_BASE", 0.001)
    img = build_image(tmp_path / "src", tag="v1", layer_sizes=(50_000,))
    source = FlakyBlobs(LayoutRepository(img.layout), failures=2)
    destination = LayoutRepository(tmp_path / "dst", create=True)
    result = copy(source, "v1", destination, tags=["v1"], concurrency=1)
    assert result.digest == Digest.parse(img.digest)
    assert source.opened == len(img.blobs) + 2
    for digest in img.blobs:
        assert destination.blob_size(Digest.parse(digest)) == img.blobs[digest]


@pytest.mark.parametrize(("failures", "retryable"), [(BLOB_ATTEMPTS, True), (1, False)])
def test_blob_retries_are_bounded_and_only_for_transient_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, retryable: bool
) -> None:
    monkeypatch.setattr("conveyor.registry.copy.BLOB_RETRY_BASE", 0.001)
    img = build_image(tmp_path / "src", tag="v1", layer_sizes=(50_000,))
    source = FlakyBlobs(LayoutRepository(img.layout), failures=failures, retryable=retryable)
    destination = LayoutRepository(tmp_path / "dst", create=True)
    with pytest.raises(RegistryError, match="mid-stream") as info:
        copy(source, "v1", destination, tags=["v1"], concurrency=1)
    # the largest blob goes first and is tried BLOB_ATTEMPTS times (or once, if not transient)
    assert list(source.broken_opens.values()) == [failures]
    assert destination.list_tags() == []  # no manifest written
    # Issue 9 #13: a give-up says it gave up, and after how many attempts.
    assert str(info.value).endswith(f"after {BLOB_ATTEMPTS} attempts)") == retryable


# --- Docker schema 2 into an OCI layout (issue 10 #6) ------------------------------------

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _push_docker_image(fake: FakeRegistry, name: str = "team/docker") -> str:
    layer = hashlib.sha256(b"layer").digest() * 64
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": fake.add_blob(name, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": fake.add_blob(name, layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return fake.add_manifest(name, manifest, DOCKER_MANIFEST, tag="v1")


def test_docker_media_types_into_a_layout_are_kept_with_a_warning(tmp_path: Path) -> None:
    fake = FakeRegistry()
    digest = _push_docker_image(fake)
    layout = LayoutRepository(tmp_path / "layout", create=True)
    with RegistryClient(transport=fake.transport) as client:
        source = client.repository(Reference.parse(f"{fake.host}/team/docker:v1"))
        result = copy(source, "v1", layout, tags=["v1"])
        again = copy(source, "v1", layout, tags=["v1"])  # already there: still said
        into_registry = copy(
            source, "v1", client.repository(Reference.parse(f"{fake.host}/team/other:v1"))
        )
    assert str(result.digest) == digest  # never converted
    assert result.media_type == DOCKER_MANIFEST
    assert len(result.warnings) == 1
    assert "\n" not in result.warnings[0]
    assert "Docker schema 2" in result.warnings[0]
    assert "skopeo 1.9 and umoci" in result.warnings[0]
    assert result.to_dict()["warnings"] == list(result.warnings)
    assert again.warnings == result.warnings
    assert into_registry.warnings == ()


def test_an_oci_image_into_a_layout_has_no_warning(tmp_path: Path) -> None:
    image = build_image(tmp_path / "src")
    source = LayoutRepository(image.layout)
    result = copy(source, "latest", LayoutRepository(tmp_path / "dst", create=True))
    assert result.warnings == ()
    assert result.to_dict()["warnings"] == []
