"""The server's first numbers: ``check`` and ``status`` through ``conveyor serve`` (one replica,
SQLite, a small ledger) against the same operations in direct-database mode, in one run.

Measured, each with the peer beside it:
- one ``check`` as a fresh process: the CLI in direct-database mode (``conveyor check``) vs
  the CLI in remote mode (``CONVEYOR_SERVER``/``CONVEYOR_TOKEN``, from a folder without
  conveyor.yaml) vs a bare process making the same one HTTP call (``conveyor.client``);
- warm latency p50/p99 of ``check`` and ``status``: in-process ``conveyor.service`` vs HTTP;
- ``status`` requests/s with 32 concurrent clients.

    .venv/bin/python benchmarks/server.py [--calls 200] [--runs 5]
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
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    options = parser.parse_args()
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


if __name__ == "__main__":
    main()
