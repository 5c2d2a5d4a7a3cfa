"""The admission webhook's latency, warm, at a steady request rate, with a large ledger.

One ``conveyor serve`` (SQLite, TLS) whose production environment has real promotions made
through the API; the ledger is then filled with ``--entries`` Ed25519-signed envelopes (signed
with the team's ci key, appended through the ledger's own ``append``). AdmissionReviews for a
Pod running the current digest are sent at ``--rate`` requests/s (open loop: each request
starts on its schedule, whatever the last one did) over kept-alive HTTPS connections.

Printed, measured in the same run:
- webhook p50/p99 (ms) warm, at the rate (the issue's bound: p99 <= 20 ms at 200/s, 100,000
  entries);
- the same load while promotions arrive (a build and a promotion through the API, one after
  the other, for ``--seconds``): p50/p99 of every review, and the refill: the latency of a
  probe review sent right after each promotion returns (it pays the cache refill), and the
  server's own ``conveyor_admission_refill_seconds`` histogram where the server has it;
- the peer: the same decision without the cache, i.e. one verified ``service.history`` read of
  the environment through one open workspace (in-process, no HTTP), p50/p99, and the ratio.

    .venv/bin/python benchmarks/admission.py [--entries 100000] [--rate 200] [--seconds 10]
"""

# ruff: noqa: E402  (sys.path is set up before the project imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import base64
import hashlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from tests.support.admission import (
    IDENTITIES,
    TlsServer,
    admission_team,
    build,
    pod_review,
    promote,
    start_tls_server,
)
from tests.support.bench import compile_bytecode

from conveyor import service
from conveyor.ledger import open_ledger

PAYLOAD_TYPE = "application/vnd.in-toto+json"
GRACE = 20.0  # seconds a load phase may run past its length before the rest is not sent


def _pae(payload: bytes) -> bytes:
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _fill(url: str, key_path: Path, entries: int) -> tuple[float, float]:
    """Appends ``entries`` signed build statements; returns (sign seconds, append seconds)."""
    key = load_pem_private_key(key_path.read_bytes(), password=None)
    started = time.perf_counter()
    envelopes = []
    for i in range(entries):
        digest = hashlib.sha256(b"filler %d" % i).hexdigest()
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example.com/other", "digest": {"sha256": digest}}],
            "predicateType": "https://conveyor.dev/attestation/benchmark/v1",
            "predicate": {"n": i},
        }
        payload = json.dumps(statement, separators=(",", ":")).encode()
        sig = key.sign(_pae(payload))  # type: ignore[call-arg, union-attr]
        envelope = {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "ci", "sig": base64.b64encode(sig).decode()}],
        }
        envelopes.append((json.dumps(envelope, separators=(",", ":")).encode(), digest))
    signed = time.perf_counter() - started
    ledger = open_ledger(url)
    started = time.perf_counter()
    kinds = ("build", "tests", "scan", "approval")
    with ledger.serialized("benchmark"):
        for i, (envelope, digest) in enumerate(envelopes):
            ledger.append(
                envelope,
                subject_digest=f"sha256:{digest}",
                subject_name="registry.example.com/other",
                predicate_type="https://conveyor.dev/attestation/benchmark/v1",
                kind=kinds[i % 4],
                signer="ci",
                keyid="ci",
                environment=None,
                commit=f"{i // 10:040x}",
            )
    appended = time.perf_counter() - started
    ledger.close()
    return signed, appended


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _load(
    clients: list[httpx.Client], rate: float, seconds: float, body: Callable[[], bytes]
) -> tuple[list[float], float, int]:
    """Open-loop reviews at ``rate`` for ``seconds`` (each should allow). Returns the
    latencies (lateness included), the elapsed time and how many were denied."""
    total = int(rate * seconds)
    interval = 1.0 / rate
    samples: list[float] = []
    denied: list[str] = []
    unsent: list[int] = []
    lock = threading.Lock()
    pool_clients = iter(clients * (total // len(clients) + 1))
    start = time.perf_counter() + 0.2

    cutoff = start + seconds + GRACE

    def one(index: int) -> None:
        with lock:
            client = next(pool_clients)
        due = start + index * interval
        if time.perf_counter() > cutoff:  # so far behind that the run would never end
            with lock:
                unsent.append(index)
            return
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        answer = client.post("/admission/validate", content=body())
        took = time.perf_counter() - due  # open loop: lateness counts
        with lock:
            samples.append(took)
            if answer.json()["response"]["allowed"] is not True:
                denied.append(answer.text)

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        list(pool.map(one, range(total)))
    if denied:
        print(f"  {len(denied)} denied, e.g. {denied[0][:300]}")
    if unsent:
        print(
            f"  {len(unsent)} of {total} never sent: the webhook fell more than {GRACE:g} s behind"
        )
    return samples, time.perf_counter() - start, len(denied)


def _refill_metric(tls: TlsServer) -> str:
    """The server's refill histogram (count and mean per kind), if it has one."""
    with tls.client() as client:
        text = client.get("/metrics").text
    values: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        for name in ("count", "sum"):
            prefix = f"conveyor_admission_refill_seconds_{name}{{"
            if line.startswith(prefix):
                labels, value = line[len(prefix) :].split("} ")
                values[(labels.split('"')[1], name)] = float(value)
    kinds = sorted({kind for kind, _ in values})
    if not kinds:
        return "server: no conveyor_admission_refill_seconds metric"
    return "server refills: " + ", ".join(
        f"{kind} {values[(kind, 'count')]:.0f}x mean "
        f"{values[(kind, 'sum')] / values[(kind, 'count')] * 1000:.1f} ms"
        for kind in kinds
        if values.get((kind, "count"))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--promotions", type=int, default=20)
    options = parser.parse_args()
    print(compile_bytecode())
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the server is a measured process
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-admission-"))
    try:
        team = admission_team(root / "team")
        tokens = {i: team.token(f"{i}-token", i) for i in IDENTITIES}
        tls = start_tls_server(team)
        tls.tokens.update(tokens)
        try:
            digest = ""
            for n in range(options.promotions):
                ref, digest = build(tls, team, f"v{n}")
                promote(tls, ref, "production")
            url = f"sqlite:///{team.root / '.conveyor' / 'conveyor.db'}"
            signed, appended = _fill(url, team.root / "keys" / "ci.key", options.entries)
            print(
                f"ledger: {options.entries:,} filler entries signed in {signed:.1f} s, appended "
                f"in {appended:.1f} s ({options.entries / appended:,.0f}/s); "
                f"{options.promotions} real promotions to production"
            )
            body = json.dumps(pod_review(digest)).encode()
            clients = [tls.client() for _ in range(8)]
            for client in clients:  # warm: connections open, cache filled
                for _ in range(5):
                    answer = client.post("/admission/validate", content=body)
                    assert answer.json()["response"]["allowed"] is True, answer.text
            samples, elapsed, denied = _load(clients, options.rate, options.seconds, lambda: body)
            p50, p99 = _percentiles(samples)
            print(
                f"webhook over HTTPS, warm, {len(samples)} reviews at {options.rate:g}/s "
                f"(achieved {len(samples) / elapsed:.0f}/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                f"(bound: p99 <= 20 ms); {denied} denied"
            )
            # The same load while promotions arrive: each review names the digest promoted
            # last (set once its promotion returned), so every answer must still allow.
            current = [body]
            probes: list[float] = []
            probes_denied: list[str] = []
            stop = threading.Event()

            def promoter() -> None:
                n = 0
                with tls.client() as probe:
                    while not stop.is_set():
                        ref, fresh = build(tls, team, f"during-{n}")
                        promote(tls, ref, "production")
                        document = json.dumps(pod_review(fresh)).encode()
                        current[0] = document
                        began = time.perf_counter()
                        answer = probe.post("/admission/validate", content=document)
                        probes.append(time.perf_counter() - began)
                        if answer.json()["response"]["allowed"] is not True:
                            probes_denied.append(answer.text)
                        n += 1

            thread = threading.Thread(target=promoter)
            thread.start()
            try:
                samples, elapsed, denied = _load(
                    clients, options.rate, options.seconds, lambda: current[0]
                )
            finally:
                stop.set()
                thread.join()
            p50, p99 = _percentiles(samples)
            r50, _r99 = _percentiles(probes) if probes else (0.0, 0.0)
            print(
                f"webhook while {len(probes)} promotions arrive ({len(probes) / elapsed:.1f}/s), "
                f"{len(samples)} reviews at {options.rate:g}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                f"; refill (a review right after each promotion): p50 {r50:.1f} ms, "
                f"max {max(probes, default=0) * 1000:.1f} ms; denied: {denied} reviews, "
                f"{len(probes_denied)} probes; {_refill_metric(tls)}"
            )
            for client in clients:
                client.close()
            peer = []
            # The server's own seam, uncached: one shared workspace, a verified read each time.
            with service.Workspace.open(team.config) as workspace:
                for _ in range(20):
                    began = time.perf_counter()
                    service.history("production", workspace=workspace)
                    peer.append(time.perf_counter() - began)
            q50, q99 = _percentiles(peer)
            print(
                f"peer, no cache: one verified service.history('production') in-process: "
                f"p50 {q50:.1f} ms, p99 {q99:.1f} ms"
            )
            if hasattr(service, "PromotionLog"):  # the refill itself, full vs incremental
                with service.Workspace.open(team.config) as workspace:
                    full, step = [], []
                    for n in range(5):
                        began = time.perf_counter()
                        log = service.PromotionLog.read(workspace, "production")
                        full.append(time.perf_counter() - began)
                        ref, _fresh = build(tls, team, f"peer-{n}")
                        promote(tls, ref, "production")
                        began = time.perf_counter()
                        log.extend(workspace)
                        step.append(time.perf_counter() - began)
                f50, _ = _percentiles(full)
                s50, _ = _percentiles(step)
                print(
                    f"refill in-process: full verified read p50 {f50:.1f} ms; incremental over "
                    f"one build + one promotion p50 {s50:.1f} ms ({f50 / s50:.0f}x less)"
                )
        finally:
            tls.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
