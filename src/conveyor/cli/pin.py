"""``conveyor pin``: rewrite deployment config to digests, in place.

Output: one line per file that changes (or would), one indented line per reference; notes
about references left alone and errors go to stderr. ``--diff`` prints a unified diff.
Exit: 0 done (or nothing to do), 1 ``--check`` found something to change or a wrong digest,
2 bad input (a file or reference), 3 the registry, ledger or disk failed us. A failed file
is never half-written: it stays exactly as it was and the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import app
from conveyor.cli.options import INSECURE_HELP, registry_options

if TYPE_CHECKING:
    from conveyor.service import FileResult, PinReport


@app.command()
def pin(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH...", help="Files or folders to pin.")
    ],
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit 1 when something would change.")
    ] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Print a unified diff of each change.")] = (
        False
    ),
    env: Annotated[
        str | None,
        typer.Option(
            "--env", metavar="ENV", help="Pin to the digest the ledger shows promoted to ENV."
        ),
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option("--lock", metavar="FILE", help="Write a lock file: reference → digest."),
    ] = None,
    from_lock: Annotated[
        Path | None,
        typer.Option(
            "--from-lock", metavar="FILE", help="Pin from a lock file, without any network."
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="No registry: keep written digests unverified; tags cannot resolve."
        ),
    ] = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", metavar="GLOB", help="Skip matching paths; repeatable."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", help="conveyor.yaml (for --env)."),
    ] = None,
    insecure_registry: Annotated[
        list[str] | None,
        typer.Option("--insecure-registry", metavar="HOST[:PORT]", help=INSECURE_HELP),
    ] = None,
) -> None:
    """Rewrite image references to name:tag@sha256:… in Kubernetes manifests, Helm values,
    kustomize, Compose, GitHub Actions and Dockerfiles; comments and layout are kept."""
    from conveyor import service
    from conveyor.cli import remote

    promoted = None
    server = remote.client() if env is not None and from_lock is None else None
    if server is not None:  # the promotions come from the server's ledger
        with server:
            promoted = service.Promoted(**server.promoted_repositories(env or ""))
    options = registry_options(insecure_registry)
    report = service.pin(
        paths,
        check=check,
        env=env,
        lock=lock,
        from_lock=from_lock,
        options=options,
        config_path=config,
        offline=offline,
        exclude=exclude or (),
        promoted=promoted,
    )
    _show(report, diff=diff)
    raise typer.Exit(report.exit_code)


def _show(report: PinReport, *, diff: bool) -> None:
    verb = "would pin" if report.check else "pinned"
    for result in report.files:
        _show_file(result, verb=verb, diff=diff)
    changed = len(report.changed)
    failed = len(report.failed)
    done = "would change" if report.check else "changed"
    summary = f"{len(report.files)} file(s) read, {changed} {done}"
    if failed:
        summary += f", {failed} failed (left as they were)"
    render.info(summary)


def _show_file(result: FileResult, *, verb: str, diff: bool) -> None:
    for site in result.sites:
        where = f"{result.display_path}:{site.line}:{site.column}"
        if site.status == "error":
            render.info(f"{where}: error: {site.message}")
        elif site.noteworthy:
            render.info(f"{where}: {site.message}: {site.reference}")
    if result.error is not None:
        site_errors = sum(1 for site in result.sites if site.status == "error")
        if site_errors:
            render.info(f"{result.display_path}: not rewritten ({site_errors} error(s) above)")
        else:
            shown = result.error.removeprefix(result.display_path + ": ")
            render.info(f"{result.display_path}: error: {shown}")
        return
    if not result.changed:
        return
    pinned = [s for s in result.sites if s.status in ("pinned", "repinned")]
    render.line(f"{result.display_path}: {verb} {len(pinned)} reference(s)")
    for site in pinned:
        render.line(f"  {site.line}:{site.column} {site.reference} -> {site.new_reference}")
    if diff:
        text = result.diff()
        if text:
            render.line(text.rstrip("\n"))
