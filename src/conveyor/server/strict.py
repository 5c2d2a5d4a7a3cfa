"""Strict request bodies: duplicate keys, NaN/Infinity and deep nesting are refused.

FastAPI parses a JSON body with ``Request.json()``; ``StrictRoute`` hands it a request whose
``json()`` refuses what ``json.loads`` silently accepts (the last of two duplicate keys
wins there: two readers of one body could disagree about what it said).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

MAX_DEPTH = 32


class StrictJsonError(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=400, detail=detail)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            shown = key if len(key) <= 40 else key[:40] + "…"
            raise StrictJsonError(f"duplicate JSON key {shown!r} in the request body")
        document[key] = value
    return document


def _constant(name: str) -> Any:
    raise StrictJsonError(f"non-finite number {name} in the request body")


def _depth(value: Any, level: int = 0) -> None:
    if level > MAX_DEPTH:
        raise StrictJsonError(f"the request body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _depth(item, level + 1)
    elif isinstance(value, list):
        for item in value:
            _depth(item, level + 1)


def strict_loads(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StrictJsonError("the request body is not UTF-8") from error
    try:
        document = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise StrictJsonError(
            f"the request body is not valid JSON ({error.msg} at line {error.lineno} "
            f"column {error.colno})"
        ) from error
    except RecursionError as error:
        raise StrictJsonError("the request body nests too deeply") from error
    _depth(document)
    return document


class StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictRequest(request.scope, request.receive))

        return strict_handler
