"""UNTIL THE INJECTABLE WORKSPACE LANDS (H1, issue 8): the one adapter between the server and
today's operations. Delete this module when ``conveyor.service`` verbs take ``signer=`` and
``principal=`` and the verified reader applies the principal rule (see
/work/coord/server-trust.md); every caller is in ``conveyor.server.api``.

Today's verbs load their signer from ``key=`` and decide the acting identity from the
signer's keyid, and the verified reader knows nothing of server-signed statements. So that
the server can sign on behalf of a principal *now*, without a second copy of any business
rule, ``install()`` puts process-wide hooks on today's modules. While a request is acting
(``acting(...)``, a context variable: safe across the server's worker threads):

- ``custody.load_signer`` / ``promotion.load_signer`` return the server's signer;
- ``custody.Workspace.require_role`` and ``promotion._promoter`` answer with the principal's
  identity (role check, ledger ``signer`` column, the promoter of a decision), never the
  server's;
- ``attest.make_statement`` adds the ``PRINCIPAL_V1`` field to the predicate before signing.

Always, in the server process (a copy of today's code with one change each):

- ``custody.open_workspace`` / ``promotion.open_workspace`` skip identities without a key,
  and parse conveyor.yaml again only when the file changed;
- ``promotion.VerifiedLedger._verify`` / ``claim`` decide whom an entry counts for with the
  principal rule (``_count_as``, ``_principal_rule``), exactly as docs/server.md states it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from conveyor.server.principal import PRINCIPAL_V1, Principal


@dataclass(frozen=True)
class _Acting:
    principal: Principal
    signer: Any  # conveyor.attest.Signer of the server


@dataclass(frozen=True)
class Presigned:
    """A client-signed envelope, verified against conveyor.yaml's keys, and what it says."""

    envelope: bytes
    payload: bytes
    statement: Any  # conveyor.attest.Statement
    keyid: str
    signer: str  # the identity whose key signed it
    kind: str
    environment: str | None
    commit: str | None
    run_id: str | None


@dataclass(frozen=True)
class _Submitting:
    presigned: Presigned

    @property
    def keyid(self) -> str:  # stands in for a Signer in today's role check
        return self.presigned.keyid


_ACTING: ContextVar[_Acting | None] = ContextVar("conveyor_server_acting", default=None)
_SUBMITTING: ContextVar[_Submitting | None] = ContextVar("conveyor_server_presigned", default=None)
ACTING_KEY = "(conveyor serve: the server's signing key)"  # passed as key= while acting
SUBMIT_KEY = "(conveyor serve: a pre-signed envelope)"  # passed as key= while submitting
_installed = threading.Lock()
_done = False


@contextmanager
def acting(principal: Principal, signer: Any) -> Iterator[str]:
    """Within the block, today's verbs sign with ``signer`` for ``principal``; yields the
    ``key=`` value to pass them."""
    token = _ACTING.set(_Acting(principal, signer))
    try:
        yield ACTING_KEY
    finally:
        _ACTING.reset(token)


def install() -> None:
    """Install the hooks once per process (idempotent)."""
    global _done
    with _installed:
        if _done:
            return
        _install()
        _done = True


def _install() -> None:
    import conveyor.attest as attest
    from conveyor import custody, promotion
    from conveyor.custody import UnknownSignerError

    original_load_signer = custody.load_signer

    def load_signer(key: str | None) -> Any:
        now = _ACTING.get()
        if now is not None and key == ACTING_KEY:
            return now.signer
        submitting = _SUBMITTING.get()
        if submitting is not None and key == SUBMIT_KEY:
            return submitting
        return original_load_signer(key)

    custody.load_signer = load_signer
    promotion.load_signer = load_signer  # type: ignore[attr-defined]

    original_require_role = custody.Workspace.require_role

    def require_role(self: Any, keyid: str, role: Any, what: str) -> Any:
        now = _ACTING.get()
        if now is None or keyid != now.signer.keyid:
            return original_require_role(self, keyid, role, what)
        identity = self.config.identities.get(now.principal.identity)
        if identity is None:
            raise UnknownSignerError(
                f"identity {now.principal.identity!r} is no longer in {self.config.path}"
            )
        if role not in identity.roles:
            held = ", ".join(sorted(identity.roles)) or "none"
            raise UnknownSignerError(
                f"identity {identity.name!r} may not record {what}: it needs the role "
                f"{str(role)!r} (it has: {held})"
            )
        return identity

    custody.Workspace.require_role = require_role  # type: ignore[method-assign]

    original_promoter = promotion._promoter

    def promoter(workspace: Any, keyid: str | None) -> tuple[str, frozenset[str]]:
        now = _ACTING.get()
        if now is not None and keyid == now.signer.keyid:
            identity = workspace.config.identities.get(now.principal.identity)
            if identity is not None:
                return identity.name, frozenset(str(role) for role in identity.roles)
        return original_promoter(workspace, keyid)

    promotion._promoter = promoter

    original_make_statement = attest.make_statement

    def make_statement(
        subject_name: str, digest: Any, predicate_type: str, predicate: Mapping[str, Any]
    ) -> bytes:
        submitting = _SUBMITTING.get()
        if submitting is not None:
            return submitting.presigned.payload  # the client's statement, byte for byte
        now = _ACTING.get()
        if now is not None:
            predicate = {**predicate, PRINCIPAL_V1: now.principal.statement_field()}
        return original_make_statement(subject_name, digest, predicate_type, predicate)

    attest.make_statement = make_statement

    original_sign_envelope = attest.sign_envelope

    def sign_envelope(payload: bytes, payload_type: str, signers: Any) -> bytes:
        submitting = _SUBMITTING.get()
        if submitting is not None:
            return submitting.presigned.envelope  # verified again before it is stored
        return original_sign_envelope(payload, payload_type, signers)

    attest.sign_envelope = sign_envelope

    _install_workspace(custody, promotion)
    _install_reader(promotion)


_CONFIGS: dict[Any, tuple[tuple[int, int], Any]] = {}
_CONFIGS_LOCK = threading.Lock()


def forget_configs() -> None:
    """``POST /api/v1/admin/reload``: parse conveyor.yaml again on the next operation, even
    if the file's time and size did not change."""
    with _CONFIGS_LOCK:
        _CONFIGS.clear()


def _install_workspace(custody: Any, promotion: Any) -> None:
    """Today's ``open_workspace``, except that identities without a key (they act only
    through the server) are skipped instead of failing every operation."""
    from conveyor.attest import Verifier
    from conveyor.errors import ConfigError, ConveyorError
    from conveyor.ledger import open_ledger
    from conveyor.policy.config import find_config, load_config

    cache = _CONFIGS
    lock = _CONFIGS_LOCK

    def load(config_path: Any) -> Any:
        # Parsing conveyor.yaml costs ~6 ms of CPU: read it again only when it changed.
        path = find_config(config_path)
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with lock:
            found = cache.get(path)
            if found is not None and found[0] == stamp:
                return found[1]
        config = load_config(path)
        with lock:
            cache[path] = (stamp, config)
        return config

    @contextmanager
    def open_workspace(config_path: Any = None) -> Iterator[Any]:
        config = load(config_path)
        trusted: dict[str, Any] = {}
        problems: list[str] = []
        for identity in config.identities.values():
            if identity.key_path is None:
                continue
            try:
                verifier = Verifier.from_pem(identity.key_path)
            except ConveyorError as exc:
                problems.append(f"identities.{identity.name}.key: {exc}")
                continue
            other = trusted.get(verifier.keyid)
            if other is not None:
                problems.append(
                    f"identities.{identity.name}.key: the same key as identity "
                    f"{other[0].name!r}; one key, one identity"
                )
                continue
            trusted[verifier.keyid] = (identity, verifier)
        if problems:
            raise ConfigError(f"{config.path}: {problems[0]}", problems)
        ledger = open_ledger(config.ledger_url)
        try:
            yield custody.Workspace(config=config, ledger=ledger, trusted=trusted)
        finally:
            ledger.close()

    custody.open_workspace = open_workspace
    promotion.open_workspace = open_workspace


def _install_reader(promotion: Any) -> None:
    """The verified reader with the principal rule (docs/server.md, "the reader's rule"):
    today's ``VerifiedLedger._verify`` and ``claim``, with who-counts decided by
    ``_count_as`` instead of by the signing key alone."""
    from conveyor.attest import decode_envelope, open_attestation, parse_statement, require_subject
    from conveyor.errors import ConveyorError, InputError, VerificationError
    from conveyor.oci.digest import Digest

    verified_entry = promotion.VerifiedEntry

    def _verify(self: Any, entry: Any) -> Any:
        try:
            digest = Digest.parse(entry.subject_digest)
            opened = open_attestation(
                entry.envelope,
                self.workspace.verifiers(),
                digest=digest,
                predicate_types=[entry.predicate_type],
            )
        except (VerificationError, InputError) as exc:
            self.ignored.append(f"ledger #{entry.index} ignored: {exc}")
            return None
        signer = self.workspace.identity_of(opened.signer_keyids[0])
        counted = _count_as(self.workspace.config, entry, opened.statement.predicate, signer)
        if isinstance(counted, str):
            self.ignored.append(f"ledger #{entry.index} ignored: {counted}")
            return None
        return verified_entry(entry, opened.statement, counted[0], counted[1])

    def claim(self: Any, entry: Any) -> Any:
        try:
            decoded = decode_envelope(entry.envelope)
            hints = [hint for hint, _ in decoded.signatures if hint in self.workspace.trusted]
            statement = parse_statement(decoded.payload)
            require_subject(statement, Digest.parse(entry.subject_digest))
        except ConveyorError:
            return self.verify(entry)
        if len(hints) != 1 or statement.predicate_type != entry.predicate_type:
            return self.verify(entry)
        signer = self.workspace.identity_of(hints[0])
        counted = _count_as(self.workspace.config, entry, statement.predicate, signer)
        if isinstance(counted, str):
            return self.verify(entry)  # names the problem in ``ignored``
        return verified_entry(entry, statement, counted[0], counted[1], trusted=False)

    promotion.VerifiedLedger._verify = _verify
    promotion.VerifiedLedger.claim = claim


def _count_as(
    config: Any, entry: Any, predicate: Mapping[str, Any], signer: Any
) -> tuple[str, frozenset[str]] | str:
    """Whom a verified entry counts for, with which roles; or why it is ignored."""
    from conveyor.custody import KIND_ROLES

    roles = frozenset(str(role) for role in signer.roles)
    outcome = _principal_rule(
        predicate, signer_roles=roles, signer_name=signer.name, identities=config.identities
    )
    if isinstance(outcome, str):
        return outcome
    name = signer.name
    if outcome is not None:
        name, roles = outcome
        if entry.signer != name:
            return f"recorded for {entry.signer!r} but the statement names {name!r}"
    expected = KIND_ROLES.get(entry.kind)
    if expected is not None and expected.value not in roles:
        return f"{name} lacks the role {expected.value}"
    return name, roles


def _principal_rule(
    predicate: Mapping[str, Any],
    *,
    signer_roles: frozenset[str],
    signer_name: str,
    identities: Mapping[str, Any],
) -> tuple[str, frozenset[str]] | str | None:
    """Apply the rule to one verified statement signed by ``signer_name``.

    Returns None (count it as its signer, today's rule), ``(identity, roles)`` (count it as
    that principal with its roles from conveyor.yaml), or a reason to ignore the entry.
    """
    field = predicate.get(PRINCIPAL_V1)
    is_server = "server" in signer_roles
    if field is None:
        return None  # a server without a principal holds only 'server': it counts for nothing
    if not is_server:
        return f"names a principal but {signer_name} is not a server identity"
    name = field.get("identity") if isinstance(field, dict) else None
    if not isinstance(name, str) or not name:
        return "a server-signed statement without a principal identity"
    identity = identities.get(name)
    if identity is None:
        return f"names the principal {name!r}, which is not an identity in conveyor.yaml"
    roles = frozenset(str(role) for role in identity.roles)
    if name == signer_name or "server" in roles:
        return f"names the server identity {name!r} as its principal"
    return name, roles


# --- pre-signed envelopes (today's key flow, through the server) ------------------------------

PRESIGNED_KINDS = {
    "https://slsa.dev/provenance/v1": "build",
    "https://in-toto.io/attestation/test-result/v0.1": "tests",
    "https://in-toto.io/attestation/vulns/v0.2": "scan",
    "https://conveyor.dev/attestation/smoke/v1": "smoke",
    "https://conveyor.dev/attestation/approval/v1": "approval",
}


def open_presigned(envelope: bytes, config: Any) -> Presigned:
    """Verify a client-signed envelope against the keys of conveyor.yaml, as the CLI verifies
    its own records, and read what the ledger row needs from the verified statement."""
    from conveyor.attest import (
        Verifier,
        parse_statement,
        read_approval,
        read_provenance,
        read_smoke,
        verify_envelope,
    )
    from conveyor.errors import ConveyorError, InputError

    trusted: dict[str, tuple[str, Any]] = {}
    for identity in config.identities.values():
        if identity.key_path is None:
            continue
        try:
            verifier = Verifier.from_pem(identity.key_path)
        except ConveyorError:
            continue
        trusted[verifier.keyid] = (identity.name, verifier)
    verified = verify_envelope(envelope, [v for _, v in trusted.values()])
    statement = parse_statement(verified.payload)
    kind = PRESIGNED_KINDS.get(statement.predicate_type)
    if kind is None:
        raise InputError(
            f"the server records {', '.join(sorted(set(PRESIGNED_KINDS.values())))} envelopes; "
            f"not {statement.predicate_type[:200]!r} (promotions: POST /api/v1/promotions)"
        )
    if PRINCIPAL_V1 in statement.predicate:
        raise InputError("a client-signed statement cannot name a principal; sign your own")
    keyid = verified.signer_keyids[0]
    environment = commit = run_id = None
    if kind == "approval":
        environment = read_approval(statement.predicate).environment
    elif kind == "smoke":
        environment = read_smoke(statement.predicate).environment
    elif kind == "build":
        facts = read_provenance(statement.predicate)
        commit, run_id = facts.commit, facts.run_id
        if not commit:
            raise InputError("the build statement names no commit")
    return Presigned(
        envelope, verified.payload, statement, keyid, trusted[keyid][0], kind, environment,
        commit.lower() if commit else None, run_id,
    )  # fmt: skip


def record_presigned(
    reference: str, presigned: Presigned, *, config_path: Any, options: Any
) -> Any:
    """Record a verified pre-signed envelope through today's one recording path
    (``custody._record``): resolve REF once, check the subject, the labels of a build and
    the signer's role, attach the envelope to the artifact, append it to the ledger."""
    from conveyor import custody
    from conveyor.attest import require_subject

    def predicate(subject: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        require_subject(presigned.statement, subject.top.digest)
        if presigned.kind == "build" and presigned.commit:
            labels = subject.inspection.labels if subject.inspection else {}
            custody.check_labels_agree(labels, commit=presigned.commit, run_id=presigned.run_id)
        return dict(presigned.statement.predicate), {"pre_signed": True}

    token = _SUBMITTING.set(_Submitting(presigned))
    try:
        return custody._record(
            reference,
            kind=presigned.kind,
            predicate_type=presigned.statement.predicate_type,
            build_predicate=predicate,
            key=SUBMIT_KEY,
            config_path=config_path,
            options=options,
            inspect=presigned.kind in ("build", "scan"),
            environment=presigned.environment,
            commit=presigned.commit,
        )
    finally:
        _SUBMITTING.reset(token)
