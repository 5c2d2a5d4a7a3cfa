"""The ledger protocol and its in-memory implementation.

Every store keeps the same facts: dense entries from index 0, the perfect Merkle nodes the
appends complete (so proofs need O(log n) look-ups), a head (size, root, frontier) and the
checkpoints it signed. ``MemoryLedger`` is the reference for the contract tests that the SQL
store also passes.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from conveyor.errors import InputError, LedgerError
from conveyor.ledger import merkle
from conveyor.ledger.models import (
    Checkpoint,
    CheckpointSigner,
    DuplicateEvidence,
    Entry,
    LedgerTampered,
    format_time,
    leaf_data,
    sign_checkpoint,
    statement_sha256,
)

MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
_FIELD_LIMITS = {
    "subject_digest": 512,
    "subject_name": 1024,
    "predicate_type": 512,
    "kind": 64,
    "environment": 128,
    "commit": 128,
    "signer": 256,
    "keyid": 512,
}


def _no_nodes(wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
    raise NotImplementedError("this view cannot look up Merkle nodes")


def _no_replays(digests: Sequence[str] | None) -> list[list[int]]:
    return []


@dataclass
class LedgerView:
    """One consistent reading of a ledger for the audit: the head as stored, the stored
    checkpoints, and every stored entry row from ``start`` in index order (gaps and all).

    ``nodes(wanted)`` looks up stored perfect Merkle nodes (level 0: entries' stored leaf
    hashes); ``replays(digests)`` lists, per statement digest stored more than once (among
    ``digests``, or all when ``None``), the indexes holding it in order. Call both before
    iterating ``entries``, or after it is exhausted.
    """

    origin: str
    size: int
    root: bytes
    checkpoints: list[Checkpoint]
    entries: Iterator[Entry]
    start: int = 0
    nodes: Callable[[set[merkle.NodeId]], dict[merkle.NodeId, bytes]] = _no_nodes
    replays: Callable[[Sequence[str] | None], list[list[int]]] = _no_replays


class Ledger(Protocol):
    """An append-only, Merkle-hashed log of DSSE envelopes."""

    @property
    def origin(self) -> str: ...

    def append(
        self,
        envelope: bytes,
        *,
        subject_digest: str,
        subject_name: str,
        predicate_type: str,
        kind: str,
        signer: str,
        keyid: str,
        environment: str | None = None,
        commit: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Entry: ...

    def entries(
        self,
        *,
        subject_digest: str | None = None,
        kind: str | None = None,
        environment: str | None = None,
        commit: str | None = None,
        start: int = 0,
        limit: int | None = None,
        end: int | None = None,
        newest_first: bool = False,
        commit_prefix: str | None = None,
    ) -> list[Entry]:
        """Entries with ``start <= index < end`` matching every filter given, in index order
        (``newest_first``: reversed, so ``limit`` keeps the newest)."""
        ...

    def size(self) -> int: ...

    def head(self) -> tuple[int, bytes]:
        """The size and root of the head, read together."""
        ...

    def reading(self) -> AbstractContextManager[None]:
        """A block of one operation's reads: a database ledger serves them on one connection
        (see ``SqlLedger.reading``); others change nothing."""
        ...

    def root(self) -> bytes: ...

    def root_at(self, size: int) -> bytes: ...

    def entry(self, index: int) -> Entry: ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]: ...

    def checkpoint(self, signer: CheckpointSigner) -> Checkpoint: ...

    def checkpoints(self, *, last: int | None = None) -> list[Checkpoint]:
        """Stored checkpoints, oldest first; ``last``: only the newest ``last`` of them."""
        ...

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (one primary-key probe), or ``None``."""
        ...

    def serialized(self, lock_name: str) -> AbstractContextManager[None]:
        """A database-level lock named ``lock_name`` held for the block; appends inside the
        block commit together when it ends and are rolled back if it raises."""
        ...

    def audit_view(self, *, start: int = 0) -> AbstractContextManager[LedgerView]: ...

    def verify_inclusion(self, entries: Iterable[Entry], *, size: int, root: bytes) -> None:
        """Raise ``LedgerTampered`` unless every entry, as its row stands, is a leaf of the
        tree of ``size`` entries with ``root`` (take both from a verified checkpoint)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class NewEntry:
    """Validated facts of an entry about to be appended, before it has an index."""

    envelope: bytes
    envelope_sha256: str
    subject_digest: str
    subject_name: str
    predicate_type: str
    kind: str
    environment: str | None
    commit: str | None
    signer: str
    keyid: str
    recorded_at: str
    statement_sha256: str

    def at(self, index: int, tree_root: bytes, leaf: bytes) -> Entry:
        return Entry(
            index=index,
            envelope=self.envelope,
            envelope_sha256=self.envelope_sha256,
            leaf_hash=leaf,
            subject_digest=self.subject_digest,
            subject_name=self.subject_name,
            predicate_type=self.predicate_type,
            kind=self.kind,
            environment=self.environment,
            commit=self.commit,
            signer=self.signer,
            keyid=self.keyid,
            recorded_at=self.recorded_at,
            tree_root=tree_root,
            statement_sha256=self.statement_sha256,
        )

    def leaf_hash(self, index: int) -> bytes:
        return merkle.leaf_hash(
            leaf_data(
                index=index,
                recorded_at=self.recorded_at,
                kind=self.kind,
                subject_digest=self.subject_digest,
                subject_name=self.subject_name,
                predicate_type=self.predicate_type,
                environment=self.environment,
                commit=self.commit,
                signer=self.signer,
                keyid=self.keyid,
                envelope_sha256=self.envelope_sha256,
            )
        )


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InputError(f"ledger entry needs a non-empty {name}")
    if len(value) > _FIELD_LIMITS[name]:
        raise InputError(f"ledger entry {name} is longer than {_FIELD_LIMITS[name]} characters")
    if not value.isprintable():
        raise InputError(f"ledger entry {name} contains control characters")


def new_entry(
    envelope: bytes,
    *,
    subject_digest: str,
    subject_name: str,
    predicate_type: str,
    kind: str,
    signer: str,
    keyid: str,
    environment: str | None,
    commit: str | None,
    recorded_at: datetime | None,
) -> NewEntry:
    """Validate append arguments (raises ``InputError``) into a ``NewEntry``."""
    if not isinstance(envelope, bytes) or not envelope:
        raise InputError("ledger entry needs the envelope as non-empty bytes")
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise InputError(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    _check_text("subject_digest", subject_digest)
    _check_text("subject_name", subject_name)
    _check_text("predicate_type", predicate_type)
    _check_text("kind", kind)
    _check_text("signer", signer)
    _check_text("keyid", keyid)
    _check_text("environment", environment, optional=True)
    _check_text("commit", commit, optional=True)
    moment = format_time(recorded_at if recorded_at is not None else datetime.now(UTC))
    return NewEntry(
        envelope=envelope,
        envelope_sha256=hashlib.sha256(envelope).hexdigest(),
        subject_digest=subject_digest,
        subject_name=subject_name,
        predicate_type=predicate_type,
        kind=kind,
        environment=environment,
        commit=commit,
        signer=signer,
        keyid=keyid,
        recorded_at=moment,
        statement_sha256=statement_sha256(envelope),
    )


@dataclass(frozen=True)
class PlannedAppend:
    """An append worked out under the head lock: the entry, the perfect nodes it completes
    as ``(level, index, hash)``, and the head after it."""

    entry: Entry
    nodes: list[tuple[int, int, bytes]]
    frontier: bytes

    @property
    def head(self) -> tuple[int, bytes, bytes]:
        """The new head's ``(size, root, frontier)``."""
        return self.entry.index + 1, self.entry.tree_root, self.frontier


def plan_append(fresh: NewEntry, size: int, frontier: bytes, held: int | None) -> PlannedAppend:
    """The append of ``fresh`` to the head ``(size, frontier)`` read under the write lock;
    ``DuplicateEvidence`` when the statement is held already (``held``: its lowest index).
    Under the lock no other append can race the check; the unique index is the backstop for
    writers that bypass this code."""
    if held is not None:
        raise duplicate_error(fresh.statement_sha256, int(held))
    compact = merkle.CompactRange.from_bytes(int(size), bytes(frontier))
    leaf = fresh.leaf_hash(int(size))
    nodes: list[tuple[int, int, bytes]] = []
    compact.append(leaf, lambda lv, ix, h: nodes.append((lv, ix, h)))
    return PlannedAppend(fresh.at(int(size), compact.root(), leaf), nodes, compact.to_bytes())


def head_extends(ledger: Ledger, old: tuple[int, bytes], new: tuple[int, bytes]) -> bool:
    """The tree ``new`` (size, root) is ``old`` or grew from it, by ``ledger``'s consistency
    proof (RFC 9162): an append-only ledger only grows, and never changes what it held."""
    (old_size, old_root), (size, root) = old, new
    if size < old_size:
        return False
    proof = ledger.consistency_proof(old_size, size) if old_size < size else []
    return merkle.verify_consistency(old_size, size, old_root, root, proof)


def check_proof_sizes(size: int, *, index: int | None = None, old: int | None = None) -> None:
    if index is not None and not 0 <= index < size:
        raise InputError(f"no ledger entry {index} in a tree of size {size}")
    if old is not None and not 0 <= old <= size:
        raise InputError(f"cannot prove size {old} consistent with size {size}")


def duplicate_error(statement: str, index: int | None) -> DuplicateEvidence:
    where = f"entry {index}" if index is not None else "an entry"
    return DuplicateEvidence(
        f"the signed statement sha256:{statement[:16]}… is already in the ledger as {where}: "
        "one statement is one entry (a replayed envelope is refused)",
        index=index,
        statement_sha256=statement,
    )


def check_inclusion(
    entries: Iterable[Entry],
    *,
    size: int,
    root: bytes,
    nodes: Callable[[set[merkle.NodeId]], dict[merkle.NodeId, bytes]],
) -> None:
    """The batched inclusion check behind ``verify_inclusion``: each entry's leaf is
    recomputed from its facts and envelope bytes, every proof's nodes fetched in one
    look-up, each proof checked against ``root``."""
    wanted = list(entries)
    bad: list[int] = []
    plans: dict[int, merkle.ProofPlan] = {}
    for entry in wanted:
        if not 0 <= entry.index < size:
            bad.append(entry.index)
        elif entry.index not in plans:
            plans[entry.index] = merkle.inclusion_nodes(entry.index, size)
    found: dict[merkle.NodeId, bytes] = {}
    needed = {n for plan in plans.values() for n in merkle.plan_nodes(plan)}
    if needed:
        try:
            found = nodes(needed)
        except (InputError, LedgerError):
            found = {}
    for entry in wanted:
        plan = plans.get(entry.index)
        if plan is None:
            continue
        if any(n not in found for n in merkle.plan_nodes(plan)):
            bad.append(entry.index)
            continue
        leaf = entry.computed_leaf_hash()
        if hashlib.sha256(
            entry.envelope
        ).hexdigest() != entry.envelope_sha256 or not merkle.verify_inclusion(
            leaf, entry.index, size, merkle.assemble_proof(plan, found), root
        ):
            bad.append(entry.index)
    if bad:
        bad = sorted(set(bad))
        shown = ", ".join(str(i) for i in bad[:10]) + (" …" if len(bad) > 10 else "")
        raise LedgerTampered(
            f"ledger entries {shown} do not belong to the signed tree head of size {size}: "
            "the ledger was changed outside conveyor; run `conveyor audit verify`",
            indexes=bad,
        )


def new_origin() -> str:
    return f"conveyor.ledger/{uuid.uuid4().hex}"


Conn = TypeVar("Conn")


class NodeTableProofs(Generic[Conn]):
    """Proofs of a store that keeps the Merkle nodes in a table (``ledger.sql`` on
    SQLAlchemy, ``ledger.sqlite`` on the stdlib driver): written once, over the store's own
    ``_read`` (a connection for one read), ``_head`` and ``_find_nodes``."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    def _head(self, conn: Conn) -> tuple[int, bytes]:
        raise NotImplementedError

    def _find_nodes(self, conn: Conn, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        raise NotImplementedError

    def _nodes(self, conn: Conn, wanted: set[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        found = self._find_nodes(conn, wanted)
        missing = wanted - found.keys()
        if missing:
            raise LedgerError(
                f"ledger database {self.url} lacks Merkle node {min(missing)}; "
                "run `conveyor audit verify`: the ledger may have been tampered with"
            )
        return found

    def _proof(self, conn: Conn, plan: merkle.ProofPlan) -> list[bytes]:
        return merkle.assemble_proof(plan, self._nodes(conn, merkle.plan_nodes(plan)))

    def verify_inclusion(self, entries: Iterable[Entry], *, size: int, root: bytes) -> None:
        """Check rows against a signed tree head: one batched look-up of every proof's nodes,
        then each row's leaf (recomputed from its facts) proved into ``root``."""
        with self._read() as conn:
            check_inclusion(
                entries, size=size, root=root, nodes=lambda w: self._find_nodes(conn, w)
            )

    def root_at(self, size: int) -> bytes:
        with self._read() as conn:
            check_proof_sizes(self._head(conn)[0], old=size)
            if size == 0:
                return merkle.EMPTY_ROOT
            needed = merkle.range_nodes(0, size)
            nodes = self._nodes(conn, set(needed))
            return merkle.fold([nodes[n] for n in needed])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        with self._read() as conn:
            current = self._head(conn)[0]
            size = current if size is None else size
            check_proof_sizes(current, old=size)
            check_proof_sizes(size, index=index)
            return self._proof(conn, merkle.inclusion_nodes(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        with self._read() as conn:
            current = self._head(conn)[0]
            new_size = current if new_size is None else new_size
            check_proof_sizes(current, old=new_size)
            check_proof_sizes(new_size, old=old_size)
            return self._proof(conn, merkle.consistency_nodes(old_size, new_size))


@dataclass
class _MemoryState:
    entries: list[Entry] = field(default_factory=list)
    nodes: dict[merkle.NodeId, bytes] = field(default_factory=dict)
    compact: merkle.CompactRange = field(default_factory=merkle.CompactRange)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    statements: dict[str, int] = field(default_factory=dict)


class MemoryLedger:
    """The ledger in process memory: the reference implementation for tests and tools."""

    def __init__(self, origin: str | None = None) -> None:
        self._origin = origin or new_origin()
        self._state = _MemoryState()
        self._lock = threading.RLock()

    @property
    def origin(self) -> str:
        return self._origin

    def append(
        self,
        envelope: bytes,
        *,
        subject_digest: str,
        subject_name: str,
        predicate_type: str,
        kind: str,
        signer: str,
        keyid: str,
        environment: str | None = None,
        commit: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Entry:
        fresh = new_entry(
            envelope,
            subject_digest=subject_digest,
            subject_name=subject_name,
            predicate_type=predicate_type,
            kind=kind,
            signer=signer,
            keyid=keyid,
            environment=environment,
            commit=commit,
            recorded_at=recorded_at,
        )
        with self._lock:
            state = self._state
            if fresh.statement_sha256 in state.statements:
                raise duplicate_error(
                    fresh.statement_sha256, state.statements[fresh.statement_sha256]
                )
            index = state.compact.size
            state.statements[fresh.statement_sha256] = index
            leaf = fresh.leaf_hash(index)
            state.nodes[(0, index)] = leaf

            def keep(level: int, idx: int, h: bytes) -> None:
                state.nodes[(level, idx)] = h

            state.compact.append(leaf, keep)
            entry = fresh.at(index, state.compact.root(), leaf)
            state.entries.append(entry)
            return entry

    def entries(
        self,
        *,
        subject_digest: str | None = None,
        kind: str | None = None,
        environment: str | None = None,
        commit: str | None = None,
        start: int = 0,
        limit: int | None = None,
        end: int | None = None,
        newest_first: bool = False,
        commit_prefix: str | None = None,
    ) -> list[Entry]:
        if limit is not None and limit < 0:
            raise InputError("limit must be >= 0")
        with self._lock:
            found: list[Entry] = []
            rows = self._state.entries[max(start, 0) : None if end is None else max(end, 0)]
            for e in reversed(rows) if newest_first else rows:
                if limit is not None and len(found) >= limit:
                    break
                if (
                    (subject_digest is None or e.subject_digest == subject_digest)
                    and (kind is None or e.kind == kind)
                    and (environment is None or e.environment == environment)
                    and (commit is None or e.commit == commit)
                    and (commit_prefix is None or (e.commit or "").startswith(commit_prefix))
                ):
                    found.append(e)
            return found

    def size(self) -> int:
        return self._state.compact.size

    def root(self) -> bytes:
        with self._lock:
            return self._state.compact.root()

    def head(self) -> tuple[int, bytes]:
        with self._lock:
            return self._state.compact.size, self._state.compact.root()

    @contextmanager
    def reading(self) -> Iterator[None]:
        yield

    def root_at(self, size: int) -> bytes:
        with self._lock:
            check_proof_sizes(self.size(), old=size)
            if size == 0:
                return merkle.EMPTY_ROOT
            return merkle.fold([self._state.nodes[n] for n in merkle.range_nodes(0, size)])

    def entry(self, index: int) -> Entry:
        with self._lock:
            check_proof_sizes(self.size(), index=index)
            return self._state.entries[index]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        with self._lock:
            size = self.size() if size is None else size
            check_proof_sizes(self.size(), old=size)
            check_proof_sizes(size, index=index)
            return merkle.assemble_proof(merkle.inclusion_nodes(index, size), self._state.nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        with self._lock:
            new_size = self.size() if new_size is None else new_size
            check_proof_sizes(self.size(), old=new_size)
            check_proof_sizes(new_size, old=old_size)
            plan = merkle.consistency_nodes(old_size, new_size)
            return merkle.assemble_proof(plan, self._state.nodes)

    def checkpoint(self, signer: CheckpointSigner) -> Checkpoint:
        with self._lock:
            cp = sign_checkpoint(
                signer,
                origin=self._origin,
                size=self.size(),
                root=self.root(),
                time=format_time(datetime.now(UTC)),
            )
            self._state.checkpoints.append(cp)
            return cp

    def checkpoints(self, *, last: int | None = None) -> list[Checkpoint]:
        with self._lock:
            held = self._state.checkpoints
            return list(held if last is None else held[max(len(held) - last, 0) :])

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self._state.checkpoints[-1] if self._state.checkpoints else None

    @contextmanager
    def serialized(self, lock_name: str) -> Iterator[None]:
        """Hold the ledger's lock; appends inside are undone if the block raises."""
        with self._lock:
            state = self._state
            saved = _MemoryState(
                list(state.entries),
                dict(state.nodes),
                state.compact.copy(),
                list(state.checkpoints),
                dict(state.statements),
            )
            try:
                yield
            except BaseException:
                self._state = saved
                raise

    @contextmanager
    def audit_view(self, *, start: int = 0) -> Iterator[LedgerView]:
        with self._lock:
            state = self._state
            entries = list(state.entries)
            nodes = dict(state.nodes)
            yield LedgerView(
                self._origin,
                state.compact.size,
                state.compact.root(),
                list(state.checkpoints),
                iter(entries[max(start, 0) :]),
                start=max(start, 0),
                nodes=lambda wanted: {n: nodes[n] for n in wanted if n in nodes},
                replays=lambda digests: _replays(entries, digests),
            )

    def verify_inclusion(self, entries: Iterable[Entry], *, size: int, root: bytes) -> None:
        with self._lock:
            nodes = self._state.nodes
            check_inclusion(
                entries,
                size=size,
                root=root,
                nodes=lambda wanted: {n: nodes[n] for n in wanted if n in nodes},
            )

    def close(self) -> None:
        return None


def _replays(entries: Sequence[Entry], digests: Sequence[str] | None) -> list[list[int]]:
    wanted = None if digests is None else set(digests)
    by_statement: dict[str, list[int]] = {}
    for e in entries:
        if wanted is None or e.statement_sha256 in wanted:
            by_statement.setdefault(e.statement_sha256, []).append(e.index)
    return [indexes for indexes in by_statement.values() if len(indexes) > 1]


def _satisfies_protocol(ledger: MemoryLedger) -> Ledger:
    return ledger  # mypy checks MemoryLedger against the Ledger protocol here
