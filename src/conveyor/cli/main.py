"""Entry point of the ``conveyor`` command.

Heavy modules (httpx, SQLAlchemy, cryptography) are imported inside commands, never here:
``conveyor --help`` runs on every CI step and must start fast.
"""

from __future__ import annotations

import os
import sys

import typer

from conveyor import __version__
from conveyor.errors import ConveyorError

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
) -> None:
    """Promote one immutable image digest through environments, with a signed chain of custody."""


def _register_commands() -> None:
    # Each module adds its commands to ``app``; importing them is cheap (no heavy imports).
    from conveyor.cli import configs, custody, demo, drift, images, pin, promotion, serve  # noqa: F401


def run() -> None:
    """Console-script entry: one-line errors and exit codes, never a traceback."""
    _register_commands()
    try:
        # Without standalone mode, click returns the code of a ``typer.Exit`` instead of
        # raising it.
        code = app(standalone_mode=False)
    except ConveyorError as exc:
        # A config file's problems are all listed, one per line, under the summary.
        _fail(str(exc), exc.exit_code, details=getattr(exc, "problems", None) or [])
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _fail(str(exc), 2)
        sys.exit(int(getattr(exc, "exit_code", 2) or 2))
    except Exception as exc:  # the last line of defence: no traceback for the user
        if os.environ.get("CONVEYOR_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set CONVEYOR_DEBUG=1 for details)", 70)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int, details: list[str] | None = None) -> None:
    sys.stderr.write(f"conveyor: error: {' '.join(message.split())}\n")
    for line in details or []:
        sys.stderr.write(f"  {' '.join(line.split())}\n")
    sys.exit(code)


if __name__ == "__main__":
    run()
