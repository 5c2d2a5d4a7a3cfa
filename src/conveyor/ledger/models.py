"""Ledger values: entries, checkpoints, and the signer/verifier protocols the ledger takes.

The leaf of entry *i* is RFC 6962 ``leaf_hash(leaf_data(entry))``, where ``leaf_data`` is a
canonical, length-prefixed encoding of the entry's index, time, every indexed fact (kind,
subject, predicate type, environment, commit, signer, keyid) and the SHA-256 of the exact
envelope bytes. Why not the envelope bytes alone: the ledger answers questions by those
facts ("what reached production?"), so an edit of an ``environment`` or ``kind`` column must
break the tree just as an edit of the envelope does; the index and time bind the entry to its
place, so rows swapped or moved are caught at the first one even by a forger who recomputes
hashes. The envelope enters through its digest, which the audit recomputes from the stored
bytes, so the leaf stays small and a third party holding the envelope can check inclusion.

Checkpoints are C2SP signed notes (c2sp.org/tlog-checkpoint on c2sp.org/signed-note)::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, standard base64>\\n
    time <UTC, 2026-01-02T03:04:05.000006Z>\\n       (one extension line)
    \\n
    \u2014 <key name = origin> <base64(4-byte key ID || signature)>\\n
    [further signature lines: cosignatures, ignored unless a trusted key made them]

The signature covers the four text lines, final newline included. The key ID is the
signed-note one: Ed25519 (type 0x01) ``SHA-256(name || 0x0A || 0x01 || 32-byte key)[:4]``;
ECDSA P-256 (type 0x02, as Rekor and transparency-dev's witness sign) ``SHA-256(DER SPKI)[:4]``
with an ASN.1 DER signature over the note text; a key that is neither (a KMS or test key
without a public key) uses type 0xff, ``SHA-256(name || 0x0A || 0xff || "conveyor-keyid:" ||
keyid)[:4]``. Checkpoints written before (the *legacy* form) have the conveyor keyid as the
key name and no key ID in the signature; they are still read and verified. A signature line
whose key name is the origin is read as a signed note, any other as the legacy form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Literal, Protocol, runtime_checkable

from conveyor.errors import InputError, LedgerError
from conveyor.ledger.merkle import HASH_SIZE, leaf_hash

LEAF_PREFIX = b"conveyor-ledger-leaf/v1\n"
MAX_CHECKPOINT_TEXT = 16 * 1024
MAX_NOTE_SIGNATURES = 16
SIGNATURE_DASH = "\u2014"
NOTE_KEY_HASH_SIZE = 4

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_TOKEN_RE = re.compile(r"[!-~]{1,256}")  # printable ASCII, no spaces


class CheckpointError(InputError):
    """A checkpoint whose text does not parse; it was never trusted."""


class DuplicateEvidence(LedgerError):
    """The envelope, or the signed statement inside it, is already a ledger entry.

    One statement is one entry: a replay is refused (``exit_code`` 1, a refused check).
    ``index`` is the entry that already holds it.
    """

    exit_code = 1

    def __init__(self, message: str, *, index: int | None, statement_sha256: str) -> None:
        super().__init__(message)
        self.index = index
        self.statement_sha256 = statement_sha256


class LedgerTampered(LedgerError):
    """Rows that do not belong to the signed tree head they were checked against."""

    exit_code = 1

    def __init__(self, message: str, *, indexes: list[int]) -> None:
        super().__init__(message)
        self.indexes = indexes


@runtime_checkable
class CheckpointSigner(Protocol):
    """Signs checkpoints on the ledger's behalf (an Ed25519 key, a KMS, a test fake).

    A signer with a ``public_key`` attribute (a ``cryptography`` Ed25519 or EC public key)
    gets the signed-note key ID of its algorithm; any other gets type 0xff (module docstring).
    """

    @property
    def keyid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


@runtime_checkable
class CheckpointVerifier(Protocol):
    """Checks one key's signature; kept in a ``Mapping[keyid, CheckpointVerifier]``."""

    def verify(self, signature: bytes, data: bytes) -> bool: ...


class _Unstated(Enum):
    UNSTATED = "unstated"


UNSTATED = _Unstated.UNSTATED  # a fact the envelope verifier does not derive: not compared


@dataclass(frozen=True, slots=True)
class SignedFacts:
    """What a verified envelope says, for ``audit verify`` to compare with the entry's columns.

    Returned by an ``EnvelopeVerifier`` (the service layer parses the statement; the ledger
    imports no attestation code). ``subject_digests``: every subject as ``algorithm:hex``;
    ``keyids``: the trusted keys whose signatures verified. ``kind`` and ``environment`` are
    compared when stated (``environment=None`` states "names no environment").
    """

    subject_digests: frozenset[str]
    predicate_type: str
    keyids: frozenset[str]
    kind: str | Literal[_Unstated.UNSTATED] = UNSTATED
    environment: str | Literal[_Unstated.UNSTATED] | None = UNSTATED
    signer: str | Literal[_Unstated.UNSTATED] = UNSTATED


# Raises on an envelope whose signature does not verify; provided by the service layer. It may
# return the envelope's ``SignedFacts`` (the audit then compares them with the entry's
# columns) or ``None`` (signatures only). For a parallel audit it must be picklable (a
# module-level class built from public-key PEMs, not a closure or a bound method of an object
# holding a database connection); an unpicklable one is run on threads as before.
EnvelopeVerifier = Callable[[bytes], SignedFacts | None]


def statement_sha256(envelope: bytes) -> str:
    """The SHA-256 (hex) of the statement a DSSE envelope signs: its decoded payload bytes.

    The same payload under another signature wrapper (other signatures, another keyid hint,
    the URL-safe or unpadded base64 spelling, reordered JSON) has the same digest; bytes that
    are not a DSSE envelope are their own statement.
    """
    payload = _dsse_payload(envelope)
    return hashlib.sha256(envelope if payload is None else payload).hexdigest()


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _dsse_payload(envelope: bytes) -> bytes | None:
    try:
        document = json.loads(envelope, object_pairs_hook=_refuse_duplicate_keys)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("payload"), str):
        return None
    text: str = document["payload"]
    # DSSE readers accept the standard and the URL-safe alphabet, padded or not.
    normal = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def format_time(moment: datetime) -> str:
    """UTC with microseconds and a ``Z``: the one textual form of a ledger time."""
    if moment.tzinfo is None:
        raise InputError("ledger times must be timezone-aware; pass a datetime with tzinfo=UTC")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    if not _TIME_RE.fullmatch(text):
        raise ValueError(f"not a ledger time: {text[:40]!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _field(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode("utf-8")
    return b"\x01" + len(data).to_bytes(4, "big") + data


def leaf_data(
    *,
    index: int,
    recorded_at: str,
    kind: str,
    subject_digest: str,
    subject_name: str,
    predicate_type: str,
    environment: str | None,
    commit: str | None,
    signer: str,
    keyid: str,
    envelope_sha256: str,
) -> bytes:
    """The canonical bytes an entry's leaf hash is taken over (see the module docstring)."""
    return LEAF_PREFIX + b"".join(
        _field(v)
        for v in (
            str(index),
            recorded_at,
            kind,
            subject_digest,
            subject_name,
            predicate_type,
            environment,
            commit,
            signer,
            keyid,
            envelope_sha256,
        )
    )


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry. ``recorded_at`` is the canonical text form (see ``format_time``)."""

    index: int
    envelope: bytes
    envelope_sha256: str
    leaf_hash: bytes
    subject_digest: str
    subject_name: str
    predicate_type: str
    kind: str
    environment: str | None
    commit: str | None
    signer: str
    keyid: str
    recorded_at: str
    tree_root: bytes
    # Derived from the envelope (``statement_sha256``), unique with ``occurrence`` in the
    # database; ``occurrence`` > 0 only on replays kept by the v0002 migration.
    statement_sha256: str = ""
    occurrence: int = 0

    @property
    def recorded_time(self) -> datetime:
        return parse_time(self.recorded_at)

    def computed_leaf_hash(self) -> bytes:
        """The leaf hash these facts call for (the audit compares it with ``leaf_hash``)."""
        return leaf_hash(
            leaf_data(
                index=self.index,
                recorded_at=self.recorded_at,
                kind=self.kind,
                subject_digest=self.subject_digest,
                subject_name=self.subject_name,
                predicate_type=self.predicate_type,
                environment=self.environment,
                commit=self.commit,
                signer=self.signer,
                keyid=self.keyid,
                envelope_sha256=self.envelope_sha256,
            )
        )


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise CheckpointError(f"checkpoint {what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"checkpoint {what} is not canonical base64")
    return raw


def note_key_hash(name: str, key: object, keyid: str) -> bytes:
    """The signed-note 4-byte key ID of a signer or verifier ``key`` under key name ``name``.

    ``key.public_key`` (an attribute or a method) picks the algorithm: Ed25519 → type 0x01,
    EC → type 0x02 (Rekor / transparency-dev witness); anything else → type 0xff over
    ``keyid`` (see the module docstring).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = getattr(key, "public_key", None)
    if callable(public):
        try:
            public = public()
        except TypeError:
            public = None
    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        material = name.encode() + b"\n\x01" + raw
    elif isinstance(public, EllipticCurvePublicKey):
        material = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        material = name.encode() + b"\n\xff" + b"conveyor-keyid:" + keyid.encode()
    return hashlib.sha256(material).digest()[:NOTE_KEY_HASH_SIZE]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One further signature line of a signed note (a cosignature): key name, key ID, sig."""

    key_name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_hash + self.signature).decode("ascii")
        return f"{SIGNATURE_DASH} {self.key_name} {blob}\n"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: the ledger ``origin`` had ``size`` entries with ``root`` at ``time``.

    ``key_name``/``key_hash`` set: a C2SP signed note whose first signature line is
    ``key_name`` + ``key_hash || signature``; ``keyid`` is then the conveyor keyid of the key
    that signed it when known (empty when parsed from text: matching the trusted keys tells).
    Unset: the legacy form, whose signature line names ``keyid``.
    """

    origin: str
    size: int
    root: bytes
    time: str
    keyid: str
    signature: bytes
    key_name: str | None = None
    key_hash: bytes | None = None
    cosignatures: tuple[NoteSignature, ...] = ()

    @property
    def is_signed_note(self) -> bool:
        return self.key_name is not None

    def body(self) -> bytes:
        """The signed part of the note."""
        return checkpoint_body(self.origin, self.size, self.root, self.time)

    def to_text(self) -> str:
        body = self.body().decode("utf-8")
        if self.key_name is None or self.key_hash is None:
            signature = base64.b64encode(self.signature).decode("ascii")
            return f"{body}\n{SIGNATURE_DASH} {self.keyid} {signature}\n"
        first = NoteSignature(self.key_name, self.key_hash, self.signature)
        return body + "\n" + "".join(s.line() for s in (first, *self.cosignatures))

    def trusted_signer(self, verifiers: Mapping[str, CheckpointVerifier]) -> str | None:
        """The keyid of the trusted key whose signature verifies, else ``None``.

        Signed-note rules: signatures by keys not in ``verifiers`` (name and key ID) are
        ignored; if a trusted key's signature fails, the whole note is refused.
        """
        body = self.body()
        if self.key_name is None or self.key_hash is None:
            verifier = verifiers.get(self.keyid)
            return (
                self.keyid
                if verifier is not None and _verifies(verifier, self.signature, body)
                else None
            )
        lines = (NoteSignature(self.key_name, self.key_hash, self.signature), *self.cosignatures)
        good: str | None = None
        for line in lines:
            for keyid, verifier in verifiers.items():
                if note_key_hash(line.key_name, verifier, keyid) != line.key_hash:
                    continue
                if not _verifies(verifier, line.signature, body):
                    return None
                good = good or keyid
        return good

    def verify(self, verifiers: Mapping[str, CheckpointVerifier]) -> bool:
        """True when a trusted key signed this body (and no trusted key's signature fails)."""
        return self.trusted_signer(verifiers) is not None

    def described_key(self) -> str:
        if self.key_name is None or self.key_hash is None:
            return f"key {self.keyid!r}"
        return f"key {self.key_name!r} (key ID {self.key_hash.hex()})"


def _verifies(verifier: CheckpointVerifier, signature: bytes, body: bytes) -> bool:
    try:
        return bool(verifier.verify(signature, body))
    except Exception:  # a verifier that raises on a bad signature means "no"
        return False


def checkpoint_body(origin: str, size: int, root: bytes, time: str) -> bytes:
    if not _TOKEN_RE.fullmatch(origin):
        raise InputError(f"a ledger origin is printable ASCII without spaces, not {origin!r}")
    if len(root) != HASH_SIZE or size < 0:
        raise InputError("a checkpoint needs a size >= 0 and a 32-byte root")
    root_b64 = base64.b64encode(root).decode("ascii")
    return f"{origin}\n{size}\n{root_b64}\ntime {time}\n".encode()


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Parse checkpoint text strictly; raises ``CheckpointError``. Does not check the signature.

    Reads the C2SP signed-note form (up to 16 signature lines) and the legacy form.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_CHECKPOINT_TEXT:
            raise CheckpointError(f"checkpoint is larger than {MAX_CHECKPOINT_TEXT} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("checkpoint is not UTF-8 text") from exc
    if len(text) > MAX_CHECKPOINT_TEXT:
        raise CheckpointError(f"checkpoint is larger than {MAX_CHECKPOINT_TEXT} bytes")
    if "\r" in text or not text.endswith("\n"):
        raise CheckpointError("checkpoint must be LF-terminated lines (no CR, final newline)")
    lines = text[:-1].split("\n")
    if len(lines) < 6 or lines[4] != "":
        raise CheckpointError(
            "checkpoint must be: origin, size, root, time line, blank line, signature lines"
        )
    origin, size_text, root_text, time_line = lines[:4]
    signature_lines = lines[5:]
    if len(signature_lines) > MAX_NOTE_SIGNATURES:
        raise CheckpointError(f"checkpoint has more than {MAX_NOTE_SIGNATURES} signature lines")
    if not _TOKEN_RE.fullmatch(origin):
        raise CheckpointError("checkpoint origin must be printable ASCII without spaces")
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) >= 2**63:
        raise CheckpointError("checkpoint size must be a decimal number without leading zeros")
    root = _b64decode(root_text, "root")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root must be {HASH_SIZE} bytes")
    if not time_line.startswith("time ") or not _TIME_RE.fullmatch(time_line[5:]):
        raise CheckpointError("checkpoint time line must be 'time YYYY-MM-DDTHH:MM:SS.ffffffZ'")
    try:
        parse_time(time_line[5:])
    except ValueError as exc:
        raise CheckpointError("checkpoint time is not a valid date") from exc
    parsed: list[tuple[str, bytes]] = []
    for line in signature_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != SIGNATURE_DASH or not _TOKEN_RE.fullmatch(parts[1]):
            raise CheckpointError(
                f"checkpoint signature line must be '{SIGNATURE_DASH} KEYNAME BASE64'"
            )
        blob = _b64decode(parts[2], "signature")
        if not blob:
            raise CheckpointError("checkpoint signature is empty")
        parsed.append((parts[1], blob))
    size, time = int(size_text), time_line[5:]
    name, blob = parsed[0]
    if name != origin:  # the legacy form: one line naming the conveyor keyid
        if len(parsed) != 1:
            raise CheckpointError(
                "a legacy checkpoint (key name is not the origin) has one signature line"
            )
        return Checkpoint(origin, size, root, time, name, blob)
    notes: list[NoteSignature] = []
    for key_name, data in parsed:
        if len(data) <= NOTE_KEY_HASH_SIZE or "+" in key_name:
            raise CheckpointError(
                "a signed-note signature is a 4-byte key ID and a signature; key names have no '+'"
            )
        notes.append(NoteSignature(key_name, data[:NOTE_KEY_HASH_SIZE], data[NOTE_KEY_HASH_SIZE:]))
    first = notes[0]
    return Checkpoint(
        origin,
        size,
        root,
        time,
        "",
        first.signature,
        first.key_name,
        first.key_hash,
        tuple(notes[1:]),
    )


def sign_checkpoint(
    signer: CheckpointSigner, *, origin: str, size: int, root: bytes, time: str
) -> Checkpoint:
    """A C2SP signed note by ``signer`` with key name = origin."""
    if not _TOKEN_RE.fullmatch(signer.keyid):
        raise InputError(f"a checkpoint keyid is printable ASCII without spaces: {signer.keyid!r}")
    if "+" in origin:
        raise InputError(f"a signed-note key name (the ledger origin) has no '+': {origin!r}")
    body = checkpoint_body(origin, size, root, time)
    return Checkpoint(
        origin,
        size,
        root,
        time,
        signer.keyid,
        signer.sign(body),
        key_name=origin,
        key_hash=note_key_hash(origin, signer, signer.keyid),
    )
