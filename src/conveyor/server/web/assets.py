"""Static files (``conveyor.css``, ``conveyor.js``) at ``/static/<hash>/<name>``: the name
carries a hash of the content, so a response may be cached for a year and a new release
is fetched at once. Read from the package once per process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from conveyor.server.problems import NotFound

router = APIRouter(include_in_schema=False)
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
NAMES = ("conveyor.css", "conveyor.js")
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    name: str
    data: bytes
    version: str
    media_type: str

    @property
    def url(self) -> str:
        return f"/static/{self.version}/{self.name}"


@cache
def assets() -> dict[str, Asset]:
    found = {}
    folder = resources.files("conveyor.server.web") / "static"
    for name in NAMES:
        data = (folder / name).read_bytes()
        version = hashlib.sha256(data).hexdigest()[:16]
        found[name] = Asset(name, data, version, _TYPES[name[name.rindex(".") :]])
    return found


def url(name: str) -> str:
    return assets()[name].url


@router.get("/static/{version}/{name}")
def static(version: str, name: str) -> Response:
    asset = assets().get(name)
    if asset is None or asset.version != version:
        raise NotFound(f"no such file: /static/{version[:20]}/{name[:40]}")
    return Response(asset.data, media_type=asset.media_type, headers={"Cache-Control": LONG_CACHE})
