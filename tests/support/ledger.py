"""The ledger contract every implementation passes, plus cheap test keys and envelopes.

Test modules subclass ``LedgerContract`` and provide a ``make_ledger`` fixture returning a
factory of fresh, empty ledgers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor.errors import InputError
from conveyor.ledger import (
    Checkpoint,
    Ledger,
    merkle,
    parse_checkpoint,
    verify_ledger,
)

PAYLOAD_TYPE = "application/vnd.in-toto+json"


class HmacKey:
    """A cheap stand-in for a signing key: satisfies CheckpointSigner and CheckpointVerifier."""

    def __init__(self, keyid: str, secret: bytes) -> None:
        self.keyid = keyid
        self._secret = secret

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def verify(self, signature: bytes, data: bytes) -> bool:
        return hmac.compare_digest(self.sign(data), signature)


LEDGER_KEY = HmacKey("ledger-test", b"ledger-secret")
CI_KEY = HmacKey("ci-test", b"ci-secret")


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def make_envelope(n: int, *, key: HmacKey = CI_KEY, digest: str | None = None) -> bytes:
    """A small DSSE-shaped envelope signed with an HMAC test key."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "example.com/app", "digest": {"sha256": digest or f"{n:064x}"}}],
        "predicateType": "https://conveyor.dev/test/v1",
        "predicate": {"n": n},
    }
    payload = json.dumps(statement, sort_keys=True).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return json.dumps(
        {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(sig).decode()}],
        }
    ).encode()


def verify_envelope(envelope: bytes) -> None:
    """The service layer's role, for tests: raise unless CI_KEY signed the envelope."""
    doc = json.loads(envelope)
    payload = base64.b64decode(doc["payload"])
    sig = base64.b64decode(doc["signatures"][0]["sig"])
    if not CI_KEY.verify(sig, pae(doc["payloadType"], payload)):
        raise ValueError("bad signature")


def append_n(ledger: Ledger, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        ledger.append(
            make_envelope(i),
            subject_digest=f"sha256:{i % 3:064x}",
            subject_name="example.com/app",
            predicate_type="https://conveyor.dev/test/v1",
            kind=("build", "tests", "promotion")[i % 3],
            signer="ci",
            keyid=CI_KEY.keyid,
            environment="production" if i % 4 == 0 else None,
            commit=f"{i % 5:040x}",
        )


MakeLedger = Callable[[], Ledger]


class LedgerContract:
    """Behaviour every Ledger implementation shares."""

    def test_fresh_ledger_is_empty(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        assert ledger.size() == 0
        assert ledger.root() == merkle.EMPTY_ROOT
        assert ledger.entries() == []
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok

    def test_append_builds_the_rfc6962_tree(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 11)
        entries = ledger.entries()
        assert [e.index for e in entries] == list(range(11))
        leaves = [e.leaf_hash for e in entries]
        for e in entries:
            assert e.leaf_hash == e.computed_leaf_hash()
            assert e.tree_root == merkle.root(leaves[: e.index + 1])
            assert e.envelope_sha256 == hashlib.sha256(e.envelope).hexdigest()
        assert ledger.size() == 11
        assert ledger.root() == merkle.root(leaves) == entries[-1].tree_root
        assert ledger.entry(4) == entries[4]

    def test_entries_are_stored_exactly(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        envelope = make_envelope(1) + b"\x00\xff trailing bytes kept verbatim"
        entry = ledger.append(
            envelope,
            subject_digest="sha256:" + "ab" * 32,
            subject_name="registry.example.com/team/app",
            predicate_type="https://slsa.dev/provenance/v1",
            kind="build",
            signer="ci",
            keyid="SHA256:abc",
            environment="staging",
            commit="0123456789abcdef0123456789abcdef01234567",
            recorded_at=moment.astimezone(timezone(timedelta(hours=2))),
        )
        again = ledger.entry(0)
        assert again == entry
        assert again.envelope == envelope
        assert again.recorded_time == moment
        assert again.recorded_at == "2026-01-02T03:04:05.678901Z"
        assert (again.environment, again.commit, again.keyid) == (
            "staging",
            "0123456789abcdef0123456789abcdef01234567",
            "SHA256:abc",
        )

    def test_entries_filter_and_page_in_index_order(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 24)
        digest = f"sha256:{1:064x}"
        assert [e.index for e in ledger.entries(subject_digest=digest)] == list(range(1, 24, 3))
        assert [e.index for e in ledger.entries(kind="promotion")] == list(range(2, 24, 3))
        assert [e.index for e in ledger.entries(environment="production")] == list(range(0, 24, 4))
        assert [e.index for e in ledger.entries(commit=f"{2:040x}")] == list(range(2, 24, 5))
        assert [e.index for e in ledger.entries(kind="build", environment="production")] == [
            0,
            12,
        ]
        assert [e.index for e in ledger.entries(start=20)] == [20, 21, 22, 23]
        assert [e.index for e in ledger.entries(start=5, limit=3)] == [5, 6, 7]
        assert [e.index for e in ledger.entries(subject_digest=digest, start=5, limit=2)] == [
            7,
            10,
        ]
        assert ledger.entries(subject_digest="sha256:none") == []
        assert ledger.entries(subject_digest="x' OR '1'='1") == []
        assert ledger.entries(kind="build' --") == []
        assert ledger.entries(limit=0) == []
        with pytest.raises(InputError):
            ledger.entries(limit=-1)

    def test_missing_entry_is_an_input_error(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 2)
        for index in (2, 99, -1):
            with pytest.raises(InputError, match="no ledger entry"):
                ledger.entry(index)

    def test_inclusion_proofs_verify_at_every_size(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 13)
        leaves = [e.leaf_hash for e in ledger.entries()]
        for size in range(1, 14):
            root = ledger.root_at(size)
            assert root == merkle.root(leaves[:size])
            for index in range(size):
                proof = ledger.inclusion_proof(index, size)
                assert proof == merkle.inclusion_proof(index, size, leaves)
                assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
        assert ledger.inclusion_proof(3) == merkle.inclusion_proof(3, 13, leaves)
        with pytest.raises(InputError):
            ledger.inclusion_proof(13)
        with pytest.raises(InputError):
            ledger.inclusion_proof(0, 14)
        with pytest.raises(InputError):
            ledger.inclusion_proof(5, 5)

    def test_consistency_proofs_verify_between_every_pair(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 13)
        roots = [ledger.root_at(n) for n in range(14)]
        for new in range(14):
            for old in range(new + 1):
                proof = ledger.consistency_proof(old, new)
                assert merkle.verify_consistency(old, new, roots[old], roots[new], proof)
        assert merkle.verify_consistency(
            5, 13, roots[5], ledger.root(), ledger.consistency_proof(5)
        )
        with pytest.raises(InputError):
            ledger.consistency_proof(5, 14)
        with pytest.raises(InputError):
            ledger.consistency_proof(6, 5)

    def test_checkpoint_is_signed_stored_and_round_trips(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 5)
        cp = ledger.checkpoint(LEDGER_KEY)
        assert (cp.origin, cp.size, cp.root) == (ledger.origin, 5, ledger.root())
        assert cp.verify({LEDGER_KEY.keyid: LEDGER_KEY})
        assert not cp.verify({LEDGER_KEY.keyid: HmacKey(LEDGER_KEY.keyid, b"other")})
        assert not cp.verify({})
        parsed = parse_checkpoint(cp.to_text())
        assert parsed.to_text() == cp.to_text()
        assert parsed.trusted_signer({LEDGER_KEY.keyid: LEDGER_KEY}) == LEDGER_KEY.keyid
        append_n(ledger, 2, start=5)
        later = ledger.checkpoint(LEDGER_KEY)
        assert ledger.checkpoints() == [cp, later]
        report = verify_ledger(
            ledger,
            verify_envelope=verify_envelope,
            checkpoint=cp,
            checkpoint_verifiers={LEDGER_KEY.keyid: LEDGER_KEY},
        )
        assert report.ok, report.problems
        assert report.checked_checkpoints == 3
        assert report.checked_signatures == 7

    def test_serialized_block_commits_together(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 1)
        with ledger.serialized("promote:production"):
            append_n(ledger, 3, start=1)
            assert ledger.size() == 4  # reads inside the block see its writes
            with ledger.serialized("promote:staging"):  # nesting is allowed
                append_n(ledger, 1, start=4)
        assert ledger.size() == 5
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok

    def test_serialized_block_that_raises_appends_nothing(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 2)
        root = ledger.root()

        class Boom(Exception):
            pass

        def promote_then_fail() -> None:
            with ledger.serialized("promote:production"):
                append_n(ledger, 3, start=2)
                raise Boom

        with pytest.raises(Boom):
            promote_then_fail()
        assert ledger.size() == 2
        assert ledger.root() == root
        append_n(ledger, 1, start=2)
        assert [e.index for e in ledger.entries()] == [0, 1, 2]
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("envelope", b""),
            ("envelope", b"x" * (16 * 1024 * 1024 + 1)),
            ("envelope", "text, not bytes"),
            ("kind", ""),
            ("subject_digest", ""),
            ("signer", "ci\nroot"),
            ("environment", "prod\x00"),
            ("commit", "x" * 129),
            ("recorded_at", datetime(2026, 1, 1)),  # naive
        ],
    )
    def test_bad_append_is_refused_and_leaves_the_ledger_unchanged(
        self, make_ledger: MakeLedger, field: str, value: object
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 1)
        args: dict[str, object] = {
            "envelope": make_envelope(9),
            "subject_digest": "sha256:" + "0" * 64,
            "subject_name": "app",
            "predicate_type": "p",
            "kind": "build",
            "signer": "ci",
            "keyid": "k",
            "environment": None,
            "commit": None,
            "recorded_at": None,
        }
        args[field] = value
        envelope = args.pop("envelope")
        with pytest.raises(InputError):
            ledger.append(envelope, **args)  # type: ignore[arg-type]
        assert ledger.size() == 1
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok

    def test_audit_names_an_envelope_whose_signature_fails(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 3)
        forged = make_envelope(3, key=HmacKey(CI_KEY.keyid, b"not the ci key"))
        ledger.append(
            forged,
            subject_digest="sha256:x",
            subject_name="app",
            predicate_type="p",
            kind="approval",
            signer="mallory",
            keyid=CI_KEY.keyid,
        )
        append_n(ledger, 2, start=4)
        report = verify_ledger(ledger, verify_envelope=verify_envelope)
        assert not report.ok
        assert report.first_bad_index == 3
        assert report.problems == ["entry 3: envelope signature does not verify: bad signature"]
        assert verify_ledger(ledger, verify_envelope=None).ok  # integrity alone holds

    def test_audit_checks_an_external_checkpoint(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 6)
        trusted = {LEDGER_KEY.keyid: LEDGER_KEY}
        cp = ledger.checkpoint(LEDGER_KEY)
        append_n(ledger, 3, start=6)

        def problems(checkpoint: Checkpoint, verifiers: dict[str, HmacKey]) -> list[str]:
            report = verify_ledger(
                ledger,
                verify_envelope=verify_envelope,
                checkpoint=checkpoint,
                checkpoint_verifiers=verifiers,
            )
            assert report.ok is not report.problems
            return report.problems

        assert problems(cp, trusted) == []
        mallory = HmacKey("mallory", b"m")
        assert any("not trusted" in p for p in problems(_resign(cp, mallory), trusted))
        forged = Checkpoint(cp.origin, cp.size, cp.root, cp.time, cp.keyid, b"\x01" * 32)
        assert any("does not verify" in p for p in problems(forged, trusted))
        other = _resign(
            Checkpoint("conveyor.ledger/other", cp.size, cp.root, cp.time, "", b""), LEDGER_KEY
        )
        assert any("not this ledger" in p for p in problems(other, trusted))
        ahead = _resign(
            Checkpoint(cp.origin, 12, cp.root, cp.time, "", b""), LEDGER_KEY
        )  # a future the ledger does not reach
        assert any("older backup" in p for p in problems(ahead, trusted))
        wrong_root = _resign(
            Checkpoint(cp.origin, 6, merkle.EMPTY_ROOT, cp.time, "", b""), LEDGER_KEY
        )
        assert any("rewritten" in p for p in problems(wrong_root, trusted))
        assert any("no trusted checkpoint keys" in p for p in problems(cp, {}))


def _resign(cp: Checkpoint, key: HmacKey) -> Checkpoint:
    from conveyor.ledger.models import sign_checkpoint

    return sign_checkpoint(key, origin=cp.origin, size=cp.size, root=cp.root, time=cp.time)
