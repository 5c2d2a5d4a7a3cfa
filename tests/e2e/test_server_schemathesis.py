"""schemathesis against the OpenAPI a real ``conveyor serve`` publishes, with the tokens of a
deployer and an admin: no 5xx, and every answer conforms to the published schema.

Operations whose inputs name images are left out: a random reference such as ``a:b`` names
docker.io, and resolving it would reach the network (its refusals are covered by the hostile
body and authorisation tests). Few examples, so ``make test`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.server import ServedTeam, serve_team

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
