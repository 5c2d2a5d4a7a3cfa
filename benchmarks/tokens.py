"""What checking an API token costs (issue 12's benchmark: every authenticated request).

For each backend, a real ``conveyor serve`` (SQLite; then one throwaway PostgreSQL 15 cluster,
fsync=off) and, in the same run, its peer: ``GET /healthz`` on the same server (no
authentication, no database). Measured:
- round trips to the database per token check, counted on the wire in-process (libpq's
  message trace; sqlite3's trace callback) on a ``TokenStore`` of the same database;
- ``GET /api/v1/whoami`` latency p50/p99 over HTTP, one client and 32 concurrent clients;
  the peer's beside it, and the ratio.

Measured processes run with PYTHONDONTWRITEBYTECODE unset after ``compileall``.

    .venv/bin/python benchmarks/tokens.py [--calls 300] [--clients 32] [--sqlite-only]
"""

# ruff: noqa: E402  (sys.path is set up before the project imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from tests.support.roundtrips import counting_round_trips
from tests.support.server import make_team, start_server


def _round_trips_per_check(url: str, checks: int = 50) -> float:
    from conveyor.server.tokens import TokenStore

    with counting_round_trips() as trips:
        store = TokenStore.open(url)
        try:
            token = store.create("trips", identity="ci", created_by="benchmark").token
            for _ in range(8):  # opens the connection; psycopg prepares after 5 runs
                store.authenticate(token)
            before = trips.count()
            for _ in range(checks):
                store.authenticate(token)
            return (trips.count() - before) / checks
        finally:
            store.close()


def _latencies(base: str, path: str, token: str | None, clients: int, calls: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def one_client(_n: int) -> list[float]:
        samples = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            assert client.get(path).status_code == 200
            for _ in range(calls):
                started = time.perf_counter()
                answer = client.get(path)
                samples.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
        return samples

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [s for part in pool.map(one_client, range(clients)) for s in part]


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000


def _backend(name: str, url: str | None, folder: Path, calls: int, clients: int) -> None:
    team = make_team(folder / name, ledger_url=url)
    from conveyor.policy.config import load_config

    ledger_url = url or load_config(team.config).configured_ledger_url
    token = team.token("bench", "viewer")
    trips = _round_trips_per_check(ledger_url)
    server = start_server(team)
    try:
        rows = []
        for label, n_clients, n_calls in (
            ("1 client", 1, calls),
            (f"{clients} clients", clients, max(calls // 4, 20)),
        ):
            who = _latencies(server.url, "/api/v1/whoami", token, n_clients, n_calls)
            peer = _latencies(server.url, "/healthz", None, n_clients, n_calls)
            rows.append((label, len(who), who, peer))
    finally:
        server.stop()
    one, five, _ = os.getloadavg()
    print(f"{name}: round trips per token check {trips:.2f} (load {one:.1f}/{five:.1f})")
    for label, n, who, peer in rows:
        print(
            f"  {label:>10} x{n:<5} whoami p50 {_p(who, 50):7.2f} ms  p99 {_p(who, 99):7.2f} ms"
            f"   | healthz (peer) p50 {_p(peer, 50):7.2f} ms  p99 {_p(peer, 99):7.2f} ms"
            f"   | ratio p50 {_p(who, 50) / _p(peer, 50):4.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # measured processes use .pyc
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "src"), sys.prefix],
        check=False, capture_output=True,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        _backend("sqlite", None, Path(folder), args.calls, args.clients)
        if not args.sqlite_only:
            from tests.support.postgres import start_postgres

            cluster = start_postgres()
            stack.callback(cluster.stop)
            _backend(
                "postgresql", cluster.create_database(), Path(folder), args.calls, args.clients
            )


if __name__ == "__main__":
    main()
