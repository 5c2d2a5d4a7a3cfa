"""OCI 1.1 referrers over any ``Repository``, with the referrers tag schema as fallback.

A store without a referrers API (the distribution registry 2.8, an OCI image layout) keeps
an index tagged ``<alg>-<hex>`` of the subject digest that lists every referrer (OCI
distribution spec, "Referrers Tag Schema"). Stores that index referrers themselves expose
``referrers`` / ``attach_referrer`` and are used as they are.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from typing import Any

from conveyor.errors import ManifestError, NotFoundError, RegistryError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.manifest import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    parse_manifest,
    strict_json_loads,
)
from conveyor.oci.store import RawManifest, Repository


def fallback_tag(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.encoded}"[:128]


def read_fallback(repository: Repository, subject: Digest) -> list[Descriptor]:
    """Referrers listed in the fallback index of ``subject``; [] when there is none."""
    tag = fallback_tag(subject)
    try:
        current = repository.get_manifest(tag)
    except NotFoundError:
        return []
    index = parse_manifest(current.data, content_type=current.media_type)
    if not isinstance(index, ImageIndex):
        raise ManifestError(
            f"{repository.display_name}:{tag} is not an index; cannot read referrers from it"
        )
    return list(index.manifests)


FALLBACK_READS = 40  # bounded: reads back (each after a pause) ...
FALLBACK_WRITES = 12  # ... and writes of one fallback index
# A registry has no conditional write: after writing the fallback index, wait a few times as
# long as our own read→write took (another writer's window is about as long), read it back,
# and write again while an entry we know of is missing.
_PAUSE_FACTOR = (2.0, 4.0)
_PAUSE_BOUNDS_S = (0.01, 2.0)


def add_to_fallback(repository: Repository, manifest: RawManifest) -> None:
    """List ``manifest`` (already stored, with a ``subject``) in its subject's fallback index."""
    add_all_to_fallback(repository, [manifest])


def add_all_to_fallback(repository: Repository, manifests: Sequence[RawManifest]) -> None:
    """List stored referrers in their subjects' fallback indexes: one update per subject.

    Read-modify-write: existing entries are kept and a manifest is listed once. Registries
    offer no conditional write, so two writers can race (a test job and a scan job
    attesting one image at once); each writer reads the index back after a pause and writes
    again while an entry it has seen listed, or its own, is missing (bounded attempts).
    """
    for tag, wanted in wanted_by_tag(manifests).items():
        _merge_into_fallback(repository, tag, wanted)


def wanted_by_tag(manifests: Sequence[RawManifest]) -> dict[str, dict[str, dict[str, Any]]]:
    """The fallback index entries for ``manifests``: {tag: {digest: descriptor JSON}}."""
    by_tag: dict[str, dict[str, dict[str, Any]]] = {}
    for manifest in manifests:
        parsed = parse_manifest(manifest.data, content_type=manifest.media_type)
        if parsed.subject is None:
            raise ManifestError("a referrer needs a manifest with a 'subject'")
        artifact_type = parsed.artifact_type
        if artifact_type is None and isinstance(parsed, ImageManifest):
            artifact_type = parsed.config.media_type
        by_tag.setdefault(fallback_tag(parsed.subject.digest), {})[str(manifest.digest)] = (
            Descriptor(
                media_type=parsed.media_type,
                digest=manifest.digest,
                size=len(manifest.data),
                annotations=dict(parsed.annotations),
                artifact_type=artifact_type,
            ).to_json()
        )
    return by_tag


def merged_fallback(
    current: RawManifest | None, wanted: dict[str, dict[str, Any]], *, where: str
) -> RawManifest | None:
    """The fallback index ``current`` with the ``wanted`` entries it lacks appended, or None
    when it lists them all already."""
    document = _as_document(current, where=where)
    listed = _listed(document)
    missing = [digest for digest in wanted if digest not in listed]
    if not missing:
        return None
    document["manifests"].extend(wanted[digest] for digest in missing)
    data = json.dumps(document, indent=2).encode()
    return RawManifest(data, mt.OCI_INDEX, Digest.of(data))


def _listed(document: dict[str, Any]) -> set[str]:
    return {str(e.get("digest")) for e in document["manifests"] if isinstance(e, dict)}


def _merge_into_fallback(
    repository: Repository, tag: str, wanted: dict[str, dict[str, Any]]
) -> None:
    where = f"{repository.display_name}:{tag}"
    known = dict(wanted)  # ours, and every entry we have seen listed
    ours: Digest | None = None  # the index we wrote last
    last: Digest | None = None  # what the last read showed
    settled = 0  # reads in a row that showed a complete index nobody had changed
    contended = False  # someone else wrote meanwhile: ask for one more settled read
    window = 0.0  # the longest read→write we took: another writer's is about as long
    writes = 0
    for _read in range(FALLBACK_READS):
        if writes >= FALLBACK_WRITES:
            break
        started = time.monotonic()
        try:
            current = _current(repository, tag)
        except RegistryError as exc:
            if not _transient(exc):
                raise
            # distribution answers 500 while another writer replaces the tag: read again
            contended, settled = True, 0
            _pause(max(window, time.monotonic() - started))
            continue
        document = _as_document(current, where=where)
        for entry in document["manifests"]:
            if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                known.setdefault(entry["digest"], entry)
        seen = current.digest if current is not None else None
        merged = merged_fallback(current, known, where=where)
        if merged is None:
            if ours is None:
                return  # listed already; we wrote nothing another writer could undo
            unchanged = seen in (ours, last)
            contended |= seen != ours
            settled = settled + 1 if unchanged else 0
            last = seen
            if settled >= (2 if contended else 1):
                return
        else:
            try:
                repository.put_manifest(merged, tag=tag)
            except RegistryError as exc:
                if not _transient(exc):
                    raise
                contended, settled = True, 0
                _pause(max(window, time.monotonic() - started))
                continue
            if ours is not None:
                contended = True  # our earlier write was undone
            ours, last, settled = merged.digest, merged.digest, 0
            writes += 1
            window = max(window, time.monotonic() - started)
        _pause(max(window, time.monotonic() - started))
    raise ManifestError(
        f"{where}: other writers kept replacing the referrers index; the referrers are "
        "stored but not all listed there (run again)"
    )


def _transient(exc: RegistryError) -> bool:
    return exc.retryable or (exc.status is not None and exc.status >= 500)


def _pause(window: float) -> None:
    low, high = _PAUSE_BOUNDS_S
    time.sleep(min(high, max(low, window * random.uniform(*_PAUSE_FACTOR))))


def _current(repository: Repository, tag: str) -> RawManifest | None:
    try:
        return repository.get_manifest(tag)
    except NotFoundError:
        return None


def _as_document(current: RawManifest | None, *, where: str) -> dict[str, Any]:
    if current is None:
        return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    loaded = strict_json_loads(current.data, what="referrers fallback index")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("manifests"), list):
        raise ManifestError(f"{where} is not an index")
    return loaded


def attach_referrer(repository: Repository, manifest: RawManifest) -> None:
    """Store a manifest that has a ``subject`` so that ``list_referrers`` finds it."""
    attach_referrers(repository, [manifest])


def attach_referrers(repository: Repository, manifests: Sequence[RawManifest]) -> None:
    """Store manifests that have a ``subject``; listed with one index update per subject
    where the store does not index referrers itself."""
    native = getattr(repository, "attach_referrers", None)
    if callable(native):
        native(manifests)
        return
    for manifest in manifests:
        repository.put_manifest(manifest)
    add_all_to_fallback(repository, manifests)


def list_referrers(
    repository: Repository, subject: Digest, *, artifact_type: str | None = None
) -> list[Descriptor]:
    native = getattr(repository, "referrers", None)
    found: list[Descriptor] = (
        native(subject, artifact_type=artifact_type)
        if callable(native)
        else read_fallback(repository, subject)
    )
    if artifact_type is not None:
        found = [d for d in found if d.artifact_type == artifact_type]
    return found


# --- attestations as referrers ---------------------------------------------------------------
# A DSSE envelope stored as an OCI 1.1 artifact whose ``subject`` is the image it is about.

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
ATTESTATION_ARTIFACT_TYPE = "application/vnd.dev.conveyor.attestation.v1+json"
PREDICATE_TYPE_ANNOTATION = "in-toto.io/predicate-type"
EMPTY_JSON = b"{}"


def attestation_manifest(
    subject: RawManifest, envelope: bytes, predicate_type: str, *, created: str
) -> RawManifest:
    """The referrer manifest of one envelope (``created``: ``YYYY-MM-DDTHH:MM:SSZ``)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": ATTESTATION_ARTIFACT_TYPE,
        "config": {
            "mediaType": mt.OCI_EMPTY,
            "digest": str(Digest.of(EMPTY_JSON)),
            "size": len(EMPTY_JSON),
        },
        "layers": [
            {
                "mediaType": DSSE_MEDIA_TYPE,
                "digest": str(Digest.of(envelope)),
                "size": len(envelope),
                "annotations": {PREDICATE_TYPE_ANNOTATION: predicate_type},
            }
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": len(subject.data),
        },
        "annotations": {
            "org.opencontainers.image.created": created,
            PREDICATE_TYPE_ANNOTATION: predicate_type,
        },
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return RawManifest(data, mt.OCI_MANIFEST, Digest.of(data))


def attach_attestation(
    repository: Repository,
    subject: RawManifest,
    envelope: bytes,
    predicate_type: str,
    *,
    created: str | None = None,
) -> str:
    """Store the envelope and its referrer manifest; returns ``repository@digest`` of it."""
    if created is None:
        from datetime import UTC, datetime

        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    repository.write_blob(Digest.of(envelope), len(envelope), [envelope])
    empty = Digest.of(EMPTY_JSON)
    if repository.blob_size(empty) is None:
        repository.write_blob(empty, len(EMPTY_JSON), [EMPTY_JSON])
    raw = attestation_manifest(subject, envelope, predicate_type, created=created)
    attach_referrer(repository, raw)
    return f"{repository.display_name}@{raw.digest}"


def dsse_layer(manifest: ImageManifest | ImageIndex) -> Descriptor | None:
    """The envelope layer of an attestation referrer, or None when it is not one."""
    layers = manifest.layers if isinstance(manifest, ImageManifest) else []
    return next((layer for layer in layers if layer.media_type == DSSE_MEDIA_TYPE), None)
