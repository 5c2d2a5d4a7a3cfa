"""A hostile database writer against real `conveyor` processes (issue 9 #3, #9).

A failing test result is back-dated with raw SQL (SQLite and PostgreSQL). Before, the gate
then read the older pass and the promotion went ahead; now the rows a decision rests on are
proved into the signed tree first, and `check` / `promote` fail closed: exit 1 (a check that
failed: the evidence cannot be believed), one line, no traceback, nothing promoted.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import service
from tests.e2e.test_cli_promotion import Pipeline, make_pipeline

FAILING = '<testsuite name="u"><testcase name="a"><failure/></testcase></testsuite>'
BACK_DATED = "2000-01-01T00:00:00.000000Z"


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path / "p")


def _back_date_a_failure(pipeline: Pipeline) -> tuple[str, int]:
    ref = pipeline.ready_for_staging()
    bad = pipeline.root / "bad.xml"
    bad.write_text(FAILING)
    failed = service.attest_tests(ref, [bad], key=pipeline.key("ci"), config_path=pipeline.config)
    denied = pipeline.cli("check", ref, "--to", "staging")
    assert denied.returncode == 1, denied.stderr
    assert any(line.split()[:2] == ["FAIL", "tests"] for line in denied.stdout.splitlines()), (
        denied.stdout
    )
    return ref, failed.ledger_index


def _assert_fails_closed(pipeline: Pipeline, ref: str) -> None:
    for argv in (("check", ref, "--to", "staging"), ("promote", ref, "--to", "staging")):
        result = pipeline.cli(*argv, env={"CONVEYOR_SIGNING_KEY": pipeline.key("deployer")})
        assert result.returncode == 1, (argv, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "do not belong to the signed tree head" in lines[0]
        assert "audit verify" in lines[0]
    assert pipeline.cli("history", "staging").stdout.count("sha256:") == 0


def test_a_back_dated_failing_result_on_sqlite_fails_check_and_promote(
    pipeline: Pipeline,
) -> None:
    ref, failed = _back_date_a_failure(pipeline)
    with sqlite3.connect(pipeline.root / ".conveyor" / "conveyor.db") as conn:
        conn.execute(
            "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?", (BACK_DATED, failed)
        )
    _assert_fails_closed(pipeline, ref)


def test_a_back_dated_row_under_a_signed_checkpoint_fails_closed(pipeline: Pipeline) -> None:
    ref, failed = _back_date_a_failure(pipeline)
    assert pipeline.cli("audit", "checkpoint").returncode == 0
    with sqlite3.connect(pipeline.root / ".conveyor" / "conveyor.db") as conn:
        conn.execute(
            "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?", (BACK_DATED, failed)
        )
    _assert_fails_closed(pipeline, ref)


@pytest.mark.postgres
def test_a_back_dated_failing_result_on_postgresql_fails_check_and_promote(
    tmp_path: Path, postgres_database: Callable[[], str]
) -> None:
    import psycopg

    url = postgres_database()
    pipeline = make_pipeline(tmp_path / "pg")
    text = pipeline.config.read_text().replace("ledger:\n", f"ledger:\n  url: {url}\n")
    pipeline.config.write_text(text)
    ref, failed = _back_date_a_failure(pipeline)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "UPDATE ledger_entries SET recorded_at = %s WHERE idx = %s", (BACK_DATED, failed)
        )
    _assert_fails_closed(pipeline, ref)


# --- audit verify --checkpoint FILE reads a bounded regular file (issue 9 #9) -------------


def _audit(root: Path, checkpoint: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "audit", "verify", "--checkpoint", checkpoint],
        cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_audit_verify_refuses_a_fifo_and_dev_zero_as_checkpoint_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PG"))}
    subprocess.run(
        [sys.executable, "-m", "conveyor", "init"], cwd=tmp_path, env=env, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    fifo = tmp_path / "checkpoint.fifo"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    # No writer ever opens it: a blocking open would hang (the timeout fails the test).
    for path, said in ((str(fifo), "named pipe"), ("/dev/zero", "character device")):
        result = _audit(tmp_path, path)
        assert result.returncode == 2, (path, result.stderr)
        assert said in result.stderr
        assert "Traceback" not in result.stderr
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (1024 * 1024))
    result = _audit(tmp_path, str(big))
    assert result.returncode == 2
    assert "limit" in result.stderr
