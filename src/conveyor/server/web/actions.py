"""The forms that act: approve, promote (with its confirmation page), roll back, verify the
audit. Every POST carries the session's CSRF token and is authorised again here, whatever
the page showed (``server.auth``: a reader's hand-made POST is 403). Success answers 303
back to the page; a refusal re-renders the page with its one line and a 4xx status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from conveyor import service
from conveyor.errors import ConveyorError, InputError
from conveyor.server.context import acting, allow, counted_promotion
from conveyor.server.principal import Principal
from conveyor.server.problems import status_of
from conveyor.server.web import views
from conveyor.server.web.pages import artifact_page, environment_page
from conveyor.server.web.render import error_page, guarded, page
from conveyor.server.web.session import actor

router = APIRouter(include_in_schema=False)
Form = dict[str, str]
_PROBLEM = "\0problem"  # not a field name a browser can send
_LIMITS = {"environment": 63, "comment": 4096, "break_glass_reason": 4096, "to": 2048,
           "csrf_token": 128}  # fmt: skip


async def _form(request: Request) -> Form:
    """The form's text fields; a field that is a file or too long is kept as its problem
    (``_PROBLEM``), raised once the sender is known (so CSRF and roles are judged first)."""
    try:
        raw = await request.form()
    except Exception:
        return {_PROBLEM: "the form could not be read: send application/x-www-form-urlencoded"}
    fields: Form = {}
    for key, limit in _LIMITS.items():
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            fields.setdefault(_PROBLEM, f"{key}: expected text, not a file")
        elif len(value) > limit:
            fields.setdefault(_PROBLEM, f"{key}: longer than {limit} characters")
        else:
            fields[key] = value
    return fields


def _acted(
    request: Request,
    form: Form,
    act: Callable[[Principal, Form], Response],
    again: Callable[[Principal, str, int], Response],
) -> Response:
    """Authenticate (CSRF included), then ``act``; a refusal re-renders the page (``again``)
    with the error's line and status, or the error page when that cannot render."""
    try:
        who = actor(request, form.get("csrf_token"))
    except ConveyorError as error:
        return error_page(request, error, None)
    try:
        if _PROBLEM in form:
            raise InputError(form[_PROBLEM])
        return act(who, form)
    except ConveyorError as error:
        try:
            return again(who, str(error), status_of(error))
        except ConveyorError:
            return error_page(request, error, who)


def _required(form: Form, key: str, what: str) -> str:
    value = form.get(key, "").strip()
    if not value:
        raise InputError(f"choose {what}")
    return value


def _back_to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# --- approve ------------------------------------------------------------------------------------


@router.post("/artifacts/{digest}/approve")
async def approve(request: Request, digest: str) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_approve, request, digest, form)


def _approve(request: Request, digest: str, form: Form) -> Response:
    def act(who: Principal, fields: Form) -> Response:
        environment = _required(fields, "environment", "the environment to approve for")
        allow(request, who, "approve", environment)
        found, name, _ = views.locate(request, digest)
        service.approve(
            f"{name}@{found}",
            environment=environment,
            comment=fields.get("comment", "").strip() or None,
            **acting(request, who),
        )
        return _back_to(f"/artifacts/{found}")

    return _acted(
        request,
        form,
        act,
        lambda who, error, status: artifact_page(request, who, digest, error=error, status=status),
    )


# --- promote: confirmation page, then the promotion ---------------------------------------------


def _confirmation(
    request: Request,
    who: Principal,
    digest: str,
    environment: str,
    *,
    break_glass: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    request.app.state.conveyor.config().model.environment(environment)  # unknown: 404
    found, name, where = views.locate(request, digest)
    source = views.source_reference(request, environment, name, where)
    checked = views.check(request, who, f"{source}@{found}", environment, break_glass)
    context = {
        "digest": str(found),
        "environment": environment,
        "t": checked,
        "where": where,
        "break_glass": break_glass or "",
        "error": error,
    }
    return page(request, "promote.html", context, who=who, status=status)


@router.get("/artifacts/{digest}/promote")
def promote_page(
    request: Request,
    digest: str,
    environment: Annotated[str, Query(min_length=1, max_length=63)],
) -> Response:
    return guarded(request, lambda who: _confirmation(request, who, digest, environment))


@router.post("/artifacts/{digest}/promote")
async def promote(request: Request, digest: str) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_promote, request, digest, form)


def _promote(request: Request, digest: str, form: Form) -> Response:
    environment = form.get("environment", "").strip()
    reason = form.get("break_glass_reason", "").strip() or None

    def act(who: Principal, fields: Form) -> Response:
        _required(fields, "environment", "the environment to promote to")
        allow(request, who, "promote", environment)
        found, name, where = views.locate(request, digest)
        source = views.source_reference(request, environment, name, where)
        counted_promotion(
            request,
            environment,
            lambda: service.promote(
                f"{source}@{found}",
                environment=environment,
                break_glass=reason,
                **acting(request, who),
            ),
        )
        return _back_to(f"/artifacts/{found}")

    def again(who: Principal, error: str, status: int) -> Response:
        if not environment:
            return artifact_page(request, who, digest, error=error, status=status)
        return _confirmation(
            request, who, digest, environment, break_glass=reason, error=error, status=status
        )

    return _acted(request, form, act, again)


# --- roll back ----------------------------------------------------------------------------------


@router.post("/environments/{name}/rollback")
async def rollback(request: Request, name: str) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_rollback, request, name, form)


def _rollback(request: Request, name: str, form: Form) -> Response:
    def act(who: Principal, fields: Form) -> Response:
        allow(request, who, "rollback", name)
        to = fields.get("to", "").strip() or None
        counted_promotion(
            request, name, lambda: service.rollback(name, to=to, **acting(request, who))
        )
        return _back_to(f"/environments/{quote(name)}")

    return _acted(
        request,
        form,
        act,
        lambda who, error, status: environment_page(request, who, name, error=error, status=status),
    )


# --- audit --------------------------------------------------------------------------------------


@router.post("/audit/verify")
async def audit_verify(request: Request) -> Response:
    form = await _form(request)
    return await run_in_threadpool(_audit_verify, request, form)


def _audit_verify(request: Request, form: Form) -> Response:
    def act(who: Principal, fields: Form) -> Response:
        allow(request, who, "read")
        return page(request, "audit.html", {"v": views.audit(request, verify=True)}, who=who)

    def again(who: Principal, error: str, status: int) -> Response:
        view = views.audit(request)
        return page(request, "audit.html", {"v": view, "error": error}, who=who, status=status)

    return _acted(request, form, act, again)
