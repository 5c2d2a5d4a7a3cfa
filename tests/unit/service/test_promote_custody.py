"""Issue 9 #2 and #4 in-process: whatever fails during a promotion, the environment's tags
never name a digest its ledger has not recorded; status says when they are out of step and
``repair`` converges; promotion re-attaches what the ledger recorded but a listing lost.

The in-memory ledger and the fake registry, with faults injected at each step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import service
from conveyor.errors import InputError, LedgerError
from conveyor.ledger import MemoryLedger
from conveyor.oci.digest import Digest
from conveyor.oci.name import parse_target
from conveyor.oci.referrers import fallback_tag, list_referrers
from conveyor.oci.store import RawManifest
from tests.unit.service.test_promote import HOST, World, make_world

TWO_TAGS = f"""\
environments:
  staging:
    repository: {HOST}/team/web-staging
    tags: [x, stable]
    requires: {{}}
"""
REPO = "team/web-staging"


class _FaultyTransport(httpx.BaseTransport):
    """The fake registry behind a switch: ``fail(request)`` true answers 500 instead."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.fail: Callable[[httpx.Request], bool] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.fail is not None and self.fail(request):
            return httpx.Response(500, json={"errors": [{"code": "UNKNOWN", "message": "boom"}]})
        return self.inner.handle_request(request)


def _tag_put(*tags: str) -> Callable[[httpx.Request], bool]:
    def matches(request: httpx.Request) -> bool:
        path = request.url.path
        return request.method == "PUT" and any(path.endswith(f"/manifests/{t}") for t in tags)

    return matches


class _FailingLedger(MemoryLedger):
    fail_append = False

    def append(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_append:
            raise LedgerError("injected: database is locked")
        return super().append(*args, **kwargs)


@pytest.fixture(params=[True, False], ids=["referrers-api", "fallback-tag"])
def world(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[World, _FaultyTransport]]:
    made = make_world(tmp_path, TWO_TAGS, referrers_api=request.param)
    made.ws.opener.close()
    faulty = _FaultyTransport(made.fake.transport)
    opener = service.RegistryOpener(service.RegistryOptions(transport=faulty))
    made.ledger = _FailingLedger()
    made.ws = service.Workspace(config=made.ws.config, ledger=made.ledger, opener=opener)
    yield made, faulty
    opener.close()


def _recorded(world: World) -> str | None:
    history = service.history("staging", workspace=world.ws)
    return history[0].digest if history else None


def _tags_name(world: World) -> dict[str, str]:
    return {tag: str(d) for tag, d in world.tags(REPO).items() if tag in ("x", "stable")}


def _assert_in_step(world: World) -> None:
    recorded = _recorded(world)
    assert set(_tags_name(world).values()) <= {recorded}


def test_a_500_on_the_second_tag_leaves_no_tag_ahead_of_the_ledger(
    world: tuple[World, _FaultyTransport],
) -> None:
    w, faulty = world
    first, second = w.built("v1"), w.built("v2")
    w.promote(first, "staging")
    faulty.fail = _tag_put("stable")
    with pytest.raises(service.TagsNotMovedError, match="conveyor repair staging") as info:
        w.promote(second, "staging")
    assert info.value.exit_code == 3
    # Recorded first: the ledger says `second`; `x` moved, `stable` lags behind — never ahead.
    assert _recorded(w) == second.split("@")[1]
    assert _tags_name(w) == {"x": second.split("@")[1], "stable": first.split("@")[1]}
    faulty.fail = None
    (status,) = service.status(workspace=w.ws)
    assert len(status.tags_apart) == 1
    assert "tag stable names" in status.tags_apart[0]
    assert "conveyor repair staging" in status.tags_apart[0]
    report = service.repair("staging", workspace=w.ws)
    assert report.moved == ("stable",)
    assert report.in_step
    _assert_in_step(w)
    assert service.status(workspace=w.ws)[0].tags_apart == ()
    assert service.repair("staging", workspace=w.ws).apart == ()


def test_a_failing_first_tag_write_after_the_record(world: tuple[World, _FaultyTransport]) -> None:
    w, faulty = world
    ref = w.built()
    faulty.fail = _tag_put("x", "stable")
    with pytest.raises(service.TagsNotMovedError):
        w.promote(ref, "staging")
    assert _recorded(w) == ref.split("@")[1]
    assert _tags_name(w) == {}
    faulty.fail = None
    # The next promote of the same digest says so and converges (nothing new recorded).
    size = w.ledger.size()
    again = w.promote(ref, "staging")
    assert not again.recorded
    assert w.ledger.size() == size
    assert len(again.repaired) == 2
    _assert_in_step(w)
    assert _tags_name(w) == {"x": ref.split("@")[1], "stable": ref.split("@")[1]}


def test_a_database_error_on_the_record_moves_no_tag(world: tuple[World, _FaultyTransport]) -> None:
    w, _ = world
    first, second = w.built("v1"), w.built("v2")
    w.promote(first, "staging")
    w.ledger.fail_append = True  # type: ignore[attr-defined]
    with pytest.raises(LedgerError):
        w.promote(second, "staging")
    w.ledger.fail_append = False  # type: ignore[attr-defined]
    assert _recorded(w) == first.split("@")[1]
    assert _tags_name(w) == {"x": first.split("@")[1], "stable": first.split("@")[1]}
    assert service.status(workspace=w.ws)[0].tags_apart == ()


def _promotion_attestation_of(digest: str) -> Callable[[httpx.Request], bool]:
    """The promotion's own referrer (its subject is the image, written by digest)."""

    def matches(request: httpx.Request) -> bool:
        if request.method != "PUT" or "/manifests/" not in request.url.path:
            return False
        body = request.read()
        return b"promotion/v1" in body and digest.encode() in body

    return matches


def _promotions_listed(world: World, digest: str) -> int:
    found = service.list_attestations(f"{HOST}/{REPO}@{digest}", workspace=world.ws).found
    assert all(item.verified and item.in_ledger for item in found)
    return sum(1 for item in found if item.predicate_type.endswith("/promotion/v1"))


def test_a_failing_attestation_write_after_the_record_is_said_and_repaired(
    world: tuple[World, _FaultyTransport],
) -> None:
    # The attestation is attached after the commit (outside the environment's lock): its
    # failure leaves the registry behind the ledger, never ahead, and says how to mend it.
    w, faulty = world
    first, second = w.built("v1"), w.built("v2")
    w.promote(first, "staging")
    size = w.ledger.size()
    second_digest = second.split("@")[1]
    faulty.fail = _promotion_attestation_of(second_digest)
    with pytest.raises(
        service.AttestationNotAttachedError, match="conveyor repair staging"
    ) as info:
        w.promote(second, "staging")
    assert info.value.exit_code == 3
    assert f"ledger #{size}" in str(info.value)
    faulty.fail = None
    assert w.ledger.size() == size + 1  # recorded once
    assert _recorded(w) == second_digest
    assert _tags_name(w) == {"x": second_digest, "stable": second_digest}  # they follow it
    assert _promotions_listed(w, second_digest) == 0
    (status,) = service.status(workspace=w.ws)
    assert status.tags_apart == (
        f"staging: ledger #{size} records the promotion of {second_digest}, but "
        f"{HOST}/{REPO} does not list its attestation; run conveyor repair staging",
    )
    checked = service.repair("staging", check=True, workspace=w.ws)
    assert not checked.in_step
    assert [m.index for m in checked.unlisted] == [size]
    assert checked.attached == ()
    assert _promotions_listed(w, second_digest) == 0
    fixed = service.repair("staging", workspace=w.ws)
    assert fixed.in_step
    assert fixed.attached == (size,)
    assert fixed.to_dict()["reattached"] == [size]
    assert _promotions_listed(w, second_digest) == 1
    assert service.status(workspace=w.ws)[0].tags_apart == ()
    again = service.repair("staging", workspace=w.ws)
    assert again.unlisted == ()
    assert again.in_step
    assert _promotions_listed(w, second_digest) == 1  # attached once, not twice


def test_a_retried_promote_attaches_what_a_failure_after_the_record_left(
    world: tuple[World, _FaultyTransport],
) -> None:
    w, faulty = world
    first, second, third = w.built("v1"), w.built("v2"), w.built("v3")
    first_digest, second_digest = first.split("@")[1], second.split("@")[1]
    faulty.fail = _promotion_attestation_of(first_digest)
    with pytest.raises(service.AttestationNotAttachedError):
        w.promote(first, "staging")
    faulty.fail = None
    # A retry of the same promotion completes it: nothing new recorded, the attestation on.
    size = w.ledger.size()
    retried = w.promote(first, "staging")
    assert not retried.recorded
    assert w.ledger.size() == size
    assert retried.repaired == (
        f"staging: ledger #{size - 1} records the promotion of {first_digest}, but "
        f"{HOST}/{REPO} does not list its attestation",
    )
    assert _promotions_listed(w, first_digest) == 1
    # A new promotion does not go looking for what an earlier one left (that would race
    # with the attaches of promotions still in flight): status says it, repair mends it.
    faulty.fail = _promotion_attestation_of(second_digest)
    with pytest.raises(service.AttestationNotAttachedError):
        w.promote(second, "staging")
    faulty.fail = None
    result = w.promote(third, "staging")
    assert result.recorded
    assert result.repaired == ()
    assert service.status(workspace=w.ws)[0].tags_apart == ()  # it holds the third now
    report = service.repair("staging", workspace=w.ws)
    assert [m.digest for m in report.unlisted] == [second_digest]
    assert _promotions_listed(w, second_digest) == 1


def test_repair_attaches_every_unlisted_promotion_of_the_history(
    world: tuple[World, _FaultyTransport],
) -> None:
    # Two failures in a row: the second promote cannot mend the first's attestation (the
    # write fails again), so only repair, which reads the whole history, finds both.
    w, faulty = world
    first, second, third = w.built("v1"), w.built("v2"), w.built("v3")
    w.promote(first, "staging")
    digests = [ref.split("@")[1] for ref in (second, third)]
    faulty.fail = lambda r: any(_promotion_attestation_of(d)(r) for d in digests)
    for ref in (second, third):
        with pytest.raises(service.AttestationNotAttachedError):
            w.promote(ref, "staging")
    faulty.fail = None
    (status,) = service.status(workspace=w.ws)
    assert len(status.tags_apart) == 1  # status reads what the environment holds now
    assert digests[1] in status.tags_apart[0]
    report = service.repair("staging", workspace=w.ws)
    assert [m.digest for m in report.unlisted] == digests
    assert report.in_step
    assert [_promotions_listed(w, d) for d in digests] == [1, 1]
    assert service.repair("staging", check=True, workspace=w.ws).unlisted == ()


def test_a_tag_moved_outside_conveyor_is_reported_and_put_back(
    world: tuple[World, _FaultyTransport],
) -> None:
    w, _ = world
    first, second = w.built("v1"), w.built("v2")
    w.promote(first, "staging")
    # What the old order left after a crash: the tag names an unrecorded digest.
    repo = w.ws.opener(parse_target(f"{HOST}/{REPO}"), create=True)
    source = w.ws.opener(parse_target(f"{HOST}/team/build"), create=False)
    from conveyor.registry.copy import copy

    copy(source, Digest.parse(second.split("@")[1]), repo)
    repo.put_manifest(source.get_manifest(Digest.parse(second.split("@")[1])), tag="x")
    (status,) = service.status(workspace=w.ws)
    assert status.tags_apart
    assert "tag x names " + second.split("@")[1] in status.tags_apart[0]
    checked = service.repair("staging", check=True, workspace=w.ws)
    assert not checked.in_step
    assert checked.moved == ()
    assert _tags_name(w)["x"] == second.split("@")[1]
    fixed = service.repair("staging", workspace=w.ws)
    assert fixed.moved == ("x",)
    assert fixed.in_step
    _assert_in_step(w)


def test_repair_with_nothing_recorded_refuses_to_guess(
    world: tuple[World, _FaultyTransport],
) -> None:
    w, _ = world
    ref = w.built()
    repo = w.ws.opener(parse_target(f"{HOST}/{REPO}"), create=True)
    source = w.ws.opener(parse_target(f"{HOST}/team/build"), create=False)
    from conveyor.registry.copy import copy

    copy(source, Digest.parse(ref.split("@")[1]), repo)
    repo.put_manifest(source.get_manifest(Digest.parse(ref.split("@")[1])), tag="x")
    with pytest.raises(service.TagsApartError, match="records no promotion"):
        service.repair("staging", workspace=w.ws)


# --- issue 9 #4: the destination's listing is repaired from the ledger ------------------------


def test_promotion_reattaches_what_the_ledger_recorded_but_the_listing_lost(
    tmp_path: Path,
) -> None:
    # A registry without the referrers API: the listing is the fallback index a concurrent
    # writer can lose entries of.
    w = make_world(tmp_path, TWO_TAGS, referrers_api=False)
    ref = w.built()
    digest = Digest.parse(ref.split("@")[1])
    w.approve(ref, "staging", "alice")
    w.approve(ref, "staging", "bob")
    source = w.ws.opener(parse_target(f"{HOST}/team/build"), create=False)
    assert len(list_referrers(source, digest)) == 3  # build + two approvals
    # A concurrent writer's read-modify-write lost two entries of the fallback index.
    index = source.get_manifest(fallback_tag(digest))
    import json

    document = json.loads(index.data)
    document["manifests"] = document["manifests"][:1]
    data = json.dumps(document).encode()
    source.put_manifest(
        RawManifest(data, index.media_type, Digest.of(data)), tag=fallback_tag(digest)
    )
    assert len(list_referrers(source, digest)) == 1
    result = w.promote(ref, "staging")
    destination = w.ws.opener(parse_target(f"{HOST}/{REPO}"), create=False)
    listed = list_referrers(destination, digest)
    # build + 2 approvals (one carried, two re-attached from the ledger) + the promotion
    assert result.referrers_carried == 3
    assert len(listed) == 4
    envelopes = {str(Digest.parse(f"sha256:{e.envelope_sha256}")) for e in w.ledger.entries()}
    from conveyor.oci.manifest import parse_manifest
    from conveyor.oci.referrers import dsse_layer

    attached = set()
    for descriptor in listed:
        raw = destination.get_manifest(descriptor.digest)
        layer = dsse_layer(parse_manifest(raw.data, content_type=raw.media_type))
        assert layer is not None
        attached.add(str(layer.digest))
        with destination.open_blob(layer.digest) as chunks:
            assert Digest.of(b"".join(chunks)) == layer.digest
    assert attached == envelopes
    listed_again = service.list_attestations(f"{HOST}/{REPO}@{digest}", workspace=w.ws)
    assert len(listed_again.found) == 4


def test_repair_refuses_an_unknown_environment_and_reads_a_fresh_one_as_in_step(
    world: tuple[World, _FaultyTransport],
) -> None:
    w, _ = world
    with pytest.raises(InputError, match="unknown environment"):
        service.repair("prod", workspace=w.ws)
    # Never promoted, repository never written: nothing is out of step, nothing is created.
    report = service.repair("staging", workspace=w.ws)
    assert report.in_step
    assert report.recorded is None
    assert w.fake.tags(REPO) == {}
    assert service.status(workspace=w.ws)[0].tags_apart == ()


def test_a_fresh_layout_environment_is_in_step(tmp_path: Path) -> None:
    from tests.unit.service._pipeline import make_pipeline

    body = "environments:\n  staging:\n    repository: oci:./staging\n    tags: [staging]\n"
    pipeline = make_pipeline(tmp_path / "p", {"deployer": "deployer"}, body + "    requires: {}\n")
    assert service.repair("staging", check=True, config_path=pipeline.config).in_step
    assert service.repair("staging", config_path=pipeline.config).moved == ()
    assert not (pipeline.root / "staging").exists()
    assert service.status(config_path=pipeline.config)[0].tags_apart == ()
