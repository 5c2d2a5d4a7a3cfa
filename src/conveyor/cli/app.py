"""The ``conveyor`` Typer app, its root options, and ``execute``: one run of the app with
the one place errors become a line and an exit code. Imports no command module at import
time (they import this; ``execute`` imports the one a run names), so any command module can
be imported and tested on its own.

Heavy modules (httpx, SQLAlchemy, cryptography) are imported inside commands, never here:
``conveyor --help`` runs on every CI step and must start fast.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Sequence

import typer

from conveyor import __version__
from conveyor.errors import ConfigError, ConveyorError

DEBUG_ENV = "CONVEYOR_DEBUG"

app = typer.Typer(
    name="conveyor",
    help="Promote one immutable image digest through environments, with a signed chain of custody.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"conveyor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        metavar="URL",
        help="Go through this conveyor server (default: CONVEYOR_SERVER), authenticated by "
        "CONVEYOR_TOKEN, the CI job's OIDC token or a 'conveyor login' session; no "
        "conveyor.yaml or database needed.",
    ),
    insecure_server: bool = typer.Option(
        False,
        "--insecure-server",
        help="Allow plain http:// to a non-loopback server (the token travels in clear).",
    ),
) -> None:
    """Promote one immutable image digest through environments, with a signed chain of custody."""
    from conveyor.cli import remote

    remote.choose(server, insecure=insecure_server)


# The module under conveyor.cli that registers each top-level command or group, in the order
# ``conveyor --help`` lists them (a test keeps this equal to what the modules register).
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
# Root options (``_root``): those that take a value, and flags.
_ROOT_VALUED = ("--server",)
_ROOT_FLAGS = ("--insecure-server",)


def register_commands() -> None:
    """Import every command module: each adds its commands to ``app``, in the order of
    ``COMMAND_MODULES`` (the order ``conveyor --help`` lists them in)."""
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(f"conveyor.cli.{module}")


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


def one_command(name: str) -> typer.Typer:
    """The app with only its top-level command or group ``name`` (and the root options):
    what a run of that command needs, without building every other command's tree."""
    from typer.main import get_command_name

    importlib.import_module(f"conveyor.cli.{COMMAND_MODULES[name]}")
    one = copy.copy(app)
    one.registered_commands = [
        c
        for c in app.registered_commands
        if (c.name or (c.callback and get_command_name(c.callback.__name__))) == name
    ]
    one.registered_groups = [g for g in app.registered_groups if g.name == name]
    return one


def execute(argv: Sequence[str] | None = None) -> int:
    """Run the app on ``argv`` (default ``sys.argv[1:]``): the exit code, errors written to
    stderr as one line each (``CONVEYOR_DEBUG=1``: with the traceback first).

    A run names one command, so only that command's module is imported and only its Typer
    tree built (building every command's costs more than many commands take); anything else
    (``--help``, no command, an unknown name) gets the whole app."""
    debug = bool(os.environ.get(DEBUG_ENV))
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = invoked_command(args)
        if command is None:
            register_commands()
        target = app if command is None else one_command(command)
        # Without standalone mode, click returns the code of a ``typer.Exit`` instead of
        # raising it.
        code = target(args=args, standalone_mode=False)
    except ConveyorError as exc:
        _traceback(debug)
        # A config file's problems are all listed, one per line, under the summary.
        details = list(exc.problems) if isinstance(exc, ConfigError) else []
        return _fail(str(exc), exc.exit_code, details)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return _fail("aborted", 130)
    except KeyboardInterrupt:
        _traceback(debug)
        return _fail("interrupted", 130)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        show = getattr(exc, "show", None)
        if not callable(show):
            return _fail(str(exc), 2)
        show()
        return int(getattr(exc, "exit_code", 2) or 2)
    except Exception as exc:  # the last line of defence: no traceback unless asked for
        if debug:
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)", 70
        )
    return code if isinstance(code, int) else 0


def _traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)


def _fail(message: str, code: int, details: Sequence[str] = ()) -> int:
    sys.stderr.write(f"conveyor: error: {' '.join(message.split())}\n")
    for line in details:
        sys.stderr.write(f"  {' '.join(line.split())}\n")
    sys.stderr.flush()
    return code
