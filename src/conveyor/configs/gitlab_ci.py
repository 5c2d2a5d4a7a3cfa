"""GitLab CI: ``image:`` and ``services:`` (strings or ``{name:}``) at the top level, under
``default:`` and in jobs, and references in ``script``/``before_script``/``after_script``."""

from __future__ import annotations

from conveyor.configs import shell, yamlio
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite, Location
from conveyor.configs.yamlio import Node

_SCRIPTS = ("script", "before_script", "after_script")


def extract(builder: SiteBuilder, documents: list[Node | None]) -> list[ImageSite]:
    sites: list[ImageSite] = []
    for index, document in enumerate(documents):
        if not yamlio.is_mapping(document):
            continue
        _job(builder, document, (index,), sites, top=True)
        for key, value in yamlio.own_entries(document):
            if yamlio.is_mapping(value) and key not in ("variables", "workflow", "include"):
                _job(builder, value, (index, key), sites, top=False)
    return sites


def _job(
    builder: SiteBuilder, node: Node, where: Location, sites: list[ImageSite], *, top: bool
) -> None:
    fields = dict(yamlio.own_entries(node))
    _image(builder, fields.get("image"), (*where, "image"), "deploy", sites)
    services = fields.get("services")
    for position, service in enumerate(yamlio.items(services)):
        _image(builder, service, (*where, "services", position), "service", sites)
    if top:
        return
    for name in _SCRIPTS:
        script = fields.get(name)
        lines = yamlio.items(script) if yamlio.is_sequence(script) else [script]
        for line in lines:
            found = yamlio.scalar(line) if line is not None else None
            if found is not None:
                sites.extend(builder.script_sites(found, shell.analyse(found.text).references))


def _image(
    builder: SiteBuilder, node: Node, where: Location, role: str, sites: list[ImageSite]
) -> None:
    if node is None:
        return
    if yamlio.is_mapping(node):
        name = yamlio.get(node, "name")
        site = builder.scalar(name, (*where, "name"), role=role) if name is not None else None
    else:
        site = builder.scalar(node, where, role=role)
    if site is not None:
        sites.append(site)
