"""The referrers tag-schema fallback over any Repository (here an OCI layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.errors import ManifestError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.referrers import attach_referrer, fallback_tag, list_referrers
from conveyor.oci.store import RawManifest
from tests.support.images import build_image

EMPTY = b"{}"


def _referrer(repository: LayoutRepository, subject: RawManifest, name: str) -> RawManifest:
    blob = name.encode()
    repository.write_blob(Digest.of(blob), len(blob), [blob])
    repository.write_blob(Digest.of(EMPTY), len(EMPTY), [EMPTY])
    document = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": f"application/vnd.example.{name}",
        "config": {"mediaType": mt.OCI_EMPTY, "digest": str(Digest.of(EMPTY)), "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": str(Digest.of(blob)), "size": len(blob)}],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": len(subject.data),
        },
    }
    data = json.dumps(document).encode()
    return RawManifest(data, mt.OCI_MANIFEST, Digest.of(data))


class RacingWriter(LayoutRepository):
    """After our first write of the fallback index, another writer (who read it before us)
    replaces it with a version that lacks our entry."""

    def __init__(self, path: Path, intruder: RawManifest) -> None:
        super().__init__(path)
        self.intruder = intruder
        self.raced = False

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        super().put_manifest(manifest, tag=tag)
        if tag is not None and tag.startswith("sha256-") and not self.raced:
            self.raced = True
            stale = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
            stale["manifests"].append(
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": str(self.intruder.digest),
                    "size": len(self.intruder.data),
                }
            )
            data = json.dumps(stale).encode()
            super().put_manifest(RawManifest(data, mt.OCI_INDEX, Digest.of(data)), tag=tag)


def test_attach_and_list_on_a_layout(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    repository = LayoutRepository(img.layout)
    subject = repository.get_manifest("v1")
    first, second = (_referrer(repository, subject, n) for n in ("sbom", "sig"))
    for referrer in (first, second, first):  # attaching twice lists it once
        attach_referrer(repository, referrer)
    listed = list_referrers(repository, subject.digest)
    assert [d.digest for d in listed] == [first.digest, second.digest]
    only_sig = list_referrers(
        repository, subject.digest, artifact_type="application/vnd.example.sig"
    )
    assert [d.digest for d in only_sig] == [second.digest]
    assert fallback_tag(subject.digest) in repository.list_tags()


def test_a_concurrent_writer_does_not_lose_our_entry(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    plain = LayoutRepository(img.layout)
    subject = plain.get_manifest("v1")
    theirs = _referrer(plain, subject, "theirs")
    attach_referrer(plain, theirs)  # stored and listed (then the race overwrites the list)
    ours = _referrer(plain, subject, "ours")
    racing = RacingWriter(img.layout, theirs)
    attach_referrer(racing, ours)
    assert racing.raced
    listed = {d.digest for d in list_referrers(plain, subject.digest)}
    assert listed == {theirs.digest, ours.digest}


def test_a_fallback_tag_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    repository = LayoutRepository(img.layout)
    subject = repository.get_manifest("v1")
    other = build_image(tmp_path / "l", tag=fallback_tag(subject.digest))
    assert other.digest != str(subject.digest)
    with pytest.raises(ManifestError, match="not an index"):
        list_referrers(repository, subject.digest)


class CountingPuts(LayoutRepository):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.index_puts = 0

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        self.index_puts += tag is not None and tag.startswith("sha256-")
        super().put_manifest(manifest, tag=tag)


def test_several_referrers_are_listed_with_one_index_update(tmp_path: Path) -> None:
    from conveyor.oci.referrers import attach_referrers

    img = build_image(tmp_path / "l", tag="v1")
    repository = CountingPuts(img.layout)
    subject = repository.get_manifest("v1")
    referrers = [_referrer(repository, subject, n) for n in ("a", "b", "c")]
    attach_referrers(repository, referrers)
    assert repository.index_puts == 1
    assert [d.digest for d in list_referrers(repository, subject.digest)] == [
        r.digest for r in referrers
    ]
    attach_referrers(repository, referrers)  # all listed already: nothing written
    assert repository.index_puts == 1
