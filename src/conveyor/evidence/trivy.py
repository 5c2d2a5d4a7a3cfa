"""Trivy ``--format json`` reports (SchemaVersion 2).

Reads ``Results[].Vulnerabilities[]`` only: misconfigurations, secrets and licenses are
other kinds of evidence. ``Results`` absent (nothing detected) or a result without a
``Vulnerabilities`` key both mean zero findings.

The vulnerability database: Trivy's image report carries no database version or time (each
finding's ``DataSource`` names the advisory feed, not the database build), so
``db_version`` and ``db_updated`` are ``None`` unless a ``Trivy.VulnerabilityDB`` object is
present (the shape ``trivy version --format json`` writes: ``Version``, ``UpdatedAt``).
"""

from __future__ import annotations

from typing import Any

from conveyor.evidence._input import as_list, as_object, text_or_none
from conveyor.evidence.errors import EvidenceError
from conveyor.evidence.report import Draft, Finding, ScanReport, normalise_severity


def parse(document: dict[str, Any], *, data: bytes, path: str) -> ScanReport:
    trivy = as_object(document.get("Trivy"), path=path, field="Trivy")
    database = as_object(trivy.get("VulnerabilityDB"), path=path, field="Trivy.VulnerabilityDB")
    metadata = as_object(document.get("Metadata"), path=path, field="Metadata")
    draft = Draft(
        path=path,
        data=data,
        format="trivy",
        scanner_name="trivy",
        scanner_version=text_or_none(trivy.get("Version")),
        db_version=text_or_none(database.get("Version")),
        artifact_name=text_or_none(document.get("ArtifactName")),
    )
    draft.scanned_at = draft.time(document.get("CreatedAt"), where="CreatedAt")
    draft.db_updated = draft.time(
        database.get("UpdatedAt"), where="Trivy.VulnerabilityDB.UpdatedAt"
    )
    draft.add_repo_digests(metadata.get("RepoDigests"), where="Metadata.RepoDigests")
    draft.set_config(metadata.get("ImageID"), where="Metadata.ImageID")

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
            draft.add(
                Finding(
                    id=identifier,
                    severity=normalise_severity(item.get("Severity")),
                    package=text_or_none(item.get("PkgName")),
                    version=text_or_none(item.get("InstalledVersion")),
                    fixed_version=text_or_none(item.get("FixedVersion")),
                    title=text_or_none(item.get("Title")),
                )
            )
    return draft.finish()
