"""Drift snapshots: ``POST /api/v1/environments/{env}/drift`` takes what runs (``kubectl get
pods -A -o json``, ``docker inspect``, ``docker compose ps --format json`` output), classifies
every container against the verified ledger, keeps the last snapshot of each environment in
the database (table ``drift_snapshots``) and sets the gauge
``conveyor_drift_containers{environment,status}``. ``GET`` answers the last snapshot.

Posting needs the role ``drift`` (or ``admin``); reading needs any identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from prometheus_client import Gauge

from conveyor.errors import InputError
from conveyor.server import api, schemas
from conveyor.server.api import principal
from conveyor.server.context import allow
from conveyor.server.principal import Principal
from conveyor.server.problems import NotFound
from conveyor.server.snapshots import DriftStore as DriftStore  # where it always was

if TYPE_CHECKING:
    from conveyor.server.state import ServerState

Who = Annotated[Principal, Depends(principal)]


def install(app: FastAPI) -> None:
    """Adds the drift endpoints to ``app`` (a ``create_app`` application)."""
    state: ServerState = app.state.conveyor
    gauge = Gauge(
        "conveyor_drift_containers",
        "Running containers in the last drift snapshot, by environment and status "
        "(current, previous, never, unknown).",
        ["environment", "status"],
        registry=state.metrics.registry,
        multiprocess_mode="mostrecent",
    )

    async def report(request: Request, who: Who, environment: str) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        allow(request, who, "report_drift", environment)
        body = await request.body()
        return await run_in_threadpool(_report, who, environment, body)

    def _report(who: Principal, environment: str, body: bytes) -> dict[str, Any]:
        from conveyor import service

        workspace = state.workspace()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError("the request body is not UTF-8") from error
        report = service.drift(environment, [(text, "the request body")], workspace=workspace)
        counts = report.summary  # the environment posted for is there even if nothing runs
        stored = {}
        for name, per in counts.items():
            snapshot = {
                "summary": per,
                "containers": [c.to_dict() for c in report.containers if c.environment == name],
            }
            stored[name] = state.drift_store().put(name, who.identity, snapshot)
            for status, count in per.items():
                gauge.labels(name, status).set(count)
        return {**report.to_dict(), "stored": stored}

    def last(request: Request, who: Who, environment: str) -> dict[str, Any]:
        allow(request, who, "read", environment)
        found = state.drift_store().get(environment)
        if found is None:
            raise NotFound(f"no drift snapshot of {environment} yet")
        return found

    path = "/api/v1/environments/{environment}/drift"
    body = {
        "required": True,
        "description": "kubectl get pods -A -o json, docker inspect or docker compose ps "
        "--format json output",
        "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
    }
    app.add_api_route(
        path,
        report,
        methods=["POST"],
        summary="Report what runs; each container classified against the ledger (drift)",
        response_model=schemas.DriftReport,
        responses=api.router.responses,
        openapi_extra={"requestBody": body},
    )
    app.add_api_route(
        path,
        last,
        methods=["GET"],
        summary="The last drift snapshot of an environment",
        response_model=schemas.DriftSnapshot,
        responses=api.router.responses,
    )


__all__ = ["DriftStore", "install"]
