"""Chain of custody: record signed evidence about one digest, keep it in the ledger, attach it
to the artifact, and audit the ledger.

Every recording follows one path (``_record``): resolve the reference to a digest exactly
once, check the signer is an identity of ``conveyor.yaml`` holding the role the evidence
needs, sign an in-toto Statement in a DSSE envelope, verify that envelope against the
configured keys (nothing unverified is ever stored), attach it to the artifact as an OCI
referrer, then append it to the ledger. A failure before the append records nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, ConveyorError, InputError, VerificationError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.name import LayoutReference, Reference, parse_target
from conveyor.oci.store import RawManifest, Repository
from conveyor.policy.config import Config, Identity, Role, find_config, load_config

if TYPE_CHECKING:
    from conveyor.attest import Signer, Verifier
    from conveyor.ledger import AuditReport, Checkpoint, Ledger
    from conveyor.service import ImageInspection, RegistryOptions

SIGNING_KEY_ENV = "CONVEYOR_SIGNING_KEY"
KEY_PASSWORD_ENV = "CONVEYOR_KEY_PASSWORD"  # noqa: S105 - a variable name, not a secret
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
ATTESTATION_ARTIFACT_TYPE = "application/vnd.dev.conveyor.attestation.v1+json"
PREDICATE_TYPE_ANNOTATION = "in-toto.io/predicate-type"
EMPTY_JSON = b"{}"

# What each kind of evidence is, and which role may sign it.
KIND_ROLES: Mapping[str, Role] = {
    "build": Role.BUILDER,
    "tests": Role.TESTER,
    "scan": Role.SCANNER,
    "smoke": Role.TESTER,
    "approval": Role.APPROVER,
    "promotion": Role.DEPLOYER,
    "rollback": Role.DEPLOYER,
}


class UnknownSignerError(VerificationError):
    """A key that is not an identity of conveyor.yaml, or lacks the role it needs."""


# --- workspace: config + ledger + trusted keys ------------------------------------------------


@dataclass
class Workspace:
    config: Config
    ledger: Ledger
    trusted: dict[str, tuple[Identity, Verifier]]  # keyid -> identity and its public key

    def identity_of(self, keyid: str) -> Identity:
        found = self.trusted.get(keyid)
        if found is None:
            raise UnknownSignerError(
                f"the signing key {keyid[:19]}… is not an identity in {self.config.path}; "
                "add its public key under 'identities:' before it can record anything"
            )
        return found[0]

    def require_role(self, keyid: str, role: Role, what: str) -> Identity:
        identity = self.identity_of(keyid)
        if role not in identity.roles:
            held = ", ".join(sorted(identity.roles)) or "none"
            raise UnknownSignerError(
                f"identity {identity.name!r} may not record {what}: it needs the role "
                f"{role.value!r} (it has: {held})"
            )
        return identity

    def verifiers(self) -> list[Verifier]:
        return [verifier for _, verifier in self.trusted.values()]

    def verify_envelope(self, envelope: bytes) -> None:
        from conveyor.attest import verify_envelope

        verify_envelope(envelope, self.verifiers())


def load_workspace_config(config_path: str | Path | None = None) -> Config:
    return load_config(find_config(config_path))


@contextmanager
def open_workspace(config_path: str | Path | None = None) -> Iterator[Workspace]:
    from conveyor.attest import Verifier
    from conveyor.ledger import open_ledger

    config = load_workspace_config(config_path)
    trusted: dict[str, tuple[Identity, Verifier]] = {}
    problems: list[str] = []
    for identity in config.identities.values():
        try:
            verifier = Verifier.from_pem(identity.key_path)
        except ConveyorError as exc:
            problems.append(f"identities.{identity.name}.key: {exc}")
            continue
        other = trusted.get(verifier.keyid)
        if other is not None:
            problems.append(
                f"identities.{identity.name}.key: the same key as identity {other[0].name!r}; "
                "one key, one identity"
            )
            continue
        trusted[verifier.keyid] = (identity, verifier)
    if problems:
        raise ConfigError(f"{config.path}: {problems[0]}", problems)
    ledger = open_ledger(config.ledger_url)
    try:
        yield Workspace(config=config, ledger=ledger, trusted=trusted)
    finally:
        ledger.close()


def load_signer(key: str | None) -> Signer:
    """The signing key from ``--key`` or ``CONVEYOR_SIGNING_KEY`` (a path or the PEM itself)."""
    from conveyor.attest import load_signing_key

    source = key or os.environ.get(SIGNING_KEY_ENV)
    if not source:
        raise InputError(f"no signing key: pass --key PATH or set {SIGNING_KEY_ENV}")
    password = os.environ.get(KEY_PASSWORD_ENV)
    return load_signing_key(source, password=password.encode() if password else None)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One piece of evidence, signed, attached and in the ledger."""

    kind: str
    name: str
    digest: Digest
    signer: str
    predicate_type: str
    ledger_index: int
    envelope_digest: Digest
    attached: str | None
    environment: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reference": self.reference,
            "digest": str(self.digest),
            "signer": self.signer,
            "predicate_type": self.predicate_type,
            "ledger_index": self.ledger_index,
            "envelope_digest": str(self.envelope_digest),
            "attached": self.attached,
            "environment": self.environment,
            "summary": self.summary,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Subject:
    """What a reference resolved to, once: the repository it lives in and its digest."""

    name: str
    repository: Repository
    top: RawManifest
    inspection: ImageInspection | None = None
    tag: str | None = None  # the tag the user named, if any (resolved once to ``top``)


# --- recording commands -----------------------------------------------------------------------


def record_build(
    reference: str,
    *,
    commit: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
    builder_id: str | None = None,
    key: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Recorded:
    """SLSA provenance for the digest REF names; labels and flags must tell one story."""
    from conveyor.attest import SLSA_PROVENANCE_V1, slsa_provenance

    ci = ci_context()
    commit = commit or ci.commit
    run_id = run_id or ci.run_id
    run_url = run_url or ci.run_url
    builder_id = builder_id or ci.builder_id
    if not commit:
        raise InputError("no commit: pass --commit SHA (or run in GitHub Actions / GitLab CI)")

    def predicate(subject: _Subject) -> tuple[dict[str, Any], dict[str, Any]]:
        body = slsa_provenance(
            commit=commit,
            repository_url=ci.repository_url,
            run_id=run_id,
            run_url=run_url,
            builder_id=builder_id or "https://conveyor.dev/builder/local",
            ref=ci.ref,
        )  # validates the commit first: a branch name is bad input, not a disagreement
        if subject.tag is not None:
            # Where the tag pointed when this was built: lets a later promotion of a moved
            # tag say what it named before.
            body["buildDefinition"]["externalParameters"]["image"] = f"{subject.name}:{subject.tag}"
        labels = subject.inspection.labels if subject.inspection else {}
        check_labels_agree(labels, commit=commit, run_id=run_id)
        return body, {"commit": commit.lower(), "run_id": run_id, "run_url": run_url}

    return _record(
        reference,
        kind="build",
        predicate_type=SLSA_PROVENANCE_V1,
        build_predicate=predicate,
        key=key,
        config_path=config_path,
        options=options,
        inspect=True,
        commit=commit.lower(),
    )


def attest_tests(
    reference: str,
    files: Sequence[str | Path],
    *,
    url: str | None = None,
    key: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Recorded:
    """in-toto test-result from one or more JUnit XML files."""
    from conveyor.attest import TEST_RESULT_V01, make_test_result
    from conveyor.evidence import merge_reports, parse_junit_file

    if not files:
        raise InputError("name at least one JUnit XML file")
    reports = [parse_junit_file(path) for path in files]  # parse before anything is signed
    summary = merge_reports(reports)
    cases = [case for report in reports for case in report.cases]

    def label(case: Any) -> str:
        return f"{case.suite}::{case.name}" if case.suite else str(case.name)

    def predicate(_subject: _Subject) -> tuple[dict[str, Any], dict[str, Any]]:
        body = make_test_result(
            passed=[label(c) for c in cases if c.outcome == "passed"],
            failed=[label(c) for c in cases if c.outcome in ("failed", "errored")],
            skipped=[label(c) for c in cases if c.outcome == "skipped"],
            reports=[(report.path, report.sha256) for report in reports],
            url=url,
        )
        return body, {
            "passed": summary.passed,
            "failed": summary.failed,
            "errored": summary.errored,
            "skipped": summary.skipped,
            "files": [str(path) for path in files],
        }

    return _record(
        reference,
        kind="tests",
        predicate_type=TEST_RESULT_V01,
        build_predicate=predicate,
        key=key,
        config_path=config_path,
        options=options,
    )


def attest_scan(
    reference: str,
    file: str | Path,
    *,
    key: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Recorded:
    """in-toto vulns from a Trivy, Grype, SARIF or Snyk report of this very image."""
    from conveyor.attest import VULNS_V02, FindingInput, ScanInput, vulnerability_scan
    from conveyor.evidence import parse_scan_file, require_scanned

    report = parse_scan_file(file)

    def predicate(subject: _Subject) -> tuple[dict[str, Any], dict[str, Any]]:
        inspection = subject.inspection
        config_digest = inspection.config_digest if inspection else None
        related = (
            [Digest.parse(child["digest"]) for child in inspection.children] if inspection else []
        )
        require_scanned(report, subject.top.digest, config_digest=config_digest, related=related)
        scanned = report.scanned_at or datetime.now(UTC)
        body = vulnerability_scan(
            ScanInput(
                scanner_name=report.scanner_name,
                scanner_version=report.scanner_version,
                db_version=report.db_version,
                started=scanned,
                finished=scanned,
                findings=[
                    FindingInput(
                        id=f.id,
                        severity=f.severity,
                        package=f.package,
                        version=f.version,
                        fixed_version=f.fixed_version,
                    )
                    for f in report.findings
                ],
            )
        )
        notes = []
        if not report.names_digest:
            notes.append(
                f"{file}: the report names no image digest; conveyor could not check that it "
                "scanned this image"
            )
        if report.scanned_at is None:
            notes.append(f"{file}: the report carries no scan time; the time of recording is used")
        return body, {
            "format": report.format,
            "scanner": report.scanner_name,
            "scanner_version": report.scanner_version,
            "db_version": report.db_version,
            "scanned_at": scanned.isoformat(),
            "counts": dict(report.counts),
            "notes": notes,
        }

    return _record(
        reference,
        kind="scan",
        predicate_type=VULNS_V02,
        build_predicate=predicate,
        key=key,
        config_path=config_path,
        options=options,
        inspect=True,
    )


def attest_smoke(
    reference: str,
    *,
    environment: str,
    passed: bool,
    url: str | None = None,
    key: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Recorded:
    from conveyor.attest import SMOKE_V1, smoke

    now = datetime.now(UTC)

    def predicate(_subject: _Subject) -> tuple[dict[str, Any], dict[str, Any]]:
        body = smoke(environment=environment, passed=passed, url=url, at=now)
        return body, {"passed": passed, "url": url}

    return _record(
        reference,
        kind="smoke",
        predicate_type=SMOKE_V1,
        build_predicate=predicate,
        key=key,
        config_path=config_path,
        options=options,
        environment=environment,
    )


def approve(
    reference: str,
    *,
    environment: str,
    comment: str | None = None,
    key: str | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Recorded:
    from conveyor.attest import APPROVAL_V1, approval

    now = datetime.now(UTC)

    def predicate(subject: _Subject) -> tuple[dict[str, Any], dict[str, Any]]:
        body = approval(environment=environment, comment=comment, at=now)
        return body, {"comment": comment}

    return _record(
        reference,
        kind="approval",
        predicate_type=APPROVAL_V1,
        build_predicate=predicate,
        key=key,
        config_path=config_path,
        options=options,
        environment=environment,
    )


# (predicate, summary) for the resolved subject; runs after the digest is known, before signing.
PredicateBuilder = Callable[["_Subject"], tuple[dict[str, Any], dict[str, Any]]]


# --- the one recording path -------------------------------------------------------------------


def _record(
    reference: str,
    *,
    kind: str,
    predicate_type: str,
    build_predicate: PredicateBuilder,
    key: str | None,
    config_path: str | Path | None,
    options: RegistryOptions | None,
    inspect: bool = False,
    environment: str | None = None,
    commit: str | None = None,
) -> Recorded:
    from conveyor.attest import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope

    signer = load_signer(key)
    with open_workspace(config_path) as workspace:
        identity = workspace.require_role(signer.keyid, KIND_ROLES[kind], f"{kind} evidence")
        _check_environment(workspace.config, environment)
        with _resolved(reference, options=options, inspect=inspect) as subject:
            predicate, summary = build_predicate(subject)
            statement = make_statement(subject.name, subject.top.digest, predicate_type, predicate)
            envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
            workspace.verify_envelope(envelope)  # nothing unverified is ever stored
            attached = attach_attestation(subject.repository, subject.top, envelope, predicate_type)
        entry = workspace.ledger.append(
            envelope,
            subject_digest=str(subject.top.digest),
            subject_name=subject.name,
            predicate_type=predicate_type,
            kind=kind,
            signer=identity.name,
            keyid=signer.keyid,
            environment=environment,
            commit=commit,
        )
    notes = tuple(summary.pop("notes", ()))
    return Recorded(
        kind=kind,
        name=subject.name,
        digest=subject.top.digest,
        signer=identity.name,
        predicate_type=predicate_type,
        ledger_index=entry.index,
        envelope_digest=Digest.of(envelope),
        attached=attached,
        environment=environment,
        summary=summary,
        notes=notes,
    )


def _check_environment(config: Config, environment: str | None) -> None:
    if environment is None:
        return
    known = getattr(config.model, "environments", None)
    if known and environment not in known:
        raise InputError(
            f"unknown environment {environment!r}; {config.path} defines: {', '.join(known)}"
        )
    if not environment or not environment.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"invalid environment name {environment!r}")


@contextmanager
def _resolved(
    reference: str, *, options: RegistryOptions | None, inspect: bool
) -> Iterator[_Subject]:
    from conveyor.service import _inspect, _name, _session, _wanted

    target = parse_target(reference, strict=True)
    with _session(options) as open_repository:
        repository = open_repository(target, create=False)
        top = repository.get_manifest(_wanted(target))
        inspection = _inspect(repository, _name(target), top) if inspect else None
        yield _Subject(_subject_name(target), repository, top, inspection, target.tag)


def _subject_name(target: Reference | LayoutReference) -> str:
    if isinstance(target, LayoutReference):
        return f"oci:{target.path}"
    return target.name


def attach_attestation(
    repository: Repository, subject: RawManifest, envelope: bytes, predicate_type: str
) -> str:
    """Store the envelope as an OCI 1.1 artifact whose ``subject`` is the image.

    Returns ``repository@digest`` of the referrer manifest.
    """
    from conveyor.oci.referrers import attach_referrer

    envelope_digest = Digest.of(envelope)
    repository.write_blob(envelope_digest, len(envelope), [envelope])
    empty = Digest.of(EMPTY_JSON)
    if repository.blob_size(empty) is None:
        repository.write_blob(empty, len(EMPTY_JSON), [EMPTY_JSON])
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": ATTESTATION_ARTIFACT_TYPE,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": str(empty), "size": len(EMPTY_JSON)},
        "layers": [
            {
                "mediaType": DSSE_MEDIA_TYPE,
                "digest": str(envelope_digest),
                "size": len(envelope),
                "annotations": {PREDICATE_TYPE_ANNOTATION: predicate_type},
            }
        ],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": len(subject.data),
        },
        "annotations": {
            "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            PREDICATE_TYPE_ANNOTATION: predicate_type,
        },
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    raw = RawManifest(data, mt.OCI_MANIFEST, Digest.of(data))
    attach_referrer(repository, raw)
    return f"{repository.display_name}@{raw.digest}"


# --- label agreement and CI context -----------------------------------------------------------

COMMIT_LABELS = ("git.commit", "org.opencontainers.image.revision")
RUN_LABEL = "ci.run"
MIN_SHORT_COMMIT = 7


def check_labels_agree(labels: Mapping[str, str], *, commit: str, run_id: str | None) -> None:
    """The image's own labels and the build record must tell the same story."""
    commit = commit.strip().lower()
    for label in COMMIT_LABELS:
        value = labels.get(label, "").strip().lower()
        if not value:
            continue
        agrees = value == commit or (len(value) >= MIN_SHORT_COMMIT and commit.startswith(value))
        if not agrees:
            raise VerificationError(
                f"the image label {label}={value} disagrees with --commit {commit}: "
                "the label and the build record must tell the same story"
            )
    label_run = labels.get(RUN_LABEL, "").strip()
    if label_run and run_id and label_run != run_id.strip():
        raise VerificationError(
            f"the image label {RUN_LABEL}={label_run} disagrees with --run-id {run_id}: "
            "the label and the build record must tell the same story"
        )


@dataclass(frozen=True)
class CiContext:
    commit: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    builder_id: str | None = None
    repository_url: str | None = None
    ref: str | None = None


def ci_context(env: Mapping[str, str] | None = None) -> CiContext:
    """Defaults from GitHub Actions or GitLab CI variables (none outside CI)."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = env.get("GITHUB_REPOSITORY")
        run_id = env.get("GITHUB_RUN_ID")
        attempt = env.get("GITHUB_RUN_ATTEMPT")
        workflow_ref = env.get("GITHUB_WORKFLOW_REF")
        return CiContext(
            commit=env.get("GITHUB_SHA"),
            run_id=f"{run_id}-{attempt}" if run_id and attempt and attempt != "1" else run_id,
            run_url=f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
            builder_id=f"{server}/{workflow_ref}" if workflow_ref else None,
            repository_url=f"{server}/{repo}" if repo else None,
            ref=env.get("GITHUB_REF"),
        )
    if env.get("GITLAB_CI") == "true":
        server = env.get("CI_SERVER_URL", "").rstrip("/")
        project = env.get("CI_PROJECT_PATH")
        return CiContext(
            commit=env.get("CI_COMMIT_SHA"),
            run_id=env.get("CI_PIPELINE_ID"),
            run_url=env.get("CI_PIPELINE_URL") or env.get("CI_JOB_URL"),
            builder_id=(
                f"{server}/{project}/-/runners/{env['CI_RUNNER_ID']}"
                if server and project and env.get("CI_RUNNER_ID")
                else None
            ),
            repository_url=env.get("CI_PROJECT_URL"),
            ref=env.get("CI_COMMIT_REF_NAME"),
        )
    return CiContext()


# --- keys and init ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedKey:
    name: str
    private_key: Path
    public_key: Path
    keyid: str
    encrypted: bool


def generate_keys(
    name: str, *, kind: str = "ed25519", out_dir: str | Path = ".", overwrite: bool = False
) -> GeneratedKey:
    from conveyor.attest import Signer, generate_key, write_keypair

    if kind not in ("ed25519", "ecdsa-p256"):
        raise InputError(f"unknown key type {kind!r}: use ed25519 or ecdsa-p256")
    password = os.environ.get(KEY_PASSWORD_ENV)
    key = generate_key(kind)  # type: ignore[arg-type]
    private, public = write_keypair(
        key,
        Path(out_dir),
        name,
        password=password.encode() if password else None,
        overwrite=overwrite,
    )
    return GeneratedKey(name, private, public, Signer(key).keyid, bool(password))


STARTER_CONFIG = """\
# conveyor.yaml: who may record evidence about an artifact, and (later) where it may go.
version: 1

# Each identity is a public key (relative to this file) and the roles it holds:
#   builder   records builds (SLSA provenance)      tester    records tests and smoke tests
#   scanner   records vulnerability scans           approver  approves a digest for an environment
#   deployer  promotes a digest into an environment
# A key that is not listed here cannot record anything.
identities:
  {name}: {{key: keys/{name}.pub, roles: [builder, tester, scanner]}}
  # deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  # alice:    {{key: keys/alice.pub,    roles: [approver]}}

# The ledger: SQLite beside this file by default; CONVEYOR_DB=postgresql+psycopg://… for a team.
ledger:
  # url: sqlite:///.conveyor/conveyor.db
  key: keys/ledger.key          # signs checkpoints (conveyor audit checkpoint)
  public_key: keys/ledger.pub
"""


@dataclass(frozen=True)
class Initialised:
    config: Path
    keys: tuple[GeneratedKey, ...]


def init_workspace(directory: str | Path = ".", *, name: str = "ci") -> Initialised:
    base = Path(directory)
    config = base / "conveyor.yaml"
    if config.exists():
        raise InputError(f"{config} already exists; conveyor init never overwrites it")
    base.mkdir(parents=True, exist_ok=True)
    keys = (
        generate_keys(name, out_dir=base / "keys"),
        generate_keys("ledger", out_dir=base / "keys"),
    )
    config.write_text(STARTER_CONFIG.format(name=name))
    return Initialised(config, keys)


# --- audit ------------------------------------------------------------------------------------


def _ledger_signer(workspace: Workspace) -> Signer:
    from conveyor.attest import load_signing_key

    spec = workspace.config.model.ledger.key
    if not spec:
        raise ConfigError(
            f"{workspace.config.path}: ledger.key is not set; cannot sign checkpoints"
        )
    password = os.environ.get(KEY_PASSWORD_ENV)
    return load_signing_key(
        str(workspace.config.resolve_path(spec)),
        password=password.encode() if password else None,
    )


def _checkpoint_verifiers(workspace: Workspace) -> dict[str, Verifier]:
    from conveyor.attest import Verifier

    verifiers: dict[str, Verifier] = {}
    ledger = workspace.config.model.ledger
    if ledger.public_key:
        verifier = Verifier.from_pem(workspace.config.resolve_path(ledger.public_key))
        verifiers[verifier.keyid] = verifier
    elif ledger.key:
        verifier = _ledger_signer(workspace).verifier()
        verifiers[verifier.keyid] = verifier
    return verifiers


def audit_checkpoint(
    *, config_path: str | Path | None = None, out: str | Path | None = None
) -> Checkpoint:
    with open_workspace(config_path) as workspace:
        checkpoint = workspace.ledger.checkpoint(_ledger_signer(workspace))
    if out is not None:
        Path(out).write_text(checkpoint.to_text())
    return checkpoint


def audit_verify(
    *,
    config_path: str | Path | None = None,
    checkpoint: str | Path | None = None,
    full: bool = False,
) -> AuditReport:
    """Audit the ledger; with a trusted ``checkpoint`` only the entries after it are verified
    unless ``full`` (every signature on every core; columns compared with the statements)."""
    from conveyor.ledger import parse_checkpoint, verify_ledger
    from conveyor.signed_facts import EnvelopeFacts

    external = None
    if checkpoint is not None:
        try:
            text = Path(checkpoint).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read checkpoint {checkpoint}: {exc.strerror}") from exc
        external = parse_checkpoint(text)
    with open_workspace(config_path) as workspace:
        facts = EnvelopeFacts.from_verifiers(
            {identity.name: verifier for identity, verifier in workspace.trusted.values()}
        )
        return verify_ledger(
            workspace.ledger,
            verify_envelope=facts,
            checkpoint=external,
            checkpoint_verifiers=_checkpoint_verifiers(workspace),
            incremental=external is not None and not full,
        )


# --- reading evidence back --------------------------------------------------------------------


@dataclass(frozen=True)
class AttachedAttestation:
    manifest_digest: Digest
    predicate_type: str | None
    envelope_digest: Digest | None
    verified: bool
    signer: str | None
    in_ledger: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_digest": str(self.manifest_digest),
            "predicate_type": self.predicate_type,
            "envelope_digest": str(self.envelope_digest) if self.envelope_digest else None,
            "verified": self.verified,
            "signer": self.signer,
            "in_ledger": self.in_ledger,
            "problem": self.problem,
        }


def list_attestations(
    reference: str,
    *,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> tuple[str, Digest, list[AttachedAttestation]]:
    """Referrers of the digest REF names, each checked: signature, subject, ledger entry."""
    from conveyor.attest import open_attestation
    from conveyor.oci.manifest import ImageManifest, parse_manifest
    from conveyor.oci.referrers import list_referrers

    found: list[AttachedAttestation] = []
    with (
        open_workspace(config_path) as workspace,
        _resolved(reference, options=options, inspect=False) as subject,
    ):
        digest = subject.top.digest
        in_ledger = {
            entry.envelope_sha256 for entry in workspace.ledger.entries(subject_digest=str(digest))
        }
        for descriptor in list_referrers(subject.repository, digest):
            raw = subject.repository.get_manifest(descriptor.digest)
            parsed = parse_manifest(raw.data, content_type=raw.media_type)
            layers = parsed.layers if isinstance(parsed, ImageManifest) else []
            envelope_layer = next((x for x in layers if x.media_type == DSSE_MEDIA_TYPE), None)
            if envelope_layer is None:
                found.append(
                    AttachedAttestation(
                        raw.digest,
                        descriptor.artifact_type,
                        None,
                        False,
                        None,
                        False,
                        "not a DSSE attestation",
                    )
                )
                continue
            with subject.repository.open_blob(
                envelope_layer.digest, size=envelope_layer.size
            ) as chunks:
                envelope = b"".join(chunks)
            predicate_type = envelope_layer.annotations.get(PREDICATE_TYPE_ANNOTATION)
            try:
                verified = open_attestation(envelope, workspace.verifiers(), digest=digest)
            except VerificationError as exc:
                found.append(
                    AttachedAttestation(
                        raw.digest,
                        predicate_type,
                        envelope_layer.digest,
                        False,
                        None,
                        envelope_layer.digest.encoded in in_ledger,
                        str(exc),
                    )
                )
                continue
            signer = workspace.identity_of(verified.signer_keyids[0]).name
            found.append(
                AttachedAttestation(
                    raw.digest,
                    verified.statement.predicate_type,
                    envelope_layer.digest,
                    True,
                    signer,
                    envelope_layer.digest.encoded in in_ledger,
                )
            )
        return subject.name, digest, found
