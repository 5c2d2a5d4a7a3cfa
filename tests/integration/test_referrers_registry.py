"""Concurrent attesters against a real distribution registry (no referrers API: the
``sha256-<hex>`` tag index is the listing, rewritten by every writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.oci.name import Reference
from conveyor.oci.referrers import list_referrers
from conveyor.registry.client import RegistryClient
from tests.support.attesters import parallel_attesters
from tests.support.images import build_image
from tests.support.registry import RunningRegistry, skopeo

pytestmark = [pytest.mark.registry, pytest.mark.slow]


def test_twenty_parallel_attesters_on_a_registry_lose_no_listing(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    image = build_image(tmp_path / "img")
    target = f"{registry.host}/it/parallel-attest:v1"
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:latest",
        f"docker://{target}",
    )
    attached = parallel_attesters(target, 20, tmp_path / "barrier")
    with RegistryClient(insecure_registries=[registry.host]) as client:
        repository = client.repository(Reference.parse(target))
        subject = repository.get_manifest("v1")
        listed = {str(d.digest) for d in list_referrers(repository, subject.digest)}
    assert listed == attached
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{registry.host}/it/parallel-attest:sha256-{subject.digest.encoded}",
    ).stdout
    assert len(json.loads(raw)["manifests"]) == 20


def test_parallel_writers_that_read_back_later_lose_no_listing(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    # As promotions write the index: carried referrers first with the read-back left for
    # later, then their own record, whose one read-back covers both; among plain attesters.
    image = build_image(tmp_path / "img")
    target = f"{registry.host}/it/deferred-attest:v1"
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:latest",
        f"docker://{target}",
    )
    attached = parallel_attesters(target, 16, tmp_path / "barrier", deferred=10)
    with RegistryClient(insecure_registries=[registry.host]) as client:
        repository = client.repository(Reference.parse(target))
        subject = repository.get_manifest("v1")
        listed = {str(d.digest) for d in list_referrers(repository, subject.digest)}
    assert listed == attached
    assert len(listed) == 26
