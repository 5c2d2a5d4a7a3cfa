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

Checkpoint text (a signed note in the style of transparency-dev's ``checkpoint`` format)::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, standard base64>\\n
    time <UTC, 2026-01-02T03:04:05.000006Z>\\n
    \\n
    \u2014 <keyid> <standard base64 signature>\\n

The signature covers the first four lines, newline included. Exactly one signature line; the
keyid names the key in the verifier map (unlike Go's signed notes there is no 4-byte key hash).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from conveyor.errors import InputError
from conveyor.ledger.merkle import HASH_SIZE, leaf_hash

LEAF_PREFIX = b"conveyor-ledger-leaf/v1\n"
MAX_CHECKPOINT_TEXT = 16 * 1024
SIGNATURE_DASH = "\u2014"

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_TOKEN_RE = re.compile(r"[!-~]{1,256}")  # printable ASCII, no spaces


class CheckpointError(InputError):
    """A checkpoint whose text does not parse; it was never trusted."""


@runtime_checkable
class CheckpointSigner(Protocol):
    """Signs checkpoints on the ledger's behalf (an Ed25519 key, a KMS, a test fake)."""

    @property
    def keyid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


@runtime_checkable
class CheckpointVerifier(Protocol):
    """Checks one key's signature; kept in a ``Mapping[keyid, CheckpointVerifier]``."""

    def verify(self, signature: bytes, data: bytes) -> bool: ...


# Raises on an envelope whose signature does not verify; provided by the service layer.
EnvelopeVerifier = Callable[[bytes], None]


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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: the ledger ``origin`` had ``size`` entries with ``root`` at ``time``."""

    origin: str
    size: int
    root: bytes
    time: str
    keyid: str
    signature: bytes

    def body(self) -> bytes:
        """The signed part of the note."""
        return checkpoint_body(self.origin, self.size, self.root, self.time)

    def to_text(self) -> str:
        signature = base64.b64encode(self.signature).decode("ascii")
        return f"{self.body().decode('utf-8')}\n{SIGNATURE_DASH} {self.keyid} {signature}\n"

    def verify(self, verifiers: Mapping[str, CheckpointVerifier]) -> bool:
        """True when a trusted key under ``keyid`` signed this body."""
        verifier = verifiers.get(self.keyid)
        if verifier is None:
            return False
        try:
            return bool(verifier.verify(self.signature, self.body()))
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
    """Parse checkpoint text strictly; raises ``CheckpointError``. Does not check the signature."""
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
    if len(lines) != 6 or lines[4] != "":
        raise CheckpointError(
            "checkpoint must be: origin, size, root, time line, blank line, one signature line"
        )
    origin, size_text, root_text, time_line, _, signature_line = lines
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
    parts = signature_line.split(" ")
    if len(parts) != 3 or parts[0] != SIGNATURE_DASH or not _TOKEN_RE.fullmatch(parts[1]):
        raise CheckpointError(f"checkpoint signature line must be '{SIGNATURE_DASH} KEYID BASE64'")
    signature = _b64decode(parts[2], "signature")
    if not signature:
        raise CheckpointError("checkpoint signature is empty")
    return Checkpoint(origin, int(size_text), root, time_line[5:], parts[1], signature)


def sign_checkpoint(
    signer: CheckpointSigner, *, origin: str, size: int, root: bytes, time: str
) -> Checkpoint:
    if not _TOKEN_RE.fullmatch(signer.keyid):
        raise InputError(f"a checkpoint keyid is printable ASCII without spaces: {signer.keyid!r}")
    body = checkpoint_body(origin, size, root, time)
    return Checkpoint(origin, size, root, time, signer.keyid, signer.sign(body))
