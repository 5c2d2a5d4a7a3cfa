"""``conveyor drift ENV --from FILE``: what runs against what was promoted.

Reads ``kubectl get pods -A -o json``, ``docker inspect`` and ``docker compose ps --format
json`` output (``--from`` repeatable; ``-`` is stdin). Exit: 0 every container runs a digest
promoted to its environment (current or previous) or shows none, 1 something runs that was
never promoted, 2 bad input, 3 the ledger failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import app
from conveyor.cli.options import ConfigOption, JsonOption
from conveyor.errors import InputError

MAX_INPUT_BYTES = 256 * 1024 * 1024


def _read(path: Path) -> str:
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with path.open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise InputError(f"--from {path}: {error.strerror}") from error
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"--from {path}: larger than {MAX_INPUT_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"--from {path}: not UTF-8 text") from error


@app.command()
def drift(
    env: Annotated[
        str,
        typer.Argument(metavar="ENV", help="The environment of containers no map places."),
    ],
    sources: Annotated[
        list[Path],
        typer.Option(
            "--from",
            metavar="FILE",
            help="kubectl get pods -A -o json, docker inspect or docker compose ps --format "
            "json output; repeatable; - reads stdin.",
        ),
    ],
    namespace_map: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace-map",
            metavar="NS=ENV[,NS=ENV]",
            help="Namespace (or Compose project) to environment; default: conveyor.yaml's "
            "admission.namespaces.",
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What runs, against what was promoted: current, previous, never promoted, unknown."""
    from conveyor import service

    report = service.drift(
        env,
        [(_read(path), str(path)) for path in sources],
        namespace_map=namespace_map,
        config_path=config,
    )
    if as_json:
        render.as_json(report.to_dict())
    else:
        for c in report.containers:
            where = "/".join(p for p in (c.running.namespace, c.running.owner) if p)
            shown = c.running.digest[:19] + "…" if c.running.digest else "(no digest)"
            render.line(
                f"{c.status:<8} {c.environment:<12} {where}/{c.running.container} "
                f"{c.running.image} {shown}"
            )
        for environment, counts in report.summary.items():
            said = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
            render.info(f"{environment}: {said or 'no containers'}")
    if report.never_promoted:
        raise typer.Exit(1)
