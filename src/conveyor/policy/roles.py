"""Roles, kinds of evidence, and the one table of which role may sign which kind.

Nine roles are built in and keep their meaning (``reader``, ``admin``, ``server`` and
``drift`` act on ``conveyor serve`` and sign no evidence, except that ``server`` signs, as
itself, the break-glass admissions of its admission webhook); a ``conveyor.yaml`` may declare
more under ``roles:`` (same grammar as identity names) for ``approvals`` gates and
``break_glass`` to name. An identity may also be limited to some environments: it signs
environment-bound kinds (``ENVIRONMENT_KINDS``) only for those (``may_act_in``). Record time
(``conveyor.service`` signing), the server's authorisation and read time (the verified ledger
reader and the gates) ask this table, so a kind is trusted exactly when it could be recorded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum


class Role(StrEnum):
    BUILDER = "builder"
    TESTER = "tester"
    SCANNER = "scanner"
    APPROVER = "approver"
    DEPLOYER = "deployer"
    READER = "reader"  # reads only (every identity may read)
    ADMIN = "admin"  # API tokens and config reload on the server
    SERVER = "server"  # the key conveyor serve signs with, on behalf of a principal
    DRIFT = "drift"  # reports what runs (POST /api/v1/environments/{env}/drift); no evidence


class EvidenceKind(StrEnum):
    """What a ledger entry records (the ledger's ``kind`` column)."""

    BUILD = "build"
    TESTS = "tests"
    SCAN = "scan"
    SMOKE = "smoke"
    APPROVAL = "approval"
    PROMOTION = "promotion"
    ROLLBACK = "rollback"
    BREAK_GLASS = "break-glass"  # a workload admitted by break-glass; counts for nothing


# Who may sign each kind. Approvals: the role the environment's approvals gate (or its
# break-glass) names; ``approver`` when none names one (see ``signer_roles``).
SIGNER_ROLE: Mapping[EvidenceKind, Role] = {
    EvidenceKind.BUILD: Role.BUILDER,
    EvidenceKind.TESTS: Role.TESTER,
    EvidenceKind.SCAN: Role.SCANNER,
    EvidenceKind.SMOKE: Role.TESTER,
    EvidenceKind.APPROVAL: Role.APPROVER,
    EvidenceKind.PROMOTION: Role.DEPLOYER,
    EvidenceKind.ROLLBACK: Role.DEPLOYER,
    EvidenceKind.BREAK_GLASS: Role.SERVER,  # the webhook signs as itself, naming the k8s user
}

PROMOTION_KINDS = (EvidenceKind.PROMOTION, EvidenceKind.ROLLBACK)

# Kinds signed for one environment: an identity limited to some environments
# (conveyor.yaml ``identities.NAME.environments``) may sign them only for those.
ENVIRONMENT_KINDS = frozenset(
    {EvidenceKind.SMOKE, EvidenceKind.APPROVAL, EvidenceKind.PROMOTION, EvidenceKind.ROLLBACK}
)


def signer_roles(kind: EvidenceKind, *, approval_roles: Iterable[str] = ()) -> frozenset[str]:
    """The roles any one of which may sign ``kind``. ``approval_roles``: what the approvals
    requirements and break-glass of the approval's environment name (empty: ``approver``)."""
    if kind is EvidenceKind.APPROVAL:
        named = frozenset(approval_roles)
        return named or frozenset({Role.APPROVER.value})
    return frozenset({SIGNER_ROLE[kind].value})


def may_act_in(environment: str | None, environments: Collection[str] | None) -> bool:
    """Whether an identity limited to ``environments`` (None: not limited) may sign
    environment-bound evidence (``ENVIRONMENT_KINDS``) for ``environment``; a statement that
    names no environment counts only for an identity that is not limited."""
    if environments is None:
        return True
    return environment is not None and environment in environments


def kind_of(text: str) -> EvidenceKind | None:
    """The kind a ledger column names, or None for a kind this version does not know."""
    try:
        return EvidenceKind(text)
    except ValueError:
        return None
