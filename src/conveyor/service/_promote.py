"""Check, promote and roll back: the same digest placed in an environment's repository,
then recorded — in named steps.

    check      decide, change nothing
    promote    decide → place (blobs, manifests, referrers; by digest, no tags) outside
               the environment's lock → under it: decide again → move_tags → record
    rollback   the same, for a digest from the environment's history (``after`` skipped)

Promotions into one environment are serialised by the database (``Ledger.serialized``),
so parallel promoters see each other's records and nothing is lost or recorded twice; a
long copy never holds that lock, and what the tags name is always what the ledger last
recorded. Only a digest the gates allow is ever copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Unpack

from conveyor.errors import InputError
from conveyor.oci.digest import Digest
from conveyor.oci.store import Repository
from conveyor.policy.config import Identity
from conveyor.policy.model import Decision
from conveyor.policy.roles import EvidenceKind
from conveyor.registry.copy import CopyResult
from conveyor.service._decide import decide, require_allowed
from conveyor.service._evidence import VerifiedLedger
from conveyor.service._principal import Principal
from conveyor.service._signing import Signed, acting_identity, principal_identity, record_statement
from conveyor.service._subject import Subject, resolve_subject
from conveyor.service._workspace import Signing, Workspace, signing_workspace

if TYPE_CHECKING:
    from conveyor.attest import Signer


@dataclass(frozen=True)
class CheckResult:
    reference: str  # name@digest of what REF resolved to
    resolved_from: str | None  # the tag, when REF named one
    digest: Digest
    decision: Decision
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        decision = self.decision.to_dict()
        return {
            "reference": self.reference,
            "resolved_from": self.resolved_from,
            "digest": str(self.digest),
            "environment": decision["environment"],
            "allowed": decision["allowed"],
            "frozen": decision["frozen"],
            "break_glass": decision["break_glass"],
            "policy_sha256": decision["policy_sha256"],
            "gates": decision["gates"],
            "ignored": list(self.ignored),
        }


@dataclass(frozen=True)
class PromotionResult:
    environment: str
    repository: str  # the environment's repository (name, no tag)
    digest: Digest
    source: str
    resolved_from: str | None
    decision: Decision
    recorded: bool  # False: it was already there, nothing new recorded
    ledger_index: int | None
    tags: tuple[str, ...]
    rollback: bool = False
    copied: CopyResult | None = None  # what placing it copied (None: nothing recorded)
    referrers_carried: int = 0
    ignored: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def copy(self) -> dict[str, Any] | None:
        """``copied`` as JSON (the shape ``--output json`` prints)."""
        return self.copied.to_dict() if self.copied is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "image": self.image,
            "repository": self.repository,
            "digest": str(self.digest),
            "source": self.source,
            "resolved_from": self.resolved_from,
            "recorded": self.recorded,
            "rollback": self.rollback,
            "ledger_index": self.ledger_index,
            "tags": list(self.tags),
            "break_glass": self.decision.break_glass,
            "policy_sha256": self.decision.policy_sha256,
            "gates": [gate.to_dict() for gate in self.decision.gates],
            "copy": self.copy,
            "referrers_carried": self.referrers_carried,
            "ignored": list(self.ignored),
        }


def check(
    reference: str,
    *,
    environment: str,
    break_glass: str | None = None,
    **common: Unpack[Signing],
) -> CheckResult:
    """Evaluate the gates of ``environment`` for the digest REF names; changes nothing.

    With a signer (``--key`` / ``CONVEYOR_SIGNING_KEY``) the promoter is that identity, so
    ``distinct_from: [promoter]`` is evaluated as a promotion would.
    """
    principal = common.get("principal")
    with signing_workspace(common, required=False) as (ws, who):
        ws.config.require_environment(environment)
        promoter = ws.identity_of(who.keyid) if who is not None else None
        if principal is not None:  # a server asks for its principal: they are the promoter
            promoter = (
                principal_identity(ws, who, principal)
                if who is not None
                else ws.config.identities.get(principal.identity)
            )
        subject = resolve_subject(reference, ws.opener, inspect=True)
        verified = VerifiedLedger(ws)
        decision = decide(
            ws,
            verified,
            subject,
            environment=environment,
            promoter=promoter,
            break_glass=break_glass,
        )
        return CheckResult(
            subject.reference, subject.tag, subject.digest, decision, tuple(verified.ignored)
        )


def promote(
    reference: str,
    *,
    environment: str,
    break_glass: str | None = None,
    **common: Unpack[Signing],
) -> PromotionResult:
    """Resolve REF once, check the gates, place the same digest, record the promotion."""
    if break_glass is not None and not break_glass.strip():
        raise InputError("--break-glass needs a reason")
    principal = common.get("principal")
    with signing_workspace(common) as (ws, who):
        assert who is not None
        identity = acting_identity(ws, who, principal, EvidenceKind.PROMOTION)
        spec = ws.config.model.environment(environment)  # unknown environment: exit 2
        subject = resolve_subject(reference, ws.opener, inspect=True)
        return _Promotion(
            ws, subject, environment, who, identity, break_glass=break_glass, principal=principal
        ).run(from_environment=spec.after_environment)


def rollback(
    environment: str,
    *,
    to: str | None = None,
    **common: Unpack[Signing],
) -> PromotionResult:
    """Put back the previous digest of ENV (or ``to``, which must be in ENV's history)."""
    principal = common.get("principal")
    with signing_workspace(common) as (ws, who):
        assert who is not None
        identity = acting_identity(ws, who, principal, EvidenceKind.ROLLBACK)
        ws.config.require_environment(environment)
        wanted = _rollback_target(VerifiedLedger(ws), environment, to)
        target = ws.environment_target(environment).with_digest(wanted)
        subject = resolve_subject(target, ws.opener, inspect=True)
        return _Promotion(
            ws, subject, environment, who, identity, rollback=True, principal=principal
        ).run(from_environment=environment)


def _rollback_target(verified: VerifiedLedger, environment: str, to: str | None) -> Digest:
    """The digest a rollback puts back: ``to`` (from the history), else the one before."""
    digests = [item.digest for item in verified.promotions(environment)]
    if not digests:
        raise InputError(f"{environment} has no history: nothing to roll back to")
    if to is not None:
        wanted = str(Digest.parse(to.split("@")[-1]))
        if wanted not in digests:
            raise InputError(
                f"{wanted} was never in {environment}; a rollback only puts back a digest "
                "from its history (see conveyor history)"
            )
        return Digest.parse(wanted)
    earlier = [d for d in digests if d != digests[-1]]
    if not earlier:
        raise InputError(f"{environment} has had only one digest: nothing to roll back to")
    return Digest.parse(earlier[-1])


class _Promotion:
    """One promotion (or rollback) of ``subject`` into ``environment``, step by step."""

    def __init__(
        self,
        workspace: Workspace,
        subject: Subject,
        environment: str,
        signer: Signer,
        identity: Identity,
        *,
        break_glass: str | None = None,
        rollback: bool = False,
        principal: Principal | None = None,
    ) -> None:
        self.workspace = workspace
        self.principal = principal
        self.subject = subject
        self.environment = environment
        self.signer = signer
        self.identity = identity
        self.break_glass = break_glass
        self.rollback = rollback
        self.verified = VerifiedLedger(workspace)
        self.target = workspace.environment_target(environment)
        self.repository_name = self.target.name
        self.tags = tuple(workspace.config.model.environment(environment).tags)
        self.copied: CopyResult | None = None
        self.carried = 0

    def run(self, *, from_environment: str | None) -> PromotionResult:
        destination = self.workspace.opener(self.target, create=True)
        if not self.already_there(destination):
            self.require(self.decide())
            self.place(destination)
        with self.workspace.ledger.serialized(f"promote/{self.environment}"):
            decision = self.decide()
            if self.already_there(destination):
                return self.result(decision, None)
            self.require(decision)
            if self.copied is None:  # it was there a moment ago; another promotion moved it on
                self.place(destination)
            self.move_tags(destination)
            signed = self.record_promotion(destination, decision, from_environment)
        return self.result(decision, signed)

    def decide(self) -> Decision:
        return decide(
            self.workspace,
            self.verified,
            self.subject,
            environment=self.environment,
            promoter=self.identity,
            break_glass=self.break_glass,
            rollback=self.rollback,
        )

    def require(self, decision: Decision) -> None:
        require_allowed(decision, self.subject, self.environment, rollback=self.rollback)

    def already_there(self, destination: Repository) -> bool:
        """The ledger says the environment holds this digest, and the repository has it."""
        digest = self.subject.digest
        return self.verified.current(self.environment) == digest and destination.has_manifest(
            digest
        )

    def place(self, destination: Repository) -> None:
        """The same digest in the environment's repository, by digest only: blobs first
        (mounted when the registry allows it), then the manifests, then its attestations.
        Tags move later, under the lock."""
        from conveyor.registry.copy import copy

        self.copied = copy(self.subject.repository, self.subject.digest, destination)
        self.carried = carry_referrers(self.subject, destination)

    def move_tags(self, destination: Repository) -> None:
        """Point the environment's convenience tags at the digest (deploys use the digest)."""
        for tag in self.tags:
            destination.put_manifest(self.subject.top, tag=tag)

    def record_promotion(
        self, destination: Repository, decision: Decision, from_environment: str | None
    ) -> Signed:
        from conveyor.attest import PROMOTION_V1, GateRecord, promotion

        predicate = promotion(
            from_environment=from_environment,
            to_environment=self.environment,
            repository=self.repository_name,
            policy_sha256=decision.policy_sha256,
            gates=[
                GateRecord(g.gate, g.passed, g.reason, [r.envelope_digest for r in g.evidence])
                for g in decision.gates
            ],
            break_glass=decision.break_glass,
            rollback=self.rollback,
            at=datetime.now(UTC),
        )
        return record_statement(
            self.workspace,
            self.subject,
            kind=EvidenceKind.ROLLBACK if self.rollback else EvidenceKind.PROMOTION,
            predicate_type=PROMOTION_V1,
            predicate=predicate,
            signer=self.signer,
            principal=self.principal,
            name=self.repository_name,
            attach_to=destination,
            environment=self.environment,
        )

    def result(self, decision: Decision, signed: Signed | None) -> PromotionResult:
        return PromotionResult(
            self.environment,
            self.repository_name,
            self.subject.digest,
            self.subject.reference,
            self.subject.tag,
            decision,
            recorded=signed is not None,
            ledger_index=signed.entry.index if signed is not None else None,
            tags=self.tags,
            rollback=self.rollback,
            copied=self.copied if signed is not None else None,
            referrers_carried=self.carried,
            ignored=tuple(self.verified.ignored),
        )


def carry_referrers(subject: Subject, destination: Repository) -> int:
    """Attestations travel with the image: every referrer of the digest that the
    destination does not list yet is copied, then listed with one index update."""
    from conveyor.oci.referrers import attach_referrers, list_referrers
    from conveyor.registry.copy import copy

    if subject.repository is destination:
        return 0
    digest = subject.digest
    present = {d.digest for d in list_referrers(destination, digest)}
    carried = []
    for descriptor in list_referrers(subject.repository, digest):
        if descriptor.digest in present:
            continue
        copy(subject.repository, descriptor.digest, destination)
        carried.append(subject.repository.get_manifest(descriptor.digest))
    attach_referrers(destination, carried)
    return len(carried)
