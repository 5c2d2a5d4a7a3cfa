"""The referrers tag-schema fallback over any Repository (here an OCI layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.errors import ManifestError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.layout import REF_NAME_ANNOTATION, LayoutRepository
from conveyor.oci.referrers import attach_referrer, fallback_tag, list_referrers
from conveyor.oci.store import RawManifest
from tests.support.attesters import parallel_attesters
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


class RegistryLike:
    """A store without its own referrers methods (as a registry without the referrers API
    looks to the shared fallback code), kept in an OCI layout."""

    def __init__(self, layout: LayoutRepository) -> None:
        self.layout = layout
        self.display_name = layout.display_name
        self.index_puts = 0

    def get_manifest(self, reference: str | Digest) -> RawManifest:
        return self.layout.get_manifest(reference)

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        self.index_puts += tag is not None and tag.startswith("sha256-")
        self.layout.put_manifest(manifest, tag=tag)

    def __getattr__(self, name: str) -> object:
        if name in ("referrers", "attach_referrers"):
            raise AttributeError(name)
        return getattr(self.layout, name)


class RacingWriter(RegistryLike):
    """After our first write of the fallback index, another writer (who read it before us)
    replaces it with a version that lacks our entry."""

    def __init__(self, layout: LayoutRepository, intruder: RawManifest) -> None:
        super().__init__(layout)
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


class ForgetfulWriter(RegistryLike):
    """Right after our write, another writer who read the index before anyone replaces it
    with one that lists only its own new referrer: ours and an older one are gone."""

    def __init__(self, layout: LayoutRepository, newcomer: RawManifest) -> None:
        super().__init__(layout)
        self.newcomer = newcomer

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        super().put_manifest(manifest, tag=tag)
        if self.index_puts == 1 and tag is not None and tag.startswith("sha256-"):
            entry = {
                "mediaType": mt.OCI_MANIFEST,
                "digest": str(self.newcomer.digest),
                "size": len(self.newcomer.data),
            }
            stale = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry]}
            data = json.dumps(stale).encode()
            self.layout.put_manifest(RawManifest(data, mt.OCI_INDEX, Digest.of(data)), tag=tag)


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
    racing = RacingWriter(plain, theirs)
    attach_referrer(racing, ours)
    assert racing.raced
    listed = {d.digest for d in list_referrers(plain, subject.digest)}
    assert listed == {theirs.digest, ours.digest}


def test_every_entry_we_saw_listed_is_restored_not_only_ours(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    plain = LayoutRepository(img.layout)
    subject = plain.get_manifest("v1")
    older = _referrer(plain, subject, "older")
    attach_referrer(plain, older)
    newcomer = _referrer(plain, subject, "newcomer")
    plain.put_manifest(newcomer)
    ours = _referrer(plain, subject, "ours")
    attach_referrer(ForgetfulWriter(plain, newcomer), ours)
    listed = {d.digest for d in list_referrers(plain, subject.digest)}
    assert listed == {older.digest, newcomer.digest, ours.digest}


def test_a_fallback_tag_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    repository = LayoutRepository(img.layout)
    subject = repository.get_manifest("v1")
    other = build_image(tmp_path / "l", tag=fallback_tag(subject.digest))
    assert other.digest != str(subject.digest)
    with pytest.raises(ManifestError, match="not an index"):
        list_referrers(repository, subject.digest)


def test_several_referrers_are_listed_with_one_index_update(tmp_path: Path) -> None:
    from conveyor.oci.referrers import attach_referrers

    img = build_image(tmp_path / "l", tag="v1")
    repository = RegistryLike(LayoutRepository(img.layout))
    subject = repository.get_manifest("v1")
    referrers = [_referrer(repository.layout, subject, n) for n in ("a", "b", "c")]
    attach_referrers(repository, referrers)
    assert repository.index_puts == 1
    assert [d.digest for d in list_referrers(repository, subject.digest)] == [
        r.digest for r in referrers
    ]
    attach_referrers(repository, referrers)  # all listed already: nothing written
    assert repository.index_puts == 1


def test_a_layout_lists_several_referrers_with_one_index_json_write(tmp_path: Path) -> None:
    from conveyor.oci.referrers import attach_referrers

    img = build_image(tmp_path / "l", tag="v1")
    repository = LayoutRepository(img.layout)
    subject = repository.get_manifest("v1")
    referrers = [_referrer(repository, subject, n) for n in ("a", "b", "c")]
    before = (img.layout / "index.json").stat().st_ino
    attach_referrers(repository, referrers)
    after = (img.layout / "index.json").stat().st_ino
    assert before != after  # rewritten (by rename)...
    attach_referrers(repository, referrers)  # ...and not again when all are listed
    assert (img.layout / "index.json").stat().st_ino == after
    assert [d.digest for d in list_referrers(repository, subject.digest)] == [
        r.digest for r in referrers
    ]
    index = json.loads((img.layout / "index.json").read_text())
    listed = [e["digest"] for e in index["manifests"]]
    assert all(str(r.digest) not in listed for r in referrers)  # blobs under the tag index


def test_twenty_parallel_attesters_on_a_layout_lose_no_listing(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    attached = parallel_attesters(f"oci:{img.layout}:v1", 20, tmp_path / "barrier")
    repository = LayoutRepository(img.layout)
    subject = repository.get_manifest("v1")
    listed = {str(d.digest) for d in list_referrers(repository, subject.digest)}
    assert listed == attached
    index = json.loads((img.layout / "index.json").read_text())
    assert [e["annotations"][REF_NAME_ANNOTATION] for e in index["manifests"]] == [
        "v1",
        fallback_tag(subject.digest),
    ]


def _oras_style_layout(tmp_path: Path) -> tuple[Path, RawManifest, list[RawManifest]]:
    """A layout as oras-go's OCI store leaves it: referrers as untagged index.json entries
    (with their artifactType), no ``sha256-<hex>`` tag index."""
    img = build_image(tmp_path / "l", tag="v1")
    repository = LayoutRepository(img.layout)
    subject = repository.get_manifest("v1")
    referrers = [_referrer(repository, subject, n) for n in ("sbom", "sig")]
    index = json.loads((img.layout / "index.json").read_text())
    for referrer in referrers:
        blob = img.layout / "blobs" / "sha256" / referrer.digest.encoded
        blob.write_bytes(referrer.data)
        entry = {
            "mediaType": referrer.media_type,
            "digest": str(referrer.digest),
            "size": len(referrer.data),
        }
        if referrer is referrers[0]:
            entry["artifactType"] = json.loads(referrer.data)["artifactType"]
        index["manifests"].append(entry)
    tmp = img.layout / "index.json.new"
    tmp.write_text(json.dumps(index, indent="\t"))
    tmp.replace(img.layout / "index.json")
    return img.layout, subject, referrers


def test_untagged_index_entries_with_a_subject_are_referrers(tmp_path: Path) -> None:
    layout, subject, (sbom, sig) = _oras_style_layout(tmp_path)
    repository = LayoutRepository(layout)
    found = list_referrers(repository, subject.digest)
    assert [d.digest for d in found] == [sbom.digest, sig.digest]
    assert [d.artifact_type for d in found] == [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    only_sig = list_referrers(
        repository, subject.digest, artifact_type="application/vnd.example.sig"
    )
    assert [d.digest for d in only_sig] == [sig.digest]
    # Ours go to the tag index as before; both kinds are listed, each once.
    ours = _referrer(repository, subject, "ours")
    attach_referrer(repository, ours)
    attach_referrer(repository, sbom)
    found = list_referrers(LayoutRepository(layout), subject.digest)
    assert sorted(str(d.digest) for d in found) == sorted(str(r.digest) for r in (sbom, sig, ours))
    assert fallback_tag(subject.digest) in repository.list_tags()
