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
        [--only-promotions] [--reads-only] [--baseline SRC] [--rounds N] [--probe]

``--only-promotions`` runs only the promotions-only phase; ``--baseline SRC`` (a ``git archive``
of main's src/) also runs the reads-only phase and the promotions-only phase on 2 more replicas
serving that code, alternated with this tree's (promotions for ``--rounds``); every promotions
round prints the CPU each promotion cost the replicas, PostgreSQL and the clients; ``--probe``
times each promotion's steps inside the servers (``benchmarks/_probe``) and prints where the
promote/ENV lock's hold goes.

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
    parser.add_argument(
        "--only-promotions", action="store_true",
        help="--scale: run only the promotions-only phase (skips mixed, reads and CLI phases)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1, help="--scale: promotions-only runs (each --burst)"
    )
    parser.add_argument(
        "--probe", action="store_true", help="--scale: time each promotion's steps inside the "
        "servers (benchmarks/_probe) and print the lock-hold breakdown",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=4,
        help="--scale: processes the 32 clients are spread over (the load generator's own GIL)",
    )
    parser.add_argument(
        "--client", choices=("lean", "conveyor"), default="lean",
        help="--scale: what sends status and check: stdlib http.client (lean, the default: "
        "the load generator's CPU is the replicas' on a small machine) or ConveyorClient",
    )  # fmt: skip
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        help="--scale: also run the reads-only and promotions-only phases against 2 "
        "replicas importing this source tree (e.g. a git archive of main's src), alternated",
    )
    parser.add_argument("--reads-only", action="store_true",
                        help="--scale: only the reads-only phase(s)")  # fmt: skip
    parser.add_argument("--py-spy", metavar="DIR", help="--scale: py-spy record replica 1 "
                        "during the first reads-only phase(s), raw stacks into DIR")  # fmt: skip
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


LABELS = {"status": "GET /status", "check": "POST /check", "attest": "POST /scans",
          "promote": "POST /promotions (mount)"}  # fmt: skip


# Dependencies this tree added that main's src lacks (uvicorn picks them when importable).
BASE_LACKS = ("httptools", "uvloop")


def _replicas(
    team: Any, env: dict[str, str], src: str | None = None, probe: Path | None = None
) -> list[Any]:
    """Two ``conveyor serve`` replicas with .pyc; ``src``: the source tree they import
    (``--baseline``: PYTHONPATH comes before the editable install); ``probe``: with
    benchmarks/_probe's step timers inside, writing under that folder."""
    chosen = dict(env)
    if probe is not None:
        probe.mkdir(parents=True, exist_ok=True)
        chosen["CONVEYOR_PROBE_DIR"] = str(probe)
        paths = (str(Path(__file__).with_name("_probe")), env.get("PYTHONPATH"))
        chosen["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    if src is not None:
        # The base's own dependencies: this venv's newer ones are hidden from it.
        hidden = Path(team.root) / "base-lacks"  # removed with the run's folder
        hidden.mkdir(exist_ok=True)
        for name in BASE_LACKS:
            (hidden / f"{name}.py").write_text(f"raise ImportError('{name}: not in the base')")
        paths = (src, str(hidden), chosen.get("PYTHONPATH"))
        chosen["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    team_env = team.env
    team.env = lambda: chosen  # servers start with .pyc too
    try:
        return [start_server(team), start_server(team)]
    finally:
        team.env = team_env


class _LeanReader:
    """``status`` and ``check`` as ``ConveyorClient`` sends them (same method, path, headers
    and JSON body), over one keep-alive stdlib ``http.client`` connection: a request costs
    the load generator a fraction of httpx's CPU, which on a shared 2-core machine the
    replicas need. Anything but 200 is an error."""

    def __init__(self, url: str, token: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        where = urlsplit(url)
        self._http = http.client
        self._conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=120)
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                         "User-Agent": "conveyor-bench"}  # fmt: skip

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self._conn.request(method, "/api/v1" + path, body=data, headers=headers)
                response = self._conn.getresponse()
                payload = response.read()
                break
            except (self._http.HTTPException, OSError) as error:
                self._conn.close()  # the next request opens a new connection
                # A kept-alive connection the server closed while idle (uvicorn: after 5 s)
                # is tried once more on a new one, as httpx does; both requests only read.
                stale = isinstance(error, (self._http.RemoteDisconnected, ConnectionError))
                if attempt == 2 or not stale:
                    raise
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:200]!r}")
        return json.loads(payload)

    def status(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/status")["environments"])

    def check(self, ref: str, *, environment: str) -> dict[str, Any]:
        body = {"reference": ref, "environment": environment, "break_glass": None}
        return dict(self._call("POST", "/check", body))

    def close(self) -> None:
        self._conn.close()


def _client_process(job: dict[str, Any], ready: Any, results: Any) -> None:
    """One load-generating process (``spawn``ed): a thread per client, each with its own
    keep-alive ``ConveyorClient``; starts when every process is ready, and reports its
    samples, errors and its own CPU time."""
    import threading

    ops: tuple[str, ...] = job["ops"]
    samples: dict[str, list[float]] = {k: [] for k in LABELS}
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(job["candidates"]))
    scan_bytes = Path(job["scan"]).read_bytes()
    reader = _LeanReader if job["lean"] else ConveyorClient
    clients = [
        (ConveyorClient(job["urls"][n % 2], job["tokens"]["deployer"]),
         ConveyorClient(job["urls"][n % 2], job["tokens"]["ci"]),
         reader(job["urls"][n % 2], job["tokens"]["deployer"]))
        for n in job["numbers"]
    ]  # fmt: skip

    def worker(n: int, deployer: ConveyorClient, ci: ConveyorClient, reads: Any,
               stop_at: float) -> None:  # fmt: skip
        mine: dict[str, list[float]] = {k: [] for k in samples}
        turn = n
        while time.perf_counter() < stop_at:
            turn += 1
            op = ops[turn % len(ops)]
            t = time.perf_counter()
            try:
                if op == "status":
                    reads.status()
                elif op == "check":
                    if not reads.check(job["ref"], environment="staging")["allowed"]:
                        errors.append("check denied")
                elif op == "attest":
                    path = Path(job["root"]) / f"scan-{n}.json"
                    path.write_bytes(scan_bytes)
                    ci.attest_scan(job["ref"], path)
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
                samples[k].extend(v)

    ready.wait()
    cpu = time.process_time()
    stop_at = time.perf_counter() + job["seconds"]
    threads = [
        threading.Thread(target=worker, args=(n, d, c, r, stop_at))
        for n, (d, c, r) in zip(job["numbers"], clients, strict=True)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cpu = time.process_time() - cpu
    for each in clients:
        for client in each:
            client.close()
    results.put({"samples": samples, "errors": errors, "cpu": cpu})


class _Load:
    """32 closed-loop clients spread over ``processes`` processes of their own, so the load
    generator's GIL is not what limits the figures; its CPU is measured and printed."""

    def __init__(self, *, ref: str, tokens: dict[str, str], scan: str, root: str,
                 processes: int, lean: bool, spy_dir: str | None = None) -> None:  # fmt: skip
        self.ref, self.tokens, self.scan, self.root = ref, tokens, scan, root
        self.lean = lean
        self.processes = max(1, processes)
        self.spy_dir = spy_dir
        self.spy = shutil.which("py-spy") or str(Path(sys.prefix) / "bin" / "py-spy")

    def phase(
        self,
        title: str,
        servers: list[Any],
        ops: tuple[str, ...],
        seconds: float,
        *,
        candidates: list[str] = (),  # type: ignore[assignment]
        profile: str | None = None,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Barrier(self.processes + 1)
        results = ctx.Queue()
        children = []
        for k in range(self.processes):
            numbers = list(range(k, 32, self.processes))
            job = {
                "ops": ops, "seconds": seconds, "numbers": numbers, "ref": self.ref,
                "urls": [s.url for s in servers], "tokens": self.tokens, "scan": self.scan,
                "root": self.root, "lean": self.lean,
                # promotions: each candidate offered once, split between the processes
                "candidates": list(candidates)[k :: self.processes],
            }  # fmt: skip
            child = ctx.Process(target=_client_process, args=(job, ready, results))
            child.start()
            children.append(child)
        ready.wait(timeout=120)
        load_before = _load()
        spy = None
        if profile and self.spy_dir:
            Path(self.spy_dir).mkdir(parents=True, exist_ok=True)
            out = Path(self.spy_dir) / f"{profile}.txt"
            spy = subprocess.Popen(
                [self.spy, "record", "--pid", str(servers[0].process.pid), "--gil", "--rate", "250",
                 "--duration", str(max(1, int(seconds))), "--format", "raw", "--output",
                 str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        server_cpu = [_cpu_seconds(s.process.pid) for s in servers]
        started = time.perf_counter()
        gathered = [results.get(timeout=seconds + 300) for _ in children]
        elapsed = time.perf_counter() - started
        server_cpu = [_cpu_seconds(s.process.pid) - c for s, c in zip(servers, server_cpu,
                                                                     strict=True)]  # fmt: skip
        for child in children:
            child.join(timeout=30)
        if spy is not None:
            spy.wait(timeout=120)
        samples: dict[str, list[float]] = {k: [] for k in LABELS}
        errors: list[str] = []
        for part in gathered:
            for k, v in part["samples"].items():
                samples[k].extend(v)
            errors.extend(part["errors"])
        client_cpu = sum(part["cpu"] for part in gathered)
        total = sum(len(v) for v in samples.values())
        print(f"\n{title}, 32 concurrent clients in {self.processes} processes, {elapsed:.1f} s: "
              f"{total / elapsed:.0f} requests/s in all, "
              f"{len(samples['promote']) / elapsed:.1f} promotions/s, {len(errors)} errors"
              + (" (py-spy attached to replica 1: figures inflated)" if spy else ""))  # fmt: skip
        print(f"  {load_before} at the start, {_load()} at the end")
        per = 1000 / max(1, total)
        print(f"  CPU: replicas {' + '.join(f'{c:.1f}' for c in server_cpu)} s "
              f"({sum(server_cpu) * per:.2f} ms a request, "
              f"{100 * sum(server_cpu) / elapsed / len(servers):.0f}% of a core each); "
              f"load generator {client_cpu:.1f} s ({client_cpu * per:.2f} ms a request, "
              f"{100 * client_cpu / elapsed:.0f}% of a core)")  # fmt: skip
        for e in sorted(set(errors))[:5]:
            print(f"  error: {e}")
        print(f"{'endpoint (HTTP)':34} {'calls':>6} {'req/s':>8} {'p50 ms':>9} "
              f"{'p99 ms':>9}  goal")  # fmt: skip
        goal = f"p99 < {STATUS_CHECK_P99_GOAL_MS:.0f} ms"
        for name, got in samples.items():
            if not got:
                continue
            g = goal if name in ("status", "check") else ""
            if g:
                met = _percentiles(got)[1] < STATUS_CHECK_P99_GOAL_MS
                g += " MET" if met else " MISSED"
            print(_row(LABELS[name], got, elapsed, g))
        sys.stdout.flush()


def run_scale(options: argparse.Namespace) -> None:

    from tests.support.postgres import start_postgres

    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", "src", sys.prefix], check=False,
                   capture_output=True, cwd=repo)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-scale-"))
    pg = start_postgres(fsync=False)
    servers: list[Any] = []
    started_servers: list[Any] = []  # every replica started, stopped at the end
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
        bursts = options.burst * options.rounds * (2 if options.baseline else 1)
        wanted = bursts if options.only_promotions else options.promotions + bursts
        wanted += 0 if options.only_promotions else options.runs * 2
        for n in range(0 if options.reads_only else wanted):
            image = team.image(f"c{n}")
            common: dict[str, Any] = {"key": key, "config_path": team.config}
            service.record_build(image, commit=COMMIT, run_id="42", **common)
            service.attest_tests(image, [junit], **common)
            service.attest_scan(image, scan, **common)
            candidates.append(image)
        tokens = {who: team.token(f"{who}-bench", who) for who in ("ci", "deployer")}
        env = team.env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # measured processes use .pyc
        servers = _replicas(team, env, probe=root / "probe" if options.probe else None)
        started_servers.extend(servers)
        import psycopg

        with psycopg.connect(dsn) as conn:
            ledger_size = conn.execute("SELECT size FROM ledger_head").fetchone()[0]  # type: ignore[index]
        print(
            f"ledger: {ledger_size:,} entries ({options.entries:,} really-signed filler "
            f"bulk-loaded in {loaded:.0f} s with {options.workers} signing processes); "
            f"PostgreSQL 15 with fsync=off, synchronous_commit=off (throwaway cluster); "
            f"2 conveyor serve replicas; {os.cpu_count()} cores shared; .pyc compiled, "
            f"PYTHONDONTWRITEBYTECODE unset; 32 clients in {options.client_processes} "
            f"load-generating processes of their own; status and check sent by "
            f"{'stdlib http.client' if options.client == 'lean' else 'ConveyorClient (httpx)'}"
        )
        load = _Load(ref=ref, tokens=tokens, scan=str(scan), root=str(root),
                     processes=options.client_processes, lean=options.client == "lean",
                     spy_dir=options.py_spy)  # fmt: skip
        reads = ("status", "check")
        if options.baseline:
            # The base source's replicas on the same database, alternated with this tree's.
            src = str(Path(options.baseline).resolve())
            subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=False,
                           capture_output=True)  # fmt: skip
            base = _replicas(team, env, src=src)
            started_servers.extend(base)
            servers.extend(base)
            for round_ in (1, 2):
                for label, pair in (("before", base), ("after", servers[:2])):
                    load.phase(f"reads only (status, check), {label}, round {round_}", pair,
                               reads, options.seconds / 2,
                               profile=label if round_ == 1 else None)  # fmt: skip
            for server in base:
                server.stop()
            del servers[2:]
        if options.only_promotions:
            _promotion_rounds(options, team, env, root, servers, tokens, candidates,
                              started_servers, pg.data)  # fmt: skip
            return
        if options.reads_only:
            if not options.baseline:
                load.phase("reads only (status, check)", servers, reads, options.seconds / 2,
                           profile="after")  # fmt: skip
            return
        mixed = ("status", "check", "status", "check", "attest", "promote")
        load.phase("mixed workload (status, check, attest scan, promote)", servers, mixed,
                   options.seconds, candidates=candidates[: options.promotions])  # fmt: skip
        # The reads alone: tells whether the writers or the reads themselves set the p99.
        load.phase("reads only (status, check)", servers, reads, options.seconds / 2)
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
        _promotion_rounds(
            options, team, env, root, servers, tokens, list(spare), started_servers, pg.data
        )
    finally:
        for server in started_servers:
            server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- promotions only (issue 12: >= 20 promotions/s), with the baseline and the probe ----------


def _promotions_only(
    servers: list[Any], token: str, images: list[str]
) -> tuple[float, list[float]]:
    """32 clients over both replicas promote ``images`` into staging: (seconds, latencies)."""
    import threading

    rest = list(reversed(images))
    lock = threading.Lock()
    burst: list[float] = []

    def promote_rest(n: int) -> None:
        with ConveyorClient(servers[n % 2].url, token) as deployer:
            while True:
                with lock:
                    if not rest:
                        return
                    image = rest.pop()
                t = time.perf_counter()
                deployer.promote(image, environment="staging")
                with lock:
                    burst.append(time.perf_counter() - t)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(promote_rest, range(32)))
    return time.perf_counter() - started, burst


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of a live process, with its reaped children's if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    ticks = sum(int(v) for v in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(data: Path) -> float:
    """CPU seconds of a PostgreSQL cluster: the postmaster, its reaped and live children."""
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = _cpu_seconds(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text.rsplit(")", 1)[1].split()[1]) == postmaster:
            total += _cpu_seconds(int(stat.parent.name))
    return total


def _cpu_now(replicas: list[Any], pg_data: Path) -> tuple[float, float, float]:
    """CPU seconds so far: the replicas, the PostgreSQL cluster, this process (the clients)."""
    served = sum(_cpu_seconds(r.process.pid) for r in replicas)
    return served, _postgres_cpu(pg_data), time.process_time()


def _promotion_rounds(options: argparse.Namespace, team: Any, env: dict[str, str], root: Path,
                      servers: list[Any], tokens: dict[str, str], images: list[str],
                      started: list[Any], pg_data: Path) -> None:  # fmt: skip
    """The promotions-only phase, ``--rounds`` times; with ``--baseline`` each round runs the
    baseline's replicas first, then this tree's, on the same database and candidates' kind."""
    pairs = [("this tree", servers, root / "probe")]
    if options.baseline:
        base_dir = root / "probe-baseline"
        subprocess.run([sys.executable, "-m", "compileall", "-q", options.baseline],
                       check=False, capture_output=True)  # fmt: skip
        base = _replicas(team, env, src=str(Path(options.baseline).resolve()),
                         probe=base_dir if options.probe else None)  # fmt: skip
        started.extend(base)
        pairs.insert(0, ("baseline", base, base_dir))
    images = list(images)
    rates: dict[str, list[float]] = {label: [] for label, _, _ in pairs}
    for round_ in range(options.rounds):
        for label, replicas, _ in pairs:
            batch, images = images[: options.burst], images[options.burst :]
            if not batch:
                continue
            before = _cpu_now(replicas, pg_data)
            elapsed, burst = _promotions_only(replicas, tokens["deployer"], batch)
            spent = [(b - a) / max(1, len(burst)) * 1000 for a, b in
                     zip(before, _cpu_now(replicas, pg_data), strict=True)]  # fmt: skip
            rate = len(burst) / elapsed
            rates[label].append(rate)
            verdict = "MET" if rate >= PROMOTIONS_GOAL else "MISSED"
            name = "" if label == "this tree" else f"{label}: "
            print(f"\n{name}promotions only, 32 clients, 2 replicas (round {round_ + 1}): "
                  f"{rate:.1f} promotions/s (goal >= {PROMOTIONS_GOAL:.0f}/s {verdict}); "
                  f"{_load()}")  # fmt: skip
            print(_row(f"{name}POST /promotions (mount)", burst, elapsed))
            print(f"CPU per promotion: replicas {spent[0]:.1f} ms, PostgreSQL {spent[1]:.1f} ms, "
                  f"the 32 clients {spent[2]:.1f} ms (2 cores: {2000 / sum(spent):.0f}/s "
                  "if nothing else ran)")  # fmt: skip
    if options.baseline and all(rates.values()):
        ours, theirs = statistics.median(rates["this tree"]), statistics.median(rates["baseline"])
        print(f"\npromotions/s, median of {options.rounds}: this tree {ours:.1f}, "
              f"baseline {theirs:.1f} ({ours / theirs:.2f}x)")  # fmt: skip
    if options.probe:
        for label, _, directory in pairs:
            _print_probe(label, directory)


def _print_probe(label: str, directory: Path) -> None:
    """Mean wall and CPU ms per promotion of each timed step (benchmarks/_probe)."""
    totals: dict[str, list[float]] = {}
    count = 0
    for path in sorted(directory.glob("probe-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if not record["ok"]:
                continue
            count += 1
            for name, (wall, cpu, calls) in record["phases"].items():
                total = totals.setdefault(name, [0.0, 0.0, 0.0])
                total[0] += wall
                total[1] += cpu
                total[2] += calls
    if not count:
        return
    print(f"\n{label}: where a promotion's time goes inside the servers ({count} promotions; "
          f"mean per promotion; 'lockN:' = inside the N-th promote/ENV lock section)")  # fmt: skip
    print(f"{'step':46} {'wall ms':>9} {'cpu ms':>8} {'calls':>6}")
    for name in sorted(totals, key=lambda n: (n.split(":")[0] if ":" in n else "", n)):
        wall, cpu, calls = totals[name]
        print(f"{name:46} {wall / count * 1000:9.1f} {cpu / count * 1000:8.1f} "
              f"{calls / count:6.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
