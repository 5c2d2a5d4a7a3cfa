"""Each gate failing alone and passing, most-recent-decides, approvals independence, freezes
and break-glass, ``after`` with soak and smoke."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.policy.config import Config
from conveyor.policy.engine import evaluate
from conveyor.policy.model import Decision

from ._policy_support import (
    COMMIT,
    DIGEST,
    NOW,
    OTHER_DIGEST,
    Ledger,
    config_of,
    full_ledger,
    request,
)

EVERY_GATE = """\
environments:
  staging:
    repository: oci:./layout
    requires: {}
  production:
    repository: registry.example.com/payment-api
    requires:
      provenance: {builder_id: "https://github.com/acme/*"}
      tests: {min_passed: 5, max_failed: 1}
      scan:
        max: {critical: 0, high: 1}
        max_age: 24h
        exceptions:
          - {id: CVE-2026-0001, reason: not reachable, expires: 2027-01-01}
          - {id: CVE-2026-0002, reason: was accepted, expires: 2026-11-01}
      after: {environment: staging, soak: 1h, smoke: true}
      approvals: {count: 2, role: approver, max_age: 7d}
      freeze:
        windows: ["2026-12-20T00:00:00Z/2027-01-02T00:00:00Z"]
        break_glass: {approvals: 1}
"""
H = timedelta(hours=1)
FROZEN_NOW = datetime(2026, 12, 24, 12, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_of(tmp_path, EVERY_GATE)


def _decide(
    config: Config, ledger: Ledger, *, environment: str = "production", **kw: object
) -> Decision:
    return evaluate(config, request(environment, **kw), ledger.evidence())  # type: ignore[arg-type]


def _failing(decision: Decision) -> set[str]:
    failing = {result.gate for result in decision.gates if not result.passed}
    assert decision.allowed is (not failing)
    return failing


def _reason(decision: Decision, gate: str) -> str:
    return next(result.reason for result in decision.gates if result.gate == gate)


def test_full_evidence_passes_every_gate(config: Config) -> None:
    decision = _decide(config, full_ledger())
    assert [result.gate for result in decision.gates] == [
        "build",
        "provenance",
        "tests",
        "scan",
        "after",
        "approvals",
        "freeze",
    ]
    assert _failing(decision) == set()
    assert _reason(decision, "approvals") == "2 of 2 approvals: alice, bob"
    assert _reason(decision, "freeze") == "not frozen"
    assert decision.frozen is False
    assert decision.break_glass is None


def _keep(ledger: Ledger) -> None:
    return None


def _replace_builds(**kw: object) -> Callable[[Ledger], None]:
    def change(ledger: Ledger) -> None:
        ledger.builds.clear()
        ledger.build(**kw)  # type: ignore[arg-type]

    return change


def _replace_tests(
    passed: int, failed: int, errored: int = 0, **kw: object
) -> Callable[[Ledger], None]:
    def change(ledger: Ledger) -> None:
        ledger.tests.clear()
        ledger.test(passed, failed, errored, **kw)  # type: ignore[arg-type]

    return change


def _replace_scan(
    counts: dict[str, int], findings: tuple[tuple[str, str], ...] = (), **kw: object
) -> Callable[[Ledger], None]:
    def change(ledger: Ledger) -> None:
        ledger.scans.clear()
        ledger.scan(counts, findings, **kw)  # type: ignore[arg-type]

    return change


def _replace(attribute: str, action: Callable[[Ledger], None]) -> Callable[[Ledger], None]:
    def change(ledger: Ledger) -> None:
        getattr(ledger, attribute).clear()
        action(ledger)

    return change


LABELS = {"git.commit": COMMIT, "ci.run": "42"}

# (id, change to the full ledger, the gates that must fail, a word the reason must contain)
CASES: list[tuple[str, Callable[[Ledger], None], set[str], str]] = [
    ("full", _keep, set(), ""),
    # build and provenance
    ("no build", _replace("builds", _keep), {"build", "provenance"}, "build once, never adopt"),
    (
        "build by a non-builder",
        _replace_builds(signer="mallory"),
        {"build", "provenance"},
        "mallory (not a builder)",
    ),
    (
        "builder id other",
        _replace_builds(builder_id="https://evil.example/x"),
        {"provenance"},
        "does not match",
    ),
    ("builder id absent", _replace_builds(builder_id=None), {"provenance"}, "no builder id"),
    (
        "commit label differs",
        _replace_builds(labels={"git.commit": "f" * 40, "ci.run": "42"}),
        {"provenance"},
        "git.commit=ffffffffffff",
    ),
    ("no labels", _replace_builds(labels={}), {"provenance"}, "no git.commit"),
    ("no run label", _replace_builds(labels={"git.commit": COMMIT}), {"provenance"}, "no ci.run"),
    ("run differs", _replace_builds(run_id="41"), {"provenance"}, "says run 41"),
    ("record names no run", _replace_builds(run_id=None), {"provenance"}, "names no CI run"),
    (
        "oci revision label",
        _replace_builds(labels={"org.opencontainers.image.revision": COMMIT, "ci.run": "42"}),
        set(),
        "",
    ),
    (
        "abbreviated commit label",
        _replace_builds(labels={"git.commit": COMMIT[:8].upper(), "ci.run": "42"}),
        set(),
        "",
    ),
    (
        "too short a commit prefix",
        _replace_builds(labels={"git.commit": COMMIT[:6], "ci.run": "42"}),
        {"provenance"},
        "git.commit",
    ),
    (
        "revision label disagrees with git.commit",
        _replace_builds(labels={**LABELS, "org.opencontainers.image.revision": "e" * 40}),
        {"provenance"},
        "org.opencontainers.image.revision",
    ),
    # tests
    ("no tests", _replace("tests", _keep), {"tests"}, "no test results"),
    ("too few passed", _replace_tests(4, 0), {"tests"}, "4 passed, at least 5"),
    ("too many failed", _replace_tests(10, 2), {"tests"}, "2 failed or errored, at most 1"),
    ("errored counts as failed", _replace_tests(10, 1, 1), {"tests"}, "2 failed or errored"),
    ("one failure allowed", _replace_tests(10, 1), set(), ""),
    (
        "tests by a non-tester",
        _replace_tests(10, 0, signer="alice"),
        {"tests"},
        "alice (not a tester)",
    ),
    # scan
    ("no scan", _replace("scans", _keep), {"scan"}, "no scan"),
    ("a critical", _replace_scan({"critical": 1}), {"scan"}, "critical 1/0"),
    ("two highs", _replace_scan({"high": 2}), {"scan"}, "high 2/1"),
    ("severity names in any case", _replace_scan({"CRITICAL": 1}), {"scan"}, "critical 1/0"),
    (
        "exception subtracts its finding",
        _replace_scan({"high": 2}, (("CVE-2026-0001", "high"), ("CVE-2026-0009", "high"))),
        set(),
        "",
    ),
    (
        "expired exception no longer counts",
        _replace_scan({"critical": 1}, (("CVE-2026-0002", "critical"),)),
        {"scan"},
        "expired exceptions no longer count: CVE-2026-0002",
    ),
    (
        "exception only subtracts what is found",
        _replace_scan({"critical": 1}, (("CVE-2026-0001", "high"),)),
        {"scan"},
        "critical 1/0",
    ),
    ("stale scan", _replace_scan({}, ago=25 * H), {"scan"}, "scan 25h old, max 24h"),
    (
        "scanned long before it was recorded",
        _replace_scan({}, ago=H, scanned_ago=26 * H),
        {"scan"},
        "scan 26h old, max 24h",
    ),
    ("scan by a non-scanner", _replace_scan({}, signer="deployer"), {"scan"}, "not a scanner"),
    # issue 9 #11: a severity that did not parse fails closed unless max names unknown
    (
        "an unknown severity",
        _replace_scan({"unknown": 1}, (("CVE-2026-0100", "unknown"),)),
        {"scan"},
        "1 finding(s) of unknown severity",
    ),
    (
        "a look-alike severity word",
        _replace_scan({"CRİTICAL": 1}, (("CVE-2026-0100", "CRİTICAL"),)),
        {"scan"},
        "unknown severity",
    ),
    (
        "an excepted unknown finding",
        _replace_scan({"unknown": 1}, (("CVE-2026-0001", "unknown"),)),
        set(),
        "",
    ),
    # after
    ("never in staging", _replace("promotions", _keep), {"after"}, "never promoted to staging"),
    (
        "promoted by a non-deployer",
        _replace("promotions", lambda ledger: ledger.promote("staging", signer="alice", ago=4 * H)),
        {"after"},
        "never promoted",
    ),
    (
        "another digest was in staging",
        _replace(
            "promotions", lambda ledger: ledger.promote("staging", ago=4 * H, digest=OTHER_DIGEST)
        ),
        {"after"},
        "never promoted",
    ),
    (
        "in dev, not staging",
        _replace("promotions", lambda ledger: ledger.promote("dev", ago=4 * H)),
        {"after"},
        "never promoted",
    ),
    ("no smoke", _replace("smokes", _keep), {"after"}, "no smoke test for staging"),
    (
        "smoke failed",
        _replace("smokes", lambda ledger: ledger.smoke("staging", passed=False)),
        {"after"},
        "failed",
    ),
    (
        "smoke for another environment",
        _replace("smokes", lambda ledger: ledger.smoke("production")),
        {"after"},
        "no smoke test for staging",
    ),
    (
        "smoke by a non-tester",
        _replace("smokes", lambda ledger: ledger.smoke("staging", signer="alice")),
        {"after"},
        "no smoke test",
    ),
    # approvals
    (
        "one approval",
        _replace("approvals", lambda ledger: ledger.approve("alice")),
        {"approvals"},
        "1 of 2",
    ),
    (
        "same identity twice counts once",
        _replace("approvals", lambda ledger: (ledger.approve("alice"), ledger.approve("alice"))),  # type: ignore[func-returns-value]
        {"approvals"},
        "1 of 2 approvals: alice",
    ),
    (
        "approval for another environment",
        _replace(
            "approvals", lambda ledger: (ledger.approve("alice"), ledger.approve("bob", "staging"))
        ),  # type: ignore[func-returns-value]
        {"approvals"},
        "bob (for staging)",
    ),
    (
        "approval for another digest",
        _replace(
            "approvals",
            lambda ledger: (ledger.approve("alice"), ledger.approve("bob", digest=OTHER_DIGEST)),
        ),  # type: ignore[func-returns-value]
        {"approvals"},
        "bob (for another digest)",
    ),
    (
        "approval too old",
        _replace(
            "approvals",
            lambda ledger: (ledger.approve("alice"), ledger.approve("bob", ago=timedelta(days=8))),
        ),  # type: ignore[func-returns-value]
        {"approvals"},
        "bob (8d old, max 7d)",
    ),
    (
        "approval by a non-approver",
        _replace("approvals", lambda ledger: (ledger.approve("alice"), ledger.approve("mallory"))),  # type: ignore[func-returns-value]
        {"approvals"},
        "mallory (lacks role approver)",
    ),
]


@pytest.mark.parametrize(
    ("change", "failing", "word"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_gate_fails_alone(
    config: Config, change: Callable[[Ledger], None], failing: set[str], word: str
) -> None:
    ledger = full_ledger()
    change(ledger)
    decision = _decide(config, ledger)
    assert _failing(decision) == failing, [(r.gate, r.reason) for r in decision.gates]
    for gate in failing:
        assert _reason(decision, gate)
    if word:
        reasons = " | ".join(_reason(decision, gate) for gate in failing)
        assert word in reasons


def test_soak_alone_fails_and_then_passes(config: Config) -> None:
    ledger = full_ledger()
    ledger.promotions.clear()
    ledger.smokes.clear()
    ledger.promote("staging", ago=timedelta(minutes=50))
    ledger.smoke("staging", ago=timedelta(minutes=10))
    decision = _decide(config, ledger)
    assert _failing(decision) == {"after"}
    assert _reason(decision, "after") == "in staging for 50m, soak 1h"
    later = _decide(config, ledger, now=NOW + timedelta(minutes=10))
    assert _failing(later) == set()


def test_smoke_before_arrival_does_not_count(config: Config) -> None:
    ledger = full_ledger()
    ledger.promotions.clear()
    ledger.smokes.clear()
    ledger.smoke("staging", ago=5 * H)  # a smoke of the *previous* stay
    ledger.promote("staging", ago=3 * H)
    decision = _decide(config, ledger)
    assert _failing(decision) == {"after"}
    assert "predates its arrival" in _reason(decision, "after")
    ledger.smoke("staging", ago=2 * H)
    assert _failing(_decide(config, ledger)) == set()


def test_most_recent_smoke_decides(config: Config) -> None:
    ledger = full_ledger()  # a passed smoke 3h ago
    ledger.smoke("staging", passed=False, ago=2 * H)
    assert _failing(_decide(config, ledger)) == {"after"}
    ledger.smoke("staging", passed=True, ago=H)
    decision = _decide(config, ledger)
    assert _failing(decision) == set()
    used = next(r for r in decision.gates if r.gate == "after").evidence
    assert used[-1] == ledger.smokes[-1].ref


def test_rollback_skips_after(config: Config) -> None:
    ledger = full_ledger()
    ledger.promotions.clear()
    decision = _decide(config, ledger, rollback=True)
    assert _failing(decision) == set()
    assert "rollback" in _reason(decision, "after")


@pytest.mark.parametrize(
    ("first", "second", "passes"),
    [((10, 3), (10, 0), True), ((10, 0), (10, 3), False), ((0, 0), (10, 0), True)],
)
def test_most_recent_test_result_decides(
    config: Config, first: tuple[int, int], second: tuple[int, int], passes: bool
) -> None:
    ledger = full_ledger()
    ledger.tests.clear()
    ledger.test(*first, ago=3 * H)
    ledger.test(*second, ago=2 * H)
    decision = _decide(config, ledger)
    assert ("tests" not in _failing(decision)) is passes
    result = next(r for r in decision.gates if r.gate == "tests")
    assert result.evidence == (ledger.tests[1].ref,)
    assert f"#{ledger.tests[1].ref.index} by ci" in result.reason


def test_a_later_untrusted_result_does_not_replace_a_trusted_one(config: Config) -> None:
    ledger = full_ledger()  # ci: 10 passed, 5h ago
    ledger.test(0, 50, signer="ci", ago=3 * H)
    ledger.test(100, 0, signer="mallory", ago=H)  # newer, but mallory is no tester
    decision = _decide(config, ledger)
    assert _failing(decision) == {"tests"}
    result = next(r for r in decision.gates if r.gate == "tests")
    assert result.evidence == (ledger.tests[1].ref,)
    assert "ignored test results signed by mallory (not a tester)" not in result.reason
    ledger.tests.pop(1)
    decision = _decide(config, ledger)
    assert _failing(decision) == set()
    assert next(r for r in decision.gates if r.gate == "tests").evidence == (ledger.tests[0].ref,)


def test_same_time_ties_go_to_the_later_ledger_entry(config: Config) -> None:
    ledger = full_ledger()
    ledger.scans.clear()
    ledger.scan({"critical": 0}, ago=2 * H)
    ledger.scan({"critical": 4}, ago=2 * H)
    assert _failing(_decide(config, ledger)) == {"scan"}


@pytest.mark.parametrize(
    ("older", "newer", "passes"),
    [({"critical": 2}, {"critical": 0}, True), ({"critical": 0}, {"critical": 2}, False)],
)
def test_most_recent_scan_decides(
    config: Config, older: dict[str, int], newer: dict[str, int], passes: bool
) -> None:
    ledger = full_ledger()
    ledger.scans.clear()
    ledger.scan(older, ago=3 * H)
    ledger.scan(newer, ago=2 * H)
    decision = _decide(config, ledger)
    assert ("scan" not in _failing(decision)) is passes
    assert next(r for r in decision.gates if r.gate == "scan").evidence == (ledger.scans[1].ref,)


def test_a_fresh_but_failing_scan_is_not_rescued_by_an_older_clean_one(config: Config) -> None:
    ledger = full_ledger()
    ledger.scans.clear()
    ledger.scan({"critical": 0}, ago=30 * H)
    ledger.scan({"critical": 1}, ago=H)
    assert "critical 1/0" in _reason(_decide(config, ledger), "scan")


def test_exception_expires_while_the_scan_stays(config: Config) -> None:
    findings = (("CVE-2026-0001", "high"), ("CVE-2026-0003", "high"))
    ledger = full_ledger()
    ledger.scans.clear()
    ledger.scan({"high": 2}, findings, ago=H)
    assert _failing(_decide(config, ledger)) == set()
    # CVE-2026-0001's exception ends 2027-01-01; the same fresh scan fails from then on.
    later = datetime(2027, 1, 1, tzinfo=UTC)
    ledger = full_ledger(now=later)
    ledger.scans.clear()
    ledger.scan({"high": 2}, findings, ago=H)
    decision = _decide(config, ledger, now=later)
    assert "scan" in _failing(decision)
    assert "expired exceptions no longer count: CVE-2026-0001" in _reason(decision, "scan")
    just_before = _decide(config, ledger, now=later - timedelta(seconds=1))
    assert "scan" not in _failing(just_before)


BUILDER_APPROVES = """\
environments:
  production:
    repository: registry.example.com/payment-api
    requires:
      approvals: {count: 2, role: approver, distinct_from: [builder, promoter]}
"""


def test_builders_own_approval_is_not_counted(tmp_path: Path) -> None:
    config = config_of(tmp_path, BUILDER_APPROVES)
    ledger = Ledger()
    ledger.build(signer="dave")  # dave is builder and approver
    ledger.approve("dave")
    ledger.approve("alice")
    decision = _decide(config, ledger)
    assert _reason(decision, "approvals") == (
        "1 of 2 approvals: alice; not counted: dave (signed the build)"
    )
    assert not decision.allowed
    ledger.approve("bob")
    assert _decide(config, ledger).allowed


def test_promoters_own_approval_is_not_counted(tmp_path: Path) -> None:
    config = config_of(tmp_path, BUILDER_APPROVES)
    ledger = Ledger()
    ledger.build()
    ledger.approve("carol")  # carol is approver and deployer
    ledger.approve("alice")
    decision = _decide(config, ledger, promoter="carol")
    assert _reason(decision, "approvals") == (
        "1 of 2 approvals: alice; not counted: carol (the promoter)"
    )
    # The same approval counts when someone else promotes.
    assert _decide(config, ledger, promoter="deployer").allowed


def test_the_approvals_gate_gives_its_counts_as_fields(tmp_path: Path) -> None:
    from conveyor.policy.model import ApprovalCount

    config = config_of(tmp_path, BUILDER_APPROVES)
    ledger = Ledger()
    ledger.build()
    ledger.approve("carol")
    ledger.approve("alice")
    result = next(
        r for r in _decide(config, ledger, promoter="carol").gates if r.gate == "approvals"
    )
    count = ApprovalCount("approver", 2, ("alice",), (("carol", "the promoter"),))
    assert result.approvals == (count,)
    assert (count.have, count.met) == (1, False)
    assert result.reason == count.summary()  # the text is the counts said once
    assert result.short == "approvals: 1 of 2 (alice)"
    none = ApprovalCount("approver", 2)
    assert (none.summary(), none.short()) == ("0 of 2 approvals: none", "0 of 2")


def test_several_approval_requirements_are_counted_by_role(tmp_path: Path) -> None:
    config = config_of(
        tmp_path,
        BUILDER_APPROVES.replace(
            "approvals: {count: 2, role: approver, distinct_from: [builder, promoter]}",
            "approvals: [{count: 2, role: approver}, {count: 1, role: deployer}]",
        ),
    )
    ledger = Ledger()
    ledger.build()
    ledger.approve("alice")
    result = next(r for r in _decide(config, ledger).gates if r.gate == "approvals")
    assert [(c.role, c.have, c.needed) for c in result.approvals] == [
        ("approver", 1, 2),
        ("deployer", 0, 1),
    ]
    assert result.short == "approvals: approver 1 of 2 (alice); deployer 0 of 1"
    assert result.reason.startswith("approver: 1 of 2 approvals: alice; deployer: 0 of 1")


def test_distinct_from_a_role_excludes_its_holders(tmp_path: Path) -> None:
    config = config_of(
        tmp_path,
        BUILDER_APPROVES.replace("[builder, promoter]", "[builder, promoter, deployer]"),
    )
    ledger = Ledger()
    ledger.build()
    ledger.approve("carol")
    ledger.approve("alice")
    assert "carol (holds role deployer)" in _reason(_decide(config, ledger), "approvals")


def test_approvals_name_the_entries_used(tmp_path: Path) -> None:
    config = config_of(tmp_path, BUILDER_APPROVES)
    ledger = Ledger()
    ledger.build()
    ledger.approve("bob", ago=2 * H)
    ledger.approve("alice")
    ledger.approve("bob", ago=H)
    result = next(r for r in _decide(config, ledger).gates if r.gate == "approvals")
    assert result.passed
    assert result.evidence == (ledger.approvals[1].ref, ledger.approvals[2].ref)


# --- freeze -------------------------------------------------------------------------------


def test_freeze_window_denies_without_break_glass(config: Config) -> None:
    decision = _decide(config, _frozen_ledger(), now=FROZEN_NOW)
    assert _failing(decision) == {"freeze"}
    assert decision.frozen is True
    assert decision.break_glass is None
    reason = _reason(decision, "freeze")
    assert "until 2027-01-02T00:00:00Z" in reason
    assert "--break-glass REASON and 3 approver approvals" in reason


def test_break_glass_needs_the_extra_approvals(config: Config) -> None:
    ledger = _frozen_ledger()
    decision = _decide(config, ledger, now=FROZEN_NOW, break_glass="payment outage INC-1")
    assert _failing(decision) == {"freeze"}
    assert "break-glass refused" in _reason(decision, "freeze")
    assert "2 of 3 approvals" in _reason(decision, "freeze")
    assert decision.break_glass is None
    ledger.approve("carol")
    decision = _decide(config, ledger, now=FROZEN_NOW, break_glass="payment outage INC-1")
    assert _failing(decision) == set()
    assert decision.frozen is True
    assert decision.break_glass == "payment outage INC-1"
    assert "3 of 3 approvals: alice, bob, carol" in _reason(decision, "freeze")
    freeze = next(r for r in decision.gates if r.gate == "freeze")
    assert [(c.role, c.counted, c.needed, c.met) for c in freeze.approvals] == [
        ("approver", ("alice", "bob", "carol"), 3, True)
    ]
    assert freeze.short == f"freeze: {freeze.reason}"  # only the approvals gate is shortened


def test_break_glass_may_help_only_when_a_breakable_freeze_alone_fails(
    config: Config, tmp_path: Path
) -> None:
    only_the_freeze = _decide(config, _frozen_ledger(), now=FROZEN_NOW)
    assert _failing(only_the_freeze) == {"freeze"}
    assert only_the_freeze.only_breakable_freeze_fails
    refused = _decide(config, _frozen_ledger(), now=FROZEN_NOW, break_glass="INC-1")
    assert "break-glass refused" in _reason(refused, "freeze")
    assert refused.only_breakable_freeze_fails  # more approvals would let it through
    unapproved = full_ledger(now=FROZEN_NOW)
    unapproved.approvals.clear()
    also_approvals = _decide(config, unapproved, now=FROZEN_NOW)
    assert _failing(also_approvals) == {"freeze", "approvals"}
    assert also_approvals.frozen
    assert not also_approvals.only_breakable_freeze_fails  # refused whatever the reason
    (tmp_path / "glassless").mkdir()
    glassless = config_of(
        tmp_path / "glassless", EVERY_GATE.replace("        break_glass: {approvals: 1}\n", "")
    )
    no_glass = _decide(glassless, _frozen_ledger(), now=FROZEN_NOW)
    assert "no break_glass is configured" in _reason(no_glass, "freeze")
    assert not no_glass.only_breakable_freeze_fails
    assert not _decide(config, full_ledger()).only_breakable_freeze_fails  # nothing fails


def test_blank_break_glass_reason_is_no_break_glass(config: Config) -> None:
    ledger = _frozen_ledger()
    ledger.approve("carol")
    decision = _decide(config, ledger, now=FROZEN_NOW, break_glass="   ")
    assert _failing(decision) == {"freeze"}
    assert decision.break_glass is None


def test_break_glass_outside_a_freeze_is_not_recorded(config: Config) -> None:
    decision = _decide(config, full_ledger(), break_glass="just because")
    assert decision.allowed
    assert decision.frozen is False
    assert decision.break_glass is None
    assert _reason(decision, "freeze") == "not frozen (break-glass not needed)"


def _frozen_ledger() -> Ledger:
    return full_ledger(now=FROZEN_NOW)


WEEKLY = """\
environments:
  production:
    repository: registry.example.com/payment-api
    requires:
      freeze:
        windows:
          - {weekly: {days: [fri, sat, sun], from: "16:00", to: "23:59", timezone: Europe/Berlin}}
"""


@pytest.mark.parametrize(
    ("now", "frozen"),
    [
        (datetime(2026, 11, 27, 14, 59, tzinfo=UTC), False),  # Fri 15:59 CET
        (datetime(2026, 11, 27, 15, 0, tzinfo=UTC), True),  # Fri 16:00 CET
        (datetime(2026, 7, 3, 14, 0, tzinfo=UTC), True),  # Fri 16:00 CEST (summer)
        (datetime(2026, 7, 3, 13, 59, tzinfo=UTC), False),
        (datetime(2026, 3, 29, 14, 30, tzinfo=UTC), True),  # DST day, Sun 16:30 CEST
        (datetime(2026, 3, 29, 13, 59, tzinfo=UTC), False),  # Sun 15:59 CEST
    ],
)
def test_weekly_freeze_in_a_time_zone(tmp_path: Path, now: datetime, frozen: bool) -> None:
    config = config_of(tmp_path, WEEKLY)
    ledger = Ledger()
    ledger.build(ago=timedelta(0))
    decision = evaluate(config, request("production", now=now), ledger.evidence())
    assert decision.frozen is frozen
    assert decision.allowed is not frozen
    if frozen:
        assert "no break_glass is configured" in _reason(decision, "freeze")


def test_weekly_freeze_with_break_glass(tmp_path: Path) -> None:
    config = config_of(tmp_path, WEEKLY + "        break_glass: {approvals: 1, role: approver}\n")
    ledger = Ledger()
    ledger.build()
    ledger.approve("alice")
    now = datetime(2026, 11, 27, 16, tzinfo=UTC)
    refused = evaluate(config, request("production", now=now), ledger.evidence())
    assert not refused.allowed
    allowed = evaluate(
        config, request("production", now=now, break_glass="hotfix"), ledger.evidence()
    )
    assert allowed.allowed
    assert allowed.break_glass == "hotfix"
    assert "1 of 1 approvals: alice" in _reason(allowed, "freeze")


def test_global_freeze_applies_only_where_listed(tmp_path: Path) -> None:
    body = """\
    environments:
      staging: {repository: r.io/s, requires: {}}
      production: {repository: r.io/p, requires: {}}
    freeze:
      windows: ["2026-11-26T00:00:00Z/P2D"]
      environments: [production]
    """
    config = config_of(tmp_path, body)
    ledger = Ledger()
    ledger.build()
    assert evaluate(config, request("staging"), ledger.evidence()).allowed
    production = evaluate(config, request("production"), ledger.evidence())
    assert production.frozen
    assert _failing(production) == {"freeze"}


def test_build_record_is_required_even_with_no_gates(tmp_path: Path) -> None:
    config = config_of(tmp_path, "environments:\n  dev: {repository: r.io/d, requires: {}}\n")
    empty = evaluate(config, request("dev"), Ledger().evidence())
    assert [(r.gate, r.passed) for r in empty.gates] == [("build", False)]
    assert empty.gates[0].reason == "no build record: build once, never adopt"
    ledger = Ledger()
    ledger.build()
    built = evaluate(config, request("dev"), ledger.evidence())
    assert built.allowed
    assert built.gates[0].evidence == (ledger.builds[0].ref,)
    assert built.digest == DIGEST


def test_break_glass_counts_like_the_approvals_gate(tmp_path: Path) -> None:
    body = EVERY_GATE.replace(
        "approvals: {count: 2, role: approver, max_age: 7d}",
        "approvals: {count: 2, role: approver, max_age: 7d, "
        "distinct_from: [builder, promoter, deployer]}",
    )
    config = config_of(tmp_path, body)
    ledger = _frozen_ledger()
    ledger.approve("carol")  # approver, but holds deployer: excluded by the approvals gate
    decision = _decide(config, ledger, now=FROZEN_NOW, break_glass="outage")
    assert _failing(decision) == {"freeze"}
    assert "carol (holds role deployer)" in _reason(decision, "freeze")


def test_break_glass_is_named_even_when_another_gate_fails(config: Config) -> None:
    ledger = _frozen_ledger()
    ledger.approve("carol")
    ledger.tests.clear()
    decision = _decide(config, ledger, now=FROZEN_NOW, break_glass="outage")
    assert _failing(decision) == {"tests"}
    assert decision.frozen
    assert decision.break_glass == "outage"


def test_unknown_severities_pass_where_max_names_unknown(tmp_path: Path) -> None:
    body = EVERY_GATE.replace(
        "max: {critical: 0, high: 1}", "max: {critical: 0, high: 1, unknown: 3}"
    )
    config = config_of(tmp_path, body)
    ledger = full_ledger()
    ledger.scans.clear()
    ledger.scan({"unknown": 3}, ago=H)
    assert "scan" not in _failing(_decide(config, ledger))
    ledger.scan({"unknown": 4}, ago=H / 2)
    assert "unknown 4/3" in _reason(_decide(config, ledger), "scan")


def test_a_scan_gate_without_limits_does_not_limit_unknown(tmp_path: Path) -> None:
    body = EVERY_GATE.replace("max: {critical: 0, high: 1}", "max: {}")
    ledger = full_ledger()
    ledger.scans.clear()
    ledger.scan({"unknown": 2, "critical": 2}, ago=H)
    assert "scan" not in _failing(_decide(config_of(tmp_path, body), ledger))
