"""``create_app(settings)``: the FastAPI application of ``conveyor serve``.

The server is a face, like the CLI: it parses input, authenticates, authorises, calls
``conveyor.service`` and renders the result. Nothing another replica needs lives in process
memory: tokens and evidence are in the database, the configuration is a file (re-read when
it changes), and promotions are serialised by the database.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor import __version__
from conveyor.errors import ConveyorError, InputError
from conveyor.server.observe import ACCESS_LOGGER, LOGGER, log
from conveyor.server.problems import (
    BodyTooLarge,
    NotFound,
    Unavailable,
    internal_problem,
    problem,
)
from conveyor.server.state import ServerSettings, ServerState

if TYPE_CHECKING:
    from conveyor.server.principal import Principal

REPORT_ROUTES = ("/api/v1/tests", "/api/v1/scans", "/admission/validate")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --- the edge: request id, body caps, one log line, metrics -------------------------------------


class _Edge:
    """Outermost ASGI middleware: everything every request gets, before any routing."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, length = "", None  # the two request headers the edge reads
        for key, value in scope["headers"]:
            name = key.lower()
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope.get("path", "")
        cap = (
            self.state.settings.max_report_bytes
            if path in REPORT_ROUTES or path.endswith("/drift")  # drift: kubectl output
            else self.state.settings.max_json_bytes
        )
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                cached = any(k.lower() == b"cache-control" for k, _ in message["headers"])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    *(() if cached else ((b"cache-control", b"no-store"),)),  # static files
                ]
            await send(message)

        if length is not None and (not length.isdigit() or int(length) > cap):
            response = problem(
                BodyTooLarge(f"the request body is larger than {cap} bytes, the limit here")
                if length.isdigit()
                else InputError("the Content-Length header is not a number"),
                request_id=request_id,
            )
            await response(scope, receive, send_with_id)
        else:
            received = {"bytes": 0}

            async def capped_receive() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    received["bytes"] += len(message.get("body", b""))
                    if received["bytes"] > cap:
                        # An HTTPException: FastAPI lets it through its body parsers as is.
                        raise HTTPException(
                            413, f"the request body is larger than {cap} bytes, the limit here"
                        )
                return message

            try:
                await self.app(scope, capped_receive, send_with_id)
            except HTTPException as error:  # raised outside a route (e.g. while routing)
                toobig = BodyTooLarge(str(error.detail))
                await problem(toobig, request_id=request_id)(scope, receive, send_with_id)
        route = scope.get("route")
        template = getattr(route, "path", None) or "(unmatched)"
        duration = time.perf_counter() - started
        method = scope.get("method", "")
        metrics = self.state.metrics
        metrics.requests.labels(template, method, str(status["code"])).inc()
        metrics.latency.labels(template, method).observe(duration)
        principal: Principal | None = scope["state"].get("principal")
        log(
            ACCESS_LOGGER,
            "request",
            request_id=request_id,
            method=method,
            route=template,
            status=status["code"],
            duration_ms=round(duration * 1000, 2),
            principal=principal.identity if principal else None,
            token=principal.credential if principal else None,
        )


# --- the application ----------------------------------------------------------------------------


def create_app(settings: ServerSettings) -> FastAPI:
    """The application for ``settings``; nothing is opened until the first request."""
    from conveyor.server import admission, api, drift, login, web

    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        lifespan=lifespan,
        title="conveyor",
        version=__version__,
        summary="Promote one immutable image digest through environments, with a signed "
        "chain of custody.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.conveyor = state

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> dict[str, Any]:
        try:
            state.config()
            state.tokens().ping()
            if state.can_sign():
                state.signer()  # a changed conveyor.yaml may name a key that is not the server's
        except ConveyorError as error:
            raise Unavailable(f"not ready: {error}") from error
        return {"status": "ready", "config": str(settings.config_path)}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = state.metrics.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several worker processes (``--workers N``): every worker's counts, summed.
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(login.router)  # /login, /logout (issue 13)
    admission.install(app)  # issue 15: the admission webhook
    drift.install(app)  # issue 15: drift snapshots
    web.install(app)  # issue 14: the web page
    _install_error_handlers(app, state)
    app.add_middleware(_Edge, state=state)
    return app


def _request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def _install_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(ConveyorError)
    async def conveyor_error(request: Request, error: ConveyorError) -> Response:
        response = problem(error, request_id=_request_id(request))
        if response.status_code in (401, 403):
            principal = request.scope.get("state", {}).get("principal")
            state.metrics.refusals.labels(str(response.status_code)).inc()
            log(
                LOGGER,
                "refused",
                request_id=_request_id(request),
                status=response.status_code,
                principal=principal.identity if principal else None,
                reason=str(error),
            )
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        from conveyor.server.api import judge_credentials

        try:
            await judge_credentials(request)  # credentials are judged before the body
        except ConveyorError as refused:
            return await conveyor_error(request, refused)
        return problem(InputError(_describe_validation(error)), request_id=_request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        detail = error.detail if isinstance(error.detail, str) else "request refused"
        cls: type[ConveyorError] = {404: NotFound, 413: BodyTooLarge}.get(
            error.status_code, InputError
        )
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return problem(cls(detail), request_id=_request_id(request), status=error.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> Response:
        return internal_problem(_request_id(request))


def _describe_validation(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "extra_forbidden":
            message = "unknown field (a typo?)"
        problems.append(f"{where}: {message}")
    more = len(error.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def app_from_environment() -> FastAPI:
    """Uvicorn factory (``conveyor.server.app:app_from_environment``) for ``--workers N``:
    each worker builds its app from the environment ``conveyor serve`` set."""
    import logging

    # What a log record gathers that no line of ours shows (the logging HOWTO's
    # "Optimization"): the caller's file and line (a walk up the stack), thread and process.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return create_app(ServerSettings.from_environment())


__all__ = ["ServerSettings", "ServerState", "app_from_environment", "create_app"]
