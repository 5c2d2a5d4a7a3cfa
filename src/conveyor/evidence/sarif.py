"""SARIF 2.1.0 vulnerability reports (Trivy ``-f sarif``, Grype ``-o sarif``, others).

Every result of every run is a finding unless its ``kind`` says it is not a problem
(``pass``, ``notApplicable``). The finding id is the result's rule id. Severity, first
match wins:

1. ``security-severity`` (a CVSS score) of the result's or the rule's properties, in the
   bands GitHub code scanning uses: >= 9 critical, >= 7 high, >= 4 medium, > 0 low;
2. a severity word among the rule's or result's ``tags`` (Trivy writes ``"HIGH"``);
3. the result's ``level`` or the rule's default level (SARIF's default is ``warning``):
   error → high, warning → medium, note → low, none → unknown.

Note the order: Grype's SARIF rates a CVE by its CVSS score, which may differ from the
severity the same Grype run writes in JSON.

SARIF has no package fields. The package and version come, best effort, from a single
``purls`` entry in the rule's properties (Grype) or from the ``Package:`` and ``Installed
Version:`` lines of the result message (Trivy). A result whose package stays unknown is
never merged with another. Image digests come from run ``properties`` (Trivy:
``imageID``, ``repoDigests``, ``imageName``); the scan time from
``invocations[].endTimeUtc`` (the latest). A run whose invocation says
``executionSuccessful: false`` is refused: a scan that failed is not a clean scan.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from conveyor.evidence._input import as_list, as_object, text_or_none
from conveyor.evidence.errors import EvidenceError
from conveyor.evidence.report import (
    Draft,
    Finding,
    FindingKey,
    ScanReport,
    Severity,
    is_severity_word,
    normalise_severity,
    severity_from_score,
)

_LEVELS: dict[str, Severity] = {
    "error": Severity.HIGH,
    "warning": Severity.MEDIUM,
    "note": Severity.LOW,
    "none": Severity.UNKNOWN,
}
_NOT_FINDINGS = ("pass", "notApplicable")
_PACKAGE_LINE = re.compile(r"^Package:[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)
_VERSION_LINE = re.compile(r"^Installed Version:[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)
_FIXED_LINE = re.compile(r"^Fixed Version:[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)


def _score(properties: Mapping[str, Any]) -> float | None:
    value = properties.get("security-severity")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def _severity(
    result: Mapping[str, Any], rule: Mapping[str, Any], *, path: str, where: str
) -> Severity:
    result_properties = as_object(result.get("properties"), path=path, field=f"{where}.properties")
    rule_properties = as_object(rule.get("properties"), path=path, field="rule properties")
    for properties in (result_properties, rule_properties):
        score = _score(properties)
        if score is not None:
            return severity_from_score(score)
    for properties in (rule_properties, result_properties):
        for tag in as_list(properties.get("tags"), path=path, field="properties.tags"):
            if is_severity_word(tag):
                return normalise_severity(tag)
    level = result.get("level")
    if level is None:
        configuration = as_object(
            rule.get("defaultConfiguration"), path=path, field="rule defaultConfiguration"
        )
        level = configuration.get("level", "warning")
    return _LEVELS.get(level, Severity.UNKNOWN) if isinstance(level, str) else Severity.UNKNOWN


def _purl_package(rule: Mapping[str, Any], *, path: str) -> tuple[str | None, str | None]:
    properties = as_object(rule.get("properties"), path=path, field="rule properties")
    purls = [p for p in as_list(properties.get("purls"), path=path, field="purls") if p]
    if len(purls) != 1 or not isinstance(purls[0], str) or not purls[0].startswith("pkg:"):
        return None, None
    # pkg:type/namespace/name@version?qualifiers#subpath
    body = purls[0][4:].split("#", 1)[0].split("?", 1)[0]
    body, _, version = body.partition("@")
    name = body.rstrip("/").rsplit("/", 1)[-1]
    return (unquote(name) or None, unquote(version) or None)


def _message(result: Mapping[str, Any], *, path: str, where: str) -> str:
    message = as_object(result.get("message"), path=path, field=f"{where}.message")
    text = message.get("text")
    return text if isinstance(text, str) else ""


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None


def _text(block: object) -> str | None:
    return text_or_none(block.get("text")) if isinstance(block, dict) else None


def _rules(driver: Mapping[str, Any], tool: Mapping[str, Any], *, path: str) -> list[Any]:
    rules = list(as_list(driver.get("rules"), path=path, field="tool.driver.rules"))
    for extension in as_list(tool.get("extensions"), path=path, field="tool.extensions"):
        extension = as_object(extension, path=path, field="tool.extensions[]")
        rules.extend(as_list(extension.get("rules"), path=path, field="extension rules"))
    return rules


def _findings(
    run: Mapping[str, Any], *, path: str, run_index: int
) -> Iterator[tuple[FindingKey, Finding]]:
    tool = as_object(run.get("tool"), path=path, field=f"runs[{run_index}].tool")
    driver = as_object(tool.get("driver"), path=path, field=f"runs[{run_index}].tool.driver")
    rule_list = _rules(driver, tool, path=path)
    by_id: dict[str, Mapping[str, Any]] = {}
    for candidate in rule_list:
        if isinstance(candidate, dict) and isinstance(candidate.get("id"), str):
            by_id.setdefault(candidate["id"], candidate)
    results = as_list(run.get("results"), path=path, field=f"runs[{run_index}].results")
    for n, entry in enumerate(results):
        where = f"runs[{run_index}].results[{n}]"
        result = as_object(entry, path=path, field=where)
        if result.get("kind") in _NOT_FINDINGS:
            continue
        rule_id = text_or_none(result.get("ruleId"))
        if rule_id is None:
            reference = as_object(result.get("rule"), path=path, field=f"{where}.rule")
            rule_id = text_or_none(reference.get("id"))
        index = result.get("ruleIndex")
        rule: Mapping[str, Any] = {}
        if rule_id is not None:
            rule = by_id.get(rule_id, {})
        elif isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rule_list):
            rule = as_object(rule_list[index], path=path, field=f"rules[{index}]")
            rule_id = text_or_none(rule.get("id"))
        if rule_id is None:
            raise EvidenceError(path, f"{where} names no rule (ruleId)")
        text = _message(result, path=path, where=where)
        package, version = _purl_package(rule, path=path)
        if package is None:
            package = _first(_PACKAGE_LINE, text)
            version = _first(_VERSION_LINE, text)
        finding = Finding(
            id=rule_id,
            severity=_severity(result, rule, path=path, where=where),
            package=package,
            version=version,
            fixed_version=_first(_FIXED_LINE, text),
            title=_text(rule.get("shortDescription")),
        )
        key: FindingKey = (
            (finding.id, package, version) if package is not None else (finding.id, run_index, n)
        )
        yield key, finding


def parse(document: dict[str, Any], *, data: bytes, path: str) -> ScanReport:
    runs = [
        as_object(run, path=path, field=f"runs[{i}]")
        for i, run in enumerate(as_list(document.get("runs"), path=path, field="runs"))
    ]
    driver: Mapping[str, Any] = {}
    if runs:
        tool = as_object(runs[0].get("tool"), path=path, field="runs[0].tool")
        driver = as_object(tool.get("driver"), path=path, field="runs[0].tool.driver")
    draft = Draft(
        path=path,
        data=data,
        format="sarif",
        scanner_name=text_or_none(driver.get("name")) or "unknown",
        scanner_version=text_or_none(driver.get("version"))
        or text_or_none(driver.get("semanticVersion")),
    )
    times: list[datetime] = []
    for i, run in enumerate(runs):
        for key, finding in _findings(run, path=path, run_index=i):
            draft.add(finding, key)
        properties = as_object(run.get("properties"), path=path, field=f"runs[{i}].properties")
        draft.add_repo_digests(
            properties.get("repoDigests"), where=f"runs[{i}].properties.repoDigests"
        )
        draft.set_config(properties.get("imageID"), where=f"runs[{i}].properties.imageID")
        draft.artifact_name = draft.artifact_name or text_or_none(properties.get("imageName"))
        for n, invocation in enumerate(
            as_list(run.get("invocations"), path=path, field=f"runs[{i}].invocations")
        ):
            where = f"runs[{i}].invocations[{n}]"
            invocation = as_object(invocation, path=path, field=where)
            if invocation.get("executionSuccessful") is False:
                # A run that failed says nothing about the image: never read it as clean.
                raise EvidenceError(
                    path,
                    f"runs[{i}] records a failed scanner run (executionSuccessful: false); "
                    "fix the scan and attest a complete report",
                )
            # SARIF times are UTC by definition (the field names say so).
            when = draft.time(
                invocation.get("endTimeUtc"), where=f"{where}.endTimeUtc", utc_if_naive=True
            )
            if when is not None:
                times.append(when)
    draft.scanned_at = max(times) if times else None
    return draft.finish()
