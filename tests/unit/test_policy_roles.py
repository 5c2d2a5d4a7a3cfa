"""Roles: five built in, more declared under ``roles:``; the one table of who signs what."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ConfigError
from conveyor.policy.config import load_config
from conveyor.policy.engine import evaluate
from conveyor.policy.model import ApprovalEvidence
from conveyor.policy.roles import SIGNER_ROLE, EvidenceKind, Role, signer_roles
from tests.unit._policy_support import DIGEST, NOW, Ledger, request, write_config

HEAD = """\
version: 1
{roles}identities:
  ci:    {{key: keys/ci.pub,    roles: [builder, tester, scanner]}}
  alice: {{key: keys/alice.pub, roles: [{alice}]}}
  bob:   {{key: keys/bob.pub,   roles: [approver]}}
"""


def _load(tmp_path: Path, body: str, *, roles: str = "", alice: str = "approver") -> object:
    head = HEAD.format(roles=roles, alice=alice)
    return load_config(write_config(tmp_path, body, head=head))


def test_every_kind_has_one_signing_role() -> None:
    assert set(SIGNER_ROLE) == set(EvidenceKind)
    assert signer_roles(EvidenceKind.APPROVAL) == {"approver"}
    assert signer_roles(EvidenceKind.APPROVAL, approval_roles={"security"}) == {"security"}
    assert signer_roles(EvidenceKind.ROLLBACK) == {Role.DEPLOYER}


@pytest.mark.parametrize(
    ("roles", "alice", "message"),
    [
        ("", "release-manager", "identities.alice.roles.0: unknown role 'release-manager'"),
        ("roles: [approver]\n", "approver", "roles.0: 'approver' is built in"),
        ("roles: [promoter]\n", "approver", "roles.0: 'promoter' is reserved"),
        ("roles: [sec, sec]\n", "sec", "roles.1: 'sec' is declared more than once"),
        ("roles: [Sec]\n", "approver", "roles.0"),
    ],
)
def test_role_names_are_checked_where_they_are_written(
    tmp_path: Path, roles: str, alice: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "", roles=roles, alice=alice)
    assert any(message in problem for problem in info.value.problems), info.value.problems


def test_a_gate_naming_an_undeclared_role_says_how_to_declare_it(tmp_path: Path) -> None:
    body = """\
    environments:
      prod:
        repository: oci:prod
        requires:
          approvals: [{count: 1}, {count: 1, role: secutiry}]
    """
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, body, roles="roles: [security]\n", alice="security")
    (problem,) = info.value.problems
    assert "environments.prod.requires.approvals.1.role: unknown role 'secutiry'" in problem
    assert "declare it under 'roles:'" in problem


def test_approval_roles_are_what_the_environment_names(tmp_path: Path) -> None:
    body = """\
    freeze:
      windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']
      break_glass: {approvals: 1, role: lead}
    environments:
      prod:
        repository: oci:prod
        requires:
          approvals: [{count: 2}, {count: 1, role: security}]
      dev: {repository: oci:dev, requires: {}}
    """
    config = _load(tmp_path, body, roles="roles: [security, lead]\n", alice="security, lead")
    model = config.model  # type: ignore[attr-defined]
    assert model.approval_roles("prod") == {"approver", "security", "lead"}
    assert model.approval_roles("dev") == {"lead"}
    assert model.approval_roles("nowhere") == frozenset()


def test_a_list_of_requirements_counts_an_identity_once_in_each(tmp_path: Path) -> None:
    body = """\
    environments:
      prod:
        repository: oci:prod
        requires:
          approvals: [{count: 2, role: approver}, {count: 1, role: security}]
    """
    config = _load(tmp_path, body, roles="roles: [security]\n", alice="approver, security")
    ledger = Ledger()
    ledger.build()
    both = frozenset({"approver", "security"})
    ledger.approvals.append(ApprovalEvidence(ledger.ref("alice", NOW, roles=both), "prod", DIGEST))
    decision = evaluate(config, request("prod"), ledger.evidence())  # type: ignore[arg-type]
    gate = next(g for g in decision.gates if g.gate == "approvals")
    assert not gate.passed
    assert "approver: 1 of 2 approvals: alice" in gate.reason
    assert "security: 1 of 1 approvals: alice" in gate.reason
    ledger.approve("bob", "prod")
    decision = evaluate(config, request("prod"), ledger.evidence())  # type: ignore[arg-type]
    assert decision.allowed, decision.failed
