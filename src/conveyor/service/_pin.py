"""``conveyor pin``: rewrite deployment config to digests (``conveyor.configs.pin`` plans
and applies; this module resolves). Digests come from the registry, from the ledger
(``--env``: what the verified reader says was promoted there) or from a lock file."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import InputError, VerificationError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference, parse_target
from conveyor.oci.store import Repository
from conveyor.service._repositories import Opener, RegistryOptions, open_session
from conveyor.service._workspace import Workspace, workspace_for

if TYPE_CHECKING:
    from conveyor.configs.pin import PinReport, Resolution


class NotPromoted(VerificationError):
    """``pin --env ENV``: the ledger shows no promotion of this repository to ENV."""


class RegistryPins:
    """Tags resolved through the registry (GET, digest of the bytes received); a digest
    already written is checked to exist. ``offline`` resolves nothing and checks nothing."""

    def __init__(self, opener: Opener | None, *, offline: bool) -> None:
        self._opener = opener
        self._offline = offline or opener is None
        self._repositories: dict[str, Repository] = {}

    def _repository(self, reference: Reference) -> Repository:
        assert self._opener is not None
        if reference.name not in self._repositories:
            self._repositories[reference.name] = self._opener(reference, create=False)
        return self._repositories[reference.name]

    def verify(self, reference: Reference, digest: Digest, *, source: str) -> Resolution:
        from conveyor.configs.pin import DigestNotFound, Resolution, now_text

        if self._offline:
            return Resolution(digest, source, reference.registry, now_text(), verified=False)
        if not self._repository(reference).has_manifest(digest):
            raise DigestNotFound(
                f"{reference.name}@{digest} is not in the registry: a wrong digest? fix it or "
                "remove it and pin again"
            )
        return Resolution(digest, source, reference.registry, now_text())

    def pin(self, reference: Reference) -> Resolution:
        from conveyor.configs.pin import Resolution, now_text

        if reference.digest is not None:
            return self.verify(reference, reference.digest, source="present")
        if self._offline or reference.tag is None:
            raise InputError(
                f"{reference}: cannot resolve a tag offline; use --from-lock FILE, or run "
                "without --offline"
            )
        raw = self._repository(reference).get_manifest(reference.tag)
        return Resolution(raw.digest, "registry", reference.registry, now_text())


@dataclass(frozen=True)
class Promoted:
    """What the verified reader says was promoted to an environment: for each repository the
    digest that arrived there last (a promotion or a rollback). What ``pin --env`` pins to,
    read from the ledger here or answered by a server in remote mode."""

    environment: str
    repositories: dict[str, str]  # repository name -> digest
    ignored: int = 0  # unverifiable entries the reader left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "repositories": dict(self.repositories),
            "ignored": self.ignored,
        }


def promoted_repositories(
    environment: str,
    *,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
) -> Promoted:
    """The digest last promoted to ``environment`` for each repository (``Promoted``)."""
    from conveyor.service._evidence import VerifiedLedger

    with workspace_for(workspace, config_path) as ws:
        ws.config.require_environment(environment, defined=False)
        verified = VerifiedLedger(ws)
        latest: dict[str, str] = {}
        for item in verified.promotions(environment):  # oldest first
            for name in item.names:
                latest[_repository_name(name)] = str(Digest.parse(item.digest))
        return Promoted(environment, latest, len(verified.ignored))


class PromotedPins:
    """``--env ENV``: the digest most recently promoted (or rolled back) to ENV for the
    reference's repository, as the verified reader sees it (``Promoted``, loaded once, on
    the first reference); then checked to exist in the registry like any written digest."""

    def __init__(
        self, environment: str, load: Callable[[], Promoted], registry: RegistryPins
    ) -> None:
        self._environment = environment
        self._load = load
        self._registry = registry
        self._promoted: Promoted | None = None

    def pin(self, reference: Reference) -> Resolution:
        if self._promoted is None:
            self._promoted = self._load()
        digest = self._promoted.repositories.get(reference.name)
        if digest is None:
            ignored = self._promoted.ignored
            note = f" ({ignored} unverifiable entries ignored)" if ignored else ""
            raise NotPromoted(
                f"{reference.name} was never promoted to {self._environment} according to the "
                f"ledger{note}; promote it first or pin without --env"
            )
        return self._registry.verify(reference, Digest.parse(digest), source="ledger")


def _repository_name(text: str) -> str:
    try:
        return parse_target(text).name
    except InputError:
        return text


@contextmanager
def _registry_opener(opener: Opener | None, options: RegistryOptions | None) -> Iterator[Opener]:
    if opener is not None:
        yield opener
        return
    with open_session(options) as opened:
        yield opened


def pin(
    paths: Sequence[str | Path],
    *,
    check: bool = False,
    env: str | None = None,
    lock: str | Path | None = None,
    from_lock: str | Path | None = None,
    options: RegistryOptions | None = None,
    opener: Opener | None = None,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    offline: bool = False,
    exclude: Sequence[str] = (),
    promoted: Promoted | None = None,
) -> PinReport:
    """Rewrite every mutable image reference under ``paths`` to ``name:tag@digest``.

    The digest comes from the registry (a tag resolved now), from the ledger (``env``: what
    was promoted to that environment) or from a lock file (``from_lock``: no network at
    all). ``check`` writes nothing; ``lock`` writes the lock file of every reference pinned.
    A digest already written is checked to exist in the registry unless ``offline``.
    ``promoted``: with ``env``, the promotions as a server answered them (no ledger is read).
    """
    from conveyor.configs.lockfile import read_lock, write_lock
    from conveyor.configs.pin import MappingResolver, Resolver, apply, plan

    if from_lock is not None and env is not None:
        raise InputError("--from-lock and --env exclude each other: the lock already says")
    if check and lock is not None:
        raise InputError("--check writes nothing, not even a lock file; drop --lock")
    files = [Path(p) for p in paths]
    for path in files:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    resolver: Resolver
    if from_lock is not None:
        resolver = MappingResolver.from_lock(read_lock(Path(from_lock)))
        report = plan(files, resolver, exclude=exclude, check=check, environment=env)
    else:
        with _registry_opener(opener, options) as open_repository:
            registry = RegistryPins(None if offline else open_repository, offline=offline)
            if env is not None and promoted is not None:  # a server answered it
                if promoted.environment != env:
                    raise InputError(f"promotions of {promoted.environment} given for --env {env}")
                resolver = PromotedPins(env, lambda: promoted, registry)
                report = plan(files, resolver, exclude=exclude, check=check, environment=env)
            elif env is not None:
                with workspace_for(workspace, config_path) as ws:
                    ws.config.require_environment(env, defined=False)
                    resolver = PromotedPins(
                        env, lambda: promoted_repositories(env, workspace=ws), registry
                    )
                    report = plan(files, resolver, exclude=exclude, check=check, environment=env)
            else:
                report = plan(files, registry, exclude=exclude, check=check)
    if not check:
        apply(report)
        if lock is not None:
            write_lock(Path(lock), report.lock)
    return report
