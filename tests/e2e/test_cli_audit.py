"""`conveyor audit verify` as a process: incremental from a trusted checkpoint, `--full`, and
a ledger column that contradicts its signed statement (issue 9 #14, issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.attest import IN_TOTO_PAYLOAD_TYPE, load_signing_key, make_statement, sign_envelope
from conveyor.attest.predicates import APPROVAL_V1
from conveyor.ledger import open_ledger
from conveyor.oci.digest import Digest


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args], cwd=root, env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    assert _run(tmp_path, "init").returncode == 0
    return tmp_path


def _append(root: Path, start: int, count: int, *, column_digest: int | None = None) -> None:
    signer = load_signing_key(str(root / "keys" / "ci.key"))
    ledger = open_ledger(f"sqlite:///{root / '.conveyor' / 'conveyor.db'}")
    try:
        for n in range(start, start + count):
            digest = Digest.parse(f"sha256:{n:064x}")
            predicate = {"environment": "production", "n": n}
            statement = make_statement("registry.example/app", digest, APPROVAL_V1, predicate)
            ledger.append(
                sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer]),
                subject_digest=f"sha256:{(column_digest if column_digest is not None else n):064x}",
                subject_name="registry.example/app", predicate_type=APPROVAL_V1,
                kind="approval", signer="ci", keyid=signer.keyid, environment="production",
            )  # fmt: skip
    finally:
        ledger.close()


def _verify(root: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = _run(root, "audit", "verify", "--json", *args)
    return result.returncode, json.loads(result.stdout)


def test_audit_verify_from_a_checkpoint_is_incremental_and_full_redoes_everything(
    workspace: Path,
) -> None:
    _append(workspace, 0, 6)
    assert _run(workspace, "audit", "checkpoint", "--out", "cp.txt").returncode == 0
    assert (workspace / "cp.txt").read_text().split("\n")[5].startswith("\u2014 conveyor.ledger/")
    _append(workspace, 6, 3)
    code, report = _verify(workspace, "--checkpoint", "cp.txt")
    assert code == 0, report
    assert (report["incremental"], report["checked_from"], report["checked_signatures"]) == (
        True, 6, 3,
    )  # fmt: skip
    code, report = _verify(workspace, "--checkpoint", "cp.txt", "--full")
    assert code == 0, report
    assert (report["incremental"], report["checked_signatures"]) == (False, 9)


def test_audit_verify_flags_a_subject_column_the_statement_contradicts(workspace: Path) -> None:
    _append(workspace, 0, 2)
    _append(workspace, 2, 1, column_digest=99)  # the row says D, the envelope is about D2
    code, report = _verify(workspace)
    assert code == 1
    assert report["first_bad_index"] == 2
    assert report["problems"] == [
        f"entry 2: the subject_digest column names sha256:{99:064x} but the signed statement "
        f"is about sha256:{2:064x}"
    ]
