"""``service.admit_break_glass`` in-process: the rule ``promote --break-glass`` uses, one
recording path, one entry per request uid, nothing past the deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor import service
from conveyor.attest import load_signing_key
from tests.unit.service._pipeline import Pipeline, make_pipeline

BODY = """\
environments:
  prod:
    repository: oci:prod
    requires:
      approvals: {count: 1}
      freeze:
        windows: ["2020-01-01T00:00:00Z/2999-01-01T00:00:00Z"]
        break_glass: {approvals: 1}
"""
IDENTITIES = {
    "ci": "builder, tester, scanner",
    "deployer": "deployer",
    "alice": "approver",
    "bob": "approver",
    "server": "server",
}


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path / "team", IDENTITIES, BODY)


def _request(digest: str, uid: str = "uid-1", reason: str = "INC-1") -> service.BreakGlassRequest:
    return service.BreakGlassRequest(
        environment="prod",
        namespace="shop",
        workload={"kind": "apps/Deployment", "name": "shop", "operation": "CREATE"},
        reason=reason,
        request_uid=uid,
        requested_by={"username": "jane@example.com", "groups": ["sre"]},
        digests=[(digest, [{"name": "app", "list": "containers", "image": f"x@{digest}"}])],
    )


def _admissions(ws: service.Workspace) -> list[int]:
    return [e.index for e in ws.ledger.entries(kind="break-glass")]


def test_the_promote_break_glass_rule_decides(pipeline: Pipeline) -> None:
    ref = pipeline.built()
    digest = ref.split("@", 1)[1]
    server = load_signing_key(pipeline.key("server"))
    with service.Workspace.open(pipeline.config) as ws:
        kwargs = {"workspace": ws, "signer": server}
        pipeline.approve(ref, "prod", "alice")
        # approvals count 1 + break-glass 1 of the same role: one approval is not enough,
        # exactly as for `conveyor promote --break-glass`.
        refused = service.admit_break_glass(_request(digest), **kwargs)  # type: ignore[arg-type]
        assert not refused.allowed
        assert "1 of 2 approvals" in refused.message
        check = service.check(ref, environment="prod", break_glass="INC-1", workspace=ws)
        assert not check.decision.allowed
        pipeline.approve(ref, "prod", "bob")
        assert service.check(
            ref, environment="prod", break_glass="INC-1", workspace=ws
        ).decision.allowed
        dry = service.admit_break_glass(_request(digest), dry_run=True, **kwargs)  # type: ignore[arg-type]
        assert dry.allowed
        assert dry.recorded == ()
        assert _admissions(ws) == []
        late = _request(digest, uid="uid-late")
        with pytest.raises(service.BreakGlassTooLate):
            service.admit_break_glass(late, deadline=time.monotonic() - 1, **kwargs)  # type: ignore[arg-type]
        assert _admissions(ws) == []  # rolled back
        admitted = service.admit_break_glass(_request(digest), **kwargs)  # type: ignore[arg-type]
        assert admitted.allowed
        assert admitted.recorded == tuple(_admissions(ws))
        again = service.admit_break_glass(_request(digest), **kwargs)  # type: ignore[arg-type]
        assert again.already == admitted.recorded
        assert "already recorded as ledger #" in again.message
        with pytest.raises(service.BreakGlassReplayed):
            service.admit_break_glass(_request(digest, reason="other"), **kwargs)  # type: ignore[arg-type]
        assert len(_admissions(ws)) == 1
        # Counted for nothing: no arrival, and no approval of the server's.
        assert service.history("prod", workspace=ws) == []
        gate = next(
            g
            for g in service.check(ref, environment="prod", workspace=ws).decision.gates
            if g.gate == "approvals"
        )
        assert "server" not in gate.reason


def test_no_signer_and_a_signer_without_the_server_role_are_refused(pipeline: Pipeline) -> None:
    ref = pipeline.built()
    digest = ref.split("@", 1)[1]
    with service.Workspace.open(pipeline.config) as ws:
        unsigned = service.admit_break_glass(_request(digest), workspace=ws, signer=None)
        assert not unsigned.allowed
        assert "sets no server.signing_key" in unsigned.message
        with pytest.raises(service.UnknownSignerError, match="needs the role 'server'"):
            service.admit_break_glass(
                _request(digest), workspace=ws, signer=load_signing_key(pipeline.key("deployer"))
            )
