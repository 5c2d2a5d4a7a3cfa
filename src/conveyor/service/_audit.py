"""Audit the ledger: signed checkpoints, and verifying every entry and the head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.errors import ConfigError
from conveyor.policy.roles import Role
from conveyor.service._workspace import Workspace, workspace_for

if TYPE_CHECKING:
    from conveyor.attest import Signer, Verifier
    from conveyor.ledger import AuditReport, Checkpoint


def _ledger_signer(workspace: Workspace) -> Signer:
    from conveyor.attest import load_signing_key

    spec = workspace.config.model.ledger.key
    if not spec:
        raise ConfigError(
            f"{workspace.config.path}: ledger.key is not set; cannot sign checkpoints"
        )
    return load_signing_key(
        str(workspace.config.resolve_path(spec)), password=workspace.settings.key_password
    )


def _checkpoint_verifiers(workspace: Workspace) -> dict[str, Verifier]:
    from conveyor.attest import Verifier

    verifiers: dict[str, Verifier] = {}
    ledger = workspace.config.model.ledger
    if ledger.public_key:
        verifier = Verifier.from_pem(workspace.config.resolve_path(ledger.public_key))
        verifiers[verifier.keyid] = verifier
    elif ledger.key:
        verifier = _ledger_signer(workspace).verifier()
        verifiers[verifier.keyid] = verifier
    return verifiers


def audit_checkpoint(
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    out: str | Path | None = None,
) -> Checkpoint:
    """Sign the ledger's current head with ``ledger.key``; ``out`` also writes it there."""
    with workspace_for(workspace, config_path) as ws:
        checkpoint = ws.ledger.checkpoint(_ledger_signer(ws))
    if out is not None:
        Path(out).write_text(checkpoint.to_text())
    return checkpoint


# A checkpoint is a few lines of text; anything larger is not one.
MAX_CHECKPOINT_BYTES = 64 * 1024


def audit_verify(
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    checkpoint: str | Path | None = None,
    full: bool = False,
) -> AuditReport:
    """Every entry's hash and signature, the head, and (given) an external checkpoint.

    With a trusted ``checkpoint`` only the entries after it are verified (its consistency
    proof is checked) unless ``full``. The checkpoint file is read with ``read_bounded``: a
    FIFO, a device or an oversized file is refused at once (exit 2)."""
    from conveyor.files import read_bounded
    from conveyor.ledger import parse_checkpoint, verify_ledger
    from conveyor.signed_facts import EnvelopeFacts

    external = None
    if checkpoint is not None:
        text = read_bounded(checkpoint, max_bytes=MAX_CHECKPOINT_BYTES)
        external = parse_checkpoint(text)
    with workspace_for(workspace, config_path) as ws:
        # Every key, retired ones too: _retired_keys then judges what a retired key signed.
        facts = EnvelopeFacts.from_verifiers(
            [(key.identity.name, key.verifier) for key in ws.trusted.values()],
            servers=[
                key.identity.name
                for key in ws.trusted.values()
                if Role.SERVER in key.identity.roles
            ],
        )
        report = verify_ledger(
            ws.ledger,
            verify_envelope=facts,
            checkpoint=external,
            checkpoint_verifiers=_checkpoint_verifiers(ws),
            incremental=external is not None and not full,
        )
        return _retired_keys(ws, report)


def _retired_keys(workspace: Workspace, report: AuditReport) -> AuditReport:
    """Issue 9 #7: an entry signed with a retired key passes only when it was recorded (and
    says it was signed) before the retirement."""
    from dataclasses import replace

    from conveyor.attest import decode_envelope, parse_statement
    from conveyor.errors import ConveyorError

    retired = {k for k, t in workspace.trusted.items() if t.retired is not None}
    if not retired:
        return report
    problems: list[tuple[int, str]] = []
    # An incremental audit trusts the entries its checkpoint covers: judge only the new ones.
    start = report.checked_from if report.incremental else 0
    for entry in workspace.ledger.entries(start=start):
        try:
            decoded = decode_envelope(entry.envelope)
            keyids = [hint for hint, _ in decoded.signatures if hint in workspace.trusted]
            if not keyids or not set(keyids) <= retired:
                continue  # a current key signed it too (or no trusted key: reported already)
            predicate = parse_statement(decoded.payload).predicate
        except ConveyorError:
            continue  # an unreadable envelope is reported by the audit itself
        problem = workspace.retirement_problem(
            keyids[0], recorded=entry.recorded_time, predicate=predicate
        )
        if problem is not None:
            problems.append((entry.index, f"entry {entry.index}: {problem}"))
    if not problems:
        return report
    first = min(index for index, _ in problems)
    if report.first_bad_index is not None:
        first = min(first, report.first_bad_index)
    return replace(
        report,
        ok=False,
        first_bad_index=first,
        problems=[*report.problems, *(text for _, text in problems)],
    )
