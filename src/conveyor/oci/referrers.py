"""OCI 1.1 referrers over any ``Repository``, with the referrers tag schema as fallback.

A store without a referrers API (the distribution registry 2.8, an OCI image layout) keeps
an index tagged ``<alg>-<hex>`` of the subject digest that lists every referrer (OCI
distribution spec, "Referrers Tag Schema"). Stores that index referrers themselves expose
``referrers`` / ``attach_referrer`` and are used as they are.

The fallback index is read, merged and written, then read back after a pause that outlasts
another writer's read→write (registries have no conditional write), and written again while
an entry is missing. A writer that updates one index twice (a promotion: the carried
attestations, then its own record) may leave the first read-back out
(``attach_referrers(settle=False)``): the second update's read-back covers both.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def add_all_to_fallback(
    repository: Repository,
    manifests: Sequence[RawManifest],
    *,
    writes: FallbackWrites | None = None,
    settle: bool = True,
) -> None:
    """List stored referrers in their subjects' fallback indexes: one update per subject.

    Read-modify-write: existing entries are kept and a manifest is listed once. Registries
    offer no conditional write, so two writers can race (a test job and a scan job
    attesting one image at once); each writer reads the index back after a pause and writes
    again while an entry it has seen listed, or its own, is missing (bounded attempts).
    Several indexes are all written first and then read back, so their pauses overlap.

    ``writes`` carries what this writer knows of each index from one call to the next.
    With it, ``settle=False`` returns once the indexes are written, before the read-back:
    the caller must settle them later (``writes.settle``, or a later call with
    ``settle=True``). A later update of the same index continues the same read-modify-write
    without waiting (it has entries to write anyway), so its one read-back after the pause
    covers both updates.
    """
    if writes is None:  # nobody to settle later: settle now
        writes, settle = FallbackWrites(), True
    writes.add(repository, manifests)
    if settle:
        writes.settle(repository)


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


class FallbackWrites:
    """One writer's fallback-index updates in one repository, from the first read until a
    read-back after the pause shows them complete. Thread-safe."""

    def __init__(self) -> None:
        self._merges: dict[str, _TagMerge] = {}
        self._lock = threading.Lock()

    @property
    def pending(self) -> tuple[str, ...]:
        """The tags of indexes written but not yet seen complete after a pause."""
        with self._lock:
            return tuple(self._merges)

    def add(self, repository: Repository, manifests: Sequence[RawManifest]) -> None:
        """Merge ``manifests`` into their subjects' indexes and write those that lack one."""
        wanted = wanted_by_tag(manifests)  # refuses a manifest without a subject
        with self._lock:
            for tag, entries in wanted.items():
                merge = self._merges.get(tag)
                if merge is None:
                    merge = self._merges[tag] = _TagMerge(f"{repository.display_name}:{tag}", tag)
                merge.want(entries)
                self._step(repository, merge, settle=False)

    def settle(self, repository: Repository) -> None:
        """Read back every pending index once its pause is over (the soonest first), and
        write again any that another writer replaced, until each is seen complete."""
        with self._lock:
            while self._merges:
                merge = min(self._merges.values(), key=lambda m: m.read_after)
                self._step(repository, merge, settle=True)

    def _step(self, repository: Repository, merge: _TagMerge, *, settle: bool) -> None:
        try:
            done = merge.advance(repository, settle=settle)
        except BaseException:
            del self._merges[merge.tag]
            raise
        if done:
            del self._merges[merge.tag]


@dataclass
class _TagMerge:
    """What one writer knows of one fallback index across its read-merge-write rounds."""

    where: str
    tag: str
    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # ours, and all seen listed
    unwritten: bool = False  # ``known`` gained entries of ours since our last write
    ours: Digest | None = None  # the index we wrote last
    last: Digest | None = None  # what the last read showed
    settled: int = 0  # reads in a row that showed a complete index nobody had changed
    contended: bool = False  # someone else wrote meanwhile: ask for one more settled read
    window: float = 0.0  # the longest read→write we took: another writer's is about as long
    reads: int = 0
    writes: int = 0
    read_after: float = 0.0  # monotonic time of the next read-back (after the pause)

    def want(self, entries: dict[str, dict[str, Any]]) -> None:
        for digest, entry in entries.items():
            if digest not in self.known:
                self.known[digest] = entry
                self.unwritten = True

    def advance(self, repository: Repository, *, settle: bool) -> bool:
        """Read, merge and write until a read after the pause shows the index complete
        (True), or, without ``settle``, until the next step is that pause (False)."""
        while self.reads < FALLBACK_READS and self.writes < FALLBACK_WRITES:
            # A read that is to be followed by a write of our new entries needs no pause
            # first: only the read after our last write must wait out other writers.
            wait = self.read_after - time.monotonic()
            if wait > 0 and not self.unwritten:
                time.sleep(wait)
            self.reads += 1
            started = time.monotonic()
            try:
                if self._round(repository):
                    return True
            except RegistryError as exc:
                if not _transient(exc):
                    raise
                # distribution answers 500 while another writer replaces the tag: read again
                self.contended, self.settled = True, 0
            self.read_after = time.monotonic() + _pause(
                max(self.window, time.monotonic() - started)
            )
            if not settle:
                return False
        raise ManifestError(
            f"{self.where}: other writers kept replacing the referrers index; the referrers "
            "are stored but not all listed there (run again)"
        )

    def _round(self, repository: Repository) -> bool:
        """One read (and write, when an entry is missing); True when it is settled."""
        started = time.monotonic()
        current = _current(repository, self.tag)
        document = _as_document(current, where=self.where)
        for entry in document["manifests"]:
            if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                self.known.setdefault(entry["digest"], entry)
        seen = current.digest if current is not None else None
        merged = merged_fallback(current, self.known, where=self.where)
        if merged is None:
            self.unwritten = False
            if self.ours is None:
                return True  # listed already; we wrote nothing another writer could undo
            self.contended |= seen != self.ours
            self.settled = self.settled + 1 if seen in (self.ours, self.last) else 0
            self.last = seen
            return self.settled >= (2 if self.contended else 1)
        repository.put_manifest(merged, tag=self.tag)
        # An index other than the one we wrote lacks an entry: ours was undone. (The one we
        # wrote lacks only our entries added since: nobody else wrote.)
        self.contended |= self.ours is not None and seen != self.ours
        self.ours, self.last, self.settled, self.unwritten = merged.digest, merged.digest, 0, False
        self.writes += 1
        self.window = max(self.window, time.monotonic() - started)
        return False


def _transient(exc: RegistryError) -> bool:
    return exc.retryable or (exc.status is not None and exc.status >= 500)


def _pause(window: float) -> float:
    """Seconds from a write to its read-back: a few read→write windows, jittered."""
    low, high = _PAUSE_BOUNDS_S
    return min(high, max(low, window * random.uniform(*_PAUSE_FACTOR)))


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


def attach_referrers(
    repository: Repository, manifests: Sequence[RawManifest], *, settle: bool = True
) -> None:
    """Store manifests that have a ``subject``; listed with one index update per subject
    where the store does not index referrers itself.

    ``settle=False``: a store that can (``settle_referrers``) may return before its
    fallback index is read back after the pause; ``settle_referrers`` completes it, and so
    does the store's next ``attach_referrers`` with ``settle=True``."""
    native = getattr(repository, "attach_referrers", None)
    if callable(native):
        if settle or not callable(getattr(repository, "settle_referrers", None)):
            native(manifests)
        else:
            native(manifests, settle=False)
        return
    for manifest in manifests:
        repository.put_manifest(manifest)
    add_all_to_fallback(repository, manifests)


def settle_referrers(repository: Repository) -> None:
    """Complete the fallback-index updates ``attach_referrers(settle=False)`` left pending
    (nothing for a store that has none)."""
    settle = getattr(repository, "settle_referrers", None)
    if callable(settle):
        settle()


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
