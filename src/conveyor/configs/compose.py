"""Docker Compose: ``services.<name>.image`` (merge keys followed; ``x-`` extensions are not
services)."""

from __future__ import annotations

from conveyor.configs import yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite
from conveyor.configs.yamlio import Node


def extract(builder: SiteBuilder, documents: list[Node | None]) -> list[ImageSite]:
    sites: list[ImageSite] = []
    for index, document in enumerate(documents):
        services = yamlio.get(document, "services") if yamlio.is_mapping(document) else None
        for name, service in yamlio.own_entries(services):
            own = dict(yamlio.own_entries(service))
            image = own.get("image")
            location: tuple[str | int, ...] | None = (index, "services", name, "image")
            if image is None:
                # Inherited through ``<<: *base``: reported where it is written; pin cannot
                # follow the anchor, so no location.
                image, location = yamlio.get(service, "image"), None
            if image is None:
                continue
            site = builder.scalar(image, location, role="deploy")
            if site is not None:
                sites.append(site)
    return sites
