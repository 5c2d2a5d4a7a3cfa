"""The workspace an operation runs in: config, ledger, trusted keys and a repository opener,
all injected; and ``Settings``, the one place environment variables and the working
directory are read.

A face builds ``Settings.from_environment()`` (the CLI) or its own ``Settings`` per request
(a server), then ``Workspace.open(...)``; tests build ``Workspace(config=…, ledger=
MemoryLedger(), opener=…)`` from fakes. Nothing below reads ``os.environ`` or the cwd.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, TypedDict

from conveyor.errors import ConfigError, ConveyorError, InputError, VerificationError
from conveyor.oci.name import Target
from conveyor.policy.config import Config, Identity, find_config, load_config
from conveyor.policy.roles import ENVIRONMENT_KINDS, EvidenceKind, may_act_in, signer_roles
from conveyor.service._ci import CiContext, ci_context
from conveyor.service._repositories import Opener, RegistryOpener, RegistryOptions

if TYPE_CHECKING:
    from conveyor.attest import Signer, Verifier
    from conveyor.ledger import Ledger
    from conveyor.service._principal import Principal

CONFIG_ENV = "CONVEYOR_CONFIG"
LEDGER_ENV = "CONVEYOR_DB"
SIGNING_KEY_ENV = "CONVEYOR_SIGNING_KEY"
KEY_PASSWORD_ENV = "CONVEYOR_KEY_PASSWORD"  # noqa: S105 - a variable name, not a secret


class UnknownSignerError(VerificationError):
    """A key that is not an identity of conveyor.yaml, or lacks the role it needs."""


_CI_PREFIXES = ("GITHUB_", "GITLAB_", "CI_")


@dataclass(frozen=True)
class Settings:
    """What the environment says, read once at the edge. Every field may also be given
    explicitly (a server: per request); empty ``Settings()`` reads nothing at all."""

    config_path: Path | None = None  # CONVEYOR_CONFIG
    cwd: Path | None = None  # where ./conveyor.yaml is looked for
    ledger_url: str | None = None  # CONVEYOR_DB: overrides the config's ledger
    signing_key: str | None = field(default=None, repr=False)  # CONVEYOR_SIGNING_KEY
    key_password: bytes | None = field(default=None, repr=False)  # CONVEYOR_KEY_PASSWORD
    insecure_registries: tuple[str, ...] = ()  # CONVEYOR_INSECURE_REGISTRIES
    ci: CiContext = field(default_factory=CiContext)  # GitHub Actions / GitLab CI defaults
    # The CI variables that say what tests ran with (test-result ``configuration``).
    ci_variables: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None
    ) -> Settings:
        import os

        env = os.environ if environ is None else environ
        config = env.get(CONFIG_ENV)
        password = env.get(KEY_PASSWORD_ENV)
        return cls(
            config_path=Path(config).expanduser() if config else None,
            cwd=cwd or Path.cwd(),
            ledger_url=env.get(LEDGER_ENV) or None,
            signing_key=env.get(SIGNING_KEY_ENV) or None,
            key_password=password.encode() if password else None,
            insecure_registries=RegistryOptions.from_environment(environ=env).insecure_registries,
            ci=ci_context(env),
            ci_variables={k: v for k, v in env.items() if k.startswith(_CI_PREFIXES)},
        )

    def config_file(self, explicit: str | Path | None = None) -> Path:
        """``explicit`` (``--config``), else ``config_path``, else conveyor.yaml in ``cwd``."""
        chosen = explicit or self.config_path
        if chosen is None and self.cwd is None:
            raise ConfigError("no conveyor.yaml named: pass a config path")
        return find_config(chosen, cwd=self.cwd, environ={})

    def signer(self, key: str | None = None) -> Signer:
        """The signing key from ``key`` (``--key``) or ``signing_key``: a path or the PEM."""
        from conveyor.attest import load_signing_key

        source = key or self.signing_key
        if not source:
            raise InputError(f"no signing key: pass --key PATH or set {SIGNING_KEY_ENV}")
        return load_signing_key(source, password=self.key_password)

    def registry_options(self, options: RegistryOptions | None = None) -> RegistryOptions:
        """``options`` with this environment's insecure registries added."""
        options = options or RegistryOptions()
        hosts = tuple(dict.fromkeys((*options.insecure_registries, *self.insecure_registries)))
        return RegistryOptions(
            insecure_registries=hosts,
            docker_config_dir=options.docker_config_dir,
            transport=options.transport,
            concurrency=options.concurrency,
            reach=options.reach,
        )


class TrustedKey(NamedTuple):
    identity: Identity
    verifier: Verifier
    retired: datetime | None = None  # a retired key: believed only for what came before


def load_trusted(config: Config) -> dict[str, TrustedKey]:
    """keyid -> identity, public key and retirement, for every key of every identity of the
    config (retired keys too); every unreadable or shared key is reported at once."""
    from conveyor.attest import Verifier

    trusted: dict[str, TrustedKey] = {}
    problems: list[str] = []
    for identity in config.identities.values():
        listed = identity.all_keys
        for number, key in enumerate(listed):
            where = f"identities.{identity.name}." + (
                f"keys.{number}.key" if identity.keys and len(listed) > 1 else "key"
            )
            try:
                verifier = Verifier.from_pem(key.path)
            except ConveyorError as exc:
                problems.append(f"{where}: {exc}")
                continue
            other = trusted.get(verifier.keyid)
            if other is not None:
                whose = (
                    "listed twice"
                    if other.identity.name == identity.name
                    else f"the same key as identity {other.identity.name!r}; one key, one identity"
                )
                problems.append(f"{where}: {whose}")
                continue
            trusted[verifier.keyid] = TrustedKey(identity, verifier, key.retired)
    if problems:
        raise ConfigError(f"{config.path}: {problems[0]}", problems)
    return trusted


# The times a statement says it was made (signed with it): approval, smoke test, promotion,
# scan and build times. A retired key's statement counts only if every one is before the
# retirement (and so is the ledger's record time).
_SIGNED_TIMES: tuple[tuple[str, ...], ...] = (
    ("approvedOn",),
    ("testedOn",),
    ("promotedOn",),
    ("metadata", "scanStartedOn"),
    ("metadata", "scanFinishedOn"),
    ("runDetails", "metadata", "startedOn"),
    ("runDetails", "metadata", "finishedOn"),
)


def signed_times(predicate: Mapping[str, object]) -> list[datetime | None]:
    """Every signed time a predicate states (None: stated but not a time)."""
    found: list[datetime | None] = []
    for path in _SIGNED_TIMES:
        value: object = predicate
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            continue
        moment = None
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is None:
                moment = None  # a time without a zone says nothing certain
        found.append(moment)
    return found


class Workspace:
    """Config + ledger + trusted keys + repository opener: everything an operation touches.

    A context manager: closing it closes what ``Workspace.open`` opened (an injected ledger
    or opener belongs to the caller and stays open).
    """

    def __init__(
        self,
        *,
        config: Config,
        ledger: Ledger,
        trusted: Mapping[str, TrustedKey] | None = None,
        opener: Opener | None = None,
        settings: Settings | None = None,
        remember_reads: bool = False,
    ) -> None:
        self.config = config
        # A long-lived workspace (a server's): ledger rows checked once are believed again
        # while they stay exactly as they were (``service._evidence.ReadCache``).
        self.remember_reads = remember_reads
        self.ledger = ledger
        self.trusted: Mapping[str, TrustedKey] = (
            load_trusted(config) if trusted is None else trusted
        )
        self.settings = settings or Settings()
        self.opener: Opener = opener or RegistryOpener(self.settings.registry_options())
        self._owned: list[Ledger | Opener] = [] if opener is not None else [self.opener]

    @classmethod
    def open(
        cls,
        config_path: str | Path | None = None,
        *,
        settings: Settings | None = None,
        ledger: Ledger | None = None,
        opener: Opener | None = None,
        options: RegistryOptions | None = None,
    ) -> Workspace:
        """The workspace of a ``conveyor.yaml`` (``config_path``, else the settings'). Its
        ledger is ``settings.ledger_url`` or the one the file names, unless one is given."""
        settings = settings if settings is not None else Settings.from_environment()
        config = load_config(settings.config_file(config_path))
        trusted = load_trusted(config)
        if opener is None:
            opener = RegistryOpener(settings.registry_options(options))
            owned: list[Ledger | Opener] = [opener]
        else:
            owned = []
        if ledger is None:
            from conveyor.ledger import open_ledger

            ledger = open_ledger(settings.ledger_url or config.configured_ledger_url, lazy=True)
            owned.append(ledger)
        workspace = cls(
            config=config, ledger=ledger, trusted=trusted, opener=opener, settings=settings
        )
        workspace._owned = owned
        return workspace

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        owned, self._owned = self._owned, []
        for item in reversed(owned):
            item.close()

    # --- identities ---------------------------------------------------------------------

    def identity_of(self, keyid: str) -> Identity:
        found = self.trusted.get(keyid)
        if found is None:
            raise UnknownSignerError(
                f"the signing key {keyid[:19]}… is not an identity in {self.config.path}; "
                "add its public key under 'identities:' before it can record anything"
            )
        return found.identity

    def require_current(self, keyid: str) -> None:
        """A retired key signs nothing new (``UnknownSignerError``)."""
        found = self.trusted.get(keyid)
        if found is not None and found.retired is not None and datetime.now(UTC) >= found.retired:
            raise UnknownSignerError(
                f"this key of identity {found.identity.name!r} was retired at "
                f"{_stamp(found.retired)}; sign with its current key"
            )

    def roles_for(self, kind: EvidenceKind, environment: str | None = None) -> frozenset[str]:
        """The roles that may sign ``kind`` (an approval: what ``environment`` names)."""
        return signer_roles(kind, approval_roles=self.config.model.approval_roles(environment))

    def require_role(
        self, keyid: str, kind: EvidenceKind, environment: str | None = None
    ) -> Identity:
        """The identity of ``keyid``, if it may sign ``kind`` with that key now (else
        ``UnknownSignerError``: unknown, retired, or lacking the role)."""
        identity = self.identity_of(keyid)
        self.require_current(keyid)
        return self.require_role_of(identity, kind, environment)

    def require_role_of(
        self, identity: Identity, kind: EvidenceKind, environment: str | None = None
    ) -> Identity:
        """``identity``, if it may sign ``kind`` (else ``UnknownSignerError``)."""
        problem = self.signing_problem(identity, kind, environment)
        if problem is not None:
            raise UnknownSignerError(problem)
        return identity

    def signing_problem(
        self, identity: Identity, kind: EvidenceKind, environment: str | None = None
    ) -> str | None:
        """Why ``identity`` may not sign ``kind`` for ``environment`` (None: it may): it
        lacks the role the kind needs, or it is limited to other environments
        (``policy.roles``). Recording refuses it, the reader ignores what it signed."""
        roles = self.roles_for(kind, environment)
        what = {
            EvidenceKind.PROMOTION: "a promotion",
            EvidenceKind.ROLLBACK: "a rollback",
        }.get(kind, f"{kind} evidence")
        if not roles & identity.roles:
            held = ", ".join(sorted(identity.roles)) or "none"
            needed = " or ".join(repr(role) for role in sorted(roles))
            return (
                f"identity {identity.name!r} may not record {what}: it needs the role "
                f"{needed} (it has: {held})"
            )
        if kind in ENVIRONMENT_KINDS and not may_act_in(environment, identity.environments):
            where = f"for {environment}" if environment else "without an environment"
            allowed = ", ".join(sorted(identity.environments or ()))
            return (
                f"identity {identity.name!r} may not record {what} {where}: it may act only "
                f"in {allowed}"
            )
        return None

    def verifiers(self) -> list[Verifier]:
        """Every trusted key, retired ones too (a reader then asks ``retirement_problem``)."""
        return [key.verifier for key in self.trusted.values()]

    def current_verifiers(self, at: datetime | None = None) -> list[Verifier]:
        """The keys not retired at ``at`` (default now): the ones that may sign."""
        at = at or datetime.now(UTC)
        return [
            key.verifier for key in self.trusted.values() if key.retired is None or at < key.retired
        ]

    def verify_envelope(self, envelope: bytes) -> None:
        """What is about to be recorded verifies with a key that is not retired."""
        from conveyor.attest import verify_envelope

        verify_envelope(envelope, self.current_verifiers())

    def verify_recorded_envelope(self, envelope: bytes) -> None:
        """What was recorded verifies with a trusted key, retired ones too (the audit then
        checks the times: ``retirement_problem``)."""
        from conveyor.attest import verify_envelope

        verify_envelope(envelope, self.verifiers())

    def retirement_problem(
        self, keyid: str, *, recorded: datetime, predicate: Mapping[str, object]
    ) -> str | None:
        """Why evidence signed with ``keyid`` does not count because the key is retired, or
        None. It counts only when the ledger recorded it before the retirement AND every
        time the statement says it was signed is before it too."""
        found = self.trusted.get(keyid)
        if found is None or found.retired is None:
            return None
        retired = found.retired
        whose = f"signed with {found.identity.name}'s key retired at {_stamp(retired)}"
        if recorded >= retired:
            return f"{whose}, recorded after it ({_stamp(recorded)})"
        for moment in signed_times(predicate):
            if moment is None:
                return f"{whose}: its signed time is not a time with a zone"
            if moment >= retired:
                return f"{whose}, signed after it ({_stamp(moment)})"
        return None

    # --- environments -----------------------------------------------------------------------

    def environment_target(self, environment: str) -> Target:
        return self.config.environment_target(environment)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextmanager
def workspace_for(
    workspace: Workspace | None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> Iterator[Workspace]:
    """``workspace`` as given (the caller's to close), or one opened from ``config_path``."""
    if workspace is not None:
        with workspace.ledger.reading():  # one operation's reads on one connection
            yield workspace
        return
    with Workspace.open(config_path, options=options) as opened, opened.ledger.reading():
        yield opened


class Signing(TypedDict, total=False):
    """The keywords every signing operation takes (record, approve, check, promote …).

    ``signer``: the key to sign with (a server passes its own per request); else ``key``
    (a path or the PEM), else the settings' ``CONVEYOR_SIGNING_KEY``. ``workspace``: the
    workspace to run in; else one opened from ``config_path`` (``options``: how to reach
    registries) and closed at the end.
    """

    key: str | None
    signer: Signer | None
    principal: Principal | None  # with a server's signer: whom it signs for (_principal.py)
    workspace: Workspace | None
    config_path: str | Path | None
    options: RegistryOptions | None


@contextmanager
def signing_workspace(
    common: Signing, *, required: bool = True
) -> Iterator[tuple[Workspace, Signer | None]]:
    """The workspace and the signer of ``common`` (see ``Signing``); the signer is loaded
    before the workspace is opened, so a missing key is the first thing said.
    ``required=False``: no key anywhere means no signer."""
    unknown = sorted(set(common) - Signing.__optional_keys__)
    if unknown:  # ``**common`` must stay as strict as spelled-out keywords
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    workspace, signer, key = common.get("workspace"), common.get("signer"), common.get("key")
    config_path, options = common.get("config_path"), common.get("options")
    settings = workspace.settings if workspace is not None else Settings.from_environment()
    if signer is None and (required or key or settings.signing_key):
        signer = settings.signer(key)
    # A check only reads: its reads share one connection. Recording operations do not hold
    # one through their registry work (a copy, a wait for a lock): each read takes its own.
    if workspace is not None:
        with workspace.ledger.reading() if not required else nullcontext():
            yield workspace, signer
        return
    with (
        Workspace.open(config_path, settings=settings, options=options) as opened,
        opened.ledger.reading() if not required else nullcontext(),
    ):
        yield opened, signer
