"""Merkle tree hashing and proofs of RFC 6962 §2.1 / RFC 9162 §2.1. Pure: no I/O.

Proofs are computed from *perfect subtree* hashes only: a node ``(level, index)`` is the hash
of leaves ``[index * 2**level, (index + 1) * 2**level)``. Every range a proof needs is either
such a node or a right edge ``[start, size)`` that folds from a few of them, so a store that
keeps the perfect nodes (written once, as appends complete them) answers any proof with
O(log n) look-ups. ``inclusion_nodes`` / ``consistency_nodes`` name the nodes a proof needs;
``assemble_proof`` turns fetched nodes into the proof. The ``leaf_hashes`` functions do both
from a list in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]  # (level, index) of a perfect subtree
ProofPlan = list[list[NodeId]]  # one entry per proof element: perfect nodes, left to right


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The perfect nodes that make up ``[start, end)``, left to right.

    ``start`` must be aligned as in the RFC's recursion (a multiple of the largest power of
    two not above ``end - start``), which holds for every range a proof asks for.
    """
    nodes: list[NodeId] = []
    position = start
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        nodes.append((level, position >> level))
        position += 1 << level
        remaining -= 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of a right-edge range from its perfect nodes (largest first)."""
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def inclusion_nodes(index: int, size: int) -> ProofPlan:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]) as the nodes each element needs."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    plan: ProofPlan = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            plan.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            plan.append(range_nodes(lo, lo + k))
            lo = lo + k
    plan.reverse()  # the recursion appends deepest-first
    return plan


def consistency_nodes(old_size: int, new_size: int) -> ProofPlan:
    """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]) as the nodes each element needs."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"cannot prove tree size {old_size} consistent with {new_size}")
    if old_size in (0, new_size):
        return []
    plan: ProofPlan = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        n = hi - lo
        k = _split(n)
        if m <= k:
            plan.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            plan.append(range_nodes(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        plan.append(range_nodes(lo, hi))
    plan.reverse()
    return plan


def assemble_proof(plan: ProofPlan, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    return [fold([nodes[n] for n in element]) for element in plan]


def plan_nodes(plan: ProofPlan) -> set[NodeId]:
    return {n for element in plan for n in element}


def perfect_node(leaf_hashes: Sequence[bytes], node: NodeId) -> bytes:
    """The hash of a perfect subtree computed from leaf hashes (O(2**level))."""
    level, index = node
    start = index << level
    if start + (1 << level) > len(leaf_hashes):
        raise ValueError(f"node {node} lies beyond {len(leaf_hashes)} leaves")
    layer = list(leaf_hashes[start : start + (1 << level)])
    while len(layer) > 1:
        layer = [node_hash(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1; the empty tree's root is SHA-256 of nothing."""
    compact = CompactRange()
    for h in leaf_hashes:
        compact.append(h)
    return compact.root()


def _resolve(plan: ProofPlan, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    nodes = {n: perfect_node(leaf_hashes, n) for n in plan_nodes(plan)}
    return assemble_proof(plan, nodes)


def inclusion_proof(index: int, size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    if size > len(leaf_hashes):
        raise ValueError(f"tree size {size} exceeds the {len(leaf_hashes)} leaves given")
    return _resolve(inclusion_nodes(index, size), leaf_hashes)


def consistency_proof(old_size: int, new_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    if new_size > len(leaf_hashes):
        raise ValueError(f"tree size {new_size} exceeds the {len(leaf_hashes)} leaves given")
    return _resolve(consistency_nodes(old_size, new_size), leaf_hashes)


def _well_formed(proof: Iterable[bytes]) -> bool:
    return all(isinstance(p, bytes) and len(p) == HASH_SIZE for p in proof)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` in ``root_hash``?"""
    if not 0 <= index < size or not _well_formed(proof) or len(leaf) != HASH_SIZE:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``new_root`` of ``new_size`` an extension of the old?"""
    if not 0 <= old_size <= new_size or not _well_formed(proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass
class CompactRange:
    """The frontier of a tree growing from index 0: one perfect subtree hash per set bit of
    ``size``, largest first. Appending is O(log n) and the root costs popcount(size) hashes.
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ValueError(
                f"a compact range of size {self.size} holds {self.size.bit_count()} hashes, "
                f"not {len(self.hashes)}"
            )

    def append(self, leaf: bytes, on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add a leaf hash; ``on_node(level, index, hash)`` sees each perfect node it completes
        at level >= 1 (a store may keep them to answer proofs)."""
        h = leaf
        index = self.size
        level = 0
        while index & 1:
            h = node_hash(self.hashes.pop(), h)
            index >>= 1
            level += 1
            if on_node is not None:
                on_node(level, index, h)
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        return fold(self.hashes)

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> CompactRange:
        if len(data) != HASH_SIZE * size.bit_count():
            raise ValueError(f"a compact range of size {size} needs {size.bit_count()} hashes")
        hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        return cls(size, hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.hashes))
