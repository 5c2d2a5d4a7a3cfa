"""``/api/v1``: one endpoint per CLI operation, with the CLI's inputs and its ``--json`` results.

Each handler: authenticate (``Principal``), authorise (``auth.ACTS``), call the operation in
``conveyor.service``, return its ``to_dict()``. Handlers are plain ``def``: operations block
(registry, database), so FastAPI runs them in its worker threads. The two hot reads, status
and check, instead make one hop to threads of their own (``_read``) and give an answer kept
for the ledger head they read (``ServerState.answers``), rendered once.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from conveyor import service
from conveyor.errors import InputError
from conveyor.server import schemas
from conveyor.server.auth import NotAllowed
from conveyor.server.context import (
    acting as _acting,
    allow as _allow,
    count_denials as _count_denials,
    counted_promotion,
    reading as _reading,
    state_of as _state,
)
from conveyor.server.oidc import check_commit
from conveyor.server.principal import API_TOKEN, Principal
from conveyor.server.problems import PROBLEM_JSON, NotFound, Problem
from conveyor.server.strict import StrictRoute
from conveyor.server.tokens import TokenRefused, check_bindable

if TYPE_CHECKING:
    from conveyor.server.state import ServerState

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in (
        (400, "bad input"),
        (401, "bad or missing credentials"),
        (403, "not allowed"),
        (404, "no such thing"),
        (409, "denied by a gate, or a check of evidence failed"),
        (413, "request body too large"),
        (502, "registry or storage failure"),
        (503, "database failure, or the server cannot record"),
    )
}
router = APIRouter(prefix="/api/v1", route_class=StrictRoute, responses=_ERRORS)
Json = dict[str, Any]
JSON = "application/json"
T = TypeVar("T")
Ref = Annotated[str, Field(min_length=1, max_length=2048)]
EnvName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
Text = Annotated[str, Field(max_length=4096)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- authentication ----------------------------------------------------------------------------


_bearer = HTTPBearer(
    scheme_name="token",
    description="an API token from conveyor token create",
    auto_error=False,
)


def _authenticate_other(
    state: ServerState, request: Request, token: str, request_id: str | None
) -> Principal | None:
    """The authenticators beside API tokens (issue 13): a CI job's OIDC ID token, a login
    session token (``conveyor login``), or, without a bearer token, a browser's session
    cookie. ``None``: an API token (or nothing), for the token store to judge."""
    from conveyor.server import login, oidc

    if oidc.looks_like_jwt(token):
        return oidc.authenticate(token, state.config(), oidc.CACHE, request_id=request_id)
    if login.is_session_token(token):
        return login.authenticate(state, token, request_id=request_id)
    if not token:
        return login.from_cookie(state, request, request_id)
    return None


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The identity behind ``Authorization: Bearer TOKEN`` (never a query parameter)."""
    state = _state(request)
    token = credentials.credentials if credentials is not None else ""
    request_id = request.scope.get("state", {}).get("request_id")
    other = _authenticate_other(state, request, token.strip(), request_id)  # OIDC, login
    if other is not None:
        request.scope["state"]["principal"] = other
        return other
    if not token.strip():
        raise TokenRefused(
            "bad or missing credentials: send 'Authorization: Bearer TOKEN' "
            "(conveyor token create NAME --identity IDENTITY)"
        )
    info = state.tokens().authenticate(token.strip())
    config = state.config()
    identity = config.identities.get(info.identity)
    if identity is None:
        raise TokenRefused(
            f"bad or missing credentials: token {info.name!r} is bound to {info.identity!r}, "
            f"which {config.path.name} no longer defines"
        )
    roles = frozenset(str(role) for role in identity.roles)
    if "server" in roles:
        raise TokenRefused("bad or missing credentials: a token cannot act as the server")
    request_id = request.scope.get("state", {}).get("request_id")
    who = Principal(identity.name, roles, API_TOKEN, info.name, request_id)
    request.scope["state"]["principal"] = who
    return who


Who = Annotated[Principal, Depends(principal)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _in_readers(request: Request, work: Callable[[], T]) -> T:
    """``work()`` in one of the read endpoints' own few threads (``ServerState.readers``)."""
    import asyncio

    readers = _state(request).readers()
    return await asyncio.get_running_loop().run_in_executor(readers, work)


async def _read(
    request: Request, credentials: HTTPAuthorizationCredentials | None, answer: Any
) -> Response:
    """A read endpoint's whole work, authentication included, in one hop to a reader thread;
    ``answer(who)`` gives the JSON."""

    def work() -> bytes:
        rendered: bytes = answer(principal(request, credentials))
        return rendered

    return Response(await _in_readers(request, work), media_type=JSON)


def _rendered(model: type[BaseModel], answer: Json) -> bytes:
    """``answer`` checked against its schema and rendered, as FastAPI's ``response_model``
    would: computed once, then the bytes are what a kept answer gives again."""
    return model.model_validate(answer).model_dump_json(by_alias=True).encode()


# --- who am I ----------------------------------------------------------------------------------


@router.get(
    "/whoami", response_model=schemas.WhoAmI, summary="The authenticated principal and its roles"
)
def whoami(who: Who) -> Json:
    return who.to_dict()


# --- images ------------------------------------------------------------------------------------


@router.get(
    "/resolve",
    response_model=schemas.Resolved,
    summary="Resolve a reference to its digest (conveyor resolve)",
)
def resolve(
    request: Request, who: Who, ref: Annotated[str, Query(min_length=1, max_length=2048)]
) -> Json:
    _allow(request, who, "read")
    resolved = service.resolve(ref, options=_state(request).registry_options())
    return {
        "reference": str(resolved),
        "name": resolved.name,
        "digest": str(resolved.digest),
        "media_type": resolved.media_type,
    }


@router.get(
    "/inspect",
    response_model=schemas.Inspection,
    summary="Digest, platforms, labels of an image (conveyor inspect)",
)
def inspect(
    request: Request, who: Who, ref: Annotated[str, Query(min_length=1, max_length=2048)]
) -> Json:
    _allow(request, who, "read")
    return service.inspect(ref, options=_state(request).registry_options()).to_dict()


# --- recording evidence ------------------------------------------------------------------------


class BuildRequest(_Body):
    reference: Ref
    commit: Annotated[str, Field(min_length=7, max_length=64)]
    run_id: Text | None = None
    run_url: Text | None = None
    builder_id: Text | None = None


@router.post(
    "/builds",
    response_model=schemas.Recorded,
    summary="Record a build: SLSA provenance (conveyor record build)",
)
def record_build(request: Request, who: Who, body: BuildRequest) -> Json:
    _allow(request, who, "record_build")
    check_commit(who, body.commit)  # a CI token's sha claim must be this commit
    result = service.record_build(
        body.reference,
        commit=body.commit,
        run_id=body.run_id,
        run_url=body.run_url,
        builder_id=body.builder_id,
        **_acting(request, who),
    )
    return result.to_dict()


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _uploaded(uploads: list[UploadFile], default: str) -> list[tuple[str, bytes]]:
    """Each upload as (its base name, its bytes): the name is what the statement records of
    the file (the body cap at the edge bounds the bytes)."""
    files = []
    for upload in uploads:
        base = _SAFE_NAME.sub("_", Path(upload.filename or "").name)[:100].lstrip(".")
        files.append((base or default, upload.file.read()))
    return files


@router.post(
    "/tests",
    response_model=schemas.Recorded,
    summary="Attest test results from JUnit XML (conveyor attest tests)",
)
def attest_tests(
    request: Request,
    who: Who,
    reference: Annotated[str, Form(min_length=1, max_length=2048)],
    files: Annotated[list[UploadFile], File(description="JUnit XML reports")],
    url: Annotated[str | None, Form(max_length=4096)] = None,
) -> Json:
    _allow(request, who, "attest_tests")
    if not files:
        raise InputError("name at least one JUnit XML file")
    uploaded = _uploaded(files, "junit.xml")
    result = service.attest_tests(reference, uploaded, url=url, **_acting(request, who))
    return result.to_dict()


@router.post(
    "/scans",
    response_model=schemas.Recorded,
    summary="Attest a vulnerability scan report (conveyor attest scan)",
)
def attest_scan(
    request: Request,
    who: Who,
    reference: Annotated[str, Form(min_length=1, max_length=2048)],
    file: Annotated[UploadFile, File(description="Trivy, Grype, SARIF or Snyk JSON")],
) -> Json:
    _allow(request, who, "attest_scan")
    (uploaded,) = _uploaded([file], "scan.json")
    result = service.attest_scan(reference, uploaded, **_acting(request, who))
    return result.to_dict()


class SmokeRequest(_Body):
    reference: Ref
    environment: EnvName
    passed: bool
    url: Text | None = None


@router.post(
    "/smoke",
    response_model=schemas.Recorded,
    summary="Attest a smoke test in an environment (conveyor attest smoke)",
)
def attest_smoke(request: Request, who: Who, body: SmokeRequest) -> Json:
    _allow(request, who, "attest_smoke", body.environment)
    result = service.attest_smoke(
        body.reference,
        environment=body.environment,
        passed=body.passed,
        url=body.url,
        **_acting(request, who),
    )
    return result.to_dict()


class ApprovalRequest(_Body):
    reference: Ref
    environment: EnvName
    comment: Text | None = None


@router.post(
    "/approvals",
    response_model=schemas.Recorded,
    summary="Approve a digest for an environment (conveyor approve)",
)
def approve(request: Request, who: Who, body: ApprovalRequest) -> Json:
    _allow(request, who, "approve", body.environment)
    result = service.approve(
        body.reference,
        environment=body.environment,
        comment=body.comment,
        **_acting(request, who),
    )
    return result.to_dict()


class EnvelopeRequest(_Body):
    reference: Ref
    envelope: Annotated[str, Field(min_length=1, max_length=1_000_000)] = Field(
        description="the DSSE envelope's exact bytes, base64"
    )


_KIND_ACTS = {
    "build": "record_build",
    "tests": "attest_tests",
    "scan": "attest_scan",
    "smoke": "attest_smoke",
    "approval": "approve",
}


@router.post(
    "/envelopes",
    response_model=schemas.Recorded,
    summary="Record a pre-signed DSSE envelope (an identity's own key)",
    description="Verified against the keys in conveyor.yaml as the CLI verifies its own "
    "records; the signer must be the token's identity.",
)
def record_envelope(request: Request, who: Who, body: EnvelopeRequest) -> Json:
    import base64
    import binascii

    try:
        raw = base64.b64decode(body.envelope, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError("envelope: not base64") from error
    workspace = _state(request).workspace()
    opened = service.open_envelope(raw, workspace=workspace)
    _allow(request, who, _KIND_ACTS[opened.kind.value], opened.environment)
    if opened.signer != who.identity:
        raise NotAllowed(
            f"not allowed: the envelope is signed by {opened.signer}; a token of "
            f"{who.identity} submits only {who.identity}'s own statements"
        )
    result = service.record_envelope(body.reference, raw, workspace=workspace)
    out: Json = result.to_dict()
    return out


# --- check, promote, rollback ------------------------------------------------------------------


class CheckRequest(_Body):
    reference: Ref
    environment: EnvName
    break_glass: Text | None = None


@router.post(
    "/check",
    response_model=schemas.Checked,
    summary="Evaluate an environment's gates for a digest; changes nothing (conveyor check)",
    description="200 whatever the gates say: `allowed` tells (the CLI exits 1 when false). "
    "The principal is the promoter, so `distinct_from: [promoter]` counts as in a promotion.",
)
async def check(request: Request, credentials: Credentials, body: CheckRequest) -> Response:
    def answer(who: Principal) -> bytes:
        _allow(request, who, "read")
        state = _state(request)
        state.config().model.environment(body.environment)
        # The principal is the promoter; with the server's key it is checked like a signer.
        signer = state.signer() if state.can_sign() else None
        workspace = state.workspace()

        def compute() -> tuple[bytes, tuple[str, ...]]:
            result = service.check(
                body.reference,
                environment=body.environment,
                break_glass=body.break_glass,
                workspace=workspace,
                signer=signer,
                principal=who.acting(),
            )
            failed = tuple(gate.gate for gate in result.decision.failed)
            return _rendered(schemas.Checked, result.to_dict()), failed

        # What the answer depends on besides the ledger, the clock and the registry: the
        # request and who asks (the promoter of distinct_from), in this config.
        key = (
            "check", body.reference, body.environment, body.break_glass, who.identity,
            who.roles, signer.keyid if signer is not None else None,
        )  # fmt: skip
        rendered, failed = state.answers(workspace).get(key, workspace.ledger.head(), compute)
        _count_denials(request, failed)  # each check counts, a kept answer too
        return rendered

    return await _read(request, credentials, answer)


# Reads that authenticate inside the endpoint (one thread hop), after FastAPI has judged the
# body: a body it refuses must not tell an unauthenticated caller more than 401 would.
_AUTHENTICATED_INSIDE = (check,)


async def judge_credentials(request: Request) -> None:
    """Raise the refusal (401, 403) the credentials of a refused body's request earn, for
    the reads that authenticate inside the endpoint; the others' did so before the body."""
    if getattr(request.scope.get("route"), "endpoint", None) not in _AUTHENTICATED_INSIDE:
        return
    credentials = await _bearer(request)
    await _in_readers(request, lambda: principal(request, credentials))


class PromoteRequest(_Body):
    reference: Ref
    environment: EnvName
    break_glass: Text | None = None


def _promotion(request: Request, environment: str, run: Any) -> Json:
    out: Json = counted_promotion(request, environment, run).to_dict()
    return out


@router.post(
    "/promotions",
    response_model=schemas.Promotion,
    summary="Promote a digest into an environment (conveyor promote)",
    description="409 with every gate's decision when a gate says no.",
)
def promote(request: Request, who: Who, body: PromoteRequest) -> Json:
    _allow(request, who, "promote", body.environment)

    def run() -> Any:
        return service.promote(
            body.reference,
            environment=body.environment,
            break_glass=body.break_glass,
            **_acting(request, who),
        )

    return _promotion(request, body.environment, run)


class RollbackRequest(_Body):
    environment: EnvName
    to: Ref | None = None


@router.post(
    "/rollbacks",
    response_model=schemas.Promotion,
    summary="Put back an earlier digest of ENV (conveyor rollback)",
)
def rollback(request: Request, who: Who, body: RollbackRequest) -> Json:
    _allow(request, who, "rollback", body.environment)

    def run() -> Any:
        return service.rollback(body.environment, to=body.to, **_acting(request, who))

    return _promotion(request, body.environment, run)


# --- views -------------------------------------------------------------------------------------


@router.get(
    "/status",
    response_model=schemas.Status,
    summary="Each environment: what runs now, the candidate and its gates",
)
async def status(request: Request, credentials: Credentials) -> Response:
    def answer(who: Principal) -> bytes:
        _allow(request, who, "read")
        state = _state(request)
        workspace = state.workspace()

        def compute() -> bytes:
            environments = [item.to_dict() for item in service.status(workspace=workspace)]
            return _rendered(schemas.Status, {"environments": environments})

        return state.answers(workspace).get(("status",), workspace.ledger.head(), compute)

    return await _read(request, credentials, answer)


@router.get(
    "/environments/{environment}/history",
    response_model=schemas.History,
    summary="Every digest an environment ran, newest first (conveyor history)",
)
def history(request: Request, who: Who, environment: str) -> Json:
    _allow(request, who, "read")
    _state(request).config().model.environment(environment)
    items = service.history(environment, **_reading(request))
    return {"environment": environment, "history": [item.to_dict() for item in items]}


@router.get(
    "/environments/{environment}/promoted-digests",
    response_model=schemas.PromotedDigests,
    summary="Digests promoted to an environment (for pin --env and lint --env)",
    description="`repositories`: the digest that arrived last for each repository (what "
    "`pin --env` pins to); `ignored`: unverifiable entries the reader left out.",
)
def promoted_digests(request: Request, who: Who, environment: str) -> Json:
    _allow(request, who, "read")
    _state(request).config().model.environment(environment)
    digests = service.promoted_digests(environment, **_reading(request))
    items = service.history(environment, **_reading(request))
    pins = service.promoted_repositories(environment, **_reading(request))
    return {
        "environment": environment,
        "digests": sorted(digests),
        "history": [item.to_dict() for item in items],
        "repositories": pins.repositories,
        "ignored": pins.ignored,
    }


@router.get(
    "/trace",
    response_model=schemas.Trace,
    summary="The chain of custody of a digest or a commit (conveyor trace)",
)
def trace(
    request: Request, who: Who, query: Annotated[str, Query(min_length=1, max_length=2048)]
) -> Json:
    _allow(request, who, "read")
    result: Json = service.trace(query, **_reading(request)).to_dict()
    return result


@router.get(
    "/attestations",
    response_model=schemas.Attestations,
    summary="Attestations attached to a digest (conveyor attestations)",
)
def attestations(
    request: Request, who: Who, ref: Annotated[str, Query(min_length=1, max_length=2048)]
) -> Json:
    _allow(request, who, "read")
    result: Json = service.list_attestations(ref, **_reading(request)).to_dict()
    return result


# --- audit -------------------------------------------------------------------------------------


class VerifyRequest(_Body):
    checkpoint: Annotated[str, Field(max_length=65536)] | None = Field(
        default=None, description="a checkpoint kept elsewhere (its text)"
    )
    full: bool = Field(
        default=False, description="re-verify every entry, even those the checkpoint covers"
    )


@router.post(
    "/audit/verify",
    response_model=schemas.AuditReport,
    summary="Recompute every hash and signature (conveyor audit verify)",
)
def audit_verify(request: Request, who: Who, body: VerifyRequest) -> Json:
    _allow(request, who, "read")
    if body.checkpoint is None:
        report = service.audit_verify(full=body.full, **_reading(request))
    else:
        with tempfile.TemporaryDirectory(prefix="conveyor-checkpoint-") as folder:
            path = Path(folder) / "checkpoint"
            path.write_text(body.checkpoint, encoding="utf-8")
            report = service.audit_verify(checkpoint=path, full=body.full, **_reading(request))
    return {
        "ok": report.ok,
        "size": report.size,
        "root": report.root.hex(),
        "first_bad_index": report.first_bad_index,
        "problems": list(report.problems),
        "checked_signatures": report.checked_signatures,
        "incremental": report.incremental,
        "checked_from": report.checked_from,
        "replays": list(report.replays),
    }


@router.post(
    "/audit/checkpoints",
    response_model=schemas.SignedCheckpoint,
    summary="Sign a checkpoint (conveyor audit checkpoint)",
)
def audit_checkpoint(request: Request, who: Who) -> Json:
    _allow(request, who, "audit_checkpoint")
    checkpoint = service.audit_checkpoint(**_reading(request))
    return {
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": checkpoint.root.hex(),
        "time": checkpoint.time,
        "keyid": checkpoint.keyid,
        "text": checkpoint.to_text(),
    }


# --- tokens and configuration (admin) ----------------------------------------------------------


class TokenRequest(_Body):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    identity: Annotated[str, Field(min_length=1, max_length=63)]
    expires: Annotated[str, Field(min_length=1, max_length=32)] | None = Field(
        default=None, description="a duration (30d, 12h, P7D); default 30d, at most 366d"
    )


@router.get(
    "/tokens",
    response_model=schemas.Tokens,
    summary="API tokens: names, identities, states (conveyor token list)",
)
def list_tokens(request: Request, who: Who) -> Json:
    _allow(request, who, "tokens")
    return {"tokens": [info.to_dict() for info in _state(request).tokens().list()]}


@router.post(
    "/tokens",
    response_model=schemas.CreatedToken,
    summary="Create an API token for an identity (conveyor token create)",
    description="The token is in the answer once; only its hash is stored.",
)
def create_token(request: Request, who: Who, body: TokenRequest) -> Json:
    from conveyor.server.tokens import parse_lifetime

    _allow(request, who, "tokens")
    state = _state(request)
    check_bindable(state.config(), body.identity)
    created = state.tokens().create(
        body.name,
        identity=body.identity,
        lifetime=parse_lifetime(body.expires),
        created_by=f"{who.identity} (API token {who.credential})",
    )
    return {"token": created.token, **created.info.to_dict()}


@router.delete(
    "/tokens/{name}",
    response_model=schemas.TokenInfo,
    summary="Revoke an API token (conveyor token revoke)",
)
def revoke_token(request: Request, who: Who, name: str) -> Json:
    _allow(request, who, "tokens")
    try:
        info = _state(request).tokens().revoke(name)
    except InputError as error:
        if "no token named" in str(error):
            raise NotFound(str(error)) from error
        raise
    return info.to_dict()


@router.post(
    "/admin/reload",
    response_model=schemas.Reloaded,
    summary="Re-read conveyor.yaml now (it is also re-read on change)",
)
def reload(request: Request, who: Who) -> Json:
    _allow(request, who, "reload")
    config = _state(request).config(force=True)
    return {"config": str(config.path), "identities": sorted(config.identities)}
