"""Our statements read by a checker nobody here wrote: the official in-toto attestation
protobuf bindings (PyPI ``in-toto-attestation``), issue 10 #1 and #2.

Statements are recorded through ``conveyor.service`` (real keys, an OCI layout image, the
SQLite ledger), read back from the ledger and parsed with ``google.protobuf.json_format``
into the bindings' messages: Statement (and its ``validate()``), SLSA provenance v1,
test-result v0 and ResourceDescriptor (``validate()``).

The PyPI bindings (0.9.3) have no vulns message. The spec repository's
``protos/in_toto_attestation/predicates/vulns/v0.2/vulns.proto`` is declared here field for
field with protobuf's descriptor API, so the same JSON parser checks our predicate against
it; a second check walks the spec's prose field rules (spec/predicates/vulns_02.md). Note
the proto names two fields differently from the prose (``database``/``scan_metadata`` vs
``db``/``metadata``): the proto-named parse ignores unknown fields (as the official
bindings' users do), the prose-named one is strict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("in_toto_attestation", reason="dev extra in-toto-attestation")

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2
from in_toto_attestation.v1 import resource_descriptor_pb2, statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement as BindingStatement

from conveyor import service
from conveyor.attest import decode_envelope
from conveyor.ledger.sql import open_ledger
from tests.conftest import CORPUS
from tests.support.images import build_image

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = """\
version: 1
identities:
  ci: {key: keys/ci.pub, roles: [builder, tester, scanner]}
"""
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


# -- the vulns v0.2 message, declared from the spec repository's vulns.proto ---------------
def _vulns_message(*, spec_names: bool) -> Any:
    """``Vulns`` as vulns.proto declares it; with ``spec_names`` the two fields the prose
    names differently get the prose's JSON names (``db``, ``metadata``)."""
    F = descriptor_pb2.FieldDescriptorProto
    suffix = "prose" if spec_names else "proto"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"conveyor_test_vulns_{suffix}.proto",
        package=f"conveyor_test.vulns_{suffix}",
        dependency=["google/protobuf/struct.proto", "google/protobuf/timestamp.proto"],
        syntax="proto3",
    )

    def message(name: str, *fields: tuple[str, int, int, int, str | None, str | None]) -> Any:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name, json_name in fields:
            entry = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                entry.type_name = type_name
            if json_name:
                entry.json_name = json_name
        return proto

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg, text = F.TYPE_MESSAGE, F.TYPE_STRING
    pkg = f".conveyor_test.vulns_{suffix}"
    message(
        "Vulns",
        ("scanner", 1, msg, one, f"{pkg}.Scanner", None),
        ("scan_metadata", 2, msg, one, f"{pkg}.ScanMetadata", "metadata" if spec_names else None),
    )
    message(
        "Scanner",
        ("uri", 1, text, one, None, None),
        ("version", 2, text, one, None, None),
        ("database", 3, msg, one, f"{pkg}.VulnDatabase", "db" if spec_names else None),
        ("result", 4, msg, many, f"{pkg}.Result", None),
    )
    message(
        "VulnDatabase",
        ("uri", 1, text, one, None, None),
        ("version", 2, text, one, None, None),
        ("last_update", 3, msg, one, ".google.protobuf.Timestamp", None),
    )
    result = message(
        "Result",
        ("id", 1, text, one, None, None),
        ("severity", 2, msg, many, f"{pkg}.Result.Severity", None),
        ("annotations", 3, msg, many, ".google.protobuf.Struct", None),
    )
    severity = result.nested_type.add(name="Severity")
    severity.field.add(name="method", number=1, type=text, label=one)
    severity.field.add(name="score", number=2, type=text, label=one)
    message(
        "ScanMetadata",
        ("scan_started_on", 1, msg, one, ".google.protobuf.Timestamp", None),
        ("scan_finished_on", 2, msg, one, ".google.protobuf.Timestamp", None),
    )
    pool = descriptor_pool.DescriptorPool()
    for dependency in ("google/protobuf/struct.proto", "google/protobuf/timestamp.proto"):
        found = descriptor_pool.Default().FindFileByName(dependency)
        dep = descriptor_pb2.FileDescriptorProto()
        found.CopyToProto(dep)
        pool.Add(dep)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg[1:]}.Vulns"))


def check_vulns_field_rules(predicate: dict[str, Any]) -> None:
    """The REQUIRED fields and types of spec/predicates/vulns_02.md."""
    scanner = predicate["scanner"]
    assert isinstance(scanner["uri"], str)
    assert scanner["uri"]
    assert isinstance(scanner.get("version", ""), str)
    db = scanner["db"]
    assert _RFC3339_UTC.fullmatch(db["lastUpdate"]), "scanner.db.lastUpdate is required"
    for optional in ("uri", "version"):
        assert isinstance(db.get(optional, ""), str)
    assert isinstance(scanner["result"], list)
    for entry in scanner["result"]:
        assert isinstance(entry["id"], str)
        assert entry["id"]
        assert entry["severity"], "scanner.result[*].severity is required"
        for rating in entry["severity"]:
            assert isinstance(rating["method"], str)
            assert isinstance(rating["score"], str)
        annotations = entry.get("annotations", [])
        assert isinstance(annotations, list), "annotations is a list of maps"
        assert all(isinstance(item, dict) for item in annotations)
    for when in ("scanStartedOn", "scanFinishedOn"):
        assert _RFC3339_UTC.fullmatch(predicate["metadata"][when])


# -- statements recorded by conveyor --------------------------------------------------------
@dataclass
class Recorded:
    statements: dict[str, dict[str, Any]]  # kind -> statement
    notes: dict[str, tuple[str, ...]]  # what each recording said


def _statements(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    ledger = open_ledger(f"sqlite:///{root / '.conveyor' / 'conveyor.db'}")
    try:
        for entry in ledger.entries():
            yield entry.kind, json.loads(decode_envelope(entry.envelope).payload)
    finally:
        ledger.close()


def _trivy_with_findings() -> dict[str, Any]:
    return {
        "SchemaVersion": 2,
        "CreatedAt": "2026-11-30T10:00:00Z",
        "ArtifactName": "example/app",
        "Trivy": {"Version": "0.57.0"},
        "Results": [
            {
                "Target": "app",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-2024-1",
                        "PkgName": "openssl",
                        "InstalledVersion": "3.0.1",
                        "FixedVersion": "3.0.2",
                        "Severity": "HIGH",
                    },
                    {"VulnerabilityID": "CVE-2024-2", "PkgName": "zlib", "Severity": "LOW"},
                ],
            }
        ],
    }


def _grype_with_database() -> dict[str, Any]:
    return {
        "matches": [
            {
                "vulnerability": {"id": "GHSA-aaaa", "severity": "Critical"},
                "artifact": {"name": "lib", "version": "1.0"},
            }
        ],
        "source": {"type": "directory", "target": "/src"},
        "descriptor": {
            "name": "grype",
            "version": "0.84.0",
            "timestamp": "2026-11-30T10:00:00Z",
            "db": {
                "status": {
                    "schemaVersion": "v6.0.2",
                    "built": "2026-11-29T04:00:00Z",
                    "from": "https://grype.anchore.io/databases/v6/x.tar.zst?checksum=sha256:00",
                }
            },
        },
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    root = tmp_path_factory.mktemp("conformance")
    service.generate_keys("ci", out_dir=root / "keys")
    config = root / "conveyor.yaml"
    config.write_text(CONFIG)
    image = build_image(root / "build", tag="v1", labels={"git.commit": COMMIT})
    ref = f"oci:{image.layout}@{image.digest}"
    key = str(root / "keys" / "ci.key")
    service.record_build(ref, commit=COMMIT, run_id="7", key=key, config_path=config)
    junit = root / "junit.xml"
    junit.write_text(
        '<testsuite name="unit"><testcase name="a"/><testcase name="b"><failure/></testcase>'
        "</testsuite>"
    )
    notes = {"tests": service.attest_tests(ref, [junit], key=key, config_path=config).notes}
    empty = root / "empty.xml"
    empty.write_text('<testsuites tests="0"/>')
    notes["empty"] = service.attest_tests(ref, [empty], key=key, config_path=config).notes
    lying = root / "lying.xml"
    lying.write_text('<testsuite name="s" tests="2" failures="2"><testcase name="a"/></testsuite>')
    notes["lying"] = service.attest_tests(ref, [lying], key=key, config_path=config).notes
    for name, document in (("trivy", _trivy_with_findings()), ("grype", _grype_with_database())):
        path = root / f"{name}.json"
        path.write_text(json.dumps(document))
        notes[name] = service.attest_scan(ref, path, key=key, config_path=config).notes
    statements: dict[str, dict[str, Any]] = {}
    tests = iter(("tests", "tests-empty", "tests-lying"))
    for kind, statement in _statements(root):
        if kind == "scan":
            kind = f"scan-{statement['predicate']['scanner']['uri'].rsplit('/', 1)[-1]}"
        elif kind == "tests":
            kind = next(tests)
        statements[kind] = statement
    return Recorded(statements, notes)


def test_zero_tests_are_recorded_as_failed_and_said(recorded: Recorded) -> None:
    # issue 9 #12: a report with zero testcases was recorded as PASSED.
    predicate = recorded.statements["tests-empty"]["predicate"]
    assert predicate["result"] == "FAILED"
    assert any("no test cases" in note for note in recorded.notes["empty"])


def test_suite_counts_that_disagree_are_recorded_at_their_worst(recorded: Recorded) -> None:
    predicate = recorded.statements["tests-lying"]["predicate"]
    assert predicate["result"] == "FAILED"
    assert (len(predicate["passedTests"]), len(predicate["failedTests"])) == (0, 2)
    assert any("failures=2" in note for note in recorded.notes["lying"])


def test_scan_notes_say_which_report_lacked_a_database_time(recorded: Recorded) -> None:
    assert any("no vulnerability database time" in n for n in recorded.notes["trivy"])
    assert not any("database time" in n for n in recorded.notes["grype"])


def _statement_binding(statement: dict[str, Any]) -> None:
    pb = json_format.ParseDict(statement, statement_pb2.Statement())
    BindingStatement.copy_from_pb(pb).validate()


@pytest.mark.parametrize(
    "kind", ["build", "tests", "tests-empty", "tests-lying", "scan-trivy", "scan-grype"]
)
def test_every_statement_parses_and_validates_as_a_statement(recorded: Recorded, kind: str) -> None:
    _statement_binding(recorded.statements[kind])


def test_provenance_parses_strictly_as_slsa_v1(recorded: Recorded) -> None:
    predicate = recorded.statements["build"]["predicate"]
    json_format.ParseDict(predicate, provenance_pb2.Provenance())  # unknown fields refused


def test_test_result_parses_as_the_official_message(recorded: Recorded) -> None:
    predicate = recorded.statements["tests"]["predicate"]
    message = json_format.ParseDict(
        predicate, test_result_pb2.TestResult(), ignore_unknown_fields=True
    )
    # The only field the spec does not define is conveyor's namespaced extension.
    assert set(predicate) - {f.json_name for f in message.DESCRIPTOR.fields} == {"conveyor"}
    assert (message.result, list(message.passed_tests)) == ("FAILED", ["unit::a"])
    assert list(message.failed_tests) == ["unit::b"]
    for descriptor in message.configuration:
        ResourceDescriptor.copy_from_pb(descriptor).validate()
    # issue 10 #2: the JUnit report is not the test configuration; it has its own field.
    names = [d.name for d in message.configuration]
    assert not any(name.endswith("junit.xml") for name in names)
    (report,) = predicate["conveyor"]["reports"]
    rd = json_format.ParseDict(report, resource_descriptor_pb2.ResourceDescriptor())
    ResourceDescriptor.copy_from_pb(rd).validate()
    assert rd.name.endswith("junit.xml")


@pytest.mark.parametrize("kind", ["scan-trivy", "scan-grype"])
def test_vulns_parse_as_the_spec_repository_proto(recorded: Recorded, kind: str) -> None:
    predicate = recorded.statements[kind]["predicate"]
    assert predicate["scanner"]["result"], "the fixture has findings"
    message = json_format.ParseDict(
        predicate, _vulns_message(spec_names=False)(), ignore_unknown_fields=True
    )
    first = message.scanner.result[0]
    assert first.annotations[0]["package"]  # a list of maps, issue 10 #1
    strict = json_format.ParseDict(
        {k: v for k, v in predicate.items() if k != "conveyor"}, _vulns_message(spec_names=True)()
    )
    assert strict.scanner.database.last_update.seconds > 0
    check_vulns_field_rules(predicate)


def test_grype_database_time_and_source_are_written(recorded: Recorded) -> None:
    predicate = recorded.statements["scan-grype"]["predicate"]
    assert predicate["scanner"]["db"] == {
        "uri": "https://grype.anchore.io/databases/v6/x.tar.zst",
        "version": "v6.0.2",
        "lastUpdate": "2026-11-29T04:00:00Z",
    }
    assert "conveyor" not in predicate


def test_trivy_without_database_time_says_what_stands_in(recorded: Recorded) -> None:
    predicate = recorded.statements["scan-trivy"]["predicate"]
    db, finished = predicate["scanner"]["db"], predicate["metadata"]["scanFinishedOn"]
    assert db["lastUpdate"] == finished == "2026-11-30T10:00:00Z"
    assert predicate["conveyor"] == {"dbLastUpdate": "metadata.scanFinishedOn"}


def test_the_checker_refuses_what_issue_10_found() -> None:
    """The checks above can fail: yesterday's shapes are refused by the same checker."""
    old = {
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy",
            "db": {},
            "result": [
                {
                    "id": "CVE-1",
                    "severity": [{"method": "trivy", "score": "HIGH"}],
                    "annotations": {"package": "openssl"},
                }
            ],
        },
        "metadata": {
            "scanStartedOn": "2026-01-01T00:00:00Z",
            "scanFinishedOn": "2026-01-01T00:00:00Z",
        },
    }
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(old, _vulns_message(spec_names=False)(), ignore_unknown_fields=True)
    old["scanner"]["result"][0]["annotations"] = [{"package": "openssl"}]
    with pytest.raises(KeyError):
        check_vulns_field_rules(old)  # no db.lastUpdate


@pytest.mark.skipif(not (CORPUS / "scans").is_dir(), reason="needs ../shared/corpus/scans")
@pytest.mark.parametrize(
    "name",
    ["grype-image.sarif", "trivy-alpine-310.sarif", "trivy-sl-micro-rancher-5.4-no-vulns.json"],
)
def test_corpus_scans_make_conforming_predicates(name: str) -> None:
    # The attest builder fed from real reports, as the scan recording maps them.
    from conveyor.attest import FindingInput, ScanInput, vulnerability_scan
    from conveyor.evidence import parse_scan_file

    report = parse_scan_file(CORPUS / "scans" / name)
    at = report.scanned_at or datetime.fromisoformat("2026-01-01T00:00:00+00:00")
    predicate = vulnerability_scan(
        ScanInput(
            scanner_name=report.scanner_name,
            scanner_version=report.scanner_version,
            db_version=report.db_version,
            db_updated=report.db_updated,
            db_uri=report.db_uri,
            started=at,
            finished=at,
            findings=[
                FindingInput(f.id, f.severity, f.package, f.version, f.fixed_version)
                for f in report.findings
            ],
        )
    )
    json_format.ParseDict(predicate, _vulns_message(spec_names=False)(), ignore_unknown_fields=True)
    check_vulns_field_rules(predicate)
