"""What an image is: digest, platforms, labels, created, total size. Pure over the
``Repository`` protocol (a registry or a layout), no network of its own.

For an index, labels come from one child: the host's platform if present, else the first
real platform (buildx attestation manifests, platform ``unknown``, never win).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import ManifestError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.manifest import (
    MAX_CONFIG_BYTES,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_config,
    parse_manifest,
)
from conveyor.oci.store import RawManifest, Repository


@dataclass(frozen=True)
class ChildManifest:
    """One manifest of an index, as listed there."""

    digest: Digest
    platform: str  # "os/arch[/variant]" or "unknown"
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"digest": str(self.digest), "platform": self.platform, "size": self.size}


@dataclass(frozen=True)
class ImageInspection:
    name: str
    digest: Digest
    media_type: str
    platforms: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    created: str | None
    total_size: int
    config_digest: Digest | None = None
    labels_from: str | None = None  # the platform whose config gave the labels, for an index
    children: list[ChildManifest] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reference": self.reference,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "platforms": self.platforms,
            "labels": self.labels,
            "annotations": self.annotations,
            "created": self.created,
            "total_size": self.total_size,
            "config_digest": str(self.config_digest) if self.config_digest else None,
            "labels_from": self.labels_from,
            "manifests": [child.to_dict() for child in self.children],
        }


def host_platform() -> tuple[str, str]:
    """``(os, architecture)`` of this machine in OCI words (linux containers assumed)."""
    import platform

    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return "linux", arch


def inspect_image(
    repository: Repository,
    name: str,
    top: RawManifest,
    *,
    platform: tuple[str, str] | None = None,
) -> ImageInspection:
    """Inspect ``top`` (already fetched from ``repository``); ``platform`` picks the child
    whose labels are shown (default: this host's)."""
    parsed = _parse(top, repository)
    sizes: dict[Digest, int] = {top.digest: len(top.data)}
    platforms: list[str] = []
    children: list[ChildManifest] = []
    image: ImageManifest | None = None
    labels_from: str | None = None
    if isinstance(parsed, ImageIndex):
        chosen: tuple[int, ImageManifest, str] | None = None
        host_os, host_arch = platform or host_platform()
        for descriptor in parsed.manifests:
            child_raw = repository.get_manifest(descriptor.digest)
            child = _parse(child_raw, repository)
            sizes[child_raw.digest] = len(child_raw.data)
            shown = str(descriptor.platform) if descriptor.platform else "unknown"
            platforms.append(shown)
            children.append(ChildManifest(descriptor.digest, shown, descriptor.size))
            if isinstance(child, ImageIndex):
                continue  # nested indexes: listed, not descended into for labels
            _add_blob_sizes(child, sizes)
            score = _platform_score(descriptor.platform, host_os, host_arch)
            if chosen is None or score > chosen[0]:
                chosen = (score, child, shown)
        if chosen is not None:
            _, image, labels_from = chosen
    else:
        image = parsed
        _add_blob_sizes(parsed, sizes)
    labels: dict[str, str] = {}
    created: str | None = None
    config_digest: Digest | None = None
    if image is not None:
        config = _read_config(repository, image)
        if config is not None:
            labels, created = dict(config.labels), config.created
            if not isinstance(parsed, ImageIndex) and config.architecture:
                platforms = [
                    f"{config.os or 'unknown'}/{config.architecture}"
                    + (f"/{config.variant}" if config.variant else "")
                ]
        config_digest = image.config.digest
    return ImageInspection(
        name=name,
        digest=top.digest,
        media_type=top.media_type,
        platforms=platforms,
        labels=labels,
        annotations=dict(parsed.annotations),
        created=created or parsed.annotations.get("org.opencontainers.image.created"),
        total_size=sum(sizes.values()),
        config_digest=config_digest,
        labels_from=labels_from,
        children=children,
    )


def _platform_score(platform: Platform | None, host_os: str, host_arch: str) -> int:
    if platform is None:
        return 0
    if platform.architecture == "unknown":
        return -1  # attestation manifests of buildx
    if platform.os == host_os:
        return 2 if platform.architecture == host_arch else 1
    return 0


def _parse(raw: RawManifest, repository: Repository) -> ImageManifest | ImageIndex:
    try:
        return parse_manifest(raw.data, content_type=raw.media_type)
    except ManifestError as exc:
        raise ManifestError(f"{repository.display_name}@{raw.digest.short}: {exc}") from exc


def _add_blob_sizes(manifest: ImageManifest, sizes: dict[Digest, int]) -> None:
    for blob in manifest.blobs():
        sizes[blob.digest] = blob.size


def _read_config(repository: Repository, image: ImageManifest) -> ImageConfig | None:
    descriptor = image.config
    if descriptor.size > MAX_CONFIG_BYTES:
        raise ManifestError(
            f"image config {descriptor.digest.short} is {descriptor.size} bytes, over the "
            f"{MAX_CONFIG_BYTES}-byte limit"
        )
    if descriptor.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return None  # an artifact (signature, SBOM...): no image config to read
    with repository.open_blob(descriptor.digest, size=descriptor.size) as chunks:
        data = b"".join(chunks)
    return parse_config(data)
