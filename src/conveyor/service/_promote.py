"""Check, promote and roll back: the same digest placed in an environment's repository,
then recorded — in named steps.

    check      decide, change nothing
    promote    decide → place (blobs, manifests, referrers; by digest, no tags) outside
               the environment's lock → under it: decide again → record_promotion
               (signed, appended, committed) → outside it: attach the promotion's
               attestation → under the environment's tag lock: move_tags
    rollback   the same, for a digest from the environment's history (``after`` skipped)

Promotions into one environment are serialised by the database (``Ledger.serialized``,
``promote/ENV``), so parallel promoters see each other's records and nothing is lost or
recorded twice; a long copy never holds that lock, and neither do the registry writes that
follow the record. The promotion is recorded *before* its attestation is attached and any
tag moves, so a tag never names a digest the ledger has not recorded for the environment,
whatever fails: a failure or a kill after the commit leaves the registry behind the ledger
(tags on the digest before, the promotion's attestation not listed), which the next
promote, ``status`` and ``conveyor repair ENV`` say and converge (``_repair``). Tags move
under a lock of their own (``tags/ENV``), only while no later promotion is recorded, so
the last recorded promotion's tags win. Only a digest the gates allow is ever copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Unpack

from conveyor.errors import ConveyorError, ExternalError, InputError
from conveyor.oci.digest import Digest
from conveyor.oci.store import RawManifest, Repository
from conveyor.policy.config import Identity
from conveyor.policy.model import Decision
from conveyor.policy.roles import PROMOTION_KINDS, EvidenceKind
from conveyor.registry.copy import CopyResult
from conveyor.service._decide import decide, require_allowed
from conveyor.service._evidence import VerifiedEntry, VerifiedLedger
from conveyor.service._principal import Principal
from conveyor.service._repair import (
    attach_recorded,
    envelope_of,
    move_tags_to,
    promotions_unlisted,
    referrers_missing,
    store_attestations,
    tags_apart,
    unlisted,
)
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
    # What a promotion of a digest already recorded found out of step (tags, its unlisted
    # attestation) and put back in step: a retry completing what a kill left.
    repaired: tuple[str, ...] = ()

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
            "repaired": list(self.repaired),
        }


class TagsNotMovedError(ExternalError):
    """The promotion is recorded, but a tag write failed: the tags lag behind the ledger
    until the next promote or ``conveyor repair ENV``."""


class AttestationNotAttachedError(ExternalError):
    """The promotion is recorded (and its tags moved), but attaching its attestation to the
    environment's repository failed: it is unlisted until the next promote or
    ``conveyor repair ENV`` attaches it from the ledger."""


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
        identity = acting_identity(ws, who, principal, EvidenceKind.PROMOTION, environment)
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
        identity = acting_identity(ws, who, principal, EvidenceKind.ROLLBACK, environment)
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
        self.repaired: tuple[str, ...] = ()

    def run(self, *, from_environment: str | None) -> PromotionResult:
        destination = self.workspace.opener(self.target, create=True)
        digest = self.subject.digest
        before = self.current_before(destination)
        if before == digest and destination.has_manifest(digest):
            # Recorded already (a retry after a kill, say): complete what the kill left.
            self.converge(destination, digest)
        else:
            self.require(self.decide())
            self.place(destination)
        signed: Signed | None = None
        with self.workspace.ledger.serialized(f"promote/{self.environment}"):
            decision = self.decide()
            there = self.holds_it() and destination.has_manifest(digest)
            if not there:
                self.require(decision)
                if self.copied is None:  # it was there a moment ago; another promotion moved on
                    self.place(destination)
                signed = self.record_promotion(decision, from_environment)
        # Committed. Only now may the registry say so; a kill from here on leaves it behind
        # the ledger (the next promote, status and repair complete it), never ahead of it.
        unattached: ConveyorError | None = None
        if signed is not None:
            try:
                attach_recorded(destination, self.subject.top, [signed.entry])
            except ConveyorError as exc:
                unattached = exc
        if signed is not None or self.repaired:
            with self.workspace.ledger.serialized(f"tags/{self.environment}"):
                if self.still_current(signed):
                    self.move_tags(destination, signed, unattached)
                # else a later promotion is recorded: the tags are its to move
        self.settle(destination)
        if unattached is not None and signed is not None:
            raise AttestationNotAttachedError(
                f"the promotion of {digest} to {self.environment} is recorded as ledger "
                f"#{signed.entry.index}, but its attestation could not be attached to "
                f"{self.repository_name}: {unattached}; conveyor repair {self.environment} "
                "attaches it"
            ) from unattached
        return self.result(decision, signed)

    def newest_arrival(self) -> Digest | None:
        """The digest the newest arrival row of the environment names (two indexed reads,
        nothing verified: callers verify before they believe it names this digest)."""
        ledger = self.workspace.ledger
        rows = [
            row
            for kind in PROMOTION_KINDS
            for row in ledger.entries(
                kind=kind.value, environment=self.environment, newest_first=True, limit=1
            )
        ]
        return Digest.parse(max(rows, key=lambda row: row.index).subject_digest) if rows else None

    def current_before(self, destination: Repository) -> Digest | None:
        """Before the lock: the digest the environment holds. The newest arrival row answers
        while it names another digest (this run records anew and moves the tags); when it
        names this one the verified read decides, and the tags found out of step with it are
        ``repaired`` (a retry completes what a kill left)."""
        newest = self.newest_arrival()
        if newest != self.subject.digest:
            return newest
        current = self.verified.current(self.environment)
        self.repaired = tuple(
            str(a) for a in tags_apart(destination, self.environment, self.tags, current)
        )
        return current

    def holds_it(self) -> bool:
        """Under the lock: the ledger says the environment holds this digest already. A
        newest arrival row naming another digest settles it, as it does under contention;
        only one naming this digest is verified, with the whole verified read (a forged row
        cannot make a promotion a no-op)."""
        if self.newest_arrival() != self.subject.digest:
            return False
        return self.verified.current(self.environment) == self.subject.digest

    def still_current(self, signed: Signed | None) -> bool:
        """Under the tag lock: the digest this run promoted is the one the ledger says the
        environment holds. For a new record that is "no promotion recorded after it" (an
        indexed read; a forged later row only leaves the tags behind, never ahead)."""
        if signed is None:
            return self.verified.current(self.environment) == self.subject.digest
        after = signed.entry.index + 1
        ledger = self.workspace.ledger
        return not any(
            ledger.entries(kind=kind.value, environment=self.environment, start=after, limit=1)
            for kind in PROMOTION_KINDS
        )

    def converge(self, destination: Repository, digest: Digest) -> None:
        """A retry of a recorded promotion: attach again, from the ledger, the recorded
        arrivals of ``digest`` in the environment whose attestation the repository does not
        list (a kill after the commit leaves them so); named in ``repaired``."""
        found = promotions_unlisted(
            self.verified, self.environment, destination, digests=[str(digest)]
        )
        for top, items in found:
            attach_recorded(destination, top, [item.entry for item in items])
        missing = referrers_missing(self.environment, self.repository_name, found)
        self.repaired += tuple(str(item) for item in missing)

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

    def place(self, destination: Repository) -> None:
        """The same digest in the environment's repository, by digest only: blobs first
        (mounted when the registry allows it), then the manifests, then its attestations.
        Tags move later, under the lock."""
        from conveyor.registry.copy import copy

        self.copied = copy(self.subject.repository, self.subject.digest, destination)
        recorded = self.verified.entries(subject_digest=str(self.subject.digest))
        # The referrers index is read back later: the promotion's own referrer goes into
        # the same index, and one read-back after one pause then covers both (``settle``).
        self.carried = carry_referrers(self.subject, destination, recorded, settle=False)

    def settle(self, destination: Repository) -> None:
        """Complete the referrers index updates ``place`` left to be read back (the
        promotion's attachment already did, unless nothing was recorded)."""
        from conveyor.oci.referrers import settle_referrers

        settle_referrers(destination)

    def move_tags(
        self,
        destination: Repository,
        signed: Signed | None,
        unattached: ConveyorError | None = None,
    ) -> None:
        """Point the environment's convenience tags at the digest the ledger now records
        (deploys use the digest). Only after the record: a failure here leaves the tags
        behind the ledger, never ahead of it."""
        try:
            move_tags_to(destination, self.subject.top, self.tags)
        except ConveyorError as exc:
            what = f"recorded as ledger #{signed.entry.index}" if signed else "recorded"
            also = " (nor could its attestation be attached)" if unattached else ""
            raise TagsNotMovedError(
                f"the promotion of {self.subject.digest} to {self.environment} is {what}, "
                f"but its tags ({', '.join(self.tags)}) could not all be moved{also}: {exc}; "
                f"conveyor repair {self.environment} moves them"
            ) from exc

    def record_promotion(self, decision: Decision, from_environment: str | None) -> Signed:
        """Sign and append the promotion (under the environment's lock; its attestation is
        attached after the commit, by ``run``)."""
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
            attach=False,
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
            repaired=self.repaired,
        )


def carry_referrers(
    subject: Subject,
    destination: Repository,
    recorded: Sequence[VerifiedEntry] = (),
    *,
    settle: bool = True,
) -> int:
    """Attestations travel with the image: every referrer of the digest that the
    destination does not list yet is copied; then every attestation the ledger recorded
    for the digest (``recorded``: its verified entries — the ledger is the record of what
    was attached) that the destination still lacks is attached again from its envelope, so
    a listing a concurrent writer lost upstream is repaired here. One index update.

    ``settle=False``: the destination's referrers index may be left to be read back after
    its pause by ``oci.referrers.settle_referrers`` (or the next attachment there)."""
    from conveyor.oci.referrers import attach_referrers, list_referrers

    digest = subject.digest
    present = {d.digest for d in list_referrers(destination, digest)}
    same = subject.repository is destination
    wanted = list(  # each once, in the source's order
        dict.fromkeys(
            d.digest
            for d in (() if same else list_referrers(subject.repository, digest))
            if d.digest not in present
        )
    )
    carried = _copy_referrers(subject.repository, destination, wanted)
    envelopes = {key for manifest in carried for key in envelope_of(manifest)}
    lacking = [
        item.entry for item in recorded if f"sha256:{item.entry.envelope_sha256}" not in envelopes
    ]
    missing = unlisted(destination, subject.top, lacking, listed=present)
    carried.extend(store_attestations(destination, subject.top, missing))
    if carried:
        attach_referrers(destination, carried, settle=settle)
    return len(carried)


COPY_REFERRERS_AT_ONCE = 4  # referrers are small: their round trips, not bytes, take the time


def _copy_referrers(
    source: Repository, destination: Repository, digests: Sequence[Digest]
) -> list[RawManifest]:
    """Copy each referrer manifest (and its blobs), a few at once; their manifests, in order."""
    from conveyor.registry.copy import copy

    def one(digest: Digest) -> RawManifest:
        copy(source, digest, destination)
        return source.get_manifest(digest)  # read by the copy: the client has it already

    if len(digests) <= 1:
        return [one(d) for d in digests]
    from concurrent.futures import ThreadPoolExecutor

    workers = min(COPY_REFERRERS_AT_ONCE, len(digests))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="conveyor-referrers") as pool:
        return list(pool.map(one, digests))
