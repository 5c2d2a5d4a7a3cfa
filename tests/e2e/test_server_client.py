"""``conveyor.client`` against a real ``conveyor serve``: the same errors and exit codes as the
CLI, and remote mode imports neither SQLAlchemy nor the policy models."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from conveyor import client as remote
from conveyor.errors import ConveyorError, InputError
from tests.support.server import (
    COMMIT,
    PASSING_JUNIT,
    ServedTeam,
    free_port,
    serve_team,
    start_server,
    trivy_report,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTeam]:
    yield from serve_team(tmp_path_factory.mktemp("client-team"))


def _client(served: ServedTeam, identity: str | None) -> remote.ConveyorClient:
    token = served.tokens[identity] if identity else None
    return remote.ConveyorClient(served.server.url, token)


def test_the_pipeline_through_the_client(served: ServedTeam) -> None:
    team = served.team
    ref = team.image("client")
    junit = team.root / "junit.xml"
    junit.write_text(PASSING_JUNIT)
    scan = team.root / "trivy.json"
    scan.write_text(json.dumps(trivy_report()))
    with _client(served, "ci") as ci:
        assert ci.record_build(ref, commit=COMMIT, run_id="42")["signer"] == "ci"
        assert ci.attest_tests(ref, [junit])["summary"]["passed"] == 2
        assert ci.attest_scan(ref, scan)["kind"] == "scan"
    with _client(served, "deployer") as deployer:
        assert deployer.check(ref, environment="staging")["allowed"] is True
        result = deployer.promote(ref, environment="staging")
        assert result["recorded"] is True
        assert ref.split("@")[1] in deployer.promoted_digests("staging")
        with pytest.raises(remote.Denied) as denied:
            deployer.promote(ref, environment="production")
    assert denied.value.exit_code == 1
    assert "approvals: 0 of 2" in str(denied.value)
    assert {g["gate"] for g in denied.value.gates} >= {"after", "approvals"}
    with _client(served, "viewer") as viewer:
        assert viewer.history("staging")[0]["digest"] == ref.split("@")[1]
        assert [e["kind"] for e in viewer.trace(ref)["events"]][:3] == ["build", "tests", "scan"]
        assert viewer.audit_verify()["ok"] is True
        assert viewer.whoami()["roles"] == ["reader"]


def test_errors_become_the_same_classes_and_exit_codes(served: ServedTeam) -> None:
    with _client(served, None) as anonymous, pytest.raises(remote.NotAuthenticated) as info:
        anonymous.status()
    assert info.value.exit_code == 2
    assert str(info.value).startswith("bad or missing credentials")
    with _client(served, "alice") as alice, pytest.raises(remote.NotAllowed) as refused:
        alice.promote("oci:/x@sha256:" + "0" * 64, environment="staging")
    assert refused.value.exit_code == 1
    assert str(refused.value).startswith("not allowed: alice may not promote")
    with _client(served, "viewer") as viewer:
        with pytest.raises(InputError) as bad:
            viewer.resolve("not a reference!")
        assert bad.value.exit_code == 2
        with pytest.raises(ConveyorError) as unknown:
            viewer.history("nowhere")
        assert unknown.value.exit_code == 2
        assert "unknown environment 'nowhere'" in str(unknown.value)


def test_plain_http_only_to_loopback_and_never_with_credentials_in_the_url() -> None:
    for url in (
        "http://conveyor.example.com",
        "ftp://x",
        "https://u:p@x.example",
        "https://x/?t=1",
    ):
        with pytest.raises(InputError):
            remote.check_server_url(url)
    assert remote.check_server_url("http://conveyor.example.com", insecure=True)
    assert remote.check_server_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert remote.check_server_url("http://[::1]:8080")
    assert remote.check_server_url("https://conveyor.example.com")
    with pytest.raises(InputError, match="not a token"):
        remote.ConveyorClient("https://x.example", "two\nlines")


def test_remote_mode_imports_no_database_or_policy_code(served: ServedTeam) -> None:
    program = (
        "import sys\n"
        "from conveyor.client import ConveyorClient\n"
        f"c = ConveyorClient({served.server.url!r}, {served.tokens['deployer']!r})\n"
        "c.status()\n"
        "bad = [m for m in sys.modules if m.startswith(('sqlalchemy', 'pydantic', 'cryptography',"
        " 'conveyor.policy', 'conveyor.ledger', 'fastapi'))]\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_token_commands_through_the_api(served: ServedTeam) -> None:
    team = served.team
    env = {"CONVEYOR_SERVER": served.server.url, "CONVEYOR_TOKEN": served.tokens["root"]}
    made = team.cli("token", "create", "via-api", "--identity", "alice", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    with remote.ConveyorClient(served.server.url, token) as alice:
        assert alice.whoami()["identity"] == "alice"
    listed = team.cli("token", "list", "--json", env=env)
    assert "via-api" in listed.stdout
    assert token not in listed.stdout
    assert team.cli("token", "revoke", "via-api", env=env).returncode == 0
    denied = team.cli(
        "token", "create", "x", "--identity", "alice",
        env={**env, "CONVEYOR_TOKEN": served.tokens["alice"]},
    )  # fmt: skip
    assert denied.returncode == 1
    assert "not allowed" in denied.stderr
    nobody = team.cli("token", "list", env={**env, "CONVEYOR_TOKEN": "cvt_" + "B" * 43})
    assert nobody.returncode == 2
    assert "bad or missing credentials" in nobody.stderr


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_is_served_and_verified(served: ServedTeam, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    team = served.team
    with (tmp_path / "tls.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--port", str(port),
             "--tls-cert", str(cert), "--tls-key", str(key)],
            stdout=log, stderr=subprocess.STDOUT, cwd=team.root, env=team.env(),
        )  # fmt: skip
    try:
        url = f"https://localhost:{port}"
        trust = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/healthz", verify=trust, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with remote.ConveyorClient(url, served.tokens["viewer"], verify=trust) as viewer:
            assert viewer.whoami()["identity"] == "viewer"
        with (
            remote.ConveyorClient(url, served.tokens["viewer"]) as unverified,
            pytest.raises(remote.ServerError, match="cannot reach"),
        ):
            unverified.whoami()  # a certificate nobody vouches for is refused
    finally:
        process.terminate()
        process.wait(timeout=15)
    half = team.cli("serve", "--tls-cert", str(cert))
    assert half.returncode == 2
    assert "--tls-cert and --tls-key go together" in half.stderr


def test_several_worker_processes_serve_the_same_tokens(served: ServedTeam) -> None:
    server = start_server(served.team, extra=("--workers", "2"))
    try:
        for _ in range(6):
            with remote.ConveyorClient(server.url, served.tokens["viewer"]) as viewer:
                assert viewer.whoami()["identity"] == "viewer"
        started = [line for line in server.log_lines() if "Started server process" in str(line)]
        assert len(started) == 2
        wanted = 'conveyor_http_requests_total{method="GET",route="/api/v1/whoami",status="200"}'
        for _ in range(4):  # whichever worker answers, it counts every worker's requests
            text = httpx.get(server.url + "/metrics").text
            count = [ln for ln in text.splitlines() if ln.startswith(wanted)]
            assert count == [f"{wanted} 6.0"], text[-2000:]
    finally:
        server.stop()


def test_conveyor_yaml_is_reread_when_it_changes(served: ServedTeam) -> None:
    """Runs last in this module: it changes the shared team's roles."""
    config = served.team.config
    with _client(served, "viewer") as viewer, pytest.raises(remote.NotAllowed):
        viewer.audit_checkpoint()
    text = config.read_text()
    config.write_text(text.replace("viewer:   {roles: [reader]}", "viewer:   {roles: [admin]}"))
    try:
        with _client(served, "viewer") as viewer:
            assert viewer.whoami()["roles"] == ["admin"]
            assert viewer.audit_checkpoint()["size"] >= 0
    finally:
        config.write_text(text)
