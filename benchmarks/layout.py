# ruff: noqa: E402  (sys.path is set up before the project imports)
"""OCI image layout store cost at 100 / 1,000 / 10,000 images, with skopeo in the same run.

    .venv/bin/python benchmarks/layout.py [--sizes 100,1000,10000] [--runs 9] [--src DIR]

Each layout is written directly (fast, valid content): per image a config, a manifest
tagged ``img-<n>``, a DSSE-like envelope, its referrer manifest and the ``sha256-<hex>``
referrers index, as conveyor leaves them after ``record`` + ``attest`` (two ``index.json``
entries per image). Then the operations conveyor performs on a layout are measured, each in
a fresh process (as one conveyor command after another), with the time inside the process
after its imports reported as well:

- resolve a tag (``record``, ``check``: the subject is read by tag);
- put manifest + tag (``promote`` into a layout: a new image stored and tagged);
- attach a referrer (``attest``: resolve the subject, store the envelope, list it in the
  ``sha256-<hex>`` index);
- the first open after another tool rewrote ``index.json`` (conveyor re-reads it once).

Peers in the same run, alternated with conveyor: ``skopeo inspect --raw oci:PATH:TAG`` and
``skopeo copy oci:SMALL:latest oci:PATH:TAG`` (on a hard-linked twin of the layout, so its
``index.json`` rewrites do not disturb conveyor's runs). skopeo 1.9 has no referrers.

The measured processes run with bytecode compiled (``compileall`` first) and
PYTHONDONTWRITEBYTECODE unset, as after a user's ``pip install``. Medians of ``--runs``.
``--src DIR`` measures another checkout's ``src`` (e.g. the code before a change).
Machines are noisy: compare the ratios printed, measured in one run.
"""

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
ATTESTATION = "application/vnd.conveyor.attestation.v1+json"
REF = "org.opencontainers.image.ref.name"
TARGET_RATIO = 1.5  # issue 11: the cost at 10,000 images within 1.5x of the cost at 100


# --- building layouts fast ------------------------------------------------------------


class _Writer:
    def __init__(self, layout: Path) -> None:
        self.blobs = layout / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob(self, data: bytes) -> dict[str, object]:
        encoded = hashlib.sha256(data).hexdigest()
        path = self.blobs / encoded
        if not path.exists():
            path.write_bytes(data)
        return {"digest": f"sha256:{encoded}", "size": len(data)}


def _tar_layer() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        payload = b"hello from the benchmark\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _image(w: _Writer, n: int, layer: dict[str, object]) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"git.commit": f"{n:040x}", "ci.run": str(n)}},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **w.blob(json.dumps(config).encode())},
        "layers": [{"mediaType": OCI_LAYER, **layer}],
    }
    return json.dumps(manifest).encode()


def _referrer(w: _Writer, subject: bytes, n: int, empty: dict[str, object]) -> bytes:
    envelope = json.dumps({"payloadType": "application/vnd.in-toto+json", "n": n}).encode()
    referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ATTESTATION,
        "config": {"mediaType": OCI_EMPTY, **empty},
        "layers": [{"mediaType": DSSE, **w.blob(envelope)}],
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": f"sha256:{hashlib.sha256(subject).hexdigest()}",
            "size": len(subject),
        },
    }
    return json.dumps(referrer).encode()


def build_layout(layout: Path, images: int) -> None:
    """``images`` recorded and attested images, written without conveyor's code."""
    w = _Writer(layout)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layer = w.blob(_tar_layer())
    empty = w.blob(b"{}")
    entries: list[dict[str, object]] = []
    for n in range(images):
        manifest = _image(w, n, layer)
        entries.append(
            {"mediaType": OCI_MANIFEST, **w.blob(manifest), "annotations": {REF: f"img-{n}"}}
        )
        referrer = _referrer(w, manifest, n, empty)
        described = {"mediaType": OCI_MANIFEST, **w.blob(referrer), "artifactType": ATTESTATION}
        fallback = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [described]}
        ).encode()
        subject = hashlib.sha256(manifest).hexdigest()
        entries.append(
            {"mediaType": OCI_INDEX, **w.blob(fallback), "annotations": {REF: f"sha256-{subject}"}}
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    (layout / "index.json").write_text(json.dumps(index))


def twin(layout: Path, other: Path) -> None:
    """A copy whose blobs are hard links (nobody rewrites a blob in place)."""
    subprocess.run(["cp", "-al", str(layout / "blobs"), str(other / "blobs")], check=True)
    for name in ("oci-layout", "index.json"):
        shutil.copyfile(layout / name, other / name)


def touch_index(layout: Path) -> None:
    """Rewrite index.json as another tool would (same bytes, new file)."""
    data = (layout / "index.json").read_bytes()
    tmp = layout / "index.json.bench"
    tmp.write_bytes(data)
    tmp.replace(layout / "index.json")


# --- the measured operations (each a fresh process) -----------------------------------

_PRELUDE = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.store import RawManifest
imported = time.perf_counter()
path, tag, unique = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
"""

OPS = {
    "resolve": """
repo = LayoutRepository(path)
raw = repo.get_manifest(tag)
assert raw.digest
""",
    "put": """
repo = LayoutRepository(path)
layer = json.loads(repo.get_manifest("img-0").data)["layers"][0]
config = json.dumps({"architecture": "amd64", "os": "linux", "n": unique,
    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode()
repo.write_blob(Digest.of(config), len(config), [config])
doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": str(Digest.of(config)), "size": len(config)},
    "layers": [layer]}
data = json.dumps(doc).encode()
repo.put_manifest(RawManifest(data, doc["mediaType"], Digest.of(data)), tag=f"new-{unique}")
""",
    "attach": """
from conveyor.oci.referrers import attach_referrer
repo = LayoutRepository(path)
subject = repo.get_manifest(tag)
envelope = json.dumps({"payloadType": "application/vnd.in-toto+json", "n": unique}).encode()
repo.write_blob(Digest.of(envelope), len(envelope), [envelope])
empty = b"{}"
doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.conveyor.attestation.v1+json",
    "config": {"mediaType": "application/vnd.oci.empty.v1+json",
               "digest": str(Digest.of(empty)), "size": 2},
    "layers": [{"mediaType": "application/vnd.dsse.envelope.v1+json",
                "digest": str(Digest.of(envelope)), "size": len(envelope)}],
    "subject": {"mediaType": subject.media_type, "digest": str(subject.digest),
                "size": len(subject.data)}}
data = json.dumps(doc).encode()
attach_referrer(repo, RawManifest(data, doc["mediaType"], Digest.of(data)))
""",
}
_EPILOGUE = """
print(time.perf_counter() - imported)
"""


def _environment(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(src)
    return env


def run_op(
    op: str, layout: Path, tag: str, unique: str, env: dict[str, str]
) -> tuple[float, float]:
    """(process wall time, time inside the process after imports)."""
    code = _PRELUDE + OPS[op] + _EPILOGUE
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(layout), tag, unique],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{op} failed on {layout}:\n{done.stderr}")
    return wall, float(done.stdout.strip().splitlines()[-1])


def run_skopeo(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(["skopeo", *args], check=True, capture_output=True)
    return time.perf_counter() - started


def rewrite_floor(layout: Path) -> float:
    """The floor of any write: index.json rewritten whole (temp + fsync + rename + directory
    fsync), as the one-file index of the OCI layout requires for an atomic update."""
    data = (layout / "index.json").read_bytes()
    started = time.perf_counter()
    tmp = layout / "index.json.floor"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, layout / "index.json.floor-done")
    directory = os.open(layout, os.O_RDONLY)
    os.fsync(directory)
    os.close(directory)
    return time.perf_counter() - started


def first_open(layout: Path, env: dict[str, str]) -> float:
    touch_index(layout)
    return run_op("resolve", layout, "img-0", "x", env)[1]


# --- the run ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.runs < 5:
        parser.error("--runs: at least 5 (medians of >= 5)")
    have_skopeo = shutil.which("skopeo") is not None
    src = args.src.resolve()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
    env = _environment(src)
    print(f"conveyor from {src}; bytecode compiled, PYTHONDONTWRITEBYTECODE unset for the")
    print(f"measured processes; medians of {args.runs} runs; skopeo: {have_skopeo}")

    work = Path(tempfile.mkdtemp(prefix="conveyor-layout-bench-"))
    results: dict[tuple[str, int], list[float]] = {}
    try:
        small = work / "small"
        build_layout(small, 1)
        index = json.loads((small / "index.json").read_text())
        index["manifests"][0]["annotations"][REF] = "latest"
        (small / "index.json").write_text(json.dumps(index))
        layouts: dict[int, tuple[Path, Path]] = {}
        for size in sizes:
            started = time.perf_counter()
            layout, peer = work / f"n{size}", work / f"n{size}-skopeo"
            build_layout(layout, size)
            peer.mkdir()
            twin(layout, peer)
            layouts[size] = (layout, peer)
            print(
                f"  built {size} images in {time.perf_counter() - started:.1f} s", file=sys.stderr
            )
        for size, (layout, _peer) in layouts.items():
            opened = statistics.median(first_open(layout, env) for _ in range(3))
            results[("first open (in-process)", size)] = [opened]
            run_op("resolve", layout, "img-0", "warm", env)  # the cache now matches
        # Sizes and tools alternate within each round, so drifting load hits all alike.
        for run in range(args.runs):
            for size, (layout, peer) in layouts.items():
                tag = f"img-{(run * 7919) % size}"
                subject = f"img-{(run * 104729 + 1) % size}"
                results.setdefault(("floor (in-process)", size), []).append(rewrite_floor(layout))
                for op in ("resolve", "put", "attach"):
                    wall, inside = run_op(
                        op, layout, subject if op == "attach" else tag, f"{size}-{run}", env
                    )
                    results.setdefault((f"{op} (process)", size), []).append(wall)
                    results.setdefault((f"{op} (in-process)", size), []).append(inside)
                if have_skopeo:
                    results.setdefault(("skopeo inspect --raw", size), []).append(
                        run_skopeo(["inspect", "--raw", f"oci:{layout}:{tag}"])
                    )
                    results.setdefault(("skopeo copy small → layout:tag", size), []).append(
                        run_skopeo(
                            [
                                "copy",
                                "-q",
                                "--preserve-digests",
                                f"oci:{small}:latest",
                                f"oci:{peer}:new-{run}",
                            ]
                        )
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _table(results, sizes)
    return 0


def _table(results: dict[tuple[str, int], list[float]], sizes: list[int]) -> None:
    rows = [
        "resolve (process)",
        "skopeo inspect --raw",
        "resolve (in-process)",
        "put (process)",
        "skopeo copy small → layout:tag",
        "put (in-process)",
        "attach (process)",
        "attach (in-process)",
        "floor (in-process)",
        "first open (in-process)",
    ]
    labels = {
        "resolve (process)": "resolve a tag, process",
        "resolve (in-process)": "resolve a tag, in-process",
        "put (process)": "put manifest + tag, process",
        "put (in-process)": "put manifest + tag, in-process",
        "attach (process)": "attach a referrer, process",
        "attach (in-process)": "attach a referrer, in-process",
        "skopeo inspect --raw": "  peer: skopeo inspect --raw",
        "skopeo copy small → layout:tag": "  peer: skopeo copy → oci:PATH:TAG",
        "floor (in-process)": "  floor: rewrite index.json + fsync",
        "first open (in-process)": "first open after a foreign write",
    }
    first, last = sizes[0], sizes[-1]
    head = f"{'operation':36s}" + "".join(f"{f'{n:,} img':>11s}" for n in sizes)
    head += f"{f'{last:,}/{first:,}':>12s}"
    print()
    print(head + "   vs skopeo")
    print("-" * (len(head) + 12))
    for row in rows:
        if (row, first) not in results:
            continue
        medians = {n: statistics.median(results[(row, n)]) for n in sizes if (row, n) in results}
        line = f"{labels[row]:36s}" + "".join(f"{medians[n] * 1000:9.1f}ms" for n in sizes)
        ratio = medians[last] / medians[first]
        line += f"{ratio:11.2f}x"
        peer = {
            "resolve (process)": "skopeo inspect --raw",
            "put (process)": "skopeo copy small → layout:tag",
        }.get(row)
        if peer is not None and (peer, last) in results:
            line += (
                f"   {medians[last] / statistics.median(results[(peer, last)]):.2f}x at {last:,}"
            )
        if row.startswith(("put", "attach")) and "process" in row:
            line += "   " + ("ok" if ratio <= TARGET_RATIO else f"over the {TARGET_RATIO}x target")
        print(line)
    print()
    print(
        f"target (issue 11): put / attach at {last:,} images within {TARGET_RATIO}x of {first:,}."
    )
    print("The floor row is the atomic rewrite of index.json alone (its size grows with the")
    print("layout: every tag is one entry of the one index file skopeo and umoci read).")
    print("The first open after another tool rewrote index.json reads and checks it once (and")
    print("every index manifest and untagged entry in it): that cost grows with the layout.")


if __name__ == "__main__":
    sys.exit(main())
