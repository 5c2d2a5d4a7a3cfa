"""Registry and ledger in step: an environment's tags name what its ledger last recorded.

A promotion records first (signed, append-only) and moves the tags after, under the
environment's lock, so a tag never names a digest the ledger has not recorded for that
environment. A crash or a failed tag write between the two leaves the tags *behind* the
ledger; ``conveyor repair ENV`` completes the recorded promotion: every tag of ENV is put
on the digest the ledger says ENV holds (a tag moved by anyone else is put back the same
way). The ledger is never changed by a repair, so it needs no signing key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import ConveyorError, ExternalError, NotFoundError, VerificationError
from conveyor.oci.digest import Digest
from conveyor.oci.store import RawManifest, Repository
from conveyor.service._evidence import VerifiedLedger
from conveyor.service._repositories import RegistryOptions
from conveyor.service._workspace import Workspace, workspace_for


@dataclass(frozen=True)
class TagApart:
    """One tag of an environment that does not name the digest the ledger recorded."""

    environment: str
    tag: str
    names: str | None  # the digest the registry's tag names now (None: no such tag)
    recorded: str | None  # the digest the ledger says the environment holds

    def __str__(self) -> str:
        now = self.names or "nothing"
        if self.recorded is None:
            return (
                f"{self.environment}: tag {self.tag} names {now}, but the ledger records no "
                "promotion into it"
            )
        return (
            f"{self.environment}: tag {self.tag} names {now}, but the ledger says {self.recorded}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "names": self.names, "recorded": self.recorded}


class TagsApartError(VerificationError):
    """Tags that name a digest the ledger never recorded for the environment, and that a
    repair cannot move (nothing recorded to move them to)."""


def tags_apart(
    destination: Repository, environment: str, tags: tuple[str, ...], recorded: Digest | None
) -> list[TagApart]:
    """The tags of ``environment`` in ``destination`` that do not name ``recorded``. A tag
    that does not exist is apart only when something was recorded."""
    apart = []
    for tag in tags:
        try:
            names: Digest | None = destination.get_manifest(tag).digest
        except NotFoundError:
            names = None
        if names == recorded:
            continue
        if names is None and recorded is None:
            continue
        apart.append(
            TagApart(
                environment,
                tag,
                str(names) if names is not None else None,
                str(recorded) if recorded is not None else None,
            )
        )
    return apart


def move_tags_to(destination: Repository, manifest: RawManifest, tags: tuple[str, ...]) -> None:
    """Put every one of ``tags`` on ``manifest`` (whose digest the destination holds)."""
    for tag in tags:
        destination.put_manifest(manifest, tag=tag)


@dataclass(frozen=True)
class RepairReport:
    environment: str
    repository: str
    recorded: str | None  # the digest the ledger says the environment holds
    apart: tuple[TagApart, ...]  # what was found out of step
    moved: tuple[str, ...]  # the tags put back on ``recorded``
    checked_only: bool = False

    @property
    def in_step(self) -> bool:
        """After this run, every tag names what the ledger recorded."""
        return not self.apart or (not self.checked_only and len(self.moved) == len(self.apart))

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "repository": self.repository,
            "recorded": self.recorded,
            "apart": [item.to_dict() for item in self.apart],
            "moved": list(self.moved),
            "in_step": self.in_step,
        }


def repair(
    environment: str,
    *,
    check: bool = False,
    workspace: Workspace | None = None,
    config_path: str | Path | None = None,
    options: RegistryOptions | None = None,
) -> RepairReport:
    """Put ENV's tags on the digest its ledger last recorded (``check``: only say which are
    apart). Under the environment's promotion lock, so no promotion runs meanwhile."""
    with workspace_for(workspace, config_path, options) as ws:
        ws.config.require_environment(environment)
        tags = tuple(ws.config.model.environment(environment).tags)
        target = ws.environment_target(environment)
        with ws.ledger.serialized(f"promote/{environment}"):
            recorded = VerifiedLedger(ws).current(environment)
            destination = _open_existing(ws, environment)
            apart = (
                tuple(tags_apart(destination, environment, tags, recorded))
                if destination is not None
                else ()
            )
            moved: tuple[str, ...] = ()
            if apart and not check and destination is not None:
                if recorded is None:
                    raise TagsApartError(
                        f"{apart[0]}; conveyor cannot delete a tag: delete "
                        f"{', '.join(a.tag for a in apart)} in {target.name}, or promote"
                    )
                if not destination.has_manifest(recorded):
                    raise ExternalError(
                        f"{target.name} no longer holds {recorded}, the digest the ledger "
                        f"says {environment} holds; promote it again (conveyor rollback "
                        f"{environment} --to {recorded})"
                    )
                wanted = tuple(a.tag for a in apart)
                move_tags_to(destination, destination.get_manifest(recorded), wanted)
                moved = wanted
        return RepairReport(
            environment,
            target.name,
            str(recorded) if recorded is not None else None,
            apart,
            moved,
            checked_only=check,
        )


def describe_apart(workspace: Workspace, environment: str, recorded: Digest | None) -> list[str]:
    """For ``status``: one line per tag of ENV out of step with the ledger (a registry that
    cannot be read says so instead)."""
    tags = tuple(workspace.config.model.environment(environment).tags)
    if not tags:
        return []
    try:
        destination = _open_existing(workspace, environment)
        if destination is None:
            return []
        apart = tags_apart(destination, environment, tags, recorded)
    except ConveyorError as exc:
        return [f"could not read {environment}'s tags: {exc}"]
    return [f"{item}; run conveyor repair {environment}" for item in apart]


def _open_existing(workspace: Workspace, environment: str) -> Repository | None:
    """ENV's repository, or None where it does not exist yet (a layout never written)."""
    try:
        return workspace.opener(workspace.environment_target(environment), create=False)
    except NotFoundError:
        return None
