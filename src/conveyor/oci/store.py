"""The one seam every artifact store implements: a registry repository or an OCI image layout.

``conveyor.registry.copy`` moves artifacts between any two ``Repository`` objects, so the
same copy (and the same contract tests) serve registry → registry, registry → layout,
layout → registry and layout → layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from conveyor.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class RawManifest:
    """Manifest bytes exactly as stored, with the media type they were served as.

    ``digest`` is always computed from ``data`` by whoever built this object, never taken
    from a header.
    """

    data: bytes
    media_type: str
    digest: Digest


@runtime_checkable
class Repository(Protocol):
    """One repository in one store. Every read is verified against the digest asked for."""

    @property
    def display_name(self) -> str:
        """How the user names this repository (``host:port/repo`` or ``oci:/path``)."""
        ...

    def get_manifest(self, reference: str | Digest) -> RawManifest:
        """Fetch a manifest by tag or digest.

        By digest: the bytes are hashed and a mismatch raises ``DigestMismatch``.
        By tag: the returned digest is the hash of the bytes received.
        Raises ``NotFoundError`` when absent and ``ManifestError`` for hostile documents
        (over 4 MiB, media type disagreeing with Content-Type, duplicate keys...).
        """
        ...

    def has_manifest(self, digest: Digest) -> bool: ...

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        """Store the exact bytes; by digest when ``tag`` is None, otherwise under ``tag``."""
        ...

    def blob_size(self, digest: Digest) -> int | None:
        """Size of a blob this repository holds, or None when it does not hold it."""
        ...

    def open_blob(
        self, digest: Digest, *, size: int | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        """Stream a blob's bytes. The iterator raises ``DigestMismatch`` before yielding its
        last chunk if the bytes do not hash to ``digest`` (see ``verified_chunks``)."""
        ...

    def write_blob(self, digest: Digest, size: int, chunks: Iterable[bytes]) -> None:
        """Store a blob from chunks; commit it only once every byte has been received and
        hashed to ``digest``. An exception from ``chunks`` leaves nothing committed."""
        ...

    def mount_blob(self, digest: Digest, source: Repository) -> bool:
        """Ask the store to link a blob from ``source`` without moving bytes.

        True when the blob is now present; False when a mount is impossible here (other
        store, other registry, or the registry declined), in which case the caller copies.
        """
        ...

    def list_tags(self) -> list[str]: ...
