# ruff: noqa: E402  (sys.path is set up before the project imports)
"""Ledger benchmark on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/ledger.py [--entries N] [--lookup-entries M] [--no-postgres]

For each backend:
- append throughput of Ed25519-signed, DSSE-shaped envelopes (signed beforehand with
  ``cryptography``; the signing rate is printed separately): one transaction per append
  (durable: SQLite WAL + synchronous=FULL, PostgreSQL with fsync on), and 100 appends per
  ``serialized()`` block (one commit per block);
- ``verify_ledger`` throughput over those entries, every Ed25519 signature checked (the
  callback parses the envelope, rebuilds the DSSE PAE and verifies), and without signatures;
- inclusion-proof time at that size;
- at M entries (default 1,000,000; built fast by bulk-loading precomputed rows — valid
  leaves, tree roots, nodes and head; placeholder envelopes that are not signed): a
  ``trace``-style lookup of every entry of one digest, and an inclusion proof.

The machine is shared with other work: numbers are noisy; compare ratios within one run.
"""

from __future__ import annotations

import os
import sys

# benchmarks/ holds copy.py: keep this directory off sys.path so ``import copy`` (done by
# dataclasses and others) finds the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import base64
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conveyor.ledger import merkle, open_ledger, parse_checkpoint, verify_ledger
from conveyor.ledger.audit import POOL_MIN_ENTRIES
from conveyor.ledger.models import leaf_data, statement_sha256
from conveyor.ledger.sql import SqlLedger

PAYLOAD_TYPE = "application/vnd.in-toto+json"
TARGETS = {"append": 1000.0, "verify": 20000.0, "lookup_ms": 20.0}


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def signed_envelope(i: int, key: Ed25519PrivateKey, digest: str) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example.com/app", "digest": {"sha256": digest[7:]}}],
        "predicateType": "https://conveyor.dev/attestation/benchmark/v1",
        "predicate": {"n": i, "job": "https://ci.example.com/run/1"},
    }
    payload = json.dumps(statement, separators=(",", ":")).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return json.dumps(
        {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "bench", "sig": base64.b64encode(sig).decode()}],
        },
        separators=(",", ":"),
    ).encode()


def envelope_verifier(public: Ed25519PublicKey) -> Callable[[bytes], None]:
    def verify(envelope: bytes) -> None:
        doc = json.loads(envelope)
        payload = base64.b64decode(doc["payload"], validate=True)
        sig = base64.b64decode(doc["signatures"][0]["sig"], validate=True)
        public.verify(sig, pae(doc["payloadType"], payload))

    return verify


def digest_of(n: int) -> str:
    return f"sha256:{hashlib.sha256(str(n).encode()).hexdigest()}"


@dataclass
class Row:
    backend: str
    what: str
    value: str
    target: str = ""


def _append_all(ledger: SqlLedger, envelopes: list[tuple[bytes, str]], batch: int) -> float:
    kinds = ("build", "tests", "scan", "approval", "promotion")
    start = time.perf_counter()
    items = iter(enumerate(envelopes))

    def one(i: int, env: bytes, digest: str) -> None:
        ledger.append(
            env,
            subject_digest=digest,
            subject_name="registry.example.com/app",
            predicate_type="https://conveyor.dev/attestation/benchmark/v1",
            kind=kinds[i % 5],
            signer="ci",
            keyid="bench",
            environment="production" if i % 5 == 4 else None,
            commit=f"{i // 10:040x}",
        )

    if batch <= 1:
        for i, (env, digest) in items:
            one(i, env, digest)
    else:
        done = False
        while not done:
            with ledger.serialized("benchmark"):
                for _ in range(batch):
                    nxt = next(items, None)
                    if nxt is None:
                        done = True
                        break
                    one(nxt[0], *nxt[1])
    return time.perf_counter() - start


def _proof_ms(ledger: SqlLedger, size: int, samples: int = 200) -> float:
    rng = random.Random(7)
    times = []
    for _ in range(samples):
        index = rng.randrange(size)
        t = time.perf_counter()
        ledger.inclusion_proof(index, size)
        times.append(time.perf_counter() - t)
    return statistics.mean(times) * 1000


def _sqlite_fsync_ceiling(directory: Path, n: int = 200) -> float:
    path = directory / "fsync-probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 600))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def bench_small(
    backend: str, url: str, envelopes: list[tuple[bytes, str]], verify: Callable[[bytes], None]
) -> list[Row]:
    rows: list[Row] = []
    ledger = open_ledger(url)
    try:
        half = len(envelopes) // 2
        single = _append_all(ledger, envelopes[:half], batch=1)
        rows.append(
            Row(backend, "append, 1 commit each (entries/s)", f"{half / single:,.0f}", ">= 1,000")
        )
        batched = _append_all(ledger, envelopes[half:], batch=100)
        n = len(envelopes) - half
        rows.append(
            Row(backend, "append, 100 per commit (entries/s)", f"{n / batched:,.0f}", ">= 1,000")
        )
        size = ledger.size()
        t = time.perf_counter()
        report = verify_ledger(ledger, verify_envelope=verify)
        elapsed = time.perf_counter() - t
        assert report.ok, report.problems
        assert report.checked_signatures == size
        rows.append(
            Row(backend, f"audit verify, Ed25519 sigs ({size} entries/s)", f"{size / elapsed:,.0f}",
                ">= 20,000")
        )  # fmt: skip
        t = time.perf_counter()
        report = verify_ledger(ledger, verify_envelope=None)
        elapsed = time.perf_counter() - t
        assert report.ok
        rows.append(
            Row(backend, f"audit verify, hashes only ({size} entries/s)", f"{size / elapsed:,.0f}")
        )
        rows.append(
            Row(backend, f"inclusion proof at {size} (ms)", f"{_proof_ms(ledger, size):.2f}")
        )
    finally:
        ledger.close()
    return rows


# -- the 1M table --------------------------------------------------------------------------

ENTRY_COLUMNS = (
    "idx, envelope, envelope_sha256, leaf_hash, subject_digest, subject_name, predicate_type, "
    "kind, environment, source_commit, signer, keyid, recorded_at, tree_root, statement_sha256"
)


def bulk_rows(
    n: int, digests: int, chunk: int = 50_000
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[int, int, bytes]], merkle.CompactRange]]:
    """Chunks of entry rows (valid leaves and roots; placeholder envelopes), new nodes, frontier."""
    rng = random.Random(1)
    compact = merkle.CompactRange()
    kinds = ("build", "tests", "scan", "approval", "promotion")
    rows: list[tuple[Any, ...]] = []
    nodes: list[tuple[int, int, bytes]] = []
    base = 1_767_225_600  # 2026-01-01T00:00:00Z

    def keep(level: int, index: int, h: bytes) -> None:
        nodes.append((level, index, h))

    for i in range(n):
        digest = f"sha256:{rng.randrange(digests):064x}"
        payload = base64.b64encode(b"bulk-%d" % i)
        envelope = b'{"payloadType":"application/vnd.in-toto+json","payload":"%s"}' % payload
        env_sha = hashlib.sha256(envelope).hexdigest()
        seconds, micro = divmod(i, 1_000_000)
        recorded = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + seconds))
        recorded += f".{micro:06d}Z"
        kind = kinds[i % 5]
        environment = "production" if i % 5 == 4 else None
        commit = f"{i // 10:040x}"
        leaf = merkle.leaf_hash(
            leaf_data(
                index=i,
                recorded_at=recorded,
                kind=kind,
                subject_digest=digest,
                subject_name="registry.example.com/app",
                predicate_type="bulk",
                environment=environment,
                commit=commit,
                signer="ci",
                keyid="bench",
                envelope_sha256=env_sha,
            )
        )
        compact.append(leaf, keep)
        rows.append(
            (i, envelope, env_sha, leaf, digest, "registry.example.com/app", "bulk", kind,
             environment, commit, "ci", "bench", recorded, compact.root(),
             statement_sha256(envelope))
        )  # fmt: skip
        if len(rows) == chunk:
            yield rows, nodes, compact
            rows = []
            nodes.clear()
    if rows:
        yield rows, nodes, compact


class SqliteLoader:
    def __init__(self, path: Path) -> None:
        open_ledger(f"sqlite:///{path}").close()
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=OFF")  # bulk load only
        self.conn.execute("BEGIN")

    def load(self, rows: list[tuple[Any, ...]], nodes: list[tuple[int, int, bytes]]) -> None:
        marks = ", ".join("?" * 15)
        insert = f"INSERT INTO ledger_entries ({ENTRY_COLUMNS}) VALUES ({marks})"  # noqa: S608
        self.conn.executemany(insert, rows)
        self.conn.executemany("INSERT INTO ledger_nodes VALUES (?, ?, ?)", nodes)

    def finish(self, compact: merkle.CompactRange) -> None:
        self.conn.execute(
            "UPDATE ledger_head SET size = ?, root = ?, frontier = ?",
            (compact.size, compact.root(), compact.to_bytes()),
        )
        self.conn.execute("COMMIT")
        self.conn.execute("ANALYZE")
        self.conn.close()


class PostgresLoader:
    def __init__(self, url: str, dsn: str) -> None:
        import psycopg

        open_ledger(url).close()
        self.conn = psycopg.connect(dsn)

    def load(self, rows: list[tuple[Any, ...]], nodes: list[tuple[int, int, bytes]]) -> None:
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY ledger_entries ({ENTRY_COLUMNS}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
            with cur.copy("COPY ledger_nodes (level, idx, hash) FROM STDIN") as copy:
                for node in nodes:
                    copy.write_row(node)

    def finish(self, compact: merkle.CompactRange) -> None:
        self.conn.execute(
            "UPDATE ledger_head SET size = %s, root = %s, frontier = %s",
            (compact.size, compact.root(), compact.to_bytes()),
        )
        self.conn.commit()
        self.conn.autocommit = True
        self.conn.execute("VACUUM ANALYZE")
        self.conn.close()


def bench_lookup(targets: dict[str, str], loaders: dict[str, Any], n: int) -> list[Row]:
    digests = max(n // 10, 1)  # ~10 entries per digest: build, tests, scans, approvals, …
    t = time.perf_counter()
    last: merkle.CompactRange | None = None
    for rows, nodes, compact in bulk_rows(n, digests):
        for loader in loaders.values():
            loader.load(rows, nodes)
        last = compact
    assert last is not None
    for loader in loaders.values():
        loader.finish(last)
    build = time.perf_counter() - t
    out = [Row("both", f"bulk-build {n:,} rows (s, not a target)", f"{build:.1f}")]
    rng = random.Random(3)
    probes = [f"sha256:{rng.randrange(digests):064x}" for _ in range(200)]
    for backend, url in targets.items():
        ledger = open_ledger(url)
        try:
            assert ledger.size() == n
            ledger.entries(subject_digest=probes[0])  # warm the pool
            times, found = [], 0
            for d in probes:
                t = time.perf_counter()
                found += len(ledger.entries(subject_digest=d))
                times.append(time.perf_counter() - t)
            times.sort()
            hits = found / len(probes)
            out.append(
                Row(backend, f"lookup one digest at {n:,} (median ms, ~{hits:.0f} hits)",
                    f"{statistics.median(times) * 1000:.2f}", "<= 20 ms")
            )  # fmt: skip
            out.append(
                Row(backend, f"lookup one digest at {n:,} (p95 ms)",
                    f"{times[int(len(times) * 0.95)] * 1000:.2f}", "<= 20 ms")
            )  # fmt: skip
            out.append(
                Row(backend, f"inclusion proof at {n:,} (ms)", f"{_proof_ms(ledger, n):.2f}")
            )
            root = ledger.root_at(n)
            proof = ledger.inclusion_proof(n // 3, n)
            assert merkle.verify_inclusion(ledger.entry(n // 3).leaf_hash, n // 3, n, proof, root)
        finally:
            ledger.close()
    return out


# -- audit verify at scale: really-signed entries -------------------------------------------

AUDIT_DIGESTS = 100_000
_SIGNING_KEY: Any = None


def _signer_init(pem: bytes) -> None:
    global _SIGNING_KEY
    from conveyor.attest import load_signing_key

    with tempfile.NamedTemporaryFile(suffix=".key") as f:
        f.write(pem)
        f.flush()
        _SIGNING_KEY = load_signing_key(f.name)


def _audit_facts(i: int) -> tuple[str, str, str | None, str]:
    """(subject digest, predicate type, environment, kind) of audit entry ``i``."""
    from conveyor.attest import APPROVAL_V1, SLSA_PROVENANCE_V1

    digest = f"sha256:{hashlib.sha256(b'%d' % (i % AUDIT_DIGESTS)).hexdigest()}"
    if i % 5 == 4:
        return digest, APPROVAL_V1, "production", "approval"
    return digest, SLSA_PROVENANCE_V1, None, "build"


def _sign_range(bounds: tuple[int, int]) -> list[bytes]:
    """Really signed DSSE envelopes of in-toto statements for entries [start, end)."""
    from conveyor.attest import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope
    from conveyor.oci.digest import Digest

    out = []
    for i in range(*bounds):
        digest, predicate_type, environment, _ = _audit_facts(i)
        predicate: dict[str, Any] = {"n": i, "job": "https://ci.example.com/run/1"}
        if environment:
            predicate["environment"] = environment
        statement = make_statement(
            "registry.example.com/app", Digest.parse(digest), predicate_type, predicate
        )
        out.append(sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [_SIGNING_KEY]))
    return out


def signed_envelopes(pem: bytes, start: int, end: int, workers: int) -> Iterator[list[bytes]]:
    """Envelopes start..end-1 in order, signed in a process pool, in chunks."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    step = 5_000
    bounds = [(a, min(a + step, end)) for a in range(start, end, step)]
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_signer_init, initargs=(pem,)
    ) as pool:
        yield from pool.map(_sign_range, bounds)


def bulk_load_signed(path: Path, n: int, pem: bytes, keyid: str, workers: int) -> float:
    """A SQLite ledger of ``n`` really-signed entries, bulk-loaded (every hash valid)."""
    open_ledger(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # bulk load only
    conn.execute("BEGIN")
    compact = merkle.CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    base = 1_767_225_600
    i = 0
    marks = ", ".join("?" * 15)
    insert = f"INSERT INTO ledger_entries ({ENTRY_COLUMNS}) VALUES ({marks})"  # noqa: S608
    t = time.perf_counter()
    for chunk in signed_envelopes(pem, 0, n, workers):
        rows = []
        for envelope in chunk:
            digest, predicate_type, environment, kind = _audit_facts(i)
            seconds, micro = divmod(i, 1_000_000)
            recorded = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + seconds))
            recorded += f".{micro:06d}Z"
            env_sha = hashlib.sha256(envelope).hexdigest()
            leaf = merkle.leaf_hash(
                leaf_data(
                    index=i, recorded_at=recorded, kind=kind, subject_digest=digest,
                    subject_name="registry.example.com/app", predicate_type=predicate_type,
                    environment=environment, commit=None, signer="ci", keyid=keyid,
                    envelope_sha256=env_sha,
                )
            )  # fmt: skip
            compact.append(leaf, lambda lv, ix, h: nodes.append((lv, ix, h)))
            rows.append(
                (i, envelope, env_sha, leaf, digest, "registry.example.com/app", predicate_type,
                 kind, environment, None, "ci", keyid, recorded, compact.root(),
                 statement_sha256(envelope))
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
    return time.perf_counter() - t


def _verify_loop(n: int) -> float:
    """``n`` Ed25519 verifications, the CPU-bound core of an audit; returns its wall time."""
    key = Ed25519PrivateKey.generate()
    message = b"x" * 600
    signature = key.sign(message)
    public = key.public_key()
    t = time.perf_counter()
    for _ in range(n):
        public.verify(signature, message)
    return time.perf_counter() - t


def machine_ceiling(cores: int, n: int = 20_000, runs: int = 3) -> float:
    """How much faster ``cores`` processes verify than one on this machine right now (the
    floor any parallel audit is measured against): one process doing ``cores * n`` vs
    ``cores`` started processes doing ``n`` each at once."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    ratios = []
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
        list(pool.map(_verify_loop, [10] * cores))  # started and warm
        for _ in range(runs):
            alone = _verify_loop(cores * n)
            t = time.perf_counter()
            list(pool.map(_verify_loop, [n] * cores))
            ratios.append(alone / (time.perf_counter() - t))
    return statistics.median(ratios)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_audit(ledger: SqlLedger, **kwargs: Any) -> tuple[float, Any, float]:
    """Wall seconds, the report, and CPU seconds spent (this process + its pool's workers,
    start-up included: the pool is shut down, so its workers are reaped, before we read)."""
    cpu = time.process_time() + _children_cpu()
    t = time.perf_counter()
    report = verify_ledger(ledger, **kwargs)
    elapsed = time.perf_counter() - t
    assert report.ok, report.problems[:3]
    return elapsed, report, time.process_time() + _children_cpu() - cpu


def bench_audit(full_n: int, big_n: int, new_n: int, runs: int) -> list[Row]:
    """Full audit serial vs every core at ``full_n``; incremental audit of ``new_n`` entries
    appended to a ``big_n`` ledger that a trusted checkpoint covers. All signatures real."""
    from cryptography.hazmat.primitives import serialization

    from conveyor.attest import Signer, generate_key
    from conveyor.signed_facts import EnvelopeFacts

    cores = os.cpu_count() or 1
    ci = Signer(generate_key("ed25519"))
    pem = ci._key.private_bytes(  # the benchmark's own throwaway key
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    facts = EnvelopeFacts.from_verifiers({"ci": ci.verifier()})
    ledger_key = Signer(generate_key("ed25519"))
    trusted = {ledger_key.keyid: ledger_key.verifier()}
    work = Path(tempfile.mkdtemp(prefix="conveyor-audit-bench-"))
    rows: list[Row] = []
    try:
        small = work / "full.db"
        build = bulk_load_signed(small, full_n, pem, ci.keyid, cores)
        rows.append(
            Row("sqlite", f"sign + bulk-load {full_n:,} signed entries (s)", f"{build:.1f}")
        )
        ledger = open_ledger(f"sqlite:///{small}")
        try:
            serial, parallel, serial_cpu, parallel_cpu = [], [], [], []
            for _ in range(runs):  # alternated, medians
                elapsed, _, cpu = _timed_audit(ledger, verify_envelope=facts, workers=1)
                serial.append(elapsed)
                serial_cpu.append(cpu)
                elapsed, report, cpu = _timed_audit(ledger, verify_envelope=facts, workers=cores)
                assert report.workers == cores or full_n < POOL_MIN_ENTRIES
                parallel.append(elapsed)
                parallel_cpu.append(cpu)
            s, p = statistics.median(serial), statistics.median(parallel)
            overhead = statistics.median(parallel_cpu) / statistics.median(serial_cpu)
            rows.append(Row("sqlite", f"full audit {full_n:,}, 1 process (entries/s)",
                            f"{full_n / s:,.0f}"))  # fmt: skip
            rows.append(Row("sqlite", f"full audit {full_n:,}, {cores} processes (entries/s)",
                            f"{full_n / p:,.0f}"))  # fmt: skip
            rows.append(Row("sqlite", f"parallel / serial rate ({cores} cores)", f"{s / p:.2f}x",
                            ">= 1.8x"))  # fmt: skip
            rows.append(Row("-", f"machine ceiling: {cores} processes vs 1, bare Ed25519 loop",
                            f"{machine_ceiling(cores):.2f}x"))  # fmt: skip
            # Load-independent view: CPU the parallel audit spends per unit of serial CPU
            # (pickling, start-up, the main process's tree). On idle cores the rate ratio is
            # bounded by cores / this.
            rows.append(Row("sqlite", "parallel CPU / serial CPU (all processes)",
                            f"{overhead:.2f}x"))  # fmt: skip
            rows.append(Row("sqlite", f"rate ratio on {cores} idle cores, bound from CPU",
                            f"{cores / overhead:.2f}x", ">= 1.8x"))  # fmt: skip
        finally:
            ledger.close()
        big = work / "big.db"
        build = bulk_load_signed(big, big_n, pem, ci.keyid, cores)
        rows.append(Row("sqlite", f"sign + bulk-load {big_n:,} signed entries (s)", f"{build:.1f}"))
        ledger = open_ledger(f"sqlite:///{big}")
        try:
            checkpoint = parse_checkpoint(ledger.checkpoint(ledger_key).to_text())
            t = time.perf_counter()
            for i, envelope in enumerate(
                e for chunk in signed_envelopes(pem, big_n, big_n + new_n, cores) for e in chunk
            ):
                digest, predicate_type, environment, kind = _audit_facts(big_n + i)
                ledger.append(
                    envelope, subject_digest=digest, subject_name="registry.example.com/app",
                    predicate_type=predicate_type, kind=kind, signer="ci", keyid=ci.keyid,
                    environment=environment,
                )  # fmt: skip
            rows.append(Row("sqlite", f"append {new_n:,} entries at {big_n:,} (s, not a target)",
                            f"{time.perf_counter() - t:.1f}"))  # fmt: skip
            times = []
            for _ in range(runs):
                elapsed, report, _ = _timed_audit(
                    ledger, verify_envelope=facts, checkpoint=checkpoint,
                    checkpoint_verifiers=trusted, incremental=True,
                )  # fmt: skip
                assert report.incremental
                assert report.checked_signatures == new_n
                times.append(elapsed)
            rows.append(Row("sqlite", f"incremental audit: {new_n:,} new on {big_n:,} (s)",
                            f"{statistics.median(times):.3f}", "<= 1 s"))  # fmt: skip
        finally:
            ledger.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _compile_installed_state() -> str:
    """Benchmarks measure the installed state: bytecode compiled, and written by children."""
    import compileall
    import sysconfig

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    for directory in (ROOT / "src", Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(str(directory), quiet=1, workers=0)
    return "bytecode compiled (src/ and site-packages); PYTHONDONTWRITEBYTECODE unset"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=2000, help="signed entries to append")
    parser.add_argument("--lookup-entries", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--audit-only", action="store_true", help="only the audit verify measures (below)"
    )
    parser.add_argument("--audit-full-entries", type=int, default=50_000,
                        help="ledger size for full audit, serial vs every core")  # fmt: skip
    parser.add_argument("--audit-big-entries", type=int, default=1_000_000,
                        help="ledger size a checkpoint covers (incremental)")  # fmt: skip
    parser.add_argument("--audit-new-entries", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    compiled = _compile_installed_state()
    if args.audit_only:
        t = time.perf_counter()
        rows = bench_audit(
            args.audit_full_entries, args.audit_big_entries, args.audit_new_entries, args.runs
        )
        _print(rows, compiled, time.perf_counter() - t)
        return

    key = Ed25519PrivateKey.generate()
    t = time.perf_counter()
    envelopes = [
        (signed_envelope(i, key, digest_of(i // 5)), digest_of(i // 5)) for i in range(args.entries)
    ]
    sign_rate = args.entries / (time.perf_counter() - t)
    verify = envelope_verifier(key.public_key())

    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    rows: list[Row] = [
        Row("-", "Ed25519 envelope signing (envelopes/s, not timed below)", f"{sign_rate:,.0f}")
    ]
    rows.append(
        Row(
            "sqlite",
            "raw SQLite WAL+FULL commit ceiling (commits/s)",
            f"{_sqlite_fsync_ceiling(work):,.0f}",
        )
    )
    server = None
    try:
        rows += bench_small("sqlite", f"sqlite:///{work / 'small.db'}", envelopes, verify)
        if not args.no_postgres:
            from tests.support.postgres import start_postgres

            try:
                server = start_postgres(fsync=True)
            except BaseException as error:  # pytest.skip outside pytest: binaries absent
                rows.append(Row("postgresql", "skipped", str(error)[:60]))
        if server is not None:
            rows += bench_small("postgresql", server.create_database(), envelopes, verify)
        targets = {"sqlite": f"sqlite:///{work / 'big.db'}"}
        loaders: dict[str, Any] = {"sqlite": SqliteLoader(work / "big.db")}
        if server is not None:
            url = server.create_database()
            targets["postgresql"] = url
            loaders["postgresql"] = PostgresLoader(
                url,
                f"host=127.0.0.1 port={server.port} user=postgres dbname={url.rsplit('/', 1)[1]}",
            )
        rows += bench_lookup(targets, loaders, args.lookup_entries)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows += bench_audit(
        args.audit_full_entries, args.audit_big_entries, args.audit_new_entries, args.runs
    )
    _print(rows, compiled, None)


def _print(rows: list[Row], compiled: str, seconds: float | None) -> None:
    load = os.getloadavg()[0]
    print(f"\nconveyor ledger benchmark — {os.cpu_count()} CPUs, load average {load:.1f} "
          "(shared machine: numbers are noisy; compare within one run)")  # fmt: skip
    print(f"{compiled}. PostgreSQL runs with fsync on; SQLite WAL + synchronous=FULL.")
    if seconds is not None:
        print(f"wall time {seconds:.0f} s")
    print()
    width = max(len(r.what) for r in rows)
    print(f"| backend    | {'measure'.ljust(width)} | value      | target    |")
    print(f"| ---------- | {'-' * width} | ---------- | --------- |")
    for r in rows:
        print(f"| {r.backend:<10} | {r.what.ljust(width)} | {r.value:>10} | {r.target:<9} |")


if __name__ == "__main__":
    main()
