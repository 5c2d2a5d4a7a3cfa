"""What the registry client asks, and asks no more than once: manifests by digest, mounted
blobs, stored referrers, the referrers API probe; and the fallback index read back once for
updates written in two steps (``attach_referrers(settle=False)``), still repaired when
another writer replaced it in between."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

import conveyor.oci.referrers as referrers
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.oci.referrers import fallback_tag, list_referrers
from conveyor.oci.store import RawManifest
from conveyor.registry import client as client_module
from conveyor.registry.client import RegistryClient, RegistryRepository
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import OCI_MANIFEST, PushedImage, client_for, push_image, repo

EMPTY = b"{}"


def _referrer(fake: FakeRegistry, image: PushedImage, name: str) -> RawManifest:
    blob = f"attestation {name}".encode()
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.attestation",
        "config": {
            "mediaType": mt.OCI_EMPTY,
            "digest": fake.add_blob(image.name, EMPTY),
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "text/plain",
                "digest": fake.add_blob(image.name, blob),
                "size": len(blob),
            }
        ],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)},
    }
    data = json.dumps(document).encode()
    return RawManifest(data, OCI_MANIFEST, Digest.of(data))


def _sent(fake: FakeRegistry, method: str, part: str) -> int:
    return sum(1 for r in fake.requests if r.method == method and part in r.url)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The fallback's pauses, recorded (and slept: the order of events is real)."""
    import time

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(referrers, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return slept


# --- asked once -----------------------------------------------------------------------------


def test_a_manifest_read_by_digest_is_not_read_again_but_a_tag_always_is() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client:
        r = repo(client, fake)
        by_tag = r.get_manifest("v1")
        again = r.get_manifest(Digest.parse(image.digest))  # known from the tag's read
        r.get_manifest("v1")
        assert r.has_manifest(Digest.parse(image.digest))  # existence: always asked
    assert by_tag == again
    assert _sent(fake, "GET", "/manifests/v1") == 2
    assert _sent(fake, "GET", f"/manifests/{image.digest}") == 0
    assert _sent(fake, "HEAD", f"/manifests/{image.digest}") == 1


def test_a_remembered_manifest_belongs_to_its_repository() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client:
        repo(client, fake).get_manifest(Digest.parse(image.digest))
        other = client.repository(Reference.parse(f"{fake.host}/team/other"))
        with pytest.raises(Exception, match="not found"):
            other.get_manifest(Digest.parse(image.digest))


def test_what_a_client_remembers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRegistry()
    images = [push_image(fake, tag=f"v{i}") for i in range(3)]
    monkeypatch.setattr(client_module, "SEEN_MANIFEST_BYTES", 2 * len(images[0].manifest) + 10)
    with client_for(fake) as client:
        r = repo(client, fake)
        for image in images:
            r.get_manifest(Digest.parse(image.digest))
        r.get_manifest(Digest.parse(images[0].digest))  # the oldest was forgotten
        r.get_manifest(Digest.parse(images[2].digest))  # the newest was not
    assert _sent(fake, "GET", f"/manifests/{images[0].digest}") == 2
    assert _sent(fake, "GET", f"/manifests/{images[2].digest}") == 1


def test_a_blob_mounted_once_is_not_mounted_again() -> None:
    fake = FakeRegistry()
    image = push_image(fake, "team/build")
    with client_for(fake) as client:
        source = client.repository(Reference.parse(f"{fake.host}/team/build"))
        destination = client.repository(Reference.parse(f"{fake.host}/team/app"))
        layer = Digest.parse(next(iter(image.layers)))
        assert destination.mount_blob(layer, source)
        assert destination.mount_blob(layer, source)
    assert _sent(fake, "POST", "mount=") == 1


def test_threads_mounting_one_blob_ask_once() -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    fake = FakeRegistry()
    image = push_image(fake, "team/build")

    def slow_mounts(request: httpx.Request) -> httpx.Response:
        if "mount=" in str(request.url):
            time.sleep(0.05)  # a real registry's round trip: the other threads ask meanwhile
        return fake.transport.handle_request(request)

    with RegistryClient(transport=httpx.MockTransport(slow_mounts)) as client:
        source = client.repository(Reference.parse(f"{fake.host}/team/build"))
        destination = client.repository(Reference.parse(f"{fake.host}/team/app"))
        layer = Digest.parse(next(iter(image.layers)))
        with ThreadPoolExecutor(max_workers=6) as pool:
            mounted = list(pool.map(lambda _: destination.mount_blob(layer, source), range(6)))
    assert mounted == [True] * 6
    assert _sent(fake, "POST", "mount=") == 1


def test_a_referrer_stored_by_a_copy_is_listed_without_storing_it_again() -> None:
    fake = FakeRegistry(referrers_api=False)
    image = push_image(fake)
    ours = _referrer(fake, image, "ours")
    with client_for(fake) as client:
        r = repo(client, fake)
        r.put_manifest(ours)
        r.attach_referrers([ours])
        listed = [d.digest for d in r.referrers(Digest.parse(image.digest))]
    assert listed == [ours.digest]
    assert _sent(fake, "PUT", f"/manifests/{ours.digest}") == 1


def test_a_registry_without_the_referrers_api_is_asked_once() -> None:
    fake = FakeRegistry(referrers_api=False)  # plain-text 404, as distribution 2.8
    image = push_image(fake)
    push_image(fake, "team/other")
    with client_for(fake) as client:
        subject = Digest.parse(image.digest)
        assert repo(client, fake).referrers(subject) == []
        other = client.repository(Reference.parse(f"{fake.host}/team/other"))
        assert other.referrers(subject) == []
    assert _sent(fake, "GET", "/referrers/") == 1
    assert _sent(fake, "GET", f"/manifests/{fallback_tag(subject)}") == 2


def test_a_404_naming_a_missing_repository_does_not_hide_the_referrers_api() -> None:
    fake = FakeRegistry(referrers_api=True)
    image = push_image(fake)
    ours = _referrer(fake, image, "ours")
    fake.add_manifest("team/app", ours.data, OCI_MANIFEST)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v2/team/gone/"):
            return httpx.Response(
                404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name"}]}
            )
        return fake.transport.handle_request(request)

    with RegistryClient(transport=httpx.MockTransport(route)) as client:
        subject = Digest.parse(image.digest)
        gone = client.repository(Reference.parse(f"{fake.host}/team/gone"))
        assert gone.referrers(subject) == []  # the API's 404, then the fallback tag's
        listed = [d.digest for d in repo(client, fake).referrers(subject)]
    assert listed == [ours.digest]  # through the API, which is still believed


# --- the fallback index written in two steps --------------------------------------------------


def _index(fake: FakeRegistry, image: PushedImage) -> set[str]:
    stored = fake.manifest(image.name, fallback_tag(Digest.parse(image.digest)))
    assert stored is not None
    return {e["digest"] for e in json.loads(stored[0])["manifests"]}


def _replace_index(fake: FakeRegistry, image: PushedImage, *keep: RawManifest) -> None:
    """Another writer, who read the index before us, replaces it."""
    entries = [
        {"mediaType": OCI_MANIFEST, "digest": str(m.digest), "size": len(m.data)} for m in keep
    ]
    data = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    fake.add_manifest(
        image.name, data.encode(), mt.OCI_INDEX, tag=fallback_tag(Digest.parse(image.digest))
    )


def test_two_updates_of_one_index_are_read_back_once(pauses: list[float]) -> None:
    fake = FakeRegistry(referrers_api=False)
    image = push_image(fake)
    carried = [_referrer(fake, image, n) for n in ("build", "tests", "scan")]
    record = _referrer(fake, image, "promotion")
    with client_for(fake) as client:
        r = repo(client, fake)
        r.attach_referrers(carried, settle=False)
        assert len(pauses) == 0  # written, not read back yet
        r.attach_referrers([record])  # continues the same merge without waiting first
    tag = fallback_tag(Digest.parse(image.digest))
    assert _sent(fake, "GET", f"/manifests/{tag}") == 3  # read, read, one read-back
    assert _sent(fake, "PUT", f"/manifests/{tag}") == 2
    assert len(pauses) == 1
    assert _index(fake, image) == {str(m.digest) for m in [*carried, record]}


def test_an_index_replaced_between_the_two_updates_is_repaired(pauses: list[float]) -> None:
    fake = FakeRegistry(referrers_api=False)
    image = push_image(fake)
    theirs = _referrer(fake, image, "theirs")
    fake.add_manifest(image.name, theirs.data, OCI_MANIFEST)
    carried = [_referrer(fake, image, n) for n in ("build", "tests")]
    record = _referrer(fake, image, "promotion")
    with client_for(fake) as client:
        r = repo(client, fake)
        r.attach_referrers(carried, settle=False)
        _replace_index(fake, image, theirs)  # read before our write, written after it
        r.attach_referrers([record])
    assert _index(fake, image) == {str(m.digest) for m in [theirs, *carried, record]}
    assert len(pauses) == 2  # a replaced index asks for a second settled read


def test_a_pending_update_is_read_back_by_settle_and_repaired(pauses: list[float]) -> None:
    from conveyor.oci.referrers import settle_referrers

    fake = FakeRegistry(referrers_api=False)
    image = push_image(fake)
    older = _referrer(fake, image, "older")
    fake.add_manifest(image.name, older.data, OCI_MANIFEST)
    _replace_index(fake, image, older)
    carried = [_referrer(fake, image, n) for n in ("build", "tests")]
    with client_for(fake) as client:
        r = repo(client, fake)
        r.attach_referrers(carried, settle=False)
        assert isinstance(r, RegistryRepository)
        assert r._fallback.pending == (fallback_tag(Digest.parse(image.digest)),)
        _replace_index(fake, image)  # another writer's stale copy: nothing listed
        settle_referrers(r)
        assert r._fallback.pending == ()
        listed = {d.digest for d in list_referrers(r, Digest.parse(image.digest))}
    assert listed == {older.digest, *(m.digest for m in carried)}
    assert pauses  # the read-back waited for other writers' windows


def test_several_indexes_are_written_first_and_read_back_after_one_pause(
    pauses: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(referrers, "_PAUSE_BOUNDS_S", (0.05, 0.05))  # every pause 50 ms
    fake = FakeRegistry(referrers_api=False)
    images = [push_image(fake, tag=f"v{i}") for i in range(3)]
    attached = [_referrer(fake, image, f"for-{image.tag}") for image in images]
    with client_for(fake) as client:
        repo(client, fake).attach_referrers(attached)
    for image, referrer in zip(images, attached, strict=True):
        assert _index(fake, image) == {str(referrer.digest)}
    # Each read-back waits only for what is left of its own pause: one pause, not three.
    assert sum(pauses) < 0.09
