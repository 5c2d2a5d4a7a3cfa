"""Read-only views over what happened, all through the verified reader: status, history,
trace, and the attestations attached to an image."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from conveyor.errors import ConveyorError, VerificationError
from conveyor.oci.digest import Digest
from conveyor.oci.name import parse_target
from conveyor.policy.model import GateResult
from conveyor.policy.roles import EvidenceKind
from conveyor.service._decide import decide
from conveyor.service._evidence import HistoryItem, VerifiedEntry, VerifiedLedger
from conveyor.service._principal import count_as, via_of
from conveyor.service._repair import describe_apart
from conveyor.service._repositories import RegistryOptions
from conveyor.service._subject import resolve_subject
from conveyor.service._workspace import Workspace, workspace_for

# --- history and status ---------------------------------------------------------------------


def history(
    environment: str,
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
) -> list[HistoryItem]:
    """Every verified arrival in ``environment``, newest first, with its commit."""
    with workspace_for(workspace, config_path) as ws:
        ws.config.require_environment(environment)
        verified = VerifiedLedger(ws)
        items = verified.promotions(environment)
        commits = verified.commits(i.digest for i in items)
    return [replace(i, commit=commits.get(i.digest)) for i in reversed(items)]


@dataclass(frozen=True)
class EnvironmentStatus:
    environment: str
    repository: str
    current: HistoryItem | None
    candidate: str | None  # digest waiting to enter
    candidate_gates: tuple[GateResult, ...] = ()  # the candidate's failing gates
    note: str | None = None
    as_of: datetime | None = None  # when the status was taken (ages are measured to it)
    tags_apart: tuple[str, ...] = ()  # tags not naming what the ledger recorded (_repair)

    @property
    def candidate_failing(self) -> tuple[str, ...]:
        """The candidate's failing gates as the CLI says them: ``gate: reason``."""
        return tuple(f"{g.gate}: {g.reason}" for g in self.candidate_gates)

    @property
    def current_image(self) -> str | None:
        return f"{self.repository}@{self.current.digest}" if self.current else None

    @property
    def current_age_seconds(self) -> int | None:
        if self.current is None:
            return None
        as_of = self.as_of or datetime.now(UTC)
        return int((as_of - self.current.time).total_seconds())

    @property
    def current_age(self) -> str | None:
        """How long the current digest has been there, for people: ``45m``, ``3d4h``."""
        from datetime import timedelta

        from conveyor.policy.duration import format_duration

        seconds = self.current_age_seconds
        return format_duration(timedelta(seconds=seconds)) if seconds is not None else None

    def to_dict(self) -> dict[str, Any]:
        current = self.current.to_dict() if self.current else None
        if current is not None:
            current["age_seconds"] = self.current_age_seconds
            current["age"] = self.current_age  # for people: "45m", "3d4h"
            current["image"] = self.current_image
        return {
            "environment": self.environment,
            "repository": self.repository,
            "current": current,
            "candidate": self.candidate,
            "candidate_failing": list(self.candidate_failing),
            "tags_apart": list(self.tags_apart),
            "note": self.note,
        }


def status(
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> list[EnvironmentStatus]:
    """Each environment: what runs there now, and the candidate waiting with its failing gates."""
    from conveyor.policy.engine import environment_order

    result: list[EnvironmentStatus] = []
    as_of = datetime.now(UTC)
    with workspace_for(workspace, config_path, options) as ws:
        verified = VerifiedLedger(ws)
        model = ws.config.model
        currents: dict[str, HistoryItem | None] = {}
        for name in environment_order(model):
            # Newest first: status costs what the answer needs, not the ledger's size.
            current = verified.current_arrival(name)
            currents[name] = current
            after = model.environment(name).after_environment
            candidate: str | None
            source_name: str | None
            if after is not None:
                upstream = currents.get(after)
                candidate = upstream.digest if upstream else None
                source_name = ws.environment_target(after).name  # as promotion_source says
            else:
                latest = verified.latest(kind=EvidenceKind.BUILD)
                candidate = latest.entry.subject_digest if latest else None
                source_name = latest.entry.subject_name if latest else None
            if current is not None:
                commit = verified.commits([current.digest]).get(current.digest)
                current = replace(current, commit=commit)
            failing: tuple[GateResult, ...] = ()
            note = None
            if candidate is not None and current is not None and candidate == current.digest:
                candidate = None
            if candidate is not None and source_name is not None:
                failing, note = _failing_gates(ws, verified, f"{source_name}@{candidate}", name)
            result.append(
                EnvironmentStatus(
                    name,
                    ws.environment_target(name).name,
                    current,
                    candidate,
                    failing,
                    note,
                    as_of,
                    tuple(
                        describe_apart(
                            ws,
                            name,
                            Digest.parse(current.digest) if current else None,
                            current.index if current else None,
                        )
                    ),
                )
            )
    return result


def promotion_source(
    workspace: Workspace, environment: str, *, runs_in: Collection[str], built_as: str
) -> str:
    """The repository a promotion to ``environment`` copies a digest from: the environment it
    comes after when the digest runs there (``runs_in``), else the image as built."""
    after = workspace.config.model.environment(environment).after_environment
    if after is not None and after in runs_in:
        return workspace.environment_target(after).name
    return built_as


def _failing_gates(
    workspace: Workspace, verified: VerifiedLedger, reference: str, environment: str
) -> tuple[tuple[GateResult, ...], str | None]:
    try:
        subject = resolve_subject(reference, workspace.opener, inspect=True)
        decision = decide(workspace, verified, subject, environment=environment, promoter=None)
    except ConveyorError as exc:
        return (), f"could not evaluate the candidate: {exc}"
    return tuple(decision.failed), None


# --- trace --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceEvent:
    index: int
    recorded_at: datetime
    kind: str
    digest: str
    subject: str
    environment: str | None
    signer: str | None
    verified: bool
    summary: str
    via: str | None = None  # server-signed: "API token alice-laptop (signed by server)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger_index": self.index,
            "recorded_at": self.recorded_at.isoformat(),
            "kind": self.kind,
            "digest": self.digest,
            "subject": self.subject,
            "environment": self.environment,
            "signer": self.signer,
            "via": self.via,
            "verified": self.verified,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Trace:
    query: str
    digests: tuple[str, ...]
    events: tuple[TraceEvent, ...]

    @property
    def ok(self) -> bool:
        """Something was found in the ledger."""
        return bool(self.digests)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "digests": list(self.digests),
            "events": [e.to_dict() for e in self.events],
        }


def trace(
    query: str,
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Trace:
    """The chain of custody of a digest (REF) or of everything built from a commit."""
    with workspace_for(workspace, config_path, options) as ws:
        verified = VerifiedLedger(ws)
        if _looks_like_commit(query):
            commit = query.lower()
            if len(commit) in (40, 64):  # a full commit: the commit index, not a scan
                builds = verified.rows(kind=EvidenceKind.BUILD, commit=commit)
            else:
                # the database picks the prefix's rows: not every build ever recorded
                builds = ws.ledger.entries(kind=EvidenceKind.BUILD.value, commit_prefix=commit)
            digests = list(dict.fromkeys(e.subject_digest for e in builds))
        else:
            target = parse_target(query)
            if target.digest is not None:
                digests = [str(target.digest)]
            else:
                digests = [str(resolve_subject(query, ws.opener).digest)]
        events: list[TraceEvent] = []
        for digest in digests:
            rows = verified.rows(subject_digest=digest)  # each proved into the signed tree
            checked = {e.index: verified.verify(e) for e in rows}
            counted = {
                v.entry.index
                for v in verified.first_copies([v for v in checked.values() if v is not None])
            }
            for entry in rows:
                item = checked[entry.index]
                if item is None:
                    summary = "does not count: " + _why_ignored(verified, entry.index)
                elif entry.index not in counted:
                    summary = "does not count: a replay of an earlier entry's statement"
                    item = None
                else:
                    summary = _summarise(item)
                signer, via = _who(item)
                events.append(
                    TraceEvent(
                        entry.index,
                        entry.recorded_time,
                        entry.kind,
                        entry.subject_digest,
                        entry.subject_name,
                        entry.environment,
                        signer,
                        item is not None,
                        summary,
                        via,
                    )
                )
    events.sort(key=lambda e: e.index)
    return Trace(query, tuple(digests), tuple(events))


def _why_ignored(verified: VerifiedLedger, index: int) -> str:
    prefix = f"ledger #{index} ignored: "
    for line in reversed(verified.ignored):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return "signature does not verify"


def _looks_like_commit(text: str) -> bool:
    return 7 <= len(text) <= 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _build_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_provenance

    facts = read_provenance(predicate)
    run = f", CI run {facts.run_id}" if facts.run_id else ""
    url = f" ({facts.run_url})" if facts.run_url else ""
    return f"built from commit {facts.commit}{run}{url}"


def _tests_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_test_result

    t = read_test_result(predicate)
    return f"tests {t.result}: {t.passed} passed, {t.failed} failed, {t.skipped} skipped"


def _scan_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_vulnerability_scan

    s = read_vulnerability_scan(predicate)
    counts = ", ".join(f"{k.lower()} {v}" for k, v in s.counts.items() if v)
    return f"scanned at {s.finished or '?'}: {counts or 'no findings'}"


def _smoke_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_smoke

    m = read_smoke(predicate)
    return f"smoke test {'passed' if m.passed else 'FAILED'} in {m.environment}"


def _approval_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_approval

    a = read_approval(predicate)
    comment = f": {a.comment}" if a.comment else ""
    return f"approved for {a.environment}{comment}"


def _promotion_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_promotion

    p = read_promotion(predicate)
    verb = "rolled back" if p.rollback else "promoted"
    glass = f" (BREAK-GLASS: {p.break_glass})" if p.break_glass else ""
    return f"{verb} to {p.to_environment} in {p.repository}{glass}"


def _break_glass_line(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_break_glass_admission

    b = read_break_glass_admission(predicate)
    return (
        f"BREAK-GLASS admission into {b.environment}: {b.workload or '?'} in namespace "
        f"{b.namespace or '?'} ({', '.join(b.containers) or 'no container'}), reason "
        f"{b.reason!r}, request {b.request_uid}; counts as no approval or promotion"
    )


def _who(item: VerifiedEntry | None) -> tuple[str | None, str | None]:
    """(signer, via) as views show them. A break-glass admission is the server's own
    statement about a Kubernetes user, who is no identity of conveyor.yaml: "kubernetes user
    X" via "admission webhook (signed by server)"."""
    if item is None:
        return None, None
    if item.kind is EvidenceKind.BREAK_GLASS:
        return _kubernetes_user(item.predicate), f"admission webhook (signed by {item.signer})"
    return item.signer, item.via


def _kubernetes_user(predicate: dict[str, Any]) -> str:
    from conveyor.attest import read_break_glass_admission

    return f"kubernetes user {read_break_glass_admission(predicate).username or '(unnamed)'}"


_SUMMARIES: Mapping[EvidenceKind, Callable[[dict[str, Any]], str]] = {
    EvidenceKind.BUILD: _build_line,
    EvidenceKind.TESTS: _tests_line,
    EvidenceKind.SCAN: _scan_line,
    EvidenceKind.SMOKE: _smoke_line,
    EvidenceKind.APPROVAL: _approval_line,
    EvidenceKind.PROMOTION: _promotion_line,
    EvidenceKind.ROLLBACK: _promotion_line,
    EvidenceKind.BREAK_GLASS: _break_glass_line,
}


def _summarise(item: VerifiedEntry) -> str:
    kind = item.kind
    return _SUMMARIES[kind](item.predicate) if kind is not None else item.entry.kind


# --- attestations attached to an image ----------------------------------------------------


@dataclass(frozen=True)
class AttachedAttestation:
    manifest_digest: Digest
    predicate_type: str | None
    envelope_digest: Digest | None
    verified: bool
    signer: str | None
    in_ledger: bool
    problem: str | None = None
    via: str | None = None  # server-signed: "API token alice-laptop (signed by server)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_digest": str(self.manifest_digest),
            "predicate_type": self.predicate_type,
            "envelope_digest": str(self.envelope_digest) if self.envelope_digest else None,
            "verified": self.verified,
            "signer": self.signer,
            "via": self.via,
            "in_ledger": self.in_ledger,
            "problem": self.problem,
        }


class Attestations(NamedTuple):
    """What ``list_attestations`` found (unpacks as ``name, digest, found``)."""

    name: str
    digest: Digest
    found: list[AttachedAttestation]

    @property
    def ok(self) -> bool:
        """Every attestation attached verifies."""
        return all(item.verified for item in self.found)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": f"{self.name}@{self.digest}",
            "attestations": [item.to_dict() for item in self.found],
        }


def list_attestations(
    reference: str,
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Attestations:
    """Referrers of the digest REF names, each checked: signature, subject, ledger entry."""
    from conveyor.attest import BREAK_GLASS_ADMISSION_V1, open_attestation
    from conveyor.oci.manifest import parse_manifest
    from conveyor.oci.referrers import PREDICATE_TYPE_ANNOTATION, dsse_layer, list_referrers

    found: list[AttachedAttestation] = []
    with workspace_for(workspace, config_path, options) as ws:
        subject = resolve_subject(reference, ws.opener)
        digest = subject.digest
        in_ledger = {
            entry.envelope_sha256 for entry in ws.ledger.entries(subject_digest=str(digest))
        }
        for descriptor in list_referrers(subject.repository, digest):
            raw = subject.repository.get_manifest(descriptor.digest)
            layer = dsse_layer(parse_manifest(raw.data, content_type=raw.media_type))
            if layer is None:
                found.append(
                    AttachedAttestation(
                        raw.digest,
                        descriptor.artifact_type,
                        None,
                        False,
                        None,
                        False,
                        "not a DSSE attestation",
                    )
                )
                continue
            with subject.repository.open_blob(layer.digest, size=layer.size) as chunks:
                envelope = b"".join(chunks)
            listed = layer.digest.encoded in in_ledger
            try:
                opened = open_attestation(envelope, ws.verifiers(), digest=digest)
            except VerificationError as exc:
                found.append(
                    AttachedAttestation(
                        raw.digest,
                        layer.annotations.get(PREDICATE_TYPE_ANNOTATION),
                        layer.digest,
                        False,
                        None,
                        listed,
                        str(exc),
                    )
                )
                continue
            counted = count_as(
                opened.statement.predicate,
                ws.identity_of(opened.signer_keyids[0]),
                ws.config.identities,
            )
            signer = counted.identity.name if not isinstance(counted, str) else None
            via = via_of(counted) if not isinstance(counted, str) else None
            if signer is not None and opened.statement.predicate_type == BREAK_GLASS_ADMISSION_V1:
                signer, via = (
                    _kubernetes_user(dict(opened.statement.predicate)),
                    f"admission webhook (signed by {signer})",
                )
            found.append(
                AttachedAttestation(
                    raw.digest,
                    opened.statement.predicate_type,
                    layer.digest,
                    not isinstance(counted, str),
                    signer,
                    listed,
                    counted if isinstance(counted, str) else None,
                    via,
                )
            )
        return Attestations(subject.name, digest, found)
