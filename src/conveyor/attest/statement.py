"""in-toto Statement v1: build one about a digest; open a signed one in the safe order.

``open_attestation`` is the one door for reading evidence: signature over the exact bytes
first, then parse, then the subject must name the artifact, then the predicate type.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.attest._json import canonical_dumps, strict_loads
from conveyor.attest.dsse import IN_TOTO_PAYLOAD_TYPE, verify_envelope
from conveyor.attest.keys import Verifier
from conveyor.errors import InputError, VerificationError
from conveyor.oci.digest import Digest

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
MAX_SUBJECTS = 1024


class StatementError(VerificationError):
    """A signed payload that is not a well-formed in-toto Statement."""


class SubjectMismatch(VerificationError):
    """The Statement is about other artifacts than the digest being checked."""


class PredicateTypeError(VerificationError):
    """The Statement carries a predicate type the caller did not ask for."""


@dataclass(frozen=True, slots=True)
class Subject:
    name: str | None
    digest: dict[str, str]


@dataclass(frozen=True, slots=True)
class Statement:
    """A parsed Statement. ``legacy`` is True for ``_type`` Statement/v0.1 (third-party files)."""

    subject: list[Subject]
    predicate_type: str
    predicate: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False

    @property
    def type(self) -> str:
        return STATEMENT_V01 if self.legacy else STATEMENT_V1

    def names(self, digest: Digest) -> list[str]:
        """Subject names that carry ``digest`` (empty when none does)."""
        return [s.name or "" for s in self.subject if _matches(s, digest)]


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    statement: Statement
    signer_keyids: list[str]
    envelope_digest: Digest


def make_statement(
    subject_name: str, digest: Digest, predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """Serialize a v1 Statement with one subject: sorted keys, compact, UTF-8, no NaN."""
    if not predicate_type:
        raise InputError("a Statement needs a predicate type")
    document = {
        "_type": STATEMENT_V1,
        "subject": [{"name": subject_name, "digest": {digest.algorithm: digest.encoded}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    return canonical_dumps(document, what="the Statement")


def parse_statement(payload: bytes) -> Statement:
    """Parse a Statement strictly (duplicate keys, NaN, malformed subjects refused)."""
    document = strict_loads(payload, what="in-toto Statement", error=StatementError)
    if not isinstance(document, dict):
        raise StatementError("in-toto Statement is not a JSON object")
    kind = document.get("_type")
    if kind == STATEMENT_V1:
        legacy = False
    elif kind == STATEMENT_V01:
        legacy = True
    else:
        shown = repr(kind[:100]) if isinstance(kind, str) else "missing"
        raise StatementError(
            f"payload is not an in-toto Statement: _type is {shown}, expected {STATEMENT_V1!r}"
        )
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise StatementError("in-toto Statement has no predicateType string")
    predicate = document.get("predicate")
    if predicate is None:
        predicate = {}  # the spec treats unset as set-but-empty
    if not isinstance(predicate, dict):
        raise StatementError("in-toto Statement predicate is not a JSON object")
    return Statement(_subjects(document.get("subject")), predicate_type, predicate, legacy)


def _subjects(raw: object) -> list[Subject]:
    if not isinstance(raw, list) or not raw:
        raise StatementError("in-toto Statement has no subject list")
    if len(raw) > MAX_SUBJECTS:
        raise StatementError(f"in-toto Statement has more than {MAX_SUBJECTS} subjects")
    subjects = []
    for index, entry in enumerate(raw):
        where = f"in-toto Statement subject #{index + 1}"
        if not isinstance(entry, dict):
            raise StatementError(f"{where} is not a JSON object")
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            raise StatementError(f"{where} has a name that is not a string")
        digest = entry.get("digest")
        if not isinstance(digest, dict) or not digest:
            raise StatementError(f"{where} has no digest set")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in digest.items()):
            raise StatementError(f"{where} has a digest value that is not a string")
        subjects.append(Subject(name, dict(digest)))
    return subjects


def _matches(subject: Subject, digest: Digest) -> bool:
    # Exact: lowercase algorithm and hex as Digest holds them; no case folding.
    return subject.digest.get(digest.algorithm) == digest.encoded


def require_subject(statement: Statement, digest: Digest) -> None:
    """Raise ``SubjectMismatch`` unless one subject carries exactly ``digest``."""
    if not any(_matches(subject, digest) for subject in statement.subject):
        named = ", ".join(_describe(s) for s in statement.subject[:3])
        more = "" if len(statement.subject) <= 3 else f" and {len(statement.subject) - 3} more"
        raise SubjectMismatch(
            f"the attestation is about {named}{more}, not {digest}; "
            "it cannot be used as evidence for this artifact"
        )


def _describe(subject: Subject) -> str:
    algorithm, value = next(iter(sorted(subject.digest.items())))
    return f"{algorithm}:{value[:80]}"


def open_attestation(
    envelope: bytes,
    trusted: Mapping[str, Verifier] | Sequence[Verifier],
    *,
    digest: Digest,
    predicate_types: Collection[str] | None = None,
    allow_legacy: bool = False,
) -> VerifiedAttestation:
    """Verify, then parse, then match the subject, then the predicate type.

    ``allow_legacy`` admits Statement v0.1 payloads (third-party attestations); conveyor's
    own are always v1.
    """
    verified = verify_envelope(envelope, trusted, payload_type=IN_TOTO_PAYLOAD_TYPE)
    statement = parse_statement(verified.payload)
    if statement.legacy and not allow_legacy:
        raise StatementError(
            f"the attestation is an in-toto Statement v0.1; only {STATEMENT_V1} is accepted here"
        )
    require_subject(statement, digest)
    if predicate_types is not None and statement.predicate_type not in predicate_types:
        wanted = ", ".join(sorted(predicate_types)) or "(none)"
        raise PredicateTypeError(
            f"the attestation's predicate type is {statement.predicate_type[:200]!r}; "
            f"expected one of: {wanted}"
        )
    return VerifiedAttestation(statement, verified.signer_keyids, Digest.of(envelope))
