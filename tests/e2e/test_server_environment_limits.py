"""An identity limited to environments, on a real ``conveyor serve``: its token may approve,
attest smoke tests and promote for those environments only (403 elsewhere, exit 1 from the
remote CLI), and a pre-signed envelope for another environment is refused the same way."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServedTeam, serve_team

LIMITED = "  stager:   {roles: [approver, deployer, tester], environments: [staging]}\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTeam]:
    for team in serve_team(tmp_path_factory.mktemp("limited-team")):
        text = team.team.config.read_text()
        anchor = "  viewer:"
        assert anchor in text
        team.team.config.write_text(text.replace(anchor, LIMITED + anchor, 1))
        time.sleep(0.05)  # the server re-reads conveyor.yaml when it changes
        team.tokens["stager"] = team.team.token("stager-token", "stager")
        yield team


def _post(served: ServedTeam, who: str, path: str, body: dict[str, object]) -> object:
    with served.server.client(who) as http:
        return http.post(path, json=body)


def test_a_limited_token_acts_only_in_its_environments(served: ServedTeam) -> None:
    ref = served.team.image("limited")
    ok = _post(served, "stager", "/api/v1/approvals", {"reference": ref, "environment": "staging"})
    assert ok.status_code == 200, ok.text  # type: ignore[attr-defined]
    for path, body in (
        ("/api/v1/approvals", {"reference": ref, "environment": "production"}),
        ("/api/v1/smoke", {"reference": ref, "environment": "production", "passed": True}),
        ("/api/v1/promotions", {"reference": ref, "environment": "production"}),
        ("/api/v1/rollbacks", {"environment": "production"}),
    ):
        refused = _post(served, "stager", path, body)
        assert refused.status_code == 403, (path, refused.text)  # type: ignore[attr-defined]
        detail = refused.json()["detail"]  # type: ignore[attr-defined]
        assert detail.startswith("not allowed: stager may not ")
        assert detail.endswith("in production: it may act only in staging")
    refusals = [
        line
        for line in served.server.log_lines()
        if line.get("principal") == "stager" and line.get("status") == 403
    ]
    assert len(refusals) >= 4  # every refusal is logged with the principal
    # reads stay open to it
    with served.server.client("stager") as http:
        assert http.get("/api/v1/status").status_code == 200


def test_the_remote_cli_exits_1(served: ServedTeam, tmp_path: Path) -> None:
    ref = served.team.image("limited-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_SERVER=served.server.url, CONVEYOR_TOKEN=served.tokens["stager"])
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "approve", ref, "--env", "production"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "conveyor: error: not allowed: stager may not approve in production: it may act only "
        "in staging\n"
    )


def test_a_pre_signed_envelope_for_another_environment_is_refused(served: ServedTeam) -> None:
    """The limit follows the identity, whoever signs: a key of a limited identity too."""
    from conveyor import service
    from conveyor.attest import (
        APPROVAL_V1,
        IN_TOTO_PAYLOAD_TYPE,
        approval,
        load_signing_key,
        make_statement,
        sign_envelope,
    )
    from conveyor.oci.digest import Digest

    keys = served.team.root / "keys"
    service.generate_keys("stager", out_dir=keys)
    text = served.team.config.read_text()
    served.team.config.write_text(
        text.replace("  stager:   {roles:", "  stager:   {key: keys/stager.pub, roles:")
    )
    time.sleep(0.05)
    ref = served.team.image("limited-envelope")
    signer = load_signing_key(str(keys / "stager.key"))
    statement = make_statement(
        ref.split("@")[0],
        Digest.parse(ref.split("@")[1]),
        APPROVAL_V1,
        approval(environment="production"),
    )
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    body = {"reference": ref, "envelope": base64.b64encode(envelope).decode()}
    refused = _post(served, "stager", "/api/v1/envelopes", body)
    assert refused.status_code == 403, refused.text  # type: ignore[attr-defined]
    assert "may act only in staging" in refused.json()["detail"]  # type: ignore[attr-defined]
