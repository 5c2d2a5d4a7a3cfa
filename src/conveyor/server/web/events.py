"""``GET /events``: server-sent events for the board. ``event: ledger`` with the ledger's
size is sent on connecting and whenever the size changes (checked about once a second); the
page's script then fetches ``/?fragment=board`` and swaps it in. A stream ends after
``STREAM_SECONDS`` (the browser's EventSource reconnects by itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.errors import ConveyorError
from conveyor.server.context import allow, state_of
from conveyor.server.web.session import viewer

router = APIRouter(include_in_schema=False)
STREAM_SECONDS = 300.0
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


@router.get("/events")
async def events(request: Request) -> Response:
    who = await run_in_threadpool(viewer, request)  # refused: 401 problem (not a page)
    allow(request, who, "read")
    state = state_of(request)

    def size() -> int:
        return state.workspace().ledger.size()

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {int(POLL_SECONDS * 3000)}\n\n"
        started = quiet = time.monotonic()
        last: int | None = None
        while time.monotonic() - started < STREAM_SECONDS:
            try:
                now = await run_in_threadpool(size)
            except ConveyorError:
                return  # the database is away: end; the browser reconnects later
            if now != last:
                yield f"event: ledger\ndata: {now}\n\n"
                last, quiet = now, time.monotonic()
            elif time.monotonic() - quiet >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )
