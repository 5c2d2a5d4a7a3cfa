"""What checking an API token costs (issue 12's benchmark: every authenticated request).

For each backend, a real ``conveyor serve`` (SQLite; then one throwaway PostgreSQL 15 cluster,
fsync=off) and, in the same run, its peer: ``GET /healthz`` on the same server (no
authentication, no database). Measured:
- in-process on a ``TokenStore`` of the same database: round trips per token check, counted
  on the wire (libpq's message trace; sqlite3's trace callback), and p50 per check; its peer
  the same SELECT through the ledger's engine as checks ran before (pre-ping, BEGIN, SELECT,
  ROLLBACK);
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
import hmac
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from tests.support.roundtrips import counting_round_trips
from tests.support.server import make_team, start_server


def _in_process(url: str, checks: int = 300) -> tuple[float, float, float, float]:
    """Round trips and median microseconds per check: ``TokenStore.authenticate``, and its
    peer, the same SELECT through the ledger's engine as checks ran before issue 12's fix
    (PostgreSQL: pool pre-ping, BEGIN, SELECT, ROLLBACK; SQLite: BEGIN, SELECT, ROLLBACK)."""
    import sqlalchemy as sa

    from conveyor.server.tokens import TokenStore, token_hash, tokens_table

    with counting_round_trips() as trips:
        store = TokenStore.open(url)
        try:
            token = store.create("trips", identity="ci", created_by="benchmark").token
            c = tokens_table.c
            query = sa.select(tokens_table).where(c.token_sha256 == token_hash(token))

            def before() -> None:  # the old authenticate, line for line
                digest = token_hash(token)
                with store._engine.connect() as conn:
                    row = conn.execute(query).one()
                assert hmac.compare_digest(row.token_sha256, digest)
                assert store._info(row).state(datetime.now(UTC)) == "active"

            def after() -> None:
                store.authenticate(token)

            figures = []
            for check in (after, before):
                for _ in range(8):  # opens the connection; psycopg prepares after 5 runs
                    check()
                counted = trips.count()
                samples = []
                for _ in range(checks):
                    started = time.perf_counter()
                    check()
                    samples.append(time.perf_counter() - started)
                figures += [(trips.count() - counted) / checks, statistics.median(samples) * 1e6]
            return figures[0], figures[1], figures[2], figures[3]
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
    trips, micros, old_trips, old_micros = _in_process(ledger_url)
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
    print(f"{name} (load {one:.1f}/{five:.1f}):")
    print(
        f"  in-process token check: {trips:.2f} round trips, p50 {micros:6.0f} us"
        f"   | peer, as before the fix (the ledger's engine): {old_trips:.2f} round trips,"
        f" p50 {old_micros:6.0f} us   | ratio {micros / old_micros:4.2f}x"
    )
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
