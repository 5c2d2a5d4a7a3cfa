"""What the admission webhook asks of the ledger: break-glass admissions, decided by the
rule ``promote --break-glass`` uses and recorded through the one recording path.

A workload may run a digest that was not promoted to its namespace's environment only when
``conveyor promote DIGEST --to ENV --break-glass REASON`` would be allowed right now: a
freeze window is open, the environment's freeze ``break_glass`` approvals are there, and
every other gate passes (``_decide.decide`` with ``break_glass=REASON``; not written twice).
Outside a freeze there is nothing to break: the digest is to be promoted.

Each digest so admitted gets one signed statement (``BREAK_GLASS_ADMISSION_V1``), signed by
the server's key as itself (the role ``server``, ``policy.roles``); the Kubernetes user of
the request is named in it as the API server stated it, never as an identity of
conveyor.yaml. Nothing counts it as an approval or a promotion (``_evidence`` reads it into
nothing; history, status and the admission window read promotions only).

A request uid is admitted once: the same request again (the API server retries with the same
uid) finds its entry and records nothing new; the same uid with other content is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ExternalError, PolicyDenied
from conveyor.policy.roles import EvidenceKind
from conveyor.service._decide import decide
from conveyor.service._evidence import VerifiedEntry, VerifiedLedger
from conveyor.service._signing import Signed, record_statement
from conveyor.service._subject import Subject, resolve_subject
from conveyor.service._workspace import Workspace

if TYPE_CHECKING:
    from conveyor.attest import Signer
    from conveyor.policy.model import GateResult


class BreakGlassReplayed(PolicyDenied):
    """A request uid already admitted by break-glass, now with other content."""


class BreakGlassTooLate(ExternalError):
    """The recording would have ended after the caller's deadline: rolled back, so that no
    entry says "admitted" of a request the API server saw denied."""


@dataclass(frozen=True)
class BreakGlassRequest:
    """One AdmissionReview's break-glass, as the webhook read it."""

    environment: str
    namespace: str
    workload: Mapping[str, str]  # kind, name, operation
    reason: str
    request_uid: str
    requested_by: Mapping[str, Any]  # request.userInfo (a Kubernetes user)
    digests: Sequence[tuple[str, Sequence[Mapping[str, str]]]]  # digest -> containers


@dataclass(frozen=True)
class BreakGlassAdmission:
    """The answer: allowed only when every digest passed and (unless a dry run) each has its
    recorded entry; ``reasons`` says why, one line a digest."""

    allowed: bool
    reasons: tuple[str, ...]
    recorded: tuple[int, ...] = ()  # ledger indexes of the entries (new or already held)
    already: tuple[int, ...] = ()  # of those, the ones an earlier identical request recorded

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def admit_break_glass(
    request: BreakGlassRequest,
    *,
    workspace: Workspace,
    signer: Signer | None,
    dry_run: bool = False,
    now: datetime | None = None,
    deadline: float | None = None,
) -> BreakGlassAdmission:
    """Decide each digest of ``request`` as a break-glass promotion into its environment
    would be decided; if all pass, record one entry per digest (``dry_run``: none). Any
    failure to record raises (the webhook then denies). ``deadline``: a ``time.monotonic()``
    after which the recording is rolled back rather than committed (``BreakGlassTooLate``)."""
    environment = request.environment
    if signer is None:
        return BreakGlassAdmission(
            False,
            (
                f"break-glass refused: {workspace.config.path.name} sets no server.signing_key, "
                "so no signed break-glass admission can be recorded",
            ),
        )
    workspace.require_role(signer.keyid, EvidenceKind.BREAK_GLASS, environment)
    now = now or datetime.now(UTC)
    verified = VerifiedLedger(workspace, now=now)
    allowed = True
    reasons: list[str] = []
    decided: list[tuple[Subject, Sequence[Mapping[str, str]], tuple[GateResult, ...]]] = []
    for digest, containers in request.digests:
        subject = _built_subject(workspace, verified, digest)
        if subject is None:
            allowed = False
            reasons.append(f"break-glass refused for {digest}: conveyor has no build record of it")
            continue
        decision = decide(
            workspace,
            verified,
            subject,
            environment=environment,
            promoter=None,
            break_glass=request.reason,
            now=now,
        )
        freeze = next((g for g in decision.gates if g.gate == "freeze"), None)
        if freeze is None or not freeze.frozen:
            allowed = False
            reasons.append(
                f"break-glass refused for {digest}: {environment} is not frozen, so there is "
                f"no freeze to break; promote the digest to {environment}"
            )
        elif not decision.allowed:
            allowed = False
            failed = "; ".join(f"{g.gate}: {g.reason}" for g in decision.failed)
            reasons.append(f"break-glass refused for {digest}: {failed}")
        else:
            reasons.append(f"break-glass admits {digest}: {freeze.reason}")
            decided.append((subject, containers, decision.gates))
    if not allowed or dry_run:
        return BreakGlassAdmission(allowed, tuple(reasons))
    recorded: list[int] = []
    already: list[int] = []
    # One transaction for every digest of the request, and one writer per environment at a
    # time: two replicas given the same request record it once.
    with workspace.ledger.serialized(f"break-glass/{environment}"):
        for subject, containers, gates in decided:
            predicate = _predicate(request, containers, gates, now)
            held = _held(verified, subject, request)
            if held is not None:
                if not _same(held.predicate, predicate):
                    raise BreakGlassReplayed(
                        f"request uid {request.request_uid} was admitted by break-glass as "
                        f"ledger #{held.entry.index} with other content; refusing a replayed uid"
                    )
                recorded.append(held.entry.index)
                already.append(held.entry.index)
                continue
            signed = _record(workspace, subject, predicate, signer, environment)
            recorded.append(signed.entry.index)
        if deadline is not None and time.monotonic() > deadline:
            raise BreakGlassTooLate(
                "the break-glass admission could not be recorded in time; nothing was recorded"
            )
    notes = [f"recorded as ledger #{i}" for i in recorded if i not in already]
    notes += [f"already recorded as ledger #{i}: nothing new was appended" for i in already]
    return BreakGlassAdmission(True, (*reasons, *notes), tuple(recorded), tuple(already))


def _built_subject(workspace: Workspace, verified: VerifiedLedger, digest: str) -> Subject | None:
    """The digest where conveyor knows it: the repository of its newest verified build."""
    builds = verified.entries(subject_digest=digest, kind=EvidenceKind.BUILD)
    if not builds:
        return None
    name = builds[-1].entry.subject_name
    return resolve_subject(f"{name}@{digest}", workspace.opener, inspect=True)


def _predicate(
    request: BreakGlassRequest,
    containers: Sequence[Mapping[str, str]],
    gates: Sequence[GateResult],
    now: datetime,
) -> dict[str, Any]:
    from conveyor.attest import GateRecord, break_glass_admission

    return break_glass_admission(
        environment=request.environment,
        namespace=request.namespace,
        workload=request.workload,
        containers=containers,
        reason=request.reason,
        request_uid=request.request_uid,
        requested_by=request.requested_by,
        gates=[
            GateRecord(g.gate, g.passed, g.reason, [r.envelope_digest for r in g.evidence])
            for g in gates
        ],
        at=now,
    )


# What must agree for a request to be "the same request again" (not the time, not the gates'
# wording: they are re-decided each time).
_SAME = ("environment", "namespace", "workload", "containers", "reason", "requestUid",
         "requestedBy")  # fmt: skip


def _same(held: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return all(held.get(key) == new.get(key) for key in _SAME)


def _held(
    verified: VerifiedLedger, subject: Subject, request: BreakGlassRequest
) -> VerifiedEntry | None:
    """The verified break-glass entry of this digest recorded for this request uid, if any."""
    for item in verified.entries(subject_digest=str(subject.digest), kind=EvidenceKind.BREAK_GLASS):
        if item.predicate.get("requestUid") == request.request_uid:
            return item
    return None


def _record(
    workspace: Workspace,
    subject: Subject,
    predicate: Mapping[str, Any],
    signer: Signer,
    environment: str,
) -> Signed:
    from conveyor.attest import BREAK_GLASS_ADMISSION_V1

    return record_statement(
        workspace,
        subject,
        kind=EvidenceKind.BREAK_GLASS,
        predicate_type=BREAK_GLASS_ADMISSION_V1,
        predicate=predicate,
        signer=signer,
        environment=environment,
    )


# --- the promotions the webhook admits, kept up to date entry by entry --------------------


@dataclass(frozen=True)
class PromotionLog:
    """Every verified arrival in one environment, oldest first, as of the ledger's head
    (``size``, ``root``). ``extend`` folds in only what was appended since, after checking
    that the new head extends this one (a rewritten history raises ``LedgerTampered``), so
    keeping it current costs the environment's new entries, not the ledger's size."""

    environment: str
    size: int
    root: bytes
    arrivals: tuple[str, ...]  # digests, oldest first

    @property
    def head(self) -> tuple[int, bytes]:
        return self.size, self.root

    @classmethod
    def read(
        cls, workspace: Workspace, environment: str, *, since: tuple[int, bytes] | None = None
    ) -> PromotionLog:
        """A full read: every arrival through the verified reader, proved into the head.
        ``since``: a head (size, root) read before, which this one must extend."""
        workspace.config.require_environment(environment)
        verified = VerifiedLedger(workspace)
        size, root = verified.head()
        if since is not None:
            require_extends(workspace, since, (size, root))
        items = [item for item in verified.promotions(environment) if item.index < size]
        return cls(environment, size, root, tuple(item.digest for item in items))

    def extend(self, workspace: Workspace) -> PromotionLog:
        """This log with the arrivals appended since ``size``."""
        from conveyor.policy.roles import PROMOTION_KINDS

        ledger = workspace.ledger
        verified = VerifiedLedger(workspace)
        size, root = verified.head()
        require_extends(workspace, self.head, (size, root))
        if size == self.size:
            return self
        rows = sorted(
            (
                entry
                for kind in PROMOTION_KINDS
                for entry in ledger.entries(
                    kind=kind.value, environment=self.environment, start=self.size
                )
                if entry.index < size
            ),
            key=lambda entry: entry.index,
        )
        verified.prove(rows)  # against exactly the head just checked
        arrivals = list(self.arrivals)
        for entry in rows:
            item = verified.verify(entry)
            if item is None or verified.replay_of(item) is not None:
                continue
            arrival = verified.arrival(item, self.environment)
            if arrival is not None:
                arrivals.append(arrival.digest)
        return PromotionLog(self.environment, size, root, tuple(arrivals))

    def newest_first(self) -> list[str]:
        return list(reversed(self.arrivals))


def require_extends(workspace: Workspace, old: tuple[int, bytes], new: tuple[int, bytes]) -> None:
    """``LedgerTampered`` unless the tree ``new`` (size, root) extends the tree ``old``: an
    append-only ledger only grows, and never changes what it held."""
    from conveyor.ledger import LedgerTampered
    from conveyor.ledger.store import head_extends

    if not head_extends(workspace.ledger, old, new):
        raise LedgerTampered(
            f"the ledger's head (size {new[0]}) does not extend the head it had (size "
            f"{old[0]}): its history was rewritten outside conveyor; run `conveyor audit "
            "verify`",
            indexes=[],
        )
