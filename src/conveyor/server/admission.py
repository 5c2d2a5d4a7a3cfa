"""``POST /admission/validate``: the Kubernetes validating admission webhook.

Every answer is an ``admission.k8s.io/v1`` AdmissionReview with HTTP 200, and anything that
goes wrong — a body it cannot read, the database down, a ledger entry that does not verify, a
decision slower than ``DECISION_TIMEOUT`` — is ``allowed: false`` with the reason: the webhook
fails closed. The one exception is a body over the server's report cap (50 MiB), refused with
413 before it is read; the API server's ``failurePolicy: Fail`` denies that request too.

Unauthenticated and read-only: the API server proves nothing but reaches the webhook over TLS
it verifies (``caBundle``); the answer reveals only whether a digest the caller names was
promoted. Nothing is recorded (so ``dryRun`` needs no special case); a break-glass that the
environment's freeze would allow is still denied until a signed break-glass admission entry
can be recorded.

Speed: the promoted digests of an environment are cached per process, keyed by the ledger's
size (one cheap query per request): a promotion on any replica appends an entry, so every
replica refills. A refill also happens after ``CACHE_MAX_AGE`` seconds, so that an entry
edited in place (which does not change the size) stops counting within that bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from conveyor.policy.admission import (
    AdmissionRefused,
    Governance,
    Promoted,
    Verdict,
    decide,
    read_review,
    refusal,
    review_response,
    review_uid,
)
from conveyor.server.observe import LOGGER, log

if TYPE_CHECKING:
    from conveyor.policy.config import Config
    from conveyor.server.state import ServerState
    from conveyor.service import Workspace

PATH = "/admission/validate"
DECISION_TIMEOUT = 5.0  # seconds; below the webhook's timeoutSeconds (examples: 10)
CACHE_MAX_AGE = 30.0  # seconds an unchanged ledger's cached digests are trusted
MAX_REVIEW_BYTES = 8 * 1024 * 1024  # an UPDATE carries object and oldObject (etcd: 1.5 MiB each)


@dataclass
class _Cached:
    size: int
    at: float
    promoted: Promoted
    workspace: Workspace  # a rebuilt workspace (conveyor.yaml changed) refills


@dataclass
class Admission:
    """What one server process holds for admission: a cache it can rebuild, and counters."""

    state: ServerState
    decisions: Counter
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="admission")
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[tuple[str, int], _Cached] = field(default_factory=dict)

    # --- promotions: verified, through the process's one workspace ---

    def promoted(self, workspace: Workspace, environment: str, previous: int) -> Promoted:
        from conveyor import service

        size = workspace.ledger.size()
        key = (environment, previous)
        with self._lock:
            cached = self._cache.get(key)
        now = time.monotonic()
        if (
            cached is not None
            and cached.workspace is workspace
            and cached.size == size
            and now - cached.at < CACHE_MAX_AGE
        ):
            return cached.promoted
        # Newest first, every row verified and proved into the signed tree: a tampered ledger
        # raises (LedgerTampered), which ``answer`` turns into a denial.
        items = service.history(environment, workspace=workspace)
        promoted = Promoted.from_history(
            environment,
            [item.digest for item in items],
            previous=previous,
            tags=workspace.config.model.environment(environment).tags,
        )
        with self._lock:
            self._cache[key] = _Cached(size, now, promoted, workspace)
        return promoted

    # --- one review ---

    def decide(self, document: object) -> Verdict:
        review = read_review(document)
        workspace = self.state.workspace()  # rebuilt (new keys, new config) when the file changes
        config = workspace.config
        spec = config.model.admission
        if spec is None:
            return refusal(f"{config.path.name} has no 'admission:' section")
        governance = Governance(
            spec.namespaces, frozenset(spec.exempt_namespaces), spec.default, spec.previous
        )
        environment = governance.environment_of(review.namespace)
        promoted = (
            self.promoted(workspace, environment, spec.previous)
            if environment is not None and review.namespace not in governance.exempt
            else None
        )
        rule = _break_glass_rule(config, environment) if environment else None
        verdict = decide(review, governance, promoted, break_glass_rule=rule)
        if verdict.break_glass is not None:
            # Allowed by the freeze's rule, but an admission nobody can audit is not: until a
            # signed break-glass admission entry can be recorded, deny and say why.
            return Verdict(
                False,
                f"break-glass ({review.break_glass}) fits {verdict.break_glass}, but conveyor "
                "cannot yet record a signed break-glass admission, so it denies; promote the "
                "digest with 'conveyor promote --break-glass' instead",
                verdict.warnings,
                code=403,
            )
        return verdict

    async def answer(self, request: Request) -> JSONResponse:
        uid = ""
        try:
            body = await request.body()
            if len(body) > MAX_REVIEW_BYTES:
                raise AdmissionRefused(f"the AdmissionReview is over {MAX_REVIEW_BYTES} bytes")
            document = _loads(body)
            uid = review_uid(document)
            loop = asyncio.get_running_loop()
            verdict = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self.decide, document), DECISION_TIMEOUT
            )
        except AdmissionRefused as error:
            verdict = refusal(str(error))
        except TimeoutError:
            verdict = refusal(f"no decision within {DECISION_TIMEOUT:g} s (is the database slow?)")
        except Exception as error:  # fail closed: whatever broke, the answer is a denial
            verdict = refusal(_describe(error))
        outcome = "allowed" if verdict.allowed else "denied"
        self.decisions.labels(outcome).inc()
        log(
            LOGGER,
            "admission",
            request_id=request.scope.get("state", {}).get("request_id"),
            uid=uid,
            allowed=verdict.allowed,
            reason=verdict.message[:500],
        )
        return JSONResponse(review_response(uid, verdict))


def _loads(body: bytes) -> object:
    from conveyor.server.strict import StrictJsonError, strict_loads

    try:
        return strict_loads(body)
    except StrictJsonError as error:
        raise AdmissionRefused(str(error.detail)) from error


def _describe(error: Exception) -> str:
    from conveyor.errors import ConveyorError

    if isinstance(error, ConveyorError):
        return str(error).splitlines()[0][:500]
    return f"internal error ({type(error).__name__})"  # the type only: a message may hold data


def _break_glass_rule(config: Config, environment: str) -> str | None:
    for freeze in config.model.freezes_for(environment):
        if freeze.break_glass is not None:
            rule = freeze.break_glass
            return f"{environment}'s freeze break-glass ({rule.approvals} {rule.role} approvals)"
    return None


def install(app: FastAPI) -> None:
    """Adds ``POST /admission/validate`` to ``app`` (a ``create_app`` application)."""
    state: ServerState = app.state.conveyor
    admission = Admission(
        state,
        Counter(
            "conveyor_admission_decisions_total",
            "Admission reviews answered, by outcome (allowed, denied).",
            ["outcome"],
            registry=state.metrics.registry,
        ),
    )
    app.state.admission = admission

    async def validate(request: Request) -> JSONResponse:
        return await admission.answer(request)

    app.add_api_route(
        PATH,
        validate,
        methods=["POST"],
        response_model=None,
        include_in_schema=False,  # Kubernetes' AdmissionReview protocol, not the REST API
    )


__all__ = ["CACHE_MAX_AGE", "DECISION_TIMEOUT", "PATH", "Admission", "install"]
