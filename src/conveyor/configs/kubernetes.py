"""Kubernetes manifests: every container image in every document.

Pod specs are found wherever they sit (Pod ``spec``, workload ``spec.template.spec``, CronJob
``spec.jobTemplate.spec.template.spec``, ``List`` items, custom resources that embed a pod
template): any ``containers``, ``initContainers`` or ``ephemeralContainers`` list of mappings
with ``image``. ``kind: Kustomization`` documents are read as kustomize files.
"""

from __future__ import annotations

from conveyor.configs import kustomize, yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite, Location
from conveyor.configs.yamlio import Node

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# Text that is never a pod spec; skipping it keeps large ConfigMaps cheap.
_SKIPPED_KEYS = frozenset({"data", "stringData", "binaryData", "metadata", "status"})


def extract(builder: SiteBuilder, documents: list[Node | None]) -> list[ImageSite]:
    sites: list[ImageSite] = []
    for index, document in enumerate(documents):
        if not yamlio.is_mapping(document):
            continue
        if yamlio.text(yamlio.get(document, "kind")) == "Kustomization":
            sites.extend(kustomize.extract_document(builder, document, (index,)))
            continue
        _walk(builder, document, (index,), sites)
    return sites


def _walk(builder: SiteBuilder, node: Node, location: Location, sites: list[ImageSite]) -> None:
    # Iterative: a deep manifest must not hit Python's recursion limit.
    stack: list[tuple[Node, Location]] = [(node, location)]
    while stack:
        current, where = stack.pop()
        if yamlio.is_mapping(current):
            children = []
            for key, value in yamlio.own_entries(current):
                if key in CONTAINER_LISTS and yamlio.is_sequence(value):
                    sites.extend(_containers(builder, value, (*where, key)))
                elif key not in _SKIPPED_KEYS and not yamlio.is_scalar(value):
                    children.append((value, (*where, key)))
            stack.extend(reversed(children))
        elif yamlio.is_sequence(current):
            stack.extend(
                reversed(
                    [
                        (item, (*where, position))
                        for position, item in enumerate(yamlio.items(current))
                        if not yamlio.is_scalar(item)
                    ]
                )
            )


def _containers(builder: SiteBuilder, containers: Node, where: Location) -> list[ImageSite]:
    sites = []
    for position, container in enumerate(yamlio.items(containers)):
        for key, value in yamlio.own_entries(container):
            if key == "image":
                site = builder.scalar(value, (*where, position, "image"), role="deploy")
                if site is not None:
                    sites.append(site)
    return sites
