"""in-toto Statements, open_attestation's order of checks, and the predicate builders/readers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, strategies as st

from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    PROMOTION_V1,
    SLSA_PROVENANCE_V1,
    SMOKE_V1,
    STATEMENT_V01,
    STATEMENT_V1,
    TEST_RESULT_V01,
    VULNS_V02,
    FindingInput,
    GateRecord,
    PayloadTypeError,
    PredicateTypeError,
    ScanInput,
    SignatureError,
    Signer,
    StatementError,
    SubjectMismatch,
    approval,
    ci_configuration,
    generate_key,
    make_statement,
    open_attestation,
    parse_statement,
    promotion,
    read_approval,
    read_promotion,
    read_provenance,
    read_smoke,
    read_test_result,
    read_vulnerability_scan,
    require_subject,
    sign_envelope,
    slsa_provenance,
    smoke,
    test_result,
    vulnerability_scan,
)
from conveyor.errors import InputError
from conveyor.oci.digest import Digest

DIGEST = Digest.of(b"the artifact")
OTHER = Digest.of(b"another artifact")
COMMIT = "4d329c75e7ec1725f7c9ce917a8799d408d06be3"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(generate_key())


def _statement(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_type": STATEMENT_V1,
        "subject": [{"name": "repo", "digest": {"sha256": DIGEST.encoded}}],
        "predicateType": APPROVAL_V1,
        "predicate": {"environment": "prod"},
    }
    document.update(overrides)
    return document


def _deep(levels: int) -> dict[str, Any]:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return {"a": value}


# --- make / parse ---------------------------------------------------------------------------


def test_make_statement_is_canonical_json() -> None:
    payload = make_statement("registry/app", DIGEST, APPROVAL_V1, {"b": 1, "a": "ü"})
    document = json.loads(payload)
    assert document == {
        "_type": STATEMENT_V1,
        "subject": [{"name": "registry/app", "digest": {"sha256": DIGEST.encoded}}],
        "predicateType": APPROVAL_V1,
        "predicate": {"a": "ü", "b": 1},
    }
    assert (
        payload
        == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert "ü".encode() in payload


def test_make_statement_refuses_nan_and_non_json() -> None:
    with pytest.raises(InputError, match="JSON"):
        make_statement("r", DIGEST, APPROVAL_V1, {"score": float("nan")})
    with pytest.raises(InputError, match="JSON"):
        make_statement("r", DIGEST, APPROVAL_V1, {"when": datetime.now(UTC)})


@given(
    name=st.text(max_size=30),
    predicate=st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=5,
    ),
)
def test_make_parse_roundtrip(name: str, predicate: dict[str, Any]) -> None:
    statement = parse_statement(make_statement(name, DIGEST, VULNS_V02, predicate))
    assert statement.predicate == predicate
    assert statement.subject[0].name == name
    assert statement.predicate_type == VULNS_V02
    assert not statement.legacy
    require_subject(statement, DIGEST)


def test_parse_v01_sets_the_legacy_flag() -> None:
    statement = parse_statement(json.dumps(_statement(_type=STATEMENT_V01)).encode())
    assert statement.legacy
    assert statement.type == STATEMENT_V01


def test_missing_predicate_is_empty() -> None:
    document = _statement()
    del document["predicate"]
    assert parse_statement(json.dumps(document).encode()).predicate == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"_type":"' + STATEMENT_V1.encode() + b'","_type":"x"}', "duplicate"),
        (json.dumps(_statement()).encode()[:-10], "not valid JSON"),
        (json.dumps(_statement()).replace('"prod"', "NaN").encode(), "NaN"),
        (json.dumps(_statement()).replace('"prod"', "Infinity").encode(), "Infinity"),
        (json.dumps(_statement()).replace('"prod"', '"\\udc00"').encode(), "surrogate"),
        (json.dumps(_statement(predicate=_deep(100))).encode(), "nested"),
        (json.dumps(_statement(_type="link")).encode(), "not an in-toto Statement"),
        (json.dumps(_statement(_type=None)).encode(), "not an in-toto Statement"),
        (json.dumps(_statement(subject=[])).encode(), "no subject"),
        (json.dumps(_statement(subject={"name": "x"})).encode(), "no subject"),
        (json.dumps(_statement(subject=["x"])).encode(), "not a JSON object"),
        (json.dumps(_statement(subject=[{"name": "x"}])).encode(), "no digest"),
        (json.dumps(_statement(subject=[{"name": "x", "digest": {}}])).encode(), "no digest"),
        (json.dumps(_statement(subject=[{"digest": {"sha256": 1}}])).encode(), "not a string"),
        (json.dumps(_statement(subject=[{"name": 5, "digest": {"a": "b"}}])).encode(), "name"),
        (json.dumps(_statement(predicateType="")).encode(), "predicateType"),
        (json.dumps(_statement(predicate=[1])).encode(), "not a JSON object"),
        (b"[]", "not a JSON object"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_hostile_statements(payload: bytes, message: str) -> None:
    with pytest.raises(StatementError, match=message) as caught:
        parse_statement(payload)
    assert caught.value.exit_code == 1


def test_duplicate_digest_key_inside_subject() -> None:
    payload = json.dumps(_statement()).replace(
        '"sha256": "', f'"sha256": "{OTHER.encoded}", "sha256": "'
    )
    with pytest.raises(StatementError, match="duplicate"):
        parse_statement(payload.encode())


def test_require_subject_is_exact() -> None:
    statement = parse_statement(json.dumps(_statement()).encode())
    require_subject(statement, DIGEST)
    with pytest.raises(SubjectMismatch, match=str(OTHER)):
        require_subject(statement, OTHER)
    upper = _statement(subject=[{"digest": {"sha256": DIGEST.encoded.upper()}}])
    with pytest.raises(SubjectMismatch):
        require_subject(parse_statement(json.dumps(upper).encode()), DIGEST)
    other_algorithm = _statement(subject=[{"digest": {"SHA256": DIGEST.encoded}}])
    with pytest.raises(SubjectMismatch):
        require_subject(parse_statement(json.dumps(other_algorithm).encode()), DIGEST)
    many = _statement(
        subject=[
            {"digest": {"sha256": OTHER.encoded}},
            {"name": "b", "digest": {"sha256": DIGEST.encoded}},
        ]
    )
    many_statement = parse_statement(json.dumps(many).encode())
    require_subject(many_statement, DIGEST)
    assert many_statement.names(DIGEST) == ["b"]


# --- open_attestation: order and outcomes ----------------------------------------------------


def _envelope(signer: Signer, payload: bytes, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    return sign_envelope(payload, payload_type, [signer])


def test_open_attestation_happy_path(signer: Signer) -> None:
    envelope = _envelope(
        signer, make_statement("repo", DIGEST, APPROVAL_V1, approval(environment="prod"))
    )
    opened = open_attestation(
        envelope, [signer.verifier()], digest=DIGEST, predicate_types={APPROVAL_V1}
    )
    assert opened.signer_keyids == [signer.keyid]
    assert opened.statement.predicate == {"environment": "prod"}
    assert opened.envelope_digest == Digest.of(envelope)


def test_open_attestation_wrong_subject(signer: Signer) -> None:
    envelope = _envelope(signer, make_statement("repo", OTHER, APPROVAL_V1, {}))
    with pytest.raises(SubjectMismatch) as caught:
        open_attestation(envelope, [signer.verifier()], digest=DIGEST)
    assert caught.value.exit_code == 1


def test_open_attestation_wrong_predicate_type(signer: Signer) -> None:
    envelope = _envelope(signer, make_statement("repo", DIGEST, SMOKE_V1, {}))
    with pytest.raises(PredicateTypeError, match="smoke"):
        open_attestation(
            envelope, [signer.verifier()], digest=DIGEST, predicate_types=[APPROVAL_V1]
        )


def test_open_attestation_wrong_payload_type(signer: Signer) -> None:
    payload = make_statement("repo", DIGEST, APPROVAL_V1, {})
    with pytest.raises(PayloadTypeError):
        open_attestation(
            _envelope(signer, payload, "application/json"), [signer.verifier()], digest=DIGEST
        )


def test_signature_is_checked_before_the_payload_is_parsed(
    signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged envelope fails on the signature; the payload never reaches any parser."""
    import conveyor.attest._json as strict_json
    import conveyor.attest.statement as statement_module

    stranger = Signer(generate_key("ecdsa-p256"))
    hostile = b'{"_type":"x","_type":"y","n":NaN'
    forged = _envelope(stranger, hostile)
    parsed: list[str] = []
    real_loads = strict_json.strict_loads

    def spy(data: bytes, **kwargs: Any) -> Any:
        parsed.append(kwargs["what"])
        return real_loads(data, **kwargs)

    monkeypatch.setattr(statement_module, "strict_loads", spy)
    with pytest.raises(SignatureError):
        open_attestation(forged, [signer.verifier()], digest=DIGEST)
    assert parsed == []
    # signed by the trusted key, the same bytes reach the parser and are refused there
    with pytest.raises(StatementError, match="JSON"):
        open_attestation(_envelope(signer, hostile), [signer.verifier()], digest=DIGEST)
    assert parsed == ["in-toto Statement"]


def test_signed_statement_with_duplicate_keys_is_refused(signer: Signer) -> None:
    payload = json.dumps(_statement()).replace(
        '"predicateType": ', f'"predicateType": "{SMOKE_V1}", "predicateType": '
    )
    with pytest.raises(StatementError, match="duplicate"):
        open_attestation(_envelope(signer, payload.encode()), [signer.verifier()], digest=DIGEST)


def test_open_attestation_refuses_v01_unless_allowed(signer: Signer) -> None:
    envelope = _envelope(signer, json.dumps(_statement(_type=STATEMENT_V01)).encode())
    with pytest.raises(StatementError, match=r"v0\.1"):
        open_attestation(envelope, [signer.verifier()], digest=DIGEST)
    opened = open_attestation(envelope, [signer.verifier()], digest=DIGEST, allow_legacy=True)
    assert opened.statement.legacy


def test_tampered_subject_is_a_signature_failure(signer: Signer) -> None:
    envelope = json.loads(_envelope(signer, make_statement("repo", OTHER, APPROVAL_V1, {})))
    forged = make_statement("repo", DIGEST, APPROVAL_V1, {})
    envelope["payload"] = base64.b64encode(forged).decode()
    with pytest.raises(SignatureError):
        open_attestation(json.dumps(envelope).encode(), [signer.verifier()], digest=DIGEST)


# --- predicates ---------------------------------------------------------------------------------


def test_slsa_provenance_shape_and_read_back() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    finished = started.astimezone(timezone(timedelta(hours=2))) + timedelta(
        seconds=90, microseconds=5
    )
    predicate = slsa_provenance(
        commit=COMMIT.upper(),
        repository_url="https://github.com/org/app",
        run_id="123456",
        run_url="https://github.com/org/app/actions/runs/123456",
        builder_id="https://github.com/org/app/.github/workflows/ci.yml",
        build_type="https://example.com/build/v1",
        ref="refs/heads/main",
        started=started,
        finished=finished,
    )
    definition = predicate["buildDefinition"]
    assert definition["buildType"] == "https://example.com/build/v1"
    assert definition["resolvedDependencies"] == [
        {
            "uri": "git+https://github.com/org/app@refs/heads/main",
            "digest": {"gitCommit": COMMIT},
        }
    ]
    metadata = predicate["runDetails"]["metadata"]
    assert metadata == {
        "invocationId": "123456",
        "startedOn": "2026-01-02T03:04:05Z",
        "finishedOn": "2026-01-02T03:05:35.000005Z",
    }
    assert predicate["runDetails"]["builder"] == {
        "id": "https://github.com/org/app/.github/workflows/ci.yml"
    }
    facts = read_provenance(predicate)
    assert (facts.commit, facts.run_id, facts.run_url, facts.builder_id) == (
        COMMIT,
        "123456",
        "https://github.com/org/app/actions/runs/123456",
        "https://github.com/org/app/.github/workflows/ci.yml",
    )


def test_slsa_provenance_minimal() -> None:
    predicate = slsa_provenance(
        commit=COMMIT,
        repository_url=None,
        run_id=None,
        run_url=None,
        builder_id="b",
        build_type="t",
    )
    assert predicate["buildDefinition"]["resolvedDependencies"] == [
        {"digest": {"gitCommit": COMMIT}}
    ]
    assert "metadata" not in predicate["runDetails"]
    facts = read_provenance(predicate)
    assert facts.commit == COMMIT
    assert facts.run_id is None
    assert facts.run_url is None


@pytest.mark.parametrize("commit", ["main", "4d329c7", "g" * 40, COMMIT + "0", ""])
def test_slsa_provenance_needs_a_full_commit(commit: str) -> None:
    with pytest.raises(InputError, match="full git commit"):
        slsa_provenance(
            commit=commit,
            repository_url=None,
            run_id=None,
            run_url=None,
            builder_id="b",
            build_type="t",
        )


def test_naive_times_are_refused() -> None:
    with pytest.raises(InputError, match="timezone"):
        slsa_provenance(
            commit=COMMIT,
            repository_url=None,
            run_id=None,
            run_url=None,
            builder_id="b",
            build_type="t",
            started=datetime(2026, 1, 1),
        )


@pytest.mark.parametrize(
    "predicate",
    [
        {},
        {"buildDefinition": None},
        {"buildDefinition": {"resolvedDependencies": "x"}},
        {"runDetails": {"builder": "x", "metadata": []}},
    ],
)
def test_read_provenance_tolerates_missing_parts(predicate: dict[str, Any]) -> None:
    facts = read_provenance(predicate)
    assert (facts.commit, facts.run_id, facts.run_url, facts.builder_id) == (None, None, None, None)


def test_test_result_predicate() -> None:
    report = Digest.of(b"<testsuite/>")
    predicate = test_result(
        passed=["a", "b"],
        failed=["c"],
        skipped=["d"],
        reports=[("junit.xml", report)],
        url="https://ci/run/1",
    )
    assert predicate["result"] == "FAILED"
    # issue 10 #2: the reports are not the configuration the tests ran with.
    assert predicate["configuration"] == []
    assert predicate["conveyor"]["reports"] == [
        {"name": "junit.xml", "digest": {"sha256": report.encoded}}
    ]
    assert predicate["passedTests"] == ["a", "b"]
    assert predicate["failedTests"] == ["c"]
    assert predicate["warnedTests"] == []
    assert predicate["url"] == "https://ci/run/1"
    facts = read_test_result(predicate)
    assert (facts.result, facts.passed, facts.failed, facts.warned, facts.skipped) == (
        "FAILED",
        2,
        1,
        0,
        1,
    )
    assert facts.reports == {"junit.xml": str(report)}
    assert test_result(passed=["a"], failed=[], warned=["w"], reports=[])["result"] == "WARNED"
    # issue 9 #12: zero tests is not a pass (nor are only skipped ones).
    assert test_result(passed=[], failed=[], reports=[])["result"] == "FAILED"
    assert test_result(passed=[], failed=[], skipped=["s"], reports=[])["result"] == "FAILED"
    assert test_result(passed=[], failed=[], warned=["w"], reports=[])["result"] == "WARNED"


def test_test_result_configuration_from_ci() -> None:
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/web",
        "GITHUB_WORKFLOW_REF": "acme/web/.github/workflows/ci.yml@refs/heads/main",
        "GITHUB_WORKFLOW_SHA": "a" * 40,
        "GITHUB_SHA": "b" * 40,
        "GITHUB_JOB": "test",
    }
    assert ci_configuration(github) == [
        {
            "name": ".github/workflows/ci.yml",
            "uri": f"https://github.com/acme/web/blob/{'a' * 40}/.github/workflows/ci.yml",
            "digest": {"gitCommit": "a" * 40},
            "annotations": {"job": "test"},
        }
    ]
    gitlab = {
        "GITLAB_CI": "true",
        "CI_PROJECT_URL": "https://gitlab.example/acme/web",
        "CI_COMMIT_SHA": "c" * 40,
        "CI_JOB_NAME": "unit",
    }
    assert ci_configuration(gitlab) == [
        {
            "name": ".gitlab-ci.yml",
            "uri": f"https://gitlab.example/acme/web/-/blob/{'c' * 40}/.gitlab-ci.yml",
            "digest": {"gitCommit": "c" * 40},
            "annotations": {"job": "unit"},
        }
    ]
    assert ci_configuration({}) == []
    predicate = test_result(
        passed=["a"], failed=[], reports=[], configuration=ci_configuration(github)
    )
    assert read_test_result(predicate).configuration == predicate["configuration"]
    with pytest.raises(InputError, match="uri, a digest or content"):
        test_result(passed=["a"], failed=[], reports=[], configuration=[{"name": "x"}])


def test_test_result_written_before_reports_moved_still_reads() -> None:
    # Ledgers hold predicates whose configuration listed the JUnit reports.
    report = Digest.of(b"<testsuite/>")
    old = {
        "result": "PASSED",
        "configuration": [{"name": "junit.xml", "digest": {"sha256": report.encoded}}],
        "passedTests": ["a"],
        "warnedTests": [],
        "failedTests": [],
        "conveyor": {"skippedTests": ["s"]},
    }
    facts = read_test_result(old)
    assert (facts.result, facts.passed, facts.skipped) == ("PASSED", 1, 1)
    assert facts.reports == {"junit.xml": str(report)}
    assert facts.configuration == []


def test_read_test_result_fails_closed() -> None:
    assert read_test_result({"result": "passed"}).result == "FAILED"
    assert read_test_result({}).result == "FAILED"


def test_vulnerability_scan_predicate() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    scan = ScanInput(
        scanner_name="Trivy",
        scanner_version="0.50.0",
        db_version="2",
        started=started,
        finished=started + timedelta(seconds=3),
        findings=[
            FindingInput("CVE-1", "critical", "openssl", "1.0", "1.1"),
            FindingInput("CVE-2", "Negligible", "zlib", "1"),
            FindingInput("GHSA-x", "weird"),
        ],
        db_updated=started - timedelta(days=1),
    )
    predicate = vulnerability_scan(scan)
    scanner = predicate["scanner"]
    assert scanner["uri"] == "pkg:github/aquasecurity/trivy"
    assert scanner["version"] == "0.50.0"
    assert scanner["db"] == {"version": "2", "lastUpdate": "2025-12-31T00:00:00Z"}
    # issue 10 #1: annotations is a list of maps (the spec and its proto).
    assert scanner["result"][0] == {
        "id": "CVE-1",
        "severity": [{"method": "trivy", "score": "CRITICAL"}],
        "annotations": [
            {
                "package": "openssl",
                "version": "1.0",
                "fixedVersion": "1.1",
                "reportedSeverity": "critical",
            }
        ],
    }
    assert scanner["result"][1]["severity"] == [{"method": "trivy", "score": "NEGLIGIBLE"}]
    assert scanner["result"][2]["severity"] == [{"method": "trivy", "score": "UNKNOWN"}]
    assert predicate["metadata"] == {
        "scanStartedOn": "2026-01-01T00:00:00Z",
        "scanFinishedOn": "2026-01-01T00:00:03Z",
    }
    assert "conveyor" not in predicate  # the database time was known
    facts = read_vulnerability_scan(predicate)
    assert facts.counts == {
        "critical": 1,
        "high": 0,
        "medium": 0,
        "low": 0,
        "negligible": 1,
        "unknown": 1,
    }
    assert facts.ids == ["CVE-1", "CVE-2", "GHSA-x"]
    assert facts.db_updated == "2025-12-31T00:00:00Z"
    empty = vulnerability_scan(ScanInput("grype", None, None, started, started, []))
    assert empty["scanner"]["result"] == []
    assert read_vulnerability_scan(empty).counts["critical"] == 0


def test_vulnerability_scan_without_database_time_says_what_stands_in() -> None:
    # issue 10 #1: db.lastUpdate is required; without a database time the scan finish
    # stands in (an upper bound) and the predicate says so.
    at = datetime(2026, 1, 1, tzinfo=UTC)
    predicate = vulnerability_scan(
        ScanInput("trivy", None, None, at, at, [], db_uri="https://db.example/x")
    )
    assert predicate["scanner"]["db"] == {
        "uri": "https://db.example/x",
        "lastUpdate": "2026-01-01T00:00:00Z",
    }
    assert predicate["conveyor"] == {"dbLastUpdate": "metadata.scanFinishedOn"}
    facts = read_vulnerability_scan(predicate)
    assert (facts.db_updated, facts.db_uri) == (None, "https://db.example/x")


def test_vulnerability_scan_written_by_earlier_code_still_reads() -> None:
    # Ledgers hold predicates with annotations as one object, LOW for negligible, no
    # lastUpdate and upper-case words: the counts read as before, in the one vocabulary.
    old = {
        "scanner": {
            "uri": "pkg:github/anchore/grype",
            "db": {"version": "5 built 2024-01-01T00:00:00Z"},
            "result": [
                {
                    "id": "CVE-1",
                    "severity": [{"method": "grype", "score": "CRITICAL"}],
                    "annotations": {"package": "a", "reportedSeverity": "Critical"},
                },
                {
                    "id": "CVE-2",
                    "severity": [{"method": "grype", "score": "LOW"}],
                    "annotations": {"reportedSeverity": "Negligible"},
                },
                {"id": "CVE-3", "severity": [{"method": "grype", "score": "7.5"}]},
                {"id": "CVE-4"},
            ],
        },
        "metadata": {"scanStartedOn": "2026-01-01T00:00:00Z", "scanFinishedOn": "x"},
    }
    facts = read_vulnerability_scan(old)
    assert facts.counts["critical"] == 1
    assert facts.counts["low"] == 1
    assert facts.counts["unknown"] == 2
    assert facts.findings[0] == ("CVE-1", "critical")


def test_conveyor_predicates_round_trip() -> None:
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    approved = approval(environment="production", comment="ok", approver="alice", at=at)
    assert approved == {
        "environment": "production",
        "comment": "ok",
        "approver": "alice",
        "approvedOn": "2026-05-01T12:00:00Z",
    }
    assert read_approval(approved).environment == "production"
    assert read_smoke(smoke(environment="staging", passed=True, url="https://x")).passed
    assert not read_smoke(smoke(environment="staging", passed=False)).passed
    assert not read_smoke({"environment": "staging", "passed": "true"}).passed
    record = GateRecord("tests-passed", True, "3 passed", ["sha256:" + "a" * 64])
    promoted = promotion(
        from_environment="staging",
        to_environment="production",
        repository="reg/app",
        policy_sha256="b" * 64,
        gates=[record],
        break_glass=None,
        rollback=False,
    )
    assert promoted["gates"] == [
        {
            "gate": "tests-passed",
            "passed": True,
            "reason": "3 passed",
            "evidence": ["sha256:" + "a" * 64],
        }
    ]
    assert promoted["breakGlass"] is None
    facts = read_promotion(promoted)
    assert facts.gates == [GateRecord("tests-passed", True, "3 passed", ["sha256:" + "a" * 64])]
    assert (facts.from_environment, facts.to_environment, facts.rollback) == (
        "staging",
        "production",
        False,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy_sha256": "B" * 64},
        {"policy_sha256": "b" * 63},
        {"repository": ""},
        {"break_glass": "  "},
        {"to_environment": ""},
    ],
)
def test_promotion_refuses_bad_input(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "from_environment": None,
        "to_environment": "dev",
        "repository": "r",
        "policy_sha256": "b" * 64,
        "gates": [],
    }
    arguments.update(kwargs)
    with pytest.raises(InputError):
        promotion(**arguments)


def test_predicate_type_uris() -> None:
    assert SLSA_PROVENANCE_V1 == "https://slsa.dev/provenance/v1"
    assert TEST_RESULT_V01 == "https://in-toto.io/attestation/test-result/v0.1"
    assert VULNS_V02 == "https://in-toto.io/attestation/vulns/v0.2"
    own = [APPROVAL_V1, SMOKE_V1, PROMOTION_V1]
    assert all(
        uri.startswith("https://conveyor.dev/attestation/") and uri.endswith("/v1") for uri in own
    )


def test_public_surface() -> None:
    import conveyor.attest as attest

    assert sorted(attest.__all__) == sorted(set(attest.__all__))
    for name in attest.__all__:
        assert hasattr(attest, name), name
    public = {n for n in vars(attest) if not n.startswith("_")}
    submodules = {"dsse", "keys", "predicates", "statement", "annotations"}
    assert public - submodules == set(attest.__all__)
