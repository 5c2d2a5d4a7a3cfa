"""Registry and ledger in step: an environment's tags name what its ledger last recorded,
and the environment's repository lists the attestation of every promotion recorded into it.

A promotion records first (signed, append-only), then attaches its attestation and moves
the tags, both after the commit, so a tag never names a digest the ledger has not recorded
for that environment. A crash or a failed write between the two leaves the registry
*behind* the ledger: tags on the digest before, or a recorded promotion whose attestation
is not listed as a referrer. ``conveyor repair ENV`` completes the recorded promotions:
every tag of ENV is put on the digest the ledger says ENV holds (a tag moved by anyone else
is put back the same way), and every promotion of ENV's history whose attestation the
repository does not list is attached again from the envelope the ledger holds. The ledger
is never changed by a repair, so it needs no signing key.

The attestation a promotion attaches is the exact manifest ``attestation_of`` makes from its
ledger entry (created: the entry's record time), so "is it listed?" is a comparison of
digests; attestations attached another way are recognised by the envelope they store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, ExternalError, NotFoundError, VerificationError
from conveyor.oci.digest import Digest
from conveyor.oci.store import RawManifest, Repository
from conveyor.policy.roles import PROMOTION_KINDS
from conveyor.service._evidence import VerifiedEntry, VerifiedLedger
from conveyor.service._repositories import RegistryOptions
from conveyor.service._workspace import Workspace, workspace_for

if TYPE_CHECKING:
    from conveyor.ledger import Entry


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
class ReferrerMissing:
    """A promotion (or rollback) the ledger recorded into an environment whose attestation
    the environment's repository does not list as a referrer of the digest."""

    environment: str
    index: int  # the promotion's ledger entry
    kind: str
    digest: str
    repository: str

    def __str__(self) -> str:
        return (
            f"{self.environment}: ledger #{self.index} records the {self.kind} of "
            f"{self.digest}, but {self.repository} does not list its attestation"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"ledger_index": self.index, "kind": self.kind, "digest": self.digest}


def envelope_of(manifest: RawManifest) -> list[str]:
    """The envelope digest an attestation referrer stores (none for other referrers)."""
    from conveyor.oci.manifest import parse_manifest
    from conveyor.oci.referrers import dsse_layer

    try:
        layer = dsse_layer(parse_manifest(manifest.data, content_type=manifest.media_type))
    except ConveyorError:
        return []
    return [str(layer.digest)] if layer is not None else []


def attestation_of(top: RawManifest, entry: Entry) -> RawManifest:
    """The referrer manifest of a recorded envelope about ``top``, created at the entry's
    record time: the same bytes however often, wherever it is made."""
    from conveyor.oci.referrers import attestation_manifest

    created = entry.recorded_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return attestation_manifest(top, entry.envelope, entry.predicate_type, created=created)


def store_attestations(
    destination: Repository, top: RawManifest, entries: Iterable[Entry]
) -> list[RawManifest]:
    """Store in ``destination`` the blobs of each recorded envelope's attestation about
    ``top`` (the envelope, the empty config); return the manifests, for the caller to list
    in one update (``attach_referrers``)."""
    from conveyor.oci.referrers import EMPTY_JSON

    manifests: list[RawManifest] = []
    empty = Digest.of(EMPTY_JSON)
    for entry in entries:
        envelope = entry.envelope
        destination.write_blob(Digest.of(envelope), len(envelope), [envelope])
        if not manifests and destination.blob_size(empty) is None:
            destination.write_blob(empty, len(EMPTY_JSON), [EMPTY_JSON])
        manifests.append(attestation_of(top, entry))
    return manifests


def attach_recorded(destination: Repository, top: RawManifest, entries: Sequence[Entry]) -> None:
    """Attach recorded envelopes about ``top`` to ``destination`` from the ledger's bytes
    (one listing update); attaching one that is listed already changes nothing."""
    from conveyor.oci.referrers import attach_referrers

    manifests = store_attestations(destination, top, entries)
    if manifests:
        attach_referrers(destination, manifests)


def unlisted(
    destination: Repository,
    top: RawManifest,
    entries: Iterable[Entry],
    *,
    listed: Iterable[Digest] | None = None,
) -> list[Entry]:
    """The ``entries`` (envelopes recorded about ``top``) whose attestation ``destination``
    does not list as a referrer (``listed``: the referrer digests, when the caller read them
    already). Those attached as ``attestation_of`` makes them are found by digest; only when
    some are left are the listed manifests read for the envelope they store."""
    from conveyor.oci.referrers import list_referrers

    present = (
        set(listed)
        if listed is not None
        else {d.digest for d in list_referrers(destination, top.digest)}
    )
    missing: dict[str, Entry] = {}
    matched: set[Digest] = set()
    for entry in entries:
        made = attestation_of(top, entry).digest
        if made in present:
            matched.add(made)
        else:
            missing.setdefault(f"sha256:{entry.envelope_sha256}", entry)
    for digest in present - matched:
        if not missing:
            break
        for key in envelope_of(destination.get_manifest(digest)):
            missing.pop(key, None)
    return list(missing.values())


def promotions_unlisted(
    verified: VerifiedLedger,
    environment: str,
    destination: Repository,
    *,
    digests: Iterable[str] | None = None,
) -> list[tuple[RawManifest, list[VerifiedEntry]]]:
    """ENV's verified arrivals (promotions and rollbacks; of ``digests`` only, when given)
    whose attestation ``destination`` does not list, by digest: (the digest's manifest
    there, its unlisted arrivals). A digest the repository no longer holds is left out (the
    tags' repair says so for the current one)."""
    wanted = None if digests is None else set(digests)
    by_digest: dict[str, list[VerifiedEntry]] = {}
    for kind in PROMOTION_KINDS:
        for subject in sorted(wanted) if wanted is not None else [None]:
            for item in verified.entries(
                kind=kind, environment=environment, subject_digest=subject
            ):
                if verified.arrival(item, environment) is not None:
                    by_digest.setdefault(item.entry.subject_digest, []).append(item)
    found = []
    for digest, items in sorted(by_digest.items(), key=lambda kv: kv[1][0].entry.index):
        try:
            top = destination.get_manifest(Digest.parse(digest))
        except NotFoundError:
            continue
        entries = {item.entry.index: item for item in items}
        missing = unlisted(destination, top, [item.entry for item in items])
        if missing:
            found.append((top, sorted((entries[e.index] for e in missing), key=_index)))
    return found


def _index(item: VerifiedEntry) -> int:
    return item.entry.index


def referrers_missing(
    environment: str, repository: str, found: Sequence[tuple[RawManifest, list[VerifiedEntry]]]
) -> list[ReferrerMissing]:
    """``promotions_unlisted``'s answer, as what a report names."""
    return [
        ReferrerMissing(environment, item.entry.index, item.entry.kind, str(top.digest), repository)
        for top, items in found
        for item in items
    ]


@dataclass(frozen=True)
class RepairReport:
    environment: str
    repository: str
    recorded: str | None  # the digest the ledger says the environment holds
    apart: tuple[TagApart, ...]  # what was found out of step
    moved: tuple[str, ...]  # the tags put back on ``recorded``
    checked_only: bool = False
    unlisted: tuple[ReferrerMissing, ...] = ()  # recorded promotions whose attestation was not
    attached: tuple[int, ...] = ()  # listed, and the ledger entries of those attached again

    @property
    def in_step(self) -> bool:
        """After this run, every tag names what the ledger recorded and every recorded
        promotion's attestation is listed."""
        tags = not self.apart or (not self.checked_only and len(self.moved) == len(self.apart))
        listed = not self.unlisted or (
            not self.checked_only and len(self.attached) == len(self.unlisted)
        )
        return tags and listed

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "repository": self.repository,
            "recorded": self.recorded,
            "apart": [item.to_dict() for item in self.apart],
            "moved": list(self.moved),
            "referrers_missing": [item.to_dict() for item in self.unlisted],
            "reattached": list(self.attached),
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
    """Put ENV's tags on the digest its ledger last recorded, and attach again every
    recorded promotion of ENV whose attestation its repository does not list (``check``:
    only say what is out of step). The tags under the environment's promotion and tag
    locks, so no promotion records or moves a tag meanwhile; the attestations before
    (attaching one merges it into the listing, whoever else writes)."""
    with workspace_for(workspace, config_path, options) as ws:
        ws.config.require_environment(environment)
        tags = tuple(ws.config.model.environment(environment).tags)
        target = ws.environment_target(environment)
        destination = _open_existing(ws, environment)
        found = (
            promotions_unlisted(VerifiedLedger(ws), environment, destination)
            if destination is not None
            else []
        )
        unlisted = tuple(referrers_missing(environment, target.name, found))
        attached: tuple[int, ...] = ()
        if found and not check and destination is not None:
            for top, items in found:
                attach_recorded(destination, top, [item.entry for item in items])
            attached = tuple(item.index for item in unlisted)
        with (
            ws.ledger.serialized(f"promote/{environment}"),
            ws.ledger.serialized(f"tags/{environment}"),
        ):
            recorded = VerifiedLedger(ws).current(environment)
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
            unlisted=unlisted,
            attached=attached,
        )


def describe_apart(
    workspace: Workspace,
    environment: str,
    recorded: Digest | None,
    arrival: int | None,
) -> list[str]:
    """For ``status``: one line per tag of ENV out of step with the ledger, and one if the
    current arrival (``recorded`` at ledger index ``arrival``, verified by the caller) is a
    promotion whose attestation the repository does not list (a registry that cannot be read
    says so instead). Only that arrival's attestation is looked for, in one listing;
    ``repair`` looks through the environment's whole history."""
    tags = tuple(workspace.config.model.environment(environment).tags)
    if not tags and recorded is None:
        return []
    lines = []
    try:
        destination = _open_existing(workspace, environment)
        if destination is None:
            return []
        for apart in tags_apart(destination, environment, tags, recorded):
            lines.append(f"{apart}; run conveyor repair {environment}")
        if recorded is not None and arrival is not None:
            lines.extend(
                f"{missing}; run conveyor repair {environment}"
                for missing in _arrival_unlisted(workspace, environment, destination, arrival)
            )
    except ConveyorError as exc:
        return [f"could not read {environment}'s tags and referrers: {exc}"]
    return lines


def _arrival_unlisted(
    workspace: Workspace, environment: str, destination: Repository, arrival: int
) -> list[ReferrerMissing]:
    """The arrival at ledger ``arrival``, if ``destination`` does not list its attestation."""
    entry = workspace.ledger.entry(arrival)
    try:
        top = destination.get_manifest(Digest.parse(entry.subject_digest))
    except NotFoundError:
        return []  # the tags' repair says the digest is gone
    repository = workspace.environment_target(environment).name
    return [
        ReferrerMissing(environment, e.index, e.kind, str(top.digest), repository)
        for e in unlisted(destination, top, [entry])
    ]


def _open_existing(workspace: Workspace, environment: str) -> Repository | None:
    """ENV's repository, or None where it does not exist yet (a layout never written)."""
    try:
        return workspace.opener(workspace.environment_target(environment), create=False)
    except NotFoundError:
        return None
