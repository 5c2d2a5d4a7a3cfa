"""The answers of ``/api/v1``, typed for the OpenAPI document (``response_model``).

Each model describes a document the operations already produce (``to_dict()``, the CLI's
``--json``), field for field and in the same order, so validating an answer against it
changes no byte of it. ``extra="forbid"``: a field added to a ``to_dict()`` without its
model fails the request in the tests (a 500 ``ResponseValidationError``) instead of being
dropped silently or published undescribed. Free-form parts (a recorded summary, copy
statistics) stay ``dict``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- who am I ----------------------------------------------------------------------------------


class WhoAmI(_Answer):
    identity: str
    roles: list[str]
    authenticated: dict[str, Any] = Field(
        description="how the request proved it: method and the token's name (never a secret)"
    )


# --- images ------------------------------------------------------------------------------------


class Resolved(_Answer):
    reference: str = Field(description="name@digest")
    name: str
    digest: str
    media_type: str


class ChildManifest(_Answer):
    digest: str
    platform: str
    size: int


class Inspection(_Answer):
    name: str
    reference: str
    digest: str
    media_type: str
    platforms: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    created: str | None
    total_size: int
    config_digest: str | None
    labels_from: str | None
    manifests: list[ChildManifest]


# --- evidence, gates, promotions ---------------------------------------------------------------


class Recorded(_Answer):
    kind: str
    reference: str
    digest: str
    signer: str = Field(description="whom the evidence counts for (the principal)")
    predicate_type: str
    ledger_index: int
    envelope_digest: str
    attached: str | None
    environment: str | None
    summary: dict[str, Any]
    notes: list[str]


class EvidenceUsed(_Answer):
    ledger_index: int
    attestation: str
    signer: str
    recorded_at: str
    signed_at: str | None


class Gate(_Answer):
    gate: str
    passed: bool
    reason: str
    evidence: list[EvidenceUsed]


class Checked(_Answer):
    reference: str
    resolved_from: str | None
    digest: str
    environment: str
    allowed: bool
    frozen: bool
    break_glass: str | None
    policy_sha256: str
    gates: list[Gate]
    ignored: list[str]


class Promotion(_Answer):
    environment: str
    image: str
    repository: str
    digest: str
    source: str
    resolved_from: str | None
    recorded: bool = Field(description="false: it was there already, nothing new recorded")
    rollback: bool
    ledger_index: int | None
    tags: list[str]
    break_glass: str | None
    policy_sha256: str
    gates: list[Gate]
    copy_: dict[str, Any] | None = Field(
        alias="copy", serialization_alias="copy", description="what placing it copied"
    )
    referrers_carried: int
    ignored: list[str]
    repaired: list[str]

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


# --- views -------------------------------------------------------------------------------------


class Arrival(_Answer):
    """One arrival of a digest in an environment (a promotion or a rollback)."""

    ledger_index: int
    digest: str
    recorded_at: str
    promoted_at: str
    promoted_by: str
    rollback: bool
    break_glass: str | None
    commit: str | None


class Current(Arrival):
    age_seconds: int | None
    age: str | None
    image: str | None


class EnvironmentStatus(_Answer):
    environment: str
    repository: str
    current: Current | None
    candidate: str | None
    candidate_failing: list[str]
    tags_apart: list[str]
    note: str | None


class Status(_Answer):
    environments: list[EnvironmentStatus]


class History(_Answer):
    environment: str
    history: list[Arrival] = Field(description="newest first")


class PromotedDigests(_Answer):
    environment: str
    digests: list[str]
    history: list[Arrival]
    repositories: dict[str, str] = Field(
        description="repository name -> the digest that arrived there last (pin --env)"
    )
    ignored: int = Field(description="unverifiable entries the reader left out")


class TraceEvent(_Answer):
    ledger_index: int
    recorded_at: str
    kind: str
    digest: str
    subject: str
    environment: str | None
    signer: str | None
    via: str | None
    verified: bool
    summary: str


class Trace(_Answer):
    query: str
    digests: list[str]
    events: list[TraceEvent]


class AttachedAttestation(_Answer):
    manifest_digest: str
    predicate_type: str | None
    envelope_digest: str | None
    verified: bool
    signer: str | None
    via: str | None
    in_ledger: bool
    problem: str | None


class Attestations(_Answer):
    reference: str
    attestations: list[AttachedAttestation]


# --- audit -------------------------------------------------------------------------------------


class AuditReport(_Answer):
    ok: bool
    size: int
    root: str = Field(description="hex")
    first_bad_index: int | None
    problems: list[str]
    checked_signatures: int
    incremental: bool
    checked_from: int
    replays: list[int]


class SignedCheckpoint(_Answer):
    origin: str
    size: int
    root: str = Field(description="hex")
    time: str
    keyid: str
    text: str = Field(description="the checkpoint as conveyor audit checkpoint prints it")


# --- tokens and configuration ------------------------------------------------------------------


class TokenInfo(_Answer):
    name: str
    identity: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    created_by: str
    state: str = Field(description="active, expired or revoked")


class CreatedToken(_Answer):
    token: str = Field(description="shown once; only its hash is stored")
    name: str
    identity: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    created_by: str
    state: str


class Tokens(_Answer):
    tokens: list[TokenInfo]


class Reloaded(_Answer):
    config: str
    identities: list[str]


# --- drift (issue 15) ----------------------------------------------------------------------------


class RunningContainer(_Answer):
    source: str = Field(description="kubernetes, docker or compose")
    namespace: str | None = Field(description="the Kubernetes namespace or Compose project")
    owner: str = Field(description="the pod's or the container's name")
    container: str
    image: str
    digest: str | None = Field(description="the digest running; null: unknown")
    environment: str
    status: str = Field(description="current, previous, never (promoted) or unknown")


class DriftReport(_Answer):
    environment: str
    containers: list[RunningContainer]
    summary: dict[str, dict[str, int]] = Field(description="per environment: status -> count")
    never_promoted: int
    stored: dict[str, str] = Field(description="per environment: when its snapshot was kept")


class DriftSnapshot(_Answer):
    environment: str
    reported_at: str
    reported_by: str = Field(description="the identity that posted it")
    summary: dict[str, int] = Field(description="status -> count")
    containers: list[RunningContainer]
