"""Check, promote and roll back: the same digest placed in an environment's repository,
then recorded — in named steps.

    check      decide, change nothing
    promote    decide → place (blobs, manifests, referrers; by digest, no tags) outside
               the environment's lock → under it: decide again → record_promotion →
               move_tags
    rollback   the same, for a digest from the environment's history (``after`` skipped)

Promotions into one environment are serialised by the database (``Ledger.serialized``),
so parallel promoters see each other's records and nothing is lost or recorded twice; a
long copy never holds that lock. The promotion is recorded (signed, appended) *before* any
tag moves, so a tag never names a digest the ledger has not recorded for the environment,
whatever fails: a failure or a kill between the two leaves the tags behind the ledger,
which the next promote, ``status`` and ``conveyor repair ENV`` say and converge
(``_repair``). Only a digest the gates allow is ever copied.
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
from conveyor.policy.roles import EvidenceKind
from conveyor.registry.copy import CopyResult
from conveyor.service._decide import decide, require_allowed
from conveyor.service._evidence import VerifiedEntry, VerifiedLedger
from conveyor.service._principal import Principal
from conveyor.service._repair import move_tags_to, tags_apart
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
    # Tags found out of step with the ledger before this run, which it put back in step.
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
        if not self.already_there(destination):
            self.require(self.decide())
            self.place(destination)
        lock = f"promote/{self.environment}"
        signed: Signed | None = None
        with self.workspace.ledger.serialized(lock):
            decision = self.decide()
            recorded = self.verified.current(self.environment)
            self.repaired = tuple(
                str(a) for a in tags_apart(destination, self.environment, self.tags, recorded)
            )
            # ``recorded`` is the current digest under this lock: no need to read it again.
            there = recorded == self.subject.digest and destination.has_manifest(recorded)
            if not there:
                self.require(decision)
                if self.copied is None:  # it was there a moment ago; another promotion moved on
                    self.place(destination)
                signed = self.record_promotion(destination, decision, from_environment)
        # Committed. Only now may a tag name the digest; a kill before this point leaves the
        # tags behind the ledger (repair completes it), never ahead of it.
        if signed is not None or self.repaired:
            with self.workspace.ledger.serialized(lock):
                if self.verified.current(self.environment) == self.subject.digest:
                    self.move_tags(destination, signed)
                # else another promotion recorded since: the tags are its to move
        self.settle(destination)
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
        recorded = self.verified.entries(subject_digest=str(self.subject.digest))
        # The referrers index is read back later: the promotion's own referrer goes into
        # the same index, and one read-back after one pause then covers both (``settle``).
        self.carried = carry_referrers(self.subject, destination, recorded, settle=False)

    def settle(self, destination: Repository) -> None:
        """Complete the referrers index updates ``place`` left to be read back (the
        promotion's attachment already did, unless nothing was recorded)."""
        from conveyor.oci.referrers import settle_referrers

        settle_referrers(destination)

    def move_tags(self, destination: Repository, signed: Signed | None) -> None:
        """Point the environment's convenience tags at the digest the ledger now records
        (deploys use the digest). Only after the record: a failure here leaves the tags
        behind the ledger, never ahead of it."""
        try:
            move_tags_to(destination, self.subject.top, self.tags)
        except ConveyorError as exc:
            what = f"recorded as ledger #{signed.entry.index}" if signed else "recorded"
            raise TagsNotMovedError(
                f"the promotion of {self.subject.digest} to {self.environment} is {what}, "
                f"but its tags ({', '.join(self.tags)}) could not all be moved: {exc}; "
                f"conveyor repair {self.environment} moves them"
            ) from exc

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
    envelopes = {key for manifest in carried for key in _envelope_of(manifest)}
    missing = {f"sha256:{item.entry.envelope_sha256}": item for item in recorded}
    for key in envelopes:
        missing.pop(key, None)
    if missing:  # only now read what the destination already lists
        for listed in present:
            for key in _envelope_of(destination.get_manifest(listed)):
                missing.pop(key, None)
    carried.extend(_reattach(destination, subject, item) for item in missing.values())
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


def _envelope_of(manifest: RawManifest) -> list[str]:
    """The envelope digest an attestation referrer stores (none for other referrers)."""
    from conveyor.oci.manifest import parse_manifest
    from conveyor.oci.referrers import dsse_layer

    try:
        layer = dsse_layer(parse_manifest(manifest.data, content_type=manifest.media_type))
    except ConveyorError:
        return []
    return [str(layer.digest)] if layer is not None else []


def _reattach(destination: Repository, subject: Subject, item: VerifiedEntry) -> RawManifest:
    """The referrer manifest of a recorded envelope, its blobs stored (listed by the caller)."""
    from conveyor.oci.referrers import EMPTY_JSON, attestation_manifest

    envelope = item.entry.envelope
    destination.write_blob(Digest.of(envelope), len(envelope), [envelope])
    empty = Digest.of(EMPTY_JSON)
    if destination.blob_size(empty) is None:
        destination.write_blob(empty, len(EMPTY_JSON), [EMPTY_JSON])
    created = item.entry.recorded_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return attestation_manifest(subject.top, envelope, item.entry.predicate_type, created=created)
