"""Checkpoint text (strict parse, hostile input), leaf encoding, Ed25519 keys end to end."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conveyor.errors import InputError
from conveyor.ledger import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
    MemoryLedger,
    parse_checkpoint,
    verify_ledger,
)
from conveyor.ledger.models import format_time, leaf_data, sign_checkpoint
from tests.support.ledger import LEDGER_KEY, append_n, verify_envelope

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
SIG_B64 = base64.b64encode(b"\x07" * 64).decode()
GOOD = (
    f"conveyor.ledger/abc\n42\n{ROOT_B64}\ntime 2026-11-26T20:18:46.123456Z\n\n"
    f"\u2014 ledger-key {SIG_B64}\n"
)


class Ed25519Signer:
    def __init__(self, keyid: str) -> None:
        self.keyid = keyid
        self.private = Ed25519PrivateKey.generate()

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


class Ed25519Verifier:
    def __init__(self, public: Ed25519PublicKey) -> None:
        self.public = public

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            return False
        return True


def test_checkpoint_text_is_exactly_the_documented_note() -> None:
    cp = parse_checkpoint(GOOD)
    assert cp == Checkpoint(
        "conveyor.ledger/abc", 42, ROOT, "2026-11-26T20:18:46.123456Z", "ledger-key", b"\x07" * 64
    )
    assert cp.to_text() == GOOD
    assert cp.body() == GOOD.split("\n\n")[0].encode() + b"\n"
    assert parse_checkpoint(GOOD.encode()) == cp


def _swap(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        GOOD[:-1],  # no final newline
        GOOD.replace("\n", "\r\n"),
        _swap("\n\n", "\n"),  # no blank line
        GOOD + f"\u2014 other {SIG_B64}\n",  # two signatures
        _swap("conveyor.ledger/abc", ""),
        _swap("conveyor.ledger/abc", "conveyor ledger"),
        _swap("\n42\n", "\n042\n"),
        _swap("\n42\n", "\n-1\n"),
        _swap("\n42\n", "\n4.2\n"),
        _swap("\n42\n", "\n99999999999999999999\n"),
        _swap("\n42\n", "\n\u0664\u0662\n"),  # Arabic-Indic digits
        _swap(ROOT_B64, ROOT_B64[:-4]),
        _swap(ROOT_B64, base64.b64encode(b"\x00" * 31).decode()),
        _swap(ROOT_B64, ROOT_B64.rstrip("=")),
        _swap(ROOT_B64, "!" * len(ROOT_B64)),
        _swap("time 2026", "tim 2026"),
        _swap("2026-11-26T20:18:46.123456Z", "2026-11-26T20:18:46Z"),
        _swap("2026-11-26T20:18:46.123456Z", "2026-13-45T20:18:46.123456Z"),
        _swap("\u2014 ", "- "),
        _swap("\u2014 ledger-key ", "\u2014  ledger-key "),
        _swap(f" {SIG_B64}", ""),
        _swap(SIG_B64, "not base64!"),
        _swap(SIG_B64, ""),
        b"\xff\xfe" + GOOD.encode(),
        "x" * 20000,
        GOOD.encode() * 200,
    ],
)
def test_malformed_checkpoints_are_refused(text: str | bytes) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


def test_checkpoint_error_is_an_input_error() -> None:
    with pytest.raises(InputError):
        parse_checkpoint("garbage\n")


def test_signer_keyid_with_spaces_is_refused() -> None:
    class Spaced:
        keyid = "two words"

        def sign(self, data: bytes) -> bytes:
            return b"s"

    with pytest.raises(InputError):
        sign_checkpoint(Spaced(), origin="o", size=0, root=ROOT, time="t")


def test_leaf_encoding_is_unambiguous() -> None:
    base = {
        "index": 1,
        "recorded_at": "2026-01-01T00:00:00.000000Z",
        "kind": "build",
        "subject_digest": "sha256:aa",
        "subject_name": "app",
        "predicate_type": "p",
        "environment": None,
        "commit": None,
        "signer": "ci",
        "keyid": "k",
        "envelope_sha256": "00",
    }
    seen = {leaf_data(**base)}  # type: ignore[arg-type]
    for field, value in [
        ("environment", ""),  # empty is not absent
        ("commit", "k"),
        ("kind", "buil"),
        ("subject_name", "appsha256:aa"),
        ("index", 10),
    ]:
        changed = leaf_data(**{**base, field: value})  # type: ignore[arg-type]
        assert changed not in seen
        seen.add(changed)
    # Moving characters between adjacent fields changes the bytes.
    shifted = leaf_data(**{**base, "kind": "buildsha256:aa", "subject_digest": ""})  # type: ignore[arg-type]
    assert shifted not in seen


def test_format_time_is_utc_with_microseconds() -> None:
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
    with pytest.raises(InputError):
        format_time(datetime(2026, 1, 2))


def test_ed25519_checkpoint_signs_and_audits() -> None:
    signer = Ed25519Signer("ledger-ed25519")
    assert isinstance(signer, CheckpointSigner)
    verifier = Ed25519Verifier(signer.private.public_key())
    assert isinstance(verifier, CheckpointVerifier)
    ledger = MemoryLedger()
    append_n(ledger, 4)
    cp = ledger.checkpoint(signer)
    text = cp.to_text()
    parsed = parse_checkpoint(text)
    assert parsed.verify({"ledger-ed25519": verifier})
    assert not parsed.verify(
        {"ledger-ed25519": Ed25519Verifier(Ed25519PrivateKey.generate().public_key())}
    )
    tampered = parse_checkpoint(text.replace("\n4\n", "\n3\n"))
    assert not tampered.verify({"ledger-ed25519": verifier})
    report = verify_ledger(
        ledger,
        verify_envelope=verify_envelope,
        checkpoint=parsed,
        checkpoint_verifiers={"ledger-ed25519": verifier},
    )
    assert report.ok, report.problems
    # A stored checkpoint whose key is not among the trusted ones is reported.
    ledger.checkpoint(LEDGER_KEY)
    report = verify_ledger(
        ledger, verify_envelope=None, checkpoint_verifiers={"ledger-ed25519": verifier}
    )
    assert not report.ok
    assert any("not trusted" in p for p in report.problems)


def test_schema_head_constant_matches_the_migration_scripts() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from conveyor.ledger.sql import MIGRATIONS, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD
