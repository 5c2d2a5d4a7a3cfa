"""The operations users name — the one surface the faces (CLI, server) import.

    from conveyor import service
    ref = service.resolve("registry.example/app:v1")            # image verbs: no ledger
    with service.Workspace.open("conveyor.yaml") as ws:           # or Workspace(config=…, ledger=…)
        service.record_build(str(ref), commit=SHA, workspace=ws, signer=ci_signer)
        result = service.promote(str(ref), environment="staging", workspace=ws, signer=deployer)

Every name is loaded on first use (PEP 562), so ``import conveyor.service`` pulls in none
of pydantic, SQLAlchemy, cryptography or httpx: image commands stay fast. The
implementations live in private modules (``_images``, ``_record``, ``_promote`` …) that
never import this package; nothing here but the map.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.configs.lint import (
        LintReport as LintReport,
        LintSettings as LintSettings,
    )
    from conveyor.configs.pin import (
        FileResult as FileResult,
        PinReport as PinReport,
        SiteResult as SiteResult,
    )
    from conveyor.ledger import (
        AuditReport as AuditReport,
        Checkpoint as Checkpoint,
    )
    from conveyor.oci.inspect import (
        ChildManifest as ChildManifest,
        ImageInspection as ImageInspection,
    )
    from conveyor.policy.model import (
        Decision as Decision,
        GateResult as GateResult,
    )
    from conveyor.policy.roles import (
        EvidenceKind as EvidenceKind,
        Role as Role,
        may_act_in as may_act_in,
    )
    from conveyor.registry.copy import (
        CopyProgress as CopyProgress,
        CopyResult as CopyResult,
    )
    from conveyor.service._admission import (
        BreakGlassAdmission as BreakGlassAdmission,
        BreakGlassReplayed as BreakGlassReplayed,
        BreakGlassRequest as BreakGlassRequest,
        BreakGlassTooLate as BreakGlassTooLate,
        PromotionLog as PromotionLog,
        admit_break_glass as admit_break_glass,
        require_extends as require_extends,
    )
    from conveyor.service._audit import (
        audit_checkpoint as audit_checkpoint,
        audit_verify as audit_verify,
    )
    from conveyor.service._ci import (
        CiContext as CiContext,
        ci_context as ci_context,
    )
    from conveyor.service._decide import (
        PromotionDenied as PromotionDenied,
    )
    from conveyor.service._drift import (
        DriftReport as DriftReport,
        drift as drift,
    )
    from conveyor.service._evidence import (
        HistoryItem as HistoryItem,
        VerifiedEntry as VerifiedEntry,
        VerifiedLedger as VerifiedLedger,
        evidence_for as evidence_for,
        heads_read as heads_read,
    )
    from conveyor.service._images import (
        ResolvedImage as ResolvedImage,
        copy_image as copy_image,
        create_sample_image as create_sample_image,
        inspect as inspect,
        list_tags as list_tags,
        resolve as resolve,
    )
    from conveyor.service._keys import (
        GeneratedKey as GeneratedKey,
        Initialised as Initialised,
        KeyRotation as KeyRotation,
        generate_keys as generate_keys,
        init_workspace as init_workspace,
        rotate_key as rotate_key,
    )
    from conveyor.service._lint import (
        lint as lint,
        lint_sarif as lint_sarif,
        lint_settings as lint_settings,
        promoted_digests as promoted_digests,
    )
    from conveyor.service._pin import (
        NotPromoted as NotPromoted,
        Promoted as Promoted,
        pin as pin,
        promoted_repositories as promoted_repositories,
    )
    from conveyor.service._principal import (
        Principal as Principal,
        describe_via as describe_via,
    )
    from conveyor.service._promote import (
        AttestationNotAttachedError as AttestationNotAttachedError,
        CheckResult as CheckResult,
        PromotionResult as PromotionResult,
        TagsNotMovedError as TagsNotMovedError,
        check as check,
        promote as promote,
        rollback as rollback,
    )
    from conveyor.service._record import (
        Built as Built,
        OpenedEnvelope as OpenedEnvelope,
        Presigned as Presigned,
        Recorded as Recorded,
        approve as approve,
        attest_scan as attest_scan,
        attest_smoke as attest_smoke,
        attest_tests as attest_tests,
        open_envelope as open_envelope,
        presign as presign,
        record_build as record_build,
        record_envelope as record_envelope,
    )
    from conveyor.service._repair import (
        ReferrerMissing as ReferrerMissing,
        RepairReport as RepairReport,
        TagApart as TagApart,
        TagsApartError as TagsApartError,
        repair as repair,
    )
    from conveyor.service._repositories import (
        Opener as Opener,
        RegistryOpener as RegistryOpener,
        RegistryOptions as RegistryOptions,
        open_session as open_session,
    )
    from conveyor.service._views import (
        AttachedAttestation as AttachedAttestation,
        Attestations as Attestations,
        EnvironmentStatus as EnvironmentStatus,
        Trace as Trace,
        TraceEvent as TraceEvent,
        history as history,
        list_attestations as list_attestations,
        promotion_source as promotion_source,
        status as status,
        trace as trace,
    )
    from conveyor.service._workspace import (
        Settings as Settings,
        TrustedKey as TrustedKey,
        UnknownSignerError as UnknownSignerError,
        Workspace as Workspace,
    )

__all__ = [
    "AttachedAttestation",
    "AttestationNotAttachedError",
    "Attestations",
    "AuditReport",
    "BreakGlassAdmission",
    "BreakGlassReplayed",
    "BreakGlassRequest",
    "BreakGlassTooLate",
    "Built",
    "CheckResult",
    "Checkpoint",
    "ChildManifest",
    "CiContext",
    "CopyProgress",
    "CopyResult",
    "Decision",
    "DriftReport",
    "EnvironmentStatus",
    "EvidenceKind",
    "FileResult",
    "GateResult",
    "GeneratedKey",
    "HistoryItem",
    "ImageInspection",
    "Initialised",
    "KeyRotation",
    "LintReport",
    "LintSettings",
    "NotPromoted",
    "OpenedEnvelope",
    "Opener",
    "PinReport",
    "Presigned",
    "Principal",
    "Promoted",
    "PromotionDenied",
    "PromotionLog",
    "PromotionResult",
    "Recorded",
    "ReferrerMissing",
    "RegistryOpener",
    "RegistryOptions",
    "RepairReport",
    "ResolvedImage",
    "Role",
    "Settings",
    "SiteResult",
    "TagApart",
    "TagsApartError",
    "TagsNotMovedError",
    "Trace",
    "TraceEvent",
    "TrustedKey",
    "UnknownSignerError",
    "VerifiedEntry",
    "VerifiedLedger",
    "Workspace",
    "admit_break_glass",
    "approve",
    "attest_scan",
    "attest_smoke",
    "attest_tests",
    "audit_checkpoint",
    "audit_verify",
    "check",
    "ci_context",
    "copy_image",
    "create_sample_image",
    "describe_via",
    "drift",
    "evidence_for",
    "generate_keys",
    "heads_read",
    "history",
    "init_workspace",
    "inspect",
    "lint",
    "lint_sarif",
    "lint_settings",
    "list_attestations",
    "list_tags",
    "may_act_in",
    "open_envelope",
    "open_session",
    "pin",
    "presign",
    "promote",
    "promoted_digests",
    "promoted_repositories",
    "promotion_source",
    "record_build",
    "record_envelope",
    "repair",
    "require_extends",
    "resolve",
    "rollback",
    "rotate_key",
    "status",
    "trace",
]

_LAZY: dict[str, str] = {
    "AttachedAttestation": "conveyor.service._views",
    "AttestationNotAttachedError": "conveyor.service._promote",
    "Attestations": "conveyor.service._views",
    "AuditReport": "conveyor.ledger",
    "BreakGlassAdmission": "conveyor.service._admission",
    "BreakGlassReplayed": "conveyor.service._admission",
    "BreakGlassRequest": "conveyor.service._admission",
    "BreakGlassTooLate": "conveyor.service._admission",
    "Built": "conveyor.service._record",
    "CheckResult": "conveyor.service._promote",
    "Checkpoint": "conveyor.ledger",
    "ChildManifest": "conveyor.oci.inspect",
    "CiContext": "conveyor.service._ci",
    "CopyProgress": "conveyor.registry.copy",
    "CopyResult": "conveyor.registry.copy",
    "Decision": "conveyor.policy.model",
    "DriftReport": "conveyor.service._drift",
    "EnvironmentStatus": "conveyor.service._views",
    "EvidenceKind": "conveyor.policy.roles",
    "FileResult": "conveyor.configs.pin",
    "GateResult": "conveyor.policy.model",
    "GeneratedKey": "conveyor.service._keys",
    "HistoryItem": "conveyor.service._evidence",
    "ImageInspection": "conveyor.oci.inspect",
    "Initialised": "conveyor.service._keys",
    "KeyRotation": "conveyor.service._keys",
    "LintReport": "conveyor.configs.lint",
    "LintSettings": "conveyor.configs.lint",
    "NotPromoted": "conveyor.service._pin",
    "Promoted": "conveyor.service._pin",
    "OpenedEnvelope": "conveyor.service._record",
    "Opener": "conveyor.service._repositories",
    "PinReport": "conveyor.configs.pin",
    "Principal": "conveyor.service._principal",
    "PromotionDenied": "conveyor.service._decide",
    "PromotionLog": "conveyor.service._admission",
    "PromotionResult": "conveyor.service._promote",
    "Recorded": "conveyor.service._record",
    "RegistryOpener": "conveyor.service._repositories",
    "RegistryOptions": "conveyor.service._repositories",
    "ReferrerMissing": "conveyor.service._repair",
    "RepairReport": "conveyor.service._repair",
    "ResolvedImage": "conveyor.service._images",
    "Role": "conveyor.policy.roles",
    "Settings": "conveyor.service._workspace",
    "SiteResult": "conveyor.configs.pin",
    "TagApart": "conveyor.service._repair",
    "TagsApartError": "conveyor.service._repair",
    "TagsNotMovedError": "conveyor.service._promote",
    "Trace": "conveyor.service._views",
    "TraceEvent": "conveyor.service._views",
    "TrustedKey": "conveyor.service._workspace",
    "UnknownSignerError": "conveyor.service._workspace",
    "VerifiedEntry": "conveyor.service._evidence",
    "VerifiedLedger": "conveyor.service._evidence",
    "Workspace": "conveyor.service._workspace",
    "admit_break_glass": "conveyor.service._admission",
    "approve": "conveyor.service._record",
    "attest_scan": "conveyor.service._record",
    "attest_smoke": "conveyor.service._record",
    "attest_tests": "conveyor.service._record",
    "audit_checkpoint": "conveyor.service._audit",
    "audit_verify": "conveyor.service._audit",
    "check": "conveyor.service._promote",
    "ci_context": "conveyor.service._ci",
    "copy_image": "conveyor.service._images",
    "create_sample_image": "conveyor.service._images",
    "describe_via": "conveyor.service._principal",
    "drift": "conveyor.service._drift",
    "evidence_for": "conveyor.service._evidence",
    "generate_keys": "conveyor.service._keys",
    "heads_read": "conveyor.service._evidence",
    "history": "conveyor.service._views",
    "promotion_source": "conveyor.service._views",
    "init_workspace": "conveyor.service._keys",
    "inspect": "conveyor.service._images",
    "lint": "conveyor.service._lint",
    "lint_sarif": "conveyor.service._lint",
    "lint_settings": "conveyor.service._lint",
    "list_attestations": "conveyor.service._views",
    "list_tags": "conveyor.service._images",
    "open_envelope": "conveyor.service._record",
    "open_session": "conveyor.service._repositories",
    "pin": "conveyor.service._pin",
    "promote": "conveyor.service._promote",
    "may_act_in": "conveyor.policy.roles",
    "promoted_digests": "conveyor.service._lint",
    "promoted_repositories": "conveyor.service._pin",
    "presign": "conveyor.service._record",
    "Presigned": "conveyor.service._record",
    "record_build": "conveyor.service._record",
    "record_envelope": "conveyor.service._record",
    "repair": "conveyor.service._repair",
    "require_extends": "conveyor.service._admission",
    "resolve": "conveyor.service._images",
    "rollback": "conveyor.service._promote",
    "rotate_key": "conveyor.service._keys",
    "status": "conveyor.service._views",
    "trace": "conveyor.service._views",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor.service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
