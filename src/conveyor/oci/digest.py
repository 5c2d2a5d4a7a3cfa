"""Content digests (``algorithm:encoded``) and streamed verification of bytes against them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from conveyor.errors import DigestError, DigestMismatch, VerificationError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_ENCODED = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True, slots=True)
class Digest:
    """A validated content address. Only ``sha256`` and ``sha512``, lowercase hex."""

    algorithm: str
    encoded: str

    SUPPORTED: ClassVar[tuple[str, ...]] = tuple(_HEX_LENGTH)

    def __post_init__(self) -> None:
        length = _HEX_LENGTH.get(self.algorithm)
        if length is None:
            raise DigestError(
                f"unsupported digest algorithm {self.algorithm!r} "
                f"(supported: {', '.join(_HEX_LENGTH)})"
            )
        if len(self.encoded) != length or not _ENCODED.fullmatch(self.encoded):
            raise DigestError(
                f"malformed {self.algorithm} digest: expected {length} lowercase hex characters"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        if not sep or not algorithm or not encoded:
            raise DigestError(f"malformed digest {_shorten(text)!r}: expected 'sha256:<64 hex>'")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, _hex(data, algorithm))

    def hasher(self) -> Any:
        return new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.encoded[:12]}"


def new_hasher(algorithm: str) -> Any:
    if algorithm not in _HEX_LENGTH:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def _hex(data: bytes, algorithm: str) -> str:
    h = new_hasher(algorithm)
    h.update(data)
    return str(h.hexdigest())


class SizeMismatch(DigestMismatch):
    """Content of the wrong length: announced or delivered, not the size its descriptor
    gives. A ``DigestMismatch`` (the bytes cannot be the content), with its own words."""

    def __init__(
        self,
        digest: str,
        *,
        expected: int,
        received: int | str | None = None,
        announced: int | None = None,
        where: str = "",
    ) -> None:
        at = f" from {where}" if where else ""
        if announced is not None:
            what = f"the registry announced {announced}"
        else:
            what = f"{received} arrived"
        VerificationError.__init__(
            self,
            f"size mismatch{at}: {digest} is {expected} bytes but {what}; refusing the content",
        )
        self.expected = digest
        self.actual = f"{announced if announced is not None else received} bytes"
        self.expected_size = expected


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def verify_bytes(data: bytes, expected: Digest, *, where: str = "") -> None:
    """Raise ``DigestMismatch`` unless ``data`` hashes to ``expected``."""
    actual = Digest.of(data, expected.algorithm)
    if actual != expected:
        raise DigestMismatch(str(expected), str(actual), where=where)


def sized_chunks(
    chunks: Iterable[bytes], size: int, digest: Digest, *, where: str = ""
) -> Iterator[bytes]:
    """Pass chunks through, refusing more or fewer bytes than the ``size`` announced."""
    received = 0
    for chunk in chunks:
        if not chunk:
            continue
        received += len(chunk)
        if received > size:
            raise SizeMismatch(
                str(digest), expected=size, received=f"more than {size}", where=where
            )
        yield chunk
    if received != size:
        raise SizeMismatch(str(digest), expected=size, received=received, where=where)


def verified_chunks(
    chunks: Iterable[bytes],
    expected: Digest,
    *,
    size: int | None = None,
    where: str = "",
) -> Iterator[bytes]:
    """Pass chunks through while hashing them; the last chunk is held back until verified.

    A consumer that writes what it receives (an upload body, a file) therefore never gets
    the final bytes of a blob whose digest or size is wrong: the generator raises
    ``DigestMismatch`` instead, and the half-written upload is never committed.
    """
    hasher = expected.hasher()
    pending: bytes | None = None
    # The size is checked first: "short by N bytes" says more than the hash of a truncated body.
    source = chunks if size is None else sized_chunks(chunks, size, expected, where=where)
    for chunk in source:
        if not chunk:
            continue
        hasher.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    actual = Digest(expected.algorithm, hasher.hexdigest())
    if actual != expected:
        raise DigestMismatch(str(expected), str(actual), where=where)
    if pending is not None:
        yield pending
