"""The scan model every scanner's report is read into: ``ScanReport`` and its ``Finding``s.

Decisions that apply to every format:

- Severities are the one vocabulary of ``conveyor.severity``: critical, high, medium, low,
  negligible, unknown. Scanner words are matched case-insensitively ("moderate" is
  medium); a number, ``null``, a missing field or a look-alike word is ``unknown``, never
  dropped (the scan gate denies unknown findings unless its ``max`` names ``unknown``).
- A finding is its (id, package, installed version). The same triple reported more than
  once (one CVE found through several paths, matchers or lock files of the same package
  version) counts once, keeping the most severe rating seen. ``counts`` has all six keys.
- ``artifact_digests`` are the manifest digests the report says it scanned;
  ``config_digest`` is the image config digest, kept apart because it is not a manifest.
- ``scanned_at`` is timezone-aware or ``None`` (the report carries no scan time). A time
  that is there but unusable (garbage, zone-less, Go's zero time, before 2000) is refused
  by the parser (``scan_time``), never silently replaced.
- ``db_updated`` is when the scanner's vulnerability database was built or updated, when
  the report says so; ``db_uri`` where the database came from.

Parsers (``trivy``, ``grype``, ``sarif``, ``snyk``) build a ``Draft`` and ``finish`` it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

from conveyor.evidence._input import (
    as_list,
    parse_digest,
    parse_timestamp,
    repo_digest,
    text_or_none,
)
from conveyor.evidence.errors import EvidenceError
from conveyor.oci.digest import Digest
from conveyor.severity import (
    SEVERITIES,
    Severity,
    is_severity_word,
    normalise_severity,
    severity_from_score,
    severity_rank,
)

__all__ = [
    "SEVERITIES",
    "Draft",
    "Finding",
    "FindingKey",
    "ScanFormat",
    "ScanReport",
    "Severity",
    "finding_key",
    "is_severity_word",
    "normalise_severity",
    "scan_time",
    "severity_from_score",
]

ScanFormat = Literal["trivy", "grype", "sarif", "snyk"]
# No scanner that reads image digests predates this; earlier times are zero values
# ("0001-01-01T00:00:00Z" is Go's time.Time{}) or garbage.
_EARLIEST_SCAN = datetime(2000, 1, 1, tzinfo=UTC)


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
    db_updated: datetime | None = None
    db_uri: str | None = None

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


def scan_time(
    value: object, *, path: str, field: str, utc_if_naive: bool = False
) -> datetime | None:
    """A report's time: ``None`` when absent or empty; ``EvidenceError`` when it is there but
    cannot be trusted (not RFC 3339, no zone unless ``utc_if_naive``, before 2000).

    Replacing such a time by the time of recording would make a stale report look fresh.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    when = parse_timestamp(value, assume_utc=utc_if_naive)
    if when is None:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise EvidenceError(
            path,
            f"{field} {shown} is not an RFC 3339 time with a zone; refusing a report whose "
            "age cannot be told",
        )
    if when < _EARLIEST_SCAN:
        raise EvidenceError(
            path,
            f"{field} {when.isoformat()} is not a real scan time (a zero or garbage value); "
            "refusing a report whose age cannot be told",
        )
    return when


@dataclass(slots=True)
class Draft:
    """What a parser has gathered so far; ``finish`` deduplicates, counts and freezes it."""

    path: str
    data: bytes
    format: ScanFormat
    scanner_name: str
    scanner_version: str | None = None
    db_version: str | None = None
    db_updated: datetime | None = None
    db_uri: str | None = None
    scanned_at: datetime | None = None
    artifact_name: str | None = None
    artifact_digests: list[Digest] = field(default_factory=list)
    config_digest: Digest | None = None
    findings: list[tuple[FindingKey, Finding]] = field(default_factory=list)

    def add(self, finding: Finding, key: FindingKey | None = None) -> None:
        self.findings.append((finding_key(finding) if key is None else key, finding))

    def add_digest(self, value: object, *, where: str) -> None:
        """A manifest digest, when ``value`` is a non-empty string (else nothing)."""
        if text_or_none(value):
            self.artifact_digests.append(parse_digest(value, path=self.path, field=where))

    def add_repo_digests(self, value: object, *, where: str) -> None:
        """``repository@sha256:…`` entries of a JSON array (absent means none)."""
        for entry in as_list(value, path=self.path, field=where):
            self.artifact_digests.append(repo_digest(entry, path=self.path, field=where))

    def set_config(self, value: object, *, where: str) -> None:
        """The image config digest, when ``value`` is a non-empty string and none is set."""
        if self.config_digest is None and text_or_none(value):
            self.config_digest = parse_digest(value, path=self.path, field=where)

    def time(self, value: object, *, where: str, utc_if_naive: bool = False) -> datetime | None:
        return scan_time(value, path=self.path, field=where, utc_if_naive=utc_if_naive)

    def finish(self) -> ScanReport:
        """Deduplicate findings by key (keeping the most severe), count, and build the report."""
        unique: dict[FindingKey, Finding] = {}
        for key, finding in self.findings:
            kept = unique.get(key)
            if kept is None or severity_rank(finding.severity) < severity_rank(kept.severity):
                unique[key] = finding
        # Plain-string keys: these counts are printed and serialised as they are.
        counts: dict[str, int] = dict.fromkeys((s.value for s in SEVERITIES), 0)
        for finding in unique.values():
            counts[finding.severity.value] += 1
        return ScanReport(
            path=self.path,
            sha256=Digest.of(self.data),
            format=self.format,
            scanner_name=self.scanner_name,
            scanner_version=self.scanner_version,
            db_version=self.db_version,
            scanned_at=self.scanned_at,
            artifact_name=self.artifact_name,
            artifact_digests=tuple(dict.fromkeys(self.artifact_digests)),
            config_digest=self.config_digest,
            findings=tuple(unique.values()),
            counts=MappingProxyType(counts),
            db_updated=self.db_updated,
            db_uri=self.db_uri,
        )
