"""The web page of ``conveyor serve`` (issue 14): server-rendered HTML over the same
operations the REST API calls.

``install(app)`` adds the pages (``pages``), the forms that act (``actions``), the live
update stream (``events``), the static files (``assets``) and the security headers every HTML
response carries. Templates are Jinja2 with autoescape on; no inline script or style, so the
Content-Security-Policy allows only this server's own files. docs/web.md describes the pages.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Adds the web page to ``app`` (a ``create_app`` application)."""
    from conveyor.server.web import actions, assets, events, pages
    from conveyor.server.web.render import SecurityHeaders

    app.include_router(assets.router)
    app.include_router(events.router)
    app.include_router(actions.router)
    app.include_router(pages.router)
    app.add_middleware(SecurityHeaders)


__all__ = ["install"]
