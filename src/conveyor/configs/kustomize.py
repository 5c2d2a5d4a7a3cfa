"""kustomize ``images:`` entries: ``name`` (the image in the bases), ``newName``, ``newTag``,
``digest``. The site's reference is what kustomize writes into the manifests:
``(newName or name)[:newTag][@digest]``.

``placeholders`` follows kustomizations into the manifests they build, so that a base's
``image: web`` set by an overlay's ``images: [{name: web, newTag: …}]`` is known to be a
placeholder (lint does not report it; pin leaves it)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from conveyor.configs import yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ConfigFileError, ImageSite, Location
from conveyor.configs.yamlio import Node


def extract(builder: SiteBuilder, documents: list[Node | None]) -> list[ImageSite]:
    sites: list[ImageSite] = []
    for index, document in enumerate(documents):
        if yamlio.is_mapping(document):
            sites.extend(extract_document(builder, document, (index,)))
    return sites


def extract_document(builder: SiteBuilder, document: Node, where: Location) -> list[ImageSite]:
    sites: list[ImageSite] = []
    images = yamlio.get(document, "images")
    for position, entry in enumerate(yamlio.items(images)):
        if not yamlio.is_mapping(entry):
            continue
        fields = dict(yamlio.own_entries(entry))
        name = yamlio.text(fields.get("name"))
        if not name:
            continue
        new_name = yamlio.text(fields.get("newName"))
        tag = yamlio.text(fields.get("newTag"))
        digest = yamlio.text(fields.get("digest"))
        reference = new_name or name
        if tag:
            reference += f":{tag}"
        if digest:
            reference += f"@{digest}"
        # Without newTag and digest the tag comes from the base manifests: not a reference
        # this file decides.
        if not tag and not digest:
            continue
        anchor_key = "newName" if new_name else "name"
        sites.append(
            builder.split(
                fields[anchor_key],
                reference,
                (*where, "images", position),
                form="kustomize",
                anchor_key=anchor_key,
            )
        )
    return sites


# --- placeholders: base images that an overlay's ``images:`` sets ----------------------------

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_RESOURCE_KEYS = ("resources", "bases", "components")
MAX_KUSTOMIZATIONS = 1000
MAX_DEPTH = 32

Placeholders = dict[Path, dict[str, Path]]


def image_name(reference: str) -> str:
    """The name kustomize matches ``images[].name`` against: the reference without its tag
    and digest (``web:1.0`` and ``web@sha256:…`` are ``web``)."""
    bare = reference.split("@", 1)[0]
    slash = bare.rfind("/")
    colon = bare.find(":", slash + 1)
    return bare[:colon] if colon >= 0 else bare


def is_placeholder(site: ImageSite, names: Mapping[str, Path]) -> bool:
    """A deployed image whose name a kustomization sets (``names`` from ``placeholders``)."""
    return site.role == "deploy" and site.form == "scalar" and image_name(site.reference) in names


def placeholders(files: Iterable[Path]) -> Placeholders:
    """For each manifest that a kustomization among ``files`` builds (through ``resources``,
    ``bases`` and ``components``, into the bases it names), the image names an ``images:``
    entry of that kustomization (or of one that includes it) sets with ``newTag`` or
    ``digest``, and the kustomization that sets it. Such a base image is a placeholder: what
    runs is decided by the kustomization, whose ``images:`` entry is judged instead.

    Only kustomization files are read (bounded, hostile-safe like every config file);
    remote resources (URLs) are not followed."""
    found: Placeholders = {}
    budget = [MAX_KUSTOMIZATIONS]
    for path in files:
        if path.name in KUSTOMIZATION_NAMES:
            _walk(Path(os.path.abspath(path)), {}, found, (), budget)
    return found


def _walk(
    kustomization: Path,
    inherited: dict[str, Path],
    found: Placeholders,
    stack: tuple[Path, ...],
    budget: list[int],
) -> None:
    if kustomization in stack or len(stack) > MAX_DEPTH or budget[0] <= 0:
        return
    budget[0] -= 1
    document = _document(kustomization)
    if document is None:
        return
    # The including (outer) kustomization's transformer runs last: its entry wins.
    names = {**_setters(document, kustomization), **inherited}
    for key in _RESOURCE_KEYS:
        for item in yamlio.items(yamlio.get(document, key)):
            text = yamlio.text(item)
            if not text or "://" in text or text.startswith(("github.com/", "git@")):
                continue
            target = Path(os.path.normpath(kustomization.parent / text))
            if target.is_dir():
                nested = next(
                    (target / n for n in KUSTOMIZATION_NAMES if (target / n).is_file()), None
                )
                if nested is not None:
                    _walk(nested, names, found, (*stack, kustomization), budget)
            elif names and target.is_file():
                entry = found.setdefault(target, {})
                for name, source in names.items():
                    entry.setdefault(name, source)


def _document(path: Path) -> Node | None:
    from conveyor.configs.files import read_source

    try:
        documents = yamlio.compose_documents(read_source(path), str(path))
    except ConfigFileError:
        return None  # linted (and reported) as a file of its own when it is in scope
    first = documents[0] if documents else None
    return first if yamlio.is_mapping(first) else None


def _setters(document: Node, kustomization: Path) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for entry in yamlio.items(yamlio.get(document, "images")):
        fields = dict(yamlio.own_entries(entry))
        name = yamlio.text(fields.get("name"))
        # With only newName the base's tag (or its absence) still decides what runs.
        if name and (yamlio.text(fields.get("newTag")) or yamlio.text(fields.get("digest"))):
            names[name] = kustomization
    return names
