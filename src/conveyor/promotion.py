"""Promotion: check gates, place the same digest in an environment, record it; and the views
over what happened (status, history, trace) and rollback.

The evidence the policy engine sees is rebuilt from the ledger on every decision, and only
from entries whose envelopes verify against the keys in ``conveyor.yaml`` and whose
statement names this digest: a forged, tampered or foreign entry is ignored (and said so).
Promotions into one environment are serialised by the database (``Ledger.serialized``), so
parallel promoters see each other's records and nothing is lost or recorded twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.custody import (
    Workspace,
    _resolved,
    _Subject,
    attach_attestation,
    load_signer,
    open_workspace,
    roles_for,
)
from conveyor.errors import InputError, PolicyDenied
from conveyor.oci.digest import Digest
from conveyor.oci.name import LayoutReference, Reference, parse_target
from conveyor.oci.store import Repository
from conveyor.policy.config import Config, Identity
from conveyor.policy.model import (
    ApprovalEvidence,
    BuildEvidence,
    Decision,
    EvidenceRef,
    EvidenceSet,
    PromotionEvidence,
    PromotionRequest,
    ScanEvidence,
    SmokeEvidence,
    TestEvidence,
)
from conveyor.policy.roles import EvidenceKind, kind_of

if TYPE_CHECKING:
    from conveyor.attest import Statement
    from conveyor.ledger import Entry
    from conveyor.registry.copy import CopyResult
    from conveyor.service import RegistryOptions

PROMOTION_KINDS = ("promotion", "rollback")


class PromotionDenied(PolicyDenied):
    """The gates said no; ``decision`` holds every gate's verdict and reason."""

    def __init__(self, message: str, decision: Decision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


# --- verified evidence from the ledger --------------------------------------------------------


@dataclass(frozen=True)
class VerifiedEntry:
    entry: Entry
    statement: Statement
    signer: str
    roles: frozenset[str]
    trusted: bool = True  # False: read from its keyid hint, signature not checked yet

    @property
    def ref(self) -> EvidenceRef:
        return EvidenceRef(
            index=self.entry.index,
            envelope_digest=f"sha256:{self.entry.envelope_sha256}",
            signer=self.signer,
            signer_roles=self.roles,
            recorded_at=self.entry.recorded_time,
        )

    @property
    def predicate(self) -> dict[str, Any]:
        return dict(self.statement.predicate)


@dataclass
class VerifiedLedger:
    """Ledger entries, each believed only after its signature and subject check out."""

    workspace: Workspace
    ignored: list[str] = field(default_factory=list)
    # One command may decide twice (before and under the lock): check each entry once.
    _checked: dict[tuple[int, str], VerifiedEntry | None] = field(default_factory=dict)

    def verify(self, entry: Entry) -> VerifiedEntry | None:
        key = (entry.index, entry.envelope_sha256)
        if key not in self._checked:
            self._checked[key] = self._verify(entry)
        return self._checked[key]

    def _verify(self, entry: Entry) -> VerifiedEntry | None:
        from conveyor.attest import open_attestation
        from conveyor.errors import VerificationError

        try:
            digest = Digest.parse(entry.subject_digest)
            opened = open_attestation(
                entry.envelope,
                self.workspace.verifiers(),
                digest=digest,
                predicate_types=[entry.predicate_type],
            )
        except (VerificationError, InputError) as exc:
            self.ignored.append(f"ledger #{entry.index} ignored: {exc}")
            return None
        identity = self.workspace.identity_of(opened.signer_keyids[0])
        roles = frozenset(str(role) for role in identity.roles)
        expected = self._roles(entry, opened.statement)
        if not expected & roles:
            needed = " or ".join(sorted(expected)) or "a known kind"
            self.ignored.append(
                f"ledger #{entry.index} ignored: {identity.name} lacks the role {needed}"
            )
            return None
        return VerifiedEntry(entry, opened.statement, identity.name, roles)

    def _roles(self, entry: Entry, statement: Statement) -> frozenset[str]:
        """Who may sign this entry's kind; an approval's environment is the signed one."""
        kind = kind_of(entry.kind)
        if kind is None:
            return frozenset()
        environment = entry.environment
        if kind is EvidenceKind.APPROVAL:
            signed = statement.predicate.get("environment")
            environment = signed if isinstance(signed, str) else None
        return roles_for(self.workspace.config, kind, environment)

    def claim(self, entry: Entry) -> VerifiedEntry | None:
        """What an entry says, and who its keyid hint names, WITHOUT checking the signature.

        Only ``_decide`` uses claims, and it verifies every claim a decision rests on
        before the decision is returned. Anything that cannot be read this way is verified
        at once.
        """
        from conveyor.attest import decode_envelope, parse_statement, require_subject
        from conveyor.errors import ConveyorError

        try:
            decoded = decode_envelope(entry.envelope)
            hints = [hint for hint, _ in decoded.signatures if hint in self.workspace.trusted]
            statement = parse_statement(decoded.payload)
            require_subject(statement, Digest.parse(entry.subject_digest))
        except ConveyorError:
            return self.verify(entry)  # names the problem in ``ignored``
        if len(hints) != 1 or statement.predicate_type != entry.predicate_type:
            return self.verify(entry)
        identity = self.workspace.identity_of(hints[0])
        roles = frozenset(str(role) for role in identity.roles)
        if not self._roles(entry, statement) & roles:
            return self.verify(entry)
        return VerifiedEntry(entry, statement, identity.name, roles, trusted=False)

    def latest(self, **filters: Any) -> VerifiedEntry | None:
        """The newest entry matching ``filters`` that verifies (older ones are not checked)."""
        for entry in reversed(self.workspace.ledger.entries(**filters)):
            verified = self.verify(entry)
            if verified is not None:
                return verified
        return None

    def entries(self, **filters: Any) -> list[VerifiedEntry]:
        found = []
        for entry in self.workspace.ledger.entries(**filters):
            verified = self.verify(entry)
            if verified is not None:
                found.append(verified)
        return found


def evidence_for(
    verified: Sequence[VerifiedEntry], digest: Digest, labels: dict[str, str]
) -> EvidenceSet:
    """The policy engine's view of one digest, from its verified ledger entries."""
    from conveyor.attest import (
        read_approval,
        read_promotion,
        read_provenance,
        read_smoke,
        read_test_result,
        read_vulnerability_scan,
    )

    builds, tests, scans, smokes, approvals, promotions = [], [], [], [], [], []
    for item in verified:
        kind, predicate, ref = item.entry.kind, item.predicate, item.ref
        if kind == "build":
            facts = read_provenance(predicate)
            if facts.commit:
                builds.append(
                    BuildEvidence(ref, facts.commit, facts.run_id, facts.builder_id, labels)
                )
        elif kind == "tests":
            result = read_test_result(predicate)
            tests.append(TestEvidence(ref, result.passed, result.failed, 0, result.skipped))
        elif kind == "scan":
            scan = read_vulnerability_scan(predicate)
            scans.append(
                ScanEvidence(
                    ref,
                    _parse_time(scan.finished) or ref.recorded_at,
                    {k.lower(): v for k, v in scan.counts.items()},
                    tuple((i, s.lower()) for i, s in scan.findings),
                )
            )
        elif kind == "smoke":
            smoke = read_smoke(predicate)
            if smoke.environment:
                smokes.append(SmokeEvidence(ref, smoke.environment, smoke.passed))
        elif kind == "approval":
            approval = read_approval(predicate)
            if approval.environment:
                approvals.append(ApprovalEvidence(ref, approval.environment, str(digest)))
        elif kind in PROMOTION_KINDS:
            promotion = read_promotion(predicate)
            if promotion.to_environment:
                promotions.append(
                    PromotionEvidence(
                        ref,
                        promotion.to_environment,
                        str(digest),
                        rollback=promotion.rollback,
                        break_glass=promotion.break_glass,
                    )
                )
    return EvidenceSet(
        digest=str(digest),
        builds=tuple(builds),
        tests=tuple(tests),
        scans=tuple(scans),
        smokes=tuple(smokes),
        approvals=tuple(approvals),
        promotions=tuple(promotions),
    )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- check and promote --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    reference: str  # name@digest of what REF resolved to
    resolved_from: str | None  # the tag, when REF named one
    digest: Digest
    decision: Decision
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "resolved_from": self.resolved_from,
            "digest": str(self.digest),
            "environment": self.decision.environment,
            "allowed": self.decision.allowed,
            "frozen": self.decision.frozen,
            "break_glass": self.decision.break_glass,
            "policy_sha256": self.decision.policy_sha256,
            "gates": [_gate_dict(g) for g in self.decision.gates],
            "ignored": list(self.ignored),
        }


def _gate_dict(gate: Any) -> dict[str, Any]:
    return {
        "gate": gate.gate,
        "passed": gate.passed,
        "reason": gate.reason,
        "evidence": [
            {
                "ledger_index": ref.index,
                "attestation": ref.envelope_digest,
                "signer": ref.signer,
                "recorded_at": ref.recorded_at.isoformat(),
            }
            for ref in gate.evidence
        ],
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
    copy: dict[str, Any] | None = None
    referrers_carried: int = 0
    ignored: tuple[str, ...] = ()

    @property
    def image(self) -> str:
        return f"{self.repository}@{self.digest}"

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
            "gates": [_gate_dict(g) for g in self.decision.gates],
            "copy": self.copy,
            "referrers_carried": self.referrers_carried,
            "ignored": list(self.ignored),
        }


def check(
    reference: str,
    *,
    environment: str,
    key: str | None = None,
    break_glass: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> CheckResult:
    """Evaluate the gates of ``environment`` for the digest REF names; changes nothing.

    With a key (``--key`` / ``CONVEYOR_SIGNING_KEY``) the promoter is that identity, so
    ``distinct_from: [promoter]`` is evaluated as a promotion would.
    """
    signer = load_signer(key) if key or _env_key() else None
    with open_workspace(config_path) as workspace:
        workspace.config.model.environment(environment)  # unknown environment: exit 2
        promoter, roles = _promoter(workspace, signer.keyid if signer else None)
        with _resolved(reference, options=options, inspect=True) as subject:
            verified = VerifiedLedger(workspace)
            decision = _decide(
                workspace, verified, subject, environment, promoter, roles, break_glass
            )
            return CheckResult(
                f"{subject.name}@{subject.top.digest}",
                subject.tag,
                subject.top.digest,
                decision,
                tuple(verified.ignored),
            )


def _env_key() -> bool:
    import os

    from conveyor.custody import SIGNING_KEY_ENV

    return bool(os.environ.get(SIGNING_KEY_ENV))


def _promoter(workspace: Workspace, keyid: str | None) -> tuple[str, frozenset[str]]:
    if keyid is None:
        return "", frozenset()
    identity = workspace.identity_of(keyid)
    return identity.name, frozenset(str(role) for role in identity.roles)


def _decide(
    workspace: Workspace,
    verified: VerifiedLedger,
    subject: _Subject,
    environment: str,
    promoter: str,
    roles: frozenset[str],
    break_glass: str | None,
    *,
    rollback: bool = False,
) -> Decision:
    from conveyor.policy.engine import evaluate

    digest = subject.top.digest
    labels = dict(subject.inspection.labels) if subject.inspection else {}
    request = PromotionRequest(
        digest=str(digest),
        environment=environment,
        promoter=promoter,
        promoter_roles=roles,
        now=datetime.now(UTC),
        break_glass=break_glass,
        rollback=rollback,
    )
    # Signatures cost ~0.2 ms each and a digest may carry thousands of entries, most of them
    # superseded (the most recent result decides). So entries are first read as claims; a
    # decision is returned only once every entry it rests on has been verified, and a
    # denial is re-made from verified entries alone. A claim that fails verification is
    # dropped and the decision made again.
    candidates: dict[int, VerifiedEntry] = {}
    for entry in workspace.ledger.entries(subject_digest=str(digest)):
        claimed = verified.claim(entry)
        if claimed is not None:
            candidates[entry.index] = claimed
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


def _with_build_hint(decision: Decision, hint: str) -> Decision:
    gates = tuple(
        replace(g, reason=f"{g.reason}; {hint}") if g.gate == "build" and not g.passed else g
        for g in decision.gates
    )
    return replace(decision, gates=gates)


def _where_the_tag_pointed(verified: VerifiedLedger, subject: _Subject) -> str | None:
    """For a moved tag: the digest that carried it when it was built, from build records."""
    if subject.tag is None:
        return None
    wanted = f"{subject.name}:{subject.tag}"
    for item in reversed(verified.entries(kind="build")):
        params = item.predicate.get("buildDefinition", {}).get("externalParameters", {})
        if isinstance(params, dict) and params.get("image") == wanted:
            return (
                f"{wanted} now names {subject.top.digest.short}, but when it was built it "
                f"named {item.entry.subject_digest} (ledger #{item.entry.index}): the tag moved"
            )
    return None


def promote(
    reference: str,
    *,
    environment: str,
    key: str | None = None,
    break_glass: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> PromotionResult:
    """Resolve REF once, check the gates, place the same digest, record the promotion."""
    if break_glass is not None and not break_glass.strip():
        raise InputError("--break-glass needs a reason")
    signer = load_signer(key)
    with open_workspace(config_path) as workspace:
        identity = workspace.require_role(
            signer.keyid, roles_for(workspace.config, EvidenceKind.PROMOTION, None), "a promotion"
        )
        spec = workspace.config.model.environment(environment)
        with _resolved(reference, options=options, inspect=True) as subject:
            return _place_and_record(
                workspace,
                subject,
                environment=environment,
                signer=signer,
                identity=identity,
                break_glass=break_glass,
                from_environment=_after(spec),
                options=options,
            )


def _after(spec: Any) -> str | None:
    after = getattr(spec.requires, "after", None)
    return getattr(after, "environment", None) if after is not None else None


def _place_and_record(
    workspace: Workspace,
    subject: _Subject,
    *,
    environment: str,
    signer: Any,
    identity: Identity,
    break_glass: str | None,
    from_environment: str | None,
    options: RegistryOptions | None,
    rollback: bool = False,
) -> PromotionResult:
    """Copy outside the environment's lock, then decide again, move the tags and record
    under it: a long copy never holds the ledger, and what the tags name is always what the
    ledger last recorded. Only a digest the gates allow is ever copied."""
    digest = subject.top.digest
    target = environment_target(workspace.config, environment)
    tags = tuple(workspace.config.model.environment(environment).tags)
    repository_name = _target_name(target)
    verified = VerifiedLedger(workspace)
    roles = frozenset(str(role) for role in identity.roles)

    def decide() -> Decision:
        return _decide(
            workspace,
            verified,
            subject,
            environment,
            identity.name,
            roles,
            break_glass,
            rollback=rollback,
        )

    def result(decision: Decision, entry: Entry | None = None) -> PromotionResult:
        return PromotionResult(
            environment,
            repository_name,
            digest,
            f"{subject.name}@{digest}",
            subject.tag,
            decision,
            recorded=entry is not None,
            ledger_index=entry.index if entry is not None else None,
            tags=tags,
            rollback=rollback,
            copy=copied.to_dict() if copied is not None and entry is not None else None,
            referrers_carried=carried,
            ignored=tuple(verified.ignored),
        )

    copied: CopyResult | None = None
    carried = 0
    with _target_repository(target, options) as destination:

        def there() -> bool:
            return current_digest(verified, environment) == digest and destination.has_manifest(
                digest
            )

        if not there():
            _require_allowed(decide(), subject, environment, rollback)
            copied = _place(subject, destination)
            carried = _carry_referrers(subject, destination)
        with workspace.ledger.serialized(f"promote/{environment}"):
            decision = decide()
            if there():
                return result(decision)
            _require_allowed(decision, subject, environment, rollback)
            if copied is None:  # it was there a moment ago; another promotion moved it on
                copied = _place(subject, destination)
                carried = _carry_referrers(subject, destination)
            for tag in tags:
                destination.put_manifest(subject.top, tag=tag)
            entry = _record_promotion(
                workspace,
                subject,
                destination,
                signer=signer,
                promoter=identity.name,
                environment=environment,
                repository_name=repository_name,
                decision=decision,
                from_environment=from_environment,
                rollback=rollback,
            )
    return result(decision, entry)


def _require_allowed(
    decision: Decision, subject: _Subject, environment: str, rollback: bool
) -> None:
    if decision.allowed:
        return
    failed = "; ".join(f"{g.gate}: {g.reason}" for g in decision.failed)
    raise PromotionDenied(
        f"{'rollback' if rollback else 'promotion'} of {subject.name}@{subject.top.digest.short} "
        f"to {environment} denied: {failed}",
        decision,
    )


def environment_target(config: Config, environment: str) -> Reference | LayoutReference:
    """The environment's repository; an ``oci:`` layout path is relative to conveyor.yaml,
    like every other path in it."""
    target = config.model.environment(environment).target
    if isinstance(target, LayoutReference) and not Path(target.path).is_absolute():
        return LayoutReference(str(config.base_dir / target.path))
    return target


def _target_name(target: Reference | LayoutReference) -> str:
    return f"oci:{target.path}" if isinstance(target, LayoutReference) else target.name


@contextmanager
def _target_repository(
    target: Reference | LayoutReference, options: RegistryOptions | None
) -> Iterator[Repository]:
    from conveyor.service import _session

    with _session(options) as open_repository:
        yield open_repository(target, create=True)


def _place(subject: _Subject, destination: Repository) -> CopyResult:
    """The same digest in the environment's repository, by digest only: blobs first
    (mounted when the registry allows it), then the manifests. Tags move under the lock."""
    from conveyor.registry.copy import copy

    return copy(subject.repository, subject.top.digest, destination)


def _carry_referrers(subject: _Subject, destination: Repository) -> int:
    """Attestations travel with the image: every referrer of the digest that the
    destination does not list yet is copied, then listed with one index update."""
    from conveyor.oci.referrers import attach_referrers, list_referrers
    from conveyor.registry.copy import copy

    if subject.repository is destination:
        return 0
    digest = subject.top.digest
    present = {d.digest for d in list_referrers(destination, digest)}
    carried = []
    for descriptor in list_referrers(subject.repository, digest):
        if descriptor.digest in present:
            continue
        copy(subject.repository, descriptor.digest, destination)
        carried.append(subject.repository.get_manifest(descriptor.digest))
    attach_referrers(destination, carried)
    return len(carried)


def _record_promotion(
    workspace: Workspace,
    subject: _Subject,
    destination: Repository,
    *,
    signer: Any,
    promoter: str,
    environment: str,
    repository_name: str,
    decision: Decision,
    from_environment: str | None,
    rollback: bool,
) -> Entry:
    from conveyor.attest import (
        IN_TOTO_PAYLOAD_TYPE,
        PROMOTION_V1,
        GateRecord,
        make_statement,
        promotion,
        sign_envelope,
    )

    now = datetime.now(UTC)
    predicate = promotion(
        from_environment=from_environment,
        to_environment=environment,
        repository=repository_name,
        policy_sha256=decision.policy_sha256,
        gates=[
            GateRecord(g.gate, g.passed, g.reason, [r.envelope_digest for r in g.evidence])
            for g in decision.gates
        ],
        break_glass=decision.break_glass,
        rollback=rollback,
        at=now,
    )
    statement = make_statement(repository_name, subject.top.digest, PROMOTION_V1, predicate)
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    workspace.verify_envelope(envelope)
    attach_attestation(destination, subject.top, envelope, PROMOTION_V1)
    return workspace.ledger.append(
        envelope,
        subject_digest=str(subject.top.digest),
        subject_name=repository_name,
        predicate_type=PROMOTION_V1,
        kind="rollback" if rollback else "promotion",
        signer=promoter,
        keyid=signer.keyid,
        environment=environment,
    )


# --- history, status, rollback ------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryItem:
    index: int
    digest: str
    recorded_at: datetime
    signer: str
    rollback: bool
    break_glass: str | None
    commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger_index": self.index,
            "digest": self.digest,
            "recorded_at": self.recorded_at.isoformat(),
            "promoted_by": self.signer,
            "rollback": self.rollback,
            "break_glass": self.break_glass,
            "commit": self.commit,
        }


def _history(verified: VerifiedLedger, environment: str) -> list[HistoryItem]:
    from conveyor.attest import read_promotion

    items = []
    for kind in PROMOTION_KINDS:
        for item in verified.entries(kind=kind, environment=environment):
            facts = read_promotion(item.predicate)
            if facts.to_environment != environment:
                continue  # the signed statement, not the ledger column, decides
            items.append(
                HistoryItem(
                    item.entry.index,
                    item.entry.subject_digest,
                    item.entry.recorded_time,
                    item.signer,
                    facts.rollback,
                    facts.break_glass,
                )
            )
    items.sort(key=lambda h: h.index)
    return items


def current_digest(verified: VerifiedLedger, environment: str) -> Digest | None:
    history = _history(verified, environment)
    return Digest.parse(history[-1].digest) if history else None


def _commits(verified: VerifiedLedger, digests: Iterable[str]) -> dict[str, str]:
    from conveyor.attest import read_provenance

    found: dict[str, str] = {}
    for digest in set(digests):
        for item in verified.entries(subject_digest=digest, kind="build"):
            commit = read_provenance(item.predicate).commit
            if commit:
                found[digest] = commit
    return found


def history(environment: str, *, config_path: str | Path | None = None) -> list[HistoryItem]:
    with open_workspace(config_path) as workspace:
        workspace.config.model.environment(environment)
        verified = VerifiedLedger(workspace)
        items = _history(verified, environment)
        commits = _commits(verified, (i.digest for i in items))
    return [replace(i, commit=commits.get(i.digest)) for i in reversed(items)]


@dataclass(frozen=True)
class EnvironmentStatus:
    environment: str
    repository: str
    current: HistoryItem | None
    candidate: str | None  # digest waiting to enter
    candidate_failing: tuple[str, ...] = ()
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        current = self.current.to_dict() if self.current else None
        if current is not None and self.current is not None:
            current["age_seconds"] = int((now - self.current.recorded_at).total_seconds())
            current["image"] = f"{self.repository}@{self.current.digest}"
        return {
            "environment": self.environment,
            "repository": self.repository,
            "current": current,
            "candidate": self.candidate,
            "candidate_failing": list(self.candidate_failing),
            "note": self.note,
        }


def status(
    *, config_path: str | Path | None = None, options: RegistryOptions | None = None
) -> list[EnvironmentStatus]:
    """Each environment: what runs there now, and the candidate waiting with its failing gates."""
    from conveyor.policy.engine import environment_order

    result: list[EnvironmentStatus] = []
    with open_workspace(config_path) as workspace:
        verified = VerifiedLedger(workspace)
        model = workspace.config.model
        currents: dict[str, HistoryItem | None] = {}
        for name in environment_order(model):
            spec = model.environment(name)
            items = _history(verified, name)
            current = items[-1] if items else None
            currents[name] = current
            after = _after(spec)
            candidate: str | None
            source_name: str | None
            if after is not None:
                upstream = currents.get(after)
                candidate = upstream.digest if upstream else None
                source_name = _target_name(environment_target(workspace.config, after))
            else:
                latest = verified.latest(kind="build")
                candidate = latest.entry.subject_digest if latest else None
                source_name = latest.entry.subject_name if latest else None
            if current is not None:
                commit = _commits(verified, [current.digest]).get(current.digest)
                current = replace(current, commit=commit)
            failing: tuple[str, ...] = ()
            note = None
            if candidate is not None and current is not None and candidate == current.digest:
                candidate = None
            if candidate is not None and source_name is not None:
                failing, note = _failing_gates(
                    workspace, verified, f"{source_name}@{candidate}", name, options
                )
            result.append(
                EnvironmentStatus(
                    name,
                    _target_name(environment_target(workspace.config, name)),
                    current,
                    candidate,
                    failing,
                    note,
                )
            )
    return result


def _failing_gates(
    workspace: Workspace,
    verified: VerifiedLedger,
    reference: str,
    environment: str,
    options: RegistryOptions | None,
) -> tuple[tuple[str, ...], str | None]:
    from conveyor.errors import ConveyorError

    try:
        with _resolved(reference, options=options, inspect=True) as subject:
            decision = _decide(workspace, verified, subject, environment, "", frozenset(), None)
    except ConveyorError as exc:
        return (), f"could not evaluate the candidate: {exc}"
    return tuple(f"{g.gate}: {g.reason}" for g in decision.failed), None


def rollback(
    environment: str,
    *,
    to: str | None = None,
    key: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> PromotionResult:
    """Put back the previous digest of ENV (or ``to``, which must be in ENV's history)."""
    signer = load_signer(key)
    with open_workspace(config_path) as workspace:
        identity = workspace.require_role(
            signer.keyid, roles_for(workspace.config, EvidenceKind.ROLLBACK, None), "a rollback"
        )
        workspace.config.model.environment(environment)  # unknown environment: exit 2
        verified = VerifiedLedger(workspace)
        items = _history(verified, environment)
        if not items:
            raise InputError(f"{environment} has no history: nothing to roll back to")
        digests = [i.digest for i in items]
        if to is not None:
            wanted = str(Digest.parse(to.split("@")[-1]))
            if wanted not in digests:
                raise InputError(
                    f"{wanted} was never in {environment}; a rollback only puts back a digest "
                    "from its history (see conveyor history)"
                )
        else:
            earlier = [d for d in digests if d != digests[-1]]
            if not earlier:
                raise InputError(f"{environment} has had only one digest: nothing to roll back to")
            wanted = earlier[-1]
        reference = f"{_target_name(environment_target(workspace.config, environment))}@{wanted}"
        with _resolved(reference, options=options, inspect=True) as subject:
            return _place_and_record(
                workspace,
                subject,
                environment=environment,
                signer=signer,
                identity=identity,
                break_glass=None,
                from_environment=environment,
                options=options,
                rollback=True,
            )


# --- trace ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceEvent:
    index: int
    recorded_at: datetime
    kind: str
    digest: str
    subject: str
    environment: str | None
    signer: str | None
    verified: bool
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger_index": self.index,
            "recorded_at": self.recorded_at.isoformat(),
            "kind": self.kind,
            "digest": self.digest,
            "subject": self.subject,
            "environment": self.environment,
            "signer": self.signer,
            "verified": self.verified,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Trace:
    query: str
    digests: tuple[str, ...]
    events: tuple[TraceEvent, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "digests": list(self.digests),
            "events": [e.to_dict() for e in self.events],
        }


def trace(
    query: str, *, config_path: str | Path | None = None, options: RegistryOptions | None = None
) -> Trace:
    """The chain of custody of a digest (REF) or of everything built from a commit."""
    with open_workspace(config_path) as workspace:
        verified = VerifiedLedger(workspace)
        if _looks_like_commit(query):
            commit = query.lower()
            builds = [
                e
                for e in workspace.ledger.entries(kind="build")
                if e.commit and e.commit.startswith(commit)
            ]
            digests = list(dict.fromkeys(e.subject_digest for e in builds))
        else:
            target = parse_target(query)
            if target.digest is not None:
                digests = [str(target.digest)]
            else:
                with _resolved(query, options=options, inspect=False) as subject:
                    digests = [str(subject.top.digest)]
        events: list[TraceEvent] = []
        for digest in digests:
            for entry in workspace.ledger.entries(subject_digest=digest):
                item = verified.verify(entry)
                events.append(_event(entry, item))
    events.sort(key=lambda e: e.index)
    return Trace(query, tuple(digests), tuple(events))


def _looks_like_commit(text: str) -> bool:
    return 7 <= len(text) <= 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _event(entry: Entry, item: VerifiedEntry | None) -> TraceEvent:
    summary = _summarise(entry.kind, item.predicate) if item else "signature does not verify"
    return TraceEvent(
        entry.index,
        entry.recorded_time,
        entry.kind,
        entry.subject_digest,
        entry.subject_name,
        entry.environment,
        item.signer if item else None,
        item is not None,
        summary,
    )


def _summarise(kind: str, predicate: dict[str, Any]) -> str:
    from conveyor.attest import (
        read_approval,
        read_promotion,
        read_provenance,
        read_smoke,
        read_test_result,
        read_vulnerability_scan,
    )

    if kind == "build":
        facts = read_provenance(predicate)
        run = f", CI run {facts.run_id}" if facts.run_id else ""
        url = f" ({facts.run_url})" if facts.run_url else ""
        return f"built from commit {facts.commit}{run}{url}"
    if kind == "tests":
        t = read_test_result(predicate)
        return f"tests {t.result}: {t.passed} passed, {t.failed} failed, {t.skipped} skipped"
    if kind == "scan":
        s = read_vulnerability_scan(predicate)
        counts = ", ".join(f"{k.lower()} {v}" for k, v in s.counts.items() if v)
        return f"scanned at {s.finished or '?'}: {counts or 'no findings'}"
    if kind == "smoke":
        m = read_smoke(predicate)
        return f"smoke test {'passed' if m.passed else 'FAILED'} in {m.environment}"
    if kind == "approval":
        a = read_approval(predicate)
        comment = f": {a.comment}" if a.comment else ""
        return f"approved for {a.environment}{comment}"
    if kind in PROMOTION_KINDS:
        p = read_promotion(predicate)
        verb = "rolled back" if p.rollback else "promoted"
        glass = f" (BREAK-GLASS: {p.break_glass})" if p.break_glass else ""
        return f"{verb} to {p.to_environment} in {p.repository}{glass}"
    return kind
