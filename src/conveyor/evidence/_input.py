"""Reading untrusted report bytes: size caps, strict JSON, timestamps, digests.

Every foreign exception met while reading a report (OSError, JSON, recursion, digest
syntax) is translated here into an ``EvidenceError`` that names the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from conveyor.errors import DigestError
from conveyor.evidence.errors import EvidenceError
from conveyor.files import FileTooLarge, UnreadableFile, read_bounded
from conveyor.oci.digest import Digest

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_MiB = 1024 * 1024


def _describe_size(size: int) -> str:
    if size >= _MiB:
        return f"{size / _MiB:.1f} MiB"
    return f"{size} bytes"


def check_size(data: bytes, *, path: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        refuse_size(path, len(data), max_bytes)


def refuse_size(path: str, size: int | None, max_bytes: int) -> NoReturn:
    actual = f"{_describe_size(size)}, " if size is not None else ""
    raise EvidenceError(
        path,
        f"report too large ({actual}limit {_describe_size(max_bytes)}); "
        "refusing to parse it (raise the limit only for a report you trust)",
    )


def read_capped(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a report file: a regular file (never a FIFO or device), refused by size before it
    is read, and never more than ``max_bytes + 1`` bytes read (``conveyor.files``)."""
    name = os.fspath(path)
    try:
        return read_bounded(name, max_bytes=max_bytes)
    except FileTooLarge as exc:
        refuse_size(name, exc.size, max_bytes)
    except UnreadableFile as exc:
        raise EvidenceError(name, f"cannot read the report ({exc.reason})") from exc


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonFinite(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _refuse_constant(text: str) -> NoReturn:
    raise _NonFinite(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf without a NaN/Infinity token
        raise _NonFinite(text)
    return value


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def decode_text(data: bytes, *, path: str) -> str:
    """UTF-8 (an optional BOM allowed), or UTF-16 when a BOM says so (PowerShell redirects)."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvidenceError(
            path, f"not valid UTF-8 text (bad byte at offset {exc.start}); is it a report?"
        ) from exc


def loads_strict_json(data: bytes, *, path: str, max_bytes: int) -> Any:
    """Parse JSON refusing duplicate keys, NaN/Infinity, overflowing numbers and deep nesting."""
    check_size(data, path=path, max_bytes=max_bytes)
    text = decode_text(data, path=path)
    if not text.strip():
        raise EvidenceError(path, "empty file; expected a JSON report")
    try:
        return json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _DuplicateKey as exc:
        raise EvidenceError(
            path, f"duplicate JSON key {_short(exc.key)}; refusing an ambiguous report"
        ) from exc
    except _NonFinite as exc:
        raise EvidenceError(
            path, f"non-finite number {_short(exc.text)} in JSON; refusing the report"
        ) from exc
    except json.JSONDecodeError as exc:
        raise EvidenceError(
            path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise EvidenceError(path, "JSON nested too deeply; refusing the report") from exc
    except ValueError as exc:  # an integer longer than Python's digit limit
        raise EvidenceError(path, "JSON number too long to read; refusing the report") from exc


def parse_timestamp(value: object, *, assume_utc: bool = False) -> datetime | None:
    """An RFC 3339 time with its zone; ``None`` when absent, empty, zone-less or unparsable.

    A time without a zone is ambiguous, so it is not reported rather than guessed, unless
    ``assume_utc`` (a field whose name says UTC, such as SARIF's ``endTimeUtc``).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        return when.replace(tzinfo=UTC) if assume_utc else None
    return when


def parse_digest(text: object, *, path: str, field: str) -> Digest:
    if not isinstance(text, str):
        raise EvidenceError(path, f"{field} is not a string digest")
    try:
        return Digest.parse(text.strip())
    except DigestError as exc:
        raise EvidenceError(
            path, f"{field} names an invalid digest {_short(text)} ({exc})"
        ) from exc


def repo_digest(text: object, *, path: str, field: str) -> Digest:
    """The digest part of ``repository@sha256:…`` (a bare digest is accepted too)."""
    if not isinstance(text, str):
        raise EvidenceError(path, f"{field} entry is not a string")
    _, _, digest = text.rpartition("@")
    return parse_digest(digest, path=path, field=field)


def as_object(value: object, *, path: str, field: str) -> Mapping[str, Any]:
    """``value`` as a JSON object; ``None`` means absent and gives an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvidenceError(path, f"{field} is not a JSON object")
    return value


def as_list(value: object, *, path: str, field: str) -> list[Any]:
    """``value`` as a JSON array; ``None`` means absent and gives an empty list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise EvidenceError(path, f"{field} is not a JSON array")
    return value


def text_or_none(value: object) -> str | None:
    """A non-empty string, else ``None`` (numbers are rendered: some tools emit versions so)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
