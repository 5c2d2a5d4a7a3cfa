"""Recording evidence about one digest: build, tests, scan, smoke, approval.

Each verb parses its input first (nothing is signed for a bad file), resolves the
reference once, builds its predicate (``Built``) from the resolved subject, and hands it to
the one recording path (``_signing.record_statement``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Unpack

from conveyor.errors import ConveyorError, InputError
from conveyor.oci.digest import Digest
from conveyor.oci.inspect import ImageInspection
from conveyor.policy.labels import check_labels_agree
from conveyor.policy.roles import EvidenceKind
from conveyor.service._ci import CiContext
from conveyor.service._signing import acting_identity, record_statement, store_envelope
from conveyor.service._subject import resolve_subject
from conveyor.service._workspace import Settings, Signing, Workspace, signing_workspace

if TYPE_CHECKING:
    from conveyor.evidence import TestCaseResult


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
class Built:
    """A predicate, what the face shows of it, and notes for the user."""

    predicate: dict[str, Any]
    summary: dict[str, Any]
    notes: tuple[str, ...] = ()


class Described(Protocol):
    """What a predicate builder reads of its subject: a resolved ``Subject``, or (signing
    here for a server, ``presign``) what the server's inspection of the reference said."""

    @property
    def name(self) -> str: ...
    @property
    def digest(self) -> Digest: ...
    @property
    def tag(self) -> str | None: ...
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def inspection(self) -> ImageInspection | None: ...


# Runs after the digest is known, before anything is signed.
PredicateBuilder = Callable[[Described, Settings], Built]


@dataclass(frozen=True)
class _Plan:
    """One verb's evidence, before a subject is known: what recording it or signing it for
    a server (``presign``) runs."""

    kind: EvidenceKind
    predicate_type: str
    build: PredicateBuilder
    inspect: bool = False
    environment: str | None = None
    commit: str | Callable[[Settings], str] | None = None
    before: Callable[[Settings], None] | None = None


def _record(reference: str, common: Signing, plan: _Plan) -> Recorded:
    kind, environment = plan.kind, plan.environment
    principal = common.get("principal")
    with signing_workspace(common) as (workspace, signer):
        assert signer is not None
        if environment is not None:
            workspace.config.require_environment(environment, defined=False)
        acting_identity(workspace, signer, principal, kind, environment)  # before any I/O
        if plan.before is not None:
            plan.before(workspace.settings)
        subject = resolve_subject(reference, workspace.opener, inspect=plan.inspect)
        built = plan.build(subject, workspace.settings)
        commit = plan.commit
        signed = record_statement(
            workspace,
            subject,
            kind=kind,
            predicate_type=plan.predicate_type,
            predicate=built.predicate,
            signer=signer,
            principal=principal,
            environment=environment,
            commit=commit(workspace.settings) if callable(commit) else commit,
        )
    return Recorded(
        kind=kind.value,
        name=subject.name,
        digest=subject.digest,
        signer=signed.identity.name,
        predicate_type=plan.predicate_type,
        ledger_index=signed.entry.index,
        envelope_digest=signed.envelope_digest,
        attached=signed.attached,
        environment=environment,
        summary=built.summary,
        notes=built.notes + ((signed.note,) if signed.note else ()),
    )


def record_build(
    reference: str,
    *,
    commit: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
    builder_id: str | None = None,
    ci: CiContext | None = None,
    **common: Unpack[Signing],
) -> Recorded:
    """SLSA provenance for the digest REF names; labels and flags must tell one story.
    Unset values default from ``ci`` (default: the workspace settings' CI context)."""
    plan = _build_plan(commit=commit, run_id=run_id, run_url=run_url, builder_id=builder_id, ci=ci)
    return _record(reference, common, plan)


def _build_plan(
    *,
    commit: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
    builder_id: str | None = None,
    ci: CiContext | None = None,
) -> _Plan:
    from conveyor.attest import SLSA_PROVENANCE_V1, slsa_provenance

    facts: dict[str, str | None] = {}

    def defaults(settings: Settings) -> None:
        context = ci if ci is not None else settings.ci
        facts["commit"] = commit or context.commit
        facts["run_id"] = run_id or context.run_id
        facts["run_url"] = run_url or context.run_url
        facts["builder_id"] = builder_id or context.builder_id
        facts["repository_url"] = context.repository_url
        facts["ref"] = context.ref
        if not facts["commit"]:
            raise InputError("no commit: pass --commit SHA (or run in GitHub Actions / GitLab CI)")

    def predicate(subject: Described, _settings: Settings) -> Built:
        sha = facts["commit"] or ""
        body = slsa_provenance(
            commit=sha,
            repository_url=facts["repository_url"],
            run_id=facts["run_id"],
            run_url=facts["run_url"],
            builder_id=facts["builder_id"] or "https://conveyor.dev/builder/local",
            ref=facts["ref"],
        )  # validates the commit first: a branch name is bad input, not a disagreement
        if subject.tag is not None:
            # Where the tag pointed when this was built: lets a later promotion of a moved
            # tag say what it named before.
            body["buildDefinition"]["externalParameters"]["image"] = f"{subject.name}:{subject.tag}"
        check_labels_agree(subject.labels, commit=sha, run_id=facts["run_id"])
        summary = {"commit": sha.lower(), "run_id": facts["run_id"], "run_url": facts["run_url"]}
        return Built(body, summary)

    return _Plan(
        EvidenceKind.BUILD,
        SLSA_PROVENANCE_V1,
        predicate,
        inspect=True,
        before=defaults,
        commit=lambda _settings: (facts["commit"] or "").lower(),
    )


# A report: a file's path, or (name, contents) as a server receives an upload.
Report = str | Path | tuple[str, bytes]


def _report_name(report: Report) -> str:
    return report[0] if isinstance(report, tuple) else str(report)


def attest_tests(
    reference: str,
    files: Sequence[Report],
    *,
    url: str | None = None,
    **common: Unpack[Signing],
) -> Recorded:
    """in-toto test-result from one or more JUnit XML files."""
    return _record(reference, common, _tests_plan(files, url=url))


def _tests_plan(files: Sequence[Report], *, url: str | None = None) -> _Plan:
    from conveyor.attest import TEST_RESULT_V01, ci_configuration, make_test_result
    from conveyor.evidence import merge_reports, parse_junit, parse_junit_file

    if not files:
        raise InputError("name at least one JUnit XML file")
    reports = [  # parse before anything is signed
        parse_junit(item[1], path=item[0]) if isinstance(item, tuple) else parse_junit_file(item)
        for item in files
    ]
    summary = merge_reports(reports)
    cases = [case for report in reports for case in report.cases]

    def label(case: TestCaseResult) -> str:
        return f"{case.suite}::{case.name}" if case.suite else str(case.name)

    def predicate(_subject: Described, settings: Settings) -> Built:
        body = make_test_result(
            passed=[label(c) for c in cases if c.outcome == "passed"],
            failed=[label(c) for c in cases if c.outcome in ("failed", "errored")],
            skipped=[label(c) for c in cases if c.outcome == "skipped"],
            reports=[(report.path, report.sha256) for report in reports],
            configuration=ci_configuration(settings.ci_variables),
            url=url,
            at=datetime.now(UTC),  # signed: results are ordered by it, not the record time
        )
        notes = [f"{report.path}: {note}" for report in reports for note in report.notes]
        if summary.total == 0:
            notes.append("the reports hold no test cases: recorded as FAILED (no test ran)")
        shown = {
            "passed": summary.passed,
            "failed": summary.failed,
            "errored": summary.errored,
            "skipped": summary.skipped,
            "files": [_report_name(item) for item in files],
        }
        return Built(body, shown, tuple(notes))

    return _Plan(EvidenceKind.TESTS, TEST_RESULT_V01, predicate)


def attest_scan(
    reference: str,
    file: Report,
    **common: Unpack[Signing],
) -> Recorded:
    """in-toto vulns from a Trivy, Grype, SARIF or Snyk report of this very image."""
    return _record(reference, common, _scan_plan(file))


def _scan_plan(file: Report) -> _Plan:
    from conveyor.attest import VULNS_V02, FindingInput, ScanInput, vulnerability_scan
    from conveyor.evidence import parse_scan, parse_scan_file, require_scanned

    report = parse_scan(file[1], path=file[0]) if isinstance(file, tuple) else parse_scan_file(file)
    file = _report_name(file)

    def predicate(subject: Described, _settings: Settings) -> Built:
        inspection = subject.inspection
        config_digest = inspection.config_digest if inspection else None
        related = [child.digest for child in inspection.children] if inspection else []
        require_scanned(report, subject.digest, config_digest=config_digest, related=related)
        scanned = report.scanned_at or datetime.now(UTC)
        body = vulnerability_scan(
            ScanInput(
                scanner_name=report.scanner_name,
                scanner_version=report.scanner_version,
                db_version=report.db_version,
                db_updated=report.db_updated,
                db_uri=report.db_uri,
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
        if report.db_updated is None:
            notes.append(
                f"{file}: the report carries no vulnerability database time; "
                "db.lastUpdate is the scan time (an upper bound)"
            )
        shown = {
            "format": report.format,
            "scanner": report.scanner_name,
            "scanner_version": report.scanner_version,
            "db_version": report.db_version,
            "scanned_at": scanned.isoformat(),
            "counts": dict(report.counts),
        }
        return Built(body, shown, tuple(notes))

    return _Plan(EvidenceKind.SCAN, VULNS_V02, predicate, inspect=True)


def attest_smoke(
    reference: str,
    *,
    environment: str,
    passed: bool,
    url: str | None = None,
    **common: Unpack[Signing],
) -> Recorded:
    """A smoke test of the digest in ``environment``, passed or not."""
    return _record(reference, common, _smoke_plan(environment=environment, passed=passed, url=url))


def _smoke_plan(*, environment: str, passed: bool, url: str | None = None) -> _Plan:
    from conveyor.attest import SMOKE_V1, smoke

    now = datetime.now(UTC)

    def predicate(_subject: Described, _settings: Settings) -> Built:
        body = smoke(environment=environment, passed=passed, url=url, at=now)
        return Built(body, {"passed": passed, "url": url})

    return _Plan(EvidenceKind.SMOKE, SMOKE_V1, predicate, environment=environment)


def approve(
    reference: str,
    *,
    environment: str,
    comment: str | None = None,
    **common: Unpack[Signing],
) -> Recorded:
    """An approval of this digest for ``environment``, by a role the environment's approvals
    gate (or break-glass) names (``approver`` when none names one)."""
    return _record(reference, common, _approval_plan(environment=environment, comment=comment))


def _approval_plan(*, environment: str, comment: str | None = None) -> _Plan:
    from conveyor.attest import APPROVAL_V1, approval

    now = datetime.now(UTC)

    def predicate(_subject: Described, _settings: Settings) -> Built:
        body = approval(environment=environment, comment=comment, at=now)
        return Built(body, {"comment": comment})

    return _Plan(EvidenceKind.APPROVAL, APPROVAL_V1, predicate, environment=environment)


# --- pre-signed envelopes (an identity's own key, submitted through a server) ---------------


@dataclass(frozen=True)
class Presigned:
    """Evidence signed on this machine for a server to record: the envelope, and what the
    face shows of it (as ``Recorded.summary`` and ``notes`` would)."""

    envelope: bytes
    kind: str
    summary: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Inspected:
    """A subject as a server's ``inspect`` answer describes it (``Described``)."""

    name: str
    digest: Digest
    tag: str | None
    inspection: ImageInspection

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.inspection.labels)


def _described(reference: str, answer: Mapping[str, Any]) -> _Inspected:
    """The server's inspection of ``reference``, checked: a digest the reference names must
    be the one the server answered (a tag is the server's to resolve)."""
    from conveyor.errors import ExternalError
    from conveyor.oci.inspect import ChildManifest, ImageInspection
    from conveyor.oci.name import parse_target

    target = parse_target(reference, strict=True)
    try:
        digest = Digest.parse(str(answer["digest"]))
        config = answer.get("config_digest")
        inspection = ImageInspection(
            name=str(answer["name"]),
            digest=digest,
            media_type=str(answer["media_type"]),
            platforms=[str(p) for p in answer["platforms"]],
            labels={str(k): str(v) for k, v in dict(answer["labels"]).items()},
            annotations={str(k): str(v) for k, v in dict(answer["annotations"]).items()},
            created=answer.get("created"),
            total_size=int(answer["total_size"]),
            config_digest=Digest.parse(str(config)) if config else None,
            labels_from=answer.get("labels_from"),
            children=[
                ChildManifest(Digest.parse(str(c["digest"])), str(c["platform"]), int(c["size"]))
                for c in answer["manifests"]
            ],
        )
    except (KeyError, TypeError, ValueError, ConveyorError) as exc:
        raise ExternalError(f"the server's inspection of {reference} is malformed") from exc
    if target.digest is not None and target.digest != digest:
        raise ExternalError(
            f"the server resolved {reference} to {digest}, not the digest it names; "
            "nothing was signed"
        )
    return _Inspected(inspection.name, digest, target.tag, inspection)


def presign(
    kind: str,
    reference: str,
    inspect: Callable[[str], Mapping[str, Any]],
    *,
    key: str | None = None,
    settings: Settings | None = None,
    **inputs: Any,
) -> Presigned:
    """Sign, on this machine and with ``key``, the statement ``record_build`` /
    ``attest_tests`` / ``attest_scan`` / ``attest_smoke`` / ``approve`` (``kind``: build,
    tests, scan, smoke, approval; ``inputs``: that verb's keywords) would record about the
    image ``inspect(reference)`` describes (a server's inspection of it), for the
    server to verify and record (``record_envelope``). Nothing is recorded here; who may sign
    what is the server's to check, against its conveyor.yaml."""
    from conveyor.attest import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope

    plans: dict[str, Callable[..., _Plan]] = {
        EvidenceKind.BUILD.value: _build_plan,
        EvidenceKind.TESTS.value: _tests_plan,
        EvidenceKind.SCAN.value: _scan_plan,
        EvidenceKind.SMOKE.value: _smoke_plan,
        EvidenceKind.APPROVAL.value: _approval_plan,
    }
    if kind not in plans:
        raise InputError(f"cannot sign {kind!r} evidence for a server")
    plan = plans[kind](**inputs)  # parses reports first: nothing is signed for a bad file
    settings = settings or Settings.from_environment()
    signer = settings.signer(key)
    if plan.before is not None:
        plan.before(settings)
    subject = _described(reference, inspect(reference))
    built = plan.build(subject, settings)
    statement = make_statement(subject.name, subject.digest, plan.predicate_type, built.predicate)
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
    return Presigned(envelope, plan.kind.value, built.summary, built.notes)


@dataclass(frozen=True)
class OpenedEnvelope:
    """A client-signed DSSE envelope, verified against conveyor.yaml's keys, and what the
    ledger row needs from its statement."""

    envelope: bytes
    kind: EvidenceKind
    predicate_type: str
    signer: str  # the identity whose key signed it
    keyid: str
    environment: str | None
    commit: str | None
    run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "predicate_type": self.predicate_type,
            "signer": self.signer,
            "environment": self.environment,
            "commit": self.commit,
        }


def _envelope_kinds() -> dict[str, EvidenceKind]:
    from conveyor.attest import (
        APPROVAL_V1,
        SLSA_PROVENANCE_V1,
        SMOKE_V1,
        TEST_RESULT_V01,
        VULNS_V02,
    )

    return {
        SLSA_PROVENANCE_V1: EvidenceKind.BUILD,
        TEST_RESULT_V01: EvidenceKind.TESTS,
        VULNS_V02: EvidenceKind.SCAN,
        SMOKE_V1: EvidenceKind.SMOKE,
        APPROVAL_V1: EvidenceKind.APPROVAL,
    }


def _open_envelope(workspace: Workspace, envelope: bytes) -> tuple[OpenedEnvelope, Any]:
    from conveyor.attest import (
        read_approval,
        read_provenance,
        read_smoke,
        verify_envelope,
    )
    from conveyor.attest.statement import parse_statement
    from conveyor.service._principal import PRINCIPAL_V1

    verified = verify_envelope(envelope, workspace.verifiers())
    statement = parse_statement(verified.payload)
    kinds = _envelope_kinds()
    kind = kinds.get(statement.predicate_type)
    if kind is None:
        names = ", ".join(k.value for k in kinds.values())
        raise InputError(
            f"pre-signed envelopes record {names}; not {statement.predicate_type[:200]!r} "
            "(a promotion is recorded by conveyor promote, which places the image)"
        )
    if PRINCIPAL_V1 in statement.predicate:
        raise InputError("a pre-signed statement cannot name a principal; sign your own")
    keyid = verified.signer_keyids[0]
    identity = workspace.identity_of(keyid)
    environment = commit = run_id = None
    if kind is EvidenceKind.APPROVAL:
        environment = read_approval(statement.predicate).environment
    elif kind is EvidenceKind.SMOKE:
        environment = read_smoke(statement.predicate).environment
    elif kind is EvidenceKind.BUILD:
        facts = read_provenance(statement.predicate)
        commit, run_id = (facts.commit or "").lower() or None, facts.run_id
        if commit is None:
            raise InputError("the build statement names no commit")
    if kind in (EvidenceKind.APPROVAL, EvidenceKind.SMOKE):
        if environment is None:
            raise InputError(f"the {kind.value} statement names no environment")
        workspace.config.require_environment(environment, defined=False)
    workspace.require_role_of(identity, kind, environment)
    opened = OpenedEnvelope(
        envelope, kind, statement.predicate_type, identity.name, keyid, environment, commit,
        run_id,
    )  # fmt: skip
    return opened, statement


def open_envelope(envelope: bytes, *, workspace: Workspace) -> OpenedEnvelope:
    """Verify a pre-signed envelope exactly as recorded evidence is verified (signature by a
    key of conveyor.yaml, a kind conveyor records, the signer's role for it); change nothing."""
    return _open_envelope(workspace, envelope)[0]


def record_envelope(
    reference: str,
    envelope: bytes,
    *,
    workspace: Workspace,
) -> Recorded:
    """Record a pre-signed envelope about the digest REF names: verified as ``open_envelope``
    does, its subject checked against REF, a build's labels against its commit, then attached
    and appended through the one recording path (``store_envelope``)."""
    from conveyor.attest import require_subject

    opened, statement = _open_envelope(workspace, envelope)
    inspect = opened.kind in (EvidenceKind.BUILD, EvidenceKind.SCAN)
    subject = resolve_subject(reference, workspace.opener, inspect=inspect)
    require_subject(statement, subject.digest)
    if opened.kind is EvidenceKind.BUILD and opened.commit:
        check_labels_agree(subject.labels, commit=opened.commit, run_id=opened.run_id)
    signed = store_envelope(
        workspace,
        subject,
        envelope,
        kind=opened.kind,
        predicate_type=opened.predicate_type,
        identity=workspace.require_role_of(
            workspace.identity_of(opened.keyid), opened.kind, opened.environment
        ),
        keyid=opened.keyid,
        name=subject.name,
        environment=opened.environment,
        commit=opened.commit,
    )
    return Recorded(
        kind=opened.kind.value,
        name=subject.name,
        digest=subject.digest,
        signer=signed.identity.name,
        predicate_type=opened.predicate_type,
        ledger_index=signed.entry.index,
        envelope_digest=signed.envelope_digest,
        attached=signed.attached,
        environment=opened.environment,
        summary={"pre_signed": True},
    )
