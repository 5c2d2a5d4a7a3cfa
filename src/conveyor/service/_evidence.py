"""The one verified reader of the ledger.

An entry is believed only when its envelope verifies against the keys of conveyor.yaml, its
statement names the entry's digest, and its signer holds the role that kind of evidence
needs (``policy.roles``: the same table recording asks). Gates, status, history, trace,
rollback, ``lint --env`` and ``pin --env`` all read through ``VerifiedLedger``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, InputError, VerificationError
from conveyor.oci.digest import Digest
from conveyor.policy.model import (
    ApprovalEvidence,
    BuildEvidence,
    EvidenceRef,
    EvidenceSet,
    PromotionEvidence,
    ScanEvidence,
    SmokeEvidence,
    TestEvidence,
)
from conveyor.policy.roles import PROMOTION_KINDS, EvidenceKind, kind_of
from conveyor.service._principal import Counted, count_as, via_of
from conveyor.service._workspace import Workspace

if TYPE_CHECKING:
    from conveyor.attest import Statement
    from conveyor.ledger import Entry


@dataclass(frozen=True)
class VerifiedEntry:
    entry: Entry
    statement: Statement
    signer: str
    roles: frozenset[str]
    trusted: bool = True  # False: read from its keyid hint, signature not checked yet
    counted: Counted | None = None  # whom it counts for, and via whom (server-signed)

    @property
    def via(self) -> str | None:
        """For server-signed evidence: ``API token alice-laptop (signed by server)``."""
        return via_of(self.counted) if self.counted is not None else None

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

    @property
    def kind(self) -> EvidenceKind | None:
        return kind_of(self.entry.kind)


@dataclass(frozen=True)
class HistoryItem:
    """One arrival of a digest in an environment (a promotion or a rollback)."""

    index: int
    digest: str
    recorded_at: datetime
    signer: str
    rollback: bool
    break_glass: str | None
    commit: str | None = None
    repository: str | None = None  # as signed in the promotion statement
    names: tuple[str, ...] = ()  # every name the entry and its statement give the image

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


@dataclass
class VerifiedLedger:
    """Ledger entries, each believed only after signature, subject and role check out."""

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
        retired = self.workspace.retirement_problem(  # issue 9 #7: rotated keys
            opened.signer_keyids[0],
            recorded=entry.recorded_time,
            predicate=opened.statement.predicate,
        )
        if retired is not None:
            self.ignored.append(f"ledger #{entry.index} ignored: {retired}")
            return None
        counted = self._count(entry, opened.statement, opened.signer_keyids[0])
        if isinstance(counted, str):
            self.ignored.append(f"ledger #{entry.index} ignored: {counted}")
            return None
        identity, roles = counted.identity, counted.roles
        expected = self._roles(entry, opened.statement)
        if not expected & roles:
            needed = " or ".join(sorted(expected)) or f"a known kind (not {entry.kind!r})"
            self.ignored.append(
                f"ledger #{entry.index} ignored: {identity.name} lacks the role {needed}"
            )
            return None
        return VerifiedEntry(entry, opened.statement, identity.name, roles, counted=counted)

    def _count(self, entry: Entry, statement: Statement, keyid: str) -> Counted | str:
        """Whom a statement signed by ``keyid`` counts for (``_principal.count_as``: a
        server-signed one, for the principal it names), or why the entry is ignored."""
        signer = self.workspace.identity_of(keyid)
        identities = self.workspace.config.identities
        return count_as(statement.predicate, signer, identities, recorded_for=entry.signer)

    def _roles(self, entry: Entry, statement: Statement) -> frozenset[str]:
        """Who may sign this entry's kind; an approval's environment is the signed one."""
        kind = kind_of(entry.kind)
        if kind is None:
            return frozenset()
        environment = entry.environment
        if kind is EvidenceKind.APPROVAL:
            signed = statement.predicate.get("environment")
            environment = signed if isinstance(signed, str) else None
        return self.workspace.roles_for(kind, environment)

    def claim(self, entry: Entry) -> VerifiedEntry | None:
        """What an entry says, and who its keyid hint names, WITHOUT checking the signature.

        Only ``_decide`` uses claims, and it verifies every claim a decision rests on
        before the decision is returned. Anything that cannot be read this way is verified
        at once.
        """
        from conveyor.attest import decode_envelope, parse_statement, require_subject

        try:
            decoded = decode_envelope(entry.envelope)
            hints = [hint for hint, _ in decoded.signatures if hint in self.workspace.trusted]
            statement = parse_statement(decoded.payload)
            require_subject(statement, Digest.parse(entry.subject_digest))
        except ConveyorError:
            return self.verify(entry)  # names the problem in ``ignored``
        if len(hints) != 1 or statement.predicate_type != entry.predicate_type:
            return self.verify(entry)
        if self.workspace.retirement_problem(
            hints[0], recorded=entry.recorded_time, predicate=statement.predicate
        ):
            return self.verify(entry)  # names the retirement in ``ignored``
        counted = self._count(entry, statement, hints[0])
        if isinstance(counted, str) or not self._roles(entry, statement) & counted.roles:
            return self.verify(entry)  # names the problem in ``ignored``
        name = counted.identity.name
        return VerifiedEntry(entry, statement, name, counted.roles, False, counted)

    def entries(
        self,
        *,
        subject_digest: str | None = None,
        kind: EvidenceKind | None = None,
        environment: str | None = None,
        commit: str | None = None,
    ) -> list[VerifiedEntry]:
        """The entries matching the filters that verify, oldest first."""
        found = []
        for entry in self._raw(subject_digest, kind, environment, commit):
            verified = self.verify(entry)
            if verified is not None:
                found.append(verified)
        return found

    def latest(
        self,
        *,
        subject_digest: str | None = None,
        kind: EvidenceKind | None = None,
        environment: str | None = None,
    ) -> VerifiedEntry | None:
        """The newest entry matching the filters that verifies (older ones are not checked)."""
        for entry in reversed(self._raw(subject_digest, kind, environment, None)):
            verified = self.verify(entry)
            if verified is not None:
                return verified
        return None

    def _raw(
        self,
        subject_digest: str | None,
        kind: EvidenceKind | None,
        environment: str | None,
        commit: str | None,
    ) -> list[Entry]:
        return self.workspace.ledger.entries(
            subject_digest=subject_digest,
            kind=kind.value if kind is not None else None,
            environment=environment,
            commit=commit,
        )

    def promotions(self, environment: str) -> list[HistoryItem]:
        """Every verified arrival in ``environment``, oldest first: promotions and rollbacks
        whose *signed* statement names that environment (the ledger column does not decide)."""
        from conveyor.attest import read_promotion

        items = []
        for kind in PROMOTION_KINDS:
            for item in self.entries(kind=kind, environment=environment):
                facts = read_promotion(item.predicate)
                if facts.to_environment != environment:
                    self.ignored.append(
                        f"ledger #{item.entry.index} ignored: signed for another environment"
                    )
                    continue
                digest = Digest.parse(item.entry.subject_digest)
                names = {item.entry.subject_name, *item.statement.names(digest)}
                if facts.repository:
                    names.add(facts.repository)
                items.append(
                    HistoryItem(
                        item.entry.index,
                        item.entry.subject_digest,
                        item.entry.recorded_time,
                        item.signer,
                        facts.rollback,
                        facts.break_glass,
                        repository=facts.repository,
                        names=tuple(sorted(names)),
                    )
                )
        items.sort(key=lambda h: h.index)
        return items

    def current(self, environment: str) -> Digest | None:
        """The digest that arrived last in ``environment``."""
        history = self.promotions(environment)
        return Digest.parse(history[-1].digest) if history else None

    def commits(self, digests: Iterable[str]) -> dict[str, str]:
        """digest -> the commit its (latest verified) build record names."""
        from conveyor.attest import read_provenance

        found: dict[str, str] = {}
        for digest in set(digests):
            for item in self.entries(subject_digest=digest, kind=EvidenceKind.BUILD):
                commit = read_provenance(item.predicate).commit
                if commit:
                    found[digest] = commit
        return found


# --- the policy engine's view --------------------------------------------------------------


@dataclass
class _Collected:
    builds: list[BuildEvidence] = field(default_factory=list)
    tests: list[TestEvidence] = field(default_factory=list)
    scans: list[ScanEvidence] = field(default_factory=list)
    smokes: list[SmokeEvidence] = field(default_factory=list)
    approvals: list[ApprovalEvidence] = field(default_factory=list)
    promotions: list[PromotionEvidence] = field(default_factory=list)


def _build(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_provenance

    facts = read_provenance(item.predicate)
    if facts.commit:
        into.builds.append(
            BuildEvidence(item.ref, facts.commit, facts.run_id, facts.builder_id, dict(labels))
        )


def _tests(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_test_result

    result = read_test_result(item.predicate)
    into.tests.append(TestEvidence(item.ref, result.passed, result.failed, 0, result.skipped))


def _scan(item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]) -> None:
    from conveyor.attest import read_vulnerability_scan

    scan = read_vulnerability_scan(item.predicate)
    into.scans.append(
        ScanEvidence(
            item.ref,
            parse_time(scan.finished) or item.ref.recorded_at,
            {k.lower(): v for k, v in scan.counts.items()},
            tuple((i, s.lower()) for i, s in scan.findings),
        )
    )


def _smoke(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_smoke

    smoke = read_smoke(item.predicate)
    if smoke.environment:
        into.smokes.append(SmokeEvidence(item.ref, smoke.environment, smoke.passed))


def _approval(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_approval

    approval = read_approval(item.predicate)
    if approval.environment:
        into.approvals.append(ApprovalEvidence(item.ref, approval.environment, str(digest)))


def _promotion(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_promotion

    promotion = read_promotion(item.predicate)
    if promotion.to_environment:
        into.promotions.append(
            PromotionEvidence(
                item.ref,
                promotion.to_environment,
                str(digest),
                rollback=promotion.rollback,
                break_glass=promotion.break_glass,
            )
        )


_Reader = Callable[[VerifiedEntry, _Collected, Digest, Mapping[str, str]], None]
_READERS: Mapping[EvidenceKind, _Reader] = {
    EvidenceKind.BUILD: _build,
    EvidenceKind.TESTS: _tests,
    EvidenceKind.SCAN: _scan,
    EvidenceKind.SMOKE: _smoke,
    EvidenceKind.APPROVAL: _approval,
    EvidenceKind.PROMOTION: _promotion,
    EvidenceKind.ROLLBACK: _promotion,
}


def evidence_for(
    verified: Sequence[VerifiedEntry], digest: Digest, labels: Mapping[str, str]
) -> EvidenceSet:
    """The policy engine's view of one digest, from its verified ledger entries."""
    collected = _Collected()
    for item in verified:
        kind = item.kind
        if kind is not None:
            _READERS[kind](item, collected, digest, labels)
    return EvidenceSet(
        digest=str(digest),
        builds=tuple(collected.builds),
        tests=tuple(collected.tests),
        scans=tuple(collected.scans),
        smokes=tuple(collected.smokes),
        approvals=tuple(collected.approvals),
        promotions=tuple(collected.promotions),
    )


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
