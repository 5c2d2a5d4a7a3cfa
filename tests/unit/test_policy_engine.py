"""The engine: decisions for the issue's example, policy hashing, environment order, random
evidence (never raises, fails closed) and speed with 10,000 entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conveyor.errors import InputError
from conveyor.policy.config import UnknownEnvironmentError, load_config
from conveyor.policy.engine import environment_order, evaluate, policy_sha256
from conveyor.policy.model import (
    ApprovalEvidence,
    BuildEvidence,
    EvidenceRef,
    EvidenceSet,
    PromotionEvidence,
    PromotionRequest,
    ScanEvidence,
    SmokeEvidence,
    TestEvidence,
)

from ._policy_support import (
    COMMIT,
    DIGEST,
    IDENTITIES,
    ISSUE_EXAMPLE,
    NOW,
    OTHER_DIGEST,
    ROLES,
    Ledger,
    config_of,
    full_ledger,
    request,
    write_config,
)


def test_issue_example_staging_then_production(tmp_path: Path) -> None:
    config = config_of(tmp_path, ISSUE_EXAMPLE)
    ledger = Ledger()
    ledger.build(ago=timedelta(hours=6))
    ledger.test(ago=timedelta(hours=5))
    ledger.scan({"critical": 0, "high": 0}, ago=timedelta(hours=5))

    refused = evaluate(config, request("production"), ledger.evidence())
    assert not refused.allowed
    assert {r.gate for r in refused.gates if not r.passed} == {"after", "approvals"}
    assert "never promoted to staging" in next(r.reason for r in refused.gates if r.gate == "after")
    assert "0 of 2 approvals" in next(r.reason for r in refused.gates if r.gate == "approvals")

    staging = evaluate(config, request("staging"), ledger.evidence())
    assert staging.allowed
    assert [r.gate for r in staging.gates] == ["build", "provenance", "tests", "scan"]

    production = evaluate(config, request("production"), full_ledger().evidence())
    assert production.allowed
    assert production.environment == "production"
    assert production.digest == DIGEST
    assert len(production.policy_sha256) == 64


def test_unknown_environment_is_a_usage_error(tmp_path: Path) -> None:
    config = config_of(tmp_path, ISSUE_EXAMPLE)
    with pytest.raises(UnknownEnvironmentError, match="defines: staging, production") as info:
        evaluate(config, request("prod"), full_ledger().evidence())
    assert isinstance(info.value, InputError)


def test_evidence_about_another_digest_is_a_caller_bug(tmp_path: Path) -> None:
    config = config_of(tmp_path, ISSUE_EXAMPLE)
    with pytest.raises(ValueError, match="evidence is about"):
        evaluate(config, request("staging"), full_ledger().evidence(OTHER_DIGEST))


def test_config_model_is_accepted_too(tmp_path: Path) -> None:
    config = config_of(tmp_path, ISSUE_EXAMPLE)
    evidence = full_ledger().evidence()
    assert evaluate(config.model, request("staging"), evidence) == evaluate(
        config, request("staging"), evidence
    )


REORDERED = """\
environments:
  production:
    requires:
      scan: {max_age: PT24H, max: {high: 0, critical: 0}}
      tests: {max_failed: 0, min_passed: 1}
      approvals: {distinct_from: [builder, promoter], role: approver, count: 2}
      after: {smoke: true, environment: staging}
    tags: [production]
    repository: registry.example.com/payment-api
  staging:
    requires:
      scan: {max: {critical: 0, high: 0}, max_age: 1d}
      provenance: {}
      tests: {min_passed: 1}
    repository: registry.example.com/payment-api-staging
    tags: [staging]
"""


def test_policy_hash_ignores_key_order_and_spelling(tmp_path: Path) -> None:
    first = config_of(tmp_path / "a", ISSUE_EXAMPLE)
    second = config_of(tmp_path / "b", REORDERED)
    for environment in ("staging", "production"):
        assert policy_sha256(first, environment) == policy_sha256(second, environment)
    assert policy_sha256(first, "staging") != policy_sha256(first, "production")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("count: 2", "count: 1"),
        ("max_age: 24h}\n  production", "max_age: 25h}\n  production"),
        ("tags: [production]", "tags: [prod]"),
        ("payment-api\n", "payment-api2\n"),
        ("distinct_from: [builder, promoter]", "distinct_from: [builder]"),
    ],
)
def test_policy_hash_changes_with_the_policy(tmp_path: Path, old: str, new: str) -> None:
    changed_text = ISSUE_EXAMPLE.replace(old, new, 1)
    assert changed_text != ISSUE_EXAMPLE
    before = config_of(tmp_path / "a", ISSUE_EXAMPLE)
    after = config_of(tmp_path / "b", changed_text)
    assert any(
        policy_sha256(before, env) != policy_sha256(after, env) for env in ("staging", "production")
    )


def test_policy_hash_covers_identities_and_freezes(tmp_path: Path) -> None:
    base = config_of(tmp_path / "a", ISSUE_EXAMPLE)
    frozen = config_of(
        tmp_path / "b", ISSUE_EXAMPLE + "freeze: {windows: ['2026-12-20T00:00:00Z/P1D']}\n"
    )
    assert policy_sha256(base, "staging") != policy_sha256(frozen, "staging")
    more_roles = load_config(
        write_config(
            tmp_path / "c",
            ISSUE_EXAMPLE,
            head=IDENTITIES.replace("roles: [approver]}", "roles: [approver, tester]}", 1),
        )
    )
    assert policy_sha256(base, "staging") != policy_sha256(more_roles, "staging")
    # The hash does not depend on where the checkout lives.
    assert policy_sha256(base, "staging") == policy_sha256(
        config_of(tmp_path / "b", ISSUE_EXAMPLE), "staging"
    )


@pytest.mark.parametrize(
    ("body", "order"),
    [
        (ISSUE_EXAMPLE, ["staging", "production"]),
        (REORDERED, ["staging", "production"]),
        (
            "environments:\n"
            "  prod: {repository: r.io/p, requires: {after: stage}}\n"
            "  qa: {repository: r.io/q, requires: {}}\n"
            "  stage: {repository: r.io/s, requires: {after: dev}}\n"
            "  dev: {repository: r.io/d, requires: {}}\n"
            "  hotfix: {repository: r.io/h, requires: {after: dev}}\n",
            ["qa", "dev", "stage", "prod", "hotfix"],
        ),
        ("", []),
    ],
)
def test_environment_order(tmp_path: Path, body: str, order: list[str]) -> None:
    config = config_of(tmp_path, body)
    result = environment_order(config)
    assert result == order
    for name in result:
        after = config.model.environment(name).requires.after
        if after is not None:
            assert result.index(after.environment) < result.index(name)


# --- random evidence ----------------------------------------------------------------------

EVERYTHING = """\
environments:
  staging:
    repository: r.io/s
    requires: {}
  production:
    repository: r.io/p
    requires:
      provenance: {builder_id: "https://github.com/*"}
      tests: {min_passed: 1, max_failed: 0}
      scan:
        max: {critical: 0, high: 0}
        max_age: 24h
        exceptions: [{id: CVE-1, reason: r, expires: 2026-12-01}]
      after: {environment: staging, soak: 1h, smoke: true}
      approvals: {count: 2, max_age: 7d}
      freeze:
        windows:
          - 2026-11-26T10:00:00Z/PT1H
          - {weekly: {days: [thu], from: "13:00", to: "14:00", timezone: Europe/Berlin}}
        break_glass: {approvals: 1}
"""

_names = st.sampled_from(sorted(ROLES))
_times = st.datetimes(min_value=datetime(2026, 11, 1), max_value=datetime(2026, 12, 31)).map(
    lambda moment: moment.replace(tzinfo=UTC)
)
_naive_or_aware = st.one_of(
    _times, st.datetimes(min_value=datetime(2026, 11, 1), max_value=datetime(2026, 12, 31))
)
_roles = st.frozensets(
    st.sampled_from(["builder", "tester", "scanner", "approver", "deployer", "x"])
)
_envs = st.sampled_from(["staging", "production", "dev"])
_digests = st.sampled_from([DIGEST, OTHER_DIGEST])
_counts = st.integers(min_value=-3, max_value=5)


@st.composite
def _refs(draw: st.DrawFn) -> EvidenceRef:
    return EvidenceRef(
        index=draw(st.integers(min_value=0, max_value=10**6)),
        envelope_digest="sha256:" + "0" * 64,
        signer=draw(_names),
        signer_roles=draw(st.one_of(_roles, _names.map(ROLES.__getitem__))),
        recorded_at=draw(_naive_or_aware),
    )


_labels = st.dictionaries(
    st.sampled_from(["git.commit", "ci.run", "org.opencontainers.image.revision", "x"]),
    st.sampled_from([COMMIT, COMMIT[:7], "42", "", "zz", "ffffffff"]),
)
_builds = st.builds(
    BuildEvidence,
    ref=_refs(),
    commit=st.sampled_from([COMMIT, COMMIT[:7], "", "main"]),
    run_id=st.sampled_from([None, "42", "", "7"]),
    builder_id=st.sampled_from([None, "https://github.com/acme/x", "other"]),
    labels=_labels,
)
_tests = st.builds(
    TestEvidence, ref=_refs(), passed=_counts, failed=_counts, errored=_counts, skipped=_counts
)
_scans = st.builds(
    ScanEvidence,
    ref=_refs(),
    scanned_at=st.one_of(st.none(), _naive_or_aware),
    counts=st.dictionaries(st.sampled_from(["critical", "HIGH", "low", "weird", ""]), _counts),
    findings=st.lists(
        st.tuples(
            st.sampled_from(["CVE-1", "cve-1", "CVE-2", ""]),
            st.sampled_from(["critical", "high", "?"]),
        ),
        max_size=4,
    ).map(tuple),
)
_smokes = st.builds(SmokeEvidence, ref=_refs(), environment=_envs, passed=st.booleans())
_approvals = st.builds(ApprovalEvidence, ref=_refs(), environment=_envs, digest=_digests)
_promotions = st.builds(
    PromotionEvidence,
    ref=_refs(),
    environment=_envs,
    digest=_digests,
    rollback=st.booleans(),
    break_glass=st.one_of(st.none(), st.text(max_size=5)),
)
_evidence = st.builds(
    EvidenceSet,
    digest=st.just(DIGEST),
    builds=st.lists(_builds, max_size=3).map(tuple),
    tests=st.lists(_tests, max_size=3).map(tuple),
    scans=st.lists(_scans, max_size=3).map(tuple),
    smokes=st.lists(_smokes, max_size=3).map(tuple),
    approvals=st.lists(_approvals, max_size=5).map(tuple),
    promotions=st.lists(_promotions, max_size=3).map(tuple),
)
_requests = st.builds(
    PromotionRequest,
    digest=st.just(DIGEST),
    environment=st.sampled_from(["staging", "production"]),
    promoter=_names,
    promoter_roles=_roles,
    now=_naive_or_aware,
    break_glass=st.one_of(st.none(), st.sampled_from(["", " ", "outage"])),
    rollback=st.booleans(),
)


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> object:
    return config_of(tmp_path_factory.mktemp("everything"), EVERYTHING)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request_=_requests, evidence=_evidence)
def test_random_evidence_never_raises_and_fails_closed(
    everything: object, request_: PromotionRequest, evidence: EvidenceSet
) -> None:
    decision = evaluate(everything, request_, evidence)  # type: ignore[arg-type]
    assert decision.allowed is all(result.passed for result in decision.gates)
    if any(not result.passed for result in decision.gates):
        assert decision.allowed is False
    assert decision.gates[0].gate == "build"
    trusted_builds = [b for b in evidence.builds if "builder" in b.ref.signer_roles]
    if not trusted_builds:
        assert decision.allowed is False
    for result in decision.gates:
        assert result.reason
        assert "\n" not in result.reason
    if decision.break_glass is not None:
        assert decision.frozen
        assert next(r for r in decision.gates if r.gate == "freeze").passed
        assert decision.break_glass == (request_.break_glass or "").strip()


# --- speed --------------------------------------------------------------------------------


def _big_ledger(entries: int) -> Ledger:
    ledger = full_ledger()
    per_kind = entries // 6
    for i in range(per_kind):
        ago = timedelta(hours=6, seconds=i)
        ledger.build(ago=ago)
        ledger.test(ago=ago)
        ledger.scan({"critical": 0, "high": 0}, (("CVE-X", "high"),), ago=ago)
        ledger.smoke("staging", ago=ago + timedelta(days=1))
        ledger.approve("alice" if i % 2 else "bob", ago=timedelta(minutes=30, seconds=i))
        ledger.promote("dev", ago=ago)
    return ledger


def test_ten_thousand_entries_evaluate(tmp_path: Path) -> None:
    config = config_of(tmp_path, EVERYTHING)
    evidence = _big_ledger(10_000).evidence()
    assert (
        sum(
            len(getattr(evidence, k))
            for k in ("builds", "tests", "scans", "smokes", "approvals", "promotions")
        )
        >= 10_000
    )
    req = request("production", now=NOW + timedelta(hours=3))
    # Speed is measured in benchmarks/promote.py; here: 10,000 entries decide correctly.
    decision = evaluate(config, req, evidence)
    assert decision.gates
    assert decision == evaluate(config, req, evidence)
