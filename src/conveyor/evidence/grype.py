"""Grype ``-o json`` reports.

Findings are ``matches[]`` (``ignoredMatches`` are not findings). The vulnerability
database is ``descriptor.db.status`` (Grype 0.88+: ``schemaVersion``, ``built``, ``from``)
or ``descriptor.db`` (older: ``schemaVersion``, ``built``): the schema version is
``db_version``, the build time ``db_updated`` (what says how fresh the data was) and
``from``, the URL the database was downloaded from, ``db_uri`` (without credentials or
query). ``source.target`` is an object for image scans (manifest digest, repo digests,
config ``imageID``) and a plain string for directory and file scans (no digest).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from conveyor.evidence._input import as_list, as_object, text_or_none
from conveyor.evidence.errors import EvidenceError
from conveyor.evidence.report import Draft, Finding, ScanReport, normalise_severity

_NOT_PROVIDED = "[not provided]"  # what Grype writes when built without version info


def _source_uri(value: object) -> str | None:
    """A download URL without userinfo, query or fragment (a mirror may carry a token)."""
    text = text_or_none(value)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
    database = as_object(descriptor.get("db"), path=path, field="descriptor.db")
    status = as_object(database.get("status"), path=path, field="descriptor.db.status")
    where_db = "descriptor.db.status" if status else "descriptor.db"
    db = status or database
    version = text_or_none(descriptor.get("version"))
    draft = Draft(
        path=path,
        data=data,
        format="grype",
        scanner_name=text_or_none(descriptor.get("name")) or "grype",
        scanner_version=None if version == _NOT_PROVIDED else version,
        db_version=text_or_none(db.get("schemaVersion")),
        db_uri=_source_uri(db.get("from")),
    )
    draft.scanned_at = draft.time(descriptor.get("timestamp"), where="descriptor.timestamp")
    draft.db_updated = draft.time(db.get("built"), where=f"{where_db}.built")

    target = source.get("target")
    if isinstance(target, dict):
        draft.artifact_name = text_or_none(target.get("userInput"))
        draft.add_digest(target.get("manifestDigest"), where="source.target.manifestDigest")
        draft.add_repo_digests(target.get("repoDigests"), where="source.target.repoDigests")
        draft.set_config(target.get("imageID"), where="source.target.imageID")
    else:
        draft.artifact_name = text_or_none(target)

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
        draft.add(
            Finding(
                id=identifier,
                severity=normalise_severity(vulnerability.get("severity")),
                package=text_or_none(artifact.get("name")),
                version=text_or_none(artifact.get("version")),
                fixed_version=_fixed(vulnerability, path=path, where=f"{where}.vulnerability"),
                title=None,
            )
        )
    return draft.finish()
