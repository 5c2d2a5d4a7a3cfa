"""Calling a reader on a FIFO without letting a hang hang the test run."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


def raises_at_once(
    fifo: Path, call: Callable[[], object], *, seconds: float = 10.0
) -> BaseException:
    """Run ``call`` (which reads ``fifo``) in a thread; fail if it has not raised within
    ``seconds``. A reader stuck opening the FIFO is released by opening its write end."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        # Let the blocked open() return, then the blocked read() see end of file.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail(f"reading the FIFO {fifo.name} hung for {seconds} s instead of refusing it")
    error = outcome[0]
    if error is None:
        pytest.fail(f"reading the FIFO {fifo.name} returned instead of refusing it")
    return error
