"""``conveyor demo`` as users run it: one subprocess, the whole pipeline, commands re-runnable."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def conveyor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    base = tmp_path_factory.mktemp("demo") / "run"
    started = time.monotonic()
    result = conveyor("demo", "--dir", str(base))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return base, result.stdout, elapsed


def _commands(output: str) -> list[list[str]]:
    return [shlex.split(line[2:])[1:] for line in output.splitlines() if line.startswith("$ ")]


def test_the_demo_runs_the_whole_pipeline(demo: tuple[Path, str, float]) -> None:
    _, out, _elapsed = demo  # its time is printed by the demo itself, not asserted here
    commands = [" ".join(argv) for argv in _commands(out)]
    for expected in (
        "keys generate ci",
        "record build oci:registry/build:1.0.0",
        "attest tests oci:registry/build@sha256:",
        "attest scan oci:registry/build@sha256:",
        "promote oci:registry/build:1.0.0 --to staging",  # from the tag, resolved once
        "attest smoke oci:registry/payment-api-staging@sha256:",
        "promote oci:registry/payment-api-staging@sha256:",
        "status",
        "trace",
        "audit verify",
    ):
        assert any(c.startswith(expected) for c in commands), expected
    assert sum(1 for c in commands if c.startswith("approve")) == 2


def test_production_is_refused_first_with_its_reasons(demo: tuple[Path, str, float]) -> None:
    _, out, _ = demo
    refused = out.index("denied")
    staged = out.index("to staging (ledger #")
    assert refused < staged
    refusal = out[out.rindex("$ conveyor promote", 0, refused) : refused]
    assert "--to production" in refusal
    assert "FAIL  after" in refusal
    assert "never promoted to staging" in refusal
    assert "FAIL  approvals" in refusal
    assert "0 of 2" in refusal
    assert "pass  tests" in refusal
    assert "pass  scan" in refusal


def test_one_digest_is_built_staged_and_in_production(demo: tuple[Path, str, float]) -> None:
    base, out, _ = demo
    staging = re.search(r"promoted oci:\S*/registry/payment-api-staging@(\S+) to staging", out)
    production = re.search(r"promoted oci:\S*/registry/payment-api@(\S+) to production", out)
    assert staging
    assert production
    digest = staging.group(1)
    assert production.group(1) == digest
    assert f"recorded build: oci:registry/build@{digest}" in out
    assert "2 of 2 approvals: alice, bob" in out
    assert re.search(r"ledger ok: 8 entries, root [0-9a-f]{64}", out)
    # Read back without conveyor: each OCI layout's index tags the built digest.
    for layout, tag in (
        ("build", "1.0.0"),
        ("payment-api-staging", "staging"),
        ("payment-api", "production"),
    ):
        index = json.loads((base / "registry" / layout / "index.json").read_text())
        tagged = {
            m["annotations"].get("org.opencontainers.image.ref.name"): m["digest"]
            for m in index["manifests"]
            if m.get("annotations")
        }
        assert tagged[tag] == digest, layout


def test_the_scan_report_names_the_built_digest(demo: tuple[Path, str, float]) -> None:
    base, out, _ = demo
    report = json.loads((base / "reports" / "trivy.json").read_text())
    digests = set(DIGEST.findall(" ".join(report["Metadata"]["RepoDigests"])))
    built = re.search(r"recorded build: oci:registry/build@(\S+)", out)
    assert built
    assert digests == {built.group(1)}
    assert "recorded scan" in out
    assert "'high': 0" in out
    assert "'medium': 1" in out


def test_printed_commands_run_again_in_the_demo_directory(
    demo: tuple[Path, str, float],
) -> None:
    base, out, _ = demo
    commands = {argv[0]: argv for argv in _commands(out) if argv[0] in ("status", "trace")}
    commands["audit"] = next(a for a in _commands(out) if a[:2] == ["audit", "verify"])
    status = conveyor(*commands["status"], cwd=base)
    assert status.returncode == 0, status.stderr
    assert "/registry/payment-api@sha256:" in status.stdout
    audit = conveyor(*commands["audit"], cwd=base)
    assert audit.returncode == 0, audit.stderr
    assert "ledger ok: 8 entries" in audit.stdout
    trace = conveyor(*commands["trace"], cwd=base)
    assert trace.returncode == 0, trace.stderr
    assert "promoted to production" in trace.stdout
    assert "NOT VERIFIED" not in trace.stdout


def test_the_demo_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text("version: 1\n")
    result = conveyor("demo", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert "not an empty directory" in result.stderr
    assert (tmp_path / "conveyor.yaml").read_text() == "version: 1\n"


def test_the_demo_never_writes_to_the_ledger_or_config_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A team's ledger and config must never receive demo rows: unreachable ones prove it.
    monkeypatch.setenv("CONVEYOR_DB", "postgresql+psycopg://nobody@127.0.0.1:1/team")
    monkeypatch.setenv("CONVEYOR_CONFIG", str(tmp_path / "team" / "conveyor.yaml"))
    result = conveyor("demo", "--dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "unset CONVEYOR_CONFIG CONVEYOR_DB; conveyor status" in result.stdout
    assert (tmp_path / "run" / ".conveyor" / "conveyor.db").is_file()
    assert not (tmp_path / "team").exists()
