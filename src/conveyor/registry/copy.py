"""Copy an image or a whole index between two repositories, byte for byte.

The destination digest always equals the source digest: manifests are moved as the exact
bytes read (never re-serialised), every byte is verified against its digest on the way, and
blobs go first, child manifests next, the top manifest last. If any blob fails, no manifest
is written, so a destination never names content it does not hold. A re-run skips what is
already there, so it completes an interrupted copy or does nothing; when the destination
already holds the top manifest, only the tags are written (one round trip).

Blobs move concurrently in a bounded thread pool, largest first (the long pole starts
early), each one skipped when the destination has it, mounted when the destination can link
it from the source (same registry, same filesystem), and streamed otherwise: ``open_blob``
chunks flow into ``write_blob`` without temp files or a whole blob in memory; between two
registries each receive lands in one of two buffers the stream reuses (no fresh memory per
chunk). ``hashlib`` releases the GIL on large updates, so threads hash in parallel with the I/O.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.errors import ConveyorError, DigestMismatch, ManifestError, RegistryError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest, verify_bytes
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.manifest import ImageIndex, parse_manifest
from conveyor.oci.store import RawManifest, Repository
from conveyor.registry.client import RegistryRepository
from conveyor.registry.transport import DeadlineExceeded

__all__ = ["CopyProgress", "CopyResult", "copy"]

# An index of indexes is legal; deeper nesting than this is hostile, not useful.
MAX_NESTING = 4
# A blob cut off by a transient failure (a 503 on its upload, a reset, a trickle) is sent
# again from its start, with backoff: as many attempts as a request gets (RetryPolicy).
BLOB_ATTEMPTS = 6
BLOB_RETRY_BASE = 0.25  # seconds before the second attempt; doubled each time, capped
BLOB_RETRY_CAP = 4.0
DOCKER_TYPES = frozenset({mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST})


@dataclass(frozen=True)
class CopyResult:
    source: str
    destination: str
    digest: Digest
    media_type: str
    manifests: int
    blobs_copied: int
    blobs_mounted: int
    blobs_skipped: int
    bytes_transferred: int
    seconds: float
    # One line each, for the face to print; the copy itself succeeded.
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "manifests": self.manifests,
            "blobs_copied": self.blobs_copied,
            "blobs_mounted": self.blobs_mounted,
            "blobs_skipped": self.blobs_skipped,
            "bytes_transferred": self.bytes_transferred,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


class CopyProgress(Protocol):
    """Receives progress from worker threads: implementations must be thread-safe.

    ``advance`` counts bytes accounted for: streamed bytes as they move, and the whole size
    of a blob that was skipped or mounted (so a bar reaches its total).
    ``how`` is ``"copied"``, ``"mounted"`` or ``"skipped"``.
    """

    def start(self, total_bytes: int, blobs: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def blob_done(self, digest: Digest, how: str) -> None: ...


@dataclass
class _Plan:
    manifests: list[RawManifest] = field(default_factory=list)  # children first, top last
    blobs: dict[Digest, int] = field(default_factory=dict)  # digest -> size


@dataclass
class _Tally:
    copied: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, how: str, nbytes: int = 0) -> None:
        with self.lock:
            setattr(self, how, getattr(self, how) + 1)
            self.bytes += nbytes


class _Cancelled(Exception):
    """Raised inside a worker when another blob already failed."""


def copy(
    source: Repository,
    reference: str | Digest,
    destination: Repository,
    *,
    tags: Sequence[str] = (),
    concurrency: int = 6,
    progress: CopyProgress | None = None,
) -> CopyResult:
    """Copy ``reference`` (a tag or a digest) from ``source`` to ``destination``.

    The top manifest is stored by digest and then under each of ``tags``.
    """
    started = time.monotonic()
    top = _verified_manifest(source, reference)
    plan = _Plan()
    _collect(source, top, plan, depth=0, seen=set())

    if destination.has_manifest(top.digest):
        # A manifest is only ever stored after everything it references (copy's order, and
        # registries refuse a manifest naming unknown blobs), so the content is complete:
        # only the tags may be missing. This makes re-runs and new tags one round trip.
        tally = _all_present(plan.blobs, progress)
    else:
        tally = _copy_blobs(source, destination, plan.blobs, max(1, concurrency), progress)
        # Every blob is present and verified: now, and only now, name the content.
        for manifest in plan.manifests[:-1]:
            if not destination.has_manifest(manifest.digest):
                destination.put_manifest(manifest)
        destination.put_manifest(top)
    for tag in tags:
        destination.put_manifest(top, tag=tag)
    warnings = _layout_warnings(destination, plan)

    return CopyResult(
        source=source.display_name,
        destination=destination.display_name,
        digest=top.digest,
        media_type=top.media_type,
        manifests=len(plan.manifests),
        blobs_copied=tally.copied,
        blobs_mounted=tally.mounted,
        blobs_skipped=tally.skipped,
        bytes_transferred=tally.bytes,
        seconds=time.monotonic() - started,
        warnings=warnings,
    )


def _layout_warnings(destination: Repository, plan: _Plan) -> tuple[str, ...]:
    """Docker schema 2 in an OCI layout: kept as it is (the digest is the identity, never
    converted), but skopeo 1.9 and umoci refuse to open such a tag: say so."""
    if not isinstance(destination, LayoutRepository):
        return ()
    if not any(mt.essence(m.media_type) in DOCKER_TYPES for m in plan.manifests):
        return ()
    return (
        f"{destination.display_name} now holds Docker schema 2 media types (kept as they are: "
        "the digest is unchanged); skopeo 1.9 and umoci cannot open such a tag in an OCI "
        "layout, so use an OCI-format image where they must read it",
    )


# --- planning -------------------------------------------------------------------------------


def _verified_manifest(source: Repository, reference: str | Digest) -> RawManifest:
    raw = source.get_manifest(reference)
    # The repository verifies already; a second look costs microseconds and guards the seam.
    verify_bytes(raw.data, raw.digest, where=source.display_name)
    if isinstance(reference, Digest) and raw.digest != reference:
        raise DigestMismatch(str(reference), str(raw.digest), where=source.display_name)
    return raw


def _collect(
    source: Repository, manifest: RawManifest, plan: _Plan, *, depth: int, seen: set[Digest]
) -> None:
    """Post-order walk: children and blobs of ``manifest`` first, then ``manifest`` itself."""
    if manifest.digest in seen:
        return
    seen.add(manifest.digest)
    try:
        parsed = parse_manifest(manifest.data, content_type=manifest.media_type)
    except ManifestError as exc:
        raise ManifestError(
            f"{source.display_name}@{manifest.digest.short}: {exc}; refusing to copy it"
        ) from exc
    if isinstance(parsed, ImageIndex):
        if depth >= MAX_NESTING:
            raise ManifestError(
                f"index {manifest.digest.short} in {source.display_name} nests deeper than "
                f"{MAX_NESTING} levels; refusing it"
            )
        for child_descriptor in parsed.manifests:
            child = _verified_manifest(source, child_descriptor.digest)
            if len(child.data) != child_descriptor.size:
                raise ManifestError(
                    f"index {manifest.digest.short} gives child {child.digest.short} size "
                    f"{child_descriptor.size} but it has {len(child.data)} bytes; refusing it"
                )
            _collect(source, child, plan, depth=depth + 1, seen=seen)
    else:
        for blob in parsed.blobs():
            plan.blobs[blob.digest] = blob.size
    plan.manifests.append(manifest)


# --- blobs ----------------------------------------------------------------------------------


def _all_present(blobs: dict[Digest, int], progress: CopyProgress | None) -> _Tally:
    tally = _Tally(skipped=len(blobs))
    if progress is not None:
        progress.start(sum(blobs.values()), len(blobs))
        progress.advance(sum(blobs.values()))
        for digest in blobs:
            progress.blob_done(digest, "skipped")
    return tally


def _copy_blobs(
    source: Repository,
    destination: Repository,
    blobs: dict[Digest, int],
    concurrency: int,
    progress: CopyProgress | None,
) -> _Tally:
    tally = _Tally()
    if progress is not None:
        progress.start(sum(blobs.values()), len(blobs))
    if not blobs:
        return tally
    failed = threading.Event()
    ordered = sorted(blobs.items(), key=lambda item: (-item[1], item[0]))
    workers = min(concurrency, len(ordered))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="conveyor-copy") as pool:
        futures: list[Future[None]] = [
            pool.submit(_copy_one, source, destination, digest, size, tally, progress, failed)
            for digest, size in ordered
        ]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            # On the first failure (or Ctrl-C) stop the others; leaving the pool joins them.
            if not all(f.done() for f in futures) or any(_error(f) for f in futures):
                failed.set()
                for future in futures:
                    future.cancel()
    errors = [e for e in (_error(f) for f in futures) if e is not None]
    if errors:
        raise _first_error(errors)
    return tally


def _error(future: Future[None]) -> BaseException | None:
    if future.cancelled() or not future.done():
        return None
    return future.exception()


def _first_error(errors: list[BaseException]) -> BaseException:
    real = [e for e in errors if not isinstance(e, _Cancelled)]
    # A verification failure is the most useful thing to report; then the deadline (every
    # other failure at that moment is its echo); then any of ours.
    for kind in (DigestMismatch, DeadlineExceeded, ConveyorError, BaseException):
        for error in real:
            if isinstance(error, kind):
                return error
    return RuntimeError("blob copy cancelled")


def _copy_one(
    source: Repository,
    destination: Repository,
    digest: Digest,
    size: int,
    tally: _Tally,
    progress: CopyProgress | None,
    failed: threading.Event,
) -> None:
    if failed.is_set():
        raise _Cancelled
    mounts_from = getattr(destination, "mounts_from", None)
    mount_first = callable(mounts_from) and bool(mounts_from(source))
    if mount_first and destination.mount_blob(digest, source):
        how, moved = "mounted", 0  # a blob already there is "mounted" again: no bytes either way
    elif destination.blob_size(digest) is not None:
        how, moved = "skipped", 0
    elif not mount_first and destination.mount_blob(digest, source):
        how, moved = "mounted", 0
    else:
        _stream_with_retries(source, destination, digest, size, progress, failed)
        how, moved = "copied", size
    tally.add(how, moved)
    if progress is not None:
        if how != "copied":
            progress.advance(size)
        progress.blob_done(digest, how)


def _stream_with_retries(
    source: Repository,
    destination: Repository,
    digest: Digest,
    size: int,
    progress: CopyProgress | None,
    failed: threading.Event,
) -> None:
    """Stream one blob; a transient network failure mid-way restarts that blob (bounded).

    Wrong bytes (``DigestMismatch``) and refusals are never retried; nothing half-sent is
    ever committed, since the upload completes only after the last chunk is verified.
    """
    for attempt in range(1, BLOB_ATTEMPTS + 1):
        sent = [0]
        try:
            with _open_blob(source, destination, digest, size) as chunks:
                destination.write_blob(digest, size, _watched(chunks, progress, failed, sent))
            return
        except RegistryError as exc:
            if not exc.retryable or failed.is_set():
                raise
            if attempt == BLOB_ATTEMPTS:
                raise RegistryError(
                    f"{exc} (gave up on blob {digest.short} after {attempt} attempts)",
                    status=exc.status,
                    code=exc.code,
                    url=exc.url,
                ) from exc
            if progress is not None:
                progress.advance(-sent[0])  # the bar goes back to where this blob began
            # The source is read again from its start and the upload restarts in a new
            # session: nothing of the failed attempt is reused. Equal jitter: the copy's
            # threads do not come back in step.
            pause = min(BLOB_RETRY_CAP, BLOB_RETRY_BASE * 2 ** (attempt - 1))
            time.sleep(pause / 2 + random.uniform(0, pause / 2))


def _open_blob(
    source: Repository, destination: Repository, digest: Digest, size: int
) -> AbstractContextManager[Iterator[bytes]]:
    # A registry's write_blob sends each chunk before it asks for the next, so the source
    # may lend views into two reused buffers instead of a new bytes object per receive.
    if isinstance(source, RegistryRepository) and isinstance(destination, RegistryRepository):
        return source.open_blob(digest, size=size, transient=True)
    return source.open_blob(digest, size=size)


def _watched(
    chunks: Iterator[bytes],
    progress: CopyProgress | None,
    failed: threading.Event,
    sent: list[int],
) -> Iterator[bytes]:
    for chunk in chunks:
        if failed.is_set():
            raise _Cancelled  # another blob failed: stop before committing this one
        if progress is not None:
            progress.advance(len(chunk))
        sent[0] += len(chunk)
        yield chunk
