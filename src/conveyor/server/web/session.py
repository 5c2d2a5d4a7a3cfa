"""Who is looking: the browser's session cookie (``server.login``) or a bearer token, through
the API's own authenticator; for a form, the session's CSRF token as well. What the page
shows (buttons) and what the server allows both come from ``server.auth``."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials

from conveyor.server import login
from conveyor.server.api import principal
from conveyor.server.auth import NotAllowed
from conveyor.server.context import authorised, state_of
from conveyor.server.principal import Principal
from conveyor.server.tokens import TokenRefused


def _bearer(request: Request) -> HTTPAuthorizationCredentials | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=value.strip())


def viewer(request: Request) -> Principal:
    """The principal of a page request (GET): a bearer token, else the session cookie."""
    return principal(request, _bearer(request))


def actor(request: Request, csrf: str | None) -> Principal:
    """The principal of a form (POST). With the session cookie the form must carry the
    session's CSRF token (403 otherwise); a bearer token needs none (a browser never sends
    one by itself)."""
    credentials = _bearer(request)
    if credentials is not None:
        return principal(request, credentials)
    cookie = request.cookies.get(login.SESSION_COOKIE)
    if not cookie:
        raise TokenRefused("bad or missing credentials: not signed in; start at /login")
    who = login.authenticate(
        state_of(request), cookie, request_id=request.scope.get("state", {}).get("request_id")
    )
    request.scope.setdefault("state", {})["principal"] = who
    if not login.csrf_matches(cookie, csrf):
        raise NotAllowed(
            "not allowed: this form needs the session's CSRF token; reload the page and try again"
        )
    return who


def csrf_of(request: Request) -> str:
    """The CSRF token forms carry: the session's (empty without a session cookie)."""
    cookie = request.cookies.get(login.SESSION_COOKIE)
    return login.csrf_token(cookie) if cookie else ""


def may(request: Request, who: Principal | None, act: str, environment: str | None = None) -> bool:
    """Whether to show the button for ``act``: the same rule that judges the request."""
    if who is None:
        return False
    try:
        authorised(request, who, act, environment)
    except NotAllowed:
        return False
    return True
