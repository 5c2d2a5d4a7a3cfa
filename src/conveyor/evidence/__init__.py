"""Evidence ingestion: JUnit test reports and vulnerability scans → typed summaries.

Pure code: no network, no database, no printing. Every report is untrusted input: size
capped before parsing, XML without DTDs or entities, strict JSON. Problems raise
``EvidenceError`` (exit 2) naming the file; a scan of another image raises
``ScanSubjectMismatch`` (exit 1) from ``require_scanned``.

``report`` is the scan model; ``scan`` detects a report's format and hands it to the
format's parser (``trivy``, ``grype``, ``sarif``, ``snyk``), which builds the model.
``Severity`` is the one severity vocabulary (defined in ``conveyor.severity``, shared with
``policy`` and ``attest``).
"""

from __future__ import annotations

from conveyor.evidence._input import DEFAULT_MAX_BYTES, read_capped
from conveyor.evidence.errors import EvidenceError, ScanSubjectMismatch
from conveyor.evidence.junit import (
    TestCaseResult,
    TestReport,
    TestSummary,
    merge_reports,
    parse_junit,
    parse_junit_file,
)
from conveyor.evidence.report import (
    SEVERITIES,
    Finding,
    ScanReport,
    Severity,
    normalise_severity,
)
from conveyor.evidence.scan import parse_scan, parse_scan_file, require_scanned

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SEVERITIES",
    "EvidenceError",
    "Finding",
    "ScanReport",
    "ScanSubjectMismatch",
    "Severity",
    "TestCaseResult",
    "TestReport",
    "TestSummary",
    "merge_reports",
    "normalise_severity",
    "parse_junit",
    "parse_junit_file",
    "parse_scan",
    "parse_scan_file",
    "read_capped",
    "require_scanned",
]
