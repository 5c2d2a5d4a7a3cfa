"""The CLI in remote mode (``CONVEYOR_SERVER`` + ``CONVEYOR_TOKEN``) against a real
``conveyor serve``: the seed pipeline with one token per identity, from a folder with no
conveyor.yaml; the same output as the direct-database mode; the same exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import COMMIT, PASSING_JUNIT, ServedTeam, serve_team, trivy_report


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTeam]:
    yield from serve_team(tmp_path_factory.mktemp("cli-team"))


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-config-here")  # no conveyor.yaml, no database


def _remote(
    served: ServedTeam, elsewhere: Path, identity: str | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "GITHUB_"))}
    full["CONVEYOR_SERVER"] = served.server.url
    if identity is not None:
        full["CONVEYOR_TOKEN"] = served.tokens[identity]
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=elsewhere,
        env=full,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _timeless(text: str) -> str:
    # "scan 17s old", "(9s)": ages measured a second apart
    return re.sub(r"\b\d+[smhd]( old|\))", r"N\1", text)


def _without_ages(text: str) -> object:
    document = json.loads(text)
    for env in document["environments"]:
        if env["current"]:
            env["current"].pop("age_seconds")
            env["current"].pop("age")
    return document


def test_the_seed_pipeline_through_the_cli_in_remote_mode(
    served: ServedTeam, elsewhere: Path
) -> None:
    team = served.team
    ref = team.image("remote-cli")
    digest = ref.split("@")[1]
    junit = elsewhere / "junit.xml"
    junit.write_text(PASSING_JUNIT)
    scan = elsewhere / "trivy.json"
    scan.write_text(json.dumps(trivy_report()))

    built = _ok(_remote(served, elsewhere, "ci", "record", "build", ref, "--commit", COMMIT,
                        "--run-id", "42", "--json"))  # fmt: skip
    assert json.loads(built.stdout)["signer"] == "ci"
    tested = _ok(_remote(served, elsewhere, "ci", "attest", "tests", ref, str(junit)))
    assert "recorded tests" in tested.stdout
    assert "signed by ci" in tested.stdout
    _ok(_remote(served, elsewhere, "ci", "attest", "scan", ref, str(scan)))
    checked = _ok(_remote(served, elsewhere, "deployer", "check", ref, "--to", "staging"))
    assert "→ staging: allowed" in checked.stdout
    outputs = elsewhere / "github-output"
    summary = elsewhere / "github-summary"
    staged = _ok(
        _remote(served, elsewhere, "deployer", "promote", ref, "--to", "staging",
                "--output", "github", GITHUB_OUTPUT=str(outputs),
                GITHUB_STEP_SUMMARY=str(summary))
    )  # fmt: skip
    assert f"promoted oci:{team.root / 'staging'}@{digest} to staging" in staged.stdout
    assert f"digest={digest}\n" in outputs.read_text()
    assert "| tests | ✅ |" in summary.read_text()
    staging = f"oci:{team.root / 'staging'}:staging"
    _ok(_remote(served, elsewhere, "ci", "attest", "smoke", staging, "--env", "staging",
                "--passed"))  # fmt: skip
    _ok(_remote(served, elsewhere, "alice", "approve", staging, "--env", "production"))

    denied = _remote(served, elsewhere, "deployer", "promote", staging, "--to", "production")
    assert denied.returncode == 1
    assert "FAIL  approvals" in denied.stdout  # the gate lines, as the direct mode prints them
    assert denied.stderr.startswith("conveyor: error: promotion of ")
    as_json = _remote(served, elsewhere, "deployer", "promote", staging, "--to", "production",
                      "--output", "json")  # fmt: skip
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["allowed"] is False  # the decision, as direct mode prints

    _ok(_remote(served, elsewhere, "bob", "approve", staging, "--env", "production"))
    helm = _ok(_remote(served, elsewhere, "deployer", "promote", staging, "--to", "production",
                       "--helm-args"))  # fmt: skip
    assert helm.stdout.strip() == (
        f"--set image.repository=oci:{team.root / 'production'} --set image.digest={digest}"
    )

    # Reads: the same documents and lines as a CLI reading the database directly.
    def both(*args: str) -> tuple[str, str]:
        far = _ok(_remote(served, elsewhere, "viewer", *args))
        near = _ok(team.cli(*args))
        return far.stdout, near.stdout

    far, near = both("status", "--json")
    assert _without_ages(far) == _without_ages(near)
    current = {e["environment"]: e["current"] for e in json.loads(far)["environments"]}
    assert current["production"]["digest"] == digest
    for args in (
        ("history", "production", "--json"),
        ("history", "production"),
        ("trace", ref, "--json"),
        ("trace", ref),
        ("attestations", staging, "--json"),
        ("attestations", staging),
        ("check", staging, "--to", "production", "--json"),
    ):
        far, near = both(*args)
        assert _timeless(far) == _timeless(near), args
    far, _ = both("trace", ref)
    assert "bob via API token bob-token (signed by server)" in far
    verified = json.loads(_ok(_remote(served, elsewhere, "viewer", "audit", "verify",
                                      "--json")).stdout)  # fmt: skip
    assert verified["ok"] is True
    checkpoint = _ok(_remote(served, elsewhere, "deployer", "audit", "checkpoint"))
    assert checkpoint.stdout.splitlines()[1] == str(verified["size"])


def test_remote_exit_codes_and_messages(served: ServedTeam, elsewhere: Path) -> None:
    nobody = _remote(served, elsewhere, None, "status")
    assert nobody.returncode == 2
    assert nobody.stderr.startswith("conveyor: error: bad or missing credentials")
    wrong = _remote(served, elsewhere, None, "status", CONVEYOR_TOKEN="cvt_" + "Q" * 43)
    assert wrong.returncode == 2
    assert "Q" * 43 not in wrong.stderr
    reader = _remote(served, elsewhere, "viewer", "rollback", "staging")
    assert reader.returncode == 1
    assert reader.stderr.startswith("conveyor: error: not allowed: viewer may not roll back")
    keyed = _remote(served, elsewhere, "deployer", "promote", "oci:/x:y", "--to", "production",
                    "--key", "deployer.key")  # fmt: skip
    assert keyed.returncode == 2
    assert "the server that places the image signs for your token's identity" in keyed.stderr
    unread = _remote(served, elsewhere, "alice", "approve", "oci:/x:y", "--env", "production",
                     "--key", "no-such.key")  # fmt: skip
    assert unread.returncode == 2
    unknown = _remote(served, elsewhere, "viewer", "history", "nowhere")
    assert unknown.returncode == 2
    assert "unknown environment 'nowhere'" in unknown.stderr
    far = _remote(served, elsewhere, "viewer", "--server", "http://conveyor.example.com",
                  "status")  # fmt: skip
    assert far.returncode == 2
    assert "plain http://" in far.stderr
    gone = _remote(served, elsewhere, "viewer", "status", CONVEYOR_SERVER="http://127.0.0.1:9")
    assert gone.returncode == 3
    assert "cannot reach the conveyor server" in gone.stderr


def test_a_remote_cli_process_imports_no_database_or_policy_code(
    served: ServedTeam, elsewhere: Path
) -> None:
    ref = served.team.image("imports")
    program = (
        "import sys\n"
        "from conveyor.cli.main import main\n"
        f"code = main(['check', {ref!r}, '--to', 'staging', '--json'])\n"
        "bad = [m for m in sys.modules if m.startswith(('sqlalchemy', 'alembic', 'pydantic',"
        " 'cryptography', 'conveyor.policy', 'conveyor.ledger', 'conveyor.service._',"
        " 'fastapi'))]\n"
        "sys.stderr.write(repr((code, bad)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=elsewhere,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
            "CONVEYOR_SERVER": served.server.url,
            "CONVEYOR_TOKEN": served.tokens["deployer"],
        },
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("(1, [])"), done.stderr  # denied (no build), and nothing heavy
    assert json.loads(done.stdout)["allowed"] is False


def _same(served: ServedTeam, elsewhere: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``args`` direct (the team's database) and remote (a reader's token): the same
    stdout, stderr and exit code."""
    far = _remote(served, elsewhere, "viewer", *args)
    near = served.team.cli(*args)
    assert (far.returncode, far.stdout, far.stderr) == (
        near.returncode,
        near.stdout,
        near.stderr,
    ), args
    return far


def test_resolve_and_inspect_through_the_server(served: ServedTeam, elsewhere: Path) -> None:
    ref = served.team.image("resolve-me")
    layout, digest = ref.removeprefix("oci:").split("@")
    tagged = f"oci:{layout}:resolve-me"
    resolved = _same(served, elsewhere, "resolve", tagged)
    assert resolved.returncode == 0
    assert resolved.stdout == f"oci:{layout}@{digest}\n"
    shown = _same(served, elsewhere, "inspect", tagged)
    assert f"git.commit={COMMIT}" in shown.stdout
    as_json = _same(served, elsewhere, "inspect", ref, "--json")
    assert json.loads(as_json.stdout)["digest"] == digest
    missing = _same(served, elsewhere, "resolve", f"oci:{layout}:no-such-tag")
    assert missing.returncode != 0
    assert missing.stderr.startswith("conveyor: error: ")
    bad = _same(served, elsewhere, "inspect", "not a reference")
    assert bad.returncode == 2
    asked = [
        (line.get("route"), line.get("principal"), line.get("status"))
        for line in served.server.log_lines()
        if line.get("route") in ("/api/v1/resolve", "/api/v1/inspect")
    ]
    assert asked.count(("/api/v1/resolve", "viewer", 200)) == 1  # the server was asked
    assert asked.count(("/api/v1/inspect", "viewer", 200)) == 2


def _promote_by_hand(served: ServedTeam, name: str, digest: str, environment: str) -> None:
    """A promotion of a registry image, signed with the deployer's key as ``conveyor
    promote`` would (the team's environments are OCI layouts; pin rewrites registry names)."""
    from conveyor.attest import (
        IN_TOTO_PAYLOAD_TYPE,
        PROMOTION_V1,
        load_signing_key,
        make_statement,
        promotion,
        sign_envelope,
    )
    from conveyor.oci.digest import Digest

    signer = load_signing_key(str(served.team.root / "keys" / "deployer.key"))
    predicate = promotion(
        from_environment=None,
        to_environment=environment,
        repository=name,
        policy_sha256="0" * 64,
        gates=[],
        rollback=False,
    )
    statement = make_statement(name, Digest.parse(digest), PROMOTION_V1, predicate)
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    with service_workspace(served) as workspace:
        workspace.ledger.append(
            envelope,
            subject_digest=digest,
            subject_name=name,
            predicate_type=PROMOTION_V1,
            kind="promotion",
            signer="deployer",
            keyid=signer.keyid,
            environment=environment,
        )


def service_workspace(served: ServedTeam):  # type: ignore[no-untyped-def]
    from conveyor import service

    return service.Workspace.open(served.team.config)


def test_pin_env_through_the_server(served: ServedTeam, elsewhere: Path) -> None:
    name = "registry.example/team/pinned"
    digest = "sha256:" + "ab" * 32
    _promote_by_hand(served, name, digest, "staging")
    folder = elsewhere / "deploy"
    folder.mkdir()
    manifest = folder / "web.yaml"
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n"
        f"    - name: web\n      image: {name}:1.0  # keep me\n"
    )
    manifest.write_text(text)
    never = folder / "never.yaml"
    never.write_text(text.replace(name, "registry.example/team/never"))
    args = ("pin", str(folder), "--env", "staging", "--offline", "--check", "--diff")
    checked = _same(served, elsewhere, *args)
    assert checked.returncode == 1  # --check: something would change
    assert f"{name}:1.0@{digest}" in checked.stdout
    assert "registry.example/team/never was never promoted to staging" in checked.stderr
    assert manifest.read_text() == text  # --check wrote nothing
    never.unlink()
    far = _remote(served, elsewhere, "viewer", "pin", str(manifest), "--env", "staging",
                  "--offline")  # fmt: skip
    assert far.returncode == 0, far.stderr
    assert f"image: {name}:1.0@{digest}  # keep me\n" in manifest.read_text()
    unknown = _same(served, elsewhere, "pin", str(manifest), "--env", "nowhere", "--offline")
    assert unknown.returncode == 2
    assert "nowhere" in unknown.stderr
    nobody = _remote(served, elsewhere, None, "pin", str(manifest), "--env", "staging")
    assert nobody.returncode == 2
    assert nobody.stderr.startswith("conveyor: error: bad or missing credentials")


def _keyed(served: ServedTeam, elsewhere: Path, who: str, *args: str) -> list[str]:
    """``args`` with ``--key`` of ``who`` (its private key, on the machine the CLI runs on)."""
    return [*args, "--key", str(served.team.root / "keys" / f"{who}.key")]


def test_key_signs_here_and_the_server_records_the_envelope(
    served: ServedTeam, elsewhere: Path
) -> None:
    team = served.team
    ref = team.image("keyed")
    digest = ref.split("@")[1]
    junit = elsewhere / "keyed-junit.xml"
    junit.write_text(PASSING_JUNIT)
    scan = elsewhere / "keyed-trivy.json"
    scan.write_text(json.dumps(trivy_report()))
    runs = [
        ("record", "build", ref, "--commit", COMMIT, "--run-id", "42"),
        ("attest", "tests", ref, str(junit)),
        ("attest", "scan", ref, str(scan)),
    ]
    for args in runs:
        done = _ok(_remote(served, elsewhere, "ci", *_keyed(served, elsewhere, "ci", *args),
                           "--json"))  # fmt: skip
        recorded = json.loads(done.stdout)
        assert recorded["signer"] == "ci"
        assert recorded["digest"] == digest
        assert "pre_signed" not in recorded["summary"]  # this side's summary, as direct mode
    assert recorded["summary"]["format"] == "trivy"
    # the client-signed evidence counts: the promotion's gates pass on it
    promoted = _ok(_remote(served, elsewhere, "deployer", "promote", ref, "--to", "staging"))
    assert "promoted" in promoted.stdout
    staging = f"oci:{team.root / 'staging'}:staging"
    _ok(_remote(served, elsewhere, "ci",
                *_keyed(served, elsewhere, "ci", "attest", "smoke", staging, "--env", "staging",
                        "--passed")))  # fmt: skip
    args = _keyed(served, elsewhere, "alice", "approve", staging, "--env", "production",
                  "--comment", "from my laptop", "--json")  # fmt: skip
    far = _ok(_remote(served, elsewhere, "alice", *args))
    near = _ok(team.cli(*args))
    far_doc, near_doc = json.loads(far.stdout), json.loads(near.stdout)
    assert list(far_doc) == list(near_doc)  # the same document as the direct mode's
    for field in ("kind", "reference", "digest", "signer", "predicate_type", "environment",
                  "summary", "notes"):  # fmt: skip
        assert far_doc[field] == near_doc[field], field
    assert far_doc["ledger_index"] != near_doc["ledger_index"]  # two approvals were recorded
    events = json.loads(_ok(_remote(served, elsewhere, "viewer", "trace", ref, "--json")).stdout)
    approvals = [e for e in events["events"] if e["kind"] == "approval"]
    assert [(e["signer"], e["via"], e["verified"]) for e in approvals] == [
        ("alice", None, True),  # signed by alice's own key, not by the server for her
        ("alice", None, True),
    ]


def test_key_through_the_server_is_bound_to_the_token_and_the_roles(
    served: ServedTeam, elsewhere: Path
) -> None:
    ref = served.team.image("keyed-refused")
    alices = _keyed(served, elsewhere, "alice", "approve", ref, "--env", "production")
    other = _remote(served, elsewhere, "bob", *alices)
    assert other.returncode == 1
    assert other.stderr.startswith("conveyor: error: not allowed: the envelope is signed by alice")
    cis = _keyed(served, elsewhere, "ci", "approve", ref, "--env", "production")
    role = _remote(served, elsewhere, "ci", *cis)
    assert role.returncode == 1
    assert "identity 'ci' may not record approval evidence: it needs the role" in role.stderr
    # the digest REF names must be the one signed: the server's answer is checked
    absent = ref.split("@")[0] + "@sha256:" + "0" * 64
    keyed = _keyed(served, elsewhere, "alice", "approve", absent, "--env", "production")
    missing = _remote(served, elsewhere, "alice", *keyed)
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr


def test_a_remote_key_process_loads_signing_code_but_no_database(
    served: ServedTeam, elsewhere: Path
) -> None:
    ref = served.team.image("keyed-imports")
    key = str(served.team.root / "keys" / "alice.key")
    program = (
        "import sys\n"
        "from conveyor.cli.main import main\n"
        f"code = main(['approve', {ref!r}, '--env', 'production', '--key', {key!r}])\n"
        "loaded = sorted({m.split('.')[0] if not m.startswith('conveyor') else m for m in"
        " sys.modules if m.startswith(('sqlalchemy', 'alembic', 'psycopg', 'fastapi',"
        " 'cryptography', 'pydantic', 'conveyor.policy', 'conveyor.ledger'))})\n"
        "sys.stderr.write(repr((code, loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=elsewhere,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
            "CONVEYOR_SERVER": served.server.url,
            "CONVEYOR_TOKEN": served.tokens["alice"],
        },
    )
    code, loaded = eval(done.stderr.rsplit("\n", 1)[-1])  # noqa: S307 - our own repr
    assert code == 0, done.stderr
    assert "cryptography" in loaded  # the signature is made here
    for heavy in ("sqlalchemy", "alembic", "psycopg", "fastapi", "conveyor.ledger"):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in loaded), loaded
    print("remote --key loads:", loaded)
