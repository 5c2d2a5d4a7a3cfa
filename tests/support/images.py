"""Generate test images as OCI image layouts on disk, without conveyor's own code.

Independent of ``conveyor.oci.layout`` on purpose: tests that check our layout reader and
writer need images that our writer did not make. Push them anywhere with ``skopeo copy``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class BuiltImage:
    layout: Path
    digest: str  # digest of the top manifest or index
    media_type: str
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size, every blob written
    labels: dict[str, str] = field(default_factory=dict)


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    encoded = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / encoded
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return f"sha256:{encoded}", len(data)


def _layer(payload: bytes, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _descriptor(media_type: str, digest: str, size: int, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _finish_layout(layout: Path, top: dict[str, object], tag: str | None) -> None:
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index_path = layout / "index.json"
    index = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    entry = dict(top)
    if tag:
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        index["manifests"] = [
            m
            for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
        ]
    index["manifests"].append(entry)
    index_path.write_text(json.dumps(index))


def build_image(
    layout: Path,
    *,
    tag: str | None = "latest",
    layer_sizes: tuple[int, ...] = (2048, 4096),
    labels: dict[str, str] | None = None,
    architecture: str = "amd64",
    seed: bytes | None = None,
    write_index_entry: bool = True,
) -> BuiltImage:
    """An image manifest with incompressible layers (random unless ``seed`` is given)."""
    layout.mkdir(parents=True, exist_ok=True)
    labels = dict(labels or {})
    blobs: dict[str, int] = {}
    layers = []
    diff_ids = []
    for i, size in enumerate(layer_sizes):
        if seed is None:
            payload = os.urandom(size)
        else:
            payload = hashlib.shake_256(seed + bytes([i])).digest(size)
        tar = _layer(payload, f"layer{i}.bin")
        digest, length = _write_blob(layout, tar)
        blobs[digest] = length
        layers.append(_descriptor(OCI_LAYER_TAR, digest, length))
        diff_ids.append(digest)
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": "2026-11-26T00:00:00Z",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_digest, config_size = _write_blob(layout, json.dumps(config).encode())
    blobs[config_digest] = config_size
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config_digest, config_size),
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    digest, size = _write_blob(layout, manifest_bytes)
    if write_index_entry:
        _finish_layout(layout, _descriptor(OCI_MANIFEST, digest, size), tag)
    return BuiltImage(layout, digest, OCI_MANIFEST, blobs, labels)


def build_index(
    layout: Path,
    *,
    tag: str | None = "latest",
    architectures: tuple[str, ...] = ("amd64", "arm64"),
    labels: dict[str, str] | None = None,
    layer_sizes: tuple[int, ...] = (2048,),
) -> BuiltImage:
    """A multi-arch OCI image index whose children are written to the same layout."""
    children = []
    blobs: dict[str, int] = {}
    for arch in architectures:
        child = build_image(
            layout,
            tag=None,
            layer_sizes=layer_sizes,
            labels=labels,
            architecture=arch,
            write_index_entry=False,
        )
        blobs.update(child.blobs)
        size = (layout / "blobs" / "sha256" / child.digest.split(":")[1]).stat().st_size
        blobs[child.digest] = size
        children.append(
            _descriptor(
                OCI_MANIFEST, child.digest, size, platform={"architecture": arch, "os": "linux"}
            )
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    digest, size = _write_blob(layout, json.dumps(index, indent=2).encode())
    _finish_layout(layout, _descriptor(OCI_INDEX, digest, size), tag)
    return BuiltImage(layout, digest, OCI_INDEX, blobs, dict(labels or {}))
