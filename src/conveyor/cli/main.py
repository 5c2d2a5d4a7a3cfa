"""Entry point of the ``conveyor`` command: ``conveyor.cli.app.execute`` on the process's
arguments (it imports the command modules a run needs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from conveyor.cli.app import COMMAND_MODULES, app, execute, invoked_command, register_commands

__all__ = ["COMMAND_MODULES", "app", "invoked_command", "main", "run"]


def _register_commands() -> None:
    """Every command on ``app`` (for tools that walk the whole tree)."""
    register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """``conveyor ARGV`` in this process: the exit code (errors already written)."""
    return execute(argv)


def run() -> None:
    """Console-script entry: one-line errors and exit codes, never a traceback."""
    sys.exit(main())


if __name__ == "__main__":
    run()
