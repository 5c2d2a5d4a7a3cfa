"""Gates: one small object per kind of requirement, each behind the ``Gate`` protocol.

A gate reads an ``EvidenceView`` (the evidence of one digest, indexed once) and the
``PromotionRequest``, and answers a ``GateResult`` with a human reason and the ledger entries
it used. Gates fail closed: missing or untrusted evidence is a failure that says so.

For each kind of evidence the most recent *trusted* entry decides — trusted meaning signed by
an identity holding the role ``policy.roles.SIGNER_ROLE`` names for that kind; approvals by
the role their requirement names. "Most recent" orders by ``(ref.time, index)``: the time
signed inside the statement (``EvidenceRef.signed_at``), so a replayed or back-dated row
cannot become the most recent; freshness (``max_age``, soak, smoke after arrival) is
measured on the same signed times.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from conveyor.policy.config import (
    PROMOTER,
    AfterSpec,
    ApprovalsSpec,
    BreakGlassSpec,
    ConfigModel,
    FreezeSpec,
    ProvenanceSpec,
    ScanSpec,
    Severity,
    TestsSpec,
    WeeklySpec,
)
from conveyor.policy.duration import format_duration
from conveyor.policy.labels import COMMIT_LABELS, RUN_LABEL, commit_matches, short_commit
from conveyor.policy.model import (
    ApprovalCount,
    BuildEvidence,
    EvidenceRef,
    EvidenceSet,
    GateResult,
    PromotionEvidence,
    PromotionRequest,
    ScanEvidence,
    SmokeEvidence,
    TestEvidence,
)
from conveyor.policy.roles import SIGNER_ROLE, EvidenceKind
from conveyor.policy.windows import Window, parse_interval, weekly
from conveyor.severity import normalise_severity


class _Dated(Protocol):
    @property
    def ref(self) -> EvidenceRef: ...


_E = TypeVar("_E", bound=_Dated)


def utc(moment: datetime) -> datetime:
    """Aware UTC; a naive time is read as UTC so that comparisons can never raise."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def order_key(ref: EvidenceRef) -> tuple[datetime, int]:
    return (utc(ref.time), ref.index)


def describe(ref: EvidenceRef) -> str:
    """``#12 by ci at 2026-11-26T10:00:00Z``."""
    when = utc(ref.time).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return f"#{ref.index} by {ref.signer} at {when}"


@dataclass
class _Latest:
    """The most recent trusted entry of one kind, and the signers of untrusted ones."""

    role: str
    untrusted: set[str] = field(default_factory=set)

    def pick(self, items: Iterable[_E]) -> _E | None:
        best: _E | None = None
        best_key: tuple[datetime, int] | None = None
        for item in items:
            if self.role not in item.ref.signer_roles:
                self.untrusted.add(item.ref.signer)
                continue
            key = order_key(item.ref)
            if best_key is None or key > best_key:
                best, best_key = item, key
        return best

    def note(self, what: str) -> str:
        if not self.untrusted:
            return ""
        names = ", ".join(sorted(self.untrusted))
        return f"; ignored {what} signed by {names} (not a {self.role})"


@dataclass
class EvidenceView:
    """The evidence of one digest, indexed in one pass per kind (no quadratic scans)."""

    evidence: EvidenceSet
    build: BuildEvidence | None
    build_note: str
    build_signers: frozenset[str]
    test: TestEvidence | None
    test_note: str
    scan: ScanEvidence | None
    scan_note: str
    arrivals: dict[str, PromotionEvidence]
    smokes: dict[str, SmokeEvidence]

    @classmethod
    def of(cls, evidence: EvidenceSet) -> EvidenceView:
        builds, tests, scans = (
            _Latest(SIGNER_ROLE[kind])
            for kind in (EvidenceKind.BUILD, EvidenceKind.TESTS, EvidenceKind.SCAN)
        )
        build = builds.pick(evidence.builds)
        return cls(
            evidence=evidence,
            build=build,
            build_note=builds.note("build records"),
            # Every identity that signed a build record of this digest, trusted or not.
            build_signers=frozenset(item.ref.signer for item in evidence.builds),
            test=tests.pick(evidence.tests),
            test_note=tests.note("test results"),
            scan=scans.pick(evidence.scans),
            scan_note=scans.note("scans"),
            arrivals=_latest_by_environment(
                (p for p in evidence.promotions if p.digest == evidence.digest),
                SIGNER_ROLE[EvidenceKind.PROMOTION],
            ),
            smokes=_latest_by_environment(evidence.smokes, SIGNER_ROLE[EvidenceKind.SMOKE]),
        )


_P = TypeVar("_P", PromotionEvidence, SmokeEvidence)


def _latest_by_environment(items: Iterable[_P], role: str) -> dict[str, _P]:
    latest: dict[str, _P] = {}
    for item in items:
        if role not in item.ref.signer_roles:
            continue
        current = latest.get(item.environment)
        if current is None or order_key(item.ref) > order_key(current.ref):
            latest[item.environment] = item
    return latest


class Gate(Protocol):
    """A requirement on the evidence; ``check`` never raises on any evidence."""

    @property
    def name(self) -> str: ...

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult: ...


@dataclass(frozen=True)
class BuildRecordGate:
    """Always on: a digest without a trusted build record was adopted, not built."""

    name: str = "build"

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        build = view.build
        if build is None:
            return GateResult(
                self.name, False, f"no build record: build once, never adopt{view.build_note}"
            )
        run = f", run {build.run_id}" if build.run_id else ""
        return GateResult(
            self.name,
            True,
            f"build record {describe(build.ref)}: commit {short_commit(build.commit)}{run}",
            (build.ref,),
        )


@dataclass(frozen=True)
class ProvenanceGate:
    spec: ProvenanceSpec
    name: str = "provenance"

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        build = view.build
        if build is None:
            return GateResult(
                self.name, False, f"no build record: build once, never adopt{view.build_note}"
            )
        used = (build.ref,)
        problems: list[str] = []
        pattern = self.spec.builder_id
        if pattern is not None:
            if build.builder_id is None:
                problems.append(f"build record names no builder id (expected {pattern})")
            elif not fnmatch.fnmatchcase(build.builder_id, pattern):
                problems.append(f"builder id {build.builder_id} does not match {pattern}")
        commit_labels = [
            (label, build.labels[label]) for label in COMMIT_LABELS if label in build.labels
        ]
        if not commit_labels:
            problems.append(
                "the image has no git.commit (or org.opencontainers.image.revision) label"
            )
        for label, value in commit_labels:
            if not commit_matches(value, build.commit):
                problems.append(
                    f"label {label}={short_commit(value)} but the build record says commit "
                    f"{short_commit(build.commit)}"
                )
        run_label = build.labels.get(RUN_LABEL)
        if run_label is None:
            problems.append("the image has no ci.run label")
        elif build.run_id is None:
            problems.append(f"label ci.run={run_label} but the build record names no CI run")
        elif run_label.strip() != build.run_id.strip():
            problems.append(
                f"label ci.run={run_label} but the build record says run {build.run_id}"
            )
        if problems:
            return GateResult(
                self.name, False, f"{'; '.join(problems)} ({describe(build.ref)})", used
            )
        return GateResult(
            self.name,
            True,
            f"commit {short_commit(build.commit)} and run {build.run_id} match the image labels "
            f"({describe(build.ref)})",
            used,
        )


@dataclass(frozen=True)
class TestsGate:
    __test__ = False  # not a pytest test class

    spec: TestsSpec
    name: str = "tests"

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        result = view.test
        if result is None:
            return GateResult(self.name, False, f"no test results by a tester{view.test_note}")
        passed, failed, errored = (
            max(0, n) for n in (result.passed, result.failed, result.errored)
        )
        counts = f"{passed} passed, {failed} failed, {errored} errored"
        used = (result.ref,)
        problems = []
        if passed < self.spec.min_passed:
            problems.append(f"{passed} passed, at least {self.spec.min_passed} needed")
        if failed + errored > self.spec.max_failed:
            problems.append(
                f"{failed + errored} failed or errored, at most {self.spec.max_failed} allowed"
            )
        if problems:
            return GateResult(
                self.name, False, f"{'; '.join(problems)} ({describe(result.ref)})", used
            )
        return GateResult(self.name, True, f"{counts} ({describe(result.ref)})", used)


@dataclass(frozen=True)
class ScanGate:
    spec: ScanSpec
    name: str = "scan"

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        scan = view.scan
        if scan is None:
            return GateResult(self.name, False, f"no scan by a scanner{view.scan_note}")
        now = utc(request.now)
        used = (scan.ref,)
        problems: list[str] = []
        # The signed scan finish; a scan cannot be younger than its record (the earlier
        # time is the safe one). The reader refuses a scan whose time does not parse.
        scanned = utc(scan.ref.recorded_at)
        if scan.scanned_at is not None:
            scanned = min(scanned, utc(scan.scanned_at))
        age = max(now - scanned, timedelta(0))
        if self.spec.max_age is not None and age > self.spec.max_age:
            problems.append(
                f"scan {format_duration(age)} old, max {format_duration(self.spec.max_age)}"
            )
        active = {
            item.id.casefold(): item for item in self.spec.exceptions if utc(item.expires) > now
        }
        expired = sorted(item.id for item in self.spec.exceptions if utc(item.expires) <= now)
        counts: Counter[str] = Counter()
        for severity, count in scan.counts.items():
            counts[_severity(severity)] += max(0, count)
        excepted: set[str] = set()
        for finding_id, severity in scan.findings:
            if finding_id.casefold() in active:
                counts[_severity(severity)] -= 1
                excepted.add(finding_id)
        over: list[str] = []
        within: list[str] = []
        for severity, limit in self.spec.max.items():
            found = max(0, counts[severity.value])
            (over if found > limit else within).append(f"{severity.value} {found}/{limit}")
        if over:
            problems.append(f"{', '.join(over)} over the limit")
        unknown = max(0, counts[Severity.UNKNOWN.value])
        if self.spec.max and Severity.UNKNOWN not in self.spec.max and unknown:
            # Fail closed: a severity that did not parse may hide a critical one.
            problems.append(
                f"{unknown} finding(s) of unknown severity (name unknown in max to allow them)"
            )
        notes = []
        if excepted:
            notes.append(f"excepted {', '.join(sorted(excepted))}")
        if expired:
            notes.append(f"expired exceptions no longer count: {', '.join(expired)}")
        detail = "; ".join(notes)
        detail = f"; {detail}" if detail else ""
        if problems:
            return GateResult(
                self.name, False, f"{'; '.join(problems)}{detail} ({describe(scan.ref)})", used
            )
        limits = ", ".join(within) if within else "no severity limits"
        return GateResult(
            self.name,
            True,
            f"{limits}; scan {format_duration(age)} old{detail} ({describe(scan.ref)})",
            used,
        )


@dataclass(frozen=True)
class AfterGate:
    spec: AfterSpec
    name: str = "after"

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        env = self.spec.environment
        if request.rollback:
            return GateResult(self.name, True, f"not checked for a rollback (after {env})")
        arrival = view.arrivals.get(env)
        if arrival is None:
            return GateResult(self.name, False, f"never promoted to {env} (by a deployer)")
        now = utc(request.now)
        arrived = utc(arrival.ref.time)
        stay = max(now - arrived, timedelta(0))
        used: list[EvidenceRef] = [arrival.ref]
        problems = []
        facts = [f"in {env} since {describe(arrival.ref)} ({format_duration(stay)})"]
        if self.spec.soak is not None and stay < self.spec.soak:
            problems.append(
                f"in {env} for {format_duration(stay)}, soak {format_duration(self.spec.soak)}"
            )
        if self.spec.smoke:
            smoke = view.smokes.get(env)
            if smoke is None:
                problems.append(f"no smoke test for {env} by a tester")
            else:
                used.append(smoke.ref)
                if order_key(smoke.ref) <= order_key(arrival.ref):
                    problems.append(
                        f"the latest smoke test for {env} ({describe(smoke.ref)}) predates "
                        f"its arrival there"
                    )
                elif not smoke.passed:
                    problems.append(f"smoke test for {env} failed ({describe(smoke.ref)})")
                else:
                    facts.append(f"smoke passed {describe(smoke.ref)}")
        if problems:
            return GateResult(self.name, False, "; ".join(problems), tuple(used))
        return GateResult(self.name, True, "; ".join(facts), tuple(used))


@dataclass
class ApprovalTally:
    counted: dict[str, EvidenceRef] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def count(self, role: str, needed: int) -> ApprovalCount:
        skipped = {name: why for name, why in self.skipped.items() if name not in self.counted}
        return ApprovalCount(
            role, needed, tuple(sorted(self.counted)), tuple(sorted(skipped.items()))
        )

    @property
    def refs(self) -> tuple[EvidenceRef, ...]:
        return tuple(self.counted[name] for name in sorted(self.counted))


def tally_approvals(
    view: EvidenceView,
    request: PromotionRequest,
    *,
    role: str,
    distinct_from: Sequence[str],
    max_age: timedelta | None,
) -> ApprovalTally:
    """Approvals of this digest for this environment by distinct, independent identities."""
    tally = ApprovalTally()
    now = utc(request.now)
    excluded_roles = {item for item in distinct_from if item not in ("builder", PROMOTER)}
    for approval in view.evidence.approvals:
        ref = approval.ref
        signer = ref.signer
        why = None
        if approval.digest != request.digest:
            why = "for another digest"
        elif approval.environment != request.environment:
            why = f"for {approval.environment}"
        elif role not in ref.signer_roles:
            why = f"lacks role {role}"
        elif "builder" in distinct_from and signer in view.build_signers:
            why = "signed the build"
        elif PROMOTER in distinct_from and signer == request.promoter:
            why = "the promoter"
        elif excluded_roles & ref.signer_roles:
            why = f"holds role {', '.join(sorted(excluded_roles & ref.signer_roles))}"
        elif max_age is not None and now - utc(ref.time) > max_age:
            why = f"{format_duration(now - utc(ref.time))} old, max {format_duration(max_age)}"
        if why is not None:
            tally.skipped[signer] = why
            continue
        current = tally.counted.get(signer)
        if current is None or order_key(ref) > order_key(current):
            tally.counted[signer] = ref
    return tally


@dataclass(frozen=True)
class ApprovalsGate:
    """Every requirement must hold; an identity counts once per requirement."""

    requirements: tuple[ApprovalsSpec, ...]
    name: str = "approvals"

    def __post_init__(self) -> None:
        if not self.requirements:  # an empty AllOf would pass vacuously
            raise ValueError("an approvals gate needs at least one requirement")

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        counts: list[ApprovalCount] = []
        texts: list[str] = []
        refs: dict[int, EvidenceRef] = {}
        for spec in self.requirements:
            tally = tally_approvals(
                view,
                request,
                role=str(spec.role),
                distinct_from=spec.distinct_from,
                max_age=spec.max_age,
            )
            count = tally.count(str(spec.role), spec.count)
            counts.append(count)
            text = count.summary()
            if len(self.requirements) > 1:
                text = f"{spec.role}: {text}"
            texts.append(text)
            refs.update((ref.index, ref) for ref in tally.refs)
        passed = all(count.met for count in counts)
        return GateResult(
            self.name, passed, "; ".join(texts), tuple(refs.values()), approvals=tuple(counts)
        )


@dataclass(frozen=True)
class FreezeGate:
    """Frozen while any window is open; ``--break-glass REASON`` with the configured extra
    approvals lets a promotion through, recorded as break-glass."""

    windows: tuple[Window, ...]
    break_glass: BreakGlassSpec | None
    approvals: tuple[ApprovalsSpec, ...] = ()
    name: str = "freeze"

    @classmethod
    def of(cls, freezes: Sequence[FreezeSpec], approvals: Sequence[ApprovalsSpec]) -> FreezeGate:
        windows = tuple(window_of(spec) for freeze in freezes for spec in freeze.windows)
        glass = next((f.break_glass for f in freezes if f.break_glass is not None), None)
        return cls(windows, glass, tuple(approvals))

    def check(self, view: EvidenceView, request: PromotionRequest) -> GateResult:
        """Passes when no window is open; ``frozen`` and ``break_glass_used`` say why."""
        now = utc(request.now)
        open_windows = [(w, end) for w in self.windows if (end := w.open_until(now)) is not None]
        reason = (request.break_glass or "").strip()
        if not open_windows:
            note = " (break-glass not needed)" if reason else ""
            return GateResult(self.name, True, f"not frozen{note}")
        window, until = max(open_windows, key=lambda pair: pair[1])
        frozen = f"frozen by {window} until {until.isoformat().replace('+00:00', 'Z')}"
        glass = self.break_glass
        if glass is None:
            return GateResult(
                self.name, False, f"{frozen}; no break_glass is configured", frozen=True
            )
        # Break-glass approvals are extra to what the approvals gate asks of the same role.
        same_role = [spec for spec in self.approvals if spec.role == glass.role]
        needed = glass.approvals + sum(spec.count for spec in same_role)
        if not reason:
            return GateResult(
                self.name,
                False,
                f"{frozen}; promote with --break-glass REASON and {needed} {glass.role} approvals",
                frozen=True,
                breakable=True,
            )
        distinct = {"builder", PROMOTER}
        for spec in same_role:
            distinct.update(spec.distinct_from)
        ages = [spec.max_age for spec in self.approvals if spec.max_age is not None]
        tally = tally_approvals(
            view,
            request,
            role=str(glass.role),
            distinct_from=sorted(distinct),
            max_age=min(ages) if ages else None,
        )
        count = tally.count(str(glass.role), needed)
        passed = count.met
        verdict = "break-glass" if passed else "break-glass refused"
        text = f"{frozen}; {verdict} ({reason!r}): {count.summary()}"
        return GateResult(
            self.name,
            passed,
            text,
            tally.refs,
            frozen=True,
            break_glass_used=passed,
            approvals=(count,),
            breakable=True,
        )


def window_of(spec: str | WeeklySpec) -> Window:
    """The runtime window of a validated config window (an interval text or weekly spec)."""
    if isinstance(spec, str):
        return parse_interval(spec)
    week = spec.weekly
    return weekly(list(week.days), week.from_, week.to, week.timezone)


def gates_for(config: ConfigModel, environment: str) -> tuple[Gate, ...]:
    """The gates of ``environment`` in a fixed order; the build record gate always first."""
    requires = config.environment(environment).requires
    gates: list[Gate] = [BuildRecordGate()]
    if requires.provenance is not None:
        gates.append(ProvenanceGate(requires.provenance))
    if requires.tests is not None:
        gates.append(TestsGate(requires.tests))
    if requires.scan is not None:
        gates.append(ScanGate(requires.scan))
    if requires.after is not None:
        gates.append(AfterGate(requires.after))
    approvals = requires.approval_requirements
    if approvals:
        gates.append(ApprovalsGate(approvals))
    freezes = config.freezes_for(environment)
    if freezes:
        gates.append(FreezeGate.of(freezes, approvals))
    return tuple(gates)


def _severity(name: str) -> str:
    return normalise_severity(name).value


__all__ = [
    "AfterGate",
    "ApprovalTally",
    "ApprovalsGate",
    "BuildRecordGate",
    "EvidenceView",
    "FreezeGate",
    "Gate",
    "ProvenanceGate",
    "ScanGate",
    "TestsGate",
    "gates_for",
    "tally_approvals",
]
