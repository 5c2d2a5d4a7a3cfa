"""The role an approvals gate (or break-glass) names is the role that may approve and that
counts: record time and read time ask the same table (regression, issue 8 bug 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import service
from conveyor.errors import ConfigError
from tests.unit.service._pipeline import make_pipeline

BASE = {"ci": "builder, tester, scanner", "deployer": "deployer"}


def _env(approvals: str, *, freeze: str = "") -> str:
    return (
        f"{freeze}environments:\n"
        f"  prod:\n    repository: oci:prod\n    requires:\n      approvals: {approvals}\n"
    )


def test_an_approvals_gate_naming_a_builtin_role_lets_that_role_approve(tmp_path: Path) -> None:
    p = make_pipeline(
        tmp_path,
        {**BASE, "dep": "deployer"},
        _env("{count: 1, role: deployer, distinct_from: [builder]}"),
    )
    ref = p.built()
    recorded = p.approve(ref, "prod", "dep")
    assert recorded.kind == "approval"
    result = p.promote(ref, "prod")
    assert result.recorded
    gate = next(g for g in result.decision.gates if g.gate == "approvals")
    assert gate.passed
    assert "dep" in gate.reason


def test_a_config_defined_role_may_approve_and_counts(tmp_path: Path) -> None:
    p = make_pipeline(
        tmp_path,
        {**BASE, "rm": "release-manager", "alice": "approver"},
        "roles: [release-manager]\n" + _env("{count: 1, role: release-manager}"),
    )
    ref = p.built()
    p.approve(ref, "prod", "rm")
    # the gate names release-manager: a plain approver may not approve for prod
    with pytest.raises(service.UnknownSignerError, match="release-manager"):
        p.approve(ref, "prod", "alice")
    assert p.promote(ref, "prod").recorded


def test_an_undeclared_role_is_a_config_error_naming_the_fix(tmp_path: Path) -> None:
    p = make_pipeline(
        tmp_path, {**BASE, "rm": "release-manager"}, _env("{count: 1, role: release-manager}")
    )
    with pytest.raises(ConfigError) as info:
        service.history("prod", config_path=p.config)
    assert "roles:" in str(info.value.problems)


def test_a_list_of_requirements_must_all_hold(tmp_path: Path) -> None:
    p = make_pipeline(
        tmp_path,
        {**BASE, "alice": "approver", "bob": "approver", "sec": "security, approver"},
        "roles: [security]\n" + _env("[{count: 2, role: approver}, {count: 1, role: security}]"),
    )
    ref = p.built()
    p.approve(ref, "prod", "alice")
    p.approve(ref, "prod", "bob")
    with pytest.raises(service.PromotionDenied) as info:
        p.promote(ref, "prod")
    assert "security" in str(info.value)
    p.approve(ref, "prod", "sec")  # counts once per requirement: for security and approver
    result = p.promote(ref, "prod")
    assert result.recorded


def test_break_glass_role_may_approve_during_a_freeze(tmp_path: Path) -> None:
    freeze = (
        "roles: [incident-lead]\n"
        "freeze:\n  windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']\n"
        "  break_glass: {approvals: 1, role: incident-lead}\n"
    )
    p = make_pipeline(
        tmp_path,
        {**BASE, "lead": "incident-lead"},
        freeze + "environments:\n  prod:\n    repository: oci:prod\n    requires: {}\n",
    )
    ref = p.built()
    p.approve(ref, "prod", "lead")
    result = p.promote(ref, "prod", break_glass="incident 7")
    assert result.decision.break_glass == "incident 7"
