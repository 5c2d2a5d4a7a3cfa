"""Scan ingestion: every corpus report against plain-JSON counting, detection, subject checks,
hostile input."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from conveyor.errors import InputError, VerificationError
from conveyor.evidence import (
    SEVERITIES,
    EvidenceError,
    ScanReport,
    ScanSubjectMismatch,
    normalise_severity,
    parse_scan,
    parse_scan_file,
    require_scanned,
)
from conveyor.oci.digest import Digest
from tests.conftest import CORPUS

SCAN_DIR = CORPUS / "scans"
SCAN_FILES = sorted(p.name for p in SCAN_DIR.glob("*")) if SCAN_DIR.is_dir() else []

DIGEST_A = Digest.of(b"image a")
DIGEST_B = Digest.of(b"image b")
CONFIG_A = Digest.of(b"config a")
CONFIG_B = Digest.of(b"config b")


# -- independent oracles: plain json navigation, no conveyor code ----------------------------
def _band(score: float) -> str:
    return (
        "critical"
        if score >= 9
        else "high"
        if score >= 7
        else "medium"
        if score >= 4
        else "low"
        if score > 0
        else "unknown"
    )


def expected_trivy(doc: dict[str, Any]) -> Counter[str]:
    seen: dict[tuple[str, str, str], str] = {}
    for result in doc.get("Results") or []:
        for v in result.get("Vulnerabilities") or []:
            key = (v["VulnerabilityID"], v.get("PkgName"), v.get("InstalledVersion"))
            seen[key] = v["Severity"].lower()
    return Counter(seen.values())


def expected_grype(doc: dict[str, Any]) -> Counter[str]:
    seen = {}
    for m in doc["matches"]:
        key = (m["vulnerability"]["id"], m["artifact"]["name"], m["artifact"]["version"])
        seen[key] = m["vulnerability"]["severity"].lower()
    return Counter(seen.values())


def expected_snyk(doc: dict[str, Any]) -> Counter[str]:
    seen = {}
    for project in [doc, *doc.get("applications", [])]:
        for v in project["vulnerabilities"]:
            seen[(v["id"], v["packageName"], v["version"])] = v["severity"].lower()
    return Counter(seen.values())


def expected_sarif(doc: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for run in doc["runs"]:
        rules = {r["id"]: r for r in run["tool"]["driver"].get("rules", [])}
        distinct = {(res["ruleId"], res["message"]["text"]) for res in run.get("results", [])}
        for rule_id, _ in distinct:
            score = rules[rule_id].get("properties", {}).get("security-severity")
            counts[_band(float(score)) if score is not None else "unknown"] += 1
    return counts


ORACLES = {
    "trivy": expected_trivy,
    "grype": expected_grype,
    "snyk": expected_snyk,
    "sarif": expected_sarif,
}


def format_from_name(name: str) -> str:
    if name.endswith(".sarif"):
        return "sarif"
    for prefix in ("trivy", "grype", "snyk"):
        if name.startswith(prefix + "-"):
            return prefix
    raise AssertionError(f"new corpus file {name}: say which format it is in format_from_name")


def test_the_corpus_has_scan_files(corpus: Path) -> None:
    assert len(SCAN_FILES) >= 10, "expected the shared corpus' scans/ files"


@pytest.mark.parametrize("name", SCAN_FILES)
def test_corpus_counts_match_plain_json_counting(corpus: Path, name: str) -> None:
    data = (corpus / "scans" / name).read_bytes()
    kind = format_from_name(name)
    expected = ORACLES[kind](json.loads(data))
    report = parse_scan(data, path=name)
    assert report.format == kind
    assert dict(report.counts) == {s: expected.get(s, 0) for s in SEVERITIES}
    assert set(report.counts) == set(SEVERITIES)
    assert report.total == sum(expected.values()) == len(report.findings)
    assert sum(report.counts.values()) == report.total
    assert report.sha256.encoded == hashlib.sha256(data).hexdigest()
    assert report.path == name
    assert report.scanned_at is None or report.scanned_at.tzinfo is not None


@pytest.mark.parametrize("name", [n for n in SCAN_FILES if format_from_name(n) == "trivy"])
def test_trivy_metadata(corpus: Path, name: str) -> None:
    data = (corpus / "scans" / name).read_bytes()
    doc = json.loads(data)
    report = parse_scan(data, path=name)
    assert report.scanner_name == "trivy"
    assert report.scanner_version == doc["Trivy"]["Version"]
    assert report.artifact_name == doc["ArtifactName"]
    assert report.config_digest == Digest.parse(doc["Metadata"]["ImageID"])
    assert report.artifact_digests == tuple(
        Digest.parse(rd.rpartition("@")[2]) for rd in doc["Metadata"].get("RepoDigests") or []
    )
    assert report.scanned_at == datetime.fromisoformat(doc["CreatedAt"])
    ids = {
        v["VulnerabilityID"]
        for r in doc.get("Results") or []
        for v in r.get("Vulnerabilities") or []
    }
    assert set(report.ids) == ids


def test_trivy_with_and_without_severity_filter_agree(corpus: Path) -> None:
    full = parse_scan((corpus / "scans" / "trivy-alpine-39.json").read_bytes())
    filtered = parse_scan((corpus / "scans" / "trivy-alpine-39-high-critical.json").read_bytes())
    assert filtered.counts["critical"] == full.counts["critical"]
    assert filtered.counts["medium"] == 0 < full.counts["medium"]
    assert filtered.config_digest == full.config_digest


def test_grype_metadata(corpus: Path) -> None:
    data = (corpus / "scans" / "grype-image-matches.json").read_bytes()
    doc = json.loads(data)
    report = parse_scan(data)
    target = doc["source"]["target"]
    assert report.scanner_name == doc["descriptor"]["name"]
    assert report.scanned_at is None  # "timestamp": "" in the snapshot
    assert Digest.parse(target["manifestDigest"]) in report.artifact_digests
    assert report.config_digest == Digest.parse(target["imageID"])
    assert report.artifact_name == target["userInput"]
    fixed = {
        m["vulnerability"]["id"]: m["vulnerability"]["fix"]["versions"] for m in doc["matches"]
    }
    for finding in report.findings:
        assert finding.fixed_version == (", ".join(fixed[finding.id]) or None)


def test_grype_directory_scan_names_no_digest(corpus: Path) -> None:
    report = parse_scan((corpus / "scans" / "grype-empty.json").read_bytes())
    assert not report.names_digest
    assert report.total == 0
    require_scanned(report, DIGEST_A)  # nothing to compare: the caller decides


def test_sarif_metadata(corpus: Path) -> None:
    data = (corpus / "scans" / "trivy-alpine-310.sarif").read_bytes()
    doc = json.loads(data)
    report = parse_scan(data)
    driver = doc["runs"][0]["tool"]["driver"]
    assert (report.scanner_name, report.scanner_version) == (driver["name"], driver["version"])
    assert report.config_digest == Digest.parse(doc["runs"][0]["properties"]["imageID"])
    assert all(f.package and f.version for f in report.findings)
    assert {f.title for f in report.findings} == {
        r["shortDescription"]["text"] for r in driver["rules"]
    }


def test_snyk_reads_applications_too(corpus: Path) -> None:
    data = (corpus / "scans" / "snyk-container-app-vulns.json").read_bytes()
    doc = json.loads(data)
    report = parse_scan(data)
    app_ids = {v["id"] for a in doc["applications"] for v in a["vulnerabilities"]}
    assert app_ids
    assert app_ids <= set(report.ids)
    assert report.scanner_name == "snyk"
    assert not report.names_digest


# -- formats written out by hand -------------------------------------------------------------
def trivy_doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "SchemaVersion": 2,
        "CreatedAt": "2024-05-01T10:00:00.123456789+02:00",
        "ArtifactName": "registry.example/app:1",
        "ArtifactType": "container_image",
        "Metadata": {
            "ImageID": str(CONFIG_A),
            "RepoDigests": [f"registry.example/app@{DIGEST_A}"],
        },
        "Results": [
            {
                "Target": "os",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-1",
                        "PkgName": "p",
                        "InstalledVersion": "1",
                        "Severity": "Critical",
                    },
                    {
                        "VulnerabilityID": "CVE-1",
                        "PkgName": "p",
                        "InstalledVersion": "1",
                        "Severity": "HIGH",
                    },
                    {
                        "VulnerabilityID": "CVE-2",
                        "PkgName": "p",
                        "InstalledVersion": "1",
                        "Severity": "weird",
                    },
                ],
            },
            {"Target": "lock", "Vulnerabilities": None},
            {"Target": "other"},
        ],
    }
    doc.update(extra)
    return doc


def grype_doc(target: Any) -> dict[str, Any]:
    return {
        "matches": [
            {
                "vulnerability": {"id": "GHSA-x", "severity": "Negligible", "fix": {}},
                "artifact": {"name": "lib", "version": "2"},
            },
            {
                "vulnerability": {"id": "GHSA-x", "severity": "Negligible"},
                "artifact": {"name": "lib", "version": "2"},
            },
            {
                "vulnerability": {"id": "GHSA-x", "severity": "Medium"},
                "artifact": {"name": "lib", "version": "3"},
            },
        ],
        "source": {"type": "image", "target": target},
        "descriptor": {
            "name": "grype",
            "version": "0.80.0",
            "timestamp": "2024-05-01T10:00:00.7451466+02:00",
            "db": {
                "status": {
                    "schemaVersion": "v6.0.2",
                    "built": "2024-04-30T01:02:03Z",
                    "from": "https://u:secret@grype.example/db.tar.zst?checksum=sha256:00&token=t",
                }
            },
        },
    }


def dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_trivy_duplicates_count_once_at_their_worst_severity() -> None:
    report = parse_scan(dump(trivy_doc()), path="t.json")
    assert report.counts["critical"] == 1
    assert report.counts["high"] == 0
    assert report.counts["unknown"] == 1
    assert report.total == 2
    assert report.scanned_at == datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert report.artifact_digests == (DIGEST_A,)
    assert report.config_digest == CONFIG_A


def test_trivy_without_results_or_created_at() -> None:
    doc = trivy_doc()
    del doc["Results"], doc["CreatedAt"]
    report = parse_scan(dump(doc))
    assert report.total == 0
    assert report.scanned_at is None


def test_grype_shapes() -> None:
    target = {
        "userInput": "app:1",
        "imageID": str(CONFIG_A),
        "manifestDigest": str(DIGEST_A),
        "repoDigests": [f"docker.io/library/app@{DIGEST_B}"],
    }
    report = parse_scan(dump(grype_doc(target)), path="g.json")
    assert report.format == "grype"
    assert (report.counts["negligible"], report.counts["medium"], report.total) == (1, 1, 2)
    assert report.artifact_digests == (DIGEST_A, DIGEST_B)
    # Schema version, build time and source are three facts (vulns v0.2 db.version,
    # db.lastUpdate, db.uri), not one string; the source loses credentials and query.
    assert report.db_version == "v6.0.2"
    assert report.db_updated == datetime(2024, 4, 30, 1, 2, 3, tzinfo=UTC)
    assert report.db_uri == "https://grype.example/db.tar.zst"
    assert report.scanner_version == "0.80.0"
    assert report.scanned_at is not None
    assert report.scanned_at.utcoffset() is not None
    directory = parse_scan(dump(grype_doc("/src")), path="d.json")
    assert directory.artifact_name == "/src"
    assert not directory.names_digest


def sarif_doc(results: list[dict[str, Any]], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "scanner", "semanticVersion": "1.2.3", "rules": rules}},
                "results": results,
                "invocations": [
                    {"endTimeUtc": "2024-05-01T10:00:00Z"},
                    {"endTimeUtc": "2024-05-02T10:00:00Z"},
                ],
                "properties": {"repoDigests": [f"r/app@{DIGEST_A}"], "imageID": str(CONFIG_A)},
            }
        ],
    }


@pytest.mark.parametrize(
    ("rule_properties", "result_extra", "expected"),
    [
        ({"security-severity": "9.0"}, {}, "critical"),
        ({"security-severity": "8.9"}, {}, "high"),
        ({"security-severity": 7}, {}, "high"),
        ({"security-severity": "4.0"}, {}, "medium"),
        ({"security-severity": "0.1"}, {}, "low"),
        ({"security-severity": "0"}, {}, "unknown"),
        ({"security-severity": "n/a", "tags": ["security", "LOW"]}, {}, "low"),
        ({"tags": ["vulnerability", "Critical"]}, {}, "critical"),
        ({}, {"level": "error"}, "high"),
        ({}, {"level": "note"}, "low"),
        ({}, {"level": "none"}, "unknown"),
        ({}, {}, "medium"),  # SARIF's default level is "warning"
        ({}, {"properties": {"security-severity": "9.8"}}, "critical"),
    ],
)
def test_sarif_severity(
    rule_properties: dict[str, Any], result_extra: dict[str, Any], expected: str
) -> None:
    rule = {"id": "R1", "properties": rule_properties}
    result = {"ruleId": "R1", "message": {"text": "m"}, **result_extra}
    report = parse_scan(dump(sarif_doc([result], [rule])))
    assert report.findings[0].severity == expected


def test_sarif_run_facts_and_kinds() -> None:
    rules = [{"id": "R1", "properties": {"purls": ["pkg:npm/%40scope/name@1.0.0?x=y"]}}]
    results = [
        {"ruleIndex": 0, "message": {"text": "a"}},
        {"ruleId": "R1", "message": {"text": "b"}},  # same package: the same finding
        {"ruleId": "R2", "kind": "pass", "message": {"text": "fine"}},
        {"ruleId": "R3", "message": {"text": "c"}},  # no rule, no package: kept apart
        {"ruleId": "R3", "message": {"text": "d"}},
    ]
    report = parse_scan(dump(sarif_doc(results, rules)))
    assert report.total == 3
    assert report.findings[0].package == "name"
    assert report.findings[0].version == "1.0.0"
    assert report.scanner_version == "1.2.3"
    assert report.scanned_at == datetime(2024, 5, 2, 10, tzinfo=UTC)
    assert report.artifact_digests == (DIGEST_A,)
    assert report.config_digest == CONFIG_A


def test_snyk_list_of_projects() -> None:
    projects = [
        {
            "ok": False,
            "path": "app",
            "vulnerabilities": [
                {"id": "S-1", "severity": "high", "packageName": "a", "version": "1"},
                {"id": "S-1", "severity": "high", "packageName": "a", "version": "1"},
            ],
        },
        {
            "ok": True,
            "vulnerabilities": [
                {
                    "id": "S-2",
                    "severity": "low",
                    "packageName": "b",
                    "version": "1",
                    "fixedIn": ["2"],
                }
            ],
        },
    ]
    report = parse_scan(dump(projects))
    assert report.format == "snyk"
    assert (report.counts["high"], report.counts["low"], report.total) == (1, 1, 2)
    assert report.artifact_name == "app"
    assert report.findings[1].fixed_version == "2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Critical", "critical"),
        ("CRITICAL", "critical"),
        (" critical ", "critical"),
        ("Negligible", "negligible"),
        ("moderate", "medium"),
        ("UNKNOWN", "unknown"),
        ("info", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        (7, "unknown"),
    ],
)
def test_severity_normalisation(text: object, expected: str) -> None:
    assert normalise_severity(text) == expected


# -- require_scanned -------------------------------------------------------------------------
def test_require_scanned_trivy_other_digest_is_refused() -> None:
    report = parse_scan(dump(trivy_doc()), path="scan.json")
    with pytest.raises(ScanSubjectMismatch) as caught:
        require_scanned(report, DIGEST_B, config_digest=CONFIG_A)
    assert isinstance(caught.value, VerificationError)
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith("scan.json: ")
    assert DIGEST_A.short in str(caught.value)
    assert DIGEST_B.short in str(caught.value)


def test_require_scanned_trivy_matching_digest_passes() -> None:
    report = parse_scan(dump(trivy_doc()))
    assert report.names_digest
    require_scanned(report, DIGEST_A)
    require_scanned(report, DIGEST_B, related=[DIGEST_A])  # e.g. the index of that manifest


def test_require_scanned_by_config_digest_only(corpus: Path) -> None:
    report = parse_scan((corpus / "scans" / "trivy-alpine-39.json").read_bytes(), path="t.json")
    assert report.artifact_digests == ()
    assert report.config_digest is not None
    require_scanned(report, DIGEST_A, config_digest=report.config_digest)
    with pytest.raises(ScanSubjectMismatch, match="config"):
        require_scanned(report, DIGEST_A, config_digest=CONFIG_B)
    with pytest.raises(ScanSubjectMismatch, match="not compared"):
        require_scanned(report, DIGEST_A)


def test_require_scanned_grype(corpus: Path) -> None:
    data = (corpus / "scans" / "grype-image-matches.json").read_bytes()
    report = parse_scan(data, path="g.json")
    manifest = Digest.parse(json.loads(data)["source"]["target"]["manifestDigest"])
    require_scanned(report, manifest)
    with pytest.raises(ScanSubjectMismatch):
        require_scanned(report, DIGEST_B)


def test_require_scanned_grype_synthetic() -> None:
    report = parse_scan(dump(grype_doc({"manifestDigest": str(DIGEST_A)})))
    require_scanned(report, DIGEST_A)
    with pytest.raises(ScanSubjectMismatch):
        require_scanned(report, DIGEST_B, config_digest=CONFIG_A)


def test_report_without_digests_is_left_to_the_caller() -> None:
    doc = trivy_doc()
    doc["Metadata"] = {}
    report = parse_scan(dump(doc))
    assert not report.names_digest
    require_scanned(report, DIGEST_B)


# -- hostile and unknown input ---------------------------------------------------------------
HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n",
    "truncated": dump(trivy_doc())[:-20],
    "duplicate-keys": b'{"SchemaVersion": 2, "SchemaVersion": 2, "Results": []}',
    "nested-duplicate": b'{"matches": [], "source": {"target": "a", "target": "b"}}',
    "nan": b'{"SchemaVersion": 2, "Results": [], "x": NaN}',
    "infinity": b'{"SchemaVersion": 2, "Results": [], "x": -Infinity}',
    "overflow": b'{"SchemaVersion": 2, "Results": [], "x": 1e400}',
    "long-int": b'{"SchemaVersion": 2, "x": ' + b"9" * 5000 + b"}",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "invalid-utf8": b'{"SchemaVersion": 2, "ArtifactName": "\xff"}',
    "binary": bytes(range(256)),
    "trivy-schema-1": b'{"SchemaVersion": 1, "ArtifactName": "x", "Results": []}',
    "trivy-pre-schema": b'[{"Target": "x", "Vulnerabilities": null}]',
    "sarif-2.0": b'{"version": "2.0.0", "runs": []}',
    "unknown-object": b'{"hello": "world"}',
    "unknown-list": b"[1, 2]",
    "scalar": b"42",
    "xml": b"<testsuite/>",
    "results-not-list": b'{"SchemaVersion": 2, "Results": "nope"}',
    "vuln-without-id": dump(
        {"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"Severity": "HIGH"}]}]}
    ),
    "bad-repo-digest": dump(
        {"SchemaVersion": 2, "Metadata": {"RepoDigests": ["r@sha256:abc"]}, "Results": []}
    ),
    "grype-bad-match": b'{"matches": [1], "descriptor": {}}',
    "sarif-result-without-rule": dump(sarif_doc([{"message": {"text": "x"}}], [])),
    "sarif-failed-run": dump(
        {
            "version": "2.1.0",
            "runs": [
                {"tool": {"driver": {"name": "s"}}, "invocations": [{"executionSuccessful": False}]}
            ],
        }
    ),
    "snyk-error": b'{"ok": false, "error": "Could not detect supported target files", "path": "."}',
    "snyk-list-with-error": b'[{"ok": true, "vulnerabilities": []}, {"ok": false, "error": "x"}]',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_bad_json_is_one_line_evidence_error_naming_the_file(name: str) -> None:
    with pytest.raises(EvidenceError) as caught:
        parse_scan(HOSTILE[name], path=f"scans/{name}.json")
    message = str(caught.value)
    assert message.startswith(f"scans/{name}.json: ")
    assert "\n" not in message
    assert len(message) < 300
    assert isinstance(caught.value, InputError)


def test_snyk_error_output_is_not_a_clean_scan() -> None:
    with pytest.raises(EvidenceError, match="Could not detect"):
        parse_scan(HOSTILE["snyk-error"])


def test_unknown_shape_message() -> None:
    with pytest.raises(EvidenceError, match="not a Trivy, Grype, SARIF or Snyk report"):
        parse_scan(b'{"hello": "world"}')


def test_duplicate_key_and_schema_messages_say_what_is_wrong() -> None:
    with pytest.raises(EvidenceError, match="duplicate JSON key 'SchemaVersion'"):
        parse_scan(HOSTILE["duplicate-keys"])
    with pytest.raises(EvidenceError, match="SchemaVersion 1"):
        parse_scan(HOSTILE["trivy-schema-1"])
    with pytest.raises(EvidenceError, match="NaN"):
        parse_scan(HOSTILE["nan"])


def test_size_cap(tmp_path: Path) -> None:
    data = dump(trivy_doc())
    with pytest.raises(EvidenceError, match="too large"):
        parse_scan(data, path="s.json", max_bytes=len(data) - 1)
    assert parse_scan(data, max_bytes=len(data)).total == 2
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(100 * 1024 * 1024)
    with pytest.raises(EvidenceError, match="too large"):
        parse_scan_file(big)


def test_utf8_bom_and_utf16_are_read() -> None:
    data = dump(trivy_doc())
    assert parse_scan(b"\xef\xbb\xbf" + data).total == 2
    assert parse_scan(json.dumps(trivy_doc()).encode("utf-16")).total == 2


def test_parse_scan_file(tmp_path: Path) -> None:
    path = tmp_path / "scan.json"
    path.write_bytes(dump(trivy_doc()))
    report = parse_scan_file(path)
    assert isinstance(report, ScanReport)
    assert report.path == str(path)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_evidence_error(data: bytes) -> None:
    message = "fuzz.json: (parsed)"
    try:
        parse_scan(data, path="fuzz.json")
    except EvidenceError as exc:
        message = str(exc)
    assert message.startswith("fuzz.json: ")
    assert "\n" not in message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=15,
)
shape_keys = st.sampled_from(
    [
        "SchemaVersion",
        "Results",
        "Metadata",
        "matches",
        "descriptor",
        "source",
        "runs",
        "version",
        "vulnerabilities",
        "ok",
        "applications",
        "Trivy",
        "Vulnerabilities",
        "tool",
    ]
)


@given(st.dictionaries(shape_keys, json_values | st.just(2) | st.just("2.1.0"), max_size=5))
@settings(max_examples=300, deadline=None)
def test_random_report_shapes_raise_only_evidence_error(doc: dict[str, Any]) -> None:
    try:
        report = parse_scan(dump(doc), path="fuzz.json")
    except EvidenceError:
        return
    assert sum(report.counts.values()) == report.total


# -- issue 9 #11: unparseable severities and scan times ---------------------------------------
@pytest.mark.parametrize("severity", [7.5, None, "CRİTICAL", "СRITICAL", "", "critical!", True])
def test_unparseable_severities_are_unknown_findings(severity: object) -> None:
    doc = trivy_doc()
    for vulnerability in doc["Results"][0]["Vulnerabilities"][:2]:  # both CVE-1 entries
        vulnerability["Severity"] = severity
    report = parse_scan(dump(doc), path="t.json")
    cve1 = [f for f in report.findings if f.id == "CVE-1"]
    assert [f.severity for f in cve1] == ["unknown"]  # a finding, never dropped
    assert report.total == 2


def test_a_missing_severity_is_an_unknown_finding() -> None:
    doc = trivy_doc()
    for vulnerability in doc["Results"][0]["Vulnerabilities"]:
        del vulnerability["Severity"]
    report = parse_scan(dump(doc), path="t.json")
    assert report.counts["unknown"] == 2
    assert report.total == 2


@pytest.mark.parametrize(
    "created",
    [
        "yesterday",
        "2024-13-45T00:00:00Z",
        "0000-00-00T00:00:00Z",
        "0001-01-01T00:00:00Z",  # Go's zero time.Time
        "1999-12-31T23:59:59Z",
        "2024-05-01T10:00:00",  # no zone
        20240501,
        {"at": "2024-05-01T10:00:00Z"},
    ],
)
def test_an_unusable_scan_time_is_refused_not_replaced(created: object) -> None:
    # A garbage time read as "absent" was replaced by the record time, so a stale report
    # passed max_age.
    doc = trivy_doc(CreatedAt=created)
    with pytest.raises(EvidenceError, match="CreatedAt") as caught:
        parse_scan(dump(doc), path="t.json")
    assert "\n" not in str(caught.value)


def test_unusable_times_are_refused_in_every_format() -> None:
    grype = grype_doc({"userInput": "app"})
    grype["descriptor"]["timestamp"] = "0001-01-01T00:00:00Z"
    with pytest.raises(EvidenceError, match=r"descriptor\.timestamp"):
        parse_scan(dump(grype), path="g.json")
    grype = grype_doc({"userInput": "app"})
    grype["descriptor"]["db"]["status"]["built"] = "soon"
    with pytest.raises(EvidenceError, match=r"descriptor\.db\.status\.built"):
        parse_scan(dump(grype), path="g.json")
    sarif = sarif_doc([], [])
    sarif["runs"][0]["invocations"][0]["endTimeUtc"] = "garbage"
    with pytest.raises(EvidenceError, match="endTimeUtc"):
        parse_scan(dump(sarif), path="s.sarif")


def test_an_absent_or_empty_scan_time_is_none() -> None:
    assert parse_scan(dump(trivy_doc(CreatedAt="")), path="t.json").scanned_at is None
    sarif = sarif_doc([], [])
    sarif["runs"][0]["invocations"] = [{"endTimeUtc": "2024-05-02T10:00:00"}]  # UTC by name
    assert parse_scan(dump(sarif)).scanned_at == datetime(2024, 5, 2, 10, tzinfo=UTC)


# -- review #7: the model, the dispatcher and the parsers do not import each other -----------
def test_parsers_import_only_the_model_and_the_input_helpers() -> None:
    import ast
    import inspect

    from conveyor.evidence import grype, report, sarif, scan, snyk, trivy

    allowed = {
        "conveyor.evidence._input",
        "conveyor.evidence.errors",
        "conveyor.evidence.report",
    }
    for module in (trivy, grype, sarif, snyk):
        tree = ast.parse(inspect.getsource(module))
        ours = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("conveyor")
        }
        assert ours <= allowed, (module.__name__, ours - allowed)
    model = ast.parse(inspect.getsource(report))
    imported = {n.module for n in ast.walk(model) if isinstance(n, ast.ImportFrom)}
    assert not imported & {
        f"conveyor.evidence.{m}" for m in ("scan", "trivy", "grype", "sarif", "snyk")
    }
    dispatcher = ast.parse(inspect.getsource(scan))
    local = [
        node
        for function in ast.walk(dispatcher)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert local == [], "no function-local imports in the dispatcher"


def test_one_severity_vocabulary() -> None:
    from conveyor import severity
    from conveyor.evidence import Severity as EvidenceSeverity
    from conveyor.policy.config import Severity as PolicySeverity

    assert EvidenceSeverity is PolicySeverity is severity.Severity
    assert [s.value for s in SEVERITIES] == [
        "critical",
        "high",
        "medium",
        "low",
        "negligible",
        "unknown",
    ]
