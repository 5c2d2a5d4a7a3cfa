"""What authenticating costs per request (issue 13): ``GET /api/v1/whoami`` through a real
``conveyor serve`` with a GitHub-shaped OIDC ID token (RS256, JWKS cached after the first
request) and with a login session token, each beside the peer measured in the same run, an
API token (a database lookup of its hash).

    .venv/bin/python benchmarks/oidc.py [--calls 300]
"""

# ruff: noqa: E402  (sys.path is set up before the project imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import statistics
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tests.support.oidc import ci_issuer
from tests.support.server import make_team, start_server

CONFIG_TAIL = """\
  ci-oidc:
    oidc: {{issuer: github, claims: {{sub: "repo:acme/payment-api:ref:refs/heads/main"}}}}
    roles: [builder]
  person:
    login: {{email: person@example.com}}
    roles: [approver]
"""
SERVER = """\
server:
  url: http://127.0.0.1
  signing_key: keys/server.key
  oidc:
    audience: conveyor
    issuers:
      github: {{issuer: "{issuer}", jwks_uri: "{issuer}/jwks"}}
  login:
    issuer: https://login.example.com
    client_id: conveyor
    client_secret_env: UNUSED_IN_THIS_BENCHMARK
"""


def _p50_ms(client: httpx.Client, token: str, calls: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/whoami", headers=headers).status_code == 200
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = client.get("/api/v1/whoami", headers=headers)
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ci_issuer("gh-1") as github:
        team = make_team(Path(folder) / "team")
        text = team.config.read_text()
        text = text.replace("identities:\n", "identities:\n" + CONFIG_TAIL.format(), 1)
        text = text.replace(
            "server:\n  signing_key: keys/server.key\n", SERVER.format(issuer=github.url), 1
        )
        team.config.write_text(text)
        api_token = team.token("bench", "ci")
        from conveyor.server.app import ServerSettings, ServerState
        from conveyor.server.login import new_session

        state = ServerState(ServerSettings(config_path=team.config))
        session = new_session(state, "person", "person@example.com", "https://login", "cli")
        server = start_server(team)
        try:
            oidc_token = github.sign(github.github_claims(lifetime=3600))
            with httpx.Client(base_url=server.url, timeout=30) as client:
                rounds = [
                    (
                        _p50_ms(client, api_token, args.calls),
                        _p50_ms(client, oidc_token, args.calls),
                        _p50_ms(client, session, args.calls),
                    )
                    for _ in range(3)
                ]
        finally:
            server.stop()
    api, jwt_, sess = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(f"whoami p50 over {args.calls} calls x 3 rounds (median of rounds):")
    print(f"  API token (peer)     {api:6.2f} ms")
    print(f"  OIDC ID token RS256  {jwt_:6.2f} ms   ratio {jwt_ / api:4.2f}x")
    print(f"  login session token  {sess:6.2f} ms   ratio {sess / api:4.2f}x")
    print(f"JWKS fetches by the server: {github.fetches} (cached after the first request)")


if __name__ == "__main__":
    main()
