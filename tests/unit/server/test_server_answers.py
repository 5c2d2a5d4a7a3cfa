"""Read answers (status, check) a server process keeps (``server.state.Answers``): given
again only while the verified ledger head read by the request is the one they were computed
from, and for at most ``REUSE_SECONDS``; a database writer who changes the head, or a row
under it, never gets a kept answer believed past that; authentication and promotions never
look at them."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor import service
from conveyor.server import state as state_module
from conveyor.server.state import Answers
from tests.unit.server._web_support import WebTeam, make_web_team

STATUS = "/api/v1/status"
CHECK = "/api/v1/check"


@pytest.fixture
def team(tmp_path: Path) -> WebTeam:
    return make_web_team(tmp_path / "team")


def _token(team: WebTeam, identity: str) -> str:
    created = team.state.tokens().create(  # type: ignore[attr-defined]
        f"{identity}-token", identity=identity, created_by="test"
    )
    return str(created.token)


def _api(team: WebTeam, identity: str = "deployer") -> TestClient:
    client = TestClient(team.client.app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {_token(team, identity)}"
    return client


def _answers(team: WebTeam) -> Answers:
    state: Any = team.state
    return state.answers(state.workspace())  # type: ignore[no-any-return]


def _database(team: WebTeam) -> Path:
    return team.root / ".conveyor" / "conveyor.db"


def _production(answer: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in answer["environments"] if e["environment"] == "production")


def _check(client: TestClient, ref: str, environment: str = "production") -> Any:
    return client.post(CHECK, json={"reference": ref, "environment": environment})


def test_a_status_is_computed_once_while_the_head_is_unchanged(team: WebTeam) -> None:
    api = _api(team)
    first, second = api.get(STATUS), api.get(STATUS)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert _answers(team).computed == 1
    # The same answer a fresh computation gives, in the schema's form.
    assert _production(first.json())["candidate"] == team.digest("v1")


def test_an_append_is_seen_by_the_next_status_at_once(team: WebTeam) -> None:
    api = _api(team)
    before = _production(api.get(STATUS).json())
    team.approve(team.images["v1"], "production", "alice")
    after = _production(api.get(STATUS).json())
    assert before["candidate_failing"] != after["candidate_failing"]
    assert any("alice" in line for line in after["candidate_failing"])
    assert _answers(team).computed == 2


def test_a_forged_head_is_never_answered_from_a_kept_answer(team: WebTeam) -> None:
    api = _api(team)
    assert api.get(STATUS).status_code == 200
    with sqlite3.connect(_database(team)) as db:
        db.execute("UPDATE ledger_head SET root = ?", (b"\x00" * 32,))
    got = api.get(STATUS)
    assert got.status_code == 409, got.text
    assert "outside conveyor" in got.text


def test_a_row_rewritten_under_an_unchanged_head_is_caught_once_the_bound_passes(
    team: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "REUSE_SECONDS", 0.3)
    api = _api(team)
    assert api.get(STATUS).status_code == 200
    with sqlite3.connect(_database(team)) as db:
        # The promotion into staging, as a writer without the keys would rewrite it.
        db.execute(
            "UPDATE ledger_entries SET subject_digest = ? WHERE kind = 'promotion'",
            ("sha256:" + "e" * 64,),
        )
    time.sleep(0.35)
    got = api.get(STATUS)
    assert got.status_code == 409, got.text
    assert "outside conveyor" in got.text


def test_an_answer_computed_across_an_append_is_not_kept(team: WebTeam) -> None:
    state: Any = team.state
    workspace = state.workspace()
    answers = state.answers(workspace)
    head = workspace.ledger.head()  # the request's head; an append lands before it is used

    def compute() -> object:
        team.approve(team.images["v1"], "production", "alice")
        return service.status(workspace=workspace)

    answers.get(("status",), head, compute)
    again: list[int] = []
    answers.get(("status",), head, lambda: again.append(1))
    assert again == [1]


def test_an_answer_is_not_given_past_its_bound_or_for_another_head() -> None:
    answers = Answers(seconds=0.2)
    computed: list[str] = []

    def compute(text: str) -> Any:
        return lambda: computed.append(text) or text

    assert answers.get("k", (1, b"a"), compute("one")) == "one"
    assert answers.get("k", (1, b"a"), compute("kept?")) == "one"
    assert answers.get("k", (2, b"b"), compute("another head")) == "another head"
    assert answers.get("k", (2, b"c"), compute("same size, another root")) == (
        "same size, another root"
    )
    time.sleep(0.25)
    assert answers.get("k", (2, b"c"), compute("past the bound")) == "past the bound"
    assert computed == ["one", "another head", "same size, another root", "past the bound"]


def test_concurrent_requests_for_one_answer_compute_it_once() -> None:
    answers = Answers(seconds=5)
    release = threading.Event()
    computed: list[int] = []

    def compute() -> str:
        computed.append(1)
        release.wait(5)
        return "answer"

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(answers.get, "k", (1, b"r"), compute) for _ in range(8)]
        time.sleep(0.2)
        release.set()
        assert [f.result(10) for f in futures] == ["answer"] * 8
    assert computed == [1]


def test_a_failed_computation_is_not_kept() -> None:
    answers = Answers(seconds=5)

    def fail() -> str:
        raise RuntimeError("registry down")

    with pytest.raises(RuntimeError):
        answers.get("k", (1, b"r"), fail)
    assert answers.get("k", (1, b"r"), lambda: "computed") == "computed"


def test_a_check_is_kept_for_the_identity_that_asked(team: WebTeam) -> None:
    # distinct_from: [promoter]: alice's approval does not count when alice would promote.
    team.approve(team.images["v1"], "production", "alice")
    ref = team.images["v1"]
    as_deployer = _check(_api(team, "deployer"), ref).json()
    as_alice = _check(_api(team, "alice"), ref).json()
    approvals = {
        who: next(g["reason"] for g in answer["gates"] if g["gate"] == "approvals")
        for who, answer in (("deployer", as_deployer), ("alice", as_alice))
    }
    assert approvals["deployer"] != approvals["alice"], approvals
    assert _answers(team).computed == 2


def test_a_revoked_token_is_refused_while_an_answer_is_kept(team: WebTeam) -> None:
    api = _api(team, "viewer")
    assert api.get(STATUS).status_code == 200
    team.state.tokens().revoke("viewer-token")  # type: ignore[attr-defined]
    assert api.get(STATUS).status_code == 401


def test_promotions_never_look_at_kept_answers(
    team: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> object:
        raise AssertionError("a kept answer was asked for")

    monkeypatch.setattr(Answers, "get", refuse)
    api = _api(team)
    ref = team.images["v1"]
    assert _check(api, ref).status_code == 500  # check does ask (the patch bites)
    denied = api.post("/api/v1/promotions", json={"reference": ref, "environment": "production"})
    assert denied.status_code == 409, denied.text  # decided afresh: approvals missing
    assert "approvals" in denied.text


def test_a_check_judges_credentials_before_its_body(team: WebTeam) -> None:
    nobody = TestClient(team.client.app, raise_server_exceptions=False)
    assert nobody.post(CHECK, json={}).status_code == 401
    wrong = TestClient(team.client.app, raise_server_exceptions=False)
    wrong.headers["Authorization"] = "Bearer cvy_not-a-token"
    assert wrong.post(CHECK, json={"reference": 1}).status_code == 401


def test_late_in_its_bound_one_request_computes_the_next_answer_while_others_get_the_kept_one() -> (
    None
):
    answers = Answers(seconds=1.0)
    assert answers.get("k", (1, b"r"), lambda: "first") == "first"
    time.sleep(0.8)  # past REFRESH_AFTER of the bound, still inside it
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "second"

    with ThreadPoolExecutor(2) as pool:
        refreshing = pool.submit(answers.get, "k", (1, b"r"), slow)
        time.sleep(0.05)
        # Nobody waits for the refresh while the kept answer is inside its bound.
        assert answers.get("k", (1, b"r"), lambda: "never computed") == "first"
        release.set()
        assert refreshing.result(5) == "second"
    assert answers.get("k", (1, b"r"), lambda: "never computed") == "second"
    assert answers.computed == 2


def test_a_kept_answer_is_never_given_past_its_bound_even_while_its_successor_is_computed() -> None:
    answers = Answers(seconds=0.3)
    assert answers.get("k", (1, b"r"), lambda: "first") == "first"
    time.sleep(0.25)
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "second"

    with ThreadPoolExecutor(2) as pool:
        refreshing = pool.submit(answers.get, "k", (1, b"r"), slow)
        time.sleep(0.1)  # the kept answer is now past its bound
        waiting = pool.submit(answers.get, "k", (1, b"r"), lambda: "never computed")
        time.sleep(0.05)
        assert not waiting.done()  # it waits for the successor, not the expired answer
        release.set()
        assert (refreshing.result(5), waiting.result(5)) == ("second", "second")
