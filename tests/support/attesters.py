"""A referrer writer run as its own process, for tests with many parallel attesters.

``parallel_attesters(STORE, COUNT, BARRIER)`` starts COUNT of them at once. Each is
``python -m tests.support.attesters STORE NAME BARRIER`` where STORE is ``oci:PATH:TAG`` or
``HOST/REPO:TAG`` (plain HTTP, loopback). It stores a small referrer of the image STORE names,
then waits at BARRIER (a directory: it writes ``ready-NAME`` and waits for ``go``) so that
every writer attaches at once, attaches it, and prints the referrer's digest.

``deferred=True`` writers attach as a promotion does: one referrer with the read-back left
for later (``settle=False``), then, after a moment of other work, a second one that settles
both; they print both digests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.referrers import attach_referrer, attach_referrers
from conveyor.oci.store import RawManifest, Repository

EMPTY = b"{}"


def referrer_for(repository: Repository, subject: RawManifest, name: str) -> RawManifest:
    blob = f"attestation {name}".encode()
    repository.write_blob(Digest.of(blob), len(blob), [blob])
    repository.write_blob(Digest.of(EMPTY), len(EMPTY), [EMPTY])
    document = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.example.attestation",
        "config": {"mediaType": mt.OCI_EMPTY, "digest": str(Digest.of(EMPTY)), "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": str(Digest.of(blob)), "size": len(blob)}],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": len(subject.data),
        },
        "annotations": {"example.name": name},
    }
    data = json.dumps(document).encode()
    return RawManifest(data, mt.OCI_MANIFEST, Digest.of(data))


def _open(store: str) -> tuple[Repository, str]:
    if store.startswith("oci:"):
        from conveyor.oci.layout import LayoutRepository

        path, tag = store[4:].rsplit(":", 1)
        return LayoutRepository(Path(path)), tag
    from conveyor.oci.name import Reference
    from conveyor.registry.client import RegistryClient

    reference = Reference.parse(store)
    client = RegistryClient(insecure_registries=[reference.registry])
    assert reference.tag is not None
    return client.repository(reference), reference.tag


def parallel_attesters(store: str, count: int, barrier: Path, *, deferred: int = 0) -> set[str]:
    """``count`` writer processes that attach one referrer each, all at the same moment;
    the first ``deferred`` of them attach two, the first without settling."""
    barrier.mkdir()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.attesters",
                store,
                f"w{n}",
                str(barrier),
                *(["deferred"] if n < deferred else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            env=env,
        )
        for n in range(count)
    ]
    deadline = time.monotonic() + 180
    while len(list(barrier.glob("ready-*"))) < count and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.02)
    (barrier / "go").touch()
    attached: set[str] = set()
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        attached.update(out.split())
    assert len(attached) == count + deferred
    return attached


def main(argv: list[str]) -> int:
    store, name, barrier, *mode = argv
    repository, tag = _open(store)
    subject = repository.get_manifest(tag)
    referrer = referrer_for(repository, subject, name)
    later = referrer_for(repository, subject, f"{name}-later") if mode == ["deferred"] else None
    gate = Path(barrier)
    (gate / f"ready-{name}").touch()
    deadline = time.monotonic() + 120
    while not (gate / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    if later is None:
        attach_referrer(repository, referrer)
        print(referrer.digest)
        return 0
    attach_referrers(repository, [referrer], settle=False)  # as a promotion carries them
    time.sleep(0.05)  # its lock, gates and signing
    attach_referrers(repository, [later])  # its own record: settles both
    print(referrer.digest, later.digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
