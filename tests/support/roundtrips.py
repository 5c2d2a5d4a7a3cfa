"""Counting what a process asks its database, on the wire, in-process.

SQLAlchemy's ``before_cursor_execute`` sees only the statements it sends itself: not the
pool's pre-ping, nor the ``BEGIN`` psycopg sends before the first statement of a
transaction, nor the ``ROLLBACK`` of a connection going back to the pool. Those are round
trips too, so this counts below SQLAlchemy: PostgreSQL through libpq's own message trace
(each frontend ``Query`` or ``Sync`` message is one request the client then waits on);
SQLite through sqlite3's trace callback (every statement the library runs).

Every connection opened inside the block is counted (a pool's connections opened before it
are not: dispose the engine, or open the store, inside the block).
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import Pool

# libpq's trace line: [timestamp\t]F\t<length>\t<message>…; F is frontend (ours).
_REQUEST = re.compile(rb"^(?:[^\t\n]*\t)?F\t\d+\t(?:Query|Sync)\b", re.MULTILINE)


class RoundTrips:
    """``count()``: requests sent to the database so far by connections opened in the block."""

    def __init__(self, trace_path: str, trace_fd: int) -> None:
        self._path = trace_path
        self._fd = trace_fd
        self._lock = threading.Lock()
        self._postgres: list[Any] = []
        self._sqlite = 0

    def _connected(self, dbapi_connection: Any, _record: object) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(self._sqlite_statement)
            return
        pgconn = getattr(dbapi_connection, "pgconn", None)
        if pgconn is None:
            raise AssertionError(f"cannot count round trips of {type(dbapi_connection)}")
        pgconn.trace(self._fd)
        with self._lock:
            self._postgres.append(pgconn)

    def _sqlite_statement(self, _sql: str) -> None:
        with self._lock:
            self._sqlite += 1

    def count(self) -> int:
        with self._lock:
            for pgconn in self._postgres:  # untrace flushes libpq's buffered trace
                if pgconn.status == 0:  # CONNECTION_OK
                    pgconn.untrace()
                    pgconn.trace(self._fd)
            with open(self._path, "rb") as trace:
                wire = len(_REQUEST.findall(trace.read()))
            return wire + self._sqlite


@contextmanager
def counting_round_trips() -> Iterator[RoundTrips]:
    fd, path = tempfile.mkstemp(prefix="conveyor-roundtrips-")
    trips = RoundTrips(path, fd)
    event.listen(Pool, "connect", trips._connected)
    try:
        yield trips
    finally:
        event.remove(Pool, "connect", trips._connected)
        with trips._lock:
            for pgconn in trips._postgres:
                if pgconn.status == 0:
                    pgconn.untrace()
            trips._postgres.clear()
        os.close(fd)
        os.unlink(path)
