"""kustomize ``images:`` entries: ``name`` (the image in the bases), ``newName``, ``newTag``,
``digest``. The site's reference is what kustomize writes into the manifests:
``(newName or name)[:newTag][@digest]``."""

from __future__ import annotations

from conveyor.configs import yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite, Location
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
