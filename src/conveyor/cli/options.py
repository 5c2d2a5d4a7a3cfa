"""Options and arguments shared by the command modules, and the settings they build
(the CLI is the edge where environment variables are read: ``Settings.from_environment``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from conveyor.service import RegistryOptions

INSECURE_HELP = (
    "Allow plain HTTP for this registry (HOST[:PORT]); repeatable. "
    "Also read from CONVEYOR_INSECURE_REGISTRIES (comma-separated)."
)

Insecure = Annotated[
    list[str] | None,
    typer.Option("--insecure-registry", metavar="HOST[:PORT]", help=INSECURE_HELP),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="conveyor.yaml to use (default: CONVEYOR_CONFIG, then ./conveyor.yaml).",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="PATH",
        help="Signing key (PEM). Default: CONVEYOR_SIGNING_KEY (a path or the PEM itself).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RefArgument = Annotated[
    str, typer.Argument(metavar="REF", help="Image reference; resolved once to its digest.")
]
EnvOption = Annotated[str, typer.Option("--env", metavar="ENV", help="The environment.")]


def registry_options(insecure: list[str] | None) -> RegistryOptions:
    """``--insecure-registry`` flags plus ``CONVEYOR_INSECURE_REGISTRIES``."""
    from conveyor.service import RegistryOptions

    return RegistryOptions.from_environment(insecure or ())
