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


@contextlib.contextmanager
def _served(base: Path) -> Iterator[str]:
    """``conveyor serve`` in ``base`` on a free loopback port until the block ends."""
    import socket
    import subprocess
    import urllib.error
    import urllib.request

    from conveyor.errors import ExternalError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = base / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=base,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ExternalError(f"conveyor serve did not start; see {log}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


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
    server: Annotated[
        bool,
        typer.Option(
            "--server",
            help="The same pipeline through a conveyor serve it starts on a free loopback "
            "port, each identity with its own API token.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline locally: build, test, scan, refuse, promote, approve, audit."""
    from conveyor.demo import (
        CLEARED_ENVIRONMENT,
        DemoFailed,
        Note,
        Section,
        Serve,
        prepare_directory,
        script,
    )

    started = time.monotonic()
    base = prepare_directory(directory)
    through = " through conveyor serve on loopback" if server else ""
    render.note(
        f"The seed pipeline, on embedded defaults (OCI image layouts as the registry, SQLite as "
        f"the ledger){through}, in {base}. Each $ line is a real command; it runs in that "
        "directory.",
        style="bold",
    )
    steps = 0
    tokens: dict[str, str] = {}
    with _inside(base, CLEARED_ENVIRONMENT), contextlib.ExitStack() as stack:
        for item in script(base, server=server):
            if isinstance(item, Serve):
                render.note(f"\n# {item.why}")
                url = stack.enter_context(_served(base))
                render.note(f"$ conveyor serve --port {url.rsplit(':', 1)[1]} &", style="bold cyan")
                render.note(f"$ export CONVEYOR_SERVER={url}", style="bold cyan")
                os.environ["CONVEYOR_SERVER"] = url
                stack.callback(os.environ.pop, "CONVEYOR_SERVER", None)
            elif isinstance(item, Section):
                render.note(f"\n== {item.title} ==", style="bold magenta")
            elif isinstance(item, Note):
                render.note(f"\n# {item.text}")
                if item.body is not None:
                    render.line(item.body.rstrip("\n"))
            else:
                steps += 1
                render.note(f"\n# {item.why}")
                render.note(f"$ {item.command}", style="bold cyan")
                if item.token is not None:
                    os.environ["CONVEYOR_TOKEN"] = tokens[item.token]
                try:
                    code, output = invoke(item.argv)
                finally:
                    os.environ.pop("CONVEYOR_TOKEN", None)
                if item.capture is not None and code == 0:
                    tokens[item.capture] = output.splitlines()[0].strip()
                    output = f"(${item.capture} holds the token)\n" + "\n".join(
                        output.splitlines()[1:]
                    )
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
