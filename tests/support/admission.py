"""A team whose conveyor.yaml governs Kubernetes namespaces, served over HTTPS by a real
``conveyor serve`` (a self-signed certificate made here with ``cryptography``), and
AdmissionReview documents built from the samples in tests/assets/admission."""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import COMMIT, RunningServer, Team, free_port, make_team

ASSETS = Path(__file__).parent.parent / "assets" / "admission"

ADMISSION_CONFIG = """\
version: 1
identities:
  ci:       {{key: keys/ci.pub,       roles: [builder, tester, scanner]}}
  deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  alice:    {{key: keys/alice.pub,    roles: [approver]}}
  viewer:   {{roles: [reader]}}
  watcher:  {{roles: [reader, drift]}}
  root:     {{roles: [admin]}}
  server:   {{key: keys/server.pub,   roles: [server]}}
ledger:
  key: keys/ledger.key
  public_key: keys/ledger.pub
server:
  signing_key: keys/server.key
  layouts: [build]
environments:
  staging:
    repository: oci:staging
    tags: [staging]
    requires:
      freeze:
        windows: ["2099-01-01T00:00:00Z/2099-01-02T00:00:00Z"]
        break_glass: {{approvals: 1}}
  production:
    repository: oci:production
    tags: [production]
    requires: {{}}
admission:
  namespaces:
    payment-api-staging: staging
    payment-api-production: production
  exempt_namespaces: [kube-system, conveyor]
{extra}"""
IDENTITIES = ("ci", "deployer", "viewer", "watcher", "root")
# Staging frozen now (break-glass: 1 approval); canary with a break-glass but no open freeze.
BREAK_GLASS_CONFIG = (
    ADMISSION_CONFIG.replace(
        'windows: ["2099-01-01T00:00:00Z/2099-01-02T00:00:00Z"]',
        'windows: ["2020-01-01T00:00:00Z/2999-01-01T00:00:00Z"]',
    )
    .replace(
        "  production:\n",
        "  canary:\n"
        "    repository: oci:canary\n"
        "    requires:\n"
        "      freeze:\n"
        '        windows: ["2099-01-01T00:00:00Z/2099-01-02T00:00:00Z"]\n'
        "        break_glass: {{approvals: 1}}\n"
        "  production:\n",
    )
    .replace(
        "    payment-api-production: production\n",
        "    payment-api-production: production\n    payment-api-canary: canary\n",
    )
    .format(extra="")
)


def admission_team(root: Path, *, ledger_url: str | None = None, extra: str = "") -> Team:
    team = make_team(root, ledger_url=ledger_url)
    team.config.write_text(ADMISSION_CONFIG.format(extra=extra))
    return team


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conveyor.conveyor.svc")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@dataclass
class TlsServer:
    server: RunningServer
    ca: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, identity: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[identity]}"} if identity else {}
        return httpx.Client(
            base_url=self.server.url, verify=_context(self.ca), timeout=60, headers=headers
        )

    def review(self, document: object, **kwargs: Any) -> dict[str, Any]:
        with self.client() as client:
            answer = client.post("/admission/validate", json=document, **kwargs)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = answer.json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        return body["response"]

    def post(self, identity: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client(identity) as client:
            return client.post(path, **kwargs)

    def stop(self) -> None:
        self.server.stop()


def start_tls_server(team: Team) -> TlsServer:
    tls = team.root / "tls"
    cert, key = (
        (tls / "tls.crt", tls / "tls.key") if (tls / "tls.crt").is_file() else self_signed(tls)
    )  # replicas of one team share the certificate
    for _attempt in range(3):
        port = free_port()
        log = team.root / f"serve-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--port", str(port),
                 "--tls-cert", str(cert), "--tls-key", str(key)],
                stdout=out, stderr=subprocess.STDOUT, cwd=team.root, env=team.env(),
            )  # fmt: skip
        server = RunningServer(f"https://127.0.0.1:{port}", process, log, team)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(server.url + "/healthz", verify=_context(cert), timeout=2).is_success:
                    return TlsServer(server, cert)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        server.stop()
    raise RuntimeError(f"conveyor serve (TLS) did not start: {log.read_text()[-3000:]}")


def promote(tls: TlsServer, ref: str, environment: str) -> None:
    answer = tls.post(
        "deployer", "/api/v1/promotions", json={"reference": ref, "environment": environment}
    )
    assert answer.status_code == 200, answer.text


def build(tls: TlsServer, team: Team, tag: str) -> tuple[str, str]:
    ref = team.image(tag)
    body = {"reference": ref, "commit": COMMIT, "run_id": "42"}
    answer = tls.post("ci", "/api/v1/builds", json=body)
    assert answer.status_code == 200, answer.text
    return ref, ref.split("@", 1)[1]


def pod_review(
    digest: str, *, namespace: str = "payment-api-production", tag: str = ""
) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ASSETS / "pod-create.json").read_text())
    document = copy.deepcopy(document)
    document["request"]["namespace"] = namespace
    document["request"]["object"]["metadata"]["namespace"] = namespace
    image = f"registry.example.com/payment-api{':' + tag if tag else ''}@{digest}"
    document["request"]["object"]["spec"]["containers"][0]["image"] = image
    return document


def asset(name: str, **digests: str) -> dict[str, Any]:
    """A sample with its example digests (1111…, 2222…) replaced."""
    text = (ASSETS / name).read_text()
    for placeholder, digest in digests.items():
        text = text.replace("sha256:" + placeholder[1] * 64, digest)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


REASON = "INC-4711: payment outage, hotfix"


def glass(document: dict[str, Any], reason: str = REASON, *, uid: str | None = None) -> Any:
    """``document`` with a break-glass annotation (and another request uid)."""
    document = copy.deepcopy(document)
    document["request"]["object"]["metadata"]["annotations"] = {"conveyor.dev/break-glass": reason}
    if uid is not None:
        document["request"]["uid"] = uid
    return document


def approve(tls: TlsServer, ref: str, environment: str) -> None:
    body = {"reference": ref, "environment": environment, "comment": "hotfix"}
    answer = tls.post("alice", "/api/v1/approvals", json=body)
    assert answer.status_code == 200, answer.text
