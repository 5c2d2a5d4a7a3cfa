"""Entry point of the ``conveyor`` command: register the command modules, run the app."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from conveyor.cli.app import app, execute

__all__ = ["app", "main", "run"]


def _register_commands() -> None:
    # Each module adds its commands to ``app``; importing them is cheap (no heavy imports).
    # The import order is the order ``conveyor --help`` lists them in.
    from conveyor.cli import configs, images  # noqa: F401, I001
    from conveyor.cli import custody, demo, pin, promotion  # noqa: F401
    from conveyor.cli import drift, login, serve  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    """``conveyor ARGV`` in this process: the exit code (errors already written)."""
    _register_commands()
    return execute(argv)


def run() -> None:
    """Console-script entry: one-line errors and exit codes, never a traceback."""
    sys.exit(main())


if __name__ == "__main__":
    run()
