"""``GET /events``: server-sent events for the board. ``event: ledger`` with the ledger's
size is sent on connecting and whenever the size changes (checked about once a second, one
read shared by every open stream); the page's script then fetches ``/?fragment=board`` and
swaps it in. A stream ends after ``STREAM_SECONDS`` (the browser's EventSource reconnects by
itself).

Open streams are bounded: ``MAX_STREAMS`` per process and ``MAX_STREAMS_PER_IDENTITY`` per
identity (tabs). Beyond that the answer is still a 200 stream (EventSource gives up for good
on any other status), which only asks to come back after ``BUSY_RETRY_SECONDS`` and ends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

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
MAX_STREAMS = 200
MAX_STREAMS_PER_IDENTITY = 8
BUSY_RETRY_SECONDS = 60.0


class _Streams:
    """The streams open in this application, by identity (thread-safe: a stream may start
    on any event loop the server runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        # One ledger read serves every stream polling within half a poll interval.
        self._polling = threading.Lock()
        self._size: tuple[float, int] | None = None

    def ledger_size(self, read: Callable[[], int]) -> int:
        with self._polling:
            if self._size is None or time.monotonic() - self._size[0] >= POLL_SECONDS / 2:
                self._size = (time.monotonic(), read())
            return self._size[1]

    def enter(self, identity: str) -> bool:
        with self._lock:
            if self._open.total() >= MAX_STREAMS or self._open[identity] >= (
                MAX_STREAMS_PER_IDENTITY
            ):
                return False
            self._open[identity] += 1
            return True

    def open(self) -> int:
        with self._lock:
            return self._open.total()

    def leave(self, identity: str) -> None:
        with self._lock:
            self._open[identity] -= 1
            if self._open[identity] <= 0:
                del self._open[identity]


_made = threading.Lock()


def _streams(request: Request) -> _Streams:
    with _made:
        found: _Streams | None = getattr(request.app.state, "web_streams", None)
        if found is None:
            found = request.app.state.web_streams = _Streams()
    return found


@router.get("/events")
async def events(request: Request) -> Response:
    who = await run_in_threadpool(viewer, request)  # refused: 401 problem (not a page)
    allow(request, who, "read")
    state = state_of(request)
    streams = _streams(request)

    def size() -> int:
        return state.workspace().ledger.size()

    async def stream() -> AsyncIterator[str]:
        if not streams.enter(who.identity):
            yield f"retry: {int(BUSY_RETRY_SECONDS * 1000)}\n: too many live streams; later\n\n"
            return
        try:
            async for message in follow():
                yield message
        finally:
            streams.leave(who.identity)

    async def follow() -> AsyncIterator[str]:
        yield f"retry: {int(POLL_SECONDS * 3000)}\n\n"
        started = quiet = time.monotonic()
        last: int | None = None
        while time.monotonic() - started < STREAM_SECONDS:
            try:
                now = await run_in_threadpool(streams.ledger_size, size)
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
