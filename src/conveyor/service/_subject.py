"""What a reference resolved to, exactly once: the repository it lives in, the manifest
its tag or digest named, and (when asked) what the image is."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.oci.digest import Digest
from conveyor.oci.inspect import ImageInspection, inspect_image
from conveyor.oci.name import Target, parse_target
from conveyor.oci.store import RawManifest, Repository
from conveyor.service._repositories import Opener


@dataclass(frozen=True)
class Subject:
    name: str  # "registry/repository" or "oci:PATH"
    repository: Repository
    top: RawManifest
    tag: str | None = None  # the tag the user named, if any (resolved once to ``top``)
    inspection: ImageInspection | None = None

    @property
    def digest(self) -> Digest:
        return self.top.digest

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.top.digest}"

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.inspection.labels) if self.inspection else {}


def resolve_subject(
    reference: str | Target, opener: Opener, *, inspect: bool = False, create: bool = False
) -> Subject:
    """Resolve ``reference`` (text is parsed strictly: a tag or digest is required)."""
    target = parse_target(reference, strict=True) if isinstance(reference, str) else reference
    repository = opener(target, create=create)
    top = repository.get_manifest(target.wanted)
    inspection = inspect_image(repository, target.name, top) if inspect else None
    return Subject(target.name, repository, top, target.tag, inspection)
