"""The ``conveyor`` Typer app, its root options, and ``execute``: one run of the app with
the one place errors become a line and an exit code. Imports no command module (they
import this), so any command module can be imported and tested on its own.

Heavy modules (httpx, SQLAlchemy, cryptography) are imported inside commands, never here:
``conveyor --help`` runs on every CI step and must start fast.
"""

from __future__ import annotations

import copy
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


def one_command(name: str) -> typer.Typer:
    """The app with only its top-level command or group ``name`` (and the root options):
    what a run of that command needs, without building every other command's tree."""
    from typer.main import get_command_name

    one = copy.copy(app)
    one.registered_commands = [
        c
        for c in app.registered_commands
        if (c.name or (c.callback and get_command_name(c.callback.__name__))) == name
    ]
    one.registered_groups = [g for g in app.registered_groups if g.name == name]
    return one


def execute(argv: Sequence[str] | None = None, *, only: str | None = None) -> int:
    """Run the app on ``argv`` (default ``sys.argv[1:]``): the exit code, errors written to
    stderr as one line each (``CONVEYOR_DEBUG=1``: with the traceback first). ``only``: the
    command ``argv`` invokes, so only its tree is built (``one_command``)."""
    debug = bool(os.environ.get(DEBUG_ENV))
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        target = app if only is None else one_command(only)
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
