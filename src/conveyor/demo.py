"""The demo's script: the seed pipeline on embedded defaults, as commands a user could type.

build job → test job → deploy staging → deploy production, where one digest moves from stage
to stage only when the evidence says so. The registry is an OCI image layout, the ledger is
SQLite beside ``conveyor.yaml``; everything lives in one fresh directory.

``script(base)`` yields what to show, in order: a ``Section`` per job, a ``Note`` for what is
done without conveyor (a file written, an image built: in CI that is ``docker build`` or
``trivy``), and a ``Step`` per conveyor command: its argv, run in ``base``, and what it must
show (exit code, text that must and must not appear). The face runs each step through the
real CLI and checks it with ``Step.problems``; this module writes files and never prints.
Paths in the commands are relative to ``base``, so each can be typed again there.
"""

from __future__ import annotations

import secrets
import shlex
import string
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TypedDict

from conveyor.errors import InputError, VerificationError

__all__ = [
    "BUILD_REPOSITORY",
    "CLEARED_ENVIRONMENT",
    "PRODUCTION_REPOSITORY",
    "STAGING_REPOSITORY",
    "DemoFailed",
    "Note",
    "Section",
    "Serve",
    "Step",
    "prepare_directory",
    "script",
]

VERSION = "1.0.0"
BUILD_REPOSITORY = "oci:registry/build"
STAGING_REPOSITORY = "oci:registry/payment-api-staging"
PRODUCTION_REPOSITORY = "oci:registry/payment-api"
IDENTITIES = ("ci", "deployer", "alice", "bob", "ledger")
# Ledger entries the script records: build, tests, scan, staging, smoke, two approvals,
# production. The refused promotion and the repeated one must record nothing.
RECORDED = 8

# Variables that would point the demo at another config, ledger or key than its own: the
# face clears them while the demo runs (a team's CONVEYOR_DB must never receive demo rows).
CLEARED_ENVIRONMENT = (
    "CONVEYOR_CONFIG",
    "CONVEYOR_DB",
    "CONVEYOR_SIGNING_KEY",
    "CONVEYOR_SERVER",
    "CONVEYOR_TOKEN",
)
# ``demo --server``: the identities act through the server, each with its own API token.
PEOPLE = ("ci", "deployer", "alice", "bob")

SERVER_CONFIG = """\
# conveyor.yaml of the demo through conveyor serve: people and jobs have no keys; they act
# through the server with API tokens, and the server signs for them with its own key.
version: 1
identities:
  ci:       {roles: [builder, tester, scanner]}
  deployer: {roles: [deployer]}
  alice:    {roles: [approver]}
  bob:      {roles: [approver]}
  server:   {key: keys/server.pub, roles: [server]}
server:
  signing_key: keys/server.key
  layouts: [registry/build]  # where the build job's images are; it opens nothing else
ledger:
  key: keys/ledger.key
  public_key: keys/ledger.pub
environments:
"""

CONFIG = """\
# conveyor.yaml of the demo: the issue's staging/production example, with OCI image layouts
# (oci:PATH, relative to this file) standing in for registry repositories.
version: 1
identities:
  ci:       {{key: keys/ci.pub,       roles: [builder, tester, scanner]}}
  deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  alice:    {{key: keys/alice.pub,    roles: [approver]}}
  bob:      {{key: keys/bob.pub,      roles: [approver]}}
ledger:
  # url: sqlite:///.conveyor/conveyor.db   (the default, beside this file)
  key: keys/ledger.key
  public_key: keys/ledger.pub
environments:
  staging:
    repository: {staging}
    tags: [staging]
    requires:
      provenance: {{}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
  production:
    repository: {production}
    tags: [production]
    requires:
      after: {{environment: staging, smoke: true}}
      approvals: {{count: 2, role: approver, distinct_from: [builder, promoter]}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
"""


class DemoFailed(VerificationError):
    """A demo step did not behave as the pipeline should."""


@dataclass(frozen=True)
class Section:
    title: str


@dataclass(frozen=True)
class Note:
    """Something done without conveyor; ``body`` is a file's text to show under it."""

    text: str
    body: str | None = None


@dataclass(frozen=True)
class Serve:
    """``demo --server``: start ``conveyor serve`` in the demo directory (the face does)."""

    why: str


@dataclass(frozen=True)
class Step:
    """One conveyor command (run in the demo directory) and what it must show."""

    argv: tuple[str, ...]
    why: str
    exit_code: int = 0
    expect: tuple[str, ...] = ()  # text the output must contain
    refuse: tuple[str, ...] = ()  # text it must not contain
    token: str | None = None  # run with CONVEYOR_TOKEN=$<token> (demo --server)
    capture: str | None = None  # keep the output's first line as $<capture>

    @property
    def command(self) -> str:
        line = shlex.join(("conveyor", *self.argv))
        if self.capture:
            line = f"{self.capture}=$({line})"
        return f"CONVEYOR_TOKEN=${self.token} {line}" if self.token else line

    def problems(self, exit_code: int, output: str) -> list[str]:
        found = []
        if exit_code != self.exit_code:
            found.append(f"exit code {exit_code}, expected {self.exit_code}")
        found += [f"output lacks {text!r}" for text in self.expect if text not in output]
        found += [f"output shows {text!r}" for text in self.refuse if text in output]
        return found


DemoItem = Section | Note | Step | Serve


class _Signed(TypedDict):
    argv: tuple[str, ...]
    token: str | None


class _Reading(TypedDict):
    token: str | None


def token_variable(identity: str) -> str:
    return f"{identity.upper()}_TOKEN"


def prepare_directory(directory: Path | None) -> Path:
    """A fresh temporary directory, or ``directory`` if it is new or empty (made absolute)."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="conveyor-demo-")).resolve()
    base = directory.expanduser().resolve()
    if base.exists() and (not base.is_dir() or any(base.iterdir())):
        raise InputError(f"{directory} is not an empty directory; the demo needs a fresh one")
    base.mkdir(parents=True, exist_ok=True)
    return base


def _data(name: str) -> str:
    return (resources.files("conveyor.demo_data") / name).read_text(encoding="utf-8")


def script(
    base: Path,
    *,
    commit: str | None = None,
    run_id: str | None = None,
    server: bool = False,
) -> Iterator[DemoItem]:
    """The demo, item by item. Files are written into ``base`` as the items are produced,
    so a ``Step`` may rely on everything yielded before it having run. ``server``: the same
    pipeline through ``conveyor serve``, each identity with its own API token."""
    from conveyor import service

    commit = commit or secrets.token_hex(20)
    run_id = run_id or str(7_000_000_000 + secrets.randbelow(1_000_000_000))
    keys = "keys"

    def signed(who: str, *argv: str) -> _Signed:
        """The same command, signed by ``who``: with their key, or their token."""
        if server:
            return {"argv": argv, "token": token_variable(who)}
        return {"argv": (*argv, "--key", f"{keys}/{who}.key"), "token": None}

    yield Section("Set-up: keys for each identity, and conveyor.yaml")
    for name in ("server", "ledger") if server else IDENTITIES:
        yield Step(
            ("keys", "generate", name, "--out", keys),
            why={
                "ledger": "the key that signs ledger checkpoints",
                "server": "the key conveyor serve signs with, for whoever it acts for",
            }.get(name, f"a signing key for {name}"),
            expect=(f"{keys}/{name}.pub",),
        )
    config = CONFIG.format(staging=STAGING_REPOSITORY, production=PRODUCTION_REPOSITORY)
    if server:
        config = SERVER_CONFIG + config.split("environments:\n", 1)[1]
    (base / "conveyor.yaml").write_text(config, encoding="utf-8")
    yield Note("wrote conveyor.yaml: who signs what, and the gates of each environment", config)
    if server:
        yield Section("The server: one API token per identity, then conveyor serve")
        for name in PEOPLE:
            yield Step(
                ("token", "create", f"{name}-demo", "--identity", name),
                why=f"an API token for {name} (an admin's bootstrap: straight into the ledger "
                "database; shown once, only its hash is kept)",
                capture=token_variable(name),
                expect=(f"token {name}-demo for {name}",),
            )
        yield Serve("the team server on a free loopback port; every command below goes "
                    "through it (CONVEYOR_SERVER), authenticated by a token")  # fmt: skip

    yield Section("Build job: build the image once, record its provenance")
    labels = {
        "git.commit": commit,
        "ci.run": run_id,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.source": "https://git.example.com/acme/payment-api",
        "org.opencontainers.image.title": "payment-api",
        "org.opencontainers.image.version": VERSION,
    }
    tagged = f"{BUILD_REPOSITORY}:{VERSION}"
    built = service.create_sample_image(
        f"oci:{base / BUILD_REPOSITORY.removeprefix('oci:')}:{VERSION}",
        labels=labels,
        layer_sizes=(32 * 1024, 96 * 1024),
    )
    digest = str(built.digest)
    yield Note(
        f"built {tagged} (digest {digest}) with labels git.commit={commit[:12]}… and "
        f"ci.run={run_id} (in CI: docker build --label git.commit=$SHA --label ci.run=$RUN_ID)"
    )
    yield Step(
        ("inspect", tagged),
        token=token_variable("ci") if server else None,  # through the server, like the rest
        why="the tag names one digest; its config carries the commit and the CI run",
        expect=(digest, f"git.commit={commit}", f"ci.run={run_id}"),
    )
    yield Step(
        **signed("ci", "record", "build", tagged, "--commit", commit, "--run-id", run_id),
        why="the build job records SLSA provenance: this digest, from this commit, by this run",
        expect=("recorded build", digest),
    )
    build_ref = f"{BUILD_REPOSITORY}@{digest}"

    yield Section("Test job: attest the test results and the vulnerability scan of that digest")
    reports = base / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "junit.xml").write_text(_data("junit-payment-api.xml"), encoding="utf-8")
    yield Note("wrote reports/junit.xml (sample pytest report: 11 passed, 1 skipped)")
    yield Step(
        **signed("ci", "attest", "tests", build_ref, "reports/junit.xml"),
        why="test results, signed by a tester, about this digest (not a tag)",
        expect=("recorded tests", digest),
    )
    inspection = service.inspect(build_ref.replace("oci:", f"oci:{base}/", 1))
    scan = string.Template(_data("trivy-payment-api.template.json")).substitute(
        scanned_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        image=tagged.removeprefix("oci:"),
        repository=BUILD_REPOSITORY.removeprefix("oci:"),
        digest=digest,
        config_digest=str(inspection.config_digest),
        commit=commit,
        run_id=run_id,
    )
    (reports / "trivy.json").write_text(scan, encoding="utf-8")
    yield Note(
        "wrote reports/trivy.json: a Trivy report naming this digest, 0 critical, 0 high, "
        "1 medium, 2 low (in CI: trivy image --format json --output reports/trivy.json "
        "IMAGE@DIGEST)"
    )
    yield Step(
        **signed("ci", "attest", "scan", build_ref, "reports/trivy.json"),
        why="the scan is checked to be of this very digest before it is signed",
        expect=("recorded scan", digest),
    )

    yield Section("Deploy: production first? Refused, with its reasons")
    yield Step(
        **signed("deployer", "promote", build_ref, "--to", "production"),
        why="the gates say what is missing: it has not been through staging, nobody approved",
        exit_code=1,
        expect=("pass  tests", "pass  scan", "FAIL  after", "FAIL  approvals", "denied"),
    )

    yield Section("Deploy staging: promote the same digest, then smoke-test it there")
    staging_ref = f"{STAGING_REPOSITORY}@{digest}"
    yield Step(
        **signed("deployer", "promote", tagged, "--to", "staging"),
        why="the tag is resolved once; the digest is placed in staging unchanged and recorded",
        # the ledger names layouts by absolute path (relative ones are relative to conveyor.yaml)
        expect=(
            "promoted oci:",
            f"/registry/payment-api-staging@{digest} to staging",
            "pass  provenance",
            "pass  scan",
        ),
    )
    yield Step(
        **signed(
            "ci",
            "attest",
            "smoke",
            staging_ref,
            "--env",
            "staging",
            "--passed",
            "--url",
            "https://staging.payment-api.example.com/healthz",
        ),
        why="the smoke test of staging passed: production's `after` gate asks for it",
        expect=("recorded smoke for staging",),
    )

    yield Section("Deploy production: two approvals, then the same digest again")
    for approver, comment in (("alice", "release 1.0.0"), ("bob", "looks good")):
        yield Step(
            **signed(
                approver,
                "approve",
                staging_ref,
                "--env",
                "production",
                "--comment",
                comment,
            ),
            why=f"{approver} approves this digest for production (bound to both)",
            expect=("recorded approval for production", f"signed by {approver}"),
        )
    production_ref = f"{PRODUCTION_REPOSITORY}@{digest}"
    yield Step(
        **signed("deployer", "promote", staging_ref, "--to", "production"),
        why="every gate passes now; each line names the evidence it used",
        expect=(
            "promoted oci:",
            f"/registry/payment-api@{digest} to production",
            "pass  after",
            "pass  approvals",
            "pass  tests",
            "pass  scan",
        ),
        refuse=("FAIL",),
    )
    yield Step(
        **signed("deployer", "promote", staging_ref, "--to", "production", "--helm-args"),
        why="a deploy step asks again: already there, nothing recorded; helm gets the digest",
        expect=(
            "--set image.repository=oci:",
            f"/registry/payment-api --set image.digest={digest}",
        ),
    )

    yield Section("Where is what, and how did it get there")
    yield Step(
        ("resolve", f"{PRODUCTION_REPOSITORY}:production"),
        token=token_variable("alice") if server else None,  # every identity may read
        why="production's moving tag names the very digest that was built and tested",
        expect=(production_ref,),
    )
    reader: _Reading = {"token": token_variable("alice") if server else None}  # all may read
    yield Step(
        ("status",),
        **reader,
        why="each environment: its digest, commit, when and by whom",
        expect=(
            f"/registry/payment-api-staging@{digest} commit {commit[:12]}",
            f"/registry/payment-api@{digest} commit {commit[:12]}",
        ),
    )
    yield Step(
        ("trace", commit[:12]),
        **reader,
        why="the chain of custody of everything built from the commit",
        expect=(digest, "promoted to staging", "promoted to production", "[verified]"),
        refuse=("NOT VERIFIED",),
    )
    yield Step(
        ("audit", "checkpoint", "--out", "ledger.checkpoint"),
        token=token_variable("deployer") if server else None,
        why="a signed checkpoint of the ledger, to keep elsewhere (CI log, another host)",
    )
    yield Step(
        ("audit", "verify", "--checkpoint", "ledger.checkpoint"),
        **reader,
        why="every entry's hash and signature recomputed; consistent with the checkpoint",
        expect=(f"ledger ok: {RECORDED} entries",),
    )
