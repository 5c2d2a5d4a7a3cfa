"""Blob data path: a verified GET→PUT between two real registries over http.client with
the body in two lent buffers (what ``copy`` uses), over http.client with a new bytes object
per receive, and over httpx.

Starts two throwaway docker-registry instances, pushes N incompressible blobs to A, then
copies them A→B with ``open_blob`` → ``write_blob`` (each byte hashed on the way) in a
thread pool, alternating the three paths, and prints the median wall and CPU seconds of each.

    .venv/bin/python benchmarks/blobio.py [--blobs 8] [--mib 32] [--runs 3] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.registry import start_registry, stop_registry

from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry.client import RegistryClient, RegistryRepository


def _copy(
    src: RegistryRepository,
    dst: RegistryRepository,
    blobs: list[tuple[Digest, int]],
    threads: int,
    *,
    transient: bool,
) -> tuple[float, float]:
    def one(item: tuple[Digest, int]) -> None:
        digest, size = item
        with src.open_blob(digest, size=size, transient=transient) as chunks:
            dst.write_blob(digest, size, chunks)

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, blobs))
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blobs", type=int, default=8)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc_a, reg_a = start_registry(Path(tmp) / "a")
        proc_b, reg_b = start_registry(Path(tmp) / "b")
        try:
            hosts = [reg_a.host, reg_b.host]
            with RegistryClient(insecure_registries=hosts) as seed:
                src_seed = seed.repository(Reference.parse(f"{reg_a.host}/bench/src:x"))
                blobs = []
                for _ in range(args.blobs):
                    data = os.urandom(args.mib << 20)
                    digest = Digest.of(data)
                    src_seed.write_blob(digest, len(data), [data])
                    blobs.append((digest, len(data)))
            modes = ("http.client, lent buffers", "http.client, bytes", "httpx")
            results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
            for run in range(args.runs):
                for index, mode in enumerate(modes):
                    transport = httpx.HTTPTransport() if mode == "httpx" else None
                    with RegistryClient(insecure_registries=hosts, transport=transport) as client:
                        src = client.repository(Reference.parse(f"{reg_a.host}/bench/src:x"))
                        dst = client.repository(
                            Reference.parse(f"{reg_b.host}/bench/m{index}-{run}:x")
                        )
                        results[mode].append(
                            _copy(src, dst, blobs, args.threads, transient=index == 0)
                        )
            total = args.blobs * args.mib
            print(
                f"median of {args.runs}, {total} MiB, {args.threads} threads, "
                f"load {os.getloadavg()[0]:.1f}"
            )
            for mode, runs in results.items():
                walls = [wall for wall, _ in runs]
                cpus = [cpu for _, cpu in runs]
                print(
                    f"{mode:28s} {statistics.median(walls):.2f} s wall, "
                    f"{statistics.median(cpus):.3f} s CPU ({' '.join(f'{t:.2f}' for t in walls)})"
                )
        finally:
            stop_registry(proc_a)
            stop_registry(proc_b)


if __name__ == "__main__":
    main()
