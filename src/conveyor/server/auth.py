"""Authorisation: what each act needs, checked on the server for every request.

The table ``ACTS`` is the whole policy of the API: every endpoint names one act. Reading
needs only an identity (every identity may read); each write needs the role the evidence or
the act needs (the same roles conveyor.yaml gives to keys); tokens and reload need
``admin``. A refusal raises ``NotAllowed`` (HTTP 403) naming the principal and the role.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.errors import PolicyDenied
from conveyor.server.principal import Principal


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
    "report_drift": _act("report drift", "drift", "admin"),
    "tokens": _act("manage API tokens", "admin"),
    "reload": _act("reload the configuration", "admin"),
}


def authorise(
    principal: Principal,
    act: Act,
    *,
    environment: str | None = None,
    environments: frozenset[str] | None = None,
) -> None:
    """Raise ``NotAllowed`` unless ``principal`` may perform ``act`` (in ``environment``).

    Environment-bound acts name an environment that conveyor.yaml defines (the caller has
    checked it exists); ``environments``: the only ones the principal's identity may act in
    (conveyor.yaml ``identities.NAME.environments``; None: all), judged by the same rule the
    recording path and the reader apply (``service.may_act_in``).
    """
    from conveyor import service

    where = f" in {environment}" if environment else ""
    if act.roles and not principal.roles & act.roles:
        held = ", ".join(sorted(principal.roles)) or "none"
        needed = " or ".join(repr(role) for role in sorted(act.roles))
        raise NotAllowed(
            f"not allowed: {principal.identity} may not {act.name}{where}: it needs the role "
            f"{needed} (it has: {held})"
        )
    if act.environment_bound and not service.may_act_in(environment, environments):
        raise NotAllowed(
            f"not allowed: {principal.identity} may not {act.name}{where}: it may act only "
            f"in {', '.join(sorted(environments or ()))}"
        )
