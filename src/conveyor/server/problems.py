"""Errors as ``application/problem+json`` (RFC 9457), with the CLI's one-line message.

The outcome classes follow the CLI's exit codes: bad input 400 (exit 2), no or bad
credentials 401, not allowed 403 (exit 1), unknown thing 404, denied by a gate or a failed
check 409 (exit 1; the body carries the gate decisions), registry or storage failure 502 and
database failure 503 (exit 3). Each body names the error class (``error``) and the CLI exit
code (``exit_code``) so a client can raise the same ``ConveyorError``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import (
    ConfigError,
    ConveyorError,
    DigestMismatch,
    ExternalError,
    InputError,
    LedgerError,
    NotFoundError,
    PolicyDenied,
    VerificationError,
)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://conveyor.dev/problems/"


class Problem(BaseModel):
    """An error. ``detail`` is the one line the CLI prints after ``conveyor: error:``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str
    error: str = Field(description="the ConveyorError class (InputError, PolicyDenied …)")
    exit_code: int = Field(description="the exit code the CLI would give")
    request_id: str | None = None
    problems: list[str] | None = Field(default=None, description="a config file's problems")
    gates: list[dict[str, Any]] | None = Field(
        default=None, description="409 from a gate: every gate's decision and reason"
    )
    decision: dict[str, Any] | None = Field(
        default=None, description="409 from a gate: the whole decision (check --json's shape)"
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_TITLES = {
    400: "Bad input",
    401: "Bad or missing credentials",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Denied",
    413: "Request body too large",
    415: "Unsupported media type",
    500: "Internal error",
    502: "Registry or storage failure",
    503: "Unavailable",
}


def status_of(error: ConveyorError) -> int:
    from conveyor.server.auth import NotAllowed
    from conveyor.server.tokens import TokenRefused

    if isinstance(error, TokenRefused):
        return 401
    if isinstance(error, NotAllowed):
        return 403
    if isinstance(error, NotFound | NotFoundError) or type(error).__name__ in _NOT_FOUND:
        return 404
    if isinstance(error, BodyTooLarge):
        return 413
    if isinstance(error, InputError):
        return 400
    if type(error).__name__ == "UnknownSignerError":
        return 403
    if isinstance(error, DigestMismatch):
        return 502
    if isinstance(error, PolicyDenied | VerificationError):
        return 409
    if isinstance(error, LedgerError) and error.exit_code == 1:
        return 409  # already recorded (DuplicateEvidence), or a tampered row: not an outage
    if isinstance(error, LedgerError | Unavailable):
        return 503
    if isinstance(error, ExternalError):
        return 502
    return 400


# Names, not classes: these live in modules the server must not import at start-up.
_NOT_FOUND = {"UnknownEnvironmentError"}


class NotFound(InputError):
    """No such route, token or thing (HTTP 404)."""


class BodyTooLarge(InputError):
    """A request body over its cap (HTTP 413)."""


class Unavailable(ExternalError):
    """The server cannot serve this now: not ready, or no signing key (HTTP 503)."""


def problem(
    error: ConveyorError, *, request_id: str | None, status: int | None = None
) -> ProblemResponse:
    code = status if status is not None else status_of(error)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + _slug(type(error).__name__),
        "title": _TITLES.get(code, "Error"),
        "status": code,
        "detail": str(error),
        "error": _public_class(error),
        "exit_code": error.exit_code,
        "request_id": request_id,
    }
    if isinstance(error, ConfigError) and error.problems:
        body["problems"] = [" ".join(p.split()) for p in error.problems]
    decision = getattr(error, "decision", None)
    if decision is not None:
        body["gates"] = [_gate(g) for g in getattr(decision, "gates", ())]
        body["environment"] = getattr(decision, "environment", None)
        body["decision"] = decision.to_dict()  # what `promote --output json` prints on a denial
    headers = {"WWW-Authenticate": 'Bearer realm="conveyor"'} if code == 401 else None
    return ProblemResponse(body, status_code=code, headers=headers)


def internal_problem(request_id: str | None) -> ProblemResponse:
    logging.getLogger("conveyor.server").exception(
        "internal error", extra={"fields": {"request_id": request_id}}
    )
    body = {
        "type": PROBLEM_BASE + "internal-error",
        "title": _TITLES[500],
        "status": 500,
        "detail": f"internal error (request {request_id}); the server log has the details",
        "error": "ConveyorError",
        "exit_code": 70,
        "request_id": request_id,
    }
    return ProblemResponse(body, status_code=500)


def _gate(gate: Any) -> dict[str, Any]:
    return {
        "gate": gate.gate,
        "passed": gate.passed,
        "reason": gate.reason,
        "evidence": [
            {
                "ledger_index": ref.index,
                "attestation": ref.envelope_digest,
                "signer": ref.signer,
                "recorded_at": ref.recorded_at.isoformat(),
            }
            for ref in gate.evidence
        ],
    }


# The classes a client can rebuild without importing the policy engine or the ledger.
_PUBLIC = (
    "TokenRefused",
    "NotAllowed",
    "PromotionDenied",
    "UnknownSignerError",
    "NotPromoted",
    "UnknownEnvironmentError",
    "ConfigError",
    "InvalidReferenceError",
    "DigestError",
    "DigestMismatch",
    "AuthenticationError",
    "NotFoundError",
    "RegistryError",
    "ManifestError",
    "StorageError",
    "LedgerError",
    "InputError",
    "VerificationError",
    "PolicyDenied",
    "ExternalError",
)


def _public_class(error: ConveyorError) -> str:
    for cls in type(error).__mro__:
        if cls.__name__ in _PUBLIC:
            return cls.__name__
    return "ConveyorError"


def _slug(name: str) -> str:
    out = []
    for index, char in enumerate(name):
        if char.isupper() and index:
            out.append("-")
        out.append(char.lower())
    return "".join(out)
