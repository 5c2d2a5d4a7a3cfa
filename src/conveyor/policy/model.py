"""What the policy engine reads and what it answers.

The verified reader (``conveyor.service``) turns *verified* ledger entries into these
values; gates never see raw envelopes, signatures or JSON. Every value names the ledger
entry it came from (``EvidenceRef``), so a decision can say which attestation it used.

Times are UTC. Ordering ("the most recent result decides") and freshness use the time
*signed inside the statement* (``EvidenceRef.signed_at``: approval time, smoke time, scan
finish, test time, promotion time), never the ledger's ``recorded_at``, which whoever
writes the database chooses. The verified reader only hands over entries whose signed time
lies within its bounds of the record time (see ``conveyor.service`` ``VerifiedLedger``);
``recorded_at`` stands in only for statements that carry no time (build records, and
statements written before times were signed).

A naive ``datetime`` is read as UTC by the engine rather than refused, so a
slip in a caller can never make evaluation raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    """One verified ledger entry: where it is, who signed it, with which roles, and when."""

    index: int
    envelope_digest: str
    signer: str
    signer_roles: frozenset[str]
    recorded_at: datetime
    signed_at: datetime | None = None  # the time inside the signed statement

    @property
    def time(self) -> datetime:
        """When it happened: the signed time, else (no time in the statement) the record's."""
        return self.signed_at if self.signed_at is not None else self.recorded_at


@dataclass(frozen=True, slots=True)
class BuildEvidence:
    """A build record: the digest was built from ``commit`` by CI run ``run_id``."""

    ref: EvidenceRef
    commit: str
    run_id: str | None = None
    builder_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TestEvidence:
    __test__ = False  # not a pytest test class

    ref: EvidenceRef
    passed: int
    failed: int
    errored: int = 0
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class ScanEvidence:
    """A vulnerability scan: counts per severity and the findings as ``(id, severity)``."""

    ref: EvidenceRef
    scanned_at: datetime | None
    counts: Mapping[str, int]
    findings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SmokeEvidence:
    ref: EvidenceRef
    environment: str
    passed: bool


@dataclass(frozen=True, slots=True)
class ApprovalEvidence:
    """An approval binds a digest *and* an environment; either differing makes it void."""

    ref: EvidenceRef
    environment: str
    digest: str


@dataclass(frozen=True, slots=True)
class PromotionEvidence:
    ref: EvidenceRef
    environment: str
    digest: str
    rollback: bool = False
    break_glass: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceSet:
    """Every verified fact about one digest (promotions: of this digest, into any
    environment)."""

    digest: str
    builds: tuple[BuildEvidence, ...] = ()
    tests: tuple[TestEvidence, ...] = ()
    scans: tuple[ScanEvidence, ...] = ()
    smokes: tuple[SmokeEvidence, ...] = ()
    approvals: tuple[ApprovalEvidence, ...] = ()
    promotions: tuple[PromotionEvidence, ...] = ()


@dataclass(frozen=True, slots=True)
class PromotionRequest:
    """Who wants ``digest`` in ``environment``, and when. ``rollback`` skips ``after``."""

    digest: str
    environment: str
    promoter: str
    promoter_roles: frozenset[str]
    now: datetime
    break_glass: str | None = None
    rollback: bool = False


@dataclass(frozen=True, slots=True)
class ApprovalCount:
    """One approvals requirement as counted: who counts towards it, how many must, and who
    approved without counting, with why (the promoter, another environment, too old …)."""

    role: str
    needed: int
    counted: tuple[str, ...] = ()  # identities, sorted
    not_counted: tuple[tuple[str, str], ...] = ()  # (identity, why), sorted

    @property
    def have(self) -> int:
        return len(self.counted)

    @property
    def met(self) -> bool:
        return self.have >= self.needed

    def summary(self) -> str:
        """The gate's reason: ``1 of 2 approvals: alice; not counted: dee (the promoter)``."""
        text = f"{self.have} of {self.needed} approvals: {', '.join(self.counted) or 'none'}"
        if self.not_counted:
            listed = ", ".join(f"{name} ({why})" for name, why in self.not_counted)
            text += f"; not counted: {listed}"
        return text

    def short(self, *, named: bool = False) -> str:
        """``1 of 2 (alice)``; ``approver 1 of 2 (alice)`` when ``named``."""
        who = f" ({', '.join(self.counted)})" if self.counted else ""
        return f"{self.role + ' ' if named else ''}{self.have} of {self.needed}{who}"


@dataclass(frozen=True, slots=True)
class GateResult:
    """One line of a decision: the gate, whether it passed, why, and the entries it used.
    An approvals gate (and a freeze's break-glass) also gives its counts as ``approvals``."""

    gate: str
    passed: bool
    reason: str
    evidence: tuple[EvidenceRef, ...] = ()
    frozen: bool = False  # a freeze window was open
    break_glass_used: bool = False  # break-glass let the promotion through that freeze
    approvals: tuple[ApprovalCount, ...] = ()
    breakable: bool = False  # a freeze that break-glass can open (break_glass is configured)

    @property
    def short(self) -> str:
        """The gate and its reason in few words: the approvals gate as its counts
        (``approvals: 1 of 2 (alice)``; by role when it has several requirements), every
        other gate as its reason."""
        if self.gate == "approvals" and self.approvals:
            named = len(self.approvals) > 1
            return f"{self.gate}: " + "; ".join(c.short(named=named) for c in self.approvals)
        return f"{self.gate}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "passed": self.passed,
            "reason": self.reason,
            "evidence": [
                {
                    "ledger_index": ref.index,
                    "attestation": ref.envelope_digest,
                    "signer": ref.signer,
                    "recorded_at": ref.recorded_at.isoformat(),
                    "signed_at": ref.signed_at.isoformat() if ref.signed_at else None,
                }
                for ref in self.evidence
            ],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer. ``allowed`` is true only when every gate passed.

    ``frozen`` says a freeze window was open at ``now``; ``break_glass`` holds the reason
    when a break-glass promotion was let through a freeze (record it as such).
    """

    allowed: bool
    environment: str
    digest: str
    gates: tuple[GateResult, ...]
    policy_sha256: str
    break_glass: str | None = None
    frozen: bool = False

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(result for result in self.gates if not result.passed)

    @property
    def only_breakable_freeze_fails(self) -> bool:
        """Denied by a freeze that break-glass can open, and by nothing else: the one case in
        which ``--break-glass REASON`` (with the freeze's approvals) can let it through."""
        failed = self.failed
        return bool(failed) and all(result.frozen and result.breakable for result in failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "digest": self.digest,
            "allowed": self.allowed,
            "frozen": self.frozen,
            "break_glass": self.break_glass,
            "policy_sha256": self.policy_sha256,
            "gates": [gate.to_dict() for gate in self.gates],
        }
