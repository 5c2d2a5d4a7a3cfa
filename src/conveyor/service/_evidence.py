"""The one verified reader of the ledger.

An entry is believed only when its envelope verifies against the keys of conveyor.yaml, its
statement names the entry's digest, and its signer holds the role that kind of evidence
needs (``policy.roles``: the same table recording asks). Gates, status, history, trace,
rollback, ``lint --env`` and ``pin --env`` all read through ``VerifiedLedger``.

Whoever can write the database is not trusted (issue 9):

- **Signed time.** Ordering and freshness use the time inside the signed statement
  (approval, smoke, scan finish, test, promotion time). An entry whose signed time lies more
  than ``max_signing_delay`` (default 24 h) before its record time, or more than
  ``max_clock_skew`` (default 5 min) after its record time or after now, does not count; a
  signed time that does not parse (or a scan without one) does not count either. Each is
  named in ``ignored`` with the reason. Build records are bounded only by the skew (other
  SLSA generators sign long before anyone records them).
- **One statement, one vote.** Of several entries holding the same signed statement (the
  SHA-256 of the DSSE payload, computed here, not read from a column), only the first
  counts; later copies (``Entry.occurrence > 0`` in an old ledger, or rows written with raw
  SQL) are named as replays.
- **Rows belong to the signed tree.** Every row a command reads is checked, batched, for
  inclusion in the latest checkpoint signed with ``ledger.public_key`` (or ``ledger.key``)
  when it is covered by it, else in the head (which must be consistent with that
  checkpoint). A row that is not raises ``conveyor.ledger.LedgerTampered`` (exit 1, a failed
  check: the evidence cannot be believed), so ``check`` and ``promote`` fail closed.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError, InputError, LedgerError, VerificationError
from conveyor.oci.digest import Digest
from conveyor.policy.model import (
    ApprovalEvidence,
    BuildEvidence,
    EvidenceRef,
    EvidenceSet,
    PromotionEvidence,
    ScanEvidence,
    SmokeEvidence,
    TestEvidence,
)
from conveyor.policy.roles import (
    ENVIRONMENT_KINDS,
    PROMOTION_KINDS,
    EvidenceKind,
    kind_of,
    may_act_in,
)
from conveyor.service._principal import Counted, count_as, via_of
from conveyor.service._workspace import Workspace

if TYPE_CHECKING:
    from conveyor.attest import Statement, Verifier
    from conveyor.ledger import Entry

# How far the time signed inside a statement may lie from the ledger's record time.
MAX_SIGNING_DELAY = timedelta(hours=24)  # signed at most this long before it was recorded
MAX_CLOCK_SKEW = timedelta(minutes=5)  # and at most this far "in the future"
# Newest-first reads fetch this many rows first, then 4x as many, … (at most _LARGEST_PAGE).
_FIRST_PAGE = 16
_LARGEST_PAGE = 4096


@dataclass(frozen=True)
class VerifiedEntry:
    entry: Entry
    statement: Statement
    signer: str
    roles: frozenset[str]
    trusted: bool = True  # False: read from its keyid hint, signature not checked yet
    signed_at: datetime | None = None  # the time inside the statement (None: it names none)
    statement_sha256: str = ""  # of the DSSE payload, computed from the envelope
    counted: Counted | None = None  # whom it counts for, and via whom (server-signed)

    @property
    def via(self) -> str | None:
        """For server-signed evidence: ``API token alice-laptop (signed by server)``."""
        return via_of(self.counted) if self.counted is not None else None

    @property
    def ref(self) -> EvidenceRef:
        return EvidenceRef(
            index=self.entry.index,
            envelope_digest=f"sha256:{self.entry.envelope_sha256}",
            signer=self.signer,
            signer_roles=self.roles,
            recorded_at=self.entry.recorded_time,
            signed_at=self.signed_at,
        )

    @property
    def time(self) -> datetime:
        """The signed time, else (the statement names none) the record time."""
        return self.signed_at if self.signed_at is not None else self.entry.recorded_time

    @property
    def predicate(self) -> dict[str, Any]:
        return dict(self.statement.predicate)

    @property
    def kind(self) -> EvidenceKind | None:
        return kind_of(self.entry.kind)


@dataclass(frozen=True)
class HistoryItem:
    """One arrival of a digest in an environment (a promotion or a rollback)."""

    index: int
    digest: str
    recorded_at: datetime
    signer: str
    rollback: bool
    break_glass: str | None
    commit: str | None = None
    repository: str | None = None  # as signed in the promotion statement
    names: tuple[str, ...] = ()  # every name the entry and its statement give the image
    signed_at: datetime | None = None  # the promotion time signed in the statement

    @property
    def time(self) -> datetime:
        """When it arrived: the signed promotion time, else the record time."""
        return self.signed_at if self.signed_at is not None else self.recorded_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "ledger_index": self.index,
            "digest": self.digest,
            "recorded_at": self.recorded_at.isoformat(),
            "promoted_at": self.time.isoformat(),
            "promoted_by": self.signer,
            "rollback": self.rollback,
            "break_glass": self.break_glass,
            "commit": self.commit,
        }


@dataclass
class _Known:
    """What a process learnt about one exact row (every column: see ``ReadCache``)."""

    proved: int | None = None  # the cache generation it was proved into the tree under
    no_replay: int | None = None  # the generation its statement was found first under
    verified: VerifiedEntry | None = None  # signature, subject and role: config-bound only


class ReadCache:
    """What a long-lived process (a server) may believe again about rows it checked, for
    one workspace (its config and trusted keys: a new workspace starts empty).

    - Keyed by the whole row as read (every column, the envelope bytes included): a row
      changed in the database afterwards is another key and is checked afresh.
    - A signature, subject and role check depends only on the row and the config: kept.
      The signed-time bounds depend on "now": re-checked on every read.
    - A proof into the tree holds for the tree head it was made under. The cache keeps one
      head; every command still reads its own head (checked against the signed checkpoint
      as before) and adopts the cache only after proving that one of the two heads extends
      the other (RFC 6962 consistency). Two heads that do not agree: the cache forgets
      everything (a new generation) and the command checks every row itself, as without
      a cache. So a cached proof is only ever used for a row of the command's own tree.
    - Bounded (least recently used rows go first).
    """

    def __init__(self, limit: int = 16_384) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._rows: OrderedDict[Entry, _Known] = OrderedDict()
        self._head: tuple[int, bytes] | None = None
        self._generation = 0
        self._checkpoints: dict[Any, bool] = {}  # checkpoint -> its signature verified
        self._keys: dict[str, Verifier] | None = None

    def adopt(self, head: tuple[int, bytes], ledger: Any) -> int | None:
        """The generation under which a command whose head is ``head`` may use (and add to)
        the cache, or None: it may not (heads moving too fast to agree on)."""
        from conveyor.ledger.store import head_extends

        for _ in range(3):
            with self._lock:
                cached, generation = self._head, self._generation
                if cached is None or cached == head:
                    self._head = head
                    return generation
            small, large = sorted((cached, head))
            try:
                consistent = small[0] < large[0] and head_extends(ledger, small, large)
            except (LedgerError, InputError):  # nodes missing, or a head beyond the database's
                consistent = False
            with self._lock:
                if (self._head, self._generation) != (cached, generation):
                    continue  # another command moved it meanwhile: look again
                if not consistent:  # someone rewrote the tree: believe nothing cached
                    self._rows.clear()
                    self._generation += 1
                    self._head = head
                    return self._generation
                if head[0] > cached[0]:
                    self._head = head
                return generation
        return None

    def known(self, entry: Entry) -> _Known | None:
        with self._lock:
            found = self._rows.get(entry)
            if found is not None:
                self._rows.move_to_end(entry)
            return found

    def learn(self, entry: Entry, generation: int | None = None, **facts: Any) -> None:
        """Record facts about ``entry``; ``proved``/``no_replay`` only under the current
        ``generation`` (a command that adopted an older one adds nothing)."""
        with self._lock:
            if "verified" not in facts and generation != self._generation:
                return
            known = self._rows.get(entry)
            if known is None:
                known = self._rows[entry] = _Known()
                while len(self._rows) > self._limit:
                    self._rows.popitem(last=False)
            for name, value in facts.items():
                setattr(known, name, value)

    def checkpoint_keys(self, load: Callable[[], dict[str, Verifier]]) -> dict[str, Verifier]:
        """The config's checkpoint keys (``load()``), read once."""
        with self._lock:
            keys = self._keys
        if keys is None:
            keys = load()
            with self._lock:
                self._keys = keys
        return keys

    def checkpoint_verified(self, checkpoint: Any, verify: Callable[[], bool]) -> bool:
        """``verify()`` for a stored checkpoint, once per checkpoint (the value, every field)."""
        with self._lock:
            known = self._checkpoints.get(checkpoint)
        if known is None:
            known = verify()
            with self._lock:
                if len(self._checkpoints) > 64:
                    self._checkpoints.clear()
                self._checkpoints[checkpoint] = known
        return known


# Workspaces made with ``remember_reads=True``: each with its cache, gone with the workspace.
_CACHES: weakref.WeakKeyDictionary[Workspace, ReadCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def remember_reads(workspace: Workspace) -> ReadCache:
    """Give a long-lived workspace a ``ReadCache`` that every ``VerifiedLedger`` over it uses."""
    with _CACHES_LOCK:
        cache = _CACHES.get(workspace)
        if cache is None:
            cache = _CACHES[workspace] = ReadCache()
        return cache


# The heads (size, root) verified readers read in this context (``heads_read``), or None.
_HEADS_READ: ContextVar[list[tuple[int, bytes]] | None] = ContextVar("heads_read", default=None)


@contextmanager
def heads_read() -> Iterator[list[tuple[int, bytes]]]:
    """The ledger heads every ``VerifiedLedger`` read inside the block, each after it was
    checked to extend the signed checkpoint: what an answer computed in the block rests on
    (a server keeps an answer only when that is exactly one head)."""
    seen: list[tuple[int, bytes]] = []
    token = _HEADS_READ.set(seen)
    try:
        yield seen
    finally:
        _HEADS_READ.reset(token)


@dataclass
class VerifiedLedger:
    """Ledger entries, each believed only after signature, subject, role, signed time,
    uniqueness and tree inclusion check out (module docstring)."""

    workspace: Workspace
    ignored: list[str] = field(default_factory=list)
    max_signing_delay: timedelta = MAX_SIGNING_DELAY
    max_clock_skew: timedelta = MAX_CLOCK_SKEW
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # One command may decide twice (before and under the lock): check each entry once.
    _checked: dict[tuple[int, str], VerifiedEntry | None] = field(default_factory=dict)
    _proven: set[tuple[int, str]] = field(default_factory=set)
    _anchor: tuple[int, bytes] | None = None  # (size, root) of the trusted checkpoint
    _anchored: bool = False
    _head: tuple[int, bytes] = (0, b"")
    # A server's cache of rows checked by earlier commands (``ReadCache``), and the generation
    # of it this command adopted for its head (None: not adopted, use nothing proved in it).
    _cache: ReadCache | None = None
    _generation: int | None = None

    def __post_init__(self) -> None:
        if self._cache is None and getattr(self.workspace, "remember_reads", False):
            self._cache = remember_reads(self.workspace)

    def verify(self, entry: Entry) -> VerifiedEntry | None:
        key = (entry.index, entry.envelope_sha256)
        if key not in self._checked:
            self._checked[key] = self._verify_once(entry)
        return self._checked[key]

    def _verify_once(self, entry: Entry) -> VerifiedEntry | None:
        cache = self._cache
        known = cache.known(entry) if cache is not None else None
        if known is not None and known.verified is not None:
            return self._timed(known.verified)  # signature checked before; time: now
        item = self._verify(entry)
        if item is None:
            return None
        if cache is not None:
            cache.learn(entry, verified=item)
        return self._timed(item)

    def _verify(self, entry: Entry) -> VerifiedEntry | None:
        """Signature, subject, signer, role and the environments the signer may act in (not
        the signed time: ``_timed``)."""
        from conveyor.attest import open_attestation

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
        retired = self.workspace.retirement_problem(  # issue 9 #7: rotated keys
            opened.signer_keyids[0],
            recorded=entry.recorded_time,
            predicate=opened.statement.predicate,
        )
        if retired is not None:
            self.ignored.append(f"ledger #{entry.index} ignored: {retired}")
            return None
        counted = self._count(entry, opened.statement, opened.signer_keyids[0])
        if isinstance(counted, str):
            self.ignored.append(f"ledger #{entry.index} ignored: {counted}")
            return None
        identity, roles = counted.identity, counted.roles
        expected = self._roles(entry, opened.statement)
        if not expected & roles:
            needed = " or ".join(sorted(expected)) or f"a known kind (not {entry.kind!r})"
            self.ignored.append(
                f"ledger #{entry.index} ignored: {identity.name} lacks the role {needed}"
            )
            return None
        elsewhere = self._outside(entry, opened.statement, counted)
        if elsewhere is not None:
            self.ignored.append(f"ledger #{entry.index} ignored: {elsewhere}")
            return None
        return VerifiedEntry(entry, opened.statement, identity.name, roles, counted=counted)

    def _count(self, entry: Entry, statement: Statement, keyid: str) -> Counted | str:
        """Whom a statement signed by ``keyid`` counts for (``_principal.count_as``: a
        server-signed one, for the principal it names), or why the entry is ignored."""
        signer = self.workspace.identity_of(keyid)
        identities = self.workspace.config.identities
        return count_as(statement.predicate, signer, identities, recorded_for=entry.signer)

    def _timed(self, item: VerifiedEntry, *, note: bool = True) -> VerifiedEntry | None:
        """``item`` with its signed time and statement digest, or None (named in
        ``ignored`` when ``note``) when the signed time is unreadable or out of bounds."""
        from conveyor.ledger import statement_sha256

        entry = item.entry
        kind = item.kind
        signed: datetime | None = None
        why: str | None = None
        if kind is not None:
            try:
                signed = signed_time(kind, item.statement.predicate)
            except ValueError as exc:
                why = str(exc)
        if signed is not None:
            why = self._out_of_bounds(kind, signed, entry.recorded_time)
        if why is not None:
            if note:
                self.ignored.append(f"ledger #{entry.index} ignored: {why}")
            return None
        return VerifiedEntry(
            entry,
            item.statement,
            item.signer,
            item.roles,
            item.trusted,
            signed,
            statement_sha256(entry.envelope),
            item.counted,
        )

    def _out_of_bounds(
        self, kind: EvidenceKind | None, signed: datetime, recorded: datetime
    ) -> str | None:
        from conveyor.policy.duration import format_duration

        said = signed.isoformat().replace("+00:00", "Z")
        if signed > recorded + self.max_clock_skew or signed > self.now + self.max_clock_skew:
            return (
                f"signed time {said} is after the time it was recorded (or now), "
                f"beyond the {format_duration(self.max_clock_skew)} clock skew allowed"
            )
        if kind is not EvidenceKind.BUILD and recorded - signed > self.max_signing_delay:
            return (
                f"signed at {said}, {format_duration(recorded - signed)} before it was "
                f"recorded (at most {format_duration(self.max_signing_delay)}): a replay or "
                "stale evidence"
            )
        return None

    def _roles(self, entry: Entry, statement: Statement) -> frozenset[str]:
        """Who may sign this entry's kind; an approval's environment is the signed one."""
        kind = kind_of(entry.kind)
        if kind is None:
            return frozenset()
        environment = entry.environment
        if kind is EvidenceKind.APPROVAL:
            signed = statement.predicate.get("environment")
            environment = signed if isinstance(signed, str) else None
        return self.workspace.roles_for(kind, environment)

    def _outside(self, entry: Entry, statement: Statement, counted: Counted) -> str | None:
        """Why the identity an entry counts for may not sign it for the environment its
        statement names (an identity limited to other environments), or None."""
        kind = kind_of(entry.kind)
        limited = counted.identity.environments
        if kind is None or kind not in ENVIRONMENT_KINDS or limited is None:
            return None
        signed = statement.predicate.get(
            "toEnvironment" if kind in PROMOTION_KINDS else "environment"
        )
        environment = signed if isinstance(signed, str) else None
        if may_act_in(environment, limited):
            return None
        where = f"for {environment}" if environment else "naming no environment"
        return (
            f"signed {where} by {counted.identity.name}, who may act only in "
            f"{', '.join(sorted(limited))}"
        )

    def claim(self, entry: Entry) -> VerifiedEntry | None:
        """What an entry says, and who its keyid hint names, WITHOUT checking the signature.

        Only ``_decide`` uses claims, and it verifies every claim a decision rests on
        before the decision is returned. Anything that cannot be read this way is verified
        at once.
        """
        from conveyor.attest import decode_envelope, parse_statement, require_subject

        known = self._cache.known(entry) if self._cache is not None else None
        if known is not None and known.verified is not None:
            return self.verify(entry)  # verified by an earlier command: better than a claim
        try:
            decoded = decode_envelope(entry.envelope)
            hints = [hint for hint, _ in decoded.signatures if hint in self.workspace.trusted]
            statement = parse_statement(decoded.payload)
            require_subject(statement, Digest.parse(entry.subject_digest))
        except ConveyorError:
            return self.verify(entry)  # names the problem in ``ignored``
        if len(hints) != 1 or statement.predicate_type != entry.predicate_type:
            return self.verify(entry)
        if self.workspace.retirement_problem(
            hints[0], recorded=entry.recorded_time, predicate=statement.predicate
        ):
            return self.verify(entry)  # names the retirement in ``ignored``
        counted = self._count(entry, statement, hints[0])
        if isinstance(counted, str) or not self._roles(entry, statement) & counted.roles:
            return self.verify(entry)  # names the problem in ``ignored``
        if self._outside(entry, statement, counted) is not None:
            return self.verify(entry)  # names the problem in ``ignored``
        item = VerifiedEntry(
            entry, statement, counted.identity.name, counted.roles, trusted=False, counted=counted
        )
        # The time check needs no signature; an entry it drops is verified (and named) once.
        timed = self._timed(item, note=False)
        return timed if timed is not None else self.verify(entry)

    # --- tree inclusion ---------------------------------------------------------------------

    def prove(self, entries: Iterable[Entry]) -> None:
        """Check that every row, as it stands, is a leaf of the signed tree (batched);
        raises ``conveyor.ledger.LedgerTampered`` otherwise. Each row is proved once."""
        rows = [e for e in entries if (e.index, e.envelope_sha256) not in self._proven]
        if not rows:
            return
        ledger = self.workspace.ledger
        if not self._anchored:
            self._anchor = self._trusted_checkpoint()
            self._anchored = True
        if max(e.index for e in rows) >= self._head[0]:
            self._read_head()  # appends since the head was read are still proved against it
        cache, generation = self._cache, self._generation
        if cache is not None and generation is not None:
            # Proved by an earlier command into a tree this command's head agrees with.
            rows = [e for e in rows if not self._proved_before(cache, generation, e)]
        covered = self._anchor[0] if self._anchor is not None else 0
        old = [e for e in rows if e.index < covered]
        new = [e for e in rows if e.index >= covered]
        if old and self._anchor is not None:
            ledger.verify_inclusion(old, size=self._anchor[0], root=self._anchor[1])
        if new:
            ledger.verify_inclusion(new, size=self._head[0], root=self._head[1])
        self._proven.update((e.index, e.envelope_sha256) for e in rows)
        if cache is not None and generation is not None:
            for e in rows:
                cache.learn(e, generation, proved=generation)

    def _proved_before(self, cache: ReadCache, generation: int, entry: Entry) -> bool:
        if entry.index >= self._head[0]:
            return False
        known = cache.known(entry)
        if known is None or known.proved != generation:
            return False
        self._proven.add((entry.index, entry.envelope_sha256))
        return True

    def head(self) -> tuple[int, bytes]:
        """The ledger's head (size, root) as of now, checked to extend the trusted checkpoint;
        rows below that size are then proved against exactly this head."""
        if not self._anchored:
            self._anchor = self._trusted_checkpoint()
            self._anchored = True
        self._read_head()
        return self._head

    def _read_head(self) -> None:
        from conveyor.ledger import LedgerTampered
        from conveyor.ledger.store import head_extends

        ledger = self.workspace.ledger
        size, root = ledger.head()  # one read: size and root of the same head
        if self._anchor is not None and not head_extends(ledger, self._anchor, (size, root)):
            raise LedgerTampered(
                f"the ledger's head (size {size}) does not extend its latest signed "
                f"checkpoint (size {self._anchor[0]}): the ledger was changed outside "
                "conveyor; run `conveyor audit verify`",
                indexes=[],
            )
        self._head = (size, root)
        seen = _HEADS_READ.get()
        if seen is not None:
            seen.append(self._head)
        if self._cache is not None:
            self._generation = self._cache.adopt(self._head, ledger)

    def _trusted_checkpoint(self) -> tuple[int, bytes] | None:
        """The latest stored checkpoint, if a ledger key is configured to check it."""
        from conveyor.ledger import LedgerTampered

        cache = self._cache
        if cache is None:
            verifiers = self._checkpoint_verifiers()
        else:  # the config's ledger key, read once per workspace
            verifiers = cache.checkpoint_keys(self._checkpoint_verifiers)
        if not verifiers:
            return None
        ledger = self.workspace.ledger
        checkpoint = ledger.latest_checkpoint()
        if checkpoint is None:
            return None

        def signed() -> bool:
            return checkpoint.origin == ledger.origin and checkpoint.verify(verifiers)

        if not (signed() if cache is None else cache.checkpoint_verified(checkpoint, signed)):
            raise LedgerTampered(
                f"the latest checkpoint in the ledger (size {checkpoint.size}) is not signed "
                "by ledger.public_key for this ledger: the ledger was changed outside "
                "conveyor; run `conveyor audit verify`",
                indexes=[],
            )
        return checkpoint.size, checkpoint.root

    def _checkpoint_verifiers(self) -> dict[str, Verifier]:
        from conveyor.attest import Verifier, load_signing_key

        config = self.workspace.config
        spec = config.model.ledger
        try:
            if spec.public_key:
                verifier = Verifier.from_pem(config.resolve_path(spec.public_key))
            elif spec.key:
                verifier = load_signing_key(
                    str(config.resolve_path(spec.key)),
                    password=self.workspace.settings.key_password,
                ).verifier()
            else:
                return {}
        except ConveyorError as exc:
            raise InputError(f"{config.path}: ledger key: {exc}") from exc
        return {verifier.keyid: verifier}

    # --- reads --------------------------------------------------------------------------------

    def rows(
        self,
        *,
        subject_digest: str | None = None,
        kind: EvidenceKind | None = None,
        environment: str | None = None,
        commit: str | None = None,
    ) -> list[Entry]:
        """The raw rows matching the filters, oldest first, each proved into the tree."""
        found = self._raw(subject_digest, kind, environment, commit)
        self.prove(found)
        return found

    def entries(
        self,
        *,
        subject_digest: str | None = None,
        kind: EvidenceKind | None = None,
        environment: str | None = None,
        commit: str | None = None,
    ) -> list[VerifiedEntry]:
        """The entries matching the filters that verify, oldest first; of copies of one
        statement only the first."""
        found = []
        for entry in self.rows(
            subject_digest=subject_digest, kind=kind, environment=environment, commit=commit
        ):
            verified = self.verify(entry)
            if verified is not None:
                found.append(verified)
        return self.first_copies(found)

    def first_copies(self, items: Sequence[VerifiedEntry]) -> list[VerifiedEntry]:
        """``items`` (oldest first) without later copies of a statement, each named."""
        first: dict[str, int] = {}
        kept = []
        for item in items:
            held = first.setdefault(item.statement_sha256, item.entry.index)
            if held != item.entry.index:
                self.ignored.append(
                    f"ledger #{item.entry.index} ignored: a replay of the statement "
                    f"ledger #{held} holds"
                )
                continue
            kept.append(item)
        return kept

    def replay_of(self, item: VerifiedEntry) -> int | None:
        """The earlier entry of the same digest holding ``item``'s statement, if any."""
        from conveyor.ledger import statement_sha256

        cache = self._cache
        if cache is not None and self._generation is not None:
            known = cache.known(item.entry)
            if known is not None and known.no_replay == self._generation:
                return None  # its earlier rows, proved leaves of this tree, were read before
        for entry in self.rows(subject_digest=item.entry.subject_digest):
            if entry.index >= item.entry.index:
                break
            if statement_sha256(entry.envelope) == item.statement_sha256:
                return entry.index
        generation = self._generation
        if cache is not None and generation is not None:
            cache.learn(item.entry, generation, no_replay=generation)
        return None

    def newest(
        self,
        *,
        kind: EvidenceKind,
        environment: str | None = None,
    ) -> Iterator[Entry]:
        """Rows of ``kind`` (and ``environment``), newest first, read in growing pages from
        the head down (one indexed query each): the cost follows how far back the answer is,
        not the ledger's size. Rows are not proved or verified here."""
        end: int | None = None  # from the newest row there is (prove() reads the head)
        page = _FIRST_PAGE
        while True:
            rows = self.workspace.ledger.entries(
                kind=kind.value, environment=environment, end=end, newest_first=True, limit=page
            )
            yield from rows
            if len(rows) < page:
                return
            end = rows[-1].index
            page = min(page * 4, _LARGEST_PAGE)

    def latest(
        self,
        *,
        subject_digest: str | None = None,
        kind: EvidenceKind | None = None,
        environment: str | None = None,
    ) -> VerifiedEntry | None:
        """The newest entry matching the filters that verifies (older ones are not checked);
        a replay of an older statement does not count."""
        if subject_digest is None and kind is not None:
            candidates: Iterable[Entry] = self.newest(kind=kind, environment=environment)
        else:
            candidates = reversed(self._raw(subject_digest, kind, environment, None))
        for entry in candidates:
            self.prove([entry])
            verified = self.verify(entry)
            if verified is None:
                continue
            held = self.replay_of(verified)
            if held is not None:
                self.ignored.append(
                    f"ledger #{entry.index} ignored: a replay of the statement ledger #{held} holds"
                )
                continue
            return verified
        return None

    def _raw(
        self,
        subject_digest: str | None,
        kind: EvidenceKind | None,
        environment: str | None,
        commit: str | None,
    ) -> list[Entry]:
        return self.workspace.ledger.entries(
            subject_digest=subject_digest,
            kind=kind.value if kind is not None else None,
            environment=environment,
            commit=commit,
        )

    def arrival(self, item: VerifiedEntry, environment: str) -> HistoryItem | None:
        """A verified promotion or rollback as an arrival in ``environment``; None (named in
        ``ignored``) when its signed statement is for another environment."""
        from conveyor.attest import read_promotion

        facts = read_promotion(item.predicate)
        if facts.to_environment != environment:
            self.ignored.append(
                f"ledger #{item.entry.index} ignored: signed for another environment"
            )
            return None
        digest = Digest.parse(item.entry.subject_digest)
        names = {item.entry.subject_name, *item.statement.names(digest)}
        if facts.repository:
            names.add(facts.repository)
        return HistoryItem(
            item.entry.index,
            item.entry.subject_digest,
            item.entry.recorded_time,
            item.signer,
            facts.rollback,
            facts.break_glass,
            repository=facts.repository,
            names=tuple(sorted(names)),
            signed_at=item.signed_at,
        )

    def promotions(self, environment: str) -> list[HistoryItem]:
        """Every verified arrival in ``environment``, oldest first: promotions and rollbacks
        whose *signed* statement names that environment (the ledger column does not decide)."""
        verified = [
            item
            for kind in PROMOTION_KINDS
            for item in self.entries(kind=kind, environment=environment)
        ]
        verified.sort(key=lambda v: v.entry.index)
        items = []
        for item in self.first_copies(verified):
            arrival = self.arrival(item, environment)
            if arrival is not None:
                items.append(arrival)
        return items

    def current_arrival(self, environment: str) -> HistoryItem | None:
        """The last verified arrival in ``environment``, read newest first (its cost does
        not grow with the environment's history)."""
        streams = [self.newest(kind=kind, environment=environment) for kind in PROMOTION_KINDS]
        heads: list[Entry | None] = [next(stream, None) for stream in streams]
        while any(head is not None for head in heads):
            pick = max(
                (i for i, head in enumerate(heads) if head is not None),
                key=lambda i: heads[i].index,  # type: ignore[union-attr]
            )
            entry = heads[pick]
            assert entry is not None
            heads[pick] = next(streams[pick], None)
            self.prove([entry])
            item = self.verify(entry)
            if item is None:
                continue
            held = self.replay_of(item)
            if held is not None:
                self.ignored.append(
                    f"ledger #{entry.index} ignored: a replay of the statement ledger #{held} holds"
                )
                continue
            arrival = self.arrival(item, environment)
            if arrival is not None:
                return arrival
        return None

    def current(self, environment: str) -> Digest | None:
        """The digest that arrived last in ``environment``."""
        arrival = self.current_arrival(environment)
        return Digest.parse(arrival.digest) if arrival else None

    def commits(self, digests: Iterable[str]) -> dict[str, str]:
        """digest -> the commit its (latest verified) build record names."""
        from conveyor.attest import read_provenance

        found: dict[str, str] = {}
        for digest in set(digests):
            for item in self.entries(subject_digest=digest, kind=EvidenceKind.BUILD):
                commit = read_provenance(item.predicate).commit
                if commit:
                    found[digest] = commit
        return found


# --- the policy engine's view --------------------------------------------------------------


@dataclass
class _Collected:
    builds: list[BuildEvidence] = field(default_factory=list)
    tests: list[TestEvidence] = field(default_factory=list)
    scans: list[ScanEvidence] = field(default_factory=list)
    smokes: list[SmokeEvidence] = field(default_factory=list)
    approvals: list[ApprovalEvidence] = field(default_factory=list)
    promotions: list[PromotionEvidence] = field(default_factory=list)


def _build(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_provenance

    facts = read_provenance(item.predicate)
    if facts.commit:
        into.builds.append(
            BuildEvidence(item.ref, facts.commit, facts.run_id, facts.builder_id, dict(labels))
        )


def _tests(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_test_result

    result = read_test_result(item.predicate)
    into.tests.append(TestEvidence(item.ref, result.passed, result.failed, 0, result.skipped))


def _scan(item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]) -> None:
    from conveyor.attest import read_vulnerability_scan

    scan = read_vulnerability_scan(item.predicate)
    into.scans.append(
        ScanEvidence(
            item.ref,
            item.signed_at,  # the reader refused a scan without a readable finish time
            {k.lower(): v for k, v in scan.counts.items()},
            tuple((i, s.lower()) for i, s in scan.findings),
        )
    )


def _smoke(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_smoke

    smoke = read_smoke(item.predicate)
    if smoke.environment:
        into.smokes.append(SmokeEvidence(item.ref, smoke.environment, smoke.passed))


def _approval(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_approval

    approval = read_approval(item.predicate)
    if approval.environment:
        into.approvals.append(ApprovalEvidence(item.ref, approval.environment, str(digest)))


def _promotion(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    from conveyor.attest import read_promotion

    promotion = read_promotion(item.predicate)
    if promotion.to_environment:
        into.promotions.append(
            PromotionEvidence(
                item.ref,
                promotion.to_environment,
                str(digest),
                rollback=promotion.rollback,
                break_glass=promotion.break_glass,
            )
        )


def _counts_for_nothing(
    item: VerifiedEntry, into: _Collected, digest: Digest, labels: Mapping[str, str]
) -> None:
    """A break-glass admission is a record, never an approval or a promotion."""


_Reader = Callable[[VerifiedEntry, _Collected, Digest, Mapping[str, str]], None]
_READERS: Mapping[EvidenceKind, _Reader] = {
    EvidenceKind.BUILD: _build,
    EvidenceKind.TESTS: _tests,
    EvidenceKind.SCAN: _scan,
    EvidenceKind.SMOKE: _smoke,
    EvidenceKind.APPROVAL: _approval,
    EvidenceKind.PROMOTION: _promotion,
    EvidenceKind.ROLLBACK: _promotion,
    EvidenceKind.BREAK_GLASS: _counts_for_nothing,
}


def evidence_for(
    verified: Sequence[VerifiedEntry], digest: Digest, labels: Mapping[str, str]
) -> EvidenceSet:
    """The policy engine's view of one digest, from its verified ledger entries."""
    collected = _Collected()
    for item in verified:
        kind = item.kind
        if kind is not None:
            _READERS[kind](item, collected, digest, labels)
    return EvidenceSet(
        digest=str(digest),
        builds=tuple(collected.builds),
        tests=tuple(collected.tests),
        scans=tuple(collected.scans),
        smokes=tuple(collected.smokes),
        approvals=tuple(collected.approvals),
        promotions=tuple(collected.promotions),
    )


def _at(predicate: Mapping[str, Any], *path: str) -> object:
    value: object = predicate
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


# Where each kind signs its time; ``True``: a statement without one does not count.
_SIGNED_TIMES: Mapping[EvidenceKind, tuple[tuple[tuple[str, ...], ...], bool]] = {
    EvidenceKind.BUILD: ((("runDetails", "metadata", "finishedOn"),
                          ("runDetails", "metadata", "startedOn")), False),
    EvidenceKind.TESTS: ((("conveyor", "testedOn"),), False),
    EvidenceKind.SCAN: ((("metadata", "scanFinishedOn"),), True),
    EvidenceKind.SMOKE: ((("testedOn",),), False),
    EvidenceKind.APPROVAL: ((("approvedOn",),), False),
    EvidenceKind.PROMOTION: ((("promotedOn",),), False),
    EvidenceKind.ROLLBACK: ((("promotedOn",),), False),
    EvidenceKind.BREAK_GLASS: ((("admittedOn",),), True),
}  # fmt: skip


def signed_time(kind: EvidenceKind, predicate: Mapping[str, Any]) -> datetime | None:
    """The time signed in a predicate of ``kind``; None when it names none (statements of
    older conveyors). Raises ``ValueError`` when the time does not parse, or a scan names
    no finish time: such evidence does not count (never the record time instead)."""
    paths, required = _SIGNED_TIMES[kind]
    for path in paths:
        value = _at(dict(predicate), *path)
        if value is None:
            continue
        moment = parse_time(value) if isinstance(value, str) else None
        if moment is None:
            raise ValueError(
                f"its signed time {'.'.join(path)} = {str(value)[:40]!r} does not parse"
            )
        return moment
    if required:
        raise ValueError(f"it names no signed time ({'.'.join(paths[0])})")
    return None


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
