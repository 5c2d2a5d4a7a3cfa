"""Vulnerability scan reports → one ``ScanReport`` (``report.py``), whatever scanner wrote them.

``parse_scan`` recognises the format by content: Trivy JSON (SchemaVersion 2), Grype JSON,
SARIF 2.1.0 (Trivy, Grype, any SARIF-writing scanner) and Snyk JSON (``snyk test`` /
``snyk container test``), and hands the document to that format's parser. The decisions
every format shares (severities, deduplication, digests, times) are in ``report.py``.

``require_scanned`` refuses a report about another image; see its docstring.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

from conveyor.evidence import grype, sarif, snyk, trivy
from conveyor.evidence._input import DEFAULT_MAX_BYTES, loads_strict_json, read_capped
from conveyor.evidence.errors import EvidenceError, ScanSubjectMismatch
from conveyor.evidence.report import ScanFormat, ScanReport
from conveyor.oci.digest import Digest

_PARSERS: dict[ScanFormat, Callable[..., ScanReport]] = {
    "trivy": trivy.parse,
    "grype": grype.parse,
    "sarif": sarif.parse,
    "snyk": snyk.parse,
}


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
    return _PARSERS[kind](document, data=data, path=path)


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
