"""Vulnerability scan reports → one ``ScanReport`` model, whatever scanner wrote them.

``parse_scan`` recognises the format by content: Trivy JSON (SchemaVersion 2), Grype JSON,
SARIF 2.1.0 (Trivy, Grype, any SARIF-writing scanner) and Snyk JSON (``snyk test`` /
``snyk container test``). Decisions that apply to every format:

- Severities are normalised case-insensitively to critical, high, medium, low, negligible
  or unknown ("moderate" is medium; anything unrecognised is unknown, never dropped).
- A finding is its (id, package, installed version). The same triple reported more than
  once (one CVE found through several paths, matchers or lock files of the same package
  version) counts once, keeping the most severe rating seen. ``counts`` has all six keys.
- ``artifact_digests`` are the manifest digests the report says it scanned (Trivy
  ``Metadata.RepoDigests``, Grype ``source.target.manifestDigest``/``repoDigests``, SARIF run
  properties ``repoDigests``). ``config_digest`` is the image config digest (Trivy
  ``Metadata.ImageID``, Grype/SARIF ``imageID``), kept apart because it is not a manifest.
- ``scanned_at`` is timezone-aware or ``None`` (absent, empty, zone-less).

``require_scanned`` refuses a report about another image; see its docstring.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from conveyor.evidence._input import DEFAULT_MAX_BYTES, loads_strict_json, read_capped
from conveyor.evidence.errors import EvidenceError, ScanSubjectMismatch
from conveyor.oci.digest import Digest

Severity = Literal["critical", "high", "medium", "low", "negligible", "unknown"]
ScanFormat = Literal["trivy", "grype", "sarif", "snyk"]

SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "negligible", "unknown")
_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
_ALIASES: dict[str, Severity] = {
    "critical": "critical",
    "high": "high",
    "medium": "medium",
    "moderate": "medium",
    "low": "low",
    "negligible": "negligible",
    "unknown": "unknown",
}


def normalise_severity(value: object) -> Severity:
    """``"Critical"``, ``"CRITICAL"``, ``" critical "`` → ``"critical"``; anything else unknown."""
    if not isinstance(value, str):
        return "unknown"
    return _ALIASES.get(value.strip().lower(), "unknown")


def is_severity_word(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() in _ALIASES


def severity_from_score(score: float) -> Severity:
    """CVSS bands as GitHub code scanning reads ``security-severity``."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    if score > 0.0:
        return "low"
    return "unknown"


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    severity: Severity
    package: str | None
    version: str | None
    fixed_version: str | None
    title: str | None


@dataclass(frozen=True, slots=True)
class ScanReport:
    path: str
    sha256: Digest
    format: ScanFormat
    scanner_name: str
    scanner_version: str | None
    db_version: str | None
    scanned_at: datetime | None
    artifact_name: str | None
    artifact_digests: tuple[Digest, ...]
    config_digest: Digest | None
    findings: tuple[Finding, ...]
    counts: Mapping[str, int]

    @property
    def names_digest(self) -> bool:
        """Whether the report says which image it scanned (manifest or config digest)."""
        return bool(self.artifact_digests) or self.config_digest is not None

    @property
    def total(self) -> int:
        return len(self.findings)

    @property
    def ids(self) -> tuple[str, ...]:
        """Distinct finding ids, sorted."""
        return tuple(sorted({finding.id for finding in self.findings}))


FindingKey = tuple[object, ...]


def finding_key(finding: Finding) -> FindingKey:
    return (finding.id, finding.package, finding.version)


def assemble(
    *,
    path: str,
    data: bytes,
    report_format: ScanFormat,
    scanner_name: str,
    scanner_version: str | None,
    db_version: str | None,
    scanned_at: datetime | None,
    artifact_name: str | None,
    artifact_digests: Iterable[Digest],
    config_digest: Digest | None,
    findings: Iterable[tuple[FindingKey, Finding]],
) -> ScanReport:
    """Deduplicate findings by key (keeping the most severe), count, and build the report."""
    unique: dict[FindingKey, Finding] = {}
    for key, finding in findings:
        kept = unique.get(key)
        if kept is None or _RANK[finding.severity] < _RANK[kept.severity]:
            unique[key] = finding
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in unique.values():
        counts[finding.severity] += 1
    return ScanReport(
        path=path,
        sha256=Digest.of(data),
        format=report_format,
        scanner_name=scanner_name,
        scanner_version=scanner_version,
        db_version=db_version,
        scanned_at=scanned_at,
        artifact_name=artifact_name,
        artifact_digests=tuple(dict.fromkeys(artifact_digests)),
        config_digest=config_digest,
        findings=tuple(unique.values()),
        counts=MappingProxyType(counts),
    )


def detect_format(document: Any, *, path: str) -> ScanFormat:
    """Which scanner wrote this JSON document; refuses what none of them would write."""
    if isinstance(document, dict):
        if "SchemaVersion" in document and (
            "Results" in document or "ArtifactName" in document or "Trivy" in document
        ):
            version = document["SchemaVersion"]
            if version != 2 or isinstance(version, bool):
                raise EvidenceError(
                    path,
                    f"Trivy report SchemaVersion {version!r} is not supported; "
                    "re-run a current Trivy with --format json (SchemaVersion 2)",
                )
            return "trivy"
        if isinstance(document.get("matches"), list) and (
            isinstance(document.get("descriptor"), dict) or isinstance(document.get("source"), dict)
        ):
            return "grype"
        if isinstance(document.get("runs"), list) and (
            "version" in document or "sarif" in str(document.get("$schema", "")).lower()
        ):
            if document.get("version") != "2.1.0":
                raise EvidenceError(
                    path,
                    f"SARIF version {document.get('version')!r} is not supported (expected 2.1.0)",
                )
            return "sarif"
        if isinstance(document.get("ok"), bool) and (
            isinstance(document.get("vulnerabilities"), list) or "error" in document
        ):
            return "snyk"  # with "error", snyk.parse refuses it and says why
    if isinstance(document, list) and document:
        if all(isinstance(item, dict) and isinstance(item.get("ok"), bool) for item in document):
            return "snyk"  # `snyk test --all-projects --json`: one report per project
        if all(isinstance(item, dict) and "Target" in item for item in document):
            raise EvidenceError(
                path,
                "Trivy report without SchemaVersion (Trivy < 0.20 format) is not supported; "
                "re-run a current Trivy with --format json",
            )
    raise EvidenceError(path, "not a Trivy, Grype, SARIF or Snyk report")


def parse_scan(
    data: bytes, *, path: str = "<scan>", max_bytes: int = DEFAULT_MAX_BYTES
) -> ScanReport:
    """Read one vulnerability report, detecting its format from the content."""
    document = loads_strict_json(data, path=path, max_bytes=max_bytes)
    kind = detect_format(document, path=path)
    # Imported here: the format modules build on this module's model.
    if kind == "trivy":
        from conveyor.evidence import trivy

        return trivy.parse(document, data=data, path=path)
    if kind == "grype":
        from conveyor.evidence import grype

        return grype.parse(document, data=data, path=path)
    if kind == "sarif":
        from conveyor.evidence import sarif

        return sarif.parse(document, data=data, path=path)
    from conveyor.evidence import snyk

    return snyk.parse(document, data=data, path=path)


def parse_scan_file(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> ScanReport:
    """Read a scan report from disk; an oversized file is refused before it is read."""
    name = os.fspath(path)
    return parse_scan(read_capped(name, max_bytes=max_bytes), path=name, max_bytes=max_bytes)


def require_scanned(
    report: ScanReport,
    digest: Digest,
    *,
    config_digest: Digest | None = None,
    related: Collection[Digest] = (),
) -> None:
    """Refuse a report that says it scanned another image than ``digest``.

    - The report names manifest digests: one of them must be ``digest`` (or one of
      ``related``: the index or platform manifests of the same multi-arch artifact).
    - The report names only an image config digest (a scan of a local tarball or daemon
      image): it must equal ``config_digest``; without ``config_digest`` the subject cannot
      be checked and the report is refused (fail closed).
    - The report names no digest at all: no error; ``report.names_digest`` is ``False`` and
      the caller decides whether to accept or warn.
    """
    accepted = {digest, *related}
    if report.artifact_digests:
        if accepted.intersection(report.artifact_digests):
            return
        named = ", ".join(d.short for d in report.artifact_digests)
        raise ScanSubjectMismatch(
            report.path,
            f"the scan is of {named}, not of {digest.short}; "
            "scan the image by that digest and attest the new report",
        )
    if report.config_digest is not None:
        if config_digest is None:
            raise ScanSubjectMismatch(
                report.path,
                f"the scan names the image only by its config digest "
                f"{report.config_digest.short}, which was not compared; refusing",
            )
        if report.config_digest != config_digest:
            raise ScanSubjectMismatch(
                report.path,
                f"the scan is of an image with config {report.config_digest.short}, but "
                f"{digest.short} has config {config_digest.short}; "
                "scan the image by that digest and attest the new report",
            )
