"""Identities limited to environments (``identities.NAME.environments``): a limited identity
may approve, promote, roll back and attest smoke tests only there; recording refuses the
rest (exit 1), and evidence it signed for another environment does not count when read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import conveyor.cli.custody  # noqa: F401 - registers approve on the app
from conveyor import service
from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    approval,
    load_signing_key,
    make_statement,
    sign_envelope,
)
from conveyor.cli.app import execute
from conveyor.errors import ConfigError
from conveyor.oci.digest import Digest
from conveyor.policy.roles import ENVIRONMENT_KINDS, EvidenceKind, may_act_in
from tests.unit.service._pipeline import Pipeline, make_pipeline

ENVIRONMENTS = """\
environments:
  staging:
    repository: oci:staging
    requires:
      provenance: {}
  prod:
    repository: oci:prod
    requires:
      approvals: {count: 1, role: approver}
"""
IDENTITIES = {
    "ci": "builder, tester, scanner",
    "deployer": "deployer",
    "stager": "approver, deployer, tester",
    "alice": "approver",
}


def _pipeline(tmp_path: Path, limit: str = "[staging]") -> Pipeline:
    p = make_pipeline(tmp_path, IDENTITIES, ENVIRONMENTS)
    text = p.config.read_text()
    line = "  stager: {key: keys/stager.pub, roles: [approver, deployer, tester]}"
    assert line in text
    p.config.write_text(text.replace(line, line[:-1] + f", environments: {limit}}}"))
    return p


def test_the_rule_in_the_table() -> None:
    assert {EvidenceKind.SMOKE, EvidenceKind.APPROVAL, EvidenceKind.PROMOTION} <= (
        ENVIRONMENT_KINDS
    )
    assert EvidenceKind.BUILD not in ENVIRONMENT_KINDS
    assert may_act_in("prod", None)
    assert may_act_in("staging", frozenset({"staging"}))
    assert not may_act_in("prod", frozenset({"staging"}))
    assert not may_act_in(None, frozenset({"staging"}))  # names no environment: not counted


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("[qa]", "identities.stager.environments.0: unknown environment 'qa'; defined: staging"),
        (
            "[staging, staging]",
            "identities.stager.environments: environments are listed more",
        ),
        ("[]", "identities.stager.environments"),
        ("[Staging]", "identities.stager.environments.0"),
        ("staging", "identities.stager.environments"),
    ],
)
def test_a_bad_environments_list_is_a_config_error(
    tmp_path: Path, limit: str, message: str
) -> None:
    p = _pipeline(tmp_path, limit)
    with pytest.raises(ConfigError) as info:
        service.status(config_path=p.config)
    assert any(message in problem for problem in info.value.problems), info.value.problems
    assert all(":" in problem.split(" ")[0] for problem in info.value.problems)  # file:line:col


def test_a_limited_identity_records_only_for_its_environments(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    ref = p.built()
    assert p.approve(ref, "staging", "stager").environment == "staging"
    service.attest_smoke(
        ref, environment="staging", passed=True, key=p.key("stager"), config_path=p.config
    )
    with pytest.raises(service.UnknownSignerError, match="may act only in staging"):
        p.approve(ref, "prod", "stager")
    with pytest.raises(service.UnknownSignerError, match="may act only in staging"):
        service.attest_smoke(
            ref, environment="prod", passed=True, key=p.key("stager"), config_path=p.config
        )
    with pytest.raises(service.UnknownSignerError, match="a promotion for prod"):
        service.promote(ref, environment="prod", key=p.key("stager"), config_path=p.config)
    promoted = service.promote(
        ref, environment="staging", key=p.key("stager"), config_path=p.config
    )
    assert promoted.recorded
    p.approve(ref, "prod", "alice")  # an identity without a limit: every environment
    assert p.promote(ref, "prod").recorded


def test_the_cli_exits_1_for_an_environment_outside_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _pipeline(tmp_path)
    ref = p.built()
    code = execute(
        ["approve", ref, "--env", "prod", "--key", p.key("stager"), "--config", str(p.config)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("conveyor: error: identity 'stager' may not record approval evidence")
    assert "may act only in staging" in err


def test_an_approval_injected_for_another_environment_does_not_count(tmp_path: Path) -> None:
    """A writer with the database and stager's key appends a signed approval for prod (the
    recording path would refuse it): the reader ignores it and the gate stays closed."""
    p = _pipeline(tmp_path)
    ref = p.built()
    digest = ref.split("@")[1]
    name = ref.split("@")[0]
    signer = load_signing_key(p.key("stager"))
    statement = make_statement(
        name,
        Digest.parse(digest),
        APPROVAL_V1,
        approval(environment="prod", comment=None, at=datetime.now(UTC)),
    )
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    with service.Workspace.open(p.config) as workspace:
        workspace.ledger.append(
            envelope,
            subject_digest=digest,
            subject_name=name,
            predicate_type=APPROVAL_V1,
            kind="approval",
            signer="stager",
            keyid=signer.keyid,
            environment="prod",
        )
    with service.Workspace.open(p.config) as workspace:
        verified = service.VerifiedLedger(workspace)
        assert verified.entries(kind=EvidenceKind.APPROVAL, environment="prod") == []
        assert any("who may act only in staging" in note for note in verified.ignored)
        decision = service.check(ref, environment="prod", workspace=workspace).decision
    gate = next(g for g in decision.gates if g.gate == "approvals")
    assert not gate.passed
    with pytest.raises(service.PromotionDenied):
        p.promote(ref, "prod")
    # Lift the limit: the very same row counts (so it was the limit that kept it out).
    text = p.config.read_text().replace(", environments: [staging]", "")
    p.config.write_text(text)
    with service.Workspace.open(p.config) as workspace:
        decision = service.check(ref, environment="prod", workspace=workspace).decision
    assert next(g for g in decision.gates if g.gate == "approvals").passed
