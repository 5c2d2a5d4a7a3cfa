"""DSSE: PAE, sign/verify, hostile envelopes, the spec's test vector, securesystemslib interop."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings, strategies as st
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from conveyor.attest import (
    IN_TOTO_PAYLOAD_TYPE,
    EnvelopeError,
    PayloadTypeError,
    SignatureError,
    Signer,
    Verifier,
    decode_envelope,
    generate_key,
    pae,
    sign_envelope,
    verify_envelope,
)
from conveyor.attest.dsse import MAX_ENVELOPE_BYTES, b64decode
from conveyor.errors import ConveyorError, VerificationError

KINDS = ["ed25519", "ecdsa-p256"]
PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","hello":"world"}'


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {kind: Signer(generate_key(kind)) for kind in KINDS}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stranger() -> Signer:
    return Signer(generate_key())


def _edit(envelope: bytes, **changes: Any) -> bytes:
    document = json.loads(envelope)
    document.update(changes)
    return json.dumps(document).encode()


# --- PAE ---------------------------------------------------------------------------------


def test_pae_matches_the_spec_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "


@given(st.text(max_size=40), st.binary(max_size=300))
def test_pae_length_prefixes(payload_type: str, payload: bytes) -> None:
    encoded = pae(payload_type, payload)
    kind = payload_type.encode("utf-8")
    prefix = b"DSSEv1 %d " % len(kind)
    assert encoded.startswith(prefix)
    rest = encoded[len(prefix) :]
    assert rest[: len(kind)] == kind
    rest = rest[len(kind) :]
    length_text, _, body = rest[1:].partition(b" ")
    assert rest[:1] == b" "
    assert int(length_text) == len(payload)
    assert not length_text.startswith(b"0") or length_text == b"0"
    assert body == payload


@given(st.text(max_size=20), st.binary(max_size=50), st.text(max_size=20), st.binary(max_size=50))
def test_pae_is_injective(t1: str, p1: bytes, t2: str, p2: bytes) -> None:
    if (t1, p1) != (t2, p2):
        assert pae(t1, p1) != pae(t2, p2)


def test_spec_test_vector_signature_verifies() -> None:
    """DSSE protocol.md vector: ECDSA P-256 raw r||s, converted to DER for our verifier."""
    x = 46950820868899156662930047687818585632848591499744589407958293238635476079160
    y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    envelope = {
        "payload": "aGVsbG8gd29ybGQ=",
        "payloadType": "http://example.com/HelloWorld",
        "signatures": [
            {
                "sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJ"
                "PcIAriEGAHTVeCUjW2JIZA=="
            }
        ],
    }
    raw = base64.b64decode(envelope["signatures"][0]["sig"])  # type: ignore[index]
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    envelope["signatures"] = [{"sig": base64.b64encode(der).decode()}]
    verified = verify_envelope(
        json.dumps(envelope).encode(),
        [Verifier(public)],
        payload_type="http://example.com/HelloWorld",
    )
    assert verified.payload == b"hello world"
    assert verified.signer_keyids == [Verifier(public).keyid]


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sign_verify_roundtrip(signers: dict[str, Signer], kind: str) -> None:
    signer = signers[kind]
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signer])
    document = json.loads(envelope)
    assert set(document) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(document["payload"], validate=True) == PAYLOAD
    assert document["signatures"][0]["keyid"] == signer.keyid
    verified = verify_envelope(envelope, [signer.verifier()])
    assert verified.payload == PAYLOAD
    assert verified.payload_type == IN_TOTO_PAYLOAD_TYPE
    assert verified.signer_keyids == [signer.keyid]
    # as a mapping of configured ids, too
    assert verify_envelope(envelope, {"ci": signer.verifier()}).payload == PAYLOAD


def test_signing_is_over_pae_not_the_raw_payload(signers: dict[str, Signer]) -> None:
    signer = signers["ed25519"]
    envelope = json.loads(sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signer]))
    sig = base64.b64decode(envelope["signatures"][0]["sig"])
    assert signer.verifier().verify(sig, pae(IN_TOTO_PAYLOAD_TYPE, PAYLOAD))
    assert not signer.verifier().verify(sig, PAYLOAD)


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(max_size=2048), kind=st.sampled_from(KINDS))
def test_roundtrip_over_random_payloads(payload: bytes, kind: str) -> None:
    signer = Signer(generate_key(kind))  # type: ignore[arg-type]
    envelope = sign_envelope(payload, "application/x-test", [signer])
    verified = verify_envelope(envelope, [signer.verifier()], payload_type="application/x-test")
    assert verified.payload == payload


def test_threshold_counts_distinct_trusted_keys(
    signers: dict[str, Signer], stranger: Signer
) -> None:
    a, b = signers["ed25519"], signers["ecdsa-p256"]
    both = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [a, b])
    trusted = [a.verifier(), b.verifier()]
    assert sorted(verify_envelope(both, trusted, threshold=2).signer_keyids) == sorted(
        [a.keyid, b.keyid]
    )
    # the same key signing twice is one key
    twice = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [a, a])
    with pytest.raises(SignatureError, match="only 1 of the 2"):
        verify_envelope(twice, trusted, threshold=2)
    # an untrusted second signature does not count
    with_stranger = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [a, stranger])
    with pytest.raises(SignatureError):
        verify_envelope(with_stranger, trusted, threshold=2)
    assert verify_envelope(with_stranger, trusted).signer_keyids == [a.keyid]
    with pytest.raises(ValueError):
        verify_envelope(both, trusted, threshold=0)


# --- refusals ------------------------------------------------------------------------------


def test_tampered_payload(signers: dict[str, Signer]) -> None:
    signer = signers["ed25519"]
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signer])
    forged = PAYLOAD.replace(b"world", b"WORLD")
    tampered = _edit(envelope, payload=base64.b64encode(forged).decode())
    with pytest.raises(SignatureError) as caught:
        verify_envelope(tampered, [signer.verifier()])
    assert caught.value.exit_code == 1


def test_tampered_payload_type(signers: dict[str, Signer]) -> None:
    signer = signers["ecdsa-p256"]
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signer])
    tampered = _edit(envelope, payloadType="application/json")
    with pytest.raises(SignatureError):
        verify_envelope(tampered, [signer.verifier()], payload_type="application/json")


def test_correctly_signed_but_wrong_payload_type(signers: dict[str, Signer]) -> None:
    signer = signers["ed25519"]
    envelope = sign_envelope(PAYLOAD, "application/vnd.other+json", [signer])
    with pytest.raises(PayloadTypeError, match=r"application/vnd\.other"):
        verify_envelope(envelope, [signer.verifier()])


def test_wrong_key(signers: dict[str, Signer], stranger: Signer) -> None:
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [stranger])
    with pytest.raises(SignatureError, match="trusted key"):
        verify_envelope(envelope, [s.verifier() for s in signers.values()])


def test_untrusted_signer_claiming_a_trusted_keyid(
    signers: dict[str, Signer], stranger: Signer
) -> None:
    trusted = signers["ed25519"]
    envelope = _edit(
        sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [stranger]),
        signatures=[
            {
                "keyid": trusted.keyid,
                "sig": json.loads(sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [stranger]))[
                    "signatures"
                ][0]["sig"],
            }
        ],
    )
    with pytest.raises(SignatureError):
        verify_envelope(envelope, [trusted.verifier()])


def test_keyid_hint_is_only_a_hint(signers: dict[str, Signer]) -> None:
    signer = signers["ecdsa-p256"]
    document = json.loads(sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signer]))
    for hint in ("", "some-other-id", None):
        if hint is None:
            del document["signatures"][0]["keyid"]
        else:
            document["signatures"][0]["keyid"] = hint
        verified = verify_envelope(json.dumps(document).encode(), [signer.verifier()])
        assert verified.signer_keyids == [signer.keyid]


@pytest.mark.parametrize("signatures", [[], None, "absent"])
def test_unsigned(signers: dict[str, Signer], signatures: object) -> None:
    document = json.loads(sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signers["ed25519"]]))
    if signatures == "absent":
        del document["signatures"]
    else:
        document["signatures"] = signatures
    with pytest.raises(SignatureError, match="unsigned"):
        verify_envelope(json.dumps(document).encode(), [signers["ed25519"].verifier()])


def test_no_trusted_keys(signers: dict[str, Signer]) -> None:
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signers["ed25519"]])
    with pytest.raises(SignatureError, match="no trusted keys"):
        verify_envelope(envelope, [])


def _valid(signers: dict[str, Signer]) -> str:
    return sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signers["ed25519"]]).decode()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # duplicate keys: a second payloadType, a second payload
        (lambda t: t.replace('"payloadType":', '"payloadType":"x","payloadType":'), "duplicate"),
        (lambda t: t[:-1] + ',"payload":"AAAA"}', "duplicate"),
        (lambda t: t.replace('"keyid":', '"keyid":"a","keyid":'), "duplicate"),
        # non-finite numbers anywhere
        (lambda t: t[:-1] + ',"x":NaN}', "NaN"),
        (lambda t: t[:-1] + ',"x":-Infinity}', "Infinity"),
        (lambda t: t[:-1] + ',"x":"\\ud800"}', "surrogate"),
        # truncated, empty, not an object
        (lambda t: t[: len(t) // 2], "not valid JSON"),
        (lambda t: "", "not valid JSON"),
        (lambda t: "[" + t + "]", "not a JSON object"),
        (lambda t: "\ufeff" + t, "byte-order mark"),
        # missing / wrong-typed fields
        (lambda t: t.replace('"payloadType":', '"payloadTyp":'), "payloadType"),
        (lambda t: t.replace('"payload":', '"paylod":'), "'payload'"),
        (lambda t: t.replace('"signatures":[', '"signatures":{"a":').replace("]}", "}}"), "list"),
        (lambda t: t.replace('"sig":', '"sag":'), "'sig'"),
    ],
)
def test_malformed_envelopes(signers: dict[str, Signer], mutate: Any, message: str) -> None:
    envelope = mutate(_valid(signers)).encode()
    with pytest.raises(EnvelopeError, match=message) as caught:
        verify_envelope(envelope, [signers["ed25519"].verifier()])
    assert isinstance(caught.value, VerificationError)
    assert "\n" not in str(caught.value)


def test_invalid_utf8(signers: dict[str, Signer]) -> None:
    envelope = _valid(signers).encode().replace(b'"keyid":"', b'"keyid":"\xff')
    with pytest.raises(EnvelopeError, match="UTF-8"):
        verify_envelope(envelope, [signers["ed25519"].verifier()])


def test_oversized_envelope_is_refused_before_parsing(signers: dict[str, Signer]) -> None:
    envelope = b" " * (MAX_ENVELOPE_BYTES + 1)
    with pytest.raises(EnvelopeError, match="more than"):
        verify_envelope(envelope, [signers["ed25519"].verifier()])


def test_deep_nesting_is_refused_cleanly(signers: dict[str, Signer]) -> None:
    envelope = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(EnvelopeError):
        verify_envelope(envelope, [signers["ed25519"].verifier()])


@pytest.mark.parametrize(
    "text",
    [
        "aGVsbG8gd29ybGQ",  # valid unpadded: accepted (see below)
        "aGVsbG8 gd29ybGQ=",
        "aGVsbG8\nd29ybGQ=",
        "aGVsbG8gd29ybGQ==",
        "aGVsbG8gd29ybGQ===",
        "a+b_",
        "aGVsbG8gd29ybGR=",  # stray bits in the last character
        "%%%%",
        "aGVsbG8=gd29ybGQ=",
        "a",
    ],
)
def test_strict_base64(text: str) -> None:
    if text == "aGVsbG8gd29ybGQ":
        assert b64decode(text, what="x") == b"hello world"
        return
    with pytest.raises(EnvelopeError):
        b64decode(text, what="x")


def test_both_base64_alphabets_are_accepted(signers: dict[str, Signer]) -> None:
    signer = signers["ed25519"]
    payload = b"\xfb\xff\xfe" * 20  # encodes with '+' and '/' in the standard alphabet
    document = json.loads(sign_envelope(payload, "application/x-test", [signer]))
    assert "+" in document["payload"] or "/" in document["payload"]
    document["payload"] = base64.urlsafe_b64encode(payload).decode()
    sig = base64.b64decode(document["signatures"][0]["sig"])
    document["signatures"][0]["sig"] = base64.urlsafe_b64encode(sig).decode()
    verified = verify_envelope(
        json.dumps(document).encode(), [signer.verifier()], payload_type="application/x-test"
    )
    assert verified.payload == payload


def test_bad_base64_in_envelope(signers: dict[str, Signer]) -> None:
    document = json.loads(_valid(signers))
    document["signatures"][0]["sig"] = "not base64!"
    with pytest.raises(EnvelopeError, match="base64"):
        verify_envelope(json.dumps(document).encode(), [signers["ed25519"].verifier()])
    document = json.loads(_valid(signers))
    document["payload"] = document["payload"].replace("e", "-").replace("a", "+")
    with pytest.raises(EnvelopeError, match="base64"):
        verify_envelope(json.dumps(document).encode(), [signers["ed25519"].verifier()])


def test_too_many_signatures(signers: dict[str, Signer]) -> None:
    document = json.loads(_valid(signers))
    document["signatures"] = document["signatures"] * 100
    with pytest.raises(EnvelopeError, match="signatures"):
        verify_envelope(json.dumps(document).encode(), [signers["ed25519"].verifier()])


@pytest.mark.parametrize("kind", KINDS)
def test_every_single_bit_flip_is_refused_or_harmless(
    signers: dict[str, Signer], kind: str
) -> None:
    """Exhaustive: flip each bit of a stored envelope. Verification must either refuse with a
    ConveyorError or (a flip in the unsigned keyid hint) return the identical payload."""
    signer = signers[kind]
    payload = b'{"a":1}'
    envelope = sign_envelope(payload, "application/x-test", [signer])
    trusted = [signer.verifier()]
    # the "keyid" member, name and value: renaming it just drops the hint
    hint_start = envelope.index(b'"keyid":"')
    hint_span = range(hint_start, envelope.index(signer.keyid.encode()) + len(signer.keyid))
    harmless: set[int] = set()
    for position in range(len(envelope)):
        for bit in range(8):
            flipped = bytearray(envelope)
            flipped[position] ^= 1 << bit
            try:
                verified = verify_envelope(
                    bytes(flipped), trusted, payload_type="application/x-test"
                )
            except ConveyorError:
                continue
            assert verified.payload == payload
            assert verified.payload_type == "application/x-test"
            harmless.add(position)
    # only edits inside the keyid hint survive: the hint is not authenticated, the rest is
    assert harmless
    assert harmless <= set(hint_span)


# --- securesystemslib interop ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_our_envelopes_verify_with_securesystemslib(signers: dict[str, Signer], kind: str) -> None:
    signer = signers[kind]
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [signer])
    theirs = SslibEnvelope.from_dict(json.loads(envelope))
    key = SSlibKey.from_crypto(signer.public_key, keyid=signer.keyid)
    accepted = theirs.verify([key], 1)
    assert list(accepted) == [signer.keyid]
    assert theirs.payload == PAYLOAD
    assert theirs.payload_type == IN_TOTO_PAYLOAD_TYPE


@pytest.mark.parametrize("kind", KINDS)
def test_securesystemslib_envelopes_verify_with_ours(kind: str) -> None:
    if kind == "ed25519":
        their_signer = CryptoSigner.generate_ed25519()
    else:
        their_signer = CryptoSigner.generate_ecdsa()
    theirs = SslibEnvelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, {})
    theirs.sign(their_signer)
    envelope = json.dumps(theirs.to_dict()).encode()
    public = their_signer.public_key._crypto_key()  # the pyca key behind their SSlibKey
    verified = verify_envelope(envelope, [Verifier(public)])
    assert verified.payload == PAYLOAD
    # their keyid is their own scheme (not ours): the hint misses, the key still verifies
    assert their_signer.public_key.keyid != Verifier(public).keyid
    # and a forgery of theirs is refused by us
    document = theirs.to_dict()
    document["payload"] = base64.b64encode(PAYLOAD + b" ").decode()
    with pytest.raises(SignatureError):
        verify_envelope(json.dumps(document).encode(), [Verifier(public)])


def test_decode_envelope_does_not_verify(signers: dict[str, Signer], stranger: Signer) -> None:
    envelope = sign_envelope(PAYLOAD, IN_TOTO_PAYLOAD_TYPE, [stranger])
    decoded = decode_envelope(envelope)
    assert decoded.payload == PAYLOAD
    assert [hint for hint, _ in decoded.signatures] == [stranger.keyid]
