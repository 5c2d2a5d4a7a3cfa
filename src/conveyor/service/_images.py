"""Image operations: resolve, inspect, copy, tags (a registry or an ``oci:`` layout), and
sample images for the demo. Light: no pydantic, no ledger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import InputError
from conveyor.oci.digest import Digest
from conveyor.oci.name import LayoutReference, parse_target
from conveyor.service._repositories import RegistryOptions, open_session

if TYPE_CHECKING:  # imported where used: ``conveyor resolve`` needs none of them
    from conveyor.oci.inspect import ImageInspection
    from conveyor.registry.copy import CopyProgress, CopyResult


@dataclass(frozen=True)
class ResolvedImage:
    name: str  # "registry/repository" or "oci:PATH"
    digest: Digest
    media_type: str

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}"


def resolve(text: str, *, options: RegistryOptions | None = None) -> ResolvedImage:
    """Resolve a reference (tag or digest) to the digest of what it names, exactly once."""
    target = parse_target(text, strict=True)
    with open_session(options) as open_repository:
        raw = open_repository(target, create=False).get_manifest(target.wanted)
    return ResolvedImage(target.name, raw.digest, raw.media_type)


def inspect(text: str, *, options: RegistryOptions | None = None) -> ImageInspection:
    """Digest, media type, platforms, labels, annotations, created and total size."""
    from conveyor.oci.inspect import inspect_image

    target = parse_target(text, strict=True)
    with open_session(options) as open_repository:
        repository = open_repository(target, create=False)
        top = repository.get_manifest(target.wanted)
        return inspect_image(repository, target.name, top)


def copy_image(
    source: str,
    destination: str,
    *,
    options: RegistryOptions | None = None,
    progress: CopyProgress | None = None,
) -> CopyResult:
    """Copy an image or a whole index, keeping its digest.

    The destination tag defaults to the source tag; a destination digest must equal the
    source digest (it is a check, not a rename).
    """
    from conveyor.registry.copy import copy

    src = parse_target(source, strict=True)
    dst = parse_target(destination)
    tag = dst.tag if dst.tag is not None else src.tag
    opts = options or RegistryOptions()
    with open_session(opts) as open_repository:
        src_repository = open_repository(src, create=False)
        dst_repository = open_repository(dst, create=True)
        if dst.digest is not None:
            top = src_repository.get_manifest(src.wanted)
            if top.digest != dst.digest:
                raise InputError(
                    f"destination digest {dst.digest.short} differs from the source digest "
                    f"{top.digest.short}; a copy never changes a digest"
                )
        return copy(
            src_repository,
            src.wanted,
            dst_repository,
            tags=[tag] if tag is not None else [],
            concurrency=opts.concurrency,
            progress=progress,
        )


def list_tags(text: str, *, options: RegistryOptions | None = None) -> list[str]:
    """Tags of a repository (``host/repo``) or of a layout (``oci:PATH``)."""
    target = parse_target(text)
    with open_session(options) as open_repository:
        return open_repository(target, create=False).list_tags()


def create_sample_image(
    layout_target: str, *, labels: Mapping[str, str], layer_sizes: tuple[int, ...] | None = None
) -> ResolvedImage:
    """Write a small fresh image into an OCI layout (``oci:PATH:TAG``), created if needed."""
    from conveyor.oci.layout import LayoutRepository
    from conveyor.oci.sample import write_sample_image

    target = parse_target(layout_target, strict=True)
    if not isinstance(target, LayoutReference) or target.tag is None:
        raise InputError(f"{layout_target!r}: a sample image goes to oci:PATH:TAG")
    repository = LayoutRepository(Path(target.path), create=True)
    if layer_sizes:
        raw = write_sample_image(repository, tag=target.tag, labels=labels, layer_sizes=layer_sizes)
    else:
        raw = write_sample_image(repository, tag=target.tag, labels=labels)
    return ResolvedImage(target.name, raw.digest, raw.media_type)
