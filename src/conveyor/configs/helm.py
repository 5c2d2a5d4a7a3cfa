"""Helm ``values.yaml``: image references anywhere in the tree.

- a mapping with ``repository`` and ``tag`` and/or ``digest`` (optionally ``registry``), under
  ``image:`` or any other key (``redis: {repository, tag}``) — one split site anchored at
  ``repository``; an ``image:`` mapping with a ``repository`` but no ``tag`` is a site too
  (the chart's appVersion fills the tag);
- a plain string under ``image:`` (or a key ending in ``Image``/``_image``/``-image``), as in
  sidecar container lists.
Go templates (``{{ .Values.x }}``) make a site dynamic.
"""

from __future__ import annotations

from conveyor.configs import yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite, Location
from conveyor.configs.yamlio import Node


def extract(builder: SiteBuilder, documents: list[Node | None]) -> list[ImageSite]:
    sites: list[ImageSite] = []
    for index, document in enumerate(documents):
        if document is not None:
            _walk(builder, document, (index,), None, sites)
    return sites


def _is_image_key(key: str | None) -> bool:
    if key is None:
        return False
    return key.lower() == "image" or key.endswith(("Image", "_image", "-image"))


def _walk(
    builder: SiteBuilder,
    node: Node,
    where: Location,
    key: str | None,
    sites: list[ImageSite],
) -> None:
    stack: list[tuple[Node, Location, str | None]] = [(node, where, key)]
    while stack:
        current, location, name = stack.pop()
        if yamlio.is_mapping(current):
            fields = dict(yamlio.own_entries(current))
            split = _split(builder, fields, location, name)
            if split is not None:
                sites.append(split)
            children = [
                (value, (*location, child), child)
                for child, value in fields.items()
                if not (split is not None and child in ("registry", "repository", "tag", "digest"))
            ]
            stack.extend(reversed(children))
        elif yamlio.is_sequence(current):
            stack.extend(
                reversed(
                    [(item, (*location, i), None) for i, item in enumerate(yamlio.items(current))]
                )
            )
        elif _is_image_key(name):
            value = yamlio.text(current)
            if value and (name == "image" or any(c in value for c in "/:.")):
                site = builder.scalar(current, location, role="deploy")
                if site is not None:
                    sites.append(site)


def _split(
    builder: SiteBuilder, fields: dict[str, Node], location: Location, name: str | None
) -> ImageSite | None:
    repository_node = fields.get("repository")
    repository = yamlio.text(repository_node)
    if not repository or not yamlio.is_scalar(repository_node) or "://" in repository:
        return None
    tag = yamlio.text(fields.get("tag"))
    digest = yamlio.text(fields.get("digest"))
    if "tag" not in fields and "digest" not in fields and not _is_image_key(name):
        return None
    registry = yamlio.text(fields.get("registry"))
    reference = f"{registry.rstrip('/')}/{repository}" if registry else repository
    if tag:
        reference += f":{tag}"
    if digest:
        reference += f"@{digest}"
    return builder.split(
        repository_node, reference, location, form="helm-split", anchor_key="repository"
    )
