"""schemathesis against the OpenAPI a real ``conveyor serve`` publishes, with the tokens of a
deployer and an admin: no 5xx, and every answer conforms to the published schema.

Operations whose inputs name images are left out: a random reference such as ``a:b`` names
docker.io, and resolving it would reach the network (its refusals are covered by the hostile
body and authorisation tests). Few examples, so ``make test`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.support.server import COMMIT, PASSING_JUNIT, ServedTeam, serve_team, trivy_report

IMAGE_INPUTS = (
    r"^/api/v1/(resolve|inspect|builds|tests|scans|smoke|approvals|check|promotions|"
    r"attestations|trace)$"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTeam]:
    yield from serve_team(tmp_path_factory.mktemp("fuzz-team"))


# The published document (tests/unit/test_server_openapi.py keeps it equal to the served one).
PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_path(str(PUBLISHED)).exclude(path_regex=IMAGE_INPUTS)


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_answer_outside_the_schema(
    case: schemathesis.Case, served: ServedTeam
) -> None:
    for identity in ("deployer", "root", "viewer"):
        case.call_and_validate(
            base_url=served.server.url,
            headers={"Authorization": f"Bearer {served.tokens[identity]}"},
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )


def _check(operation: str, method: str, served: ServedTeam, identity: str, **parts: Any) -> Any:
    """One real call of an operation, its answer checked against the published schema (the
    whole document: the fuzzed one leaves the operations on images out)."""
    whole = schemathesis.openapi.from_path(str(PUBLISHED))
    made = whole[operation][method].Case(**parts)
    return made.call_and_validate(
        base_url=served.server.url,
        headers={"Authorization": f"Bearer {served.tokens[identity]}"},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )


def test_the_operations_on_images_answer_what_the_schema_says(served: ServedTeam) -> None:
    """The operations left out of the fuzzing above, called once each with a real image:
    every answer (recorded evidence, a check, a promotion, a trace …) matches its model."""
    team = served.team
    ref = team.image("schema")
    junit = ("junit.xml", PASSING_JUNIT.encode(), "application/xml")
    scan = ("trivy.json", json.dumps(trivy_report()).encode(), "application/json")
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("/api/v1/resolve", "GET", "viewer", {"query": {"ref": ref}}),
        ("/api/v1/inspect", "GET", "viewer", {"query": {"ref": ref}}),
        ("/api/v1/builds", "POST", "ci",
         {"body": {"reference": ref, "commit": COMMIT, "run_id": "42"}}),
        ("/api/v1/check", "POST", "deployer",
         {"body": {"reference": ref, "environment": "staging"}}),
        ("/api/v1/promotions", "POST", "deployer",
         {"body": {"reference": ref, "environment": "staging"}}),
        ("/api/v1/smoke", "POST", "ci",
         {"body": {"reference": ref, "environment": "staging", "passed": True}}),
        ("/api/v1/approvals", "POST", "alice",
         {"body": {"reference": ref, "environment": "production", "comment": "ok"}}),
        ("/api/v1/trace", "GET", "viewer", {"query": {"query": ref}}),
        ("/api/v1/attestations", "GET", "viewer", {"query": {"ref": ref}}),
        ("/api/v1/environments/{environment}/promoted-digests", "GET", "viewer",
         {"path_parameters": {"environment": "staging"}}),
        ("/api/v1/status", "GET", "viewer", {}),
    ]  # fmt: skip
    statuses = []
    for path, method, identity, parts in calls:
        if path == "/api/v1/promotions":  # its gates want tests and a scan first
            with served.server.client("ci") as http:
                assert http.post("/api/v1/tests", data={"reference": ref},
                                 files=[("files", junit)]).status_code == 200  # fmt: skip
                assert http.post("/api/v1/scans", data={"reference": ref},
                                 files=[("file", scan)]).status_code == 200  # fmt: skip
        response = _check(path, method, served, identity, **parts)
        statuses.append((path, response.status_code, response.text[:300]))
    assert all(code == 200 for _, code, _text in statuses), statuses
    # a denied promotion: 409 with the gates, as documented
    denied = _check("/api/v1/promotions", "POST", served, "deployer",
                    body={"reference": ref, "environment": "production"})  # fmt: skip
    assert denied.status_code == 409


def test_the_conformance_check_is_not_vacuous(served: ServedTeam) -> None:
    """The same real answer against a schema that says otherwise fails the check: the
    answers are described, not just typed as any object."""
    document = json.loads(PUBLISHED.read_text())
    status = document["components"]["schemas"]["EnvironmentStatus"]
    status["properties"]["repository"] = {"type": "integer"}
    wrong = schemathesis.openapi.from_dict(document)
    case = wrong["/api/v1/status"]["GET"].Case()
    with pytest.raises(FailureGroup) as info:
        case.call_and_validate(
            base_url=served.server.url,
            headers={"Authorization": f"Bearer {served.tokens['viewer']}"},
            checks=[response_schema_conformance],
        )
    assert "integer" in str(info.value.exceptions[0])  # the field the schema now mistypes
