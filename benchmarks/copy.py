# ruff: noqa: A005, E402  (the file name is what `make bench` runs; see the sys.path fix)
"""Copy benchmark: conveyor against ``skopeo copy --preserve-digests`` on real registries.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/copy.py [--reps N] [--mib M]
[--baseline SRC] [--cases a,b,c,d]``). Issue 11's target: (a) as a process <= 0.8x skopeo.

It generates an image of 8 incompressible layers (32 MiB each by default), pushes it with
skopeo into registry A (a Debian ``docker-registry`` on 127.0.0.1), then times, in rounds
that alternate the tools (the order rotates every round):

  (a) registry A -> registry B, B restarted with empty storage before every single run:
      skopeo; ``conveyor copy`` as a process (the fair comparison with the skopeo binary);
      the copy engine alone (``service.copy_image`` timed inside a fresh process, after its
      imports); and two floors in this process over ``http.client`` with the engine's
      concurrency: a raw GET->POST->PUT of every blob with no checks at all, and the same
      with sha256 of every byte received (what any verifying copy must add)
  (b) A repo x -> A repo y (same registry; conveyor mounts, a fresh repo every run)
  (c) (a) again when B already has every blob
  (d) a new tag in the same repository

``--baseline SRC`` also runs the process and the engine with another checkout's ``src/``
(PYTHONPATH), in the same rounds. Printed: medians (and minimums) of wall seconds, the CPU
seconds of the tool and of both registries, and ratios to skopeo. Bytecode is compiled
first (also the baseline's) and measured processes run without PYTHONDONTWRITEBYTECODE (the
installed state); skopeo's blob cache is deleted before every skopeo run (a fresh CI machine:
it decides whether skopeo mounts in (b)).
"""

from __future__ import annotations

import os
import sys

# This file is named copy.py: keep its directory off sys.path so ``import copy`` (done by
# dataclasses and others) finds the standard library, not this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import hashlib
import http.client
import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
TARGET_RATIO = 0.8  # issue 11: (a) as a process, at most this share of skopeo's time
ENGINE_FLAG = "--engine-once"


def engine_once(argv: list[str]) -> int:
    """Child mode: one ``service.copy_image`` timed after the imports, as JSON on stdout.

    Runs with whichever ``conveyor`` PYTHONPATH puts first (this checkout or --baseline)."""
    src, dst, *insecure = argv
    from conveyor import service

    options = service.RegistryOptions(insecure_registries=tuple(insecure))
    cpu, started = time.process_time(), time.perf_counter()
    result = service.copy_image(src, dst, options=options)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu, "bytes": result.bytes_transferred}))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == [ENGINE_FLAG]:
    sys.exit(engine_once(sys.argv[2:]))

sys.path.insert(0, str(ROOT))
from tests.support.bench import (
    CONVEYOR,
    Registry,
    clear_skopeo_cache,
    compile_bytecode,
    measured_environment,
)
from tests.support.images import build_image

ENV = measured_environment()


# --- what is measured -----------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    cpu: float | None  # the tool's own CPU seconds (all threads, children included)
    cpu_a: float
    cpu_b: float
    moved: int | None  # blob bytes conveyor reports it sent


@dataclass
class Tool:
    name: str
    run: Callable[[str, str], tuple[float | None, int | None, float | None]]
    cases: str = "abcd"
    runs: dict[str, list[Run]] = field(default_factory=dict)


def registry_cpu(registry: Registry) -> float:
    """utime + stime of the registry process so far, in seconds."""
    assert registry.proc is not None
    with open(f"/proc/{registry.proc.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(tool: Tool, case: str, src: str, dst: str, a: Registry, b: Registry) -> None:
    cpu_a, cpu_b = registry_cpu(a), registry_cpu(b)
    children, mine = children_cpu(), own_cpu()
    started = time.perf_counter()
    inner_seconds, moved, inner_cpu = tool.run(src, dst)
    seconds = time.perf_counter() - started
    cpu = (children_cpu() - children) + (own_cpu() - mine)
    run = Run(
        seconds=seconds if inner_seconds is None else inner_seconds,
        cpu=cpu if inner_cpu is None else inner_cpu,
        cpu_a=registry_cpu(a) - cpu_a,
        cpu_b=registry_cpu(b) - cpu_b,
        moved=moved,
    )
    tool.runs.setdefault(case, []).append(run)


# --- the tools ------------------------------------------------------------------------------


def skopeo_copy(src: str, dst: str) -> tuple[None, None, None]:
    clear_skopeo_cache()
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src}",
            f"docker://{dst}",
        ],
        check=True,
        capture_output=True,
        env=ENV,
    )
    return None, None, None


def insecure_flags(src: str, dst: str) -> list[str]:
    hosts = dict.fromkeys(ref.split("/", 1)[0] for ref in (src, dst))
    return [flag for host in hosts for flag in ("--insecure-registry", host)]


def conveyor_process(env: dict[str, str]) -> Callable[[str, str], tuple[None, int, None]]:
    def run(src: str, dst: str) -> tuple[None, int, None]:
        out = subprocess.run(
            [*CONVEYOR, "copy", src, dst, "--json", *insecure_flags(src, dst)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return None, int(json.loads(out.stdout)["bytes_transferred"]), None

    return run


def conveyor_engine(env: dict[str, str]) -> Callable[[str, str], tuple[float, int, float]]:
    def run(src: str, dst: str) -> tuple[float, int, float]:
        hosts = insecure_flags(src, dst)[1::2]
        out = subprocess.run(
            [sys.executable, __file__, ENGINE_FLAG, src, dst, *hosts],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        return float(got["seconds"]), int(got["bytes"]), float(got["cpu"])

    return run


def raw_pipe(
    blobs: list[tuple[str, int]], workers: int, *, hashing: bool
) -> Callable[[str, str], tuple[None, None, None]]:
    """Each blob: GET from A, POST on B, one streamed PUT ``?digest=`` on B; 1 MiB reads,
    one keep-alive connection per host per thread, nothing checked (or only sha256)."""

    def run(src: str, dst: str) -> tuple[None, None, None]:
        src_host, src_repo = src.split("/", 1)
        dst_host, dst_repo = dst.split("/", 1)
        src_repo, dst_repo = src_repo.split(":")[0], dst_repo.split(":")[0]

        def pipe(item: tuple[str, int]) -> None:
            digest, size = item
            source = http.client.HTTPConnection(src_host, timeout=120)
            dest = http.client.HTTPConnection(dst_host, timeout=120)
            try:
                source.request("GET", f"/v2/{src_repo}/blobs/{digest}")
                got = source.getresponse()
                dest.request("POST", f"/v2/{dst_repo}/blobs/uploads/", body=b"")
                started = dest.getresponse()
                started.read()
                parts = urlsplit(started.getheader("Location") or "")
                hasher = hashlib.sha256()

                def body() -> Iterator[bytes]:
                    while chunk := got.read1(MiB):
                        if hashing:
                            hasher.update(chunk)
                        yield chunk

                query = f"{parts.query}&" if parts.query else ""
                dest.request(
                    "PUT",
                    f"{parts.path}?{query}digest={digest}",
                    body=body(),
                    headers={"Content-Length": str(size)},
                )
                put = dest.getresponse()
                put.read()
                if put.status != 201:
                    raise RuntimeError(f"raw PUT of {digest}: HTTP {put.status}")
                if hashing and f"sha256:{hasher.hexdigest()}" != digest:
                    raise RuntimeError(f"raw copy of {digest}: wrong bytes")
            finally:
                source.close()
                dest.close()

        with ThreadPoolExecutor(max_workers=min(workers, len(blobs))) as pool:
            list(pool.map(pipe, blobs))
        return None, None, None

    return run


# --- report ---------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def report_a(tools: list[Tool], skopeo: Tool, reps: int, total: int) -> None:
    sk = med([r.seconds for r in skopeo.runs["a"]])
    print(
        f"\n(a) A -> fresh B, {total / MiB:.0f} MiB: median (min) of {reps} runs, tools "
        "alternated; CPU seconds are medians too"
    )
    header = (
        f"{'tool':<46}{'wall s':>8}{'(min)':>8}{'tool CPU':>9}{'reg A':>7}{'reg B':>7}"
        f"{'/ skopeo':>10}"
    )
    print(header)
    print("-" * len(header))
    for tool in tools:
        runs = tool.runs.get("a")
        if not runs:
            continue
        wall = med([r.seconds for r in runs])
        cpus = [r.cpu for r in runs if r.cpu is not None]
        cpu = f"{med(cpus):.2f}" if cpus else "-"
        print(
            f"{tool.name:<46}{wall:>8.3f}{min(r.seconds for r in runs):>8.3f}{cpu:>9}"
            f"{med([r.cpu_a for r in runs]):>7.2f}{med([r.cpu_b for r in runs]):>7.2f}"
            f"{wall / sk:>9.2f}x"
        )


def report_small(tools: list[Tool], skopeo: Tool, reps: int) -> None:
    labels = {"b": "(b) A/x -> A/y, mount", "c": "(c) A -> B, B has all", "d": "(d) new tag"}
    cases = [c for c in "bcd" if skopeo.runs.get(c)]
    if not cases:
        return
    print(f"\nmedian wall seconds of {reps} runs, ratio to skopeo, blob bytes conveyor moved")
    header = f"{'tool':<46}" + "".join(f"{labels[c]:>24}" for c in cases)
    print(header)
    print("-" * len(header))
    sk = {c: med([r.seconds for r in skopeo.runs[c]]) for c in cases}
    for tool in tools:
        if not all(tool.runs.get(c) for c in cases):
            continue
        cells = []
        for case in cases:
            runs = tool.runs[case]
            wall = med([r.seconds for r in runs])
            moved = sorted({r.moved for r in runs if r.moved is not None})
            note = f" {'/'.join(f'{m:,}' for m in moved)} B" if moved else ""
            cells.append(f"{wall:.3f} {wall / sk[case]:.2f}x{note}")
        print(f"{tool.name:<46}" + "".join(f"{cell:>24}" for cell in cells))


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mib", type=int, default=32, help="MiB per layer (8 layers)")
    parser.add_argument("--baseline", type=Path, help="also measure this src/ (older code)")
    parser.add_argument("--cases", default="abcd", help="which cases to run (default abcd)")
    args = parser.parse_args()
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make bench installs it)", file=sys.stderr)
            return 2
    cases = [c for c in "abcd" if c in args.cases]

    print(compile_bytecode(), flush=True)
    base_env = None
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / "conveyor" / "__init__.py").is_file():
            print(f"--baseline {baseline}: no conveyor package there", file=sys.stderr)
            return 2
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(baseline)],
            check=False,
            capture_output=True,
            env=ENV,
        )
        base_env = {**ENV, "PYTHONPATH": str(baseline)}
        print(f"baseline: {baseline} (bytecode compiled)")

    from conveyor.service import RegistryOptions

    workers = RegistryOptions().concurrency
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    a, b = Registry(work / "a"), Registry(work / "b")
    try:
        print(f"generating 8 x {args.mib} MiB incompressible layers ...", flush=True)
        img = build_image(work / "image", layer_sizes=(args.mib * MiB,) * 8)
        total = sum(img.blobs.values())
        a.start()
        b.start()
        src = f"{a.host}/bench/x:v1"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
                f"oci:{img.layout}:latest",
                f"docker://{src}",
            ],
            check=True,
        )
        print(f"image {img.digest} ({total / MiB:.0f} MiB, {len(img.blobs)} blobs) in {a.host}")
        blobs = sorted(img.blobs.items(), key=lambda item: (-item[1], item[0]))

        skopeo = Tool("skopeo copy", skopeo_copy)
        tools = [
            skopeo,
            Tool("conveyor copy (a process)", conveyor_process(ENV)),
            Tool("conveyor engine (copy_image, in a process)", conveyor_engine(ENV)),
        ]
        if base_env is not None:
            tools += [
                Tool("before: conveyor copy (a process)", conveyor_process(base_env)),
                Tool("before: engine (copy_image, in a process)", conveyor_engine(base_env)),
            ]
        tools += [
            Tool(
                f"floor: raw GET->PUT, no checks ({workers} threads)",
                raw_pipe(blobs, workers, hashing=False),
                cases="a",
            ),
            Tool(
                f"floor: raw GET->PUT + sha256 ({workers} threads)",
                raw_pipe(blobs, workers, hashing=True),
                cases="a",
            ),
        ]

        for rep in range(args.reps):
            shift = rep % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                key = f"{tools.index(tool)}-{rep}"
                if "a" in cases and "a" in tool.cases:
                    b.fresh()
                    measure(tool, "a", src, f"{b.host}/bench/y:v1", a, b)
                    if "c" in cases and "c" in tool.cases:
                        measure(tool, "c", src, f"{b.host}/bench/y:v1", a, b)
                if "b" in cases and "b" in tool.cases:
                    measure(tool, "b", src, f"{a.host}/bench/y-{key}:v1", a, b)
                if "d" in cases and "d" in tool.cases:
                    measure(tool, "d", src, f"{a.host}/bench/x:t-{key}", a, b)
            print(f"round {rep + 1}/{args.reps} done", flush=True)

        load = os.getloadavg()
        print(
            f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} "
            "cores; the machine is shared: compare ratios within this run only"
        )
        if "a" in cases:
            report_a(tools, skopeo, args.reps, total)
        report_small(tools, skopeo, args.reps)
        if "a" in cases:
            a_sk = med([r.seconds for r in skopeo.runs["a"]])
            a_sub = med([r.seconds for r in tools[1].runs["a"]])
            verdict = "met" if a_sub / a_sk <= TARGET_RATIO else "NOT met"
            print(
                f"\ntarget (a) as a process <= {TARGET_RATIO}x skopeo: {a_sub / a_sk:.2f}x, "
                f"{verdict}"
            )
        return 0
    finally:
        a.stop()
        b.stop()
        if not os.environ.get("CONVEYOR_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
