"""Chain-of-custody commands: keys, init, record, attest, approve, audit, attestations.

Each command parses its arguments, calls the service and renders the result; the rules
(who may record what, label agreement, verification) live in the core.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import app
from conveyor.cli.options import (
    ConfigOption,
    EnvOption,
    Insecure,
    JsonOption,
    KeyOption,
    RefArgument,
    registry_options,
)

if TYPE_CHECKING:
    from conveyor.service import Recorded

keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)
record_app = typer.Typer(help="Record facts about an artifact (signed, in the ledger).")
attest_app = typer.Typer(help="Attest evidence about an artifact: tests, scans, smoke tests.")
audit_app = typer.Typer(help="Verify the ledger and emit signed checkpoints.")
app.add_typer(keys_app, name="keys")
app.add_typer(record_app, name="record")
app.add_typer(attest_app, name="attest")
app.add_typer(audit_app, name="audit")


def _show(result: Recorded, as_json: bool) -> None:
    if as_json:
        render.as_json(result.to_dict())
        return
    where = f" for {result.environment}" if result.environment else ""
    render.line(
        f"recorded {result.kind}{where}: {result.reference} "
        f"(ledger #{result.ledger_index}, signed by {result.signer})"
    )
    for key, value in result.summary.items():
        if value not in (None, [], {}):
            render.info(f"  {key}: {value}")
    if result.attached:
        render.info(f"  attached: {result.attached}")
    for note in result.notes:
        render.info(f"  note: {note}")


@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Argument(help="File name stem: NAME.key and NAME.pub.")],
    kind: Annotated[
        str, typer.Option("--type", help="ed25519 (default) or ecdsa-p256.")
    ] = "ed25519",
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory.")] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Write NAME.key (PKCS#8 PEM, mode 0600; encrypted when CONVEYOR_KEY_PASSWORD is set)
    and NAME.pub."""
    from conveyor import service

    password = service.Settings.from_environment().key_password
    key = service.generate_keys(name, kind=kind, out_dir=out, password=password)
    if as_json:
        render.as_json(
            {
                "private_key": str(key.private_key),
                "public_key": str(key.public_key),
                "keyid": key.keyid,
                "encrypted": key.encrypted,
            }
        )
        return
    render.line(str(key.public_key))
    render.info(
        f"private key {key.private_key} (mode 0600{', encrypted' if key.encrypted else ''})"
    )
    render.info(f"key id {key.keyid}")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write conveyor.yaml.")] = Path("."),
    name: Annotated[str, typer.Option("--name", help="Name of the first identity.")] = "ci",
) -> None:
    """Write a commented starter conveyor.yaml, a signing key and a ledger key."""
    from conveyor import service

    password = service.Settings.from_environment().key_password
    done = service.init_workspace(directory, name=name, password=password)
    render.line(str(done.config))
    for key in done.keys:
        render.info(f"key {key.private_key} (public {key.public_key})")


@record_app.command("build")
def record_build(
    ref: RefArgument,
    commit: Annotated[
        str | None,
        typer.Option("--commit", metavar="SHA", help="Default: GITHUB_SHA / CI_COMMIT_SHA."),
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", metavar="ID")] = None,
    run_url: Annotated[str | None, typer.Option("--run-url", metavar="URL")] = None,
    builder_id: Annotated[str | None, typer.Option("--builder-id", metavar="URI")] = None,
    key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Record SLSA provenance: this digest was built from COMMIT by CI run ID."""
    from conveyor import service

    result = service.record_build(
        ref,
        commit=commit,
        run_id=run_id,
        run_url=run_url,
        builder_id=builder_id,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result, as_json)


@attest_app.command("tests")
def attest_tests(
    ref: RefArgument,
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="JUnit XML reports.")],
    url: Annotated[str | None, typer.Option("--url", help="Link to the test run.")] = None,
    key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Attest test results (in-toto test-result) from JUnit XML files."""
    from conveyor import service

    result = service.attest_tests(
        ref,
        files,
        url=url,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result, as_json)


@attest_app.command("scan")
def attest_scan(
    ref: RefArgument,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Trivy/Grype JSON, SARIF, Snyk.")],
    key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Attest a vulnerability scan (in-toto vulns) of this very image."""
    from conveyor import service

    result = service.attest_scan(
        ref, file, key=key, config_path=config, options=registry_options(insecure_registry)
    )
    _show(result, as_json)


@attest_app.command("smoke")
def attest_smoke(
    ref: RefArgument,
    env: EnvOption,
    passed: Annotated[
        bool | None, typer.Option("--passed/--failed", help="The smoke test's outcome.")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="What was tested.")] = None,
    key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Attest a smoke test of the digest in ENV."""
    from conveyor import service
    from conveyor.errors import InputError

    if passed is None:
        raise InputError("say the outcome: --passed or --failed")
    result = service.attest_smoke(
        ref,
        environment=env,
        passed=passed,
        url=url,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result, as_json)


@app.command()
def approve(
    ref: RefArgument,
    env: EnvOption,
    comment: Annotated[str | None, typer.Option("--comment", metavar="TEXT")] = None,
    key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """Approve this digest (not a tag) for ENV, signed by your key."""
    from conveyor import service

    result = service.approve(
        ref,
        environment=env,
        comment=comment,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result, as_json)


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", metavar="FILE", help="A checkpoint kept elsewhere."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Re-verify every entry, even those a trusted --checkpoint covers."
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every leaf, signature and root; check consistency with a checkpoint.

    With a trusted --checkpoint only the entries after it are verified (its consistency
    proof is checked); --full redoes everything."""
    from conveyor import service

    report = service.audit_verify(config_path=config, checkpoint=checkpoint, full=full)
    if as_json:
        render.as_json(
            {
                "ok": report.ok,
                "size": report.size,
                "root": report.root.hex(),
                "first_bad_index": report.first_bad_index,
                "problems": list(report.problems),
                "checked_signatures": report.checked_signatures,
                "incremental": report.incremental,
                "checked_from": report.checked_from,
                "replays": list(report.replays),
            }
        )
    elif report.ok:
        render.line(f"ledger ok: {report.size} entries, root {report.root.hex()}")
    else:
        where = (
            f" (first bad entry #{report.first_bad_index})"
            if report.first_bad_index is not None
            else ""
        )
        render.line(f"ledger FAILED verification{where}")
        for problem in report.problems:
            render.info(f"  {problem}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Also write it to FILE.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Emit a signed checkpoint (size, root, time): keep it outside the database."""
    from conveyor import service

    checkpoint = service.audit_checkpoint(config_path=config, out=out)
    render.line(checkpoint.to_text().rstrip("\n"))


@app.command()
def attestations(
    ref: RefArgument,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """List the attestations attached to REF's digest and whether each verifies."""
    from conveyor import service

    listed = service.list_attestations(
        ref, config_path=config, options=registry_options(insecure_registry)
    )
    if as_json:
        render.as_json(listed.to_dict())
    else:
        render.line(f"{listed.name}@{listed.digest}: {len(listed.found)} attestation(s)")
        for item in listed.found:
            state = "verified" if item.verified else "NOT VERIFIED"
            ledger = "in ledger" if item.in_ledger else "not in ledger"
            signer = f" by {item.signer}" if item.signer else ""
            problem = f": {item.problem}" if item.problem else ""
            render.line(
                f"  {item.manifest_digest.short} {item.predicate_type or '?'} "
                f"{state}{signer}, {ledger}{problem}"
            )
    if not listed.ok:
        raise typer.Exit(1)
