"""Strict JSON in and canonical-ish JSON out, for envelopes, statements and predicates.

Kept tiny and private: refuse what an attacker could use to make two parsers disagree
(duplicate keys, NaN/Infinity, non-UTF-8, a byte-order mark), refuse oversized input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

from conveyor.errors import ConveyorError, InputError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


class _Refused(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"duplicate key {key[:60]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise _Refused(f"non-finite number {name}")


def strict_loads(
    data: bytes,
    *,
    what: str,
    error: type[ConveyorError],
    limit: int = MAX_DOCUMENT_BYTES,
) -> Any:
    """Parse ``data`` as one JSON document or raise ``error`` naming ``what``."""
    if len(data) > limit:
        raise error(f"{what} is {len(data)} bytes, more than the {limit} allowed")
    if data.startswith(b"\xef\xbb\xbf"):
        raise error(f"{what} starts with a byte-order mark; expected plain UTF-8 JSON")
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Refused as exc:
        raise error(f"{what} is not acceptable JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid UTF-8 (at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise error(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        # int digit limits, nesting deeper than the interpreter allows
        raise error(f"{what} is not acceptable JSON: {type(exc).__name__}") from exc


def canonical_dumps(document: Mapping[str, Any], *, what: str) -> bytes:
    """Sorted keys, compact separators, UTF-8, no NaN: stable bytes for the same document."""
    try:
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} cannot be written as JSON: {exc}") from exc
    return text.encode("utf-8")
