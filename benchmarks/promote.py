# ruff: noqa: E402  (sys.path is set up before the project imports)
"""Promotion benchmark: gate evaluation at 10,000 evidence entries, promotions per second.

    .venv/bin/python benchmarks/promote.py [--entries N] [--promotions N] [--cli N]
                                           [--no-postgres]

(``make bench`` runs it.) Needs ``docker-registry``
and ``skopeo`` (``make debian-deps``) and, for the PostgreSQL rows, the PostgreSQL 15
binaries. A default run takes a few minutes.

1. Gate evaluation for one digest with N evidence entries (default 10,000) in a SQLite
   ledger: real entries, each an Ed25519-signed DSSE envelope made with ``conveyor.attest``
   and appended with ``conveyor.ledger``. Measured separately: fetching the digest's rows;
   fetching and verifying them (``conveyor.service.VerifiedLedger``: signature, subject,
   signer role) plus ``evidence_for``; the pure ``conveyor.policy.engine.evaluate``; and
   the whole ``service.check`` in-process and as a ``conveyor check`` process.
2. End-to-end promotions of distinct digests into one environment, same registry (a real
   ``docker-registry`` on loopback; blobs mounted across repositories): each digest has a
   build record, test and scan attestations; ``conveyor.service.promote`` in-process (gates
   checked against the ledger, image placed, three attestations carried as referrers, a
   signed promotion attached and recorded), on SQLite and on PostgreSQL; and a few as
   ``conveyor promote`` processes.
3. The floor: the same placement by ``skopeo copy --preserve-digests`` followed by a no-op
   process (the "record" step of a pipeline without conveyor), and conveyor's bare copy.
4. ``conveyor promote`` as a process (same registry, blobs mounted) against ``skopeo copy``
   of the same digest into a fresh repository of that registry with skopeo's blob cache
   deleted before each run (a fresh CI machine: skopeo moves every byte), alternated, median
   of ``--process-runs`` distinct digests (each image's layers its own random bytes), for two
   sizes: two ``--process-layer-mib`` layers (16 MiB) and eight ``--process-large-mib`` layers
   (32 MiB: 256 MiB, as benchmarks/copy.py); bytecode compiled, PYTHONDONTWRITEBYTECODE unset;
   wall and CPU time (user + system). Each promotion carries three attestations (build, tests,
   scan) and attaches its own; the registry has no referrers API (the fallback tag).
   Targets (issue 11): promote ≤ 0.5 s, ≤ 0.3x skopeo, 0 blob bytes moved. ``--only-process``
   runs this part alone (a few minutes); ``--baseline SRC`` measures an older src/ alongside.

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
import json
import resource
import shutil
import statistics
import string
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support.bench import clear_skopeo_cache, compile_bytecode, measured_environment
from tests.support.images import build_image
from tests.support.postgres import RunningPostgres, start_postgres
from tests.support.registry import start_registry, stop_registry

from conveyor import service
from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    PROMOTION_V1,
    SMOKE_V1,
    TEST_RESULT_V01,
    VULNS_V02,
    FindingInput,
    ScanInput,
    Signer,
    approval,
    load_signing_key,
    make_statement,
    make_test_result,
    promotion,
    sign_envelope,
    smoke,
    vulnerability_scan,
)
from conveyor.oci.digest import Digest
from conveyor.policy.engine import evaluate
from conveyor.policy.model import PromotionRequest
from conveyor.service import VerifiedLedger, Workspace, evidence_for

CONVEYOR = str(Path(sys.executable).with_name("conveyor"))
IDENTITIES = {
    "ci": "builder, tester, scanner",
    "deployer": "deployer",
    "alice": "approver",
    "bob": "approver",
}
CONFIG = """\
version: 1
identities:
{identities}
ledger:
  url: {ledger}
environments:
  staging:
    repository: {staging}
    tags: [staging]
    requires:
      provenance: {{}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
  production:
    repository: {production}
    tags: [production]
    requires:
      after: {{environment: staging, smoke: true}}
      approvals: {{count: 2, role: approver, distinct_from: [builder, promoter]}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
"""
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuite name="bench" tests="3" failures="0" errors="0" skipped="0">
  <testcase classname="t" name="a"/><testcase classname="t" name="b"/>
  <testcase classname="t" name="c"/>
</testsuite>
"""


@dataclass
class Row:
    part: str
    what: str
    value: str
    note: str = ""


@dataclass
class Bench:
    """A conveyor.yaml with its keys, in a directory of its own."""

    base: Path
    config: Path
    keys: dict[str, Path]
    signers: dict[str, Signer]


def make_bench(base: Path, *, ledger: str, staging: str, production: str) -> Bench:
    base.mkdir(parents=True, exist_ok=True)
    keys: dict[str, Path] = {}
    for name in IDENTITIES:
        keys[name] = service.generate_keys(name, out_dir=base / "keys").private_key
    lines = "\n".join(
        f"  {name}: {{key: keys/{name}.pub, roles: [{roles}]}}"
        for name, roles in IDENTITIES.items()
    )
    config = base / "conveyor.yaml"
    config.write_text(
        CONFIG.format(identities=lines, ledger=ledger, staging=staging, production=production)
    )
    signers = {name: load_signing_key(str(path)) for name, path in keys.items()}
    return Bench(base, config, keys, signers)


def _median_seconds(action: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


# --- 1. gate evaluation at N entries --------------------------------------------------------


def _evidence_envelopes(
    bench: Bench, name: str, digest: Digest, count: int
) -> list[tuple[bytes, str, str, str, str | None]]:
    """``count`` signed entries for one digest, in an order whose latest of each kind makes an
    allowed production decision: tests, scans, promotions to staging, smokes, approvals."""
    now = datetime.now(UTC)
    report = Digest.of(JUNIT.encode())
    shares = [("tests", 25), ("scan", 25), ("promotion", 10), ("smoke", 15), ("approval", 25)]
    plan: list[str] = []
    for kind, share in shares:
        plan += [kind] * (count * share // 100)
    plan += ["approval"] * (count - len(plan))
    made = []
    for i, kind in enumerate(plan):
        environment: str | None = None
        signer = "ci"
        if kind == "tests":
            predicate_type = TEST_RESULT_V01
            body = make_test_result(
                passed=[f"t::case{j}" for j in range(20)], failed=[], reports=[("junit", report)]
            )
        elif kind == "scan":
            predicate_type = VULNS_V02
            body = vulnerability_scan(
                ScanInput("trivy", "0.57.1", None, now, now, [FindingInput(f"DEMO-{i}", "LOW")])
            )
        elif kind == "promotion":
            predicate_type, signer, environment = PROMOTION_V1, "deployer", "staging"
            body = promotion(
                from_environment=None,
                to_environment="staging",
                repository=name,
                policy_sha256="0" * 64,
                gates=[],
                at=now,
            )
        elif kind == "smoke":
            predicate_type, environment = SMOKE_V1, "staging"
            body = smoke(environment="staging", passed=True, at=now)
        else:
            predicate_type, environment = APPROVAL_V1, "production"
            signer = ("alice", "bob")[i % 2]
            body = approval(environment="production", at=now)
        statement = make_statement(name, digest, predicate_type, body)
        envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [bench.signers[signer]])
        made.append((envelope, kind, predicate_type, signer, environment))
    return made


def bench_gates(work: Path, entries: int) -> list[Row]:
    part = f"1. gates, {entries:,} entries"
    base = work / "gates"
    bench = make_bench(
        base,
        ledger=f"sqlite:///{base}/ledger.db",
        staging=f"oci:{base}/staging",
        production=f"oci:{base}/production",
    )
    commit = "ab" * 20
    built = service.create_sample_image(
        f"oci:{base}/build:1", labels={"git.commit": commit, "ci.run": "1"}, layer_sizes=(1024,)
    )
    reference = str(built)
    service.record_build(
        reference, commit=commit, run_id="1", key=str(bench.keys["ci"]), config_path=bench.config
    )
    start = time.perf_counter()
    envelopes = _evidence_envelopes(bench, built.name, built.digest, entries - 1)
    signing = time.perf_counter() - start
    start = time.perf_counter()
    with Workspace.open(bench.config) as workspace:
        keyids = {name: signer.keyid for name, signer in bench.signers.items()}
        for offset in range(0, len(envelopes), 500):
            with workspace.ledger.serialized("benchmark"):
                for envelope, kind, predicate_type, signer, environment in envelopes[
                    offset : offset + 500
                ]:
                    workspace.ledger.append(
                        envelope,
                        subject_digest=str(built.digest),
                        subject_name=built.name,
                        predicate_type=predicate_type,
                        kind=kind,
                        signer=signer,
                        keyid=keyids[signer],
                        environment=environment,
                    )
    appending = time.perf_counter() - start
    rows = [
        Row(part, "sign the entries (Ed25519, DSSE, in-toto)", _ms(signing), f"{entries - 1:,}"),
        Row(part, "append them (SQLite, 500 per commit)", _ms(appending)),
    ]
    digest = str(built.digest)
    with Workspace.open(bench.config) as workspace:
        fetch, found = _median_seconds(lambda: workspace.ledger.entries(subject_digest=digest))
        assert len(found) == entries, len(found)

        def gather() -> Any:
            verified = VerifiedLedger(workspace)
            items = verified.entries(subject_digest=digest)
            assert not verified.ignored, verified.ignored[:3]
            return evidence_for(items, built.digest, {"git.commit": commit, "ci.run": "1"})

        verify, evidence = _median_seconds(gather)
        request = PromotionRequest(
            digest=digest,
            environment="production",
            promoter="deployer",
            promoter_roles=frozenset({"deployer"}),
            now=datetime.now(UTC),
        )
        decide, decision = _median_seconds(lambda: evaluate(workspace.config, request, evidence))
        assert decision.allowed, [g.reason for g in decision.failed]
    check, result = _median_seconds(
        lambda: service.check(reference, environment="production", config_path=bench.config)
    )
    assert result.decision.allowed
    cli, done = _median_seconds(
        lambda: subprocess.run(
            [CONVEYOR, "check", reference, "--to", "production", "--config", str(bench.config)],
            capture_output=True,
            check=False,
        ),
        runs=1,
    )
    assert done.returncode == 0, done.stderr
    rows += [
        Row(part, "fetch the digest's rows", _ms(fetch), "SQL + row decoding"),
        Row(part, "fetch + verify + evidence_for", _ms(verify), "every signature checked"),
        Row(part, "evaluate (pure policy engine)", _ms(decide), f"{decide / verify:.1%} of gather"),
        Row(part, "service.check, in-process", _ms(check), "open, resolve, gather, decide"),
        Row(part, "conveyor check, a process", _ms(cli), "includes start-up"),
    ]
    return rows


# --- 2. and 3. promotions against a real registry ------------------------------------------


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=120)


def _scan_report(path: Path, repository: str, digest: Digest, commit: str, run: str) -> Path:
    template = (
        resources.files("conveyor.demo_data") / "trivy-payment-api.template.json"
    ).read_text()
    path.write_text(
        string.Template(template).substitute(
            scanned_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            image=f"{repository}@{digest}",
            repository=repository,
            digest=str(digest),
            config_digest=str(digest),  # not compared: RepoDigests names the manifest
            commit=commit,
            run_id=run,
        )
    )
    return path


@dataclass
class Image:
    digest: Digest
    commit: str
    run: str


def push_images(
    work: Path, host: str, count: int, layer_sizes: tuple[int, ...] = (32 * 1024, 96 * 1024)
) -> list[Image]:
    """``count`` distinct small images (random layers, so each promotion mounts its own
    blobs), written as an OCI layout and pushed to ``host/build`` by skopeo."""
    layout = work / "images"
    images = []
    for i in range(count):
        commit, run = f"{i:040x}", str(1000 + i)
        built = build_image(
            layout,
            tag=f"i{i}",
            layer_sizes=layer_sizes,
            labels={"git.commit": commit, "ci.run": run},
        )
        skopeo(
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:i{i}",
            f"docker://{host}/build:i{i}",
        )
        images.append(Image(Digest.parse(built.digest), commit, run))
    return images


def record_evidence(bench: Bench, host: str, images: list[Image], options: Any) -> float:
    start = time.perf_counter()
    junit = bench.base / "junit.xml"
    junit.write_text(JUNIT)
    for image in images:
        reference = f"{host}/build@{image.digest}"
        common: dict[str, Any] = {
            "key": str(bench.keys["ci"]),
            "config_path": bench.config,
            "options": options,
        }
        service.record_build(reference, commit=image.commit, run_id=image.run, **common)
        service.attest_tests(reference, [junit], **common)
        report = _scan_report(
            bench.base / "trivy.json", f"{host}/build", image.digest, image.commit, image.run
        )
        service.attest_scan(reference, report, **common)
    return (time.perf_counter() - start) / (3 * len(images))


def bench_promotions(
    backend: str, bench: Bench, host: str, images: list[Image], cli: int, options: Any
) -> list[Row]:
    part = f"2. promote, {backend}"
    per_record = record_evidence(bench, host, images, options)
    in_process = images[: len(images) - cli]
    times = []
    start = time.perf_counter()
    for image in in_process:
        t = time.perf_counter()
        result = service.promote(
            f"{host}/build@{image.digest}",
            environment="staging",
            key=str(bench.keys["deployer"]),
            config_path=bench.config,
            options=options,
        )
        times.append(time.perf_counter() - t)
        assert result.recorded
        assert result.digest == image.digest
    total = time.perf_counter() - start
    rows = [
        Row(part, "record build / attest (each, in-process)", _ms(per_record), "setup"),
        Row(
            part,
            f"promote in-process ({len(in_process)} digests)",
            f"{len(in_process) / total:,.1f} /s",
            f"median {_ms(statistics.median(times))}",
        ),
    ]
    process_times = []
    for image in images[len(in_process) :]:
        t = time.perf_counter()
        done = subprocess.run(
            [CONVEYOR, "promote", f"{host}/build@{image.digest}", "--to", "staging",
             "--key", str(bench.keys["deployer"]), "--config", str(bench.config),
             "--insecure-registry", host],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        process_times.append(time.perf_counter() - t)
        assert done.returncode == 0, done.stderr
    if process_times:
        rows.append(
            Row(
                part,
                f"conveyor promote, a process ({len(process_times)} digests)",
                f"{len(process_times) / sum(process_times):,.1f} /s",
                f"median {_ms(statistics.median(process_times))}",
            )
        )
    report = service.audit_verify(config_path=bench.config)
    assert report.ok, report.problems
    return rows


def bench_floor(host: str, images: list[Image], options: Any) -> list[Row]:
    part = "3. floor"
    times = []
    for i, image in enumerate(images):
        t = time.perf_counter()
        skopeo(
            "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
            f"docker://{host}/build@{image.digest}", f"docker://{host}/floor:t{i}",
        )  # fmt: skip
        subprocess.run(["true"], check=True)  # the pipeline's "record it" step, doing nothing
        times.append(time.perf_counter() - t)
    copies = []
    for i, image in enumerate(images):
        t = time.perf_counter()
        service.copy_image(
            f"{host}/build@{image.digest}", f"{host}/floor-conveyor:t{i}", options=options
        )
        copies.append(time.perf_counter() - t)
    return [
        Row(
            part,
            f"skopeo copy + no-op ({len(images)} digests)",
            f"{len(times) / sum(times):,.1f} /s",
            f"median {_ms(statistics.median(times))}",
        ),
        Row(
            part,
            f"conveyor copy only, in-process ({len(images)})",
            f"{len(copies) / sum(copies):,.1f} /s",
            f"median {_ms(statistics.median(copies))}",
        ),
    ]


PROMOTE_SECONDS = 0.5
PROMOTE_RATIO = 0.3
MiB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    """One image shape of part 4: its label and layer sizes (each image's own random bytes)."""

    label: str
    layers: tuple[int, ...]


def process_sizes(small_mib: int, large_mib: int) -> list[Size]:
    sizes = [Size(f"2 x {small_mib} MiB", (small_mib * MiB,) * 2)]
    if large_mib > 0:
        sizes.append(Size(f"8 x {large_mib} MiB", (large_mib * MiB,) * 8))
    return sizes


def bench_promote_process(
    work: Path,
    host: str,
    runs: int,
    options: Any,
    baseline: Path | None = None,
    sizes: list[Size] | None = None,
) -> list[Row]:
    """Part 4: ``conveyor promote`` processes against cold-cache ``skopeo copy``, alternated
    (and the ``baseline`` src/ too, if given: older code on the same machine, same run),
    for each image size."""
    part = "4. promote, a process"
    bench = make_bench(
        work / "process",
        ledger=f"sqlite:///{work}/process/ledger.db",
        staging=f"{host}/staging-process",
        production=f"{host}/production-process",
    )
    codes: list[tuple[str, Path | None]] = [("conveyor promote", None)]
    if baseline is not None:
        codes.append(("before: conveyor promote", baseline))
    print(compile_bytecode(), file=sys.stderr)
    if baseline is not None:  # the older code is measured as installed too
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", str(baseline)],
            check=False, capture_output=True, env=measured_environment(),
        )  # fmt: skip

    def promote(image: Image, src: Path | None) -> tuple[float, float, dict[str, Any]]:
        env = measured_environment()
        if src is not None:
            env["PYTHONPATH"] = str(src)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "promote", f"{host}/build@{image.digest}",
             "--to", "staging", "--key", str(bench.keys["deployer"]),
             "--config", str(bench.config), "--insecure-registry", host, "--output", "json"],
            capture_output=True, text=True, check=False, env=env, cwd=bench.base,
        )  # fmt: skip
        elapsed = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        assert result["recorded"]
        assert result["digest"] == str(image.digest)
        return elapsed, cpu, result

    def skopeo_copy(image: Image, name: str) -> float:
        clear_skopeo_cache()
        t = time.perf_counter()
        skopeo(
            "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
            f"docker://{host}/build@{image.digest}", f"docker://{host}/{name}",
        )  # fmt: skip
        return time.perf_counter() - t

    rows = []
    for n, size in enumerate(sizes or process_sizes(16, 32)):
        print(f"  {size.label}: pushing {(runs + 1) * len(codes)} images…", file=sys.stderr)
        images = push_images(work / f"process-{n}", host, (runs + 1) * len(codes), size.layers)
        record_evidence(bench, host, images, options)
        queue = iter(images)
        for _, src in codes:  # warm: the page cache, the registry, the bytecode
            promote(next(queue), src)
        skopeo_copy(images[0], f"skopeo-{n}-0:t")
        ours: dict[str, list[float]] = {name: [] for name, _ in codes}
        cpu: dict[str, list[float]] = {name: [] for name, _ in codes}
        theirs: list[float] = []
        moved, mounted = 0, 0
        for i in range(1, runs + 1):
            if i % 2:  # each copy into a repository of its own: nothing there to reuse
                theirs.append(skopeo_copy(images[i], f"skopeo-{n}-{i}:t"))
            for name, src in codes if i % 2 else reversed(codes):
                seconds, used, result = promote(next(queue), src)
                ours[name].append(seconds)
                cpu[name].append(used)
                if src is None:
                    moved += int(result["copy"]["bytes_transferred"])
                    mounted += int(result["copy"]["blobs_mounted"])
            if not i % 2:
                theirs.append(skopeo_copy(images[i], f"skopeo-{n}-{i}:t"))
        peer = statistics.median(theirs)
        rows.append(
            Row(
                part,
                f"skopeo copy, cache deleted ({runs}; {size.label})",
                _ms(peer),
                f"min {_ms(min(theirs))}",
            )
        )
        for name, times in ours.items():
            mine = statistics.median(times)
            note = (
                f"min {_ms(min(times))}; cpu {_ms(statistics.median(cpu[name]))}; "
                f"{mine / peer:.2f}x skopeo"
            )
            if name == "conveyor promote":
                met_time, met_ratio = mine <= PROMOTE_SECONDS, mine / peer <= PROMOTE_RATIO
                note += (
                    f"; {moved} blob bytes moved, {mounted} blobs mounted; <= {PROMOTE_SECONDS} s: "
                    f"{'met' if met_time else 'NOT met'}; <= {PROMOTE_RATIO}x skopeo: "
                    f"{'met' if met_ratio else 'NOT met'}; 0 bytes: "
                    f"{'met' if moved == 0 else 'NOT met'}"
                )
            rows.append(Row(part, f"{name} ({runs}; {size.label})", _ms(mine), note))
    return rows


def _rate(rows: list[Row], part: str, prefix: str) -> float | None:
    for row in rows:
        if row.part == part and row.what.startswith(prefix):
            return float(row.value.split()[0].replace(",", ""))
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--promotions", type=int, default=30, help="digests per backend")
    parser.add_argument("--cli", type=int, default=3, help="of them, promoted by a process")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--process-runs", type=int, default=7, help="part 4: digests promoted")
    parser.add_argument("--only-process", action="store_true", help="run part 4 alone")
    parser.add_argument("--baseline", type=Path, help="part 4: also measure this src/ (older)")
    parser.add_argument("--process-layer-mib", type=int, default=16, help="part 4: 2 layers")
    parser.add_argument(
        "--process-large-mib", type=int, default=32, help="part 4: 8 layers (0: no large row)"
    )
    args = parser.parse_args()
    sizes = process_sizes(args.process_layer_mib, args.process_large_mib)
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: run make debian-deps", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-promote-"))
    rows: list[Row] = []
    postgres: RunningPostgres | None = None
    proc = None
    try:
        proc, registry = start_registry(work / "registry")
        host = registry.host
        options = service.RegistryOptions(insecure_registries=(host,))
        if args.only_process:
            print("promote as a process…", file=sys.stderr)
            rows += bench_promote_process(
                work, host, args.process_runs, options, args.baseline, sizes
            )
            _print(rows)
            return 0
        print(f"gate evaluation with {args.entries:,} entries…", file=sys.stderr)
        rows += bench_gates(work, args.entries)
        backends: list[tuple[str, str]] = [("SQLite", f"sqlite:///{work}/sqlite/ledger.db")]
        if not args.no_postgres:
            try:
                postgres = start_postgres()
                backends.append(("PostgreSQL", postgres.create_database()))
            except BaseException as exc:  # pytest.skip raises a BaseException
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        n = args.promotions
        print(f"pushing {n * len(backends)} images with skopeo…", file=sys.stderr)
        images = push_images(work, host, n * len(backends))
        for i, (backend, url) in enumerate(backends):
            print(f"promotions on {backend}…", file=sys.stderr)
            name = backend.lower()
            bench = make_bench(
                work / name,
                ledger=url,
                staging=f"{host}/staging-{name}",
                production=f"{host}/production-{name}",
            )
            rows += bench_promotions(
                backend, bench, host, images[i * n : (i + 1) * n], args.cli, options
            )
        print("the floor: skopeo copy…", file=sys.stderr)
        rows += bench_floor(host, images[:n], options)
        print("promote as a process…", file=sys.stderr)
        rows += bench_promote_process(work, host, args.process_runs, options, args.baseline, sizes)
    finally:
        if proc is not None:
            stop_registry(proc)
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    _print(rows)
    return 0


def _print(rows: list[Row]) -> None:
    floor = _rate(rows, "3. floor", "skopeo")
    width = max(len(r.what) for r in rows)
    print(f"\n{'part':<24} {'what':<{width}} {'value':>14}  note")
    for row in rows:
        note = row.note
        rate = _rate([row], row.part, row.what) if row.value.endswith("/s") else None
        if rate and floor and row.part.startswith("2."):
            note += f"; {floor / rate:.1f}x the floor's time"
        print(f"{row.part:<24} {row.what:<{width}} {row.value:>14}  {note}")
    print("\nShared machine: numbers are noisy; compare ratios within one run.")


if __name__ == "__main__":
    sys.exit(main())
