"""Entry point of the ``conveyor`` command: ``conveyor.cli.app.execute`` on the process's
arguments (it imports the command modules a run needs).

``run`` owns the process, so it also sets how the cyclic garbage collector treats it (see
``run``); importing this module changes nothing (the app is loaded on first use)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.cli.app import COMMAND_MODULES, app, invoked_command

__all__ = ["COMMAND_MODULES", "app", "invoked_command", "main", "run"]

# Start-up leaves ~65,000 objects that live until the exit (typer's tree, pydantic's schemas,
# the modules) and under a thousand of cyclic garbage. At the default threshold (700 new
# objects) the collector walks the survivors ~100 times before a command does any work. At
# this one a command starts without a collection, and a long one still collects whenever
# this many more objects are alive than at the last collection (a bound of some MB).
START_UP_GC_THRESHOLD = 100_000
_INTERPRETER_GC_THRESHOLD = gc.get_threshold()  # as this process started


def __getattr__(name: str) -> Any:
    if name in ("COMMAND_MODULES", "app", "invoked_command"):
        from conveyor.cli import app as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register_commands() -> None:
    """Every command on ``app`` (for tools that walk the whole tree)."""
    from conveyor.cli.app import register_commands

    register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """``conveyor ARGV`` in this process: the exit code (errors already written)."""
    from conveyor.cli.app import execute

    return execute(argv)


def run() -> None:
    """Console-script entry: one-line errors and exit codes, never a traceback.

    The process ends after one command, so the garbage collector is tuned for that: a higher
    first-generation threshold (``START_UP_GC_THRESHOLD``), and before the exit everything
    still alive is frozen, so the interpreter's collections at exit do not walk it all once
    more (~35 ms of a read command here). The exit still runs atexit handlers, waits for
    threads and flushes the standard streams; Python does not promise ``__del__`` for objects
    alive at exit."""
    _, *older = _INTERPRETER_GC_THRESHOLD
    gc.set_threshold(START_UP_GC_THRESHOLD, *older)
    code = main()
    gc.freeze()
    sys.exit(code)


def serving_for_long() -> None:
    """The interpreter's own collector settings back, for a command that serves for hours:
    a young generation of ``START_UP_GC_THRESHOLD`` objects would pause requests longer."""
    gc.set_threshold(*_INTERPRETER_GC_THRESHOLD)


if __name__ == "__main__":
    run()
