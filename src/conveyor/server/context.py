"""What every face of the server does around an operation, shared by the REST API
(``server.api``) and the web page (``server.web``): find the process's state, authorise the
principal for an act, and hand the operation its workspace, signer and principal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from conveyor.errors import ConveyorError
from conveyor.server.auth import ACTS, authorise
from conveyor.server.principal import Principal

if TYPE_CHECKING:
    from conveyor.server.state import ServerState

T = TypeVar("T")


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.conveyor
    return state


def authorised(request: Request, who: Principal, act: str, environment: str | None = None) -> None:
    """Raise ``NotAllowed`` (403) unless ``who`` may do ``act`` (in ``environment``): its
    roles, and the environments its identity is limited to."""
    identity = state_of(request).config().identities.get(who.identity)
    limited = identity.environments if identity is not None else None
    authorise(who, ACTS[act], environment=environment, environments=limited)


def allow(request: Request, who: Principal, act: str, environment: str | None = None) -> None:
    """Raise ``NotAllowed`` (403) unless ``who`` may do ``act``; an unknown environment: 404."""
    authorised(request, who, act, environment)
    if environment is not None:
        state_of(request).config().model.environment(environment)  # unknown: 404


def acting(request: Request, who: Principal) -> dict[str, Any]:
    """The keywords that make an operation sign with the server's key for ``who``, in the
    process's one workspace."""
    state = state_of(request)
    return {"workspace": state.workspace(), "signer": state.signer(), "principal": who.acting()}


def reading(request: Request) -> dict[str, Any]:
    return {"workspace": state_of(request).workspace()}


def count_denials(request: Request, failed: Iterable[str]) -> None:
    """Count the gates (by name) that said no in the metrics."""
    for gate in failed:
        state_of(request).metrics.gate_denials.labels(gate).inc()


def counted_promotion(request: Request, environment: str, run: Callable[[], T]) -> T:
    """``run()`` (a promotion or a rollback), counted in the metrics whatever it ends in."""
    metrics = state_of(request).metrics
    try:
        result = run()
    except ConveyorError as error:
        decision = getattr(error, "decision", None)
        if decision is not None:
            metrics.promotions.labels(environment, "denied").inc()
            count_denials(request, (gate.gate for gate in decision.failed))
        else:
            metrics.promotions.labels(environment, "failed").inc()
        raise
    recorded = getattr(result, "recorded", False)
    metrics.promotions.labels(environment, "promoted" if recorded else "unchanged").inc()
    return result
