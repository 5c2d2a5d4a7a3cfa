"""``conveyor demo --server``: the seed pipeline through a ``conveyor serve`` the demo starts
on loopback, one API token per identity, every command printed as a user types it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("demo-server") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--server", "--dir", str(base)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return base, result.stdout


def test_every_identity_acts_through_the_server_with_its_own_token(
    demo: tuple[Path, str],
) -> None:
    base, out = demo
    for name in ("ci", "deployer", "alice", "bob"):
        assert (
            f"$ {name.upper()}_TOKEN=$(conveyor token create {name}-demo --identity {name})" in out
        )
    assert re.search(r"\$ conveyor serve --port \d+ &", out)
    assert re.search(r"\$ export CONVEYOR_SERVER=http://127\.0\.0\.1:\d+", out)
    assert "$ CONVEYOR_TOKEN=$CI_TOKEN conveyor record build oci:registry/build:1.0.0" in out
    assert "$ CONVEYOR_TOKEN=$ALICE_TOKEN conveyor approve" in out
    assert "--key" not in out  # nobody holds a key but the server
    assert "cvt_" not in out  # tokens are never printed, only kept in variables
    assert "2 of 2 approvals: alice, bob" in out
    assert re.search(r"ledger ok: 8 entries, root [0-9a-f]{64}", out)
    assert sorted(p.name for p in (base / "keys").iterdir()) == [
        "ledger.key", "ledger.pub", "server.key", "server.pub",
    ]  # fmt: skip


def test_the_server_signed_for_each_principal_and_a_local_reader_agrees(
    demo: tuple[Path, str],
) -> None:
    base, out = demo
    digest = re.search(r"promoted oci:\S*/registry/payment-api@(\S+) to production", out)
    assert digest
    local = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "trace",
            f"oci:registry/payment-api@{digest.group(1)}",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=base,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
    )
    assert local.returncode == 0, local.stderr
    events = json.loads(local.stdout)["events"]
    signed = {(e["kind"], e["signer"], e["via"]) for e in events}
    assert ("approval", "alice", "API token alice-demo (signed by server)") in signed
    assert ("approval", "bob", "API token bob-demo (signed by server)") in signed
    assert ("promotion", "deployer", "API token deployer-demo (signed by server)") in signed
    assert all(e["verified"] for e in events)
