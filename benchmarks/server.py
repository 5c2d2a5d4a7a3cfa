"""The server's numbers, in one run each, with the peer measured beside them.

``--scale`` (the default when PostgreSQL binaries exist; issue 12's benchmark): 2 ``conveyor
serve`` replicas on one throwaway PostgreSQL 15 cluster (fsync=off, said in the output) whose
ledger holds ``--entries`` really-signed entries (signed in a process pool, COPYed in with
valid leaves, roots, nodes and head), then:
- 32 concurrent clients (replicas alternated), a mixed workload for ``--seconds``: status,
  check, attest scan, promote with mount (OCI layout to OCI layout): requests/s, p50/p99 per
  endpoint, promotions/s; goals printed beside them (status and check p99 < 50 ms);
- the same operations as fresh processes: the CLI in remote mode (CONVEYOR_SERVER/TOKEN, from a
  folder without conveyor.yaml) vs the CLI in direct-database mode;
- promotions only, 32 clients over both replicas: promotions/s (goal >= 20/s).

``--small``: one replica on SQLite with a small ledger:
- one ``check`` as a fresh process: the CLI in direct-database mode (``conveyor check``) vs
  the CLI in remote mode (``CONVEYOR_SERVER``/``CONVEYOR_TOKEN``, from a folder without
  conveyor.yaml) vs a bare process making the same one HTTP call (``conveyor.client``);
- warm latency p50/p99 of ``check`` and ``status``: in-process ``conveyor.service`` vs HTTP;
- ``status`` requests/s with 32 concurrent clients.

Measured processes run with PYTHONDONTWRITEBYTECODE unset after ``compileall``.

    .venv/bin/python benchmarks/server.py [--scale|--small] [--entries 100000] [--seconds 20]
        [--promotions 150] [--burst 150] [--calls 200] [--runs 5]

The default ``--scale`` run (100,000 entries, issue 12's size) takes about 3 minutes on a
2-core machine; the machine's load average is printed beside each phase (the figures of a
shared machine are only comparable as ratios within one run).
"""

# ruff: noqa: E402  (sys.path is set up before the project imports)
from __future__ import annotations

import os
import sys

# benchmarks/ holds copy.py: keep this directory off sys.path so ``import copy`` (done by
# dataclasses and others) finds the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _filler as filler
from tests.support.server import (
    COMMIT,
    PASSING_JUNIT,
    make_team,
    start_server,
    trivy_report,
)

from conveyor import service
from conveyor.client import ConveyorClient


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _time(fn: Callable[[], object], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def _process(args: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, check=False, timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:  # a failing command measures nothing
            raise SystemExit(f"{args[:4]} failed: {done.stderr.decode()[-500:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scale", action="store_true", help="2 replicas on PostgreSQL (default "
                      "when PostgreSQL binaries exist)")  # fmt: skip
    mode.add_argument("--small", action="store_true", help="1 replica on SQLite, small ledger")
    parser.add_argument("--entries", type=int, default=100_000, help="--scale ledger size")
    parser.add_argument("--seconds", type=float, default=20.0, help="--scale mixed-load time")
    parser.add_argument(
        "--promotions", type=int, default=150, help="--scale promotions offered to the mixed load"
    )
    parser.add_argument("--burst", type=int, default=150, help="--scale promotions-only run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--no-board", action="store_true", help="skip the web board phase (benchmarks/web_board.py)"
    )
    options = parser.parse_args()
    if options.scale or (not options.small and _postgres_available()):
        run_scale(options)
    else:
        small(options)
    if not options.no_board:
        # Issue 14: the board with 20 environments and 100,000 entries, its own process.
        print("\n## the web board (benchmarks/web_board.py)", flush=True)
        board = Path(__file__).with_name("web_board.py")
        subprocess.run([sys.executable, str(board), "--runs", "10"], check=True)


def _postgres_available() -> bool:
    from tests.support.postgres import PG_BIN_DIRS

    return all(
        any((d / name).is_file() for d in PG_BIN_DIRS) or shutil.which(name)
        for name in ("initdb", "pg_ctl")
    )


def small(options: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-server-"))
    team = make_team(root / "team")
    ref = team.image("bench")
    key = str(team.root / "keys" / "ci.key")
    junit = root / "junit.xml"
    junit.write_text(PASSING_JUNIT)
    scan = root / "trivy.json"
    scan.write_text(json.dumps(trivy_report()))
    service.record_build(ref, commit=COMMIT, run_id="42", key=key, config_path=team.config)
    service.attest_tests(ref, [junit], key=key, config_path=team.config)
    service.attest_scan(ref, scan, key=key, config_path=team.config)
    token = team.token("bench", "deployer")
    env = team.env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measured processes use .pyc like a user's install
    subprocess.run([sys.executable, "-m", "compileall", "-q", "src", sys.prefix], check=False,
                   capture_output=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    server = start_server(team)
    try:
        direct = _process(
            [sys.executable, "-m", "conveyor", "check", ref, "--to", "staging"],
            env, team.root, options.runs,
        )  # fmt: skip
        program = (
            "from conveyor.client import ConveyorClient\n"
            f"c = ConveyorClient({server.url!r}, {token!r})\n"
            f"assert c.check({ref!r}, environment='staging')['allowed']\n"
        )
        remote = _process([sys.executable, "-c", program], env, team.root, options.runs)
        far = {k: v for k, v in env.items() if not k.startswith("CONVEYOR_")}
        far.update(CONVEYOR_SERVER=server.url, CONVEYOR_TOKEN=token)
        elsewhere = root / "elsewhere"  # remote mode needs no conveyor.yaml
        elsewhere.mkdir()
        cli_remote = _process(
            [sys.executable, "-m", "conveyor", "check", ref, "--to", "staging"],
            far, elsewhere, options.runs,
        )  # fmt: skip
        print(
            f"one check, fresh process: direct-database CLI {direct:.3f} s, CLI in remote mode "
            f"{cli_remote:.3f} s, bare client call {remote:.3f} s; ratio direct/remote CLI "
            f"{direct / cli_remote:.1f}x"
        )

        def local_check() -> object:
            return service.check(ref, environment="staging", config_path=team.config)

        def local_status() -> object:
            return service.status(config_path=team.config)

        with ConveyorClient(server.url, token) as client:

            def http_check() -> object:
                return client.check(ref, environment="staging")

            rows = [
                ("check in-process", _time(local_check, options.calls)),
                ("check via HTTP", _time(http_check, options.calls)),
                ("status in-process", _time(local_status, options.calls)),
                ("status via HTTP", _time(client.status, options.calls)),
            ]
        for name, samples in rows:
            p50, p99 = _percentiles(samples)
            print(f"{name:18} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({len(samples)} calls)")

        def one_client(_: int) -> list[float]:
            with ConveyorClient(server.url, token) as own:
                return _time(own.status, max(1, options.calls // 32))

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=32) as pool:
            samples = [s for batch in pool.map(one_client, range(32)) for s in batch]
        elapsed = time.perf_counter() - started
        p50, p99 = _percentiles(samples)
        print(f"status, 32 concurrent clients: {len(samples) / elapsed:.0f} requests/s, "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- --scale: 2 replicas on one PostgreSQL, a large really-signed ledger, 32 clients ---------

STATUS_CHECK_P99_GOAL_MS = 50.0
PROMOTIONS_GOAL = 20.0


def _bulk_load(dsn: str, n: int, key_path: str, workers: int) -> None:
    """Append ``n`` really-signed entries after the ledger's head: signed in a process pool,
    COPYed in, every leaf, root, node and the head as the ledger itself writes them."""
    import psycopg
    from cryptography.hazmat.primitives import serialization

    from conveyor.attest import load_signing_key
    from conveyor.ledger import merkle
    from conveyor.ledger.models import format_time, leaf_data, statement_sha256

    ci = load_signing_key(key_path)
    pem = ci._key.private_bytes(  # the benchmark's own throwaway key
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    base = (datetime.now(UTC) - timedelta(seconds=n * 0.001 + 60)).timestamp()
    columns = (
        "idx, envelope, envelope_sha256, leaf_hash, subject_digest, subject_name, "
        "predicate_type, kind, environment, source_commit, signer, keyid, recorded_at, "
        "tree_root, statement_sha256, occurrence"
    )
    step = 2_000
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        size, frontier = cur.execute("SELECT size, frontier FROM ledger_head").fetchone()  # type: ignore[misc]
        compact = merkle.CompactRange.from_bytes(size, bytes(frontier))
        nodes: list[tuple[int, int, bytes]] = []
        i = 0
        for chunk in filler.signed(pem, n, base, workers, step=step):
            rows = []
            for envelope in chunk:
                digest, kind, predicate_type = filler.facts(i)
                index = size + i
                recorded = format_time(datetime.fromtimestamp(base + i * 0.001, UTC))
                commit = f"{i // 3:040x}" if kind == "build" else None
                env_sha = hashlib.sha256(envelope).hexdigest()
                leaf = merkle.leaf_hash(
                    leaf_data(
                        index=index, recorded_at=recorded, kind=kind, subject_digest=digest,
                        subject_name="registry.example/filler",
                        predicate_type=predicate_type, environment=None, commit=commit,
                        signer="ci", keyid=ci.keyid, envelope_sha256=env_sha,
                    )
                )  # fmt: skip
                compact.append(leaf, lambda lv, ix, h: nodes.append((lv, ix, h)))
                rows.append(
                    (index, envelope, env_sha, leaf, digest, "registry.example/filler",
                     predicate_type, kind, None, commit, "ci", ci.keyid, recorded,
                     compact.root(), statement_sha256(envelope), 0)
                )  # fmt: skip
                i += 1
            with cur.copy(f"COPY ledger_entries ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            with cur.copy("COPY ledger_nodes (level, idx, hash) FROM STDIN") as copy:
                for node in nodes:
                    copy.write_row(node)
            nodes.clear()
        cur.execute(
            "UPDATE ledger_head SET size = %s, root = %s, frontier = %s",
            (compact.size, compact.root(), compact.to_bytes()),
        )
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def _row(name: str, samples: list[float], elapsed: float | None, goal: str = "") -> str:
    p50, p99 = _percentiles(samples)
    rate = f"{len(samples) / elapsed:8.1f}" if elapsed else f"{'':8}"
    return f"{name:34} {len(samples):6d} {rate} {p50:9.1f} {p99:9.1f}  {goal}"


def run_scale(options: argparse.Namespace) -> None:
    import threading

    from tests.support.postgres import start_postgres

    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", "src", sys.prefix], check=False,
                   capture_output=True, cwd=repo)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-scale-"))
    pg = start_postgres(fsync=False)
    servers: list[Any] = []
    try:
        url = pg.create_database()
        dsn = "host=127.0.0.1 port={} user=postgres dbname={}".format(
            pg.port, url.rsplit("/", 1)[1]
        )
        os.environ["CONVEYOR_DB"] = url  # in-process service calls use the same ledger
        team = make_team(root / "team", ledger_url=url)
        key = str(team.root / "keys" / "ci.key")
        junit = root / "junit.xml"
        junit.write_text(PASSING_JUNIT)
        scan = root / "trivy.json"
        scan.write_text(json.dumps(trivy_report()))
        ref = team.image("bench")
        service.record_build(ref, commit=COMMIT, run_id="42", key=key, config_path=team.config)
        service.attest_tests(ref, [junit], key=key, config_path=team.config)
        service.attest_scan(ref, scan, key=key, config_path=team.config)
        started = time.perf_counter()
        _bulk_load(dsn, options.entries, key, options.workers)
        loaded = time.perf_counter() - started
        # Candidates for promotion, with all staging evidence: the newest entries.
        candidates = []
        for n in range(options.promotions + options.burst + options.runs * 2):
            image = team.image(f"c{n}")
            common: dict[str, Any] = {"key": key, "config_path": team.config}
            service.record_build(image, commit=COMMIT, run_id="42", **common)
            service.attest_tests(image, [junit], **common)
            service.attest_scan(image, scan, **common)
            candidates.append(image)
        tokens = {who: team.token(f"{who}-bench", who) for who in ("ci", "deployer")}
        env = team.env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # measured processes use .pyc
        team_env = team.env
        team.env = lambda: env  # type: ignore[method-assign]  (servers start with .pyc too)
        servers = [start_server(team), start_server(team)]
        team.env = team_env  # type: ignore[method-assign]
        import psycopg

        with psycopg.connect(dsn) as conn:
            ledger_size = conn.execute("SELECT size FROM ledger_head").fetchone()[0]  # type: ignore[index]
        print(
            f"ledger: {ledger_size:,} entries ({options.entries:,} really-signed filler "
            f"bulk-loaded in {loaded:.0f} s with {options.workers} signing processes); "
            f"PostgreSQL 15 with fsync=off, synchronous_commit=off (throwaway cluster); "
            f"2 conveyor serve replicas; {os.cpu_count()} cores shared; .pyc compiled, "
            f"PYTHONDONTWRITEBYTECODE unset"
        )
        # 32 clients, replicas alternated; promotions take the next candidate.
        queue = list(reversed(candidates[: options.promotions]))
        lock = threading.Lock()
        scan_bytes = scan.read_bytes()
        labels = {"status": "GET /status", "check": "POST /check", "attest": "POST /scans",
                  "promote": "POST /promotions (mount)"}  # fmt: skip

        def phase(title: str, ops: tuple[str, ...], seconds: float) -> None:
            results: dict[str, list[float]] = {k: [] for k in labels}
            errors: list[str] = []
            stop_at = time.perf_counter() + seconds

            def worker(n: int) -> None:
                server = servers[n % 2]
                mine: dict[str, list[float]] = {k: [] for k in results}
                with (
                    ConveyorClient(server.url, tokens["deployer"]) as deployer,
                    ConveyorClient(server.url, tokens["ci"]) as ci,
                ):
                    turn = n
                    while time.perf_counter() < stop_at:
                        turn += 1
                        op = ops[turn % len(ops)]
                        t = time.perf_counter()
                        try:
                            if op == "status":
                                deployer.status()
                            elif op == "check":
                                if not deployer.check(ref, environment="staging")["allowed"]:
                                    errors.append("check denied")
                            elif op == "attest":
                                path = root / f"scan-{n}.json"
                                path.write_bytes(scan_bytes)
                                ci.attest_scan(ref, path)
                            else:
                                with lock:
                                    if not queue:
                                        continue
                                    image = queue.pop()
                                t = time.perf_counter()
                                deployer.promote(image, environment="staging")
                        except Exception as error:
                            errors.append(f"{op}: {str(error)[:200]}")
                            continue
                        mine[op].append(time.perf_counter() - t)
                with lock:
                    for k, v in mine.items():
                        results[k].extend(v)

            started = time.perf_counter()
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            elapsed = time.perf_counter() - started
            total = sum(len(v) for v in results.values())
            print(f"\n{title}, 32 concurrent clients, {elapsed:.1f} s: {total / elapsed:.0f} "
                  f"requests/s in all, {len(results['promote']) / elapsed:.1f} promotions/s, "
                  f"{len(errors)} errors; {_load()}")  # fmt: skip
            for e in sorted(set(errors))[:5]:
                print(f"  error: {e}")
            print(f"{'endpoint (HTTP)':34} {'calls':>6} {'req/s':>8} {'p50 ms':>9} "
                  f"{'p99 ms':>9}  goal")  # fmt: skip
            goal = f"p99 < {STATUS_CHECK_P99_GOAL_MS:.0f} ms"
            for name, samples in results.items():
                if not samples:
                    continue
                g = goal if name in ("status", "check") else ""
                if g:
                    met = _percentiles(samples)[1] < STATUS_CHECK_P99_GOAL_MS
                    g += " MET" if met else " MISSED"
                print(_row(labels[name], samples, elapsed, g))

        mixed = ("status", "check", "status", "check", "attest", "promote")
        phase("mixed workload (status, check, attest scan, promote)", mixed, options.seconds)
        # The reads alone: tells whether the writers or the reads themselves set the p99.
        phase("reads only (status, check)", ("status", "check"), options.seconds / 2)
        burst: list[float] = []
        # Fresh processes, the same operations: CLI remote mode vs direct-database mode.
        far = {k: v for k, v in env.items() if not k.startswith("CONVEYOR_")}
        elsewhere = root / "elsewhere"  # remote mode needs no conveyor.yaml
        elsewhere.mkdir()
        py = [sys.executable, "-m", "conveyor"]
        spare = iter(candidates[options.promotions :])
        cli_rows = []
        for label, argv, who in (
            ("status", ["status"], "deployer"),
            ("check --to staging", ["check", ref, "--to", "staging"], "deployer"),
            ("attest scan", ["attest", "scan", ref, str(scan)], "ci"),
        ):
            remote_env = dict(far, CONVEYOR_SERVER=servers[0].url, CONVEYOR_TOKEN=tokens[who])
            direct_env = dict(env, CONVEYOR_SIGNING_KEY=str(team.root / "keys" / f"{who}.key"))
            r = _process([*py, *argv], remote_env, elsewhere, options.runs)
            d = _process([*py, *argv], direct_env, team.root, options.runs)
            cli_rows.append((label, r, d))
        r_times, d_times = [], []
        for _ in range(options.runs):
            for mode, times in (("remote", r_times), ("direct", d_times)):
                image = next(spare)
                if mode == "remote":
                    e = dict(far, CONVEYOR_SERVER=servers[0].url, CONVEYOR_TOKEN=tokens["deployer"])
                    times.append(
                        _process([*py, "promote", image, "--to", "staging"], e, elsewhere, 1)
                    )
                else:
                    e = dict(env, CONVEYOR_SIGNING_KEY=str(team.root / "keys" / "deployer.key"))
                    times.append(
                        _process([*py, "promote", image, "--to", "staging"], e, team.root, 1)
                    )
        cli_rows.append(("promote --to staging", statistics.median(r_times),
                         statistics.median(d_times)))  # fmt: skip
        print(f"\n{_load()}")
        print(f"{'CLI, fresh process (median of ' + str(options.runs) + ')':34} "
              f"{'remote s':>9} {'direct s':>9} {'direct/remote':>14}")  # fmt: skip
        for label, r, d in cli_rows:
            print(f"{label:34} {r:9.3f} {d:9.3f} {d / r:13.2f}x")
        # Promotions alone, the rest of the candidates, 32 clients over both replicas.
        rest = list(reversed(list(spare)))
        started = time.perf_counter()

        def promote_rest(n: int) -> None:
            with ConveyorClient(servers[n % 2].url, tokens["deployer"]) as deployer:
                while True:
                    with lock:
                        if not rest:
                            return
                        image = rest.pop()
                    t = time.perf_counter()
                    deployer.promote(image, environment="staging")
                    with lock:
                        burst.append(time.perf_counter() - t)

        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(promote_rest, range(32)))
        elapsed = time.perf_counter() - started
        if burst:
            rate = len(burst) / elapsed
            verdict = "MET" if rate >= PROMOTIONS_GOAL else "MISSED"
            print(f"\npromotions only, 32 clients, 2 replicas: {rate:.1f} promotions/s "
                  f"(goal >= {PROMOTIONS_GOAL:.0f}/s {verdict}); {_load()}")  # fmt: skip
            print(_row("POST /promotions (mount)", burst, elapsed))
    finally:
        for server in servers:
            server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
