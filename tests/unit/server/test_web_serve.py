"""The web page from a real ``conveyor serve`` process on loopback: the board over a socket,
its headers, and the live stream (``GET /events``) telling a new ledger entry as it lands."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import COMMIT, PASSING_JUNIT, ServedTeam, serve_team, trivy_report


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTeam]:
    yield from serve_team(tmp_path_factory.mktemp("web-serve"))


def _record(served: ServedTeam) -> str:
    team, ci = served.team, served.server.client("ci")
    ref = team.image("web")
    assert ci.post("/api/v1/builds", json={"reference": ref, "commit": COMMIT}).status_code == 200
    tests = ci.post("/api/v1/tests", data={"reference": ref},
                    files={"files": ("junit.xml", PASSING_JUNIT.encode())})  # fmt: skip
    assert tests.status_code == 200, tests.text
    scan = ci.post("/api/v1/scans", data={"reference": ref},
                   files={"file": ("trivy.json", json.dumps(trivy_report()).encode())})  # fmt: skip
    assert scan.status_code == 200, scan.text
    return ref


def test_the_board_over_a_socket(served: ServedTeam) -> None:
    ref = _record(served)
    page = served.server.client("viewer").get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert '<section class="candidate" aria-label="Waiting for staging">' in page.text
    assert ref.split("@")[1] in page.text
    nobody = httpx.get(served.server.url + "/audit", follow_redirects=False)
    assert nobody.status_code == 303
    assert nobody.headers["location"] == "/login?next=/audit"


def test_events_arrive_while_the_ledger_grows(served: ServedTeam) -> None:
    ref = _record(served)
    viewer = served.server.client("viewer")
    sizes: list[int] = []
    with viewer.stream("GET", "/events", timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        deadline = time.monotonic() + 20
        for line in lines:
            if line.startswith("data: "):
                sizes.append(int(line[len("data: ") :]))
                if len(sizes) == 1:  # the size on connecting; now record one more entry
                    approval = served.server.client("alice").post(
                        "/api/v1/approvals", json={"reference": ref, "environment": "production"}
                    )
                    assert approval.status_code == 200, approval.text
                else:
                    break
            assert time.monotonic() < deadline, sizes
    assert sizes[1] == sizes[0] + 1


def test_static_files_over_a_socket(served: ServedTeam) -> None:
    import re

    html = served.server.client("viewer").get("/").text
    url = re.search(r'src="(/static/[0-9a-f]{16}/conveyor\.js)"', html)
    assert url
    answer = httpx.get(served.server.url + url.group(1))
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "EventSource" in answer.text
