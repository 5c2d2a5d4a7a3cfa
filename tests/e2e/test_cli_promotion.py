"""Promotion end to end: the same digest moves only when the evidence says so.

Evidence is recorded in-process through ``conveyor.service`` (fast); the behaviour users
meet — exit codes, one-line errors, outputs for deploy steps, parallel promoters — goes
through the real CLI in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor import service
from conveyor.errors import ConveyorError
from tests.support.images import build_image
from tests.support.registry import RunningRegistry, skopeo

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PASSING_JUNIT = '<testsuite name="unit"><testcase name="a"/><testcase name="b"/></testsuite>'

CONFIG = """\
version: 1
identities:
  ci:       {{key: keys/ci.pub,       roles: [builder, tester, scanner]}}
  deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  alice:    {{key: keys/alice.pub,    roles: [approver]}}
  bob:      {{key: keys/bob.pub,      roles: [approver]}}
  carol:    {{key: keys/carol.pub,    roles: [approver, builder]}}
ledger:
  key: keys/ledger.key
  public_key: keys/ledger.pub
{freeze}
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


@dataclass
class Pipeline:
    root: Path
    config: Path

    def key(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    def image(self, tag: str = "v1", *, commit: str = COMMIT, run: str = "42") -> str:
        img = build_image(
            self.root / "build", tag=tag, labels={"git.commit": commit, "ci.run": run}
        )
        return f"oci:{img.layout}@{img.digest}"

    def record_build(self, ref: str, *, commit: str = COMMIT, run: str = "42") -> None:
        service.record_build(
            ref, commit=commit, run_id=run, key=self.key("ci"), config_path=self.config
        )

    def pass_tests_and_scan(self, ref: str, *, scan: Path | None = None) -> None:
        junit = self.root / "junit.xml"
        junit.write_text(PASSING_JUNIT)
        service.attest_tests(ref, [junit], key=self.key("ci"), config_path=self.config)
        if scan is None:
            scan = self.root / "scan.json"
            scan.write_text(json.dumps(_trivy(created=_now())))
        service.attest_scan(ref, scan, key=self.key("ci"), config_path=self.config)

    def ready_for_staging(self, tag: str = "v1") -> str:
        ref = self.image(tag)
        self.record_build(ref)
        self.pass_tests_and_scan(ref)
        return ref

    def promote(self, ref: str, env: str, **kwargs: object) -> service.PromotionResult:
        return service.promote(
            ref, environment=env, key=self.key("deployer"), config_path=self.config, **kwargs
        )

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = dict(os.environ)
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=self.root,
            env=full,
        )


def _now() -> str:
    """A scan time the reader believes: scans are recorded when they are made."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _trivy(*, created: str, critical: int = 0, digest: str | None = None) -> dict[str, object]:
    vulns = [
        {
            "VulnerabilityID": f"CVE-2099-{i}",
            "PkgName": "openssl",
            "InstalledVersion": "1",
            "Severity": "CRITICAL",
        }
        for i in range(critical)
    ]
    metadata = {"RepoDigests": [f"example/app@{digest}"]} if digest else {}
    return {
        "SchemaVersion": 2,
        "CreatedAt": created,
        "ArtifactName": "example/app",
        "ArtifactType": "container_image",
        "Metadata": metadata,
        "Results": [{"Target": "app", "Class": "os-pkgs", "Vulnerabilities": vulns}],
    }


def make_pipeline(
    root: Path, *, freeze: str = "", staging: str = "", production: str = ""
) -> Pipeline:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("ci", "deployer", "alice", "bob", "carol", "ledger"):
        service.generate_keys(name, out_dir=root / "keys")
    config = root / "conveyor.yaml"
    config.write_text(
        CONFIG.format(
            freeze=freeze,
            staging=staging or f"oci:{root / 'staging'}",
            production=production or f"oci:{root / 'production'}",
        )
    )
    return Pipeline(root, config)


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path / "p")


def _denied(pipeline: Pipeline, ref: str, env: str) -> str:
    with pytest.raises(service.PromotionDenied) as info:
        pipeline.promote(ref, env)
    assert info.value.exit_code == 1
    return str(info.value)


def test_the_seed_pipeline_moves_one_digest(pipeline: Pipeline) -> None:
    ref = pipeline.ready_for_staging()
    digest = ref.split("@")[1]
    assert "after:" in _denied(pipeline, ref, "production")
    staged = pipeline.promote(ref, "staging")
    assert staged.recorded
    assert str(staged.digest) == digest
    assert service.resolve(f"oci:{pipeline.root / 'staging'}:staging").digest == staged.digest
    # promoting what is already there records nothing
    again = pipeline.promote(ref, "staging")
    assert not again.recorded
    assert again.ledger_index is None
    staging_ref = f"oci:{pipeline.root / 'staging'}:staging"
    service.attest_smoke(
        staging_ref,
        environment="staging",
        passed=True,
        key=pipeline.key("ci"),
        config_path=pipeline.config,
    )
    service.approve(
        staging_ref,
        environment="production",
        key=pipeline.key("alice"),
        config_path=pipeline.config,
    )
    assert "1 of 2" in _denied(pipeline, staging_ref, "production")
    service.approve(
        staging_ref, environment="production", key=pipeline.key("bob"), config_path=pipeline.config
    )
    prod = pipeline.promote(staging_ref, "production")
    assert str(prod.digest) == digest
    assert prod.referrers_carried >= 6  # build, tests, scan, promotion, smoke, approvals
    envs = {s.environment: s for s in service.status(config_path=pipeline.config)}
    assert envs["production"].current is not None
    assert envs["production"].current.digest == digest
    assert envs["production"].current.commit == COMMIT
    kinds = [e.kind for e in service.trace(COMMIT[:12], config_path=pipeline.config).events]
    assert kinds.count("promotion") == 2
    assert service.audit_verify(config_path=pipeline.config).ok


def test_each_gate_fails_alone(pipeline: Pipeline) -> None:
    no_build = pipeline.image("nobuild")
    pipeline.pass_tests_and_scan(no_build)
    assert "build once, never adopt" in _denied(pipeline, no_build, "staging")

    failing = pipeline.image("failing")
    pipeline.record_build(failing)
    pipeline.pass_tests_and_scan(failing)
    bad = pipeline.root / "bad.xml"
    bad.write_text('<testsuite name="u"><testcase name="a"><failure/></testcase></testsuite>')
    service.attest_tests(failing, [bad], key=pipeline.key("ci"), config_path=pipeline.config)
    assert "tests:" in _denied(pipeline, failing, "staging")  # the re-run replaced the pass

    vulnerable = pipeline.image("vulnerable")
    pipeline.record_build(vulnerable)
    scan = pipeline.root / "vuln.json"
    scan.write_text(json.dumps(_trivy(created=_now(), critical=2)))
    pipeline.pass_tests_and_scan(vulnerable, scan=scan)
    assert "scan:" in _denied(pipeline, vulnerable, "staging")

    stale = pipeline.image("stale")
    pipeline.record_build(stale)
    old = pipeline.root / "old.json"
    old.write_text(json.dumps(_trivy(created="2020-01-01T00:00:00Z")))
    pipeline.pass_tests_and_scan(stale, scan=old)
    assert "scan:" in _denied(pipeline, stale, "staging")


def test_builder_and_promoter_approvals_do_not_count(pipeline: Pipeline) -> None:
    ref = pipeline.image()
    # carol builds it; her own approval must not count (distinct_from: [builder])
    service.record_build(
        ref, commit=COMMIT, run_id="42", key=pipeline.key("carol"), config_path=pipeline.config
    )
    pipeline.pass_tests_and_scan(ref)
    pipeline.promote(ref, "staging")
    service.attest_smoke(
        ref, environment="staging", passed=True, key=pipeline.key("ci"), config_path=pipeline.config
    )
    service.approve(
        ref, environment="production", key=pipeline.key("carol"), config_path=pipeline.config
    )
    service.approve(
        ref, environment="production", key=pipeline.key("alice"), config_path=pipeline.config
    )
    service.approve(
        ref, environment="production", key=pipeline.key("alice"), config_path=pipeline.config
    )  # one identity counts once
    message = _denied(pipeline, ref, "production")
    assert "approvals:" in message
    # an approval for another environment does not count either
    service.approve(
        ref, environment="staging", key=pipeline.key("bob"), config_path=pipeline.config
    )
    assert "approvals:" in _denied(pipeline, ref, "production")
    service.approve(
        ref, environment="production", key=pipeline.key("bob"), config_path=pipeline.config
    )
    assert pipeline.promote(ref, "production").recorded


def test_a_moved_tag_is_refused_and_the_message_says_where_it_pointed(pipeline: Pipeline) -> None:
    built = build_image(pipeline.root / "build", tag="abc", labels={"git.commit": COMMIT})
    ref = f"oci:{built.layout}:abc"
    pipeline.record_build(ref, run="")
    pipeline.pass_tests_and_scan(ref)
    # someone pushes another image under the same tag
    moved = build_image(pipeline.root / "build", tag="abc", labels={"git.commit": COMMIT})
    message = _denied(pipeline, ref, "staging")
    assert "build once, never adopt" in message
    assert built.digest in message
    assert "the tag moved" in message
    assert not (pipeline.root / "staging").exists() or moved.digest not in json.dumps(
        json.loads((pipeline.root / "staging" / "index.json").read_text())
    )


def test_freeze_needs_break_glass_with_extra_approvals(tmp_path: Path) -> None:
    freeze = (
        "freeze:\n  windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']\n"
        "  break_glass: {approvals: 1, role: approver}\n"
    )
    pipeline = make_pipeline(tmp_path / "f", freeze=freeze)
    ref = pipeline.ready_for_staging()
    assert "freeze" in _denied(pipeline, ref, "staging")
    with pytest.raises(service.PromotionDenied):
        pipeline.promote(ref, "staging", break_glass="hotfix for incident 42")
    service.approve(
        ref, environment="staging", key=pipeline.key("alice"), config_path=pipeline.config
    )
    result = pipeline.promote(ref, "staging", break_glass="hotfix for incident 42")
    assert result.recorded
    assert result.decision.break_glass == "hotfix for incident 42"
    history = service.history("staging", config_path=pipeline.config)
    assert history[0].break_glass == "hotfix for incident 42"


def test_rollback_puts_back_the_previous_digest(pipeline: Pipeline) -> None:
    first = pipeline.ready_for_staging("one")
    second = pipeline.ready_for_staging("two")
    pipeline.promote(first, "staging")
    pipeline.promote(second, "staging")
    back = service.rollback("staging", key=pipeline.key("deployer"), config_path=pipeline.config)
    assert back.rollback
    assert str(back.digest) == first.split("@")[1]
    assert service.resolve(f"oci:{pipeline.root / 'staging'}:staging").digest == back.digest
    with pytest.raises(ConveyorError, match="never in staging"):
        service.rollback(
            "staging",
            to="sha256:" + "e" * 64,
            key=pipeline.key("deployer"),
            config_path=pipeline.config,
        )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("promote", "REF", "--to", "qa"), 2),
        (("promote", "Bad:Ref:x", "--to", "staging"), 2),
        (("check", "REF", "--to", "production"), 1),
        (("promote", "127.0.0.1:1/app:v1", "--to", "staging"), 3),
    ],
)
def test_cli_refusals(pipeline: Pipeline, args: tuple[str, ...], code: int) -> None:
    ref = pipeline.ready_for_staging()
    argv = [ref if a == "REF" else a for a in args]
    result = pipeline.cli(*argv, env={"CONVEYOR_SIGNING_KEY": pipeline.key("deployer")})
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    if code != 1:
        assert len([x for x in result.stderr.splitlines() if x.startswith("conveyor: error")]) == 1
    assert not (pipeline.root / "staging").exists()
    assert not (pipeline.root / "production").exists()


def test_a_cycle_in_after_is_a_config_error(pipeline: Pipeline) -> None:
    text = pipeline.config.read_text().replace(
        "      provenance: {}", "      after: {environment: production}\n      provenance: {}"
    )
    pipeline.config.write_text(text)
    result = pipeline.cli("status")
    assert result.returncode == 2
    assert "cycle" in result.stderr


def test_github_outputs_and_helm_args(pipeline: Pipeline, tmp_path: Path) -> None:
    ref = pipeline.ready_for_staging()
    outputs, summary = tmp_path / "out", tmp_path / "summary.md"
    env = {
        "CONVEYOR_SIGNING_KEY": pipeline.key("deployer"),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    result = pipeline.cli("promote", ref, "--to", "staging", "--output", "github", env=env)
    assert result.returncode == 0, result.stderr
    digest = ref.split("@")[1]
    lines = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert lines == {
        "digest": digest,
        "image": f"oci:{pipeline.root / 'staging'}@{digest}",
        "repository": f"oci:{pipeline.root / 'staging'}",
    }
    assert "| tests | ✅ |" in summary.read_text()
    helm = pipeline.cli("promote", ref, "--to", "staging", "--helm-args", env=env)
    assert helm.stdout.strip() == (
        f"--set image.repository=oci:{pipeline.root / 'staging'} --set image.digest={digest}"
    )
    check = pipeline.cli("check", ref, "--to", "production", "--json")
    assert check.returncode == 1
    gates = {g["gate"]: g["passed"] for g in json.loads(check.stdout)["gates"]}
    assert gates["tests"] is True
    assert gates["after"] is False


def _parallel_promotions(pipeline: Pipeline, count: int) -> None:
    refs = [pipeline.ready_for_staging(f"p{i}") for i in range(count)]
    env = {"CONVEYOR_SIGNING_KEY": pipeline.key("deployer")}

    def promote_all(jobs: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(
                pool.map(lambda r: pipeline.cli("promote", r, "--to", "staging", env=env), jobs)
            )
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]

    promote_all(refs)
    history = service.history("staging", config_path=pipeline.config)
    assert sorted(h.digest for h in history) == sorted(r.split("@")[1] for r in refs)
    assert sorted(h.index for h in history) == sorted({h.index for h in history})
    # One more digest, promoted by five processes at once: recorded exactly once.
    extra = pipeline.ready_for_staging("extra")
    promote_all([extra] * 5)
    history = service.history("staging", config_path=pipeline.config)
    assert [h.digest for h in history].count(extra.split("@")[1]) == 1
    assert history[0].digest == extra.split("@")[1]
    assert len(history) == count + 1
    report = service.audit_verify(config_path=pipeline.config)
    assert report.ok, report.problems


@pytest.mark.slow
def test_parallel_promotions_on_sqlite(pipeline: Pipeline) -> None:
    _parallel_promotions(pipeline, 20)


@pytest.mark.slow
@pytest.mark.postgres
def test_parallel_promotions_on_postgresql(
    tmp_path: Path, postgres_database: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_database()  # type: ignore[operator]
    pipeline = make_pipeline(tmp_path / "pg")
    text = pipeline.config.read_text().replace("ledger:\n", f"ledger:\n  url: {url}\n")
    pipeline.config.write_text(text)
    _parallel_promotions(pipeline, 20)


@pytest.mark.registry
def test_cross_registry_promotion_keeps_the_digest(
    tmp_path: Path,
    registry: RunningRegistry,
    registry_b: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_INSECURE_REGISTRIES", f"{registry.host},{registry_b.host}")
    pipeline = make_pipeline(
        tmp_path / "r",
        staging=f"{registry.host}/app-staging",
        production=f"{registry_b.host}/app",
    )
    img = build_image(tmp_path / "img", tag="v1", labels={"git.commit": COMMIT, "ci.run": "42"})
    built = f"{registry.host}/app-build:v1"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"oci:{img.layout}:v1",
        f"docker://{built}",
    )
    pipeline.record_build(built)
    pipeline.pass_tests_and_scan(built)
    staged = pipeline.promote(built, "staging")
    assert staged.copy is not None
    assert staged.copy["blobs_mounted"] > 0
    staging_ref = f"{registry.host}/app-staging:staging"
    service.attest_smoke(
        staging_ref,
        environment="staging",
        passed=True,
        key=pipeline.key("ci"),
        config_path=pipeline.config,
    )
    for who in ("alice", "bob"):
        service.approve(
            staging_ref,
            environment="production",
            key=pipeline.key(who),
            config_path=pipeline.config,
        )
    prod = pipeline.promote(staging_ref, "production")
    assert prod.copy is not None
    assert prod.copy["blobs_copied"] > 0
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry_b.host}/app:production").stdout
    )
    assert info["Digest"] == img.digest
    listed = service.list_attestations(
        f"{registry_b.host}/app:production", config_path=pipeline.config
    )
    assert all(a.verified for a in listed[2])
    assert len(listed[2]) >= 6


def test_forged_approvals_in_the_ledger_are_ignored(pipeline: Pipeline) -> None:
    """An approval that reached the database without a trusted signature is not believed."""
    from conveyor.attest import (
        APPROVAL_V1,
        IN_TOTO_PAYLOAD_TYPE,
        approval,
        generate_key,
        make_statement,
        sign_envelope,
    )
    from conveyor.attest.keys import Signer
    from conveyor.ledger import open_ledger
    from conveyor.oci.digest import Digest

    ref = pipeline.ready_for_staging()
    pipeline.promote(ref, "staging")
    service.attest_smoke(
        ref, environment="staging", passed=True, key=pipeline.key("ci"), config_path=pipeline.config
    )
    digest = Digest.parse(ref.split("@")[1])
    ledger = open_ledger(f"sqlite:///{pipeline.root / '.conveyor' / 'conveyor.db'}")
    try:
        for signer_name in ("mallory", "eve"):
            forger = Signer(generate_key())
            # Two forgers, two statements (one statement is one ledger entry).
            statement = make_statement(
                "app", digest, APPROVAL_V1, approval(environment="production", approver=signer_name)
            )
            ledger.append(
                sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [forger]),
                subject_digest=str(digest),
                subject_name="app",
                predicate_type=APPROVAL_V1,
                kind="approval",
                signer=signer_name,
                keyid=forger.keyid,
                environment="production",
            )
    finally:
        ledger.close()
    checked = service.check(ref, environment="production", config_path=pipeline.config)
    assert not checked.decision.allowed
    approvals = next(g for g in checked.decision.gates if g.gate == "approvals")
    assert not approvals.passed
    assert len([n for n in checked.ignored if "ignored" in n]) == 2


def _forge_tests_entry(
    pipeline: Pipeline, digest: str, *, passed: bool, claimed_keyid: str
) -> None:
    """A test result signed by an outsider but naming ci's key id, written straight into the
    database, newer than every genuine result."""
    from conveyor.attest import (
        IN_TOTO_PAYLOAD_TYPE,
        TEST_RESULT_V01,
        generate_key,
        make_statement,
        make_test_result,
        sign_envelope,
    )
    from conveyor.attest.keys import Signer
    from conveyor.ledger import open_ledger
    from conveyor.oci.digest import Digest

    predicate = make_test_result(
        passed=["a", "b"] if passed else [],
        failed=[] if passed else ["a"],
        reports=[("junit.xml", Digest.of(b"x"))],
    )
    statement = make_statement("app", Digest.parse(digest), TEST_RESULT_V01, predicate)
    envelope = json.loads(sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [Signer(generate_key())]))
    envelope["signatures"][0]["keyid"] = claimed_keyid
    ledger = open_ledger(f"sqlite:///{pipeline.root / '.conveyor' / 'conveyor.db'}")
    try:
        ledger.append(
            json.dumps(envelope).encode(),
            subject_digest=digest,
            subject_name="app",
            predicate_type=TEST_RESULT_V01,
            kind="tests",
            signer="ci",
            keyid=claimed_keyid,
        )
    finally:
        ledger.close()


@pytest.mark.parametrize("forged_passes", [True, False])
def test_a_forged_newest_test_result_never_decides(pipeline: Pipeline, forged_passes: bool) -> None:
    from conveyor.attest import load_signing_key

    ref = pipeline.image()
    pipeline.record_build(ref)
    pipeline.pass_tests_and_scan(ref)  # genuine: passed
    if forged_passes:  # genuine newest result fails; a forged pass comes after it
        bad = pipeline.root / "bad.xml"
        bad.write_text('<testsuite name="u"><testcase name="a"><failure/></testcase></testsuite>')
        service.attest_tests(ref, [bad], key=pipeline.key("ci"), config_path=pipeline.config)
    digest = ref.split("@")[1]
    ci_keyid = load_signing_key(pipeline.key("ci")).keyid
    _forge_tests_entry(pipeline, digest, passed=forged_passes, claimed_keyid=ci_keyid)
    checked = service.check(ref, environment="staging", config_path=pipeline.config)
    tests_gate = next(g for g in checked.decision.gates if g.gate == "tests")
    assert tests_gate.passed is (not forged_passes)  # the genuine newest result decides
    assert any("ignored" in note for note in checked.ignored)


def test_lint_env_flags_digests_never_promoted_there(pipeline: Pipeline, tmp_path: Path) -> None:
    ref = pipeline.ready_for_staging()
    pipeline.promote(ref, "staging")
    promoted = ref.split("@")[1]
    never = "sha256:" + "ab" * 32
    manifests = tmp_path / "deploy"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n"
        f"    - name: app\n      image: registry.example.com/app:1.0@{promoted}\n"
        f"    - name: sidecar\n      image: registry.example.com/side:2.0@{never}\n"
    )
    report = service.lint([manifests], environment="staging", config_path=pipeline.config)
    cv008 = [f for f in report.findings if f.rule == "CV008"]
    assert [f.reference for f in cv008] == [f"registry.example.com/side:2.0@{never}"]
    assert report.exit_code == 1
    production = service.lint([manifests], environment="production", config_path=pipeline.config)
    assert len([f for f in production.findings if f.rule == "CV008"]) == 2
