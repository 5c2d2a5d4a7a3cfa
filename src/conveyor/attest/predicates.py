"""Predicate builders (plain dicts) and tolerant readers, one type URI constant each.

Standard types where they exist: SLSA provenance v1, in-toto test-result v0.1, in-toto vulns
v0.2. Conveyor's own (approval, smoke, promotion) live under ``CONVEYOR_PREDICATE_PREFIX``;
every field is documented in docs/predicates.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conveyor.errors import InputError
from conveyor.oci.digest import Digest
from conveyor.severity import SEVERITIES, Severity, normalise_severity

SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
TEST_RESULT_V01 = "https://in-toto.io/attestation/test-result/v0.1"
VULNS_V02 = "https://in-toto.io/attestation/vulns/v0.2"
CONVEYOR_PREDICATE_PREFIX = "https://conveyor.dev/attestation/"
APPROVAL_V1 = CONVEYOR_PREDICATE_PREFIX + "approval/v1"
SMOKE_V1 = CONVEYOR_PREDICATE_PREFIX + "smoke/v1"
PROMOTION_V1 = CONVEYOR_PREDICATE_PREFIX + "promotion/v1"
# Extension field (a URI, as in-toto allows) of a predicate ``conveyor serve`` signs on behalf
# of a principal: {"identity": NAME, "authenticated": {...}} (docs/server.md).
PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"

# The default buildType of provenance conveyor records (documented in docs/predicates.md).
CONVEYOR_BUILD_TYPE = CONVEYOR_PREDICATE_PREFIX + "build/v1"
# Extension object in test-result predicates for what the spec has no field for.
TEST_RESULT_EXTENSION = "conveyor"
# Extension object in vulns predicates (says which field stood in for db.lastUpdate).
SCAN_EXTENSION = "conveyor"

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SCANNER_URIS = {
    "trivy": "pkg:github/aquasecurity/trivy",
    "grype": "pkg:github/anchore/grype",
}


def _timestamp(moment: datetime, what: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(f"{what} must be a timezone-aware time")
    moment = moment.astimezone(UTC)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- SLSA provenance v1 ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvenanceFacts:
    commit: str | None
    run_id: str | None
    run_url: str | None
    builder_id: str | None
    build_type: str | None = None
    repository: str | None = None


def slsa_provenance(
    *,
    commit: str,
    repository_url: str | None,
    run_id: str | None,
    run_url: str | None,
    builder_id: str,
    build_type: str = CONVEYOR_BUILD_TYPE,
    ref: str | None = None,
    started: datetime | None = None,
    finished: datetime | None = None,
) -> dict[str, Any]:
    """SLSA provenance v1 for a build of ``commit`` (full 40 or 64 hex; lowercased here).

    The commit is the resolvedDependency ``{"uri": "git+<repo>@<ref or commit>",
    "digest": {"gitCommit": commit}}``; the run id is ``runDetails.metadata.invocationId``
    and, with the run URL, also an external parameter.
    """
    commit = commit.strip().lower()
    if not _COMMIT.fullmatch(commit):
        raise InputError(
            "the commit must be a full git commit id (40 or 64 hex characters), "
            "not a branch, tag or short id"
        )
    if not builder_id:
        raise InputError("provenance needs a builder id")
    source: dict[str, Any] = {"digest": {"gitCommit": commit}}
    if repository_url:
        source["uri"] = f"git+{repository_url}@{ref or commit}"
    external: dict[str, Any] = {"commit": commit}
    if repository_url:
        external["repository"] = repository_url
    if ref:
        external["ref"] = ref
    if run_id:
        external["runId"] = run_id
    if run_url:
        external["runUrl"] = run_url
    metadata: dict[str, Any] = {}
    if run_id:
        metadata["invocationId"] = run_id
    if started is not None:
        metadata["startedOn"] = _timestamp(started, "the build start")
    if finished is not None:
        metadata["finishedOn"] = _timestamp(finished, "the build finish")
    run_details: dict[str, Any] = {"builder": {"id": builder_id}}
    if metadata:
        run_details["metadata"] = metadata
    return {
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": external,
            "resolvedDependencies": [source],
        },
        "runDetails": run_details,
    }


def read_provenance(predicate: Mapping[str, Any]) -> ProvenanceFacts:
    """Facts from an SLSA v1 predicate; any missing part is ``None``, never an error.

    The commit is the first resolvedDependency with a ``gitCommit`` digest, else the first
    ``git+`` dependency's ``sha1`` digest (as other SLSA generators write it).
    """
    definition = _object(predicate.get("buildDefinition"))
    details = _object(predicate.get("runDetails"))
    external = _object(definition.get("externalParameters"))
    metadata = _object(details.get("metadata"))
    dependencies = definition.get("resolvedDependencies")
    dependencies = (
        [d for d in dependencies if isinstance(d, dict)] if isinstance(dependencies, list) else []
    )
    commit = None
    for dependency in dependencies:
        commit = _text(_object(dependency.get("digest")).get("gitCommit"))
        if commit:
            break
    if commit is None:
        for dependency in dependencies:
            uri = _text(dependency.get("uri")) or ""
            sha1 = _text(_object(dependency.get("digest")).get("sha1"))
            if uri.startswith("git+") and sha1:
                commit = sha1
                break
    return ProvenanceFacts(
        commit=commit,
        run_id=_text(metadata.get("invocationId")) or _text(external.get("runId")),
        run_url=_text(external.get("runUrl")),
        builder_id=_text(_object(details.get("builder")).get("id")),
        build_type=_text(definition.get("buildType")),
        repository=_text(external.get("repository")),
    )


# --- in-toto test-result v0.1 ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestResultFacts:
    result: str
    passed: int
    warned: int
    failed: int
    skipped: int
    reports: dict[str, str] = field(default_factory=dict)  # name -> "sha256:hex"
    configuration: list[dict[str, Any]] = field(default_factory=list)

    __test__ = False  # not a pytest class, whatever its name


def _descriptor(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A ResourceDescriptor: the spec's fields only, and at least one of uri/digest/content."""
    known = ("name", "uri", "digest", "content", "downloadLocation", "mediaType", "annotations")
    descriptor = {key: entry[key] for key in known if entry.get(key)}
    if not any(key in descriptor for key in ("uri", "digest", "content")):
        raise InputError("a test configuration needs a uri, a digest or content")
    return descriptor


def ci_configuration(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The configuration tests ran with, as ResourceDescriptors, from CI variables: the
    GitHub Actions workflow file or the GitLab CI file at the commit, with the job's name.

    Outside CI nothing is known (conveyor reads the reports, not the test command): ``[]``.
    """
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        # GITHUB_WORKFLOW_REF is "owner/repo/.github/workflows/ci.yml@refs/heads/main".
        workflow, _, ref = (env.get("GITHUB_WORKFLOW_REF") or "").partition("@")
        repository, commit = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_WORKFLOW_SHA")
        commit = commit or env.get("GITHUB_SHA")
        if not (workflow and repository and workflow.startswith(repository + "/")):
            return []
        file = workflow[len(repository) + 1 :]
        descriptor: dict[str, Any] = {
            "name": file,
            "uri": f"{server}/{repository}/blob/{commit or ref}/{file}",
        }
        if commit and _COMMIT.fullmatch(commit):
            descriptor["digest"] = {"gitCommit": commit}
        if env.get("GITHUB_JOB"):
            descriptor["annotations"] = {"job": env["GITHUB_JOB"]}
        return [descriptor]
    if env.get("GITLAB_CI") == "true":
        project, commit = env.get("CI_PROJECT_URL"), env.get("CI_COMMIT_SHA")
        file = env.get("CI_CONFIG_PATH") or ".gitlab-ci.yml"
        if not (project and commit):
            return []
        descriptor = {"name": file, "uri": f"{project.rstrip('/')}/-/blob/{commit}/{file}"}
        if _COMMIT.fullmatch(commit):
            descriptor["digest"] = {"gitCommit": commit}
        if env.get("CI_JOB_NAME"):
            descriptor["annotations"] = {"job": env["CI_JOB_NAME"]}
        return [descriptor]
    return []


def make_test_result(
    *,
    passed: Sequence[str],
    failed: Sequence[str],
    warned: Sequence[str] = (),
    skipped: Sequence[str] = (),
    reports: Sequence[tuple[str, Digest]],
    configuration: Sequence[Mapping[str, Any]] = (),
    url: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """in-toto test-result v0.1. ``failed`` includes errored tests; ``result`` is FAILED if
    any failed or if no test passed or warned (zero tests is not a pass), else WARNED if any
    warned, else PASSED. ``configuration`` is what the tests ran with (``ci_configuration``);
    the JUnit reports and the skipped tests, which the spec has no field for, go to the
    ``conveyor`` extension object (``reports``, ``skippedTests``), and so does ``at``, when the
    result was taken (``testedOn``: readers order results by this signed time)."""
    ran = bool(passed) or bool(warned)
    predicate: dict[str, Any] = {
        "result": "FAILED" if failed or not ran else "WARNED" if warned else "PASSED",
        "configuration": [_descriptor(entry) for entry in configuration],
        "passedTests": list(passed),
        "warnedTests": list(warned),
        "failedTests": list(failed),
        TEST_RESULT_EXTENSION: {
            "reports": [
                {"name": name, "digest": {digest.algorithm: digest.encoded}}
                for name, digest in reports
            ],
            "skippedTests": list(skipped),
        },
    }
    if at is not None:
        predicate[TEST_RESULT_EXTENSION]["testedOn"] = _timestamp(at, "the test time")
    if url:
        predicate["url"] = url
    return predicate


make_test_result.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test
test_result = make_test_result  # the name the issue uses


def _sha256_names(entries: object) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        entry = _object(entry)
        name, sha = _text(entry.get("name")), _text(_object(entry.get("digest")).get("sha256"))
        if name and sha:
            found[name] = f"sha256:{sha}"
    return found


def read_test_result(predicate: Mapping[str, Any]) -> TestResultFacts:
    """Counts from a test-result predicate; a missing list counts as empty.

    An unknown or missing ``result`` reads as FAILED (fail closed). Reports come from
    ``conveyor.reports``; predicates written before it existed listed them in
    ``configuration`` (name + sha256), which is read as the reports then.
    """

    def count(value: object) -> int:
        return len(value) if isinstance(value, list) else 0

    result = predicate.get("result")
    extension = _object(predicate.get(TEST_RESULT_EXTENSION))
    configuration = predicate.get("configuration")
    descriptors = (
        [e for e in configuration if isinstance(e, dict)] if isinstance(configuration, list) else []
    )
    if "reports" in extension:
        reports = _sha256_names(extension.get("reports"))
    else:  # written before conveyor.reports: configuration held the reports
        reports, descriptors = _sha256_names(configuration), []
    return TestResultFacts(
        result=result if result in ("PASSED", "WARNED", "FAILED") else "FAILED",
        passed=count(predicate.get("passedTests")),
        warned=count(predicate.get("warnedTests")),
        failed=count(predicate.get("failedTests")),
        skipped=count(extension.get("skippedTests")),
        reports=reports,
        configuration=descriptors,
    )


# --- in-toto vulns v0.2 ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindingInput:
    id: str
    severity: str  # a Severity, or a scanner's own word (normalised when written)
    package: str | None = None
    version: str | None = None
    fixed_version: str | None = None


@dataclass(frozen=True, slots=True)
class ScanInput:
    """A scanner-neutral summary; the evidence parsers fill it from Trivy/Grype/SARIF.

    ``db_updated`` is the vulnerability database's build/update time when the report says;
    without it ``db.lastUpdate`` (required by the spec) is the scan finish, an upper bound,
    and the predicate says so (``conveyor.dbLastUpdate``).
    """

    scanner_name: str
    scanner_version: str | None
    db_version: str | None
    started: datetime
    finished: datetime
    findings: list[FindingInput]
    db_updated: datetime | None = None
    scanner_uri: str | None = None
    db_uri: str | None = None


@dataclass(frozen=True, slots=True)
class ScanFacts:
    scanner_uri: str | None
    scanner_version: str | None
    db_version: str | None
    finished: str | None
    counts: dict[str, int]  # every severity word (a Severity value), zero when absent
    ids: list[str]
    findings: list[tuple[str, Severity]] = field(default_factory=list)  # (id, severity)
    db_updated: str | None = None
    db_uri: str | None = None


def _wire(severity: Severity) -> str:
    """The word written as a vulns ``score``: the severity in upper case."""
    return severity.value.upper()


def _from_wire(score: object) -> Severity:
    """A ``score`` read back; predicates written before negligible had a wire word say LOW."""
    return normalise_severity(score)


def vulnerability_scan(scan: ScanInput) -> dict[str, Any]:
    """in-toto vulns v0.2. Each finding's severity is ``{"method": <scanner name>, "score":
    <CRITICAL|HIGH|MEDIUM|LOW|NEGLIGIBLE|UNKNOWN>}``; package details go in ``annotations``
    (a list holding one map). ``db.lastUpdate`` is always written (see ``ScanInput``)."""
    name = scan.scanner_name.strip()
    if not name:
        raise InputError("a scan needs the scanner's name")
    finished = _timestamp(scan.finished, "the scan finish")
    db: dict[str, Any] = {}
    if scan.db_uri:
        db["uri"] = scan.db_uri
    if scan.db_version:
        db["version"] = scan.db_version
    if scan.db_updated is not None:
        db["lastUpdate"] = _timestamp(scan.db_updated, "the scanner database update time")
    else:
        db["lastUpdate"] = finished
    results = []
    for finding in scan.findings:
        if not finding.id:
            raise InputError("a scan finding has no vulnerability id")
        annotations = {
            key: value
            for key, value in (
                ("package", finding.package),
                ("version", finding.version),
                ("fixedVersion", finding.fixed_version),
                ("reportedSeverity", str(finding.severity)),
            )
            if value
        }
        entry: dict[str, Any] = {
            "id": finding.id,
            "severity": [
                {"method": name.lower(), "score": _wire(normalise_severity(finding.severity))}
            ],
        }
        if annotations:
            entry["annotations"] = [annotations]
        results.append(entry)
    scanner: dict[str, Any] = {
        "uri": scan.scanner_uri or _SCANNER_URIS.get(name.lower(), f"pkg:generic/{name}"),
        "db": db,
        "result": results,
    }
    if scan.scanner_version:
        scanner["version"] = scan.scanner_version
    predicate: dict[str, Any] = {
        "scanner": scanner,
        "metadata": {
            "scanStartedOn": _timestamp(scan.started, "the scan start"),
            "scanFinishedOn": finished,
        },
    }
    if scan.db_updated is None:
        # Say in-band which field stood in for the database time the report lacked.
        predicate[SCAN_EXTENSION] = {"dbLastUpdate": "metadata.scanFinishedOn"}
    return predicate


def read_vulnerability_scan(predicate: Mapping[str, Any]) -> ScanFacts:
    """Counts per severity from a vulns predicate. A finding's severity is the first rated
    score that is a severity word; findings with none count as unknown."""
    scanner = _object(predicate.get("scanner"))
    db = _object(scanner.get("db"))
    counts = dict.fromkeys((s.value for s in SEVERITIES), 0)
    ids = []
    findings: list[tuple[str, Severity]] = []
    raw = scanner.get("result")
    for finding in raw if isinstance(raw, list) else []:
        finding = _object(finding)
        ids.append(_text(finding.get("id")) or "")
        severity = Severity.UNKNOWN
        ratings = finding.get("severity")
        for rating in ratings if isinstance(ratings, list) else []:
            word = _from_wire(_object(rating).get("score"))
            if word is not Severity.UNKNOWN:
                severity = word
                break
        counts[severity.value] += 1
        findings.append((ids[-1], severity))
    marker = _object(predicate.get(SCAN_EXTENSION)).get("dbLastUpdate")
    return ScanFacts(
        scanner_uri=_text(scanner.get("uri")),
        scanner_version=_text(scanner.get("version")),
        db_version=_text(db.get("version")),
        finished=_text(_object(predicate.get("metadata")).get("scanFinishedOn")),
        counts=counts,
        ids=ids,
        findings=findings,
        db_updated=None if marker else _text(db.get("lastUpdate")),
        db_uri=_text(db.get("uri")),
    )


# --- conveyor's own --------------------------------------------------------------------


def _environment(name: str, what: str = "environment") -> str:
    if not name or not name.strip():
        raise InputError(f"the {what} name is empty")
    return name


def approval(
    *,
    environment: str,
    comment: str | None = None,
    approver: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Someone approves the subject digest for ``environment``."""
    predicate: dict[str, Any] = {"environment": _environment(environment)}
    if comment:
        predicate["comment"] = comment
    if approver:
        predicate["approver"] = approver
    if at is not None:
        predicate["approvedOn"] = _timestamp(at, "the approval time")
    return predicate


def smoke(
    *, environment: str, passed: bool, url: str | None = None, at: datetime | None = None
) -> dict[str, Any]:
    """A smoke test of the subject digest running in ``environment``."""
    predicate: dict[str, Any] = {"environment": _environment(environment), "passed": passed}
    if url:
        predicate["url"] = url
    if at is not None:
        predicate["testedOn"] = _timestamp(at, "the smoke test time")
    return predicate


@dataclass(frozen=True, slots=True)
class GateRecord:
    """One gate's verdict as recorded in a promotion (``evidence``: envelope digests)."""

    gate: str
    passed: bool
    reason: str
    evidence: Sequence[str] = ()


def promotion(
    *,
    from_environment: str | None,
    to_environment: str,
    repository: str,
    policy_sha256: str,
    gates: Sequence[GateRecord],
    break_glass: str | None = None,
    rollback: bool = False,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The subject digest was placed in ``to_environment``'s ``repository``."""
    if not _SHA256_HEX.fullmatch(policy_sha256):
        raise InputError("policy_sha256 must be 64 lowercase hex characters")
    if not repository:
        raise InputError("a promotion needs the target repository")
    if break_glass is not None and not break_glass.strip():
        raise InputError("a break-glass promotion needs a reason")
    predicate: dict[str, Any] = {
        "fromEnvironment": from_environment,
        "toEnvironment": _environment(to_environment, "target environment"),
        "repository": repository,
        "policySha256": policy_sha256,
        "gates": [
            {
                "gate": record.gate,
                "passed": bool(record.passed),
                "reason": record.reason,
                "evidence": list(record.evidence),
            }
            for record in gates
        ],
        "breakGlass": break_glass,
        "rollback": rollback,
    }
    if at is not None:
        predicate["promotedOn"] = _timestamp(at, "the promotion time")
    return predicate


@dataclass(frozen=True, slots=True)
class ApprovalFacts:
    environment: str | None
    comment: str | None
    approver: str | None
    approved_on: str | None


@dataclass(frozen=True, slots=True)
class SmokeFacts:
    environment: str | None
    passed: bool
    url: str | None


@dataclass(frozen=True, slots=True)
class PromotionFacts:
    from_environment: str | None
    to_environment: str | None
    repository: str | None
    policy_sha256: str | None
    gates: list[GateRecord]
    break_glass: str | None
    rollback: bool


def read_approval(predicate: Mapping[str, Any]) -> ApprovalFacts:
    return ApprovalFacts(
        environment=_text(predicate.get("environment")),
        comment=_text(predicate.get("comment")),
        approver=_text(predicate.get("approver")),
        approved_on=_text(predicate.get("approvedOn")),
    )


def read_smoke(predicate: Mapping[str, Any]) -> SmokeFacts:
    """``passed`` is True only for a JSON ``true`` (fail closed)."""
    return SmokeFacts(
        environment=_text(predicate.get("environment")),
        passed=predicate.get("passed") is True,
        url=_text(predicate.get("url")),
    )


def read_promotion(predicate: Mapping[str, Any]) -> PromotionFacts:
    gates = []
    raw = predicate.get("gates")
    for entry in raw if isinstance(raw, list) else []:
        entry = _object(entry)
        evidence = entry.get("evidence")
        gates.append(
            GateRecord(
                gate=_text(entry.get("gate")) or "",
                passed=entry.get("passed") is True,
                reason=_text(entry.get("reason")) or "",
                evidence=[e for e in evidence if isinstance(e, str)]
                if isinstance(evidence, list)
                else [],
            )
        )
    return PromotionFacts(
        from_environment=_text(predicate.get("fromEnvironment")),
        to_environment=_text(predicate.get("toEnvironment")),
        repository=_text(predicate.get("repository")),
        policy_sha256=_text(predicate.get("policySha256")),
        gates=gates,
        break_glass=_text(predicate.get("breakGlass")),
        rollback=predicate.get("rollback") is True,
    )


# --- break-glass admission ---------------------------------------------------------------

BREAK_GLASS_ADMISSION_V1 = CONVEYOR_PREDICATE_PREFIX + "break-glass-admission/v1"


@dataclass(frozen=True, slots=True)
class BreakGlassAdmissionFacts:
    environment: str | None
    namespace: str | None
    workload: str | None  # "apps/Deployment payment-api"
    reason: str | None
    request_uid: str | None
    username: str | None  # the Kubernetes user, as the AdmissionReview names it
    containers: list[str]
    admitted_on: str | None


def break_glass_admission(
    *,
    environment: str,
    namespace: str,
    workload: Mapping[str, str],
    containers: Sequence[Mapping[str, str]],
    reason: str,
    request_uid: str,
    requested_by: Mapping[str, Any],
    gates: Sequence[GateRecord],
    at: datetime,
) -> dict[str, Any]:
    """The admission webhook let a workload run the subject digest in ``environment``,
    though it was not promoted there, because the freeze's break-glass allowed it.
    ``requested_by``: the AdmissionReview's ``userInfo`` (a Kubernetes user, not an identity
    of conveyor.yaml). It counts as no approval and no promotion."""
    if not reason.strip():
        raise InputError("a break-glass admission needs a reason")
    if not request_uid:
        raise InputError("a break-glass admission needs the request uid")
    return {
        "environment": _environment(environment),
        "namespace": namespace,
        "workload": dict(workload),
        "containers": [dict(c) for c in containers],
        "reason": reason,
        "requestUid": request_uid,
        "requestedBy": dict(requested_by),
        "gates": [
            {
                "gate": g.gate,
                "passed": bool(g.passed),
                "reason": g.reason,
                "evidence": list(g.evidence),
            }
            for g in gates
        ],
        "admittedOn": _timestamp(at, "the admission time"),
    }


def read_break_glass_admission(predicate: Mapping[str, Any]) -> BreakGlassAdmissionFacts:
    workload = _object(predicate.get("workload"))
    kind, name = _text(workload.get("kind")), _text(workload.get("name"))
    containers = predicate.get("containers")
    return BreakGlassAdmissionFacts(
        environment=_text(predicate.get("environment")),
        namespace=_text(predicate.get("namespace")),
        workload=" ".join(part for part in (kind, name) if part) or None,
        reason=_text(predicate.get("reason")),
        request_uid=_text(predicate.get("requestUid")),
        username=_text(_object(predicate.get("requestedBy")).get("username")),
        containers=[
            _text(_object(c).get("name")) or "?"
            for c in (containers if isinstance(containers, list) else [])
        ],
        admitted_on=_text(predicate.get("admittedOn")),
    )
