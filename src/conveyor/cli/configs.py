"""``conveyor lint``: findings in deployment config and CI workflows.

Exit status: 1 when an ``error`` finding remains or a file could not be read, 0 otherwise,
2 for bad usage. The service is imported inside the command (``conveyor --help`` stays fast).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from conveyor.cli import render
from conveyor.cli.app import app


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"


@app.command()
def lint(
    paths: list[Path] = typer.Argument(  # noqa: B008
        ..., metavar="PATH...", help="Files or folders (.git and vendored folders are skipped)."
    ),
    output_format: OutputFormat = typer.Option(  # noqa: B008
        OutputFormat.TEXT, "--format", "-f", help="text, json, or sarif (GitHub code scanning)."
    ),
    env: str | None = typer.Option(
        None,
        "--env",
        metavar="ENV",
        help="Also check that every digest was promoted to ENV (reads the ledger).",
    ),
    config: str | None = typer.Option(
        None, "--config", help="conveyor.yaml with a 'lint:' section (default ./conveyor.yaml)."
    ),
) -> None:
    """Find mutable image references and rebuild-per-environment mistakes; exit 1 on errors."""
    from conveyor import service
    from conveyor.cli import remote

    server = remote.client() if env is not None else None
    if server is not None:  # the promotions come from the server's ledger
        with server:
            promoted = server.promoted_digests(env or "")
        report = service.lint(paths, environment=env, config_path=config, promoted=promoted)
    else:
        report = service.lint(paths, environment=env, config_path=config)
    if output_format is OutputFormat.JSON:
        render.line(json.dumps(report.to_dict(), indent=2))
    elif output_format is OutputFormat.SARIF:
        render.line(json.dumps(service.lint_sarif(report), indent=2))
    else:
        for finding in report.findings:
            render.line(
                f"{finding.file}:{finding.line}:{finding.column}: {finding.severity} "
                f"{finding.rule} {finding.message}"
            )
            if finding.fix:
                render.line(f"    fix: {finding.fix}")
        for error in report.errors:
            render.line(f"{error.file}: error: {error.message}")
        counts = {s: sum(f.severity == s for f in report.findings) for s in ("error", "warning")}
        render.info(
            f"{report.files} files: {counts['error']} errors, {counts['warning']} warnings, "
            f"{len(report.findings) - counts['error'] - counts['warning']} info, "
            f"{len(report.errors)} unreadable, {report.suppressed} suppressed"
        )
    raise typer.Exit(report.exit_code)
