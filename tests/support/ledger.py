"""The ledger contract every implementation passes, plus cheap test keys and envelopes.

Test modules subclass ``LedgerContract`` and provide a ``make_ledger`` fixture returning a
factory of fresh, empty ledgers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor.errors import InputError
from conveyor.ledger import (
    Checkpoint,
    DuplicateEvidence,
    Ledger,
    LedgerTampered,
    SignedFacts,
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


def verify_facts(envelope: bytes) -> SignedFacts:
    """``verify_envelope`` that also returns what the statement says (the service's role)."""
    verify_envelope(envelope)
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return SignedFacts(
        subject_digests=frozenset(
            f"{alg}:{value}" for s in statement["subject"] for alg, value in s["digest"].items()
        ),
        predicate_type=statement["predicateType"],
        keyids=frozenset({CI_KEY.keyid}),
    )


def rewrap(envelope: bytes, how: str) -> bytes:
    """The same signed statement under another signature wrapper."""
    doc = json.loads(envelope)
    if how == "extra signature":
        doc["signatures"].append({"keyid": "someone", "sig": base64.b64encode(b"s" * 64).decode()})
    elif how == "keyid hint dropped":
        doc["signatures"] = [{"sig": doc["signatures"][0]["sig"]}]
    elif how == "url-safe unpadded payload":
        raw = base64.b64decode(doc["payload"])
        doc["payload"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    elif how == "keys reordered, spaced":
        return json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()
    else:
        raise AssertionError(how)
    return json.dumps(doc).encode()


def append_one(ledger: Ledger, envelope: bytes, n: int, **overrides: object) -> object:
    args: dict[str, object] = {
        "subject_digest": f"sha256:{n:064x}",
        "subject_name": "example.com/app",
        "predicate_type": "https://conveyor.dev/test/v1",
        "kind": "tests",
        "signer": "ci",
        "keyid": CI_KEY.keyid,
        **overrides,
    }
    return ledger.append(envelope, **args)  # type: ignore[arg-type]


def append_n(ledger: Ledger, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        ledger.append(
            make_envelope(i, digest=f"{i % 3:064x}"),
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
        assert ledger.latest_checkpoint() is None
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
        # a commit's prefix (commits are i % 5 as 40 hex digits: the prefix of 0..4 is 39 zeros)
        assert [e.index for e in ledger.entries(commit_prefix="0" * 39)] == list(range(24))
        assert [e.index for e in ledger.entries(commit_prefix=f"{3:040x}"[:-1] + "3")] == list(
            range(3, 24, 5)
        )
        assert ledger.entries(commit_prefix="0" * 38 + "1") == []
        assert ledger.entries(commit_prefix="%") == []  # no wildcard
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

    def test_a_commit_prefix_is_matched_exactly_before_the_limit(
        self, make_ledger: MakeLedger
    ) -> None:
        # A commit differing only in case is not a match (SQLite's LIKE ignores case), and
        # such a row must not take a place the limit leaves for a real match.
        ledger = make_ledger()
        for n, commit in enumerate(["ab" * 20, "AB" * 20, "ab_" + "c" * 37, "a%" + "c" * 38]):
            ledger.append(
                make_envelope(n),
                subject_digest=f"sha256:{n:064x}",
                subject_name="example.com/app",
                predicate_type="https://conveyor.dev/test/v1",
                kind="build",
                signer="ci",
                keyid=CI_KEY.keyid,
                commit=commit,
            )
        newest = ledger.entries(commit_prefix="abababa", newest_first=True, limit=1)
        assert [e.index for e in newest] == [0]
        assert [e.index for e in ledger.entries(commit_prefix="ab", limit=2)] == [0, 2]
        assert [e.index for e in ledger.entries(commit_prefix="ab_")] == [2]
        assert [e.index for e in ledger.entries(commit_prefix="a%")] == [3]
        assert [e.index for e in ledger.entries(commit_prefix="ABAB", kind="build")] == [1]

    def test_entries_newest_first_below_an_end(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 24)
        newest = ledger.entries(kind="promotion", newest_first=True, limit=3)
        assert [e.index for e in newest] == [23, 20, 17]
        page = ledger.entries(kind="promotion", newest_first=True, limit=3, end=17)
        assert [e.index for e in page] == [14, 11, 8]
        assert [e.index for e in ledger.entries(end=3)] == [0, 1, 2]
        assert [e.index for e in ledger.entries(start=2, end=5, newest_first=True)] == [4, 3, 2]
        both = ledger.entries(kind="build", environment="production", newest_first=True)
        assert [e.index for e in both] == [12, 0]
        assert ledger.entries(end=0) == []
        assert ledger.entries(kind="promotion", end=2, newest_first=True) == []
        assert ledger.head() == (ledger.size(), ledger.root())
        with ledger.reading():  # one operation's reads: the same answers
            assert ledger.entries(kind="promotion", newest_first=True, limit=3) == newest
            assert ledger.head() == (24, ledger.root())

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
        assert ledger.latest_checkpoint() == cp
        later = ledger.checkpoint(LEDGER_KEY)
        assert ledger.checkpoints() == [cp, later]
        assert ledger.checkpoints(last=1) == [later]
        assert ledger.checkpoints(last=5) == [cp, later]
        assert ledger.checkpoints(last=0) == []
        assert ledger.latest_checkpoint() == later
        report = verify_ledger(
            ledger,
            verify_envelope=verify_envelope,
            checkpoint=cp,
            checkpoint_verifiers={LEDGER_KEY.keyid: LEDGER_KEY},
        )
        assert report.ok, report.problems
        assert report.checked_checkpoints == 3
        assert report.checked_signatures == 7

    # -- one signed statement, one entry (issue 9 #1) ---------------------------------------

    def test_the_same_envelope_cannot_be_appended_twice(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        append_n(ledger, 3)
        root = ledger.root()
        with pytest.raises(DuplicateEvidence) as caught:
            append_one(ledger, make_envelope(1), 1, recorded_at=datetime.now(UTC))
        assert caught.value.index == 1
        assert caught.value.exit_code == 1
        assert "already in the ledger as entry 1" in str(caught.value)
        assert (ledger.size(), ledger.root()) == (3, root)
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok

    @pytest.mark.parametrize(
        "how",
        ["extra signature", "keyid hint dropped", "url-safe unpadded payload",
         "keys reordered, spaced"],
    )  # fmt: skip
    def test_the_same_statement_under_another_wrapper_is_refused(
        self, make_ledger: MakeLedger, how: str
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 2)
        again = rewrap(make_envelope(0), how)
        assert again != make_envelope(0)
        with pytest.raises(DuplicateEvidence) as caught:
            append_one(ledger, again, 0, kind="approval", environment="production")
        assert caught.value.index == 0
        assert ledger.size() == 2

    def test_a_refused_replay_leaves_a_serialized_block_usable(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 1)
        with ledger.serialized("promote:production"):
            with pytest.raises(DuplicateEvidence):
                append_one(ledger, make_envelope(0), 0)
            append_n(ledger, 1, start=1)  # the transaction is not poisoned
        assert ledger.size() == 2
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok

    # -- the audit compares the columns with the signed statement (issue 9 #14) -----------

    @pytest.mark.parametrize(
        ("column", "value", "expected"),
        [
            ("subject_digest", f"sha256:{7:064x}", "the subject_digest column names"),
            ("predicate_type", "https://conveyor.dev/attestation/approval/v1",
             "the predicate_type column is"),
            ("keyid", "someone-else", "the keyid column is 'someone-else'"),
        ],
    )  # fmt: skip
    def test_audit_flags_a_column_the_signed_statement_contradicts(
        self, make_ledger: MakeLedger, column: str, value: str, expected: str
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 2)
        append_one(ledger, make_envelope(2), 2, **{column: value})  # leaf hash consistent
        append_n(ledger, 1, start=3)
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok  # signatures only
        report = verify_ledger(ledger, verify_envelope=verify_facts)
        assert not report.ok
        assert report.first_bad_index == 2
        assert len(report.problems) == 1
        assert report.problems[0].startswith("entry 2: " + expected), report.problems

    def test_audit_compares_kind_environment_and_signer_when_stated(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        append_one(ledger, make_envelope(0), 0, kind="approval", environment="staging")

        def says_production(envelope: bytes) -> SignedFacts:
            facts = verify_facts(envelope)
            return SignedFacts(
                facts.subject_digests, facts.predicate_type, facts.keyids,
                kind="approval", environment="production", signer="alice",
            )  # fmt: skip

        problems = verify_ledger(ledger, verify_envelope=says_production).problems
        assert problems == [
            "entry 0: the environment column is 'staging' but the signed statement names "
            "'production'",
            "entry 0: the signer column is 'ci' but the envelope is signed by 'alice'",
        ]

    # -- incremental audit and inclusion (issue 11, issue 9 #3) ----------------------------

    def test_incremental_audit_verifies_only_the_entries_after_the_checkpoint(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 11)
        trusted = parse_checkpoint(ledger.checkpoint(LEDGER_KEY).to_text())
        append_n(ledger, 6, start=11)
        keys = {LEDGER_KEY.keyid: LEDGER_KEY}
        seen: list[bytes] = []

        def counting(envelope: bytes) -> SignedFacts:
            seen.append(envelope)
            return verify_facts(envelope)

        report = verify_ledger(
            ledger, verify_envelope=counting, checkpoint=trusted, checkpoint_verifiers=keys,
            incremental=True,
        )  # fmt: skip
        assert report.ok, report.problems
        assert (report.incremental, report.checked_from, report.size) == (True, 11, 17)
        assert report.checked_signatures == len(seen) == 6
        assert report.root == ledger.root()
        full = verify_ledger(
            ledger, verify_envelope=counting, checkpoint=trusted, checkpoint_verifiers=keys
        )
        assert full.ok
        assert (full.checked_signatures, full.incremental) == (17, False)

    def test_incremental_audit_catches_a_bad_new_entry_and_a_replay_of_an_old_one(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 5)
        trusted = ledger.checkpoint(LEDGER_KEY)
        append_n(ledger, 1, start=5)
        append_one(ledger, make_envelope(6, key=HmacKey(CI_KEY.keyid, b"forged")), 6)
        report = verify_ledger(
            ledger, verify_envelope=verify_facts, checkpoint=trusted,
            checkpoint_verifiers={LEDGER_KEY.keyid: LEDGER_KEY}, incremental=True,
        )  # fmt: skip
        assert (report.incremental, report.ok, report.first_bad_index) == (True, False, 6)
        assert "envelope signature does not verify" in report.problems[0]

    def test_incremental_audit_with_an_untrusted_checkpoint_is_a_full_audit(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 4)
        mallory = HmacKey("mallory", b"m")
        forged = ledger.checkpoint(mallory)
        report = verify_ledger(
            ledger, verify_envelope=verify_envelope, checkpoint=forged,
            checkpoint_verifiers={LEDGER_KEY.keyid: LEDGER_KEY}, incremental=True,
        )  # fmt: skip
        assert (report.incremental, report.ok, report.checked_signatures) == (False, False, 4)
        assert any("which is not trusted" in p for p in report.problems)

    def test_verify_inclusion_accepts_rows_of_the_signed_tree(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        append_n(ledger, 13)
        head = ledger.checkpoint(LEDGER_KEY)
        ledger.verify_inclusion(ledger.entries(), size=head.size, root=head.root)
        ledger.verify_inclusion(ledger.entries(subject_digest=f"sha256:{1:064x}"),
                                size=head.size, root=head.root)  # fmt: skip
        ledger.verify_inclusion([], size=head.size, root=head.root)
        append_n(ledger, 2, start=13)
        with pytest.raises(LedgerTampered) as caught:
            ledger.verify_inclusion(ledger.entries(), size=head.size, root=head.root)
        assert caught.value.indexes == [13, 14]  # newer than the signed head: not covered
        assert caught.value.exit_code == 1
        entry = ledger.entry(3)
        moved = [dataclasses.replace(entry, recorded_at="2020-01-01T00:00:00.000000Z")]
        with pytest.raises(LedgerTampered, match="entries 3 do not belong"):
            ledger.verify_inclusion(moved, size=head.size, root=head.root)
        with pytest.raises(LedgerTampered):
            ledger.verify_inclusion([entry], size=head.size, root=merkle.EMPTY_ROOT)

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
