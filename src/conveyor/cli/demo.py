"""``conveyor demo``: the whole seed pipeline on embedded defaults, as commands a user could type.

The script lives in ``conveyor.demo``; this module shows it. Each step is printed as
``$ conveyor …`` and then run through the very entry point the ``conveyor`` command uses
(``conveyor.cli.app.execute`` with that argv, in this process, in the demo directory), its
output shown as the user would see it and checked against what the step must show.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import app, execute


@contextlib.contextmanager
def _inside(base: Path, cleared: Sequence[str]) -> Iterator[None]:
    """Run in ``base`` without the variables that would point elsewhere; restore both."""
    saved_cwd = Path.cwd()
    saved_env = {name: os.environ.pop(name) for name in cleared if name in os.environ}
    os.chdir(base)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.update(saved_env)


def invoke(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``conveyor ARGV`` as the console script does, in-process: exit code and output
    (stdout and stderr interleaved, as a terminal shows them)."""
    output = io.StringIO()
    saved_argv = sys.argv
    sys.argv = ["conveyor", *argv]  # the program name usage lines show
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = execute(argv)
    finally:
        sys.argv = saved_argv
    return code, output.getvalue()


@app.command()
def demo(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Work in this new or empty directory instead of a fresh temporary one."
        ),
    ] = None,
) -> None:
    """Run the whole pipeline locally: build, test, scan, refuse, promote, approve, audit."""
    from conveyor.demo import (
        CLEARED_ENVIRONMENT,
        DemoFailed,
        Note,
        Section,
        prepare_directory,
        script,
    )

    started = time.monotonic()
    base = prepare_directory(directory)
    render.note(
        f"The seed pipeline, on embedded defaults (OCI image layouts as the registry, SQLite as "
        f"the ledger), in {base}. Each $ line is a real command; it runs in that directory.",
        style="bold",
    )
    steps = 0
    with _inside(base, CLEARED_ENVIRONMENT):
        for item in script(base):
            if isinstance(item, Section):
                render.note(f"\n== {item.title} ==", style="bold magenta")
            elif isinstance(item, Note):
                render.note(f"\n# {item.text}")
                if item.body is not None:
                    render.line(item.body.rstrip("\n"))
            else:
                steps += 1
                render.note(f"\n# {item.why}")
                render.note(f"$ {item.command}", style="bold cyan")
                code, output = invoke(item.argv)
                if output:
                    render.line(output.rstrip("\n"))
                problems = item.problems(code, output)
                if problems:
                    raise DemoFailed(
                        f"demo step {steps} ({item.command}) misbehaved: {'; '.join(problems)}; "
                        f"its files are kept in {base}"
                    )
    cleared = [name for name in CLEARED_ENVIRONMENT if name in os.environ]
    unset = f"unset {' '.join(cleared)}; " if cleared else ""
    render.note(
        f"\nDone: {steps} commands in {time.monotonic() - started:.1f} s. One digest was built, "
        "tested, scanned, refused, promoted to staging, smoke-tested, approved and promoted to "
        "production; every step is signed and in the verified ledger.",
        style="bold green",
    )
    render.note(
        f"Everything is kept in {base}; to look around: cd {shlex.quote(str(base))}; "
        f"{unset}conveyor status"
    )
