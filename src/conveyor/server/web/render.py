"""Rendering: the Jinja2 environment (autoescape on for every template), the page and error
responses, the security headers every HTML response carries, and ``guarded``, the one way a
page handler runs (authenticate, build, turn an error into a one-line HTML page)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from conveyor.errors import ConveyorError
from conveyor.policy.drift import failing
from conveyor.server.context import state_of
from conveyor.server.observe import LOGGER, log
from conveyor.server.principal import Principal
from conveyor.server.problems import status_of
from conveyor.server.tokens import TokenRefused
from conveyor.server.web import assets

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HTML_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class SecurityHeaders:
    """ASGI middleware: the Content-Security-Policy and friends on every HTML response
    (the pages, their error pages, and the login's own pages). ``X-Content-Type-Options``
    is on every response already (``app._Edge``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if kind.startswith(b"text/html"):
                    present = {k.lower() for k, _ in headers}
                    headers += [(k, v) for k, v in HTML_HEADERS if k not in present]
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


# --- templates ----------------------------------------------------------------------------------


def short(digest: object) -> str:
    """``sha256:0123456789ab``: the algorithm and the first 12 hex digits."""
    text = str(digest or "")
    algorithm, _, hexpart = text.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else text[:19]


def when(moment: object) -> str:
    if not isinstance(moment, datetime):
        return str(moment or "")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: object) -> str:
    if not isinstance(moment, datetime):
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def mark(passed: object) -> str:
    """Status never by colour alone: a ✓ or ✗ in the text."""
    return "✓" if passed else "✗"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("conveyor.server.web", "templates"),
        autoescape=True,  # every template, whatever its name: a label "<script>" stays text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(short=short, when=when, iso=iso, mark=mark)
    env.globals.update(static=assets.url, drift_failing=failing)
    return env


def render(template: str, context: Mapping[str, Any]) -> str:
    return environment().get_template(template).render(context)


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    who: Principal | None,
    status: int = 200,
) -> HTMLResponse:
    from conveyor.server.web.session import csrf_of, may

    full = {
        "who": who,
        "csrf": csrf_of(request),
        "may": (lambda act, environment=None: may(request, who, act, environment)),
        "path": request.url.path,
        "error": None,
        **context,
    }
    return HTMLResponse(render(template, full), status_code=status)


def error_page(request: Request, error: ConveyorError, who: Principal | None) -> HTMLResponse:
    code = status_of(error)
    if code in (401, 403):
        state_of(request).metrics.refusals.labels(str(code)).inc()
        log(
            LOGGER,
            "refused",
            request_id=request.scope.get("state", {}).get("request_id"),
            status=code,
            principal=who.identity if who else None,
            reason=str(error),
        )
    message = str(error)  # one line: ConveyorError says it so
    return page(request, "error.html", {"message": message, "code": code}, who=who, status=code)


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def guarded(request: Request, build: Callable[[Principal], Response]) -> Response:
    """A page: the principal (else 303 to /login), then ``build(who)``; a ``ConveyorError``
    becomes an HTML page with its one line and its status (400, 403, 404, 409, 502 …)."""
    from conveyor.server.web.session import viewer

    try:
        who = viewer(request)
    except TokenRefused:
        return to_login(request)
    except ConveyorError as error:
        return error_page(request, error, None)
    try:
        return build(who)
    except ConveyorError as error:
        return error_page(request, error, who)
