"""What each page shows, assembled from ``conveyor.service`` (and the drift snapshots of
``server.drift``). Nothing here decides: gate decisions come from ``service.check`` and the
status's candidate check, history from the verified reader. Facts are read from the verified
statements (``conveyor.attest`` readers), the same ones ``trace`` summarises."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor import service
from conveyor.errors import ConveyorError, InputError
from conveyor.oci.digest import Digest
from conveyor.server.context import state_of
from conveyor.server.principal import Principal
from conveyor.server.problems import NotFound

if TYPE_CHECKING:
    from fastapi import Request

HEX = frozenset("0123456789abcdefABCDEF")


def parse_digest(text: str) -> Digest:
    """A digest from a URL; anything else is a one-line 400."""
    if len(text) > 200:
        raise InputError("malformed digest: too long (expected 'sha256:<64 hex>')")
    return Digest.parse(text)


def parse_commit(text: str) -> str:
    if not 7 <= len(text) <= 64 or not set(text) <= HEX:
        raise InputError(f"{text[:70]!r} is not a commit: expected 7 to 64 hex digits")
    return text.lower()


def drift_of(request: Request, environment: str) -> dict[str, Any] | None:
    """The last drift snapshot of ``environment`` (issue 15), or None."""
    try:
        return state_of(request).drift_store().get(environment)
    except ConveyorError:
        return None  # no snapshot table (an older database): the board still renders


# --- the board ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    gate: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class Column:
    """One environment on the board."""

    status: service.EnvironmentStatus
    run_id: str | None = None
    run_url: str | None = None
    gates: tuple[Gate, ...] = ()  # as recorded in the promotion of the current digest
    drift: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.status.environment

    @property
    def passed(self) -> int:
        return sum(1 for g in self.gates if g.passed)

    @property
    def waiting(self) -> tuple[str, ...]:
        """The candidate's failing gates, each in few words."""
        return tuple(g.short for g in self.status.candidate_gates)


def _promotion_gates(
    verified: service.VerifiedLedger, indexes: list[int]
) -> dict[int, tuple[Gate, ...]]:
    """The gates each promotion entry recorded (proved into the tree in one batch)."""
    from conveyor.attest import read_promotion

    entries = [verified.workspace.ledger.entry(index) for index in indexes]
    verified.prove(entries)
    found: dict[int, tuple[Gate, ...]] = {}
    for entry in entries:
        item = verified.verify(entry)
        gates = read_promotion(item.predicate).gates if item is not None else []
        found[entry.index] = tuple(Gate(g.gate, g.passed, g.reason) for g in gates)
    return found


def _provenance(verified: service.VerifiedLedger, digest: str) -> Any:
    """The facts of the newest verified build record of ``digest`` (None: none)."""
    from conveyor.attest import read_provenance

    builds = verified.entries(subject_digest=digest, kind=service.EvidenceKind.BUILD)
    return read_provenance(builds[-1].predicate) if builds else None


def _build_of(verified: service.VerifiedLedger, digest: str) -> Any:
    from conveyor.attest import read_provenance

    item = verified.latest(subject_digest=digest, kind=service.EvidenceKind.BUILD)
    return (item, read_provenance(item.predicate)) if item is not None else (None, None)


# How long a computed board is reused while the ledger's size and root stay the same: every
# browser watching the board fetches it when the ledger grows, and ages move on meanwhile.
BOARD_TTL = 5.0


def board(request: Request) -> tuple[int, list[Column]]:
    """Every environment in ``after`` order: status (current digest, candidate and its
    failing gates), the current digest's CI run and recorded gates, the last drift snapshot.

    Kept in the server's memo of read answers (``ServerState.answers``) for up to
    ``BOARD_TTL`` seconds while the ledger's head (size and root) is the one it was computed
    from: browsers fetching the board together cost one computation."""
    state = state_of(request)
    workspace = state.workspace()
    head = workspace.ledger.head()  # one statement: size and root agree
    columns = state.answers(workspace).get(
        "web board", head, lambda: _board(request, workspace), seconds=BOARD_TTL
    )
    return head[0], columns


def _board(request: Request, workspace: service.Workspace) -> list[Column]:
    statuses = service.status(workspace=workspace)
    verified = service.VerifiedLedger(workspace)
    currents = [item.current for item in statuses if item.current is not None]
    gates = _promotion_gates(verified, [current.index for current in currents])
    provenance = {d: _provenance(verified, d) for d in {c.digest for c in currents}}
    columns = []
    for item in statuses:
        current = item.current
        facts = provenance.get(current.digest) if current is not None else None
        columns.append(
            Column(
                item,
                facts.run_id if facts is not None else None,
                _safe_url(facts.run_url) if facts is not None else None,
                gates.get(current.index, ()) if current is not None else (),
                drift_of(request, item.environment),
            )
        )
    return columns


def _safe_url(url: str | None) -> str | None:
    """Only http(s) links: a ``javascript:`` run URL in a statement stays text."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


# --- one artifact -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One entry of the chain of custody."""

    index: int
    kind: str
    environment: str | None
    signer: str | None
    via: str | None
    when: datetime
    attestation: str | None
    verified: bool
    summary: str


@dataclass(frozen=True)
class Target:
    """Where the digest could go: the gate check for that environment."""

    environment: str
    reference: str
    result: service.CheckResult | None
    problem: str | None = None

    @property
    def approvals(self) -> service.GateResult | None:
        if self.result is None:
            return None
        return next((g for g in self.result.decision.gates if g.gate == "approvals"), None)


@dataclass
class Artifact:
    digest: Digest
    name: str
    steps: list[Step]
    where: list[str]
    targets: list[Target]
    environments: list[str]
    inspection: service.ImageInspection | None = None
    inspection_problem: str | None = None
    commit: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    scan: Any = None  # conveyor.attest ScanFacts of the latest verified scan
    tests: Any = None  # TestResultFacts of the latest verified test result
    referrers: list[service.AttachedAttestation] = field(default_factory=list)
    referrers_problem: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}"


def _order(workspace: service.Workspace) -> list[str]:
    from conveyor.policy.engine import environment_order

    return environment_order(workspace.config.model)


def artifact(request: Request, who: Principal, text: str) -> Artifact:
    from conveyor.attest import read_test_result, read_vulnerability_scan

    state = state_of(request)
    workspace = state.workspace()
    verified = service.VerifiedLedger(workspace)
    digest, rows, provenance, name, where = _located(workspace, verified, text)
    envelopes = {e.index: e.envelope_sha256 for e in rows}
    trace = service.trace(f"{name}@{digest}", workspace=workspace)
    steps = [
        Step(
            e.index,
            e.kind,
            e.environment,
            e.signer,
            e.via,
            e.recorded_at,
            f"sha256:{envelopes[e.index]}" if e.index in envelopes else None,
            e.verified,
            e.summary,
        )
        for e in trace.events
    ]
    order = _order(workspace)
    found = Artifact(digest, name, steps, where, [], order)
    if provenance is not None:
        found.commit, found.run_id = provenance.commit, provenance.run_id
        found.run_url = _safe_url(provenance.run_url)
    scan = verified.latest(subject_digest=str(digest), kind=service.EvidenceKind.SCAN)
    found.scan = read_vulnerability_scan(scan.predicate) if scan is not None else None
    tests = verified.latest(subject_digest=str(digest), kind=service.EvidenceKind.TESTS)
    found.tests = read_test_result(tests.predicate) if tests is not None else None
    options = state.registry_options()
    try:
        found.inspection = service.inspect(found.reference, options=options)
    except ConveyorError as error:
        found.inspection_problem = str(error)
    try:
        found.referrers = service.list_attestations(found.reference, workspace=workspace).found
    except ConveyorError as error:
        found.referrers_problem = str(error)
    found.targets = [
        target(request, who, found, environment)
        for environment in order
        if environment not in where
    ]
    return found


def target(request: Request, who: Principal, found: Artifact, environment: str) -> Target:
    """The gate check for ``found`` entering ``environment``, with ``who`` as the promoter
    (``distinct_from: [promoter]`` counts as in a promotion), as ``POST /api/v1/check``."""
    state = state_of(request)
    workspace = state.workspace()
    source = service.promotion_source(
        workspace, environment, runs_in=found.where, built_as=found.name
    )
    reference = f"{source}@{found.digest}"
    return check(request, who, reference, environment)


def check(
    request: Request,
    who: Principal,
    reference: str,
    environment: str,
    break_glass: str | None = None,
) -> Target:
    state = state_of(request)
    try:
        result = service.check(
            reference,
            environment=environment,
            break_glass=break_glass,
            workspace=state.workspace(),
            signer=state.signer() if state.can_sign() else None,
            principal=who.acting(),
        )
    except ConveyorError as error:
        return Target(environment, reference, None, str(error))  # one line (ConveyorError)
    return Target(environment, reference, result)


# --- one environment, one commit ----------------------------------------------------------------


# An environment's page lists its newest arrivals and offers this many earlier digests to put
# back: the page's size does not grow with the environment's age (``conveyor history`` has all).
HISTORY_ROWS = 200
ROLLBACK_CHOICES = 50


@dataclass(frozen=True)
class EnvironmentView:
    name: str
    repository: str
    history: list[service.HistoryItem]  # newest first, at most HISTORY_ROWS
    drift: dict[str, Any] | None
    older: int = 0  # arrivals not listed
    choices: list[service.HistoryItem] = field(default_factory=list)  # digests to put back


def environment(request: Request, name: str) -> EnvironmentView:
    workspace = state_of(request).workspace()
    workspace.config.model.environment(name)  # unknown: 404
    items = service.history(name, workspace=workspace)
    target_name = workspace.environment_target(name).name
    choices: dict[str, service.HistoryItem] = {}
    for item in items[1:]:
        if len(choices) >= ROLLBACK_CHOICES:
            break
        if item.digest != items[0].digest:
            choices.setdefault(item.digest, item)
    shown = items[:HISTORY_ROWS]
    return EnvironmentView(
        name,
        target_name,
        shown,
        drift_of(request, name),
        older=len(items) - len(shown),
        choices=list(choices.values()),
    )


@dataclass(frozen=True)
class Built:
    """One digest built from a commit, and where it went."""

    digest: str
    subject: str
    steps: list[service.TraceEvent]

    @property
    def builds(self) -> list[service.TraceEvent]:
        return [e for e in self.steps if e.kind == "build" and e.verified]

    @property
    def arrivals(self) -> list[service.TraceEvent]:
        return [e for e in self.steps if e.kind in ("promotion", "rollback") and e.verified]


def commit(request: Request, text: str) -> tuple[str, list[Built]]:
    sha = parse_commit(text)
    trace = service.trace(sha, workspace=state_of(request).workspace())
    if not trace.digests:
        raise NotFound(f"no digest in the ledger was built from commit {sha}")
    built = []
    for digest in trace.digests:
        steps = [e for e in trace.events if e.digest == digest]
        subject = next((e.subject for e in steps if e.kind == "build"), steps[0].subject if steps
                       else "")  # fmt: skip
        built.append(Built(digest, subject, steps))
    return sha, built


# --- audit --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditView:
    size: int
    root: str
    checkpoints: list[Any]
    report: service.AuditReport | None = None


def audit(request: Request, *, verify: bool = False) -> AuditView:
    workspace = state_of(request).workspace()
    report = service.audit_verify(workspace=workspace) if verify else None
    ledger = workspace.ledger
    size, root = ledger.head()
    checkpoints = list(reversed(ledger.checkpoints(last=5)))  # not the whole table
    return AuditView(size, root.hex(), checkpoints, report)


# --- what separates two environments ------------------------------------------------------------


@dataclass
class Diff:
    a: str
    b: str
    current_a: service.HistoryItem | None
    current_b: service.HistoryItem | None
    ahead: list[service.HistoryItem]  # arrived in a since b's digest was there
    added: list[tuple[str, str]] = field(default_factory=list)  # findings in a, not in b
    removed: list[tuple[str, str]] = field(default_factory=list)
    tests_a: Any = None
    tests_b: Any = None


def diff(request: Request, a: str, b: str) -> Diff:
    from conveyor.attest import read_test_result, read_vulnerability_scan

    workspace = state_of(request).workspace()
    for name in (a, b):
        workspace.config.model.environment(name)  # unknown: 404
    history_a = service.history(a, workspace=workspace)
    history_b = service.history(b, workspace=workspace)
    current_a = history_a[0] if history_a else None
    current_b = history_b[0] if history_b else None
    ahead = []
    for item in history_a:
        if current_b is not None and item.digest == current_b.digest:
            break
        ahead.append(item)
    result = Diff(a, b, current_a, current_b, ahead[:50])
    verified = service.VerifiedLedger(workspace)

    def latest(item: service.HistoryItem | None, kind: service.EvidenceKind) -> Any:
        if item is None:
            return None
        return verified.latest(subject_digest=item.digest, kind=kind)

    scans = [latest(c, service.EvidenceKind.SCAN) for c in (current_a, current_b)]
    findings = [
        {(i, str(s.value)) for i, s in read_vulnerability_scan(x.predicate).findings}
        if x is not None
        else set()
        for x in scans
    ]
    result.added = sorted(findings[0] - findings[1])
    result.removed = sorted(findings[1] - findings[0])
    tests = [latest(c, service.EvidenceKind.TESTS) for c in (current_a, current_b)]
    result.tests_a, result.tests_b = (
        read_test_result(x.predicate) if x is not None else None for x in tests
    )
    return result


# --- search, and where a digest lives -----------------------------------------------------------


def recorded(request: Request, digest: Digest) -> list[Any]:
    """The ledger rows of ``digest`` (each proved into the signed tree)."""
    workspace = state_of(request).workspace()
    return service.VerifiedLedger(workspace).rows(subject_digest=str(digest))


def locate(request: Request, text: str) -> tuple[Digest, str, list[str]]:
    """A digest's name as built (the image a promotion copies from) and the environments
    it runs in now; 404 when the ledger has no record of it."""
    workspace = state_of(request).workspace()
    digest, _, _, name, where = _located(workspace, service.VerifiedLedger(workspace), text)
    return digest, name, where


def _located(
    workspace: service.Workspace, verified: service.VerifiedLedger, text: str
) -> tuple[Digest, list[Any], Any, str, list[str]]:
    """The digest in ``text``, its proved rows, the facts of its newest build record (None:
    none), its name as built (else as first recorded) and the environments it runs in now;
    404 when the ledger has no record of it."""
    digest = parse_digest(text)
    rows = verified.rows(subject_digest=str(digest))
    if not rows:
        raise NotFound(f"no record of {digest} in the ledger")
    build, provenance = _build_of(verified, str(digest))
    name = build.entry.subject_name if build is not None else rows[0].subject_name
    where = [env for env in _order(workspace) if verified.current(env) == digest]
    return digest, rows, provenance, name, where


def source_reference(request: Request, environment: str, name: str, where: list[str]) -> str:
    return service.promotion_source(
        state_of(request).workspace(), environment, runs_in=where, built_as=name
    )


def search(request: Request, query: str) -> tuple[str | None, str | None]:
    """Where ``query`` leads (a page path), or None and why nothing matched. A digest, a
    commit (7 to 64 hex digits), an environment's name, or a reference with a tag."""
    from urllib.parse import quote

    text = query.strip()
    if not text:
        return None, None
    workspace = state_of(request).workspace()
    if text.startswith(("sha256:", "sha512:")):
        digest = parse_digest(text)
        if recorded(request, digest):
            return f"/artifacts/{digest}", None
        return None, f"the ledger has no record of {digest}"
    if 7 <= len(text) <= 64 and set(text) <= HEX:
        if service.trace(text, workspace=workspace).digests:
            return f"/commits/{text.lower()}", None
        if len(text) == 64 and recorded(request, Digest.parse(f"sha256:{text.lower()}")):
            return f"/artifacts/sha256:{text.lower()}", None
        return None, f"no build in the ledger names the commit {text}"
    if text in workspace.config.model.environments:
        return f"/environments/{quote(text)}", None
    try:
        resolved = service.resolve(text, options=state_of(request).registry_options())
    except ConveyorError as error:
        return None, str(error)  # one line (ConveyorError)
    if recorded(request, resolved.digest):
        return f"/artifacts/{resolved.digest}", None
    return None, f"{text} names {resolved.digest}, of which the ledger has no record"
