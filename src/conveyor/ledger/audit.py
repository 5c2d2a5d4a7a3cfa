"""``verify_ledger``: recompute the whole ledger from its stored bytes and name the first lie.

Checked, in one streamed pass over a consistent snapshot:
- indexes are dense from 0 (a gap is a deleted entry, the head's size a truncation);
- each stored envelope hashes to its stored ``envelope_sha256``;
- each stored leaf hash is the hash of the entry's facts (index, time, kind, subject, …);
- each stored ``tree_root`` is the root recomputed over the leaves so far, so a row swapped,
  inserted or removed in the middle is caught at the first one it moves;
- each envelope's signature, through the caller's ``verify_envelope``;
- the head's size and root; each stored checkpoint's signature and root;
- given a checkpoint kept elsewhere: signed by a trusted key, for this ledger, and the
  ledger still extends it (not truncated, not restored from an older backup, not rewritten).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from itertools import islice

from conveyor.ledger import merkle
from conveyor.ledger.models import Checkpoint, CheckpointVerifier, Entry, EnvelopeVerifier
from conveyor.ledger.store import Ledger

MAX_LISTED_PROBLEMS = 50
_BATCH = 1024


@dataclass
class AuditReport:
    ok: bool
    size: int  # entries actually stored and checked
    root: bytes  # root recomputed over them
    first_bad_index: int | None
    problems: list[str] = field(default_factory=list)
    checked_signatures: int = 0
    checked_checkpoints: int = 0


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


def _batches(entries: Iterator[Entry]) -> Iterator[list[Entry]]:
    while batch := list(islice(entries, _BATCH)):
        yield batch


def _signature_problems(verify: EnvelopeVerifier, envelopes: list[bytes]) -> list[str | None]:
    verdicts: list[str | None] = []
    for envelope in envelopes:
        try:
            verify(envelope)
        except Exception as error:  # any failure of the caller's check is a bad signature
            verdicts.append(" ".join(str(error).split())[:200] or type(error).__name__)
        else:
            verdicts.append(None)
    return verdicts


def _check_signatures(
    verify: EnvelopeVerifier, batch: list[Entry], pool: ThreadPoolExecutor | None, threads: int
) -> list[str | None]:
    envelopes = [e.envelope for e in batch]
    if pool is None:
        return _signature_problems(verify, envelopes)
    # One slice per thread: a task per envelope would cost more than many a verification.
    step = -(-len(envelopes) // threads)
    slices = [envelopes[i : i + step] for i in range(0, len(envelopes), step)]
    return [v for part in pool.map(partial(_signature_problems, verify), slices) for v in part]


def verify_ledger(
    ledger: Ledger,
    *,
    verify_envelope: EnvelopeVerifier | None,
    checkpoint: Checkpoint | None = None,
    checkpoint_verifiers: Mapping[str, CheckpointVerifier] | None = None,
    workers: int | None = None,
) -> AuditReport:
    """Audit ``ledger``; the report names the first bad entry and every problem found.

    ``verify_envelope`` raises on an envelope whose signature does not verify (``None``
    skips signatures: the report then proves integrity, not authorship). Signatures are
    checked on ``workers`` threads (crypto libraries release the GIL).
    """
    verifiers = checkpoint_verifiers or {}
    findings = _Findings()
    compact = merkle.CompactRange()
    roots_at: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
    signatures = 0
    threads = max(workers if workers is not None else min(4, os.cpu_count() or 1), 1)
    with (
        ledger.audit_view() as view,
        ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as pool,
    ):
        wanted_sizes = {cp.size for cp in view.checkpoints}
        if checkpoint is not None:
            wanted_sizes.add(checkpoint.size)
        expected = 0
        for batch in _batches(view.entries):
            verdicts: Iterable[str | None]
            if verify_envelope is not None:
                verdicts = _check_signatures(verify_envelope, batch, pool, threads)
                signatures += len(batch)
            else:
                verdicts = [None] * len(batch)
            for entry, verdict in zip(batch, verdicts, strict=True):
                i = entry.index
                if i != expected:
                    if i > expected:
                        gap = f"entries {expected}..{i - 1} are" if i - expected > 1 else ""
                        findings.add(
                            f"entry {expected} is missing (the next stored index is {i}): "
                            f"{gap or 'it was'} deleted",
                            expected,
                        )
                    else:
                        findings.add(f"entry index {i} is out of order after {expected - 1}", i)
                position = expected  # where this row sits in the recomputed tree
                expected = max(expected, i) + 1
                if hashlib.sha256(entry.envelope).hexdigest() != entry.envelope_sha256:
                    findings.add(
                        f"entry {i}: the stored envelope bytes do not hash to its envelope_sha256 "
                        "(envelope edited)",
                        i,
                    )
                leaf = entry.computed_leaf_hash()
                if leaf != entry.leaf_hash:
                    findings.add(
                        f"entry {i}: its leaf hash does not match its recorded facts "
                        "(a field was edited, or the row was moved)",
                        i,
                    )
                compact.append(leaf)
                tree_root = compact.root()
                if tree_root != entry.tree_root:
                    findings.add(
                        f"entry {i}: the stored tree root differs from the root recomputed over "
                        f"entries 0..{position} (an earlier entry was changed, inserted, "
                        "removed or swapped)",
                        i,
                    )
                if compact.size in wanted_sizes:
                    roots_at[compact.size] = tree_root
                if verdict is not None:
                    findings.add(f"entry {i}: envelope signature does not verify: {verdict}", i)
        size, root = compact.size, compact.root()

        if view.size != size:
            if view.size > size:
                findings.add(
                    f"the ledger head records {view.size} entries but {size} are stored "
                    "(truncated)",
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

        checked_checkpoints = 0
        for stored in view.checkpoints:
            checked_checkpoints += 1
            _check_checkpoint(
                stored, "stored checkpoint", view.origin, size, roots_at, verifiers, findings
            )
    if checkpoint is not None:
        checked_checkpoints += 1
        if not verifiers:
            findings.add("no trusted checkpoint keys were given to verify the checkpoint")
        _check_checkpoint(
            checkpoint, "checkpoint", view.origin, size, roots_at, verifiers, findings
        )
    return AuditReport(
        ok=not findings.problems,
        size=size,
        root=root,
        first_bad_index=findings.first_bad,
        problems=findings.listed(),
        checked_signatures=signatures,
        checked_checkpoints=checked_checkpoints,
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
    if verifiers:
        if cp.keyid not in verifiers:
            findings.add(f"{label} is signed by key {cp.keyid!r}, which is not trusted")
        elif not cp.verify(verifiers):
            findings.add(f"{label}: the signature does not verify (forged or altered)")
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
