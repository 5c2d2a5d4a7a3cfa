"""Chain of custody through the CLI, as a user runs it: init, keys, record, attest, approve,
attestations, audit. Each refusal leaves the ledger exactly as it was."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.images import build_image
from tests.support.registry import RunningRegistry, skopeo

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@dataclass
class Workspace:
    root: Path
    image: str  # oci:PATH:TAG
    digest: str

    def run(
        self, *args: str, key: str | None = "ci", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env.pop("CONVEYOR_SIGNING_KEY", None)
        if key is not None:
            full_env["CONVEYOR_SIGNING_KEY"] = str(self.root / "keys" / f"{key}.key")
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=self.root,
            env=full_env,
        )

    def ledger_rows(self) -> int:
        db = self.root / ".conveyor" / "conveyor.db"
        if not db.exists():
            return 0
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def _refused(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("conveyor: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "project"
    img = build_image(tmp_path / "layout", tag="v1", labels={"git.commit": COMMIT, "ci.run": "42"})
    root.mkdir()
    ws = Workspace(root, f"oci:{img.layout}:v1", img.digest)
    _ok(ws.run("init", str(root), key=None))
    _ok(ws.run("keys", "generate", "alice", "--out", "keys", key=None))
    _ok(ws.run("keys", "generate", "mallory", "--out", "keys", key=None))
    config = (root / "conveyor.yaml").read_text()
    config = config.replace(
        "  # alice:    {key: keys/alice.pub,    roles: [approver]}",
        "  alice:    {key: keys/alice.pub,    roles: [approver]}",
    )
    (root / "conveyor.yaml").write_text(config)
    return ws


def test_full_chain_is_recorded_attached_and_verifies(workspace: Workspace, corpus: Path) -> None:
    ws = workspace
    build = json.loads(
        _ok(
            ws.run("record", "build", ws.image, "--commit", COMMIT, "--run-id", "42", "--json")
        ).stdout
    )
    assert build["digest"] == ws.digest
    assert build["ledger_index"] == 0
    assert build["signer"] == "ci"
    junit = corpus / "junit" / "go-junit-report-pass-fail-skip.xml"
    tests = json.loads(_ok(ws.run("attest", "tests", ws.image, str(junit), "--json")).stdout)
    assert tests["summary"]["failed"] == 1
    scan = corpus / "scans" / "grype-empty.json"
    _ok(ws.run("attest", "scan", ws.image, str(scan)))
    _ok(ws.run("attest", "smoke", ws.image, "--env", "staging", "--passed"))
    _ok(ws.run("approve", ws.image, "--env", "production", "--comment", "ok", key="alice"))
    assert ws.ledger_rows() == 5

    listed = json.loads(_ok(ws.run("attestations", ws.image, "--json")).stdout)
    kinds = sorted(a["predicate_type"].split("/")[-2] for a in listed["attestations"])
    assert kinds == ["approval", "provenance", "smoke", "test-result", "vulns"]
    assert all(a["verified"] and a["in_ledger"] for a in listed["attestations"])

    checkpoint = ws.root / "checkpoint.txt"
    _ok(ws.run("audit", "checkpoint", "--out", str(checkpoint)))
    report = json.loads(
        _ok(ws.run("audit", "verify", "--checkpoint", str(checkpoint), "--json")).stdout
    )
    assert report["ok"] is True
    assert report["size"] == 5


def test_ci_variables_supply_commit_and_run(workspace: Workspace) -> None:
    ws = workspace
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SHA": COMMIT,
        "GITHUB_RUN_ID": "42",
        "GITHUB_REPOSITORY": "acme/app",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    out = json.loads(_ok(ws.run("record", "build", ws.image, "--json", env=env)).stdout)
    assert out["summary"]["commit"] == COMMIT
    assert out["summary"]["run_url"] == "https://github.com/acme/app/actions/runs/42"


def test_signing_key_may_arrive_as_pem_text(workspace: Workspace) -> None:
    ws = workspace
    pem = (ws.root / "keys" / "ci.key").read_text()
    _ok(
        ws.run(
            "record",
            "build",
            ws.image,
            "--commit",
            COMMIT,
            "--run-id",
            "42",
            key=None,
            env={"CONVEYOR_SIGNING_KEY": pem},
        )
    )
    assert ws.ledger_rows() == 1


@pytest.mark.parametrize(
    ("args", "key", "code", "needle"),
    [
        (("record", "build", "IMAGE", "--commit", OTHER_COMMIT), "ci", 1, "same story"),
        (("record", "build", "IMAGE", "--commit", COMMIT, "--run-id", "43"), "ci", 1, "ci.run"),
        (("record", "build", "IMAGE", "--commit", "main"), "ci", 2, "full git commit"),
        (("record", "build", "IMAGE", "--commit", COMMIT), "mallory", 1, "not an identity"),
        (("record", "build", "IMAGE", "--commit", COMMIT), "alice", 1, "role 'builder'"),
        (("approve", "IMAGE", "--env", "production"), "ci", 1, "role 'approver'"),
        (("record", "build", "IMAGE", "--commit", COMMIT), None, 2, "no signing key"),
        (("record", "build", "oci:/nonexistent/x:v1", "--commit", COMMIT), "ci", 3, ""),
        (("record", "build", "Bad Ref", "--commit", COMMIT), "ci", 2, ""),
        (("attest", "smoke", "IMAGE", "--env", "staging"), "ci", 2, "--passed or --failed"),
    ],
)
def test_refusals_leave_the_ledger_unchanged(
    workspace: Workspace, args: tuple[str, ...], key: str | None, code: int, needle: str
) -> None:
    ws = workspace
    argv = [ws.image if a == "IMAGE" else a for a in args]
    message = _refused(ws.run(*argv, key=key), code)
    assert needle in message
    assert ws.ledger_rows() == 0


def test_hostile_junit_and_foreign_scans_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    xxe = tmp_path / "xxe.xml"
    xxe.write_text(
        '<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<testsuite name="s"><testcase name="&x;"/></testsuite>'
    )
    _refused(ws.run("attest", "tests", ws.image, str(xxe)), 2)
    other = "sha256:" + "ab" * 32
    trivy = tmp_path / "trivy.json"
    trivy.write_text(
        json.dumps(
            {
                "SchemaVersion": 2,
                "ArtifactName": "registry.example/app:v1",
                "ArtifactType": "container_image",
                "Metadata": {"RepoDigests": [f"registry.example/app@{other}"]},
                "Results": [],
            }
        )
    )
    _refused(ws.run("attest", "scan", ws.image, str(trivy)), 1)
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"SchemaVersion": 2, "Results": [')
    _refused(ws.run("attest", "scan", ws.image, str(truncated)), 2)
    assert ws.ledger_rows() == 0


def test_config_with_mistakes_lists_them_all(workspace: Workspace) -> None:
    ws = workspace
    (ws.root / "conveyor.yaml").write_text(
        "version: 2\nidentities:\n  ci: {key: keys/ci.pub, roles: [builder, root]}\n"
        "  Bob: {key: keys/bob.pub, roles: [approver]}\nextra: 1\n"
    )
    result = ws.run("record", "build", ws.image, "--commit", COMMIT)
    assert result.returncode == 2
    details = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(details) == 5, result.stderr
    assert all("conveyor.yaml:" in line for line in details)


def test_audit_names_the_first_tampered_entry(workspace: Workspace) -> None:
    ws = workspace
    for _ in range(3):
        _ok(ws.run("attest", "smoke", ws.image, "--env", "staging", "--passed"))
    with sqlite3.connect(ws.root / ".conveyor" / "conveyor.db") as conn:
        (envelope,) = conn.execute("SELECT envelope FROM ledger_entries WHERE idx = 1").fetchone()
        changed = bytearray(envelope)
        changed[len(changed) // 2] ^= 0x01
        conn.execute("UPDATE ledger_entries SET envelope = ? WHERE idx = 1", (bytes(changed),))
    result = ws.run("audit", "verify", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["first_bad_index"] == 1


def test_forged_referrer_is_listed_as_not_verified(workspace: Workspace) -> None:
    ws = workspace
    _ok(ws.run("attest", "smoke", ws.image, "--env", "staging", "--passed"))
    # mallory's key is not in conveyor.yaml: sign with it through the library directly.
    code = (
        "import sys\n"
        "from conveyor.attest import load_signing_key, make_statement, sign_envelope, "
        "IN_TOTO_PAYLOAD_TYPE, SMOKE_V1, smoke\n"
        "from conveyor.custody import attach_attestation\n"
        "from conveyor.oci.layout import LayoutRepository\n"
        "from conveyor.oci.digest import Digest\n"
        "from pathlib import Path\n"
        "repo = LayoutRepository(Path(sys.argv[1]))\n"
        "top = repo.get_manifest(Digest.parse(sys.argv[2]))\n"
        "signer = load_signing_key(sys.argv[3])\n"
        "st = make_statement('x', top.digest, SMOKE_V1, smoke(environment='staging', "
        "passed=True, url=None))\n"
        "attach_attestation(repo, top, sign_envelope(st, IN_TOTO_PAYLOAD_TYPE, [signer]), "
        "SMOKE_V1)\n"
    )
    layout = ws.image.removeprefix("oci:").rsplit(":", 1)[0]
    subprocess.run(
        [sys.executable, "-c", code, layout, ws.digest, str(ws.root / "keys" / "mallory.key")],
        check=True,
        timeout=300,
    )
    result = ws.run("attestations", ws.image, "--json")
    assert result.returncode == 1
    found = json.loads(result.stdout)["attestations"]
    assert sorted((a["verified"], a["in_ledger"]) for a in found) == [(False, False), (True, True)]


@pytest.mark.registry
def test_evidence_travels_with_the_image_in_a_registry(
    workspace: Workspace, registry: RunningRegistry
) -> None:
    ws = workspace
    remote = f"{registry.host}/custody/app:v1"
    layout = ws.image.removeprefix("oci:")
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"oci:{layout}",
        f"docker://{remote}",
    )
    env = {"CONVEYOR_INSECURE_REGISTRIES": registry.host}
    _ok(ws.run("record", "build", remote, "--commit", COMMIT, "--run-id", "42", env=env))
    _ok(ws.run("attest", "smoke", remote, "--env", "staging", "--passed", env=env))
    listed = json.loads(_ok(ws.run("attestations", remote, "--json", env=env)).stdout)
    assert listed["reference"] == f"{registry.host}/custody/app@{ws.digest}"
    assert [a["verified"] for a in listed["attestations"]] == [True, True]
    # The referrers tag schema index is an ordinary manifest another client can read.
    fallback = ws.digest.replace(":", "-")
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/custody/app:{fallback}"
    )
    assert len(json.loads(raw.stdout)["manifests"]) == 2
