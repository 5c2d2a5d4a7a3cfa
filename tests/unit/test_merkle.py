"""RFC 6962 / 9162 Merkle hashing and proofs: public test vectors, then properties against an
independent, literal transcription of the RFC's recursive definitions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from conveyor.ledger import merkle

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "assets" / "rfc6962" / "vectors.json").read_text()
)
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaf_inputs"]]
ROOTS = {int(k): bytes.fromhex(v) for k, v in VECTORS["roots"].items()}
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# -- the RFC, literally (slow, recursive, independent of the code under test) ----------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:])).digest()


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


# -- vectors -----------------------------------------------------------------------------------


def test_leaf_hashes_match_the_vectors() -> None:
    assert [h.hex() for h in LEAVES] == VECTORS["leaf_hashes"]


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_root_of_each_size_matches_the_vectors(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == ROOTS[size]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[int, int, list[bytes], bytes, bytes]]:
    probes = [
        (index - 1, size, proof, root, leaf),
        (index + 1, size, proof, root, leaf),
        (index ^ 2, size, proof, root, leaf),
        (index, size * 2, proof, root, leaf),
        (index, size // 2, proof, root, leaf),
        (index, size, proof, root, b"WrongLeaf"),
        (index, size, proof, merkle.EMPTY_ROOT, leaf),
        (index, size, proof, SOME_HASH, leaf),
        (index, size, [*proof, b""], root, leaf),
        (index, size, [*proof, root], root, leaf),
        (index, size, [b"", *proof], root, leaf),
        (index, size, [root, *proof], root, leaf),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((index, size, bad, root, leaf))
    if proof:
        probes.append((index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append((index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf))
    return probes


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion_proofs"], ids=lambda v: f"{v['leaf_index']}@{v['tree_size']}"
)
def test_inclusion_proof_vectors(vector: dict[str, Any]) -> None:
    index, size = vector["leaf_index"], vector["tree_size"]
    expected = [bytes.fromhex(h) for h in vector["proof"]]
    assert merkle.inclusion_proof(index, size, LEAVES) == expected
    assert merkle.verify_inclusion(LEAVES[index], index, size, expected, ROOTS[size])
    for probe in _inclusion_probes(index, size, expected, ROOTS[size], LEAVES[index]):
        assert not merkle.verify_inclusion(probe[4], probe[0], probe[1], probe[2], probe[3]), probe


def _consistency_probes(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((old, new, r1, r2, bad))
    return probes


@pytest.mark.parametrize(
    "vector", VECTORS["consistency_proofs"], ids=lambda v: f"{v['old_size']}-{v['new_size']}"
)
def test_consistency_proof_vectors(vector: dict[str, Any]) -> None:
    old, new = vector["old_size"], vector["new_size"]
    expected = [bytes.fromhex(h) for h in vector["proof"]]
    assert merkle.consistency_proof(old, new, LEAVES) == expected
    assert merkle.verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)
    if expected:
        for p in _consistency_probes(old, new, ROOTS[old], ROOTS[new], expected):
            assert not merkle.verify_consistency(*p), p


@pytest.mark.parametrize(
    ("old", "new", "r1", "r2", "proof", "ok"),
    [
        (0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [], True),
        (0, 5, merkle.EMPTY_ROOT, ROOTS[5], [], True),
        (0, 5, SOME_HASH, ROOTS[5], [], False),
        (3, 3, ROOTS[3], ROOTS[3], [], True),
        (3, 3, ROOTS[3], ROOTS[4], [], False),
        (3, 3, ROOTS[3], ROOTS[3], [merkle.EMPTY_ROOT], False),
        (1, 0, ROOTS[1], merkle.EMPTY_ROOT, [], False),
        (2, 1, ROOTS[2], ROOTS[1], [], False),
        (1, 2, ROOTS[1], ROOTS[2], [], False),
    ],
)
def test_consistency_edge_cases(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes], ok: bool
) -> None:
    assert merkle.verify_consistency(old, new, r1, r2, proof) is ok


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (-1, 4)])
def test_inclusion_refuses_impossible_positions(index: int, size: int) -> None:
    assert not merkle.verify_inclusion(SOME_HASH, index, size, [], merkle.EMPTY_ROOT)
    with pytest.raises(ValueError):
        merkle.inclusion_nodes(index, size)


def test_single_leaf_inclusion_needs_matching_root_and_leaf() -> None:
    h = merkle.leaf_hash(b"data")
    assert merkle.verify_inclusion(h, 0, 1, [], h)
    assert not merkle.verify_inclusion(h, 0, 1, [], b"")
    assert not merkle.verify_inclusion(b"", 0, 1, [], h)


def test_proofs_refuse_sizes_beyond_the_leaves() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(0, 9, LEAVES)
    with pytest.raises(ValueError):
        merkle.consistency_proof(2, 9, LEAVES)
    with pytest.raises(ValueError):
        merkle.consistency_nodes(5, 4)


# -- properties against the literal RFC ------------------------------------------------------

leaves_strategy = st.lists(st.binary(max_size=8), min_size=1, max_size=70).map(
    lambda items: [merkle.leaf_hash(x) for x in items]
)


@settings(max_examples=150, deadline=None)
@given(leaves=leaves_strategy, data=st.data())
def test_inclusion_proofs_match_the_rfc_and_verify(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, leaves)
    assert proof == rfc_path(index, leaves[:size])
    root = rfc_mth(leaves[:size])
    assert merkle.root(leaves[:size]) == root
    assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
    # Any tampering fails.
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = (
            bad[i][: bit // 8]
            + bytes([bad[i][bit // 8] ^ (1 << (bit % 8))])
            + bad[i][bit // 8 + 1 :]
        )
        assert not merkle.verify_inclusion(leaves[index], index, size, bad, root)
        assert not merkle.verify_inclusion(leaves[index], index, size, proof[:-1], root)
    assert not merkle.verify_inclusion(leaves[index], index, size, [*proof, SOME_HASH], root)
    other = data.draw(st.integers(0, size - 1))
    if leaves[other] != leaves[index]:
        assert not merkle.verify_inclusion(leaves[other], index, size, proof, root)


@settings(max_examples=150, deadline=None)
@given(leaves=leaves_strategy, data=st.data())
def test_consistency_proofs_match_the_rfc_and_verify(
    leaves: list[bytes], data: st.DataObject
) -> None:
    new = data.draw(st.integers(1, len(leaves)))
    old = data.draw(st.integers(1, new))
    proof = merkle.consistency_proof(old, new, leaves)
    assert proof == ([] if old == new else rfc_subproof(old, leaves[:new], True))
    r1, r2 = rfc_mth(leaves[:old]), rfc_mth(leaves[:new])
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = (
            bad[i][: bit // 8]
            + bytes([bad[i][bit // 8] ^ (1 << (bit % 8))])
            + bad[i][bit // 8 + 1 :]
        )
        assert not merkle.verify_consistency(old, new, r1, r2, bad)
        assert not merkle.verify_consistency(old, new, r1, r2, proof[:-1])
        assert not merkle.verify_consistency(old, new, r1, r2, [*proof, SOME_HASH])
        assert not merkle.verify_consistency(old, new, r2, r1, proof)


@settings(max_examples=60, deadline=None)
@given(leaves=leaves_strategy)
def test_compact_range_tracks_every_root_and_reports_every_perfect_node(
    leaves: list[bytes],
) -> None:
    compact = merkle.CompactRange()
    nodes: dict[merkle.NodeId, bytes] = {}
    for n, leaf in enumerate(leaves, start=1):
        compact.append(leaf, lambda level, index, h: nodes.__setitem__((level, index), h))
        assert compact.root() == rfc_mth(leaves[:n])
        again = merkle.CompactRange.from_bytes(compact.size, compact.to_bytes())
        assert again.root() == compact.root()
    for (level, index), h in nodes.items():
        assert h == rfc_mth(leaves[index << level : (index + 1) << level])
    expected_count = sum((i + 1 & -(i + 1)).bit_length() - 1 for i in range(len(leaves)))
    assert len(nodes) == expected_count


def test_compact_range_refuses_a_frontier_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        merkle.CompactRange.from_bytes(3, b"\x00" * 32)
    with pytest.raises(ValueError):
        merkle.CompactRange(2, [])
