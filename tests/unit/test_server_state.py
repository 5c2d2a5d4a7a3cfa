"""What one ``conveyor serve`` process shares between requests (config, trusted keys, ledger,
read cache), and what it never shares: a registry client, whose one deadline counts from its
creation. Every repository the server opens gets a client of its own."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.oci.name import parse_target
from conveyor.server.state import ServerSettings, ServerState
from conveyor.service._evidence import remember_reads
from tests.support.server import make_team

TARGET = parse_target("registry.example/team/app:v1")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ServerState]:
    team = make_team(tmp_path / "team")
    # The server opens only what conveyor.yaml names (server.registries).
    text = team.config.read_text()
    team.config.write_text(
        text.replace("server:\n", "server:\n  registries: [registry.example/team]\n")
    )
    made = ServerState(
        ServerSettings(config_path=team.config, ledger_url=f"sqlite:///{tmp_path / 'l.db'}")
    )
    yield made
    made.close()


def _deadline(repository: object) -> object:
    return repository._session.deadline  # type: ignore[attr-defined]


def test_requests_share_the_workspace_and_its_read_cache(state: ServerState) -> None:
    first, second = state.workspace(), state.workspace()
    assert first is second
    assert remember_reads(first) is remember_reads(second)


def test_each_repository_gets_a_registry_client_of_its_own(state: ServerState) -> None:
    opener = state.workspace().opener
    one, two = opener(TARGET, create=False), opener(TARGET, create=False)
    assert _deadline(one) is not _deadline(two)


def test_a_later_request_is_not_bound_by_an_earlier_client_s_deadline(
    state: ServerState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_DEADLINE", "0.2")
    opener = state.workspace().opener
    early = opener(TARGET, create=False)
    assert not _deadline(early).expired  # type: ignore[attr-defined]
    time.sleep(0.3)
    assert _deadline(early).expired  # type: ignore[attr-defined]
    later = opener(TARGET, create=False)
    assert not _deadline(later).expired  # type: ignore[attr-defined]


def test_a_repository_s_client_is_closed_when_it_is_let_go(state: ServerState) -> None:
    repository = state.workspace().opener(TARGET, create=False)
    session = repository._session  # type: ignore[attr-defined]
    closed: list[bool] = []
    original = session.deadline.close
    session.deadline.close = lambda: (closed.append(True), original())[1]
    del repository
    gc.collect()
    assert closed == [True]
