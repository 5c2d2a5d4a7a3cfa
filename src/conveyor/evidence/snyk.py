"""Snyk ``snyk test --json`` / ``snyk container test --json`` reports.

A report is one object, or a list of them (``--all-projects``). Findings are
``vulnerabilities[]`` of the report and of every ``applications[]`` entry (the language
packages found inside a container image). Snyk lists a vulnerability once per dependency
path; those repeats are one finding. Snyk reports carry no image digest, scan time or
scanner version.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from conveyor.evidence._input import as_list, as_object, text_or_none
from conveyor.evidence.errors import EvidenceError
from conveyor.evidence.report import (
    Draft,
    Finding,
    FindingKey,
    ScanReport,
    finding_key,
    normalise_severity,
)


def _projects(document: object, *, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    tops = document if isinstance(document, list) else [document]
    for p, top in enumerate(tops):
        where = f"[{p}]" if isinstance(document, list) else ""
        project = as_object(top, path=path, field=where or "report")
        yield where, project
        for a, app in enumerate(
            as_list(project.get("applications"), path=path, field=f"{where}applications")
        ):
            name = f"{where}applications[{a}]"
            yield name + ".", as_object(app, path=path, field=name)


def _findings(
    project: Mapping[str, Any], *, path: str, where: str
) -> Iterator[tuple[FindingKey, Finding]]:
    entries = project.get("vulnerabilities")
    if not isinstance(entries, list):
        # `snyk … --json` writes {"ok": false, "error": "…"} when the test did not run: that
        # is not "no vulnerabilities".
        error = text_or_none(project.get("error"))
        said = f" (Snyk said: {error[:120]})" if error else ""
        raise EvidenceError(
            path, f"Snyk project {where or 'report'} has no vulnerabilities list{said}"
        )
    for v, entry in enumerate(entries):
        field = f"{where}vulnerabilities[{v}]"
        item = as_object(entry, path=path, field=field)
        identifier = text_or_none(item.get("id"))
        if identifier is None:
            raise EvidenceError(path, f"{field} has no id")
        fixed = [
            text
            for text in (
                text_or_none(x)
                for x in as_list(item.get("fixedIn"), path=path, field=f"{field}.fixedIn")
            )
            if text
        ]
        finding = Finding(
            id=identifier,
            severity=normalise_severity(item.get("severity")),
            package=text_or_none(item.get("packageName")),
            version=text_or_none(item.get("version")),
            fixed_version=", ".join(fixed) or None,
            title=text_or_none(item.get("title")),
        )
        yield finding_key(finding), finding


def parse(document: Any, *, data: bytes, path: str) -> ScanReport:
    draft = Draft(path=path, data=data, format="snyk", scanner_name="snyk")
    first: Mapping[str, Any] | None = None
    for where, project in _projects(document, path=path):
        if first is None:
            first = project
        for key, finding in _findings(project, path=path, where=where):
            draft.add(finding, key)
    first = first or {}
    draft.artifact_name = text_or_none(first.get("path")) or text_or_none(first.get("projectName"))
    return draft.finish()
