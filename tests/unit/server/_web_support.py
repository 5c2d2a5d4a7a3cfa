"""A team workspace and an in-process ``conveyor serve`` application for the web page's
tests: people sign in through ``server.login`` (sessions minted with the server's own key,
as /login/callback mints them), CI records with its own key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from conveyor import service
from conveyor.server import login
from conveyor.server.app import create_app
from conveyor.server.state import ServerSettings
from tests.support.images import build_image

COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_2 = "fedcba9876543210fedcba9876543210fedcba98"
ISSUER = "https://login.example"
HOSTILE = '<script>alert("title")</script>'
PASSING_JUNIT = '<testsuite name="unit"><testcase name="a"/><testcase name="b"/></testsuite>'
EMAILS = {
    "deployer": "dee@example.com",
    "alice": "alice@example.com",
    "bob": "bob@example.com",
    "carol": "carol@example.com",
    "viewer": "viewer@example.com",
}
CONFIG = """\
version: 1
identities:
  ci:       {key: keys/ci.pub, roles: [builder, tester, scanner]}
  deployer: {key: keys/deployer.pub, roles: [deployer], login: {email: dee@example.com}}
  alice:    {key: keys/alice.pub, roles: [approver], login: {email: alice@example.com}}
  bob:      {roles: [approver], login: {email: bob@example.com}}
  carol:    {roles: [approver], login: {email: carol@example.com}}
  viewer:   {roles: [reader], login: {email: viewer@example.com}}
  server:   {key: keys/server.pub, roles: [server]}
ledger:
  key: keys/ledger.key
  public_key: keys/ledger.pub
server:
  signing_key: keys/server.key
  url: http://127.0.0.1:8080
  login: {issuer: "https://login.example", client_id: conveyor, client_secret_env: WEB_SECRET}
  layouts: [build]
environments:
  staging:
    repository: oci:staging
    requires:
      provenance: {}
      tests: {min_passed: 1, max_failed: 0}
      scan: {max: {critical: 0, high: 0}, max_age: 24h}
  production:
    repository: oci:production
    requires:
      after: staging
      approvals: {count: 2, role: approver, distinct_from: [builder, promoter]}
      tests: {min_passed: 1, max_failed: 0}
"""


def trivy(findings: list[tuple[str, str]]) -> str:
    return json.dumps(
        {
            "SchemaVersion": 2,
            "CreatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ArtifactName": "app",
            "ArtifactType": "container_image",
            "Metadata": {},
            "Results": [
                {
                    "Target": "app",
                    "Class": "os-pkgs",
                    "Vulnerabilities": [
                        {"VulnerabilityID": i, "PkgName": "p", "InstalledVersion": "1",
                         "Severity": s}
                        for i, s in findings
                    ],
                }
            ],
        }
    )  # fmt: skip


@dataclass
class WebTeam:
    root: Path
    config: Path
    client: TestClient
    images: dict[str, str] = field(default_factory=dict)  # name -> oci:layout@digest

    def key(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    def image(self, name: str, *, commit: str = COMMIT, title: str = HOSTILE) -> str:
        built = build_image(
            self.root / "build",
            tag=name,
            labels={
                "git.commit": commit,
                "ci.run": "42",
                "org.opencontainers.image.title": title,
            },
        )
        ref = f"oci:{built.layout}@{built.digest}"
        self.images[name] = ref
        return ref

    def record(
        self, ref: str, *, commit: str = COMMIT, findings: tuple[tuple[str, str], ...] = ()
    ) -> None:
        common: dict[str, Any] = {"key": self.key("ci"), "config_path": self.config}
        service.record_build(
            ref, commit=commit, run_id="42", run_url="https://ci.example/run/42", **common
        )
        junit = self.root / "junit.xml"
        junit.write_text(PASSING_JUNIT)
        service.attest_tests(ref, [junit], **common)
        scan = self.root / "scan.json"
        scan.write_text(trivy(list(findings)))
        service.attest_scan(ref, scan, **common)

    def promote(self, ref: str, environment: str) -> None:
        service.promote(
            ref, environment=environment, key=self.key("deployer"), config_path=self.config
        )

    def approve(self, ref: str, environment: str, who: str = "alice") -> None:
        service.approve(ref, environment=environment, key=self.key(who), config_path=self.config)

    def digest(self, name: str) -> str:
        return self.images[name].split("@", 1)[1]

    @property
    def state(self) -> object:
        return self.client.app.state.conveyor  # type: ignore[attr-defined]

    def session(self, identity: str) -> str:
        return login.new_session(self.state, identity, EMAILS[identity], ISSUER, "browser")  # type: ignore[arg-type]

    def as_(self, identity: str | None) -> TestClient:
        """A client signed in as ``identity`` (None: nobody)."""
        client = TestClient(self.client.app, follow_redirects=False)
        if identity is not None:
            client.cookies.set(login.SESSION_COOKIE, self.session(identity))
        return client

    def csrf(self, client: TestClient) -> str:
        return login.csrf_token(client.cookies[login.SESSION_COOKIE])

    def ledger_size(self) -> int:
        return int(self.state.workspace().ledger.size())  # type: ignore[attr-defined]


def make_web_team(root: Path) -> WebTeam:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("ci", "deployer", "alice", "server", "ledger"):
        service.generate_keys(name, out_dir=root / "keys")
    config = root / "conveyor.yaml"
    config.write_text(CONFIG)
    app = create_app(ServerSettings(config_path=config.resolve()))
    team = WebTeam(root, config, TestClient(app, follow_redirects=False))
    ref = team.image("v1")
    team.record(ref, findings=(("CVE-2024-0001", "LOW"), ("CVE-2024-0002", "MEDIUM")))
    team.promote(ref, "staging")
    return team
