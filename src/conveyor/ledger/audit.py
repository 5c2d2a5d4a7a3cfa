"""``verify_ledger``: recompute the ledger from its stored bytes and name the first lie.

A full audit checks, in one streamed pass over a consistent snapshot:
- indexes are dense from 0 (a gap is a deleted entry, the head's size a truncation);
- each stored envelope hashes to its stored ``envelope_sha256``, and the statement it signs
  to its stored ``statement_sha256``;
- each stored leaf hash is the hash of the entry's facts (index, time, kind, subject, …);
- each stored ``tree_root`` is the root recomputed over the leaves so far, so a row swapped,
  inserted or removed in the middle is caught at the first one it moves;
- each envelope's signature, through the caller's ``verify_envelope``; when that returns the
  envelope's ``SignedFacts``, the entry's columns (subject digest, predicate type, kind,
  environment, signer key id) must say what the signed statement says;
- one signed statement is one entry: every later copy of a statement is reported;
- the head's size and root; each stored checkpoint's signature and root;
- given a checkpoint kept elsewhere: signed by a trusted key, for this ledger, and the
  ledger still extends it (not truncated, not restored from an older backup, not rewritten).

Signatures are checked in a process pool (``workers`` processes, chunks of entries) when the
verifier is picklable; the hashing and the tree stay in this process.

An *incremental* audit (``incremental=True`` with a trusted ``checkpoint`` of size m) trusts
what that checkpoint covers: it checks that the stored tree at size m has the checkpoint's
root (the m-sized frontier folds to it), recomputes the tree over entries m.. from their
rows, checks the RFC 9162 consistency proof from m to the new head, and verifies only the
entries after m (signatures, facts, replays among and of them). Rows before m edited after
the checkpoint was taken are caught at the frontier only when they touch the stored nodes;
the full audit re-derives everything.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from conveyor.ledger import merkle
from conveyor.ledger.models import (
    UNSTATED,
    Checkpoint,
    CheckpointVerifier,
    Entry,
    EnvelopeVerifier,
    SignedFacts,
    note_key_hash,
    statement_sha256,
)
from conveyor.ledger.store import Ledger, LedgerView

MAX_LISTED_PROBLEMS = 50
_BATCH = 512
# Below this many entries to verify, starting processes costs more than it saves (measured
# here: a spawned pool breaks even at ~10-20k entries on a loaded 2-core machine).
POOL_MIN_ENTRIES = 16_384


@dataclass
class AuditReport:
    ok: bool
    size: int  # entries actually stored and checked (or covered by the trusted checkpoint)
    root: bytes  # root recomputed over them
    first_bad_index: int | None
    problems: list[str] = field(default_factory=list)
    checked_signatures: int = 0
    checked_checkpoints: int = 0
    checked_from: int = 0  # the first entry verified (> 0 in an incremental audit)
    incremental: bool = False
    replays: list[int] = field(default_factory=list)  # later copies of a signed statement
    workers: int = 1  # processes (or threads) that verified signatures


class _Findings:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.first_bad: int | None = None
        self.dropped = 0

    def add(self, message: str, index: int | None = None) -> None:
        if index is not None and (self.first_bad is None or index < self.first_bad):
            self.first_bad = index
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(message)
        else:
            self.dropped += 1

    def listed(self) -> list[str]:
        if self.dropped:
            return [*self.problems, f"… and {self.dropped} more problems"]
        return list(self.problems)


# What checking one entry on its own yields (everything but its place in the tree): its leaf
# hash recomputed from its facts, the problems found before the tree check (envelope and
# statement digests, leaf) and after it (signature, columns against the signed facts).
_Checked = tuple[bytes, tuple[str, ...], tuple[str, ...]]


def _check_entry(verify: EnvelopeVerifier | None, entry: Entry) -> _Checked:
    i = entry.index
    before: list[str] = []
    if hashlib.sha256(entry.envelope).hexdigest() != entry.envelope_sha256:
        before.append(
            f"entry {i}: the stored envelope bytes do not hash to its envelope_sha256 "
            "(envelope edited)"
        )
    if statement_sha256(entry.envelope) != entry.statement_sha256:
        before.append(
            f"entry {i}: its statement_sha256 column is not the digest of the statement "
            "its envelope signs (edited to hide a replay?)"
        )
    leaf = entry.computed_leaf_hash()
    if leaf != entry.leaf_hash:
        before.append(
            f"entry {i}: its leaf hash does not match its recorded facts "
            "(a field was edited, or the row was moved)"
        )
    after: list[str] = []
    if verify is not None:
        try:
            returned = verify(entry.envelope)
        except Exception as error:  # any failure of the caller's check is a bad signature
            reason = " ".join(str(error).split())[:200] or type(error).__name__
            after.append(f"entry {i}: envelope signature does not verify: {reason}")
        else:
            if isinstance(returned, SignedFacts):
                after.extend(_fact_problems(entry, returned))
    return leaf, tuple(before), tuple(after)


def _check_many(verify: EnvelopeVerifier | None, entries: list[Entry]) -> list[_Checked]:
    return [_check_entry(verify, e) for e in entries]


_WORKER_VERIFIER: EnvelopeVerifier | None = None


def _worker_init(verify: EnvelopeVerifier) -> None:
    global _WORKER_VERIFIER
    _WORKER_VERIFIER = verify


def _worker_check(rows: list[tuple[object, ...]]) -> list[_Checked]:
    # Entries travel as plain tuples: cheaper to pickle than the dataclass.
    return _check_many(_WORKER_VERIFIER, [Entry(*row) for row in rows])  # type: ignore[arg-type]


def _as_row(entry: Entry) -> tuple[object, ...]:
    return tuple(getattr(entry, name) for name in Entry.__slots__)


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # closures, bound methods of objects holding connections, locks …
        return False
    return True


class _Checker:
    """Checks chunks of entries in order: in a process pool, on threads, or inline."""

    def __init__(self, verify: EnvelopeVerifier | None, workers: int, expected: int) -> None:
        self._verify = verify
        self.workers = 1
        self._pool: Executor | None = None
        self._threads = False
        if verify is None or workers <= 1:
            return
        if _picklable(verify):
            if expected < POOL_MIN_ENTRIES:
                return  # inline: faster than starting processes
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(verify,),
            )
        else:  # an old-style verifier (a closure): threads, as before
            self._pool = ThreadPoolExecutor(max_workers=workers)
            self._threads = True
        self.workers = workers

    def submit(self, entries: list[Entry]) -> Future[list[_Checked]] | list[_Checked]:
        if self._pool is None:
            return _check_many(self._verify, entries)
        if self._threads:
            return self._pool.submit(_check_many, self._verify, entries)
        return self._pool.submit(_worker_check, [_as_row(e) for e in entries])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _batches(entries: Iterator[Entry]) -> Iterator[list[Entry]]:
    while batch := list(islice(entries, _BATCH)):
        yield batch


def _checked_in_order(
    entries: Iterator[Entry], checker: _Checker
) -> Iterator[tuple[Entry, _Checked]]:
    """Entries with their check results, in index order, with a bounded number in flight."""
    in_flight: deque[tuple[list[Entry], Future[list[_Checked]] | list[_Checked]]] = deque()
    limit = 2 * checker.workers + 1

    def drain() -> Iterator[tuple[Entry, _Checked]]:
        batch, pending = in_flight.popleft()
        results = pending if isinstance(pending, list) else pending.result()
        yield from zip(batch, results, strict=True)

    for batch in _batches(entries):
        in_flight.append((batch, checker.submit(batch)))
        while len(in_flight) > limit:
            yield from drain()
    while in_flight:
        yield from drain()


def _fact_problems(entry: Entry, facts: SignedFacts) -> list[str]:
    """Where the entry's columns say something the signed statement does not."""
    i = entry.index
    found: list[str] = []
    if entry.subject_digest not in facts.subject_digests:
        about = ", ".join(sorted(facts.subject_digests)[:3]) or "no subject"
        found.append(
            f"entry {i}: the subject_digest column names {entry.subject_digest} but the signed "
            f"statement is about {about}"
        )
    if entry.predicate_type != facts.predicate_type:
        found.append(
            f"entry {i}: the predicate_type column is {entry.predicate_type!r} but the signed "
            f"statement's is {facts.predicate_type!r}"
        )
    if facts.kind is not UNSTATED and entry.kind != facts.kind:
        found.append(
            f"entry {i}: the kind column is {entry.kind!r} but the signed statement is "
            f"{facts.kind!r} evidence"
        )
    if facts.environment is not UNSTATED and entry.environment != facts.environment:
        found.append(
            f"entry {i}: the environment column is {entry.environment!r} but the signed "
            f"statement names {facts.environment!r}"
        )
    if entry.keyid not in facts.keyids:
        found.append(
            f"entry {i}: the keyid column is {entry.keyid!r}, not a key whose signature on "
            "the envelope verifies"
        )
    if facts.signer is not UNSTATED and entry.signer != facts.signer:
        found.append(
            f"entry {i}: the signer column is {entry.signer!r} but the envelope is signed by "
            f"{facts.signer!r}"
        )
    return found


class _Pass:
    """The per-entry checks of one streamed pass, from a starting frontier."""

    def __init__(
        self, compact: merkle.CompactRange, wanted_sizes: set[int], *, keep_statements: bool
    ) -> None:
        self.compact = compact
        self.expected = compact.size
        self.roots_at: dict[int, bytes] = {}
        self.wanted_sizes = wanted_sizes
        # The incremental audit looks up replays of just these; the full one asks the store.
        self.statements: list[str] | None = [] if keep_statements else None
        self.marked: dict[int, int] = {}  # index → occurrence, for entries marked as copies
        self.signatures = 0

    def run(
        self,
        view: LedgerView,
        checker: _Checker,
        findings: _Findings,
        *,
        signatures: bool,
    ) -> None:
        for entry, (leaf, before, after) in _checked_in_order(view.entries, checker):
            i = entry.index
            if i != self.expected:
                if i > self.expected:
                    gap = f"entries {self.expected}..{i - 1} are" if i - self.expected > 1 else ""
                    findings.add(
                        f"entry {self.expected} is missing (the next stored index is {i}): "
                        f"{gap or 'it was'} deleted",
                        self.expected,
                    )
                else:
                    findings.add(f"entry index {i} is out of order after {self.expected - 1}", i)
            position = self.expected  # where this row sits in the recomputed tree
            self.expected = max(self.expected, i) + 1
            for message in before:
                findings.add(message, i)
            if entry.occurrence:
                self.marked[i] = entry.occurrence
            if self.statements is not None:
                self.statements.append(entry.statement_sha256)  # checked against the envelope
            self.compact.append(leaf)
            tree_root = self.compact.root()
            if tree_root != entry.tree_root:
                findings.add(
                    f"entry {i}: the stored tree root differs from the root recomputed over "
                    f"entries 0..{position} (an earlier entry was changed, inserted, "
                    "removed or swapped)",
                    i,
                )
            if self.compact.size in self.wanted_sizes:
                self.roots_at[self.compact.size] = tree_root
            if signatures:
                self.signatures += 1
            for message in after:
                findings.add(message, i)


def _report_replays(
    groups: Iterable[list[int]],
    since: int,
    marked: Mapping[int, int],
    findings: _Findings,
    replays: list[int],
) -> None:
    """Name every later copy of a statement, and every replay marker (``occurrence``) that
    is not its copy's rank: the marker is not under the leaf hash, and a reader skips
    marked entries, so a marker set on an original would hide it."""
    later_copies: list[tuple[int, int]] = []
    rank: dict[int, int] = {}
    for indexes in groups:
        first, *later = sorted(indexes)
        rank.update({j: n for n, j in enumerate(later, start=1)})
        # Both copies under the trusted checkpoint: covered by it, not re-reported.
        later_copies.extend((j, first) for j in later if j >= since)
    for j, first in sorted(later_copies):
        replays.append(j)
        findings.add(
            f"entry {j} repeats the signed statement of entry {first} (a replayed "
            "envelope: one statement is one entry; readers must not count it)",
            j,
        )
    for i, occurrence in sorted(marked.items()):
        if rank.get(i, 0) != occurrence:
            findings.add(
                f"entry {i} is marked as copy {occurrence} of its statement but is copy "
                f"{rank.get(i, 0)}: its occurrence column was edited (it would hide the entry "
                "from readers)",
                i,
            )


def verify_ledger(
    ledger: Ledger,
    *,
    verify_envelope: EnvelopeVerifier | None,
    checkpoint: Checkpoint | None = None,
    checkpoint_verifiers: Mapping[str, CheckpointVerifier] | None = None,
    workers: int | None = None,
    incremental: bool = False,
) -> AuditReport:
    """Audit ``ledger``; the report names the first bad entry and every problem found.

    ``verify_envelope`` raises on an envelope whose signature does not verify and may return
    its ``SignedFacts`` (``None`` skips signatures: the report then proves integrity, not
    authorship). ``workers`` processes verify signatures (default: every core). With
    ``incremental`` and a trusted ``checkpoint``, only the entries after it are verified
    (module docstring); a checkpoint that is not trusted or not this ledger's falls back to
    the full audit, which reports why.
    """
    verifiers = checkpoint_verifiers or {}
    count = max(workers if workers is not None else (os.cpu_count() or 1), 1)
    since = 0
    if incremental and checkpoint is not None and checkpoint.verify(verifiers):
        since = checkpoint.size
    findings = _Findings()
    replays: list[int] = []
    if since:
        assert checkpoint is not None
        with ledger.audit_view(start=since) as view:
            if checkpoint.origin == view.origin and since <= view.size:
                return _incremental(
                    view, checkpoint, verify_envelope, verifiers, count, findings, replays
                )
        # Not this ledger's checkpoint, or longer than the ledger: the full audit says which.
    return _full(ledger, verify_envelope, checkpoint, verifiers, count, findings, replays)


def _full(
    ledger: Ledger,
    verify_envelope: EnvelopeVerifier | None,
    checkpoint: Checkpoint | None,
    verifiers: Mapping[str, CheckpointVerifier],
    count: int,
    findings: _Findings,
    replays: list[int],
) -> AuditReport:
    with ledger.audit_view() as view:
        wanted_sizes = {cp.size for cp in view.checkpoints}
        if checkpoint is not None:
            wanted_sizes.add(checkpoint.size)
        walk = _Pass(merkle.CompactRange(), wanted_sizes, keep_statements=False)
        walk.roots_at[0] = merkle.EMPTY_ROOT
        checker = _Checker(verify_envelope, count, view.size)
        try:
            walk.run(view, checker, findings, signatures=verify_envelope is not None)
        finally:
            checker.close()
        _report_replays(view.replays(None), 0, walk.marked, findings, replays)
        size, root = walk.compact.size, walk.compact.root()
        _check_head(view, size, root, findings)
        checked_checkpoints = 0
        for stored in view.checkpoints:
            checked_checkpoints += 1
            _check_checkpoint(
                stored, "stored checkpoint", view.origin, size, walk.roots_at, verifiers, findings
            )
    if checkpoint is not None:
        checked_checkpoints += 1
        if not verifiers:
            findings.add("no trusted checkpoint keys were given to verify the checkpoint")
        _check_checkpoint(
            checkpoint, "checkpoint", view.origin, size, walk.roots_at, verifiers, findings
        )
    return AuditReport(
        ok=not findings.problems,
        size=size,
        root=root,
        first_bad_index=findings.first_bad,
        problems=findings.listed(),
        checked_signatures=walk.signatures,
        checked_checkpoints=checked_checkpoints,
        replays=replays,
        workers=checker.workers,
    )


def _incremental(
    view: LedgerView,
    checkpoint: Checkpoint,
    verify_envelope: EnvelopeVerifier | None,
    verifiers: Mapping[str, CheckpointVerifier],
    count: int,
    findings: _Findings,
    replays: list[int],
) -> AuditReport:
    since = checkpoint.size
    frontier_ids = merkle.range_nodes(0, since)
    stored = view.nodes(set(frontier_ids))
    report = AuditReport(
        ok=False, size=since, root=checkpoint.root, first_bad_index=None, checked_from=since,
        incremental=True, checked_checkpoints=1,
    )  # fmt: skip
    if any(n not in stored for n in frontier_ids) or (
        merkle.fold([stored[n] for n in frontier_ids]) != checkpoint.root
    ):
        findings.add(
            f"the ledger's stored tree at size {since} does not have the trusted checkpoint's "
            f"root: entries before {since} were rewritten; run the full audit to find them"
        )
        report.problems = findings.listed()
        return report
    wanted_sizes = {cp.size for cp in view.checkpoints if cp.size >= since}
    frontier = merkle.CompactRange(since, [stored[n] for n in frontier_ids])
    walk = _Pass(frontier, wanted_sizes, keep_statements=True)
    walk.roots_at[since] = checkpoint.root
    checker = _Checker(verify_envelope, count, view.size - since)
    try:
        walk.run(view, checker, findings, signatures=verify_envelope is not None)
    finally:
        checker.close()
    size, root = walk.compact.size, walk.compact.root()
    _report_replays(view.replays(walk.statements or []), since, walk.marked, findings, replays)
    _check_head(view, size, root, findings)
    if size == view.size and size > since:
        plan = merkle.consistency_nodes(since, size)
        nodes = view.nodes(merkle.plan_nodes(plan))
        if any(n not in nodes for n in merkle.plan_nodes(plan)) or not merkle.verify_consistency(
            since, size, checkpoint.root, root, merkle.assemble_proof(plan, nodes)
        ):
            findings.add(
                f"the consistency proof from the trusted checkpoint (size {since}) to the "
                f"ledger's head (size {size}) does not verify: the stored Merkle nodes were "
                "changed"
            )
    for cp in view.checkpoints:
        report.checked_checkpoints += 1
        if cp.size >= since:
            _check_checkpoint(
                cp, "stored checkpoint", view.origin, size, walk.roots_at, verifiers, findings
            )
        else:
            _check_older_checkpoint(cp, view, checkpoint, verifiers, findings)
    report.ok = not findings.problems
    report.size, report.root = size, root
    report.first_bad_index = findings.first_bad
    report.problems = findings.listed()
    report.checked_signatures = walk.signatures
    report.replays = replays
    report.workers = checker.workers
    return report


def _check_head(view: LedgerView, size: int, root: bytes, findings: _Findings) -> None:
    if view.size != size:
        if view.size > size:
            findings.add(
                f"the ledger head records {view.size} entries but {size} are stored (truncated)",
                size,
            )
        else:
            findings.add(
                f"{size} entries are stored but the ledger head records {view.size} "
                "(entries appended outside the ledger)",
                view.size,
            )
    elif view.root != root:
        findings.add("the ledger head's root differs from the recomputed root")


def _check_signature(
    cp: Checkpoint, label: str, verifiers: Mapping[str, CheckpointVerifier], findings: _Findings
) -> None:
    if not verifiers or cp.trusted_signer(verifiers) is not None:
        return
    known = _names_a_trusted_key(cp, verifiers) if cp.is_signed_note else cp.keyid in verifiers
    if known:
        findings.add(f"{label}: the signature does not verify (forged or altered)")
    else:
        findings.add(f"{label} is signed by {cp.described_key()}, which is not trusted")


def _names_a_trusted_key(cp: Checkpoint, verifiers: Mapping[str, CheckpointVerifier]) -> bool:
    lines = [(cp.key_name or "", cp.key_hash), *((c.key_name, c.key_hash) for c in cp.cosignatures)]
    return any(
        note_key_hash(name, verifier, keyid) == key_hash
        for name, key_hash in lines
        for keyid, verifier in verifiers.items()
    )


def _check_checkpoint(
    cp: Checkpoint,
    what: str,
    origin: str,
    size: int,
    roots_at: Mapping[int, bytes],
    verifiers: Mapping[str, CheckpointVerifier],
    findings: _Findings,
) -> None:
    label = f"{what} of size {cp.size} at {cp.time}"
    _check_signature(cp, label, verifiers, findings)
    if cp.origin != origin:
        findings.add(f"{label} is for ledger {cp.origin!r}, not this ledger {origin!r}")
        return
    if cp.size > size:
        findings.add(
            f"{label} records {cp.size} entries but the ledger has only {size}: "
            "truncated or restored from an older backup",
            size,
        )
        return
    if roots_at.get(cp.size) != cp.root:
        findings.add(
            f"{label}: the ledger's root at size {cp.size} differs from the signed root: "
            f"entries before {cp.size} were rewritten"
        )


def _check_older_checkpoint(
    cp: Checkpoint,
    view: LedgerView,
    trusted: Checkpoint,
    verifiers: Mapping[str, CheckpointVerifier],
    findings: _Findings,
) -> None:
    """A stored checkpoint older than the trusted one: its root must be consistent with it."""
    label = f"stored checkpoint of size {cp.size} at {cp.time}"
    _check_signature(cp, label, verifiers, findings)
    if cp.origin != view.origin:
        findings.add(f"{label} is for ledger {cp.origin!r}, not this ledger {view.origin!r}")
        return
    plan = merkle.consistency_nodes(cp.size, trusted.size)
    nodes: dict[merkle.NodeId, bytes] = view.nodes(merkle.plan_nodes(plan)) if plan else {}
    proof: list[Any] = (
        merkle.assemble_proof(plan, nodes)
        if all(n in nodes for n in merkle.plan_nodes(plan))
        else []
    )
    if not merkle.verify_consistency(cp.size, trusted.size, cp.root, trusted.root, proof):
        findings.add(
            f"{label} is not consistent with the trusted checkpoint of size {trusted.size}: "
            f"entries before {cp.size} were rewritten"
        )
