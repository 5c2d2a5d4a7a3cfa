"""Strict JSON in and canonical-ish JSON out, for envelopes, statements and predicates.

Parsing is the project's one strict loader (``conveyor.oci.manifest.strict_json_loads``:
duplicate keys, NaN/Infinity, non-UTF-8, a byte-order mark, lone surrogates and deep nesting
refused); here it gets a size cap first and its error becomes the caller's error class, so a
bad envelope is a verification failure (exit 1), not a registry-manifest problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from conveyor.errors import ConveyorError, InputError, ManifestError
from conveyor.oci.manifest import strict_json_loads

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


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
    try:
        return strict_json_loads(data, what=what)
    except ManifestError as exc:
        raise error(str(exc)) from exc


def canonical_dumps(document: Mapping[str, Any], *, what: str) -> bytes:
    """Sorted keys, compact separators, UTF-8, no NaN: stable bytes for the same document."""
    try:
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} cannot be written as JSON: {exc}") from exc
    return text.encode("utf-8")
