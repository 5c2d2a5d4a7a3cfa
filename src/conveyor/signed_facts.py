"""``EnvelopeFacts``: the envelope verifier ``audit verify`` hands to the ledger.

It verifies a stored DSSE envelope against the identities' public keys and returns what the
signed statement says (``conveyor.ledger.SignedFacts``), so the audit can compare the
ledger's columns with it. The ledger imports no attestation code; this service-layer module
joins the two. It is built from public-key PEMs and pickles as those bytes, so a process
pool can run it on every core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from conveyor.ledger.models import UNSTATED, SignedFacts

if TYPE_CHECKING:
    from conveyor.attest import Verifier


def _kind(predicate_type: str, predicate: Mapping[str, Any]) -> str | None:
    from conveyor.attest import (
        APPROVAL_V1,
        BREAK_GLASS_ADMISSION_V1,
        PROMOTION_V1,
        SLSA_PROVENANCE_V1,
        SMOKE_V1,
        TEST_RESULT_V01,
        VULNS_V02,
    )

    if predicate_type == PROMOTION_V1:
        return "rollback" if predicate.get("rollback") is True else "promotion"
    return {
        SLSA_PROVENANCE_V1: "build",
        TEST_RESULT_V01: "tests",
        VULNS_V02: "scan",
        SMOKE_V1: "smoke",
        APPROVAL_V1: "approval",
        BREAK_GLASS_ADMISSION_V1: "break-glass",
    }.get(predicate_type)


class EnvelopeFacts:
    """Verify an envelope with trusted keys; return its ``SignedFacts`` (raises otherwise)."""

    def __init__(
        self,
        keys: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
        *,
        servers: Iterable[str] = (),
    ) -> None:
        """``keys``: identity name → public key PEM, or (name, PEM) pairs (an identity with
        retired keys has several). ``servers``: the identities holding the role ``server``;
        what they sign states the principal it names as its signer."""
        pairs = keys.items() if isinstance(keys, Mapping) else keys
        self._pems = [(name, pem) for name, pem in pairs]
        self._servers = frozenset(servers)
        self._trusted: dict[str, tuple[str, Verifier]] | None = None

    @classmethod
    def from_verifiers(
        cls,
        verifiers: Mapping[str, Verifier] | Iterable[tuple[str, Verifier]],
        *,
        servers: Iterable[str] = (),
    ) -> EnvelopeFacts:
        """From identity name → loaded ``Verifier``, or (name, verifier) pairs (their public
        keys, as PEM)."""
        from cryptography.hazmat.primitives import serialization

        pairs = verifiers.items() if isinstance(verifiers, Mapping) else verifiers
        return cls(
            [
                (
                    name,
                    verifier.public_key.public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    ),
                )
                for name, verifier in pairs
            ],
            servers=servers,
        )

    def __getstate__(self) -> tuple[list[tuple[str, bytes]], frozenset[str]]:
        return list(self._pems), self._servers

    def __setstate__(self, state: tuple[list[tuple[str, bytes]], frozenset[str]]) -> None:
        self._pems, self._servers = list(state[0]), frozenset(state[1])
        self._trusted = None

    def _keys(self) -> dict[str, tuple[str, Verifier]]:
        if self._trusted is None:
            from conveyor.attest import Verifier

            trusted: dict[str, tuple[str, Verifier]] = {}
            for name, pem in self._pems:
                verifier = Verifier.from_pem(pem)
                trusted[verifier.keyid] = (name, verifier)
            self._trusted = trusted
        return self._trusted

    def __call__(self, envelope: bytes) -> SignedFacts:
        from conveyor.attest import PRINCIPAL_V1, verify_envelope
        from conveyor.attest.statement import parse_statement

        keys = self._keys()
        verified = verify_envelope(envelope, {k: v for k, (_, v) in keys.items()})
        statement = parse_statement(verified.payload)
        predicate = statement.predicate
        kind = _kind(statement.predicate_type, predicate)
        if kind in ("approval", "smoke", "break-glass"):
            environment: str | None = _text(predicate.get("environment"))
        elif kind in ("promotion", "rollback"):
            environment = _text(predicate.get("toEnvironment"))
        else:
            environment = None
        signers = {keys[k][0] for k in verified.signer_keyids if k in keys}
        named = predicate.get(PRINCIPAL_V1)
        if named is not None and len(signers) == 1 and signers <= self._servers:
            # The server signs for the principal it names: the ledger's signer column is it.
            principal = named.get("identity") if isinstance(named, dict) else None
            signers = {principal} if isinstance(principal, str) else set()
        return SignedFacts(
            subject_digests=frozenset(
                f"{algorithm}:{value}"
                for subject in statement.subject
                for algorithm, value in subject.digest.items()
            ),
            predicate_type=statement.predicate_type,
            keyids=frozenset(verified.signer_keyids),
            kind=kind if kind is not None else UNSTATED,
            # Build, test and scan statements name no environment: their column is not signed.
            environment=environment
            if kind in ("approval", "smoke", "promotion", "rollback", "break-glass")
            else UNSTATED,
            signer=next(iter(signers)) if len(signers) == 1 else UNSTATED,
        )  # fmt: skip


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
