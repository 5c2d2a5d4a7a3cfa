"""Blob data path: http.client (the default sender) vs httpx for a verified GET→PUT between
two real registries.

Starts two throwaway docker-registry instances, pushes N incompressible blobs to A, then
copies them A→B with ``open_blob`` → ``write_blob`` (each byte hashed on the way) in a
thread pool, alternating the two blob paths, and prints the median seconds of each.

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
    src: RegistryRepository, dst: RegistryRepository, blobs: list[tuple[Digest, int]], threads: int
) -> float:
    def one(item: tuple[Digest, int]) -> None:
        digest, size = item
        with src.open_blob(digest, size=size) as chunks:
            dst.write_blob(digest, size, chunks)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, blobs))
    return time.perf_counter() - started


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
            results: dict[str, list[float]] = {"http.client": [], "httpx": []}
            for run in range(args.runs):
                for mode in ("http.client", "httpx"):
                    transport = httpx.HTTPTransport() if mode == "httpx" else None
                    with RegistryClient(insecure_registries=hosts, transport=transport) as client:
                        src = client.repository(Reference.parse(f"{reg_a.host}/bench/src:x"))
                        dst = client.repository(
                            Reference.parse(f"{reg_b.host}/bench/{mode.replace('.', '-')}{run}:x")
                        )
                        results[mode].append(_copy(src, dst, blobs, args.threads))
            total = args.blobs * args.mib
            for mode, times in results.items():
                print(
                    f"{mode:12s} median {statistics.median(times):.2f} s for {total} MiB "
                    f"({' '.join(f'{t:.2f}' for t in times)})"
                )
        finally:
            stop_registry(proc_a)
            stop_registry(proc_b)


if __name__ == "__main__":
    main()
