"""Grype ``-o json`` reports.

Findings are ``matches[]`` (``ignoredMatches`` are not findings). The database version is
``descriptor.db.status`` (Grype 0.88+) or ``descriptor.db`` (older): its schema version and
build time, the latter being what says how fresh the data was. ``source.target`` is an
object for image scans (manifest digest, repo digests, config ``imageID``) and a plain
string for directory and file scans (no digest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.evidence._input import (
    as_list,
    as_object,
    parse_digest,
    parse_timestamp,
    repo_digest,
    text_or_none,
)
from conveyor.evidence.errors import EvidenceError
from conveyor.evidence.scan import (
    Finding,
    FindingKey,
    ScanReport,
    assemble,
    finding_key,
    normalise_severity,
)
from conveyor.oci.digest import Digest

_NOT_PROVIDED = "[not provided]"  # what Grype writes when built without version info


def _db_version(descriptor: Mapping[str, Any], *, path: str) -> str | None:
    database = as_object(descriptor.get("db"), path=path, field="descriptor.db")
    status = as_object(database.get("status"), path=path, field="descriptor.db.status")
    source = status or database
    schema = text_or_none(source.get("schemaVersion"))
    built = text_or_none(source.get("built"))
    if schema and built:
        return f"{schema} built {built}"
    return built or schema


def _fixed(vulnerability: Mapping[str, Any], *, path: str, where: str) -> str | None:
    fix = as_object(vulnerability.get("fix"), path=path, field=f"{where}.fix")
    versions = [
        text
        for text in (text_or_none(v) for v in as_list(fix.get("versions"), path=path, field=where))
        if text
    ]
    return ", ".join(versions) or None


def parse(document: dict[str, Any], *, data: bytes, path: str) -> ScanReport:
    descriptor = as_object(document.get("descriptor"), path=path, field="descriptor")
    source = as_object(document.get("source"), path=path, field="source")
    target_value = source.get("target")

    digests: list[Digest] = []
    config: Digest | None = None
    artifact_name: str | None = None
    if isinstance(target_value, dict):
        artifact_name = text_or_none(target_value.get("userInput"))
        if text_or_none(target_value.get("manifestDigest")):
            digests.append(
                parse_digest(
                    target_value["manifestDigest"], path=path, field="source.target.manifestDigest"
                )
            )
        for entry in as_list(
            target_value.get("repoDigests"), path=path, field="source.target.repoDigests"
        ):
            digests.append(repo_digest(entry, path=path, field="source.target.repoDigests"))
        if text_or_none(target_value.get("imageID")):
            config = parse_digest(target_value["imageID"], path=path, field="source.target.imageID")
    else:
        artifact_name = text_or_none(target_value)

    findings: list[tuple[FindingKey, Finding]] = []
    for m, entry in enumerate(as_list(document.get("matches"), path=path, field="matches")):
        where = f"matches[{m}]"
        match = as_object(entry, path=path, field=where)
        vulnerability = as_object(
            match.get("vulnerability"), path=path, field=f"{where}.vulnerability"
        )
        artifact = as_object(match.get("artifact"), path=path, field=f"{where}.artifact")
        identifier = text_or_none(vulnerability.get("id"))
        if identifier is None:
            raise EvidenceError(path, f"{where}.vulnerability has no id")
        finding = Finding(
            id=identifier,
            severity=normalise_severity(vulnerability.get("severity")),
            package=text_or_none(artifact.get("name")),
            version=text_or_none(artifact.get("version")),
            fixed_version=_fixed(vulnerability, path=path, where=f"{where}.vulnerability"),
            title=None,
        )
        findings.append((finding_key(finding), finding))

    version = text_or_none(descriptor.get("version"))
    return assemble(
        path=path,
        data=data,
        report_format="grype",
        scanner_name=text_or_none(descriptor.get("name")) or "grype",
        scanner_version=None if version == _NOT_PROVIDED else version,
        db_version=_db_version(descriptor, path=path),
        scanned_at=parse_timestamp(descriptor.get("timestamp")),
        artifact_name=artifact_name,
        artifact_digests=digests,
        config_digest=config,
        findings=findings,
    )
