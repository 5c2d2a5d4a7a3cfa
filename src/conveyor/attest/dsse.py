"""DSSE v1 envelopes: sign a payload, verify the exact stored bytes.

Signatures cover ``PAE(payloadType, payload)`` (DSSE protocol v1.0.0). Verification parses
the envelope strictly, checks signatures over the decoded payload bytes, and only then hands
the payload back: nothing downstream parses bytes that no trusted key signed.

``keyid`` is an unauthenticated hint (the spec forbids using it for security decisions): it
only decides which trusted key to try first; an unknown or empty hint tries every trusted key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.attest._json import MAX_DOCUMENT_BYTES, strict_loads
from conveyor.attest.keys import Signer, Verifier
from conveyor.errors import VerificationError

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = MAX_DOCUMENT_BYTES
MAX_SIGNATURES = 32

_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


class EnvelopeError(VerificationError):
    """The bytes are not a well-formed DSSE envelope."""


class SignatureError(VerificationError):
    """No signature (or too few) by a trusted key verifies."""


class PayloadTypeError(VerificationError):
    """A correctly signed envelope whose payloadType is not the one expected."""


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    payload: bytes
    payload_type: str
    signer_keyids: list[str]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, signers: Sequence[Signer]) -> bytes:
    """Sign ``payload`` with every signer; return the envelope JSON bytes to store as-is."""
    if not signers:
        raise ValueError("sign_envelope needs at least one signer")
    message = pae(payload_type, payload)
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [
            {"keyid": signer.keyid, "sig": base64.b64encode(signer.sign(message)).decode("ascii")}
            for signer in signers
        ],
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


@dataclass(frozen=True, slots=True)
class DecodedEnvelope:
    """An envelope's parts, decoded but NOT verified: never act on ``payload`` from here."""

    payload: bytes
    payload_type: str
    signatures: list[tuple[str, bytes]]  # (keyid hint, signature)


def decode_envelope(envelope: bytes) -> DecodedEnvelope:
    """Parse the envelope structure (no signature check). Raises ``EnvelopeError``."""
    document = strict_loads(
        envelope, what="DSSE envelope", error=EnvelopeError, limit=MAX_ENVELOPE_BYTES
    )
    if not isinstance(document, dict):
        raise EnvelopeError("DSSE envelope is not a JSON object")
    payload_text = document.get("payload")
    payload_type = document.get("payloadType")
    if not isinstance(payload_text, str):
        raise EnvelopeError("DSSE envelope has no 'payload' string")
    if not isinstance(payload_type, str) or not payload_type:
        raise EnvelopeError("DSSE envelope has no 'payloadType' string")
    payload = b64decode(payload_text, what="DSSE payload")
    raw_signatures = document.get("signatures", [])
    if raw_signatures is None:
        raw_signatures = []
    if not isinstance(raw_signatures, list):
        raise EnvelopeError("DSSE envelope 'signatures' is not a list")
    if len(raw_signatures) > MAX_SIGNATURES:
        raise EnvelopeError(
            f"DSSE envelope carries {len(raw_signatures)} signatures, "
            f"more than the {MAX_SIGNATURES} allowed"
        )
    signatures: list[tuple[str, bytes]] = []
    for index, entry in enumerate(raw_signatures):
        if not isinstance(entry, dict):
            raise EnvelopeError(f"DSSE signature #{index + 1} is not a JSON object")
        sig_text = entry.get("sig")
        hint = entry.get("keyid", "")
        if hint is None:
            hint = ""
        if not isinstance(sig_text, str) or not sig_text:
            raise EnvelopeError(f"DSSE signature #{index + 1} has no 'sig' string")
        if not isinstance(hint, str):
            raise EnvelopeError(f"DSSE signature #{index + 1} has a 'keyid' that is not a string")
        signatures.append((hint, b64decode(sig_text, what=f"DSSE signature #{index + 1}")))
    return DecodedEnvelope(payload, payload_type, signatures)


def b64decode(text: str, *, what: str) -> bytes:
    """Strict base64: the standard or the URL-safe alphabet (not mixed), canonical padding.

    Unpadded input is accepted (some signers omit ``=``) but must otherwise be canonical:
    the decoded bytes re-encode to exactly the input, so one value has one spelling.
    """
    if _STD.fullmatch(text):
        alphabet_std = True
    elif _URL.fullmatch(text):
        alphabet_std = False
    else:
        raise EnvelopeError(f"{what} is not base64 (standard or URL-safe alphabet)")
    stripped = text.rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    if text != stripped and text != padded:
        raise EnvelopeError(f"{what} has malformed base64 padding")
    try:
        data = (
            base64.b64decode(padded, validate=True)
            if alphabet_std
            else base64.urlsafe_b64decode(padded)
        )
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"{what} is not valid base64") from exc
    encoded = base64.b64encode(data) if alphabet_std else base64.urlsafe_b64encode(data)
    canonical = encoded.decode("ascii")
    if canonical != padded:
        raise EnvelopeError(f"{what} is not canonical base64 (stray bits in the last character)")
    return data


def verify_envelope(
    envelope: bytes,
    trusted: Mapping[str, Verifier] | Sequence[Verifier],
    *,
    payload_type: str = IN_TOTO_PAYLOAD_TYPE,
    threshold: int = 1,
) -> VerifiedEnvelope:
    """Verify ``envelope`` (the exact stored bytes) against trusted keys.

    At least ``threshold`` distinct trusted keys must each verify a signature over the PAE of
    the decoded payload; signatures by other keys are ignored. Then the payloadType must be
    ``payload_type``. ``trusted`` may be a mapping (its keys are extra keyid hints to match,
    e.g. configured ids) or a sequence. ``signer_keyids`` are the ``Verifier.keyid`` of the
    keys that verified, in envelope order.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    decoded = decode_envelope(envelope)
    if not decoded.signatures:
        raise SignatureError("the envelope is unsigned: it carries no signatures")
    candidates = _candidates(trusted)
    if not candidates:
        raise SignatureError("no trusted keys were given to verify the envelope against")
    message = pae(decoded.payload_type, decoded.payload)
    accepted: list[str] = []
    for hint, signature in decoded.signatures:
        hinted = [v for names, v in candidates if hint and hint in names]
        rest = [v for names, v in candidates if not (hint and hint in names)]
        for verifier in hinted + rest:
            if verifier.keyid in accepted:
                continue
            if verifier.verify(signature, message):
                accepted.append(verifier.keyid)
                break
        if len(accepted) >= threshold:
            break
    if len(accepted) < threshold:
        if threshold == 1:
            raise SignatureError(
                "no signature on the envelope verifies with a trusted key "
                "(forged, tampered, or signed by an unknown key)"
            )
        raise SignatureError(
            f"only {len(accepted)} of the {threshold} required trusted signatures verify"
        )
    if decoded.payload_type != payload_type:
        raise PayloadTypeError(
            f"envelope payloadType is {decoded.payload_type[:100]!r}, expected {payload_type!r}"
        )
    return VerifiedEnvelope(decoded.payload, decoded.payload_type, accepted)


def _candidates(
    trusted: Mapping[str, Verifier] | Sequence[Verifier],
) -> list[tuple[frozenset[str], Verifier]]:
    pairs = (
        list(trusted.items()) if isinstance(trusted, Mapping) else [(v.keyid, v) for v in trusted]
    )
    by_keyid: dict[str, tuple[set[str], Verifier]] = {}
    for name, verifier in pairs:
        names, _ = by_keyid.setdefault(verifier.keyid, ({verifier.keyid}, verifier))
        names.add(name)
    return [(frozenset(names), verifier) for names, verifier in by_keyid.values()]
