"""Dockerfile ``FROM`` lines: the base images (role ``base``), one site each.

``scratch`` and earlier stage names (``FROM build``) are not images; ``--platform=…`` and
``AS name`` are skipped; a ``${ARG}`` makes the site dynamic (a build argument decides it).
"""

from __future__ import annotations

import re

from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite

_FROM_RE = re.compile(r"^(\s*)FROM\s+", re.IGNORECASE)


def extract(builder: SiteBuilder, text: str) -> list[ImageSite]:
    sites: list[ImageSite] = []
    stages: set[str] = set()
    lines = builder.lines
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        match = _FROM_RE.match(line)
        if match is None:
            continue
        first = number
        body = line
        while body.rstrip().endswith("\\") and number < len(lines):
            body = body.rstrip()[:-1] + " " + lines[number]
            number += 1
        words = body[match.end() :].split(" #", 1)[0].split()
        image = next((word for word in words if not word.startswith("--")), None)
        if image is None:
            continue
        rest = words[words.index(image) + 1 :]
        if len(rest) >= 2 and rest[0].lower() == "as":
            stages.add(rest[1].lower())
        if image.lower() == "scratch" or image.lower() in stages:
            continue
        column = line.find(image, match.end())
        if column < 0:
            column = match.end()
        sites.append(builder.line_site(first, column + 1, image, role="base", via="FROM"))
    return sites
