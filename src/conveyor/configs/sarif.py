"""Lint findings as SARIF 2.1.0, in the shape GitHub code scanning accepts.

- one run, tool ``conveyor`` with every rule's metadata: ``shortDescription``,
  ``fullDescription``, ``help`` (text and markdown), ``helpUri`` to docs/lint.md,
  ``defaultConfiguration.level`` and ``properties.security-severity`` (GitHub's severity);
- results with ``ruleId``/``ruleIndex``, ``level`` (error, warning, note), a message, one
  location (``artifactLocation.uri`` relative to the repository root — the git top level,
  else the working directory — with ``uriBaseId`` ``%SRCROOT%``, which the run's
  ``originalUriBaseIds`` maps to that folder; never ``..``: a file outside the root gets an
  absolute ``file://`` URI; ``region.startLine``/``startColumn``) and ``partialFingerprints``
  that stay put when lines move (rule, file, reference and occurrence, not the line number);
- files that could not be read are ``toolExecutionNotifications`` of the invocation.
"""

from __future__ import annotations

import hashlib
import os
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
SRCROOT = "%SRCROOT%"


def repository_root(start: Path | None = None) -> Path:
    """The git top level at or above ``start`` (the working directory), else ``start``.

    Code scanning maps a result's URI onto the repository checkout, so URIs are relative to
    its top. Found by looking for ``.git`` (a folder, or a file in a worktree or submodule),
    as git itself does, so no git binary is needed where lint runs (a container step)."""
    here = Path(os.path.abspath(start or Path.cwd()))
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def artifact_uri(file: str, *, root: Path | None = None) -> str:
    """A percent-encoded POSIX URI for ``file`` relative to ``root`` (the repository root by
    default), never climbing out of it with ``..``; a file outside ``root`` gets an absolute
    ``file://`` URI instead (and no ``uriBaseId``)."""
    base = Path(os.path.abspath(root or repository_root()))
    # Lexically first ('..' folded, symlinks kept: a link inside the checkout is reported
    # where it is), then with symlinks resolved on both sides.
    path = Path(os.path.abspath(file))
    for candidate, anchor in ((path, base), (path.resolve(), base.resolve())):
        try:
            relative = candidate.relative_to(anchor)
        except ValueError:
            continue
        parts = [part for part in PurePosixPath(relative.as_posix()).parts if part != "."]
        return quote("/".join(parts), safe="/")
    return path.as_uri()


def _artifact_location(file: str, root: Path) -> dict[str, str]:
    uri = artifact_uri(file, root=root)
    if uri.startswith("file:"):
        return {"uri": uri}
    return {"uri": uri, "uriBaseId": SRCROOT}


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
    """``root``: what URIs are relative to; the repository root (git top level, else the
    working directory) by default."""
    root = Path(os.path.abspath(root or repository_root()))
    rule_ids = sorted(RULES)
    index = {rule_id: position for position, rule_id in enumerate(rule_ids)}
    seen: dict[tuple[str, str, str], int] = {}
    results = []
    for finding in report.findings:
        location = _artifact_location(finding.file, root)
        uri = location["uri"]
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
                            "artifactLocation": location,
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
                {"physicalLocation": {"artifactLocation": _artifact_location(error.file, root)}}
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
                "originalUriBaseIds": {SRCROOT: {"uri": root.as_uri().rstrip("/") + "/"}},
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
