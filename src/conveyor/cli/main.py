"""Entry point of the ``conveyor`` command: register the command modules, run the app.

A run names one command, so only that command's module is imported and only that command's
Typer tree is built (building every command's tree costs more than many commands take);
anything else (``--help``, no command, an unknown name) gets the whole app, registered in the
order ``conveyor --help`` lists the commands in.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from conveyor.cli.app import app, execute

__all__ = ["COMMAND_MODULES", "app", "main", "run"]

# The module under conveyor.cli that registers each top-level command or group (a test keeps
# this equal to what the modules register).
COMMAND_MODULES = {
    "lint": "configs",
    **dict.fromkeys(("resolve", "inspect", "copy", "tags"), "images"),
    **dict.fromkeys(("init", "approve", "attestations"), "custody"),
    **dict.fromkeys(("keys", "record", "attest", "audit"), "custody"),
    "demo": "demo",
    "pin": "pin",
    **dict.fromkeys(
        ("check", "promote", "rollback", "status", "history", "trace", "repair"), "promotion"
    ),
    "drift": "drift",
    "login": "login",
    **dict.fromkeys(("serve", "token"), "serve"),
}
# Root options (cli.app._root): those that take a value, and flags.
_ROOT_VALUED = ("--server",)
_ROOT_FLAGS = ("--insecure-server",)


def _register_commands() -> None:
    # Each module adds its commands to ``app``; importing them is cheap (no heavy imports).
    # The import order is the order ``conveyor --help`` lists them in.
    from conveyor.cli import configs, images  # noqa: F401, I001
    from conveyor.cli import custody, demo, pin, promotion  # noqa: F401
    from conveyor.cli import drift, login, serve  # noqa: F401


def invoked_command(args: Sequence[str]) -> str | None:
    """The command ``args`` name after the root options, if it is one of ours; ``None`` for
    anything else (help, the version, an unknown option or name: the whole app answers)."""
    words = iter(args)
    for word in words:
        if word in _ROOT_FLAGS or word.startswith(tuple(f"{o}=" for o in _ROOT_VALUED)):
            continue
        if word in _ROOT_VALUED:
            next(words, None)
            continue
        return word if word in COMMAND_MODULES else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``conveyor ARGV`` in this process: the exit code (errors already written)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = invoked_command(args)
    if command is None:
        _register_commands()
        return execute(args)
    importlib.import_module(f"conveyor.cli.{COMMAND_MODULES[command]}")
    return execute(args, only=command)


def run() -> None:
    """Console-script entry: one-line errors and exit codes, never a traceback."""
    sys.exit(main())


if __name__ == "__main__":
    run()
