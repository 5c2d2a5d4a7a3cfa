"""A small, real, runnable-shaped OCI image written through any ``Repository``.

Used by ``conveyor demo`` (and handy in docs): uncompressed tar layers of random bytes, an
OCI image config with labels, an OCI image manifest. Pure content building plus
``write_blob`` / ``put_manifest``: the same path every other artifact takes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Mapping

from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.store import RawManifest, Repository

__all__ = ["write_sample_image"]


def _layer(index: int, size: int) -> bytes:
    payload = os.urandom(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"app/layer{index}.bin")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _put_blob(repository: Repository, data: bytes) -> dict[str, object]:
    digest = Digest.of(data)
    repository.write_blob(digest, len(data), [data])
    return {"digest": str(digest), "size": len(data)}


def write_sample_image(
    repository: Repository,
    *,
    tag: str,
    labels: Mapping[str, str],
    layer_sizes: tuple[int, ...] = (64 * 1024, 256 * 1024, 32 * 1024),
    created: str = "2026-01-01T00:00:00Z",
    architecture: str = "amd64",
) -> RawManifest:
    """Write a fresh image (random layers: a new digest every time) and tag it."""
    layers = []
    diff_ids = []
    for i, size in enumerate(layer_sizes):
        tar = _layer(i, size)
        layers.append({"mediaType": mt.OCI_LAYER_TAR, **_put_blob(repository, tar)})
        diff_ids.append(str(Digest.of(tar)))  # uncompressed: the diff ID is the blob digest
    config = {
        "created": created,
        "architecture": architecture,
        "os": "linux",
        "config": {"Labels": dict(labels), "Cmd": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, **_put_blob(repository, config_bytes)},
        "layers": layers,
        "annotations": {"org.opencontainers.image.created": created},
    }
    data = json.dumps(manifest, indent=2).encode()
    raw = RawManifest(data=data, media_type=mt.OCI_MANIFEST, digest=Digest.of(data))
    repository.put_manifest(raw, tag=tag)
    return raw
