# ruff: noqa: E402  (sys.path is set up before the project imports)
"""The board (``GET /``) of ``conveyor serve`` with 20 environments and 100,000 ledger entries
(issue 14: < 100 ms on the server).

    .venv/bin/python benchmarks/web_board.py [--entries 100000] [--environments 20] [--runs 20]

The workspace: environments env00 → env01 → … → env19 (``after`` chain; env00 needs tests and
a scan, the last one an approval). A real pipeline first, through ``conveyor.service`` into
OCI layouts: one image promoted through all 20, one through 12, one through 5, and a fourth
built, tested and scanned last (so three columns have a candidate whose gates the board
checks).
Then ``--entries`` really-signed filler entries (``benchmarks/_filler.py``: other digests'
build, test and scan records, bulk-loaded with valid leaves, nodes and head as
``benchmarks/latency.py`` does), so every environment's arrivals lie at the *start* of the
ledger: the worst case for newest-first reads. Then a checkpoint, and the fourth image (the
newest build: env00's candidate).

Measured, medians (and p90) of ``--runs`` after one warm-up, in one run:
- in-process, the service alone: ``service.status`` (the board's core, the peer);
- in-process, the whole page: ``GET /`` and ``GET /?fragment=board`` through the ASGI app
  (authentication, views, templates; no socket), the board computed for every request
  (``views.BOARD_TTL = 0``), then as served (reused while the ledger's size and root do not
  change, at most ``BOARD_TTL`` seconds);
- over HTTP: the same two requests to a real ``conveyor serve`` process (keep-alive client),
  and the server's own ``duration_ms`` from its access log (server-side time).
Measured processes run with PYTHONDONTWRITEBYTECODE unset after ``compileall``.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import compileall
import json
import shutil
import statistics
import sysconfig
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.latency import _bulk_append  # the one bulk loader of filler entries

from conveyor import service

TARGET_MS = 100.0
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PASSING = '<testsuite name="u"><testcase name="a"/><testcase name="b"/></testsuite>'


def config_text(root: Path, db: Path, environments: int) -> str:
    lines = [
        "version: 1",
        "identities:",
        "  ci:       {key: keys/ci.pub, roles: [builder, tester, scanner]}",
        "  deployer: {key: keys/deployer.pub, roles: [deployer]}",
        "  alice:    {key: keys/alice.pub, roles: [approver]}",
        "  viewer:   {roles: [reader]}",
        "  server:   {key: keys/server.pub, roles: [server]}",
        "ledger:",
        f"  url: sqlite:///{db}",
        "  key: keys/ledger.key",
        "  public_key: keys/ledger.pub",
        "server:",
        "  signing_key: keys/server.key",
        "environments:",
    ]
    for n in range(environments):
        lines += [f"  env{n:02d}:", f"    repository: oci:{root}/env{n:02d}", "    requires:"]
        if n == 0:
            lines += ["      tests: {min_passed: 1, max_failed: 0}",
                      "      scan: {max: {critical: 0}}"]  # fmt: skip
        else:
            lines.append(f"      after: env{n - 1:02d}")
        if n == environments - 1:
            lines.append("      approvals: {count: 1}")
    return "\n".join(lines) + "\n"


class Workspace:
    def __init__(self, root: Path, environments: int) -> None:
        self.root = root
        self.db = root / "ledger.db"
        self.environments = [f"env{n:02d}" for n in range(environments)]
        for name in ("ci", "deployer", "alice", "server", "ledger"):
            service.generate_keys(name, out_dir=root / "keys")
        self.config = root / "conveyor.yaml"
        self.config.write_text(config_text(root, self.db, environments))

    def key(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    def image(self, n: int) -> str:
        made = service.create_sample_image(
            f"oci:{self.root / 'build'}:v{n}", labels={"git.commit": COMMIT, "ci.run": str(n)}
        )
        ref = f"oci:{self.root / 'build'}@{made.digest}"
        common: dict[str, Any] = {"key": self.key("ci"), "config_path": self.config}
        service.record_build(
            ref, commit=COMMIT, run_id=str(n), run_url=f"https://ci.example/runs/{n}", **common
        )
        junit = self.root / "junit.xml"
        junit.write_text(PASSING)
        service.attest_tests(ref, [junit], **common)
        scan = self.root / "scan.json"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        scan.write_text(
            json.dumps(
                {"SchemaVersion": 2, "CreatedAt": now, "ArtifactName": "app",
                 "ArtifactType": "container_image", "Metadata": {},
                 "Results": [{"Target": "app", "Class": "os-pkgs", "Vulnerabilities": []}]}
            )
        )  # fmt: skip
        service.attest_scan(ref, scan, **common)
        return ref

    def through(self, ref: str, depth: int) -> None:
        deploy: dict[str, Any] = {"key": self.key("deployer"), "config_path": self.config}
        for name in self.environments[:depth]:
            if name == self.environments[-1]:
                service.approve(
                    ref, environment=name, key=self.key("alice"), config_path=self.config
                )
            source = ref
            service.promote(source, environment=name, **deploy)


def build(root: Path, entries: int, environments: int, workers: int) -> Workspace:
    from cryptography.hazmat.primitives import serialization

    from conveyor.attest import load_signing_key

    ws = Workspace(root, environments)
    for n, depth in enumerate((environments, 12, 5)):
        ws.through(ws.image(n), min(depth, environments))
    ci = load_signing_key(ws.key("ci"))
    pem = ci._key.private_bytes(  # the benchmark's own throwaway key
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    base = (datetime.now(UTC) - timedelta(seconds=entries * 0.001 + 60)).timestamp()
    _bulk_append(ws.db, entries, pem, ci.keyid, base, workers)
    service.audit_checkpoint(config_path=ws.config)
    ws.image(3)  # the candidate waiting for env00: the newest build, after the filler
    return ws


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm: imports, caches, templates
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.9) - 1] * 1000


def _ok(answer: Any) -> None:
    if answer.status_code != 200 or "env-env00" not in answer.text:
        raise SystemExit(f"the board failed: {answer.status_code} {answer.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--environments", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs: at least 5")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the server process: bytecode cached
    for path in (ROOT / "src", Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(path, quiet=1, workers=args.workers)
    work = Path(tempfile.mkdtemp(prefix="conveyor-web-board-"))
    try:
        run(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    import httpx
    from fastapi.testclient import TestClient
    from tests.support.server import Team, start_server

    from conveyor.server.app import create_app
    from conveyor.server.state import ServerSettings
    from conveyor.server.web import views

    started = time.perf_counter()
    ws = build(work / "team", args.entries, args.environments, args.workers)
    app = create_app(ServerSettings(config_path=ws.config.resolve()))
    state = app.state.conveyor
    size = state.workspace().ledger.size()
    token = state.tokens().create("bench", identity="viewer", created_by="benchmark").token
    print(f"built {size:,} ledger entries ({args.entries:,} really-signed filler), "
          f"{args.environments} environments, in {time.perf_counter() - started:.0f} s",
          flush=True)  # fmt: skip
    statuses = service.status(workspace=state.workspace())
    waiting = sum(1 for s in statuses if s.candidate)
    print(f"board: {len(statuses)} columns, {waiting} candidates with their gates checked")

    rows: list[tuple[str, tuple[float, float]]] = []
    status = timed(lambda: service.status(workspace=state.workspace()), args.runs)
    rows.append(("in-process: service.status (the peer)", status))
    headers = {"Authorization": f"Bearer {token}"}
    ttl = views.BOARD_TTL
    with TestClient(app) as client:
        views.BOARD_TTL = 0.0  # every request computes the board
        rows.append(("in-process: GET / (ASGI, whole page), computed",
                     timed(lambda: _ok(client.get("/", headers=headers)), args.runs)))  # fmt: skip
        rows.append(("in-process: GET /?fragment=board, computed",
                     timed(lambda: client.get("/?fragment=board", headers=headers),
                           args.runs)))  # fmt: skip
        views.BOARD_TTL = ttl  # as served: reused while the ledger does not change
        rows.append(("in-process: GET /, ledger unchanged (board reused)",
                     timed(lambda: _ok(client.get("/", headers=headers)), args.runs)))  # fmt: skip
    state.close()

    team = Team(ws.root, ws.config)
    server = start_server(team)
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            rows.append(("over HTTP: GET / (conveyor serve, as served)",
                         timed(lambda: _ok(http.get("/")), args.runs)))  # fmt: skip
            rows.append(("over HTTP: GET /?fragment=board",
                         timed(lambda: http.get("/?fragment=board"), args.runs)))  # fmt: skip
        logged = sorted(
            float(line["duration_ms"])  # type: ignore[arg-type]
            for line in server.log_lines()
            if line.get("route") == "/" and line.get("status") == 200
        )[: 2 * args.runs + 2]
    finally:
        server.stop()
    if logged:
        logged.sort()
        rows.append(("server-side: GET / duration_ms (access log, as served)",
                     (statistics.median(logged), logged[int(len(logged) * 0.9) - 1])))  # fmt: skip

    peer = rows[0][1][0]
    print("\n| what | median | p90 | / service.status | target |")
    print("|---|---|---|---|---|")
    for name, (median, p90) in rows:
        target = f"< {TARGET_MS:.0f} ms: {'met' if median < TARGET_MS else 'NOT met'}"
        shown = target if name.startswith(("in-process: GET / (", "server-side")) else ""
        print(f"| {name} | {median:.1f} ms | {p90:.1f} ms | {median / peer:.2f}x | {shown} |")
    print(f"\n{args.runs} runs each after one warm-up; {size:,} entries, "
          f"{args.environments} environments.")  # fmt: skip


if __name__ == "__main__":
    main()
