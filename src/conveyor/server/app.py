"""``create_app(settings)``: the FastAPI application of ``conveyor serve``.

The server is a face, like the CLI: it parses input, authenticates, authorises, calls
``conveyor.service`` and renders the result. Nothing another replica needs lives in process
memory: tokens and evidence are in the database, the configuration is a file (re-read when
it changes), and promotions are serialised by the database.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor import __version__
from conveyor.errors import ConfigError, ConveyorError, InputError
from conveyor.server import _interim
from conveyor.server.observe import ACCESS_LOGGER, LOGGER, Metrics, log
from conveyor.server.problems import (
    BodyTooLarge,
    NotFound,
    Unavailable,
    internal_problem,
    problem,
)

if TYPE_CHECKING:
    from conveyor.attest import Signer
    from conveyor.policy.config import Config
    from conveyor.server.principal import Principal
    from conveyor.server.tokens import TokenStore
    from conveyor.service import RegistryOptions

MIB = 1024 * 1024
MAX_JSON_BYTES = 1 * MIB
MAX_REPORT_BYTES = 50 * MIB
REPORT_ROUTES = ("/api/v1/tests", "/api/v1/scans", "/admission/validate")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server reads from its environment, read once (``from_environment``)."""

    config_path: Path
    ledger_url: str | None = None  # None: the config's ledger (ledger.url or the default)
    insecure_registries: tuple[str, ...] = ()
    max_json_bytes: int = MAX_JSON_BYTES
    max_report_bytes: int = MAX_REPORT_BYTES

    @classmethod
    def from_environment(
        cls, config: str | Path | None = None, environ: MutableMapping[str, str] | None = None
    ) -> ServerSettings:
        from conveyor.policy.config import find_config

        env = os.environ if environ is None else environ
        path = find_config(config or env.get("CONVEYOR_CONFIG") or None)
        hosts = tuple(
            h.strip() for h in env.get("CONVEYOR_INSECURE_REGISTRIES", "").split(",") if h.strip()
        )
        return cls(
            config_path=path.resolve(),
            ledger_url=env.get("CONVEYOR_DB") or None,
            insecure_registries=hosts,
        )


@dataclass
class ServerState:
    """What one server process holds: settings, caches it can rebuild, and metrics."""

    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _config: Config | None = None
    _config_stamp: tuple[int, int] | None = None
    _tokens: TokenStore | None = None
    _signer: Signer | None = None
    _signer_for: tuple[int, int] | None = None

    # --- configuration: re-read when the file changes (every replica sees the same file) ---

    def config(self, *, force: bool = False) -> Config:
        from conveyor.policy.config import load_config

        path = self.settings.config_path
        try:
            stat = path.stat()
        except OSError as error:
            raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from error
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if force or self._config is None or stamp != self._config_stamp:
                self._config = load_config(path)
                self._config_stamp = stamp
            return self._config

    def tokens(self) -> TokenStore:
        from conveyor.server.tokens import TokenStore

        with self._lock:
            if self._tokens is None:
                # CONVEYOR_DB, else the config's ledger: the same database the operations use.
                url = self.settings.ledger_url or self.config().ledger_url
                self._tokens = TokenStore.open(url)
            return self._tokens

    def signer(self) -> Signer:
        """The server's signing key (``server.signing_key``), checked to be an identity with
        the role ``server`` and no other."""
        from conveyor.attest import load_signing_key

        config = self.config()
        spec = config.model.server.signing_key if config.model.server else None
        if not spec:
            raise Unavailable(
                f"this server records nothing: {config.path} sets no server.signing_key"
            )
        with self._lock:
            if self._signer is None or self._signer_for != self._config_stamp:
                password = os.environ.get("CONVEYOR_KEY_PASSWORD")
                signer = load_signing_key(
                    str(config.resolve_path(spec)),
                    password=password.encode() if password else None,
                )
                _require_server_identity(config, signer)
                self._signer, self._signer_for = signer, self._config_stamp
            return self._signer

    def can_sign(self) -> bool:
        config = self.config()
        return bool(config.model.server and config.model.server.signing_key)

    def registry_options(self) -> RegistryOptions:
        from conveyor.service import RegistryOptions

        return RegistryOptions(insecure_registries=self.settings.insecure_registries)

    def close(self) -> None:
        if self._tokens is not None:
            self._tokens.close()


def _require_server_identity(config: Config, signer: Signer) -> None:
    from conveyor.attest import Verifier

    for identity in config.identities.values():
        if identity.key_path is None:
            continue
        try:
            keyid = Verifier.from_pem(identity.key_path).keyid
        except ConveyorError:
            continue
        if keyid == signer.keyid:
            if {str(role) for role in identity.roles} != {"server"}:
                raise ConfigError(
                    f"{config.path}: server.signing_key belongs to identity {identity.name!r}, "
                    "which must hold the role 'server' (and only it)"
                )
            return
    raise ConfigError(
        f"{config.path}: the public key of server.signing_key is not an identity; list it "
        "under identities with roles: [server]"
    )


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
        _interim.install()  # UNTIL THE INJECTABLE WORKSPACE LANDS; once per process
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
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
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        length = headers.get("content-length")
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
    from conveyor.server import admission, api, drift

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
    admission.install(app)  # issue 15: the admission webhook
    drift.install(app)  # issue 15: drift snapshots
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
    return create_app(ServerSettings.from_environment())


__all__ = ["ServerSettings", "ServerState", "app_from_environment", "create_app"]
