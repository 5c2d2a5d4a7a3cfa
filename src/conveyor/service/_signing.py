"""The one recording path, for every kind of evidence (build, tests, scan, smoke,
approval, promotion, rollback), signed here or pre-signed by its author:

check the signer (or the principal a server signs for) holds the role the kind needs →
sign an in-toto Statement in a DSSE envelope (naming the principal, if any) → verify that
envelope against the configured keys (nothing unverified is ever stored) → attach it to the
artifact as an OCI referrer → append it to the ledger. A failure before the append records
nothing in the ledger.

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
from conveyor.policy.roles import EvidenceKind, Role
from conveyor.service._principal import PRINCIPAL_V1, Principal
from conveyor.service._subject import Subject
from conveyor.service._workspace import UnknownSignerError, Workspace

if TYPE_CHECKING:
    from conveyor.attest import Signer
    from conveyor.ledger import Entry


@dataclass(frozen=True)
class Signed:
    identity: Identity  # whom the evidence counts for (the principal, when a server signed)
    entry: Entry
    envelope_digest: Digest
    attached: str | None  # repository@digest of the referrer manifest (None: not attached)
    already: bool = False  # the ledger held this statement already: nothing was appended

    @property
    def note(self) -> str | None:
        if not self.already:
            return None
        return f"already recorded as ledger #{self.entry.index}: nothing new was appended"


def principal_identity(workspace: Workspace, signer: Signer, principal: Principal) -> Identity:
    """The identity a server's ``signer`` acts for: the key must be a ``server`` identity's,
    the principal an identity of conveyor.yaml that is not a server."""
    server = workspace.identity_of(signer.keyid)
    if Role.SERVER not in server.roles:
        raise UnknownSignerError(
            f"identity {server.name!r} may not sign for {principal.identity!r}: only an "
            "identity with the role 'server' signs on behalf of a principal"
        )
    identity = workspace.config.identities.get(principal.identity)
    if identity is None:
        raise UnknownSignerError(
            f"the principal {principal.identity!r} is not an identity in {workspace.config.path}"
        )
    if Role.SERVER in identity.roles:
        raise UnknownSignerError(f"{identity.name!r} is a server identity, not a principal")
    return identity


def acting_identity(
    workspace: Workspace,
    signer: Signer,
    principal: Principal | None,
    kind: EvidenceKind,
    environment: str | None = None,
) -> Identity:
    """Who records ``kind``: the signer's identity, or the principal a server signs for;
    it must hold the role the kind needs (else ``UnknownSignerError``)."""
    if principal is None:
        return workspace.require_role(signer.keyid, kind, environment)
    identity = principal_identity(workspace, signer, principal)
    return workspace.require_role_of(identity, kind, environment)


def record_statement(
    workspace: Workspace,
    subject: Subject,
    *,
    kind: EvidenceKind,
    predicate_type: str,
    predicate: Mapping[str, Any],
    signer: Signer,
    principal: Principal | None = None,
    name: str | None = None,
    attach_to: Repository | None = None,
    attach: bool = True,
    environment: str | None = None,
    commit: str | None = None,
) -> Signed:
    """Record one statement about ``subject``. ``name``: the statement's and the ledger's
    subject name (default the subject's); ``attach_to``: where the referrer goes (default
    the subject's repository); ``attach=False``: the caller attaches it after the append
    (a promotion, outside its lock); ``principal``: whom a server's ``signer`` acts for."""
    from conveyor.attest import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope

    identity = acting_identity(workspace, signer, principal, kind, environment)
    body = dict(predicate)
    if principal is not None:
        body[PRINCIPAL_V1] = principal.to_dict()
    subject_name = name or subject.name
    statement = make_statement(subject_name, subject.digest, predicate_type, body)
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    return store_envelope(
        workspace,
        subject,
        envelope,
        kind=kind,
        predicate_type=predicate_type,
        identity=identity,
        keyid=signer.keyid,
        name=subject_name,
        attach_to=attach_to,
        attach=attach,
        environment=environment,
        commit=commit,
    )


def store_envelope(
    workspace: Workspace,
    subject: Subject,
    envelope: bytes,
    *,
    kind: EvidenceKind,
    predicate_type: str,
    identity: Identity,
    keyid: str,
    name: str,
    attach_to: Repository | None = None,
    attach: bool = True,
    environment: str | None = None,
    commit: str | None = None,
) -> Signed:
    """The second half of the path, shared with pre-signed envelopes: verify, attach, append."""
    workspace.verify_envelope(envelope)  # nothing unverified is ever stored
    attached = (
        attach_attestation(attach_to or subject.repository, subject.top, envelope, predicate_type)
        if attach
        else None
    )
    from conveyor.ledger import DuplicateEvidence

    try:
        entry = workspace.ledger.append(
            envelope,
            subject_digest=str(subject.digest),
            subject_name=name,
            predicate_type=predicate_type,
            kind=kind.value,
            signer=identity.name,
            keyid=keyid,
            environment=environment,
            commit=commit,
        )
    except DuplicateEvidence as exc:
        if exc.index is None:  # a concurrent writer won the race: refuse, exit 1
            raise
        held = workspace.ledger.entry(exc.index)
        return Signed(identity, held, Digest.of(envelope), attached, already=True)
    return Signed(identity, entry, Digest.of(envelope), attached)
