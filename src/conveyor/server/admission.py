"""``POST /admission/validate``: the Kubernetes validating admission webhook.

Every answer is an ``admission.k8s.io/v1`` AdmissionReview with HTTP 200, and anything that
goes wrong — a body it cannot read, the database down, a ledger entry that does not verify, a
decision slower than ``DECISION_TIMEOUT`` — is ``allowed: false`` with the reason: the webhook
fails closed. The one exception is a body over the server's report cap (50 MiB), refused with
413 before it is read; the API server's ``failurePolicy: Fail`` denies that request too.

Unauthenticated: the API server proves nothing but reaches the webhook over TLS it verifies
(``caBundle``); the answer reveals only whether a digest the caller names was promoted. The
one thing it records is a break-glass admission: a workload annotated
``conveyor.dev/break-glass: REASON`` may run a digest not promoted to its environment only
when ``promote --break-glass`` would be allowed now (a freeze is open and its break-glass
approvals are there, ``service.admit_break_glass``), and only once a statement signed by
``server.signing_key`` is in the ledger, naming the Kubernetes user of ``request.userInfo``
(as the API server states it; it is not an identity of conveyor.yaml), the namespace, the
workload, the reason and the request uid. No signing key, a failed recording, or a record
not committed ``COMMIT_MARGIN`` before the answer is due: denied. ``dryRun``: decided,
nothing recorded. The same request uid again records nothing new.

Speed: each environment's verified arrivals are cached per process with the ledger head
they were read at (``service.PromotionLog``); each request costs one cheap size query. A
promotion on any replica appends, so the size changes everywhere; one thread per environment
then folds in only the entries appended since (after checking the new head is consistent
with the cached one: a rewritten history is denied), and the others wait for it. Every
``CACHE_MAX_AGE`` seconds one thread reads the environment in full again (so that an entry
edited in place, which changes neither size nor root, fails closed within that bound) while
the others answer from the cache, which only ever holds digests verified when they were read.
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
from prometheus_client import Counter, Histogram

from conveyor.policy.admission import (
    AdmissionRefused,
    BreakGlassNeed,
    Governance,
    Promoted,
    Review,
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
    from conveyor.service import PromotionLog, Workspace

PATH = "/admission/validate"
DECISION_TIMEOUT = 5.0  # seconds; below the webhook's timeoutSeconds (examples: 10)
# A break-glass admission is committed only while this much of DECISION_TIMEOUT is left (else
# rolled back): an entry never says "admitted" of a request the timeout answered "denied".
COMMIT_MARGIN = 1.0
CACHE_MAX_AGE = 30.0  # seconds an unchanged ledger's cached digests are trusted
MAX_REVIEW_BYTES = 8 * 1024 * 1024  # an UPDATE carries object and oldObject (etcd: 1.5 MiB each)


@dataclass
class _Cached:
    log: PromotionLog  # the environment's verified arrivals as of a ledger head
    at: float  # when it was last read in full
    workspace: Workspace  # a rebuilt workspace (conveyor.yaml changed) reads in full again
    refill: threading.Lock = field(default_factory=threading.Lock)  # one re-read at a time


@dataclass
class Admission:
    """What one server process holds for admission: a cache it can rebuild, and counters."""

    state: ServerState
    decisions: Counter
    refills: Histogram | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="admission")
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _filling: dict[str, threading.Lock] = field(default_factory=dict)
    # The newest ledger head this process has verified, and of which ledger: every later
    # read must extend it, so a history rewritten behind the process's back stays refused
    # (a fresh full read alone would believe a rewrite whose hashes were all recomputed).
    _witness: tuple[object, int, bytes] | None = None

    # --- promotions: verified, through the process's one workspace ---

    def promoted(self, workspace: Workspace, environment: str, previous: int) -> Promoted:
        log = self._log(workspace, environment)
        return Promoted.from_history(
            environment,
            log.newest_first(),
            previous=previous,
            tags=workspace.config.model.environment(environment).tags,
        )

    def _log(self, workspace: Workspace, environment: str) -> PromotionLog:
        """The environment's arrivals as of the ledger's size now. One cheap query when
        nothing was appended; after an append, one thread folds in the new entries
        (``PromotionLog.extend``: consistency with the cached head, then only the
        environment's new rows) while the others wait for it; every ``CACHE_MAX_AGE`` one
        thread reads everything again while the others keep answering from the cache."""
        size = workspace.ledger.size()
        with self._lock:
            cached = self._cache.get(environment)
            filling = self._filling.setdefault(environment, threading.Lock())
        if cached is not None and cached.workspace is workspace and cached.log.size == size:
            if time.monotonic() - cached.at >= CACHE_MAX_AGE and cached.refill.acquire(False):
                try:
                    self._store(environment, self._read(workspace, environment))
                finally:
                    cached.refill.release()
            return cached.log
        with filling:  # single flight: the threads behind find the log already extended
            with self._lock:
                cached = self._cache.get(environment)
            size = workspace.ledger.size()
            if cached is not None and cached.workspace is workspace:
                if cached.log.size == size:
                    return cached.log
                began = time.perf_counter()
                try:
                    log = cached.log.extend(workspace)
                    self._witnessed(workspace, log)
                except BaseException:
                    self._drop(environment)  # fail closed: the next request reads in full
                    raise
                self._observe("incremental", began)
                with self._lock:
                    self._cache[environment] = _Cached(log, cached.at, workspace, cached.refill)
                return log
            fresh = self._read(workspace, environment)
            self._store(environment, fresh)
            return fresh.log

    def _read(self, workspace: Workspace, environment: str) -> _Cached:
        from conveyor import service

        began = time.perf_counter()
        try:
            # Every row verified and proved into the signed tree: a tampered ledger raises
            # (LedgerTampered), which ``answer`` turns into a denial.
            log = service.PromotionLog.read(workspace, environment, since=self._since(workspace))
            self._witnessed(workspace, log)
        except BaseException:
            self._drop(environment)
            raise
        self._observe("full", began)
        return _Cached(log, time.monotonic(), workspace)

    def _since(self, workspace: Workspace) -> tuple[int, bytes] | None:
        with self._lock:
            witness = self._witness
        if witness is None or witness[0] is not workspace.ledger:
            return None
        return witness[1], witness[2]

    def _witnessed(self, workspace: Workspace, log: PromotionLog) -> None:
        """Check ``log``'s head and the witness lie on one history; keep the newer."""
        from conveyor import service

        since = self._since(workspace)
        if since is not None and since != log.head:
            older, newer = (since, log.head) if since[0] <= log.size else (log.head, since)
            service.require_extends(workspace, older, newer)
        with self._lock:
            witness = self._witness
            if witness is None or witness[0] is not workspace.ledger or log.size > witness[1]:
                self._witness = (workspace.ledger, log.size, log.root)

    def _store(self, environment: str, cached: _Cached) -> None:
        with self._lock:
            held = self._cache.get(environment)
            if held is None or cached.log.size >= held.log.size:
                self._cache[environment] = cached

    def _drop(self, environment: str) -> None:
        with self._lock:
            self._cache.pop(environment, None)

    def _observe(self, kind: str, began: float) -> None:
        if self.refills is not None:
            self.refills.labels(kind).observe(time.perf_counter() - began)

    # --- one review ---

    def decide(self, document: object, deadline: float | None = None) -> Verdict:
        """The verdict on one AdmissionReview; ``deadline`` (``time.monotonic()``): the last
        moment a break-glass admission may be committed."""
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
        if verdict.break_glass is None or environment is None:
            return verdict
        return self.break_glass(
            workspace, review, environment, verdict, verdict.break_glass, deadline
        )

    def break_glass(
        self,
        workspace: Workspace,
        review: Review,
        environment: str,
        denied: Verdict,
        need: BreakGlassNeed,
        deadline: float | None,
    ) -> Verdict:
        """Lift ``denied`` only if the freeze's break-glass allows every digest and (unless
        a dry run) the signed break-glass admission is recorded (``service.admit_break_glass``)."""
        from conveyor import service

        signer = self.state.signer() if self.state.can_sign() else None
        request = service.BreakGlassRequest(
            environment=environment,
            namespace=review.namespace,
            workload=review.workload,
            reason=need.reason,
            request_uid=review.uid,
            requested_by=review.user.to_dict(),
            digests=[
                (digest, [{"name": c.name, "list": c.list_name, "image": c.image} for c in running])
                for digest, running in need.digests
            ],
        )
        admitted = service.admit_break_glass(
            request,
            workspace=workspace,
            signer=signer,
            dry_run=review.dry_run,
            deadline=deadline,
        )
        if not admitted.allowed:
            return Verdict(
                False, f"{denied.message}; {admitted.message}", denied.warnings, code=403
            )
        where = ", ".join(f"ledger #{index}" for index in admitted.recorded)
        note = "dry run: nothing recorded" if review.dry_run else f"recorded as {where}"
        warning = f"conveyor: BREAK-GLASS in {environment} ({need.reason[:80]}): {note}"
        return Verdict(
            True,
            f"break-glass by {review.user.describe()}: {admitted.message}",
            (*denied.warnings, warning),
        )

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
                loop.run_in_executor(
                    self._executor,
                    self.decide,
                    document,
                    time.monotonic() + DECISION_TIMEOUT - COMMIT_MARGIN,
                ),
                DECISION_TIMEOUT,
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
    """How the verdict names the rule; what it asks (approvals beyond the approvals gate) is
    the freeze gate's to say, when the service decides (``service.admit_break_glass``)."""
    for freeze in config.model.freezes_for(environment):
        if freeze.break_glass is not None:
            return f"{environment}'s freeze break-glass rule ({freeze.break_glass.role} approvals)"
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
        Histogram(
            "conveyor_admission_refill_seconds",
            "Re-reads of an environment's promotions: full (first, or every "
            f"{CACHE_MAX_AGE:g} s) or incremental (entries appended since).",
            ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=state.metrics.registry,
        ),
    )
    for outcome in ("allowed", "denied"):
        admission.decisions.labels(outcome)  # both series exist (at 0) from the start
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
