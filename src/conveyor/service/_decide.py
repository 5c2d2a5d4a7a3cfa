"""Decide whether a digest may enter an environment: the policy engine over verified
evidence, with entries read as cheap claims first and verified before a decision stands."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from conveyor.errors import PolicyDenied
from conveyor.policy.config import Identity
from conveyor.policy.model import Decision, PromotionRequest
from conveyor.policy.roles import EvidenceKind
from conveyor.service._evidence import VerifiedLedger, evidence_for
from conveyor.service._subject import Subject
from conveyor.service._workspace import Workspace


class PromotionDenied(PolicyDenied):
    """The gates said no; ``decision`` holds every gate's verdict and reason."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


def decide(
    workspace: Workspace,
    verified: VerifiedLedger,
    subject: Subject,
    *,
    environment: str,
    promoter: Identity | None,
    break_glass: str | None = None,
    rollback: bool = False,
    now: datetime | None = None,
) -> Decision:
    """The engine's decision for ``subject`` entering ``environment``; ``promoter`` None:
    nobody in particular (``distinct_from: [promoter]`` excludes no one)."""
    from conveyor.policy.engine import evaluate

    digest = subject.digest
    request = PromotionRequest(
        digest=str(digest),
        environment=environment,
        promoter=promoter.name if promoter else "",
        promoter_roles=frozenset(str(r) for r in promoter.roles) if promoter else frozenset(),
        now=now or datetime.now(UTC),
        break_glass=break_glass,
        rollback=rollback,
    )
    # Signatures cost ~0.2 ms each and a digest may carry thousands of entries, most of them
    # superseded (the most recent result decides). So entries are first read as claims; a
    # decision is returned only once every entry it rests on has been verified, and a
    # denial is re-made from verified entries alone. A claim that fails verification is
    # dropped and the decision made again. Every row read is first proved to belong to the
    # signed tree (batched): a row changed with raw SQL fails the command closed.
    claims = []
    for entry in verified.rows(subject_digest=str(digest)):
        claimed = verified.claim(entry)
        if claimed is not None:
            claims.append(claimed)
    # Of copies of one signed statement only the first counts (a replay changes nothing).
    candidates = {c.entry.index: c for c in verified.first_copies(claims)}
    labels = subject.labels
    while True:
        evidence = evidence_for(list(candidates.values()), digest, labels)
        decision = evaluate(workspace.config, request, evidence)
        unchecked = {i for i, c in candidates.items() if not c.trusted}
        if decision.allowed:
            unchecked &= {ref.index for gate in decision.gates for ref in gate.evidence}
        if not unchecked:
            break
        for index in unchecked:
            checked = verified.verify(candidates[index].entry)
            if checked is None:
                del candidates[index]
            else:
                candidates[index] = checked
    if not evidence.builds:
        hint = _where_the_tag_pointed(verified, subject)
        if hint:
            decision = _with_build_hint(decision, hint)
    return decision


def require_allowed(
    decision: Decision, subject: Subject, environment: str, *, rollback: bool = False
) -> None:
    """Raise ``PromotionDenied`` naming every failed gate, unless the decision allows."""
    if decision.allowed:
        return
    failed = "; ".join(f"{g.gate}: {g.reason}" for g in decision.failed)
    raise PromotionDenied(
        f"{'rollback' if rollback else 'promotion'} of {subject.name}@{subject.digest.short} "
        f"to {environment} denied: {failed}",
        decision,
    )


def _with_build_hint(decision: Decision, hint: str) -> Decision:
    gates = tuple(
        replace(g, reason=f"{g.reason}; {hint}") if g.gate == "build" and not g.passed else g
        for g in decision.gates
    )
    return replace(decision, gates=gates)


def _where_the_tag_pointed(verified: VerifiedLedger, subject: Subject) -> str | None:
    """For a moved tag: the digest that carried it when it was built, from build records."""
    if subject.tag is None:
        return None
    wanted = f"{subject.name}:{subject.tag}"
    # Newest first and bounded: a hint must not cost a walk over every build ever recorded.
    for seen, entry in enumerate(verified.newest(kind=EvidenceKind.BUILD)):
        if seen >= _HINT_LOOKBACK:
            break
        if entry.subject_name != subject.name:
            continue
        claimed = verified.claim(entry)
        if claimed is None:
            continue
        params = claimed.predicate.get("buildDefinition", {}).get("externalParameters", {})
        if isinstance(params, dict) and params.get("image") == wanted:
            verified.prove([entry])
            item = verified.verify(entry)
            if item is None:
                continue
            return (
                f"{wanted} now names {subject.digest.short}, but when it was built it "
                f"named {item.entry.subject_digest} (ledger #{item.entry.index}): the tag moved"
            )
    return None


# How many of the newest build records the moved-tag hint looks through.
_HINT_LOOKBACK = 2000
