"""The registry requests of one promotion (fake registry, counted): nothing asked twice, and
the destination's referrers index read back once for the carried referrers and the
promotion's own record together — and still repaired when another writer replaced it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import conveyor.oci.referrers as referrers
from conveyor import service
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.referrers import fallback_tag
from tests.unit.service.test_promote import World, make_world

STAGING = "team/web-staging"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path, referrers_api=False)  # as distribution 2.8: the fallback tag
    yield made
    made.ws.opener.close()


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    import time

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(referrers, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return slept


def _attested(world: World) -> str:
    ref = world.built()  # the build record
    world.approve(ref, "production", "alice")
    world.approve(ref, "production", "bob")
    return ref


def test_a_promotion_asks_for_nothing_twice(world: World, pauses: list[float]) -> None:
    ref = _attested(world)
    digest = Digest.parse(ref.split("@")[1])
    before = len(world.fake.requests)
    pauses.clear()
    result = world.promote(ref, "staging")
    assert result.recorded
    assert result.referrers_carried == 3
    sent = [(r.method, r.path) for r in world.fake.requests[before:]]
    index = f"/v2/{STAGING}/manifests/{fallback_tag(digest)}"
    repeated = {
        request: n
        for request, n in Counter(sent).items()
        if n > 1 and request[0] in ("GET", "HEAD", "PUT") and request[1] != index
    }
    assert repeated == {}  # no manifest or blob read or stored twice
    mounts = Counter(r.url for r in world.fake.requests[before:] if "mount=" in r.url)
    assert set(mounts.values()) == {1}  # no blob mounted twice (the shared empty config)
    assert sum(1 for _, path in sent if "/referrers/" in path) == 1  # the API probed once
    # The index: read (what it lists), read and written with the carried referrers, read and
    # written with the promotion, read back once after one pause.
    assert [m for m, path in sent if path == index] == ["GET", "GET", "PUT", "GET", "PUT", "GET"]
    assert len(pauses) == 1
    stored = world.fake.manifest(STAGING, fallback_tag(digest))
    assert stored is not None
    assert len(json.loads(stored[0])["manifests"]) == 4  # build, two approvals, promotion


def test_a_listing_lost_between_the_carry_and_the_record_is_restored(
    world: World, pauses: list[float]
) -> None:
    ref = _attested(world)
    digest = Digest.parse(ref.split("@")[1])
    tag = fallback_tag(digest)
    inner = world.fake.transport
    raced = []

    def route(request: httpx.Request) -> httpx.Response:
        response = inner.handle_request(request)
        path = request.url.path
        if request.method == "PUT" and path.endswith(f"/{STAGING}/manifests/{tag}") and not raced:
            raced.append(True)  # the carry's write: another writer's stale index replaces it
            stale = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
            world.fake.add_manifest(STAGING, json.dumps(stale).encode(), mt.OCI_INDEX, tag=tag)
        return response

    world.ws.opener.close()
    world.ws.opener = service.RegistryOpener(
        service.RegistryOptions(transport=httpx.MockTransport(route))
    )
    result = world.promote(ref, "staging")
    assert raced
    assert result.recorded
    assert result.referrers_carried == 3
    stored = world.fake.manifest(STAGING, tag)
    assert stored is not None
    assert len(json.loads(stored[0])["manifests"]) == 4
