"""Promotion commands: check, promote, rollback, status, history, trace, repair."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from conveyor.cli import remote, render
from conveyor.cli.app import app
from conveyor.cli.options import (
    ConfigOption,
    Insecure,
    JsonOption,
    KeyOption,
    RefArgument,
    registry_options,
)


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


def _gate_lines(gates: Sequence[Mapping[str, Any]], *, evidence: bool = True) -> None:
    """Every gate's verdict (``GateResult.to_dict()`` documents, in both modes)."""
    for gate in gates:
        mark = "pass" if gate["passed"] else "FAIL"
        # The reason names the ledger entry, signer and time; add the attestation digest.
        used = (
            ", ".join(str(ref["attestation"])[:19] for ref in gate.get("evidence") or ())
            if evidence
            else ""
        )
        line = f"  {mark}  {gate['gate']:<11} {gate['reason']}"
        render.line(line + (f" [{used}]" if used else ""))


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
    server = remote.client(key=key)
    if server is not None:  # the token's identity is the promoter
        with server:
            result = server.check(ref, environment=to, break_glass=break_glass)
    else:
        from conveyor import service

        result = service.check(
            ref,
            environment=to,
            key=key,
            break_glass=break_glass,
            config_path=config,
            options=registry_options(insecure_registry),
        ).to_dict()
    if as_json:
        render.as_json(result)
    else:
        verdict = "allowed" if result["allowed"] else "DENIED"
        tag = f" (resolved from tag {result['resolved_from']})" if result["resolved_from"] else ""
        render.line(f"{result['reference']}{tag} → {to}: {verdict}")
        _gate_lines(result["gates"])
        for note in result.get("ignored") or ():
            render.info(f"  note: {note}")
    if not result["allowed"]:
        raise typer.Exit(1)


def _show_promotion(result: Mapping[str, Any], output: Output, helm_args: bool) -> None:
    """A promotion or rollback (``PromotionResult.to_dict()``, in both modes)."""
    if helm_args:
        render.line(
            f"--set image.repository={result['repository']} --set image.digest={result['digest']}"
        )
    if output is Output.json:
        render.as_json(result)
    elif not helm_args:
        verb = "rolled back" if result["rollback"] else "promoted"
        image, environment = result["image"], result["environment"]
        if result["recorded"]:
            render.line(f"{verb} {image} to {environment} (ledger #{result['ledger_index']})")
        else:
            render.line(f"{image} is already in {environment}: nothing recorded")
        if result["resolved_from"]:
            render.info(
                f"  resolved tag {result['resolved_from']} → {result['digest']} (used throughout)"
            )
        _gate_lines(result["gates"])
        copied = result.get("copy")
        if copied:
            render.info(
                f"  placed: {copied['blobs_copied']} blobs copied, {copied['blobs_mounted']} "
                f"mounted, {copied['blobs_skipped']} present; {copied['bytes_transferred']} "
                f"bytes; tags {', '.join(result['tags']) or '-'}; "
                f"{result['referrers_carried']} attestations carried"
            )
        if result.get("break_glass"):
            render.info(f"  BREAK-GLASS: {result['break_glass']}")
        for apart in result.get("repaired", []):
            render.info(f"  was out of step, now repaired: {apart}")
    if output is Output.github:
        _github_outputs(result)


def _github_outputs(result: Mapping[str, Any]) -> None:
    output_file = os.environ.get("GITHUB_OUTPUT")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    digest, image, repository = result["digest"], result["image"], result["repository"]
    if output_file:
        with open(output_file, "a", encoding="utf-8") as handle:
            handle.write(f"digest={digest}\nimage={image}\n")
            handle.write(f"repository={repository}\n")
    else:
        render.info("GITHUB_OUTPUT is not set: printing the outputs instead")
        render.line(f"digest={digest}\nimage={image}\nrepository={repository}")
    if summary_file:
        verb = "Rollback" if result["rollback"] else "Promotion"
        lines = [
            f"### {verb} to `{result['environment']}`",
            "",
            f"`{image}`" + ("" if result["recorded"] else " (already there; nothing recorded)"),
            "",
            "| gate | result | reason |",
            "| --- | --- | --- |",
        ]
        for gate in result["gates"]:
            reason = str(gate["reason"]).replace("|", "\\|")
            lines.append(f"| {gate['gate']} | {'✅' if gate['passed'] else '❌'} | {reason} |")
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
    server = remote.client(key=key)
    if server is not None:
        with server:
            _run(lambda: server.promote(ref, environment=to, break_glass=break_glass), output,
                 helm_args)  # fmt: skip
        return
    from conveyor import service

    _run(
        lambda: service.promote(
            ref,
            environment=to,
            key=key,
            break_glass=break_glass,
            config_path=config,
            options=registry_options(insecure_registry),
        ).to_dict(),
        output,
        helm_args,
    )


def _run(operation: Callable[[], Mapping[str, Any]], output: Output, helm_args: bool) -> None:
    """Show the result, or on a denial every gate's verdict before the one-line error.
    A denial is ``PromotionDenied`` (direct) or the client's ``Denied`` (409): both carry
    the decision, rendered the same way."""
    from conveyor.errors import PolicyDenied

    try:
        result = operation()
    except PolicyDenied as denied:
        _show_denial(_decision_of(denied), output)
        raise
    _show_promotion(result, output, helm_args)


def _decision_of(denied: Exception) -> Mapping[str, Any] | None:
    decision = getattr(denied, "decision", None)
    if decision is None or isinstance(decision, Mapping):
        return decision
    as_dict: Mapping[str, Any] = decision.to_dict()
    return as_dict


def _show_denial(decision: Mapping[str, Any] | None, output: Output) -> None:
    if decision is None:
        return
    if output is Output.json:
        render.as_json(decision)
    else:
        _gate_lines(decision.get("gates") or (), evidence=False)


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
    server = remote.client(key=key)
    if server is not None:
        with server:
            _run(lambda: server.rollback(env, to=to), output, helm_args)
        return
    from conveyor import service

    _run(
        lambda: service.rollback(
            env, to=to, key=key, config_path=config, options=registry_options(insecure_registry)
        ).to_dict(),
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
    server = remote.client()
    if server is not None:
        with server:
            environments = server.status()
    else:
        from conveyor import service

        environments = [
            e.to_dict()
            for e in service.status(config_path=config, options=registry_options(insecure_registry))
        ]
    if as_json:
        render.as_json({"environments": environments})
        return
    for env in environments:
        current = env["current"]
        if current is None:
            render.line(f"{env['environment']}: empty ({env['repository']})")
        else:
            commit = (current["commit"] or "?")[:12]
            glass = " BREAK-GLASS" if current["break_glass"] else ""
            back = " (rollback)" if current["rollback"] else ""
            render.line(
                f"{env['environment']}: {current['image']} commit {commit}, promoted "
                f"{current['age']} ago by {current['promoted_by']}{back}{glass}"
            )
        if env["candidate"]:
            waiting = "; ".join(env["candidate_failing"]) or "all gates pass"
            render.line(f"  candidate {env['candidate'][:19]}…: {waiting}")
        if env["note"]:
            render.info(f"  note: {env['note']}")
        for apart in env.get("tags_apart", []):
            render.line(f"  OUT OF STEP: {apart}")


@app.command()
def history(
    env: Annotated[str, typer.Argument(metavar="ENV", help="The environment.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every digest promoted to (or rolled back in) ENV, newest first."""
    server = remote.client()
    if server is not None:
        with server:
            items = server.history(env)
    else:
        from conveyor import service

        items = [i.to_dict() for i in service.history(env, config_path=config)]
    if as_json:
        render.as_json({"environment": env, "history": items})
        return
    if not items:
        render.line(f"{env}: nothing promoted yet")
    for item in items:
        what = "rollback " if item["rollback"] else ""
        glass = f" BREAK-GLASS: {item['break_glass']}" if item["break_glass"] else ""
        render.line(
            f"#{item['ledger_index']} {item['recorded_at']} {what}{item['digest']} "
            f"commit {(item['commit'] or '?')[:12]} by {item['promoted_by']}{glass}"
        )


@app.command()
def trace(
    query: Annotated[str, typer.Argument(metavar="REF|COMMIT", help="An image or a git commit.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """The chain of custody as a timeline: build, tests, scans, approvals, promotions."""
    server = remote.client()
    if server is not None:
        with server:
            result = server.trace(query)
    else:
        from conveyor import service

        result = service.trace(
            query, config_path=config, options=registry_options(insecure_registry)
        ).to_dict()
    if as_json:
        render.as_json(result)
        return
    if not result["digests"]:
        render.line(f"{query}: nothing in the ledger")
        raise typer.Exit(1)
    for digest in result["digests"]:
        render.line(digest)
        for event in (e for e in result["events"] if e["digest"] == digest):
            mark = "verified" if event["verified"] else "NOT VERIFIED"
            who = f" by {event['signer']}" if event["signer"] else ""
            who += f" via {event['via']}" if event.get("via") else ""
            when = datetime.fromisoformat(event["recorded_at"])
            render.line(
                f"  #{event['ledger_index']} {when:%Y-%m-%d %H:%M:%S} {event['kind']:<9} "
                f"{event['summary']}{who} [{mark}]"
            )


@app.command()
def repair(
    env: Annotated[str, typer.Argument(metavar="ENV", help="The environment.")],
    check_only: Annotated[
        bool,
        typer.Option(
            "--check", help="Only say what is out of step: tags, attestations (exit 1 if any)."
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Put ENV's tags back on the digest the ledger last recorded for ENV, and attach again
    the recorded promotions' attestations ENV's repository does not list (after a crash)."""
    from conveyor import service

    report = service.repair(
        env, check=check_only, config_path=config, options=registry_options(insecure_registry)
    )
    if as_json:
        render.as_json(report.to_dict())
    else:
        if not report.apart:
            render.line(f"{env}: every tag names {report.recorded or 'nothing (nothing recorded)'}")
        for apart in report.apart:
            render.line(f"{'moved' if apart.tag in report.moved else 'OUT OF STEP'}: {apart}")
        if report.moved:
            render.line(f"{env}: {', '.join(report.moved)} now name {report.recorded}")
        for missing in report.unlisted:
            done = missing.index in report.attached
            render.line(f"{'attached again' if done else 'OUT OF STEP'}: {missing}")
    if not report.in_step:
        raise typer.Exit(1)
