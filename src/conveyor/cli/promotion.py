"""Promotion commands: check, promote, rollback, status, history, trace."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import app
from conveyor.cli.options import (
    ConfigOption,
    Insecure,
    JsonOption,
    KeyOption,
    RefArgument,
    registry_options,
)

if TYPE_CHECKING:
    from conveyor.service import GateResult, PromotionDenied, PromotionResult


class Output(StrEnum):
    text = "text"
    json = "json"
    github = "github"


ToOption = Annotated[str, typer.Option("--to", metavar="ENV", help="The target environment.")]
BreakGlass = Annotated[
    str | None,
    typer.Option(
        "--break-glass",
        metavar="REASON",
        help="Promote during a freeze (needs the extra approvals the config names; recorded).",
    ),
]
OutputOption = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        help="text, json, or github (appends digest=, image=, repository= to $GITHUB_OUTPUT "
        "and a gate table to $GITHUB_STEP_SUMMARY).",
    ),
]
HelmArgs = Annotated[
    bool,
    typer.Option(
        "--helm-args",
        help="Print '--set image.repository=REPO --set image.digest=sha256:…' for helm upgrade.",
    ),
]


def _gate_lines(gates: Sequence[GateResult], *, evidence: bool = True) -> None:
    for gate in gates:
        mark = "pass" if gate.passed else "FAIL"
        # The reason names the ledger entry, signer and time; add the attestation digest.
        used = ", ".join(ref.envelope_digest[:19] for ref in gate.evidence) if evidence else ""
        render.line(f"  {mark}  {gate.gate:<11} {gate.reason}" + (f" [{used}]" if used else ""))


@app.command()
def check(
    ref: RefArgument,
    to: ToOption,
    break_glass: BreakGlass = None,
    key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Evaluate ENV's gates for the digest REF names; exit 0 allowed, 1 denied. Changes nothing."""
    from conveyor import service

    result = service.check(
        ref,
        environment=to,
        key=key,
        break_glass=break_glass,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    if as_json:
        render.as_json(result.to_dict())
    else:
        verdict = "allowed" if result.decision.allowed else "DENIED"
        tag = f" (resolved from tag {result.resolved_from})" if result.resolved_from else ""
        render.line(f"{result.reference}{tag} → {to}: {verdict}")
        _gate_lines(result.decision.gates)
        for note in result.ignored:
            render.info(f"  note: {note}")
    if not result.decision.allowed:
        raise typer.Exit(1)


def _show_promotion(result: PromotionResult, output: Output, helm_args: bool) -> None:
    if helm_args:
        render.line(
            f"--set image.repository={result.repository} --set image.digest={result.digest}"
        )
    if output is Output.json:
        render.as_json(result.to_dict())
    elif not helm_args:
        verb = "rolled back" if result.rollback else "promoted"
        if result.recorded:
            render.line(
                f"{verb} {result.image} to {result.environment} (ledger #{result.ledger_index})"
            )
        else:
            render.line(f"{result.image} is already in {result.environment}: nothing recorded")
        if result.resolved_from:
            render.info(
                f"  resolved tag {result.resolved_from} → {result.digest} (used throughout)"
            )
        _gate_lines(result.decision.gates)
        if result.copied:
            c = result.copied
            render.info(
                f"  placed: {c.blobs_copied} blobs copied, {c.blobs_mounted} mounted, "
                f"{c.blobs_skipped} present; {c.bytes_transferred} bytes; "
                f"tags {', '.join(result.tags) or '-'}; "
                f"{result.referrers_carried} attestations carried"
            )
        if result.decision.break_glass:
            render.info(f"  BREAK-GLASS: {result.decision.break_glass}")
    if output is Output.github:
        _github_outputs(result)


def _github_outputs(result: PromotionResult) -> None:
    output_file = os.environ.get("GITHUB_OUTPUT")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if output_file:
        with open(output_file, "a", encoding="utf-8") as handle:
            handle.write(f"digest={result.digest}\nimage={result.image}\n")
            handle.write(f"repository={result.repository}\n")
    else:
        render.info("GITHUB_OUTPUT is not set: printing the outputs instead")
        render.line(f"digest={result.digest}\nimage={result.image}\nrepository={result.repository}")
    if summary_file:
        verb = "Rollback" if result.rollback else "Promotion"
        lines = [
            f"### {verb} to `{result.environment}`",
            "",
            f"`{result.image}`" + ("" if result.recorded else " (already there; nothing recorded)"),
            "",
            "| gate | result | reason |",
            "| --- | --- | --- |",
        ]
        for gate in result.decision.gates:
            reason = gate.reason.replace("|", "\\|")
            lines.append(f"| {gate.gate} | {'✅' if gate.passed else '❌'} | {reason} |")
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n\n")


@app.command()
def promote(
    ref: RefArgument,
    to: ToOption,
    break_glass: BreakGlass = None,
    key: KeyOption = None,
    output: OutputOption = Output.text,
    helm_args: HelmArgs = False,
    config: ConfigOption = None,
    insecure_registry: Insecure = None,
) -> None:
    """Check ENV's gates, place the same digest in ENV's repository, record it (signed)."""
    from conveyor import service

    _run(
        lambda: service.promote(
            ref,
            environment=to,
            key=key,
            break_glass=break_glass,
            config_path=config,
            options=registry_options(insecure_registry),
        ),
        output,
        helm_args,
    )


def _run(operation: Callable[[], PromotionResult], output: Output, helm_args: bool) -> None:
    """Show the result, or on a denial every gate's verdict before the one-line error."""
    from conveyor import service

    try:
        result = operation()
    except service.PromotionDenied as denied:
        _show_denial(denied, output)
        raise
    _show_promotion(result, output, helm_args)


def _show_denial(denied: PromotionDenied, output: Output) -> None:
    decision = denied.decision
    if decision is None:
        return
    if output is Output.json:
        render.as_json(decision.to_dict())
    else:
        _gate_lines(decision.gates, evidence=False)


@app.command()
def rollback(
    env: Annotated[str, typer.Argument(metavar="ENV", help="The environment.")],
    to: Annotated[
        str | None, typer.Option("--to", metavar="DIGEST", help="A digest from ENV's history.")
    ] = None,
    key: KeyOption = None,
    output: OutputOption = Output.text,
    helm_args: HelmArgs = False,
    config: ConfigOption = None,
    insecure_registry: Insecure = None,
) -> None:
    """Put back ENV's previous digest (gates re-checked except `after`); recorded as a rollback."""
    from conveyor import service

    _run(
        lambda: service.rollback(
            env, to=to, key=key, config_path=config, options=registry_options(insecure_registry)
        ),
        output,
        helm_args,
    )


@app.command()
def status(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Each environment: digest, commit, promoted when and by whom; the candidate waiting."""
    from conveyor import service

    environments = service.status(config_path=config, options=registry_options(insecure_registry))
    if as_json:
        render.as_json({"environments": [e.to_dict() for e in environments]})
        return
    for env in environments:
        current = env.current
        if current is None:
            render.line(f"{env.environment}: empty ({env.repository})")
        else:
            commit = (current.commit or "?")[:12]
            glass = " BREAK-GLASS" if current.break_glass else ""
            back = " (rollback)" if current.rollback else ""
            render.line(
                f"{env.environment}: {env.current_image} commit {commit}, promoted "
                f"{env.current_age} ago by {current.signer}{back}{glass}"
            )
        if env.candidate:
            waiting = "; ".join(env.candidate_failing) or "all gates pass"
            render.line(f"  candidate {env.candidate[:19]}…: {waiting}")
        if env.note:
            render.info(f"  note: {env.note}")


@app.command()
def history(
    env: Annotated[str, typer.Argument(metavar="ENV", help="The environment.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every digest promoted to (or rolled back in) ENV, newest first."""
    from conveyor import service

    items = service.history(env, config_path=config)
    if as_json:
        render.as_json({"environment": env, "history": [i.to_dict() for i in items]})
        return
    if not items:
        render.line(f"{env}: nothing promoted yet")
    for item in items:
        what = "rollback " if item.rollback else ""
        glass = f" BREAK-GLASS: {item.break_glass}" if item.break_glass else ""
        render.line(
            f"#{item.index} {item.recorded_at.isoformat()} {what}{item.digest} "
            f"commit {(item.commit or '?')[:12]} by {item.signer}{glass}"
        )


@app.command()
def trace(
    query: Annotated[str, typer.Argument(metavar="REF|COMMIT", help="An image or a git commit.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """The chain of custody as a timeline: build, tests, scans, approvals, promotions."""
    from conveyor import service

    result = service.trace(query, config_path=config, options=registry_options(insecure_registry))
    if as_json:
        render.as_json(result.to_dict())
        return
    if not result.ok:
        render.line(f"{query}: nothing in the ledger")
        raise typer.Exit(1)
    for digest in result.digests:
        render.line(digest)
        for event in (e for e in result.events if e.digest == digest):
            mark = "verified" if event.verified else "NOT VERIFIED"
            who = f" by {event.signer}" if event.signer else ""
            who += f" via {event.via}" if event.via else ""
            render.line(
                f"  #{event.index} {event.recorded_at:%Y-%m-%d %H:%M:%S} {event.kind:<9} "
                f"{event.summary}{who} [{mark}]"
            )
