"""``conveyor login`` with the provider's device-authorization flow, against a real
``conveyor serve``: the person enters the code at the provider, the CLI polls the server,
the session is stored 0600 and used like CONVEYOR_TOKEN. (oidc-provider-mock has no device
flow: tests/support/device_provider.py speaks RFC 8628 over real HTTP instead.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_server_oidc import LOGIN_SECRET, _start
from tests.support.device_provider import DeviceProvider, device_provider
from tests.support.server import RunningServer, free_port, make_team

CONFIG = """\
version: 1
identities:
  alice: {{login: {{email: alice@example.com}}, roles: [approver]}}
  server: {{key: keys/server.pub, roles: [server]}}
server:
  url: {url}
  signing_key: keys/server.key
  login:
    issuer: {issuer}
    client_id: conveyor
    client_secret_env: CONVEYOR_LOGIN_SECRET
"""


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, DeviceProvider]]:
    with device_provider("conveyor", LOGIN_SECRET) as provider:
        team = make_team(tmp_path_factory.mktemp("device-team"))
        port = free_port()
        team.config.write_text(CONFIG.format(url=f"http://127.0.0.1:{port}", issuer=provider.url))
        server = _start(team, port)
        try:
            yield server, provider
        finally:
            server.stop()


def _login(server: RunningServer, provider: DeviceProvider, home: Path, email: str, **kw: bool):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "XDG_CONFIG_HOME": str(home),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "login", "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"Open (\S+) and enter the code (\w+)", line)
        assert found, line
        assert found.group(1) == provider.url + "/activate"
        provider.approve(found.group(2), email, **kw)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err, env


def test_the_server_offers_the_device_flow_the_provider_has(
    served: tuple[RunningServer, DeviceProvider],
) -> None:
    server, _ = served
    answer = httpx.get(server.url + "/api/v1/authentication").json()
    assert answer == {"oidc_audience": None, "login": True, "device": True}


def test_conveyor_login_with_the_device_flow(
    served: tuple[RunningServer, DeviceProvider], tmp_path: Path
) -> None:
    server, provider = served
    code, out, err, env = _login(server, provider, tmp_path, "alice@example.com")
    assert code == 0, err
    assert "as alice" in out
    stored = tmp_path / "conveyor" / "sessions.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    token = json.loads(stored.read_text())[server.url]["token"]
    assert token not in out + err
    assert token not in server.log.read_text()
    from conveyor.client import ConveyorClient

    with ConveyorClient.from_environment(server=server.url, environ=env) as client:
        who = client.whoami()
    assert who["identity"] == "alice"
    assert who["authenticated"] == {
        "method": "login",
        "issuer": provider.url,
        "email": "alice@example.com",
    }


def test_an_unverified_email_or_a_foreign_id_token_ends_the_device_login(
    served: tuple[RunningServer, DeviceProvider], tmp_path: Path
) -> None:
    server, provider = served
    code, _, err, _ = _login(server, provider, tmp_path / "a", "alice@example.com", verified=False)
    assert code == 2
    assert "did not vouch for a verified email" in err
    provider.audience = "another-client"
    try:
        code, _, err, _ = _login(server, provider, tmp_path / "b", "alice@example.com")
    finally:
        provider.audience = None
    assert code == 2
    assert "ID token is invalid" in err
    assert not (tmp_path / "b" / "conveyor" / "sessions.json").exists()
