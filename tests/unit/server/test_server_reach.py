"""``conveyor serve`` opens only the registries and layouts conveyor.yaml names: a reference in
a request to anywhere else is refused (403) before the filesystem or the network is touched,
by the API, the web page's search box and the recording endpoints alike."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conveyor.errors import ConfigError
from conveyor.oci.name import Reference, parse_target
from conveyor.policy.config import load_config
from conveyor.server.auth import NotAllowed
from conveyor.server.reach import REFUSAL, Reach, canonical_registry
from tests.support.images import build_image
from tests.unit.server._web_support import COMMIT, WebTeam, make_web_team

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DIGEST = "sha256:" + "0" * 64
HEAD = "version: 1\nidentities: {viewer: {roles: [reader]}}\n"


class Listener:
    """A loopback socket that counts the connections made to it (and closes each)."""

    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.1)
        self.port = int(self.socket.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebTeam]:
    made = make_web_team(tmp_path_factory.mktemp("reach") / "team")
    yield made
    made.client.app.state.conveyor.close()  # type: ignore[attr-defined]


def _api(team: WebTeam, identity: str) -> TestClient:
    state = team.state
    created = state.tokens().create(  # type: ignore[attr-defined]
        f"{identity}-{os.urandom(4).hex()}", identity=identity, created_by="test"
    )
    client = TestClient(team.client.app, follow_redirects=False)
    client.headers["Authorization"] = f"Bearer {created.token}"
    return client


def _without_ids(text: str) -> str:
    return re.sub(r'"request_id":"[^"]*"', "", text)


def _elsewhere(team: WebTeam) -> Path:
    """A real layout with the team's image, outside every configured location."""
    outside = team.root.parent / "elsewhere"
    if not outside.exists():
        build_image(outside, tag="v1", labels={"git.commit": COMMIT})
    return outside


def test_a_reader_cannot_probe_the_filesystem(team: WebTeam) -> None:
    reader = _api(team, "viewer")
    outside = _elsewhere(team)
    missing = team.root.parent / "missing"
    answers = []
    for path in (outside, missing, Path("/etc"), Path("/etc/passwd")):
        for route in ("/api/v1/resolve", "/api/v1/inspect", "/api/v1/attestations"):
            for ref in (f"oci:{path}:v1", f"oci:{path}@{DIGEST}"):
                answer = reader.get(route, params={"ref": ref})
                assert answer.status_code == 403, (route, ref, answer.text)
                assert answer.json()["detail"] == REFUSAL
                answers.append((route, ref.replace(str(path), "PATH"), _without_ids(answer.text)))
    # A layout that exists, one that does not, a file and a directory: the same answer.
    for route, ref, text in answers:
        assert {t for r, f, t in answers if (r, f) == (route, ref)} == {text}
    assert "exist" not in REFUSAL
    assert "\n" not in REFUSAL


def test_path_tricks_are_judged_by_the_real_path(team: WebTeam) -> None:
    reader = _api(team, "viewer")
    outside = _elsewhere(team)
    build = team.root / "build"
    link = build / "link-out"
    if not link.exists():
        link.symlink_to(outside)
    alias = team.root.parent / "alias-in"
    if not alias.exists():
        alias.symlink_to(build)
    digest = team.digest("v1")
    refused = [
        f"oci:{build}/../../elsewhere:v1",
        f"oci:{build}/link-out:v1",
        f"oci:{link}/.:v1",
        f"oci:{alias}:v1",  # a path into a configured directory by a link from outside
        f"oci:{team.root}/staging2:v1",  # beside the environment's layout, not it
        f"oci:{team.root}:v1",
        "oci:../elsewhere:v1",
    ]
    for ref in refused:
        answer = reader.get("/api/v1/resolve", params={"ref": ref})
        assert answer.status_code == 403, (ref, answer.text)
        assert answer.json()["detail"] == REFUSAL
    for ref in (f"oci:{build}:v1", f"oci:{build}/.:v1", f"oci:{build}/../build:v1"):
        answer = reader.get("/api/v1/resolve", params={"ref": ref})
        assert answer.status_code == 200, (ref, answer.text)
        assert answer.json()["digest"] == digest
    staging = reader.get("/api/v1/resolve", params={"ref": f"oci:{team.root / 'staging'}:v1"})
    assert staging.status_code != 403, staging.text  # an environment's layout (no tag v1 there)


def test_a_reader_cannot_make_the_server_connect_anywhere(
    team: WebTeam, listener: Listener
) -> None:
    reader = _api(team, "viewer")
    port = listener.port
    for ref in (
        f"127.0.0.1:{port}/app:v1",
        f"localhost:{port}/app@{DIGEST}",
        f"LOCALHOST:{port}/team/app:v1",
        f"docker://127.0.0.1:{port}/app:v1",
        f"[::1]:{port}/app:v1",
        f"2130706433:{port}/app:v1",
    ):
        for route in ("/api/v1/resolve", "/api/v1/inspect", "/api/v1/attestations"):
            answer = reader.get(route, params={"ref": ref})
            assert answer.status_code == 403, (route, ref, answer.text)
            assert answer.json()["detail"] == REFUSAL
    for ref in (
        f"user:pw@127.0.0.1:{port}/app:v1",
        f"oci-layout:127.0.0.1:{port}/app:v1",
        f"[::ffff:127.0.0.1]:{port}/app:v1",
        f"http://127.0.0.1:{port}/app:v1",
    ):
        answer = reader.get("/api/v1/resolve", params={"ref": ref})
        assert answer.status_code in (400, 403), (ref, answer.text)
    assert listener.connections == 0


def test_the_search_box_opens_nothing_unconfigured(team: WebTeam, listener: Listener) -> None:
    viewer = team.as_("viewer")
    outside, missing = _elsewhere(team), team.root.parent / "missing"
    pages = []
    for path in (outside, missing):
        answer = viewer.get("/search", params={"q": f"oci:{path}:v1"})
        assert answer.status_code == 404, answer.text[-500:]
        assert "not allowed: the server opens only" in answer.text
        pages.append(_main(answer.text).replace(str(path), "PATH"))
    assert pages[0] == pages[1]
    answer = viewer.get("/search", params={"q": f"127.0.0.1:{listener.port}/app:v1"})
    assert "not allowed: the server opens only" in answer.text
    assert listener.connections == 0
    found = viewer.get("/search", params={"q": f"oci:{team.root / 'build'}:v1"})
    assert found.status_code == 303  # a configured layout still leads to its page


def _main(html: str) -> str:
    found = re.search(r"<main[^>]*>(.*)</main>", html, re.S)
    assert found, html[:500]
    return found.group(1)


def test_a_writer_records_nothing_from_an_unconfigured_location(
    team: WebTeam, listener: Listener
) -> None:
    ci = _api(team, "ci")
    before = team.ledger_size()
    for ref in (f"oci:{_elsewhere(team)}:v1", f"127.0.0.1:{listener.port}/app:v1"):
        answer = ci.post("/api/v1/builds", json={"reference": ref, "commit": COMMIT})
        assert answer.status_code == 403, answer.text
        assert answer.json()["detail"] == REFUSAL
        upload = [("files", ("junit.xml", b"<testsuite/>", "application/xml"))]
        answer = ci.post("/api/v1/tests", data={"reference": ref}, files=upload)
        assert answer.status_code == 403, answer.text
    assert team.ledger_size() == before
    assert listener.connections == 0


def _configured(tmp_path: Path, server: str) -> Reach:
    config = tmp_path / "conveyor.yaml"
    config.write_text(
        "version: 1\nidentities: {viewer: {roles: [reader]}}\nserver:\n"
        + server
        + "environments:\n"
        "  dev: {repository: 'Registry.Example:5000/team/app-dev', requires: {}}\n"
        "  stage: {repository: 'oci:layouts/stage', requires: {}}\n"
    )
    return Reach.of(load_config(config))


def test_configured_registries_are_reached_and_nothing_beside_them(
    tmp_path: Path, listener: Listener, team: WebTeam
) -> None:
    port = listener.port
    reach = _configured(tmp_path, f"  registries: ['localhost:{port}/team', 'docker.io']\n")
    admitted = [
        "registry.example:5000/team/app-dev:v1",  # an environment's repository, host in any case
        f"localhost:{port}/team:v1",
        f"LocalHost:{port}/team/app@{DIGEST}",
        f"localhost:{port}/team/a/b:v1",
        "alpine:3.19",
        "index.docker.io/library/alpine:3.19",
        "registry-1.docker.io/someone/app:v1",
    ]
    for text in admitted:
        target = parse_target(text)
        assert reach.admit(target) == target, text
    refused = [
        "registry.example:5000/team/app-dev2:v1",
        "registry.example:5000/team/app:v1",
        "registry.example/team/app-dev:v1",  # another port is another location
        f"localhost:{port}/teamx/app:v1",
        f"localhost:{port}/other:v1",
        f"127.0.0.1:{port}/team/app:v1",  # another spelling of an address: refused
        f"localhost:{port + 1}/team/app:v1",
        "docker.io.evil.example/library/alpine:3.19",
        "oci:layouts/stage2:v1",
        "oci:/etc:v1",
    ]
    for text in refused:
        with pytest.raises(NotAllowed, match=re.escape(REFUSAL)):
            reach.admit(parse_target(text))


def test_a_configured_registry_is_connected_to_and_another_repository_is_not(
    tmp_path: Path, listener: Listener
) -> None:
    """Through the server's own opener: the configured prefix connects, a sibling does not."""
    from conveyor.server.state import ServerSettings, ServerState

    config = tmp_path / "conveyor.yaml"
    config.write_text(f"{HEAD}server:\n  registries: ['127.0.0.1:{listener.port}/team']\n")
    state = ServerState(ServerSettings(config_path=config, ledger_url="sqlite://"))
    from conveyor import service

    with pytest.raises(NotAllowed):
        service.resolve(f"127.0.0.1:{listener.port}/other:v1", options=state.registry_options())
    assert listener.connections == 0
    with pytest.raises(Exception) as failed:
        service.resolve(f"127.0.0.1:{listener.port}/team/app:v1", options=state.registry_options())
    assert not isinstance(failed.value, NotAllowed)
    assert listener.connections >= 1


def test_layout_directories_are_relative_to_the_config_and_followed_by_real_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "builds" / "app").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "builds" / "out").symlink_to(tmp_path / "secret")
    reach = _configured(tmp_path, "  layouts: [builds]\n")
    opened = reach.admit(parse_target(f"oci:{tmp_path}/builds/app/../app:v1"))
    assert opened == parse_target(f"oci:{os.path.realpath(tmp_path / 'builds' / 'app')}:v1")
    assert reach.admit(parse_target(f"oci:{tmp_path}/layouts/stage:v1"))
    for text in (f"oci:{tmp_path}/builds/out:v1", f"oci:{tmp_path}/secret:v1", "oci:/:v1"):
        with pytest.raises(NotAllowed):
            reach.admit(parse_target(text))


def test_canonical_registries() -> None:
    assert canonical_registry("[0:0:0:0:0:0:0:1]:5000") == "[::1]:5000"
    assert canonical_registry("LOCALHOST:5000") == "localhost:5000"
    assert canonical_registry("registry-1.docker.io") == "docker.io"
    assert Reference.parse("index.docker.io/alpine").registry == "docker.io"


@pytest.mark.parametrize(
    "entry",
    ["oci:/srv/layouts", "docker://host.example", "host.example/", "not a host", "host.example/UP",
     "team/app", "", "localhost:5000/a//b"],
)  # fmt: skip
def test_a_bad_server_registries_entry_is_a_config_error(tmp_path: Path, entry: str) -> None:
    config = tmp_path / "conveyor.yaml"
    config.write_text(f"{HEAD}server:\n  registries: [{entry!r}]\n")
    with pytest.raises(ConfigError, match=r"server\.registries"):
        load_config(config)


def test_a_layout_entry_with_control_characters_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "conveyor.yaml"
    config.write_text(
        'version: 1\nidentities: {viewer: {roles: [reader]}}\nserver:\n  layouts: ["a\\u0007b"]\n'
    )
    with pytest.raises(ConfigError, match="control characters"):
        load_config(config)
