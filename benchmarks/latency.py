# ruff: noqa: E402  (sys.path is set up before the project imports)
"""Per-command latency of the read commands at growing ledger sizes (issue 11).

    .venv/bin/python benchmarks/latency.py [--sizes 10000,100000,1000000] [--runs 5]

For each size a SQLite ledger is built whose every entry is really signed by a key of the
workspace's conveyor.yaml (signed in a process pool, bulk-loaded with valid leaves, tree
roots, nodes and head, as ``benchmarks/ledger.py`` does), then measured as processes:

    conveyor check REF --to dev      conveyor trace REF
    conveyor history production      conveyor status   (3 environments: dev → staging → production)

The ledger: a real pipeline first (5 images built, tested, scanned, promoted dev → staging →
production through ``conveyor.service`` into OCI layouts, so each environment's current
arrival lies at the *start* of the ledger: the worst case for newest-first reads), then the
filler (other digests' build, test and scan records, 3 per digest, every one verifiable),
a checkpoint signed with ``ledger.key``, then the candidate (a sixth image built, tested and
scanned: the newest entries, after the checkpoint). Per digest and per environment the
entries are the same at every size: only the ledger's size changes.

Measured processes run with PYTHONDONTWRITEBYTECODE unset after ``compileall`` of src/ and
the environment's site-packages (the installed state), as users run them: the console script
beside the interpreter; medians of ``--runs`` runs, the commands alternated. Also printed:
``python -X importtime`` top imports of ``conveyor status``.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import compileall
import hashlib
import json
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sysconfig
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks import _filler as filler

from conveyor import service
from conveyor.ledger import merkle, open_ledger
from conveyor.ledger.models import format_time, leaf_data, statement_sha256

_SCRIPT = Path(sys.executable).with_name("conveyor")
# What users run: the console script (``-m conveyor`` adds runpy's imports).
CONVEYOR = [sys.executable, *([str(_SCRIPT)] if _SCRIPT.is_file() else ["-m", "conveyor"])]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ENVIRONMENTS = ("dev", "staging", "production")
TARGET_SECONDS = 0.3
FLAT = 1.5
CONFIG = """\
version: 1
identities:
  ci:       {{key: keys/ci.pub,       roles: [builder, tester, scanner]}}
  deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  alice:    {{key: keys/alice.pub,    roles: [approver]}}
ledger:
  url: sqlite:///{db}
  key: keys/ledger.key
  public_key: keys/ledger.pub
environments:
  dev:
    repository: oci:{root}/dev
    requires:
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0}}}}
  staging:
    repository: oci:{root}/staging
    requires:
      after: dev
      tests: {{min_passed: 1, max_failed: 0}}
  production:
    repository: oci:{root}/production
    requires:
      after: staging
      approvals: {{count: 1}}
"""
PASSING = '<testsuite name="u"><testcase name="a"/><testcase name="b"/></testsuite>'

# --- the filler: really signed records of other digests, signed in a process pool ----------


def _bulk_append(db: Path, n: int, pem: bytes, keyid: str, base: float, workers: int) -> None:
    """Append ``n`` signed filler entries after the ledger's current head, with raw SQL but
    every leaf, root, node and the head as the ledger itself would write them."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # bulk load only
    conn.execute("BEGIN")
    size, frontier = conn.execute("SELECT size, frontier FROM ledger_head").fetchone()
    compact = merkle.CompactRange.from_bytes(size, bytes(frontier))
    columns = (
        "idx, envelope, envelope_sha256, leaf_hash, subject_digest, subject_name, "
        "predicate_type, kind, environment, source_commit, signer, keyid, recorded_at, "
        "tree_root, statement_sha256, occurrence"
    )
    insert = f"INSERT INTO ledger_entries ({columns}) VALUES ({', '.join('?' * 16)})"  # noqa: S608
    nodes: list[tuple[int, int, bytes]] = []
    i = 0
    for chunk in filler.signed(pem, n, base, workers):
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
                    subject_name="registry.example/filler", predicate_type=predicate_type,
                    environment=None, commit=commit, signer="ci", keyid=keyid,
                    envelope_sha256=env_sha,
                )
            )  # fmt: skip
            compact.append(leaf, lambda lv, ix, h: nodes.append((lv, ix, h)))
            rows.append(
                (index, envelope, env_sha, leaf, digest, "registry.example/filler",
                 predicate_type, kind, None, commit, "ci", keyid, recorded, compact.root(),
                 statement_sha256(envelope), 0)
            )  # fmt: skip
            i += 1
        conn.executemany(insert, rows)
        conn.executemany("INSERT INTO ledger_nodes VALUES (?, ?, ?)", nodes)
        nodes.clear()
    conn.execute(
        "UPDATE ledger_head SET size = ?, root = ?, frontier = ?",
        (compact.size, compact.root(), compact.to_bytes()),
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


# --- the workspace ------------------------------------------------------------------------


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "ledger.db"
        for name in ("ci", "deployer", "alice", "ledger"):
            service.generate_keys(name, out_dir=root / "keys")
        self.config = root / "conveyor.yaml"
        self.config.write_text(CONFIG.format(db=self.db, root=root))

    def key(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    def image(self, n: int) -> str:
        made = service.create_sample_image(
            f"oci:{self.root / 'build'}:v{n}", labels={"git.commit": COMMIT, "ci.run": str(n)}
        )
        return f"oci:{self.root / 'build'}@{made.digest}"

    def evidence(self, ref: str, n: int) -> None:
        common: dict[str, Any] = {"key": self.key("ci"), "config_path": self.config}
        service.record_build(ref, commit=COMMIT, run_id=str(n), **common)
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

    def pipeline(self, n: int) -> str:
        ref = self.image(n)
        self.evidence(ref, n)
        deploy: dict[str, Any] = {"key": self.key("deployer"), "config_path": self.config}
        service.promote(ref, environment="dev", **deploy)
        service.promote(ref, environment="staging", **deploy)
        service.approve(
            ref, environment="production", key=self.key("alice"), config_path=self.config
        )
        service.promote(ref, environment="production", **deploy)
        return ref


def build(root: Path, filler: int, workers: int) -> tuple[Workspace, str, float]:
    from cryptography.hazmat.primitives import serialization

    from conveyor.attest import load_signing_key

    ws = Workspace(root)
    t = time.perf_counter()
    for n in range(5):
        ws.pipeline(n)
    ci = load_signing_key(ws.key("ci"))
    pem = ci._key.private_bytes(  # the benchmark's own throwaway key
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    # Filler times end just before now (1 ms apart): every signed time is within bounds.
    base = (datetime.now(UTC) - timedelta(seconds=filler * 0.001 + 60)).timestamp()
    _bulk_append(ws.db, filler, pem, ci.keyid, base, workers)
    service.audit_checkpoint(config_path=ws.config)
    candidate = ws.image(99)
    ws.evidence(candidate, 99)
    return ws, candidate, time.perf_counter() - t


def _env(src: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PG"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure the installed state: bytecode cached
    if src is not None:  # another checkout's code (--baseline) ahead of the installed one
        env["PYTHONPATH"] = str(src)
    return env


def _run(ws: Workspace, argv: list[str], src: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one ``conveyor ARGV`` process."""
    config = ["--config", str(ws.config)] if argv != ["--version"] else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    result = subprocess.run(
        [*CONVEYOR, *argv, *config],
        cwd=ws.root, env=_env(src), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if result.returncode not in (0, 1):
        raise SystemExit(f"conveyor {' '.join(argv)} failed: {result.stderr.strip()}")
    if "do not belong" in result.stderr or "Traceback" in result.stderr:
        raise SystemExit(f"conveyor {' '.join(argv)}: {result.stderr.strip()}")
    return elapsed, cpu


def commands(candidate: str) -> dict[str, list[str]]:
    return {
        "check REF --to dev": ["check", candidate, "--to", "dev"],
        "trace REF": ["trace", candidate],
        "history production": ["history", "production"],
        "status (3 environments)": ["status"],
    }


_IN_PROCESS = """
import statistics, sys, time
from conveyor import service
config, candidate, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = {
    "check REF --to dev": lambda: service.check(candidate, environment="dev", config_path=config),
    "trace REF": lambda: service.trace(candidate, config_path=config),
    "history production": lambda: service.history("production", config_path=config),
    "status (3 environments)": lambda: service.status(config_path=config),
}
for call in calls.values():
    call()  # imports, caches
for name, call in calls.items():
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    print(f"{name}\t{statistics.median(times)}")
"""


def measure(ws: Workspace, candidate: str, runs: int, baseline: Path | None) -> dict[str, float]:
    """Medians (s): each command as a process (and with the --baseline code), the
    ``--version`` floor, and each operation in one warm process (no start-up, no imports).
    Also each process's CPU time (user + system): on a shared machine it moves less than the
    wall time when other work competes for the cores."""
    cmds = {**commands(candidate), "--version (floor)": ["--version"]}
    codes: list[tuple[str, Path | None]] = [("", None)]
    if baseline is not None:
        codes.append(("before: ", baseline))
    times: dict[str, list[float]] = {f"{p}{n}": [] for p, _ in codes for n in cmds}
    cpu: dict[str, list[float]] = {f"cpu: {name}": [] for name in times}
    for _, src in codes:
        for argv in cmds.values():
            _run(ws, argv, src)  # warm the page cache and the bytecode
    for _ in range(runs):  # alternated
        for name, argv in cmds.items():
            for prefix, src in codes:
                wall, used = _run(ws, argv, src)
                times[f"{prefix}{name}"].append(wall)
                cpu[f"cpu: {prefix}{name}"].append(used)
    result = {name: statistics.median(values) for name, values in (times | cpu).items()}
    warm = subprocess.run(
        [sys.executable, "-c", _IN_PROCESS, str(ws.config), candidate, str(runs)],
        cwd=ws.root, env=_env(), capture_output=True, text=True, timeout=1200, check=True,
    )  # fmt: skip
    for line in warm.stdout.splitlines():
        name, seconds = line.split("\t")
        result[f"in-process: {name}"] = float(seconds)
    return result


def import_profile(ws: Workspace, top: int = 8) -> list[tuple[int, str]]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *CONVEYOR[1:], "status",
         "--config", str(ws.config)],
        cwd=ws.root, env=_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self_us, cumulative, name = line[len("import time:") :].split("|")
        if cumulative.strip().isdigit():
            rows.append((int(cumulative), name.rstrip()))
    # The modules conveyor imports directly or its packages: one level below the top.
    shallow = [(us, name.strip()) for us, name in rows if len(name) - len(name.lstrip()) <= 3]
    return sorted(shallow, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the built workspaces")
    parser.add_argument(
        "--baseline", type=Path, help="also measure the commands with this src/ (older code)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for path in (ROOT / "src", Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(path, quiet=1, workers=args.workers)
    print("bytecode compiled (src/ and site-packages); PYTHONDONTWRITEBYTECODE unset for runs")
    work = Path(tempfile.mkdtemp(prefix="conveyor-latency-"))
    results: dict[int, dict[str, float]] = {}
    try:
        for size in sizes:
            root = work / f"n{size}"
            root.mkdir()
            ws, candidate, took = build(root, size, args.workers)
            ledger = open_ledger(f"sqlite:///{ws.db}")
            entries = ledger.size()
            ledger.close()
            print(f"built {entries:,} signed entries in {took:.0f} s", flush=True)
            results[entries] = measure(ws, candidate, args.runs, args.baseline)
            if size == sizes[-1]:
                print("\n`python -X importtime -m conveyor status`, top imports (cumulative):")
                for micros, name in import_profile(ws):
                    print(f"  {micros / 1000:7.1f} ms  {name}")
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sizes_done = sorted(results)
    names = list(results[sizes_done[0]])
    header = "| command | " + " | ".join(f"{n:,} entries" for n in sizes_done)
    print(f"\n{header} | largest / smallest | target |")
    print("|---" * (len(sizes_done) + 3) + "|")
    for name in names:
        cells = [results[n][name] for n in sizes_done]
        ratio = cells[-1] / cells[0]
        target = "" if "before" in name or "floor" in name else f"<= {FLAT}x"
        if name.startswith("cpu: "):
            target = ""
        elif not name.startswith(("in-process", "before", "--version")):
            target = f"<= {TARGET_SECONDS} s at 100k, {target}"
        print(
            f"| {name} | "
            + " | ".join(f"{c * 1000:.0f} ms" for c in cells)
            + f" | {ratio:.2f}x | {target} |"
        )


if __name__ == "__main__":
    main()
