"""``EnvelopeFacts``: the envelope verifier ``audit verify`` hands to the ledger.

It verifies a stored DSSE envelope against the identities' public keys and returns what the
signed statement says (``conveyor.ledger.SignedFacts``), so the audit can compare the
ledger's columns with it. The ledger imports no attestation code; this service-layer module
joins the two. It is built from public-key PEMs and pickles as those bytes, so a process
pool can run it on every core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.ledger.models import UNSTATED, SignedFacts

if TYPE_CHECKING:
    from conveyor.attest import Verifier


def _kind(predicate_type: str, predicate: Mapping[str, Any]) -> str | None:
    from conveyor.attest import (
        APPROVAL_V1,
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
    }.get(predicate_type)


class EnvelopeFacts:
    """Verify an envelope with trusted keys; return its ``SignedFacts`` (raises otherwise)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        """``keys``: identity name → public key PEM."""
        self._pems = dict(keys)
        self._trusted: dict[str, tuple[str, Verifier]] | None = None

    @classmethod
    def from_verifiers(cls, verifiers: Mapping[str, Verifier]) -> EnvelopeFacts:
        """From identity name → loaded ``Verifier`` (their public keys, as PEM)."""
        from cryptography.hazmat.primitives import serialization

        return cls(
            {
                name: verifier.public_key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                for name, verifier in verifiers.items()
            }
        )

    def __getstate__(self) -> dict[str, bytes]:
        return dict(self._pems)

    def __setstate__(self, state: dict[str, bytes]) -> None:
        self._pems = dict(state)
        self._trusted = None

    def _keys(self) -> dict[str, tuple[str, Verifier]]:
        if self._trusted is None:
            from conveyor.attest import Verifier

            trusted: dict[str, tuple[str, Verifier]] = {}
            for name, pem in self._pems.items():
                verifier = Verifier.from_pem(pem)
                trusted[verifier.keyid] = (name, verifier)
            self._trusted = trusted
        return self._trusted

    def __call__(self, envelope: bytes) -> SignedFacts:
        from conveyor.attest import verify_envelope
        from conveyor.attest.statement import parse_statement

        keys = self._keys()
        verified = verify_envelope(envelope, {k: v for k, (_, v) in keys.items()})
        statement = parse_statement(verified.payload)
        predicate = statement.predicate
        kind = _kind(statement.predicate_type, predicate)
        if kind in ("approval", "smoke"):
            environment: str | None = _text(predicate.get("environment"))
        elif kind in ("promotion", "rollback"):
            environment = _text(predicate.get("toEnvironment"))
        else:
            environment = None
        signers = {keys[k][0] for k in verified.signer_keyids if k in keys}
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
            environment=environment if kind in ("approval", "smoke", "promotion", "rollback")
            else UNSTATED,
            signer=next(iter(signers)) if len(signers) == 1 else UNSTATED,
        )  # fmt: skip


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
