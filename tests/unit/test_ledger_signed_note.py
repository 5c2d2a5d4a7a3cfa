"""Issue 10 #3: checkpoints are C2SP signed notes, checked by implementations we did not write.

- ``spec_verify``: a signed-note / tlog-checkpoint verifier written here from the C2SP texts
  (c2sp.org/signed-note, c2sp.org/tlog-checkpoint), sharing no code with conveyor.ledger;
- sigstore-python's note parser (``SignedCheckpoint``) and, for ECDSA, its complete note
  verification (``SignedNote.verify`` with a Rekor-style keyring: key ID = SHA-256 of the DER
  public key, as the signed-note spec's type 0x02 says).
The legacy form is still read and verified.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conveyor.attest import Signer, Verifier, generate_key
from conveyor.ledger import (
    Checkpoint,
    CheckpointError,
    MemoryLedger,
    parse_checkpoint,
    verify_ledger,
)
from conveyor.ledger.models import NoteSignature
from tests.support.ledger import LEDGER_KEY, append_n, verify_envelope

sigstore_checkpoint = pytest.importorskip(
    "sigstore._internal.rekor.checkpoint", reason="sigstore (dev extra) is not installed"
)


def spec_verify(note: str, name: str, public_key: object) -> tuple[list[str], int]:
    """Verify ``note`` per C2SP with one known key; return (text lines, key ID) or raise."""
    assert note.endswith("\n")
    assert not re.search(r"[\x00-\x09\x0b-\x1f]", note)
    cut = note.rindex("\n\n")  # the text ends at the last blank line
    text, signatures = note[: cut + 1], note[cut + 2 :]
    lines = text[:-1].split("\n")
    assert len(lines) >= 3  # origin, size, root, then extension lines
    assert all(lines)
    assert re.fullmatch(r"0|[1-9][0-9]*", lines[1])
    assert len(base64.b64decode(lines[2], validate=True)) == 32
    if isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + raw).digest()[:4]
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id = hashlib.sha256(der).digest()[:4]
    verified = False
    for line in signatures[:-1].split("\n"):
        match = re.fullmatch("\u2014 ([^ +]+) ([A-Za-z0-9+/=]+)", line)
        assert match, line
        blob = base64.b64decode(match.group(2), validate=True)
        if match.group(1) != name or blob[:4] != key_id:
            continue  # unknown key: ignored, as the spec says
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(blob[4:], text.encode())
        else:
            public_key.verify(blob[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
        verified = True
    if not verified:
        raise InvalidSignature("no signature by the known key")
    return lines, int.from_bytes(key_id, "big")


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def signer(request: pytest.FixtureRequest) -> Signer:
    return Signer(generate_key(request.param))


def _checkpoint(signer: Signer) -> tuple[MemoryLedger, Checkpoint]:
    ledger = MemoryLedger()
    append_n(ledger, 7)
    return ledger, ledger.checkpoint(signer)


def test_a_checkpoint_is_a_c2sp_signed_note(signer: Signer) -> None:
    ledger, cp = _checkpoint(signer)
    text = cp.to_text()
    lines, _ = spec_verify(text, ledger.origin, signer.public_key)
    assert lines == [
        ledger.origin,
        "7",
        base64.b64encode(ledger.root()).decode(),
        f"time {cp.time}",
    ]
    assert text.split("\n")[5].startswith(f"\u2014 {ledger.origin} ")  # key name = origin
    with pytest.raises(InvalidSignature):
        spec_verify(text.replace("\n7\n", "\n6\n"), ledger.origin, signer.public_key)


def test_sigstore_reads_the_checkpoint(signer: Signer) -> None:
    ledger, cp = _checkpoint(signer)
    parsed = sigstore_checkpoint.SignedCheckpoint.from_text(cp.to_text())
    assert parsed.checkpoint.origin == ledger.origin
    assert parsed.checkpoint.log_size == 7
    assert parsed.checkpoint.log_hash == ledger.root().hex()
    assert parsed.checkpoint.other_content == [f"time {cp.time}"]
    (signature,) = parsed.signed_note.signatures
    assert signature.name == ledger.origin
    _, key_id = spec_verify(cp.to_text(), ledger.origin, signer.public_key)
    assert signature.sig_hash == key_id.to_bytes(4, "big")
    assert Verifier(signer.public_key).verify(
        base64.b64decode(signature.signature), parsed.signed_note.note.encode()
    )


def test_sigstore_verifies_an_ecdsa_checkpoint_end_to_end() -> None:
    from sigstore._internal.trust import Keyring
    from sigstore._utils import key_id
    from sigstore_models.common import v1 as common_v1

    signer = Signer(generate_key("ecdsa-p256"))
    _, cp = _checkpoint(signer)
    der = signer.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keyring = Keyring(
        [
            common_v1.PublicKey(
                raw_bytes=base64.b64encode(der),
                key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
            )
        ]
    )
    note = sigstore_checkpoint.SignedNote.from_text(cp.to_text())
    note.verify(keyring, key_id(signer.public_key))  # raises on failure
    forged = sigstore_checkpoint.SignedNote.from_text(cp.to_text().replace("\n7\n", "\n8\n"))
    with pytest.raises(Exception, match="invalid signature"):
        forged.verify(keyring, key_id(signer.public_key))


def test_conveyor_reads_and_audits_its_signed_notes(signer: Signer) -> None:
    ledger, cp = _checkpoint(signer)
    parsed = parse_checkpoint(cp.to_text())
    assert parsed.is_signed_note
    assert parsed.key_name == ledger.origin
    verifier = signer.verifier()
    trusted = {verifier.keyid: verifier}
    assert parsed.trusted_signer(trusted) == signer.keyid
    report = verify_ledger(
        ledger, verify_envelope=verify_envelope, checkpoint=parsed, checkpoint_verifiers=trusted
    )
    assert report.ok, report.problems
    other = Signer(generate_key("ed25519")).verifier()
    assert not parsed.verify({other.keyid: other})


def test_cosignatures_by_unknown_keys_are_ignored_and_a_bad_trusted_one_refuses() -> None:
    signer = Signer(generate_key("ed25519"))
    _, cp = _checkpoint(signer)
    verifier = signer.verifier()
    trusted = {verifier.keyid: verifier}
    witness = NoteSignature("witness.example/w1", b"\x01\x02\x03\x04", b"\x05" * 72)
    cosigned = parse_checkpoint(cp.to_text() + witness.line())
    assert cosigned.cosignatures == (witness,)
    assert cosigned.verify(trusted)
    assert cosigned.to_text() == cp.to_text() + witness.line()
    # The same key and name again with a broken signature: the note is refused.
    broken = NoteSignature(cp.key_name or "", cp.key_hash or b"", b"\x00" * 64)
    assert not parse_checkpoint(cp.to_text() + broken.line()).verify(trusted)


def test_the_legacy_form_is_still_read_and_verified() -> None:
    ledger = MemoryLedger()
    append_n(ledger, 3)
    body = Checkpoint(ledger.origin, 3, ledger.root(), "2026-11-30T10:00:00.000000Z", "", b"")
    legacy = Checkpoint(
        ledger.origin, 3, ledger.root(), body.time, LEDGER_KEY.keyid, LEDGER_KEY.sign(body.body())
    )
    text = legacy.to_text()
    assert text.endswith(
        f"\u2014 {LEDGER_KEY.keyid} {base64.b64encode(legacy.signature).decode()}\n"
    )
    parsed = parse_checkpoint(text)
    assert not parsed.is_signed_note
    assert parsed == legacy
    assert parsed.verify({LEDGER_KEY.keyid: LEDGER_KEY})
    report = verify_ledger(
        ledger, verify_envelope=verify_envelope, checkpoint=parsed,
        checkpoint_verifiers={LEDGER_KEY.keyid: LEDGER_KEY},
    )  # fmt: skip
    assert report.ok, report.problems


@pytest.mark.parametrize(
    "tail",
    [
        "\u2014 {origin} AQID\n",  # 3 bytes: no room for a key ID and a signature
        "\u2014 {origin} AQIDBA==\n",  # a key ID and an empty signature
        "\u2014 a+b AQIDBAUG\n\u2014 {origin} AQIDBAUG\n",  # the first line is not the origin's
        "".join("\u2014 {origin} AQIDBAUG\n" for _ in range(17)),  # more than 16 lines
    ],
)
def test_malformed_signed_notes_are_refused(tail: str) -> None:
    ledger, cp = _checkpoint(Signer(generate_key("ed25519")))
    head = cp.to_text().split("\n\n")[0] + "\n\n"
    with pytest.raises(CheckpointError):
        parse_checkpoint(head + tail.format(origin=ledger.origin))
