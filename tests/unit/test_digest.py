from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, strategies as st

from conveyor.errors import DigestError, DigestMismatch
from conveyor.oci.digest import Digest, verified_chunks

GOOD = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256",
        ":" + "a" * 64,
        "sha256:",
        "SHA256:" + "a" * 64,
        "sha256:" + "g" * 64,
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
        "",
    ],
)
def test_malformed_digests_are_refused(text: str) -> None:
    with pytest.raises(DigestError):
        Digest.parse(text)


def test_round_trip_and_compute() -> None:
    assert str(Digest.parse(GOOD)) == GOOD
    d = Digest.of(b"hello")
    assert d.encoded == hashlib.sha256(b"hello").hexdigest()
    assert Digest.of(b"hello", "sha512").encoded == hashlib.sha512(b"hello").hexdigest()


@given(st.lists(st.binary(min_size=0, max_size=64), max_size=10))
def test_verified_chunks_passes_good_bytes(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    out = b"".join(verified_chunks(chunks, Digest.of(data), size=len(data)))
    assert out == data


@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=10))
def test_verified_chunks_never_yields_the_last_chunk_of_bad_bytes(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    wrong = Digest.of(data + b"x")
    received = bytearray()

    def drain() -> None:
        for chunk in verified_chunks(chunks, wrong):
            received.extend(chunk)

    with pytest.raises(DigestMismatch):
        drain()
    assert len(received) < len(data)


def test_verified_chunks_checks_size() -> None:
    data = b"abc"
    with pytest.raises(DigestMismatch):
        list(verified_chunks([data], Digest.of(data), size=2))
    with pytest.raises(DigestMismatch):
        list(verified_chunks([data], Digest.of(data), size=4))
