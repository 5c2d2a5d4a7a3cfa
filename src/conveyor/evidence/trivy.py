"""Trivy ``--format json`` reports (SchemaVersion 2).

Reads ``Results[].Vulnerabilities[]`` only: misconfigurations, secrets and licenses are
other kinds of evidence. ``Results`` absent (nothing detected) or a result without a
``Vulnerabilities`` key both mean zero findings. Trivy writes no vulnerability-DB version
into its report, so ``db_version`` is ``None`` unless a ``Trivy.VulnerabilityDB.Version``
(the shape of ``trivy version --format json``) is present.
"""

from __future__ import annotations

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


def parse(document: dict[str, Any], *, data: bytes, path: str) -> ScanReport:
    trivy = as_object(document.get("Trivy"), path=path, field="Trivy")
    database = as_object(trivy.get("VulnerabilityDB"), path=path, field="Trivy.VulnerabilityDB")
    metadata = as_object(document.get("Metadata"), path=path, field="Metadata")

    digests: list[Digest] = [
        repo_digest(entry, path=path, field="Metadata.RepoDigests")
        for entry in as_list(metadata.get("RepoDigests"), path=path, field="Metadata.RepoDigests")
    ]
    config = (
        parse_digest(metadata["ImageID"], path=path, field="Metadata.ImageID")
        if text_or_none(metadata.get("ImageID"))
        else None
    )

    findings: list[tuple[FindingKey, Finding]] = []
    for r, result in enumerate(as_list(document.get("Results"), path=path, field="Results")):
        where = f"Results[{r}]"
        result = as_object(result, path=path, field=where)
        vulnerabilities = as_list(
            result.get("Vulnerabilities"), path=path, field=f"{where}.Vulnerabilities"
        )
        for v, entry in enumerate(vulnerabilities):
            item = as_object(entry, path=path, field=f"{where}.Vulnerabilities[{v}]")
            identifier = text_or_none(item.get("VulnerabilityID"))
            if identifier is None:
                raise EvidenceError(path, f"{where}.Vulnerabilities[{v}] has no VulnerabilityID")
            finding = Finding(
                id=identifier,
                severity=normalise_severity(item.get("Severity")),
                package=text_or_none(item.get("PkgName")),
                version=text_or_none(item.get("InstalledVersion")),
                fixed_version=text_or_none(item.get("FixedVersion")),
                title=text_or_none(item.get("Title")),
            )
            findings.append((finding_key(finding), finding))

    return assemble(
        path=path,
        data=data,
        report_format="trivy",
        scanner_name="trivy",
        scanner_version=text_or_none(trivy.get("Version")),
        db_version=text_or_none(database.get("Version")),
        scanned_at=parse_timestamp(document.get("CreatedAt")),
        artifact_name=text_or_none(document.get("ArtifactName")),
        artifact_digests=digests,
        config_digest=config,
        findings=findings,
    )
