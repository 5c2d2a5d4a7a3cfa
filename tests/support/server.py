"""A real ``conveyor serve`` process on a loopback ephemeral port, and a team workspace for it.

``Team`` writes a conveyor.yaml with the seed pipeline's identities (each with a key, so
client-signed evidence works too), a ``server`` identity and an ``admin``; ``ServedTeam``
starts ``conveyor serve`` on it, creates one API token per identity with the real
``conveyor token create`` command, and stops the server at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from conveyor import service
from tests.support.images import build_image

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PASSING_JUNIT = '<testsuite name="unit"><testcase name="a"/><testcase name="b"/></testsuite>'

CONFIG = """\
version: 1
identities:
  ci:       {{key: keys/ci.pub,       roles: [builder, tester, scanner]}}
  deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  alice:    {{key: keys/alice.pub,    roles: [approver]}}
  bob:      {{roles: [approver]}}
  carol:    {{roles: [approver, builder]}}
  viewer:   {{roles: [reader]}}
  root:     {{roles: [admin]}}
  server:   {{key: keys/server.pub,   roles: [server]}}
ledger:
{ledger_url}  key: keys/ledger.key
  public_key: keys/ledger.pub
server:
  signing_key: keys/server.key
  layouts: [build]
environments:
  staging:
    repository: oci:staging
    tags: [staging]
    requires:
      provenance: {{}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
  production:
    repository: oci:production
    tags: [production]
    requires:
      after: {{environment: staging, smoke: true}}
      approvals: {{count: 2, role: approver, distinct_from: [builder, promoter]}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
"""
IDENTITIES = ("ci", "deployer", "alice", "bob", "carol", "viewer", "root")


def trivy_report(*, critical: int = 0) -> dict[str, object]:
    vulns = [
        {
            "VulnerabilityID": f"CVE-2099-{i}",
            "PkgName": "openssl",
            "InstalledVersion": "1",
            "Severity": "CRITICAL",
        }
        for i in range(critical)
    ]
    return {
        "SchemaVersion": 2,
        # Scans are recorded when they are made: a time the reader believes (not the future).
        "CreatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ArtifactName": "example/app",
        "ArtifactType": "container_image",
        "Metadata": {},
        "Results": [{"Target": "app", "Class": "os-pkgs", "Vulnerabilities": vulns}],
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Team:
    root: Path
    config: Path
    ledger_url: str | None = None

    def env(self) -> dict[str, str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        full["CONVEYOR_CONFIG"] = str(self.config)
        if self.ledger_url:
            full["CONVEYOR_DB"] = self.ledger_url
        return full

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = self.env()
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=self.root,
            env=full,
        )

    def image(self, tag: str = "v1", *, commit: str = COMMIT) -> str:
        img = build_image(
            self.root / "build", tag=tag, labels={"git.commit": commit, "ci.run": "42"}
        )
        return f"oci:{img.layout}@{img.digest}"

    def token(self, name: str, identity: str, *, expires: str | None = None) -> str:
        args = ["token", "create", name, "--identity", identity]
        if expires:
            args += ["--expires", expires]
        done = self.cli(*args)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert "\n" not in token
        return token


def make_team(root: Path, *, ledger_url: str | None = None) -> Team:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("ci", "deployer", "alice", "server", "ledger"):
        service.generate_keys(name, out_dir=root / "keys")
    config = root / "conveyor.yaml"
    config.write_text(CONFIG.format(ledger_url=""))
    return Team(root, config, ledger_url)


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    team: Team
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, identity: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        chosen = token if token is not None else (self.tokens.get(identity) if identity else None)
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"raw": raw})
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_server(team: Team, *, extra: tuple[str, ...] = ()) -> RunningServer:
    """``conveyor serve`` on a free loopback port; ready when /readyz answers 200."""
    last = ""
    for _attempt in range(3):
        port = free_port()
        log = team.root / f"serve-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "serve", "--port", str(port), *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=team.root,
                env=team.env(),
            )
        url = f"http://127.0.0.1:{port}"
        server = RunningServer(url, process, log, team)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        server.stop()
        last = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"conveyor serve did not become ready: {last}")


@dataclass
class ServedTeam:
    team: Team
    server: RunningServer

    @property
    def tokens(self) -> dict[str, str]:
        return self.server.tokens


def serve_team(root: Path, *, ledger_url: str | None = None) -> Iterator[ServedTeam]:
    team = make_team(root, ledger_url=ledger_url)
    tokens = {identity: team.token(f"{identity}-token", identity) for identity in IDENTITIES}
    server = start_server(team)
    server.tokens.update(tokens)
    try:
        yield ServedTeam(team, server)
    finally:
        server.stop()
