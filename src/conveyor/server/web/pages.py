"""The pages (GET): the board, an artifact, an environment, a commit, the audit, a diff of two
environments, and search. Each is ``guarded``: the principal first (else 303 to /login), then
the view, and any ``ConveyorError`` as a one-line page with its status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from conveyor.server.principal import Principal
from conveyor.server.web import views
from conveyor.server.web.render import guarded, page

router = APIRouter(include_in_schema=False)


def board_page(request: Request, who: Principal, *, fragment: bool = False) -> Response:
    size, columns = views.board(request)
    context = {"columns": columns, "ledger_size": size}
    return page(request, "_board.html" if fragment else "board.html", context, who=who)


@router.get("/")
def board(
    request: Request, fragment: Annotated[str | None, Query(max_length=16)] = None
) -> Response:
    return guarded(request, lambda who: board_page(request, who, fragment=fragment == "board"))


def artifact_page(
    request: Request, who: Principal, digest: str, *, error: str | None = None, status: int = 200
) -> Response:
    found = views.artifact(request, who, digest)
    return page(request, "artifact.html", {"a": found, "error": error}, who=who, status=status)


@router.get("/artifacts/{digest}")
def artifact(request: Request, digest: str) -> Response:
    return guarded(request, lambda who: artifact_page(request, who, digest))


def environment_page(
    request: Request, who: Principal, name: str, *, error: str | None = None, status: int = 200
) -> Response:
    view = views.environment(request, name)
    return page(request, "environment.html", {"e": view, "error": error}, who=who, status=status)


@router.get("/environments/{name}")
def environment(request: Request, name: str) -> Response:
    return guarded(request, lambda who: environment_page(request, who, name))


@router.get("/commits/{sha}")
def commit(request: Request, sha: str) -> Response:
    def build(who: Principal) -> Response:
        full, built = views.commit(request, sha)
        return page(request, "commit.html", {"sha": full, "built": built}, who=who)

    return guarded(request, build)


@router.get("/audit")
def audit(request: Request) -> Response:
    return guarded(
        request, lambda who: page(request, "audit.html", {"v": views.audit(request)}, who=who)
    )


@router.get("/diff/{env_a}/{env_b}")
def diff(request: Request, env_a: str, env_b: str) -> Response:
    return guarded(
        request,
        lambda who: page(request, "diff.html", {"d": views.diff(request, env_a, env_b)}, who=who),
    )


@router.get("/search")
def search(request: Request, q: Annotated[str, Query(max_length=2048)] = "") -> Response:
    def build(who: Principal) -> Response:
        found, why = views.search(request, q)
        if found is not None:
            return RedirectResponse(found, status_code=303)
        status = 404 if q.strip() else 200
        return page(request, "search.html", {"q": q, "why": why}, who=who, status=status)

    return guarded(request, build)
