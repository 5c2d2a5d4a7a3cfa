"""A server's signer acting for a principal: the role check, the signed field, the ledger's
signer column and the reader all name the principal; misuse is refused before anything is
recorded. Pre-signed envelopes go through the same path."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conveyor import service
from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    PRINCIPAL_V1,
    approval,
    load_signing_key,
    make_statement,
    sign_envelope,
)
from conveyor.errors import InputError
from conveyor.ledger import open_ledger
from conveyor.oci.digest import Digest
from tests.unit.service._pipeline import Pipeline, make_pipeline

BODY = (
    "environments:\n  prod:\n    repository: oci:prod\n    requires:\n"
    "      approvals: {count: 1, role: approver, distinct_from: [builder]}\n"
)


@pytest.fixture
def team(tmp_path: Path) -> Pipeline:
    p = make_pipeline(
        tmp_path,
        {"ci": "builder, tester, scanner", "deployer": "deployer", "alice": "approver",
         "server": "server"},
        BODY,
    )  # fmt: skip
    text = p.config.read_text().replace(
        "identities:\n", "identities:\n  bob: {roles: [approver]}\n"
    )
    p.config.write_text(text)
    return p


def _rows(p: Pipeline) -> list[tuple[str, str, dict[str, object]]]:
    ledger = open_ledger(f"sqlite:///{p.root / '.conveyor' / 'conveyor.db'}")
    try:
        out = []
        for entry in ledger.entries():
            payload = json.loads(base64.b64decode(json.loads(entry.envelope)["payload"]))
            out.append((entry.kind, entry.signer, payload["predicate"]))
        return out
    finally:
        ledger.close()


def _bob() -> service.Principal:
    return service.Principal("bob", {"method": "api-token", "token": "bob-laptop"}, "req-1")


def test_the_server_signs_for_the_principal_and_the_reader_counts_the_principal(
    team: Pipeline,
) -> None:
    ref = team.built()
    server = load_signing_key(team.key("server"))
    recorded = service.approve(
        ref, environment="prod", signer=server, principal=_bob(), config_path=team.config
    )
    assert recorded.signer == "bob"
    kind, signer, predicate = _rows(team)[-1]
    assert (kind, signer) == ("approval", "bob")
    assert predicate[PRINCIPAL_V1] == {
        "identity": "bob",
        "authenticated": {"method": "api-token", "token": "bob-laptop"},
        "request_id": "req-1",
    }
    result = team.promote(ref, "prod")  # bob's approval counts: the gate passes
    gate = next(g for g in result.decision.gates if g.gate == "approvals")
    assert gate.passed
    assert "bob" in gate.reason
    events = service.trace(ref, config_path=team.config).events
    approvals = [e for e in events if e.kind == "approval"]
    assert [(e.signer, e.via) for e in approvals] == [
        ("bob", "API token bob-laptop (signed by server)")
    ]
    assert service.audit_verify(config_path=team.config).ok


@pytest.mark.parametrize(
    ("signer", "principal", "message"),
    [
        ("alice", "bob", "only an identity with the role 'server'"),  # a client for another
        ("server", "mallory", "not an identity"),
        ("server", "server", "is a server identity"),
        ("server", "ci", "may not record approval evidence"),  # the principal's roles decide
    ],
)
def test_misuse_is_refused_before_anything_is_recorded(
    team: Pipeline, signer: str, principal: str, message: str
) -> None:
    ref = team.built()
    before = len(_rows(team))
    with pytest.raises(service.UnknownSignerError, match=message):
        service.approve(
            ref,
            environment="prod",
            signer=load_signing_key(team.key(signer)),
            principal=service.Principal(principal),
            config_path=team.config,
        )
    assert len(_rows(team)) == before


def _envelope(p: Pipeline, ref: str, who: str, predicate: dict[str, object]) -> bytes:
    digest = Digest.parse(ref.split("@")[1])
    statement = make_statement("app", digest, APPROVAL_V1, predicate)
    return sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [load_signing_key(p.key(who))])


def test_a_pre_signed_envelope_is_verified_and_recorded_through_the_same_path(
    team: Pipeline,
) -> None:
    from datetime import UTC, datetime

    ref = team.built()
    envelope = _envelope(team, ref, "alice", approval(environment="prod", at=datetime.now(UTC)))
    with service.Workspace.open(team.config) as ws:
        opened = service.open_envelope(envelope, workspace=ws)
        assert (opened.kind, opened.signer, opened.environment) == ("approval", "alice", "prod")
        recorded = service.record_envelope(ref, envelope, workspace=ws)
    assert (recorded.kind, recorded.signer) == ("approval", "alice")
    assert _rows(team)[-1][:2] == ("approval", "alice")
    forged = _envelope(
        team,
        ref,
        "alice",
        {**approval(environment="prod", at=datetime.now(UTC)), PRINCIPAL_V1: {"identity": "bob"}},
    )
    with service.Workspace.open(team.config) as ws, pytest.raises(InputError, match="principal"):
        service.record_envelope(ref, forged, workspace=ws)
    builder_approves = _envelope(
        team, ref, "ci", approval(environment="prod", at=datetime.now(UTC))
    )
    with service.Workspace.open(team.config) as ws, pytest.raises(service.UnknownSignerError):
        service.record_envelope(ref, builder_approves, workspace=ws)
