"""Commands on images: resolve, inspect, copy, tags.

REF forms: ``[docker://]host[:port]/repo[:tag][@digest]`` and ``oci:PATH[:tag][@digest]``.
Through a server (``--server``/``CONVEYOR_SERVER``) resolve and inspect ask it, with its
registry credentials; copy and tags always talk to the registry from here.
The service is imported inside each command: ``conveyor --help`` must not pay for httpx.
"""

from __future__ import annotations

import typer

from conveyor.cli import remote, render
from conveyor.cli.app import app
from conveyor.cli.options import Insecure, registry_options


@app.command()
def resolve(
    ref: str = typer.Argument(..., metavar="REF", help="Image reference with a tag or digest."),
    insecure_registry: Insecure = None,
) -> None:
    """Resolve REF to the digest it names now; prints name@sha256:..."""
    server = remote.client()
    if server is not None:  # the server's registry credentials
        with server:
            render.line(str(server.resolve(ref)["reference"]))
        return
    from conveyor import service

    render.line(str(service.resolve(ref, options=registry_options(insecure_registry))))


@app.command()
def inspect(
    ref: str = typer.Argument(..., metavar="REF", help="Image reference with a tag or digest."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    insecure_registry: Insecure = None,
) -> None:
    """Show digest, media type, platforms, labels, annotations, created and total size."""
    server = remote.client()
    if server is not None:  # the server's registry credentials
        with server:
            document = server.inspect(ref)
    else:
        from conveyor import service

        document = service.inspect(ref, options=registry_options(insecure_registry)).to_dict()
    if as_json:
        render.as_json(document)
    else:
        render.inspection(document)


@app.command()
def copy(
    source: str = typer.Argument(..., metavar="SRC", help="Image to copy (tag or digest)."),
    destination: str = typer.Argument(
        ..., metavar="DST", help="Where to (the tag defaults to the source tag)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, no summary."),
    insecure_registry: Insecure = None,
) -> None:
    """Copy an image or a whole index with its digest unchanged; prints DST@sha256:..."""
    from conveyor import service

    show_progress = render.stderr_is_terminal() and not quiet and not as_json
    with render.copy_progress(show_progress) as progress:
        result = service.copy_image(
            source, destination, options=registry_options(insecure_registry), progress=progress
        )
    render.copy_warnings(result)
    if as_json:
        render.as_json(result.to_dict())
        return
    render.line(f"{result.destination}@{result.digest}")
    if not quiet and render.stderr_is_terminal():
        render.copy_summary(result)


@app.command()
def tags(
    repository: str = typer.Argument(
        ..., metavar="REPO", help="Repository (host/repo) or OCI layout (oci:PATH)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    insecure_registry: Insecure = None,
) -> None:
    """List the tags of a repository."""
    from conveyor import service

    found = service.list_tags(repository, options=registry_options(insecure_registry))
    if as_json:
        render.as_json(found)
    else:
        for tag in found:
            render.line(tag)
