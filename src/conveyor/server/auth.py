"""Authorisation: what each act needs, checked on the server for every request.

The table ``ACTS`` is the whole policy of the API: every endpoint names one act. Reading
needs only an identity (every identity may read); each write needs the role the evidence or
the act needs (the same roles conveyor.yaml gives to keys); tokens and reload need
``admin``. A refusal raises ``NotAllowed`` (HTTP 403) naming the principal and the role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import PolicyDenied
from conveyor.server.principal import Principal

if TYPE_CHECKING:
    from fastapi import Request

    from conveyor.server.app import ServerState


class NotAllowed(PolicyDenied):
    """An authenticated principal without the role an act needs (HTTP 403)."""


@dataclass(frozen=True)
class Act:
    name: str  # as the refusal says it: "record a build"
    roles: frozenset[str]  # any one of these; empty: every identity may
    environment_bound: bool = False


def _act(name: str, *roles: str, environment_bound: bool = False) -> Act:
    return Act(name, frozenset(roles), environment_bound)


READ = _act("read")
ACTS: dict[str, Act] = {
    "read": READ,
    "record_build": _act("record a build", "builder"),
    "attest_tests": _act("attest tests", "tester"),
    "attest_scan": _act("attest a scan", "scanner"),
    "attest_smoke": _act("attest a smoke test", "tester", environment_bound=True),
    "approve": _act("approve", "approver", environment_bound=True),
    "promote": _act("promote", "deployer", environment_bound=True),
    "rollback": _act("roll back", "deployer", environment_bound=True),
    "audit_checkpoint": _act("sign a ledger checkpoint", "admin", "deployer"),
    "tokens": _act("manage API tokens", "admin"),
    "reload": _act("reload the configuration", "admin"),
}


def authorise(principal: Principal, act: Act, *, environment: str | None = None) -> None:
    """Raise ``NotAllowed`` unless ``principal`` may perform ``act`` (in ``environment``).

    Environment-bound acts name an environment that conveyor.yaml defines (the caller has
    checked it exists); identities are not yet limited to environments in conveyor.yaml, so
    the role decides. Issue 13's OIDC identities bind a job to its environment here.
    """
    if not act.roles or principal.roles & act.roles:
        return
    held = ", ".join(sorted(principal.roles)) or "none"
    needed = " or ".join(repr(role) for role in sorted(act.roles))
    where = f" in {environment}" if environment else ""
    raise NotAllowed(
        f"not allowed: {principal.identity} may not {act.name}{where}: it needs the role "
        f"{needed} (it has: {held})"
    )


def authenticate_other(
    state: ServerState, request: Request, token: str, request_id: str | None
) -> Principal | None:
    """The authenticators beside API tokens (issue 13): a CI job's OIDC ID token, a login
    session token (``conveyor login``), or, without a bearer token, a browser's session
    cookie. ``None``: an API token (or nothing), for the token store to judge."""
    from conveyor.server import login, oidc

    if oidc.looks_like_jwt(token):
        return oidc.authenticate(token, state.config(), oidc.CACHE, request_id=request_id)
    if login.is_session_token(token):
        return login.authenticate(state, token, request_id=request_id)
    if not token:
        return login.from_cookie(state, request, request_id)
    return None
