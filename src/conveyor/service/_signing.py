"""The one recording path, for every kind of evidence (build, tests, scan, smoke,
approval, promotion, rollback):

check the signer holds the role the kind needs → sign an in-toto Statement in a DSSE
envelope → verify that envelope against the configured keys (nothing unverified is ever
stored) → attach it to the artifact as an OCI referrer → append it to the ledger.
A failure before the append records nothing in the ledger.

One signed statement is one entry: recording a statement the ledger already holds (the same
build record again, say, from a retried CI job; Ed25519 signatures are deterministic, so the
envelope is byte-identical) is idempotent: nothing new is appended, the result names the
entry that holds it (``Signed.already``), the command says "already recorded as ledger #N"
and exits 0. Statements carrying a signed time (tests, scans, smoke, approvals,
promotions) are new each time they are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.oci.digest import Digest
from conveyor.oci.referrers import attach_attestation
from conveyor.oci.store import Repository
from conveyor.policy.config import Identity
from conveyor.policy.roles import EvidenceKind
from conveyor.service._subject import Subject
from conveyor.service._workspace import Workspace

if TYPE_CHECKING:
    from conveyor.attest import Signer
    from conveyor.ledger import Entry


@dataclass(frozen=True)
class Signed:
    identity: Identity
    entry: Entry
    envelope_digest: Digest
    attached: str  # repository@digest of the referrer manifest
    already: bool = False  # the ledger held this statement already: nothing was appended

    @property
    def note(self) -> str | None:
        if not self.already:
            return None
        return f"already recorded as ledger #{self.entry.index}: nothing new was appended"


def record_statement(
    workspace: Workspace,
    subject: Subject,
    *,
    kind: EvidenceKind,
    predicate_type: str,
    predicate: Mapping[str, Any],
    signer: Signer,
    name: str | None = None,
    attach_to: Repository | None = None,
    environment: str | None = None,
    commit: str | None = None,
) -> Signed:
    """Record one statement about ``subject``. ``name``: the statement's and the ledger's
    subject name (default the subject's); ``attach_to``: where the referrer goes (default
    the subject's repository)."""
    from conveyor.attest import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope

    identity = workspace.require_role(signer.keyid, kind, environment)
    subject_name = name or subject.name
    statement = make_statement(subject_name, subject.digest, predicate_type, dict(predicate))
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    workspace.verify_envelope(envelope)  # nothing unverified is ever stored
    attached = attach_attestation(
        attach_to or subject.repository, subject.top, envelope, predicate_type
    )
    from conveyor.ledger import DuplicateEvidence

    try:
        entry = workspace.ledger.append(
            envelope,
            subject_digest=str(subject.digest),
            subject_name=subject_name,
            predicate_type=predicate_type,
            kind=kind.value,
            signer=identity.name,
            keyid=signer.keyid,
            environment=environment,
            commit=commit,
        )
    except DuplicateEvidence as exc:
        if exc.index is None:  # a concurrent writer won the race: refuse, exit 1
            raise
        held = workspace.ledger.entry(exc.index)
        return Signed(identity, held, Digest.of(envelope), attached, already=True)
    return Signed(identity, entry, Digest.of(envelope), attached)
