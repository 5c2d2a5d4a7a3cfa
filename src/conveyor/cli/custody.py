"""Chain-of-custody commands: keys, init, record, attest, approve, audit, attestations.

Each command parses its arguments, calls the service and renders the result; the rules
(who may record what, label agreement, verification) live in the core.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli import remote, render
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

keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)
record_app = typer.Typer(help="Record facts about an artifact (signed, in the ledger).")
attest_app = typer.Typer(help="Attest evidence about an artifact: tests, scans, smoke tests.")
audit_app = typer.Typer(help="Verify the ledger and emit signed checkpoints.")
app.add_typer(keys_app, name="keys")
app.add_typer(record_app, name="record")
app.add_typer(attest_app, name="attest")
app.add_typer(audit_app, name="audit")


def _show(result: dict[str, Any], as_json: bool) -> None:
    """A recorded piece of evidence (``Recorded.to_dict()``, in both modes)."""
    if as_json:
        render.as_json(result)
        return
    where = f" for {result['environment']}" if result.get("environment") else ""
    render.line(
        f"recorded {result['kind']}{where}: {result['reference']} "
        f"(ledger #{result['ledger_index']}, signed by {result['signer']})"
    )
    for key, value in (result.get("summary") or {}).items():
        if value not in (None, [], {}):
            render.info(f"  {key}: {value}")
    if result.get("attached"):
        render.info(f"  attached: {result['attached']}")
    for note in result.get("notes") or ():
        render.info(f"  note: {note}")


def _ci_defaults(
    commit: str | None, run_id: str | None, run_url: str | None, builder_id: str | None
) -> tuple[str, str | None, str | None, str | None]:
    """Remote mode: the CI variables of THIS machine fill in what the flags leave out."""
    from conveyor.errors import InputError
    from conveyor.service import ci_context

    ci = ci_context(os.environ)
    commit = commit or ci.commit
    if not commit:
        raise InputError("no commit: pass --commit SHA (or run in GitHub Actions / GitLab CI)")
    return commit, run_id or ci.run_id, run_url or ci.run_url, builder_id or ci.builder_id


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


@keys_app.command("rotate")
def keys_rotate(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The identity in conveyor.yaml.")],
    kind: Annotated[
        str, typer.Option("--type", help="ed25519 (default) or ecdsa-p256.")
    ] = "ed25519",
    out: Annotated[
        Path | None,
        typer.Option(
            "--dir", metavar="DIR", help="Where the new key goes (default: beside the current one)."
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give identity NAME a new key and retire its current one now: writes NAME-<time>.key /
    .pub and lists the old key as retired in conveyor.yaml (comments kept). Evidence the old
    key signed before now keeps counting; nothing it signs later does."""
    from conveyor import service

    password = service.Settings.from_environment().key_password
    done = service.rotate_key(name, config_path=config, out_dir=out, kind=kind, password=password)
    if as_json:
        render.as_json(done.to_dict())
        return
    render.line(str(done.new_key.public_key))
    render.info(
        f"private key {done.new_key.private_key} (mode 0600"
        f"{', encrypted' if done.new_key.encrypted else ''}); key id {done.new_key.keyid}"
    )
    for old in done.retired:
        render.info(f"retired {old} at {done.to_dict()['retired_at']} in {done.config}")
    render.info(f"sign as {name} with {done.new_key.private_key} from now on")


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
    server = remote.client()
    if server is not None:
        sha, run, url, builder = _ci_defaults(commit, run_id, run_url, builder_id)
        with server:
            if key:
                done = remote.presigned(server, "build", ref, key, commit=sha, run_id=run,
                                        run_url=url, builder_id=builder)  # fmt: skip
            else:
                done = server.record_build(
                    ref, commit=sha, run_id=run, run_url=url, builder_id=builder
                )
        _show(done, as_json)
        return
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
    _show(result.to_dict(), as_json)


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
    server = remote.client()
    if server is not None:
        with server:
            if key:
                _show(remote.presigned(server, "tests", ref, key, files=files, url=url), as_json)
            else:
                _show(server.attest_tests(ref, files, url=url), as_json)
        return
    from conveyor import service

    result = service.attest_tests(
        ref,
        files,
        url=url,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result.to_dict(), as_json)


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
    server = remote.client()
    if server is not None:
        with server:
            if key:
                _show(remote.presigned(server, "scan", ref, key, file=file), as_json)
            else:
                _show(server.attest_scan(ref, file), as_json)
        return
    from conveyor import service

    result = service.attest_scan(
        ref, file, key=key, config_path=config, options=registry_options(insecure_registry)
    )
    _show(result.to_dict(), as_json)


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
    server = remote.client()
    if server is not None:
        with server:
            if key:
                done = remote.presigned(
                    server, "smoke", ref, key, environment=env, passed=passed, url=url
                )
            else:
                done = server.attest_smoke(ref, environment=env, passed=passed, url=url)
            _show(done, as_json)
        return
    result = service.attest_smoke(
        ref,
        environment=env,
        passed=passed,
        url=url,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result.to_dict(), as_json)


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
    """Approve this digest (not a tag) for ENV, signed by your key (or by the server for you)."""
    server = remote.client()
    if server is not None:
        with server:
            if key:
                done = remote.presigned(
                    server, "approval", ref, key, environment=env, comment=comment
                )
            else:
                done = server.approve(ref, environment=env, comment=comment)
            _show(done, as_json)
        return
    from conveyor import service

    result = service.approve(
        ref,
        environment=env,
        comment=comment,
        key=key,
        config_path=config,
        options=registry_options(insecure_registry),
    )
    _show(result.to_dict(), as_json)


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
    server = remote.client()
    if server is not None:
        with server:
            report = server.audit_verify(checkpoint, full=full)
    else:
        from conveyor import service

        done = service.audit_verify(config_path=config, checkpoint=checkpoint, full=full)
        report = {
            "ok": done.ok,
            "size": done.size,
            "root": done.root.hex(),
            "first_bad_index": done.first_bad_index,
            "problems": list(done.problems),
            "checked_signatures": done.checked_signatures,
            "incremental": done.incremental,
            "checked_from": done.checked_from,
            "replays": list(done.replays),
        }
    if as_json:
        render.as_json(report)
    elif report["ok"]:
        render.line(f"ledger ok: {report['size']} entries, root {report['root']}")
    else:
        bad = report.get("first_bad_index")
        where = f" (first bad entry #{bad})" if bad is not None else ""
        render.line(f"ledger FAILED verification{where}")
        for problem in report["problems"]:
            render.info(f"  {problem}")
    if not report["ok"]:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Also write it to FILE.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Emit a signed checkpoint (size, root, time): keep it outside the database."""
    server = remote.client()
    if server is not None:
        with server:
            text = str(server.audit_checkpoint()["text"])
        if out is not None:
            out.write_text(text)
    else:
        from conveyor import service

        text = service.audit_checkpoint(config_path=config, out=out).to_text()
    render.line(text.rstrip("\n"))


@app.command()
def attestations(
    ref: RefArgument,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    insecure_registry: Insecure = None,
) -> None:
    """List the attestations attached to REF's digest and whether each verifies."""
    server = remote.client()
    if server is not None:
        with server:
            listed = server.attestations(ref)
    else:
        from conveyor import service

        listed = service.list_attestations(
            ref, config_path=config, options=registry_options(insecure_registry)
        ).to_dict()
    found = listed["attestations"]
    if as_json:
        render.as_json(listed)
    else:
        render.line(f"{listed['reference']}: {len(found)} attestation(s)")
        for item in found:
            state = "verified" if item["verified"] else "NOT VERIFIED"
            ledger = "in ledger" if item["in_ledger"] else "not in ledger"
            signer = f" by {item['signer']}" if item.get("signer") else ""
            signer += f" via {item['via']}" if item.get("via") else ""
            problem = f": {item['problem']}" if item.get("problem") else ""
            render.line(
                f"  {render.short_digest(item['manifest_digest'])} "
                f"{item.get('predicate_type') or '?'} {state}{signer}, {ledger}{problem}"
            )
    if not all(item["verified"] for item in found):
        raise typer.Exit(1)
