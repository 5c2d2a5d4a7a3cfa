"""``EnvelopeFacts`` (the audit's envelope verifier) and the process-pool audit it enables."""

from __future__ import annotations

import pickle

import pytest

from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    PROMOTION_V1,
    Signer,
    generate_key,
    make_statement,
    sign_envelope,
)
from conveyor.attest.dsse import SignatureError
from conveyor.ledger import UNSTATED, MemoryLedger, audit as audit_module, verify_ledger
from conveyor.oci.digest import Digest
from conveyor.signed_facts import EnvelopeFacts

CI = Signer(generate_key("ed25519"))
ALICE = Signer(generate_key("ecdsa-p256"))
FACTS = EnvelopeFacts.from_verifiers({"ci": CI.verifier(), "alice": ALICE.verifier()})


def _digest(n: int) -> Digest:
    return Digest.parse(f"sha256:{n:064x}")


def _envelope(n: int, *, signer: Signer = CI, predicate_type: str = APPROVAL_V1) -> bytes:
    predicate = {"environment": "production", "n": n}
    if predicate_type == PROMOTION_V1:
        predicate = {"toEnvironment": "staging", "rollback": True, "n": n}
    statement = make_statement("registry.example/app", _digest(n), predicate_type, predicate)
    return sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])


def test_facts_say_what_the_signed_statement_says() -> None:
    facts = FACTS(_envelope(1, signer=ALICE))
    assert facts.subject_digests == {f"sha256:{1:064x}"}
    assert facts.predicate_type == APPROVAL_V1
    assert facts.keyids == {ALICE.keyid}
    assert (facts.kind, facts.environment, facts.signer) == ("approval", "production", "alice")
    rollback = FACTS(_envelope(2, predicate_type=PROMOTION_V1))
    assert (rollback.kind, rollback.environment) == ("rollback", "staging")
    other = FACTS(_envelope(3, predicate_type="https://example.com/custom/v1"))
    assert other.kind is UNSTATED
    assert other.environment is UNSTATED


def test_an_envelope_no_trusted_key_signed_is_refused() -> None:
    stranger = Signer(generate_key("ed25519"))
    with pytest.raises(SignatureError):
        FACTS(_envelope(1, signer=stranger))


def test_it_pickles_as_public_keys_and_works_after() -> None:
    data = pickle.dumps(FACTS)
    assert b"PRIVATE" not in data
    assert len(data) < 2048
    again = pickle.loads(data)  # noqa: S301 (our own bytes)
    assert again(_envelope(5)).signer == "ci"


def _ledger(n: int, *, wrong_subject_at: int | None = None) -> MemoryLedger:
    ledger = MemoryLedger()
    for i in range(n):
        ledger.append(
            _envelope(i),
            subject_digest=str(_digest(i + 1 if i == wrong_subject_at else i)),
            subject_name="registry.example/app",
            predicate_type=APPROVAL_V1,
            kind="approval",
            signer="ci",
            keyid=CI.keyid,
            environment="production",
        )
    return ledger


def test_a_process_pool_audit_finds_what_the_serial_one_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_module, "POOL_MIN_ENTRIES", 1)
    monkeypatch.setattr(audit_module, "_BATCH", 16)
    ledger = _ledger(90, wrong_subject_at=57)
    serial = verify_ledger(ledger, verify_envelope=FACTS, workers=1)
    parallel = verify_ledger(ledger, verify_envelope=FACTS, workers=2)
    assert (serial.workers, parallel.workers) == (1, 2)
    assert parallel.problems == serial.problems
    assert parallel.first_bad_index == serial.first_bad_index == 57
    assert parallel.problems[0].startswith("entry 57: the subject_digest column names")
    assert parallel.checked_signatures == 90
    assert verify_ledger(_ledger(40), verify_envelope=FACTS, workers=2).ok


def test_an_unpicklable_verifier_still_works_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "POOL_MIN_ENTRIES", 1)
    seen: list[bytes] = []

    def closure(envelope: bytes) -> None:  # an old-style callback: signatures only
        seen.append(envelope)
        FACTS(envelope)

    report = verify_ledger(_ledger(30, wrong_subject_at=3), verify_envelope=closure, workers=2)
    assert report.ok  # it returns no facts: columns are not compared
    assert report.workers == 2
    assert len(seen) == 30
