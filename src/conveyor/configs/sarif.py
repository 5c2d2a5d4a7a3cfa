"""Lint findings as SARIF 2.1.0, in the shape GitHub code scanning accepts.

- one run, tool ``conveyor`` with every rule's metadata: ``shortDescription``,
  ``fullDescription``, ``help`` (text and markdown), ``helpUri`` to docs/lint.md,
  ``defaultConfiguration.level`` and ``properties.security-severity`` (GitHub's severity);
- results with ``ruleId``/``ruleIndex``, ``level`` (error, warning, note), a message, one
  location (``artifactLocation.uri`` relative to the working directory with ``uriBaseId``
  ``%SRCROOT%``, ``region.startLine``/``startColumn``) and ``partialFingerprints`` that stay
  put when lines move (rule, file, reference and occurrence, not the line number);
- files that could not be read are ``toolExecutionNotifications`` of the invocation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from conveyor import __version__
from conveyor.configs.lint import RULES, LintReport

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
INFORMATION_URI = "https://conveyor.dev"
_LEVELS = {"error": "error", "warning": "warning", "info": "note"}
_FINGERPRINT = "conveyorFinding/v1"


def artifact_uri(file: str, *, root: Path | None = None) -> str:
    """A relative, percent-encoded POSIX URI for ``file`` (absolute paths under ``root``, the
    working directory by default, are made relative; others keep a ``file://`` URI)."""
    path = Path(file)
    if path.is_absolute():
        base = (root or Path.cwd()).resolve()
        try:
            path = path.resolve().relative_to(base)
        except ValueError:
            return path.resolve().as_uri()
    posix = PurePosixPath(path.as_posix())
    parts = [part for part in posix.parts if part not in (".", "")]
    return quote("/".join(parts), safe="/")


def _rule_descriptor(rule_id: str) -> dict[str, Any]:
    rule = RULES[rule_id]
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.help},
        "help": {
            "text": f"{rule.summary}. {rule.help}",
            "markdown": f"**{rule.summary}**\n\n{rule.help}\n\n[Documentation]({rule.help_uri})",
        },
        "helpUri": rule.help_uri,
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": {
            "tags": ["security", "supply-chain", "containers"],
            "precision": "high",
            "problem.severity": rule.severity if rule.severity != "info" else "recommendation",
            "security-severity": f"{rule.security_severity:.1f}",
        },
    }


def to_sarif(report: LintReport, *, root: Path | None = None) -> dict[str, Any]:
    rule_ids = sorted(RULES)
    index = {rule_id: position for position, rule_id in enumerate(rule_ids)}
    seen: dict[tuple[str, str, str], int] = {}
    results = []
    for finding in report.findings:
        uri = artifact_uri(finding.file, root=root)
        key = (finding.rule, uri, finding.reference)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        fingerprint = hashlib.sha256("\0".join((*key, str(occurrence))).encode("utf-8")).hexdigest()
        message = finding.message + (f" Fix: {finding.fix}" if finding.fix else "")
        results.append(
            {
                "ruleId": finding.rule,
                "ruleIndex": index[finding.rule],
                "level": _LEVELS[finding.severity],
                "message": {"text": message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
                            "region": {
                                "startLine": max(finding.line, 1),
                                "startColumn": max(finding.column, 1),
                            },
                        }
                    }
                ],
                "partialFingerprints": {_FINGERPRINT: fingerprint},
                "properties": {"reference": finding.reference},
            }
        )
    notifications = [
        {
            "level": "error",
            "message": {"text": error.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": artifact_uri(error.file, root=root),
                            "uriBaseId": "%SRCROOT%",
                        }
                    }
                }
            ],
        }
        for error in report.errors
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "conveyor",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule_descriptor(rule_id) for rule_id in rule_ids],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": not report.errors,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
