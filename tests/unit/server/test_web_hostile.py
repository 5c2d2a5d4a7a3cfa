"""A hostile reader's requests against the web page (issue 14): what must be a clean refusal,
never a 500, and what must stay bounded however many browsers ask."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conveyor.server import login
from conveyor.server.web import events
from tests.unit.server._web_support import WebTeam, make_web_team

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[WebTeam]:
    made = make_web_team(tmp_path / "team")
    yield made
    made.client.app.state.conveyor.close()  # type: ignore[attr-defined]


def _as(team: WebTeam, identity: str) -> TestClient:
    """Signed in as ``identity``; a server error is an answer here, not an exception."""
    client = TestClient(team.client.app, follow_redirects=False, raise_server_exceptions=False)
    client.cookies.set(login.SESSION_COOKIE, team.session(identity))
    return client


def test_a_csrf_token_that_is_not_ascii_is_refused_not_a_500(fresh: WebTeam) -> None:
    viewer = _as(fresh, "viewer")
    logout = viewer.post("/logout", data={"csrf_token": "é"})  # the form on every page
    assert logout.status_code == 403, logout.text
    header = viewer.post("/api/v1/check", headers={"X-CSRF-Token": b"\xe9"}, json={})
    assert header.status_code == 403, header.text
    assert "CSRF" in header.text
    assert viewer.get("/").status_code == 200  # still signed in: nothing was cleared


def _hold_a_stream(team: WebTeam, identity: str, into: dict[str, str]) -> threading.Thread:
    """A browser keeping ``/events`` open (until STREAM_SECONDS is made short again)."""
    thread = threading.Thread(
        target=lambda: into.update(text=_as(team, identity).get("/events").text)
    )
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the server counts it open
        streams = getattr(team.client.app.state, "web_streams", None)  # type: ignore[attr-defined]
        if streams is not None and streams.open() >= 1:
            break
        time.sleep(0.05)
    return thread


def test_events_streams_are_capped_per_identity(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "STREAM_SECONDS", 30.0)
    monkeypatch.setattr(events, "POLL_SECONDS", 0.1)
    monkeypatch.setattr(events, "MAX_STREAMS_PER_IDENTITY", 1, raising=False)
    held: dict[str, str] = {}
    first = _hold_a_stream(fresh, "viewer", held)
    started = time.monotonic()
    second = _as(fresh, "viewer").get("/events")
    took = time.monotonic() - started
    monkeypatch.setattr(events, "STREAM_SECONDS", 0.3)  # the held stream ends now
    first.join()
    assert "event: ledger" in held["text"]
    assert second.status_code == 200  # EventSource gives up for good on any other status
    assert "event: ledger" not in second.text
    assert re.search(r"^retry: \d{5,}$", second.text, re.M)  # come back much later
    assert took < 10  # answered at once, not held open for the stream's 30 s
    other = _as(fresh, "alice").get("/events")  # another identity has streams of its own
    assert "event: ledger" in other.text
    again = _as(fresh, "viewer").get("/events")  # the first one ended: its place is free
    assert "event: ledger" in again.text


def test_events_streams_are_capped_per_process(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "STREAM_SECONDS", 30.0)
    monkeypatch.setattr(events, "POLL_SECONDS", 0.1)
    monkeypatch.setattr(events, "MAX_STREAMS", 1, raising=False)
    held: dict[str, str] = {}
    first = _hold_a_stream(fresh, "viewer", held)
    busy = _as(fresh, "alice").get("/events")
    monkeypatch.setattr(events, "STREAM_SECONDS", 0.3)
    first.join()
    assert "event: ledger" in held["text"]
    assert "event: ledger" not in busy.text
    assert "retry:" in busy.text


def test_the_audit_page_reads_only_the_checkpoints_it_shows(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import service

    workspace = fresh.state.workspace()  # type: ignore[attr-defined]
    for n in range(7):
        fresh.approve(fresh.images["v1"], "production")  # the ledger grows, a checkpoint each
        service.audit_checkpoint(workspace=workspace)
        assert workspace.ledger.size() == 5 + n
    asked: list[dict[str, object]] = []
    real = workspace.ledger.checkpoints

    def spy(**kwargs: object) -> object:
        asked.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(workspace.ledger, "checkpoints", spy)
    html = _as(fresh, "viewer").get("/audit").text
    sizes = [int(s) for s in re.findall(r"<tr><td>(\d+)</td><td><code title=", html)]
    assert sizes == [11, 10, 9, 8, 7]  # the five newest, newest first
    assert asked == [{"last": 5}]  # not the whole table, however many there are


def test_a_short_commit_does_not_read_every_build(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.server._web_support import COMMIT

    workspace = fresh.state.workspace()  # type: ignore[attr-defined]
    asked: list[dict[str, object]] = []
    real = workspace.ledger.entries

    def spy(**kwargs: object) -> object:
        asked.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(workspace.ledger, "entries", spy)
    viewer = _as(fresh, "viewer")
    page = viewer.get(f"/commits/{COMMIT[:9]}")
    assert page.status_code == 200
    assert fresh.digest("v1") in page.text
    found = viewer.get("/search", params={"q": COMMIT[:8]})
    assert found.headers["location"] == f"/commits/{COMMIT[:8]}"
    assert viewer.get("/commits/abcdef0").status_code == 404
    unbounded = [
        kw for kw in asked
        if kw.get("kind") == "build" and not (kw.get("commit") or kw.get("commit_prefix"))
        and not kw.get("subject_digest") and not kw.get("start")
    ]  # fmt: skip
    assert not unbounded, unbounded  # every build ever recorded, per request


def test_an_environment_page_lists_a_bounded_history(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.server.web import views
    from tests.unit.server._web_support import COMMIT_2

    monkeypatch.setattr(views, "HISTORY_ROWS", 2, raising=False)
    monkeypatch.setattr(views, "ROLLBACK_CHOICES", 1, raising=False)
    for n, name in enumerate(("v2", "v3")):
        ref = fresh.image(name, commit=COMMIT_2, title=f"title {n}")
        fresh.record(ref, commit=COMMIT_2)
        fresh.promote(ref, "staging")
    html = _as(fresh, "deployer").get("/environments/staging").text
    rows = re.findall(r"<td>#(\d+)</td>", html)
    assert len(rows) == 2, rows  # the two newest of three arrivals
    assert fresh.digest("v3")[:19] in html
    assert "1 older arrival not shown" in html
    options = re.findall(r'<option value="(sha256:[0-9a-f]{64})">', html)
    assert options == [fresh.digest("v2")]  # the choices to put back are bounded too


def test_open_streams_share_one_ledger_read_per_poll() -> None:
    from conveyor.server.web.events import POLL_SECONDS, _Streams

    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return 7

    streams = _Streams()
    assert [streams.ledger_size(read) for _ in range(50)] == [7] * 50
    assert len(reads) == 1  # fifty streams polling together: one read
    time.sleep(POLL_SECONDS / 2)
    streams.ledger_size(read)
    assert len(reads) == 2  # a later poll reads again
