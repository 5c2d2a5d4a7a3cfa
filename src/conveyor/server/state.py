"""What one ``conveyor serve`` process holds: its settings, and what it can rebuild — the
parsed conveyor.yaml, the one ``service.Workspace`` (trusted keys, ledger, registry opener),
the token store, the server's signing key — and its metrics. Nothing another replica needs.
Route modules import ``ServerState`` from here (``app`` imports the route modules).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.errors import ConfigError, ConveyorError
from conveyor.server.observe import Metrics
from conveyor.server.problems import Unavailable

if TYPE_CHECKING:
    from conveyor.attest import Signer
    from conveyor.ledger import Ledger
    from conveyor.oci.name import Target
    from conveyor.oci.store import Repository
    from conveyor.policy.config import Config
    from conveyor.server.reach import Reach
    from conveyor.server.snapshots import DriftStore
    from conveyor.server.tokens import TokenStore
    from conveyor.service import RegistryOptions, Workspace

T = TypeVar("T")
MIB = 1024 * 1024
MAX_JSON_BYTES = 1 * MIB
MAX_REPORT_BYTES = 50 * MIB
# How long a computed read answer (status, check) is given again while the ledger's head is
# unchanged (``Answers``). Gates read the clock (scan ages, freeze windows, signed-time
# bounds) and the registry (tags): both may change the answer with the head unchanged, and
# no earliest change time can be known for a tag. 1 s is far inside the 5 min clock skew
# the verified reader already grants every signer.
REUSE_SECONDS = 1.0
# Worker threads for the read endpoints (status, check) of one process. One process's Python
# runs one thread at a time, so more threads add only switching; and at most this many read
# at once stay within the ledger's and token store's pools (5 connections each), so no
# connection is opened and closed per request.
READ_THREADS = 4


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server reads from its environment, read once (``from_environment``)."""

    config_path: Path
    ledger_url: str | None = None  # None: the config's ledger (ledger.url or the default)
    insecure_registries: tuple[str, ...] = ()
    max_json_bytes: int = MAX_JSON_BYTES
    max_report_bytes: int = MAX_REPORT_BYTES
    key_password: bytes | None = field(default=None, repr=False)  # CONVEYOR_KEY_PASSWORD

    @classmethod
    def from_environment(
        cls, config: str | Path | None = None, environ: MutableMapping[str, str] | None = None
    ) -> ServerSettings:
        from conveyor.policy.config import find_config

        env = os.environ if environ is None else environ
        path = find_config(config or env.get("CONVEYOR_CONFIG") or None)
        hosts = tuple(
            h.strip() for h in env.get("CONVEYOR_INSECURE_REGISTRIES", "").split(",") if h.strip()
        )
        password = env.get("CONVEYOR_KEY_PASSWORD")
        return cls(
            config_path=path.resolve(),
            ledger_url=env.get("CONVEYOR_DB") or None,
            insecure_registries=hosts,
            key_password=password.encode() if password else None,
        )


@dataclass
class ServerState:
    """What one server process holds: settings, caches it can rebuild, and metrics."""

    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _config: Config | None = None
    _config_stamp: tuple[int, int] | None = None
    _tokens: TokenStore | None = None
    _drift: DriftStore | None = None
    _signer: Signer | None = None
    _signer_for: tuple[int, int] | None = None
    _workspace: Workspace | None = None
    _ledger: Ledger | None = None
    _ledger_url: str | None = None
    _opener: _FreshOpener | None = None
    _reach: tuple[Config, Reach] | None = None
    _answers: tuple[Workspace, Answers] | None = None
    _readers: ThreadPoolExecutor | None = None

    # --- configuration: re-read when the file changes (every replica sees the same file) ---

    def config(self, *, force: bool = False) -> Config:
        from conveyor.policy.config import load_config

        path = self.settings.config_path
        try:
            stat = path.stat()
        except OSError as error:
            raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from error
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if force or self._config is None or stamp != self._config_stamp:
                self._config = load_config(path)
                self._config_stamp = stamp
            return self._config

    def ledger_url(self, config: Config | None = None) -> str:
        """The database of the ledger, and of the tables beside it (tokens, drift snapshots):
        CONVEYOR_DB, else the config's ledger (``ledger.url`` or the default)."""
        return self.settings.ledger_url or (config or self.config()).configured_ledger_url

    def workspace(self) -> Workspace:
        """The one workspace of this process (config, trusted keys, ledger, read cache),
        rebuilt when conveyor.yaml changes. Requests pass their own signer and principal.
        Its opener gives every repository a registry client of its own (``_FreshOpener``)."""
        return self._shared_workspace()

    def _shared_workspace(self) -> Workspace:
        from conveyor.ledger import open_ledger
        from conveyor.service import Settings, Workspace

        config = self.config()
        with self._lock:
            if self._workspace is not None and self._workspace.config is config:
                return self._workspace
            url = self.ledger_url(config)
            if self._ledger is None or url != self._ledger_url:
                previous, self._ledger = self._ledger, open_ledger(url)
                self._ledger_url = url
                if previous is not None:
                    previous.close()
            if self._opener is None:
                self._opener = _FreshOpener(self.registry_options())
            settings = Settings(
                config_path=self.settings.config_path,
                ledger_url=url,
                key_password=self.settings.key_password,
                insecure_registries=self.settings.insecure_registries,
            )  # no CI context, no signing key: each request brings its signer and principal
            # The trusted keys are read here, once per version of the file.
            # It lives as long as this version of the file: rows it has checked are believed
            # again while they stay byte-for-byte the same (remember_reads).
            self._workspace = Workspace(
                config=config,
                ledger=self._ledger,
                opener=self._opener,
                settings=settings,
                remember_reads=True,
            )
            return self._workspace

    def answers(self, workspace: Workspace) -> Answers:
        """The memo of read answers computed over ``workspace`` (a new config: a new memo)."""
        with self._lock:
            if self._answers is None or self._answers[0] is not workspace:
                self._answers = (workspace, Answers())
            return self._answers[1]

    def readers(self) -> ThreadPoolExecutor:
        """The worker threads of the read endpoints (``READ_THREADS``), their own: a read
        never waits behind promotions holding FastAPI's shared threads."""
        with self._lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read")
            return self._readers

    def tokens(self) -> TokenStore:
        from conveyor.server.tokens import TokenStore

        with self._lock:
            if self._tokens is None:
                self._tokens = TokenStore.open(self.ledger_url())
            return self._tokens

    def drift_store(self) -> DriftStore:
        """The one drift snapshot store of this process, for the API and the pages alike."""
        from conveyor.server.snapshots import DriftStore

        with self._lock:
            if self._drift is None:
                self._drift = DriftStore.open(self.ledger_url())
            return self._drift

    def signer(self) -> Signer:
        """The server's signing key (``server.signing_key``), checked to be an identity with
        the role ``server`` and no other."""
        from conveyor.attest import load_signing_key

        config = self.config()
        spec = config.model.server.signing_key if config.model.server else None
        if not spec:
            raise Unavailable(
                f"this server records nothing: {config.path} sets no server.signing_key"
            )
        with self._lock:
            if self._signer is None or self._signer_for != self._config_stamp:
                signer = load_signing_key(
                    str(config.resolve_path(spec)), password=self.settings.key_password
                )
                _require_server_identity(config, signer)
                self._signer, self._signer_for = signer, self._config_stamp
            return self._signer

    def can_sign(self) -> bool:
        config = self.config()
        return bool(config.model.server and config.model.server.signing_key)

    def registry_options(self) -> RegistryOptions:
        from conveyor.service import RegistryOptions

        return RegistryOptions(
            insecure_registries=self.settings.insecure_registries, reach=self.admit
        )

    def admit(self, target: Target) -> Target:
        """The target to open if conveyor.yaml names its location, else ``NotAllowed``
        (server.registries, server.layouts): every repository the server opens passes here first."""
        from conveyor.server.reach import Reach

        config = self.config()
        with self._lock:
            if self._reach is None or self._reach[0] is not config:
                self._reach = (config, Reach.of(config))
            reach = self._reach[1]
        return reach.admit(target)

    def close(self) -> None:
        if self._readers is not None:
            self._readers.shutdown(wait=False, cancel_futures=True)
        if self._tokens is not None:
            self._tokens.close()
        if self._drift is not None:
            self._drift.close()
        if self._ledger is not None:
            self._ledger.close()
        if self._opener is not None:
            self._opener.close()


@dataclass(frozen=True)
class _Answer:
    head: tuple[int, bytes]  # the one verified head it was computed from
    started: float  # time.monotonic() when its computation began
    value: Any


class Answers:
    """Read answers (``status``, ``check``) this process computed, given again to requests
    that read the same ledger head (size and root) within ``seconds`` of the computation's
    start. Promotions and every write never look here: they decide afresh.

    - An answer is kept only when every head its computation's verified readers read
      (``service.heads_read``: each checked against the signed checkpoint) is the one head
      the request read before it: the answer is what the verified reader says of the tree
      with that root. A head the database changes (an append, a rewrite, a rollback of the
      table) is another key: computed afresh, fully verified.
    - Per process, never shared: nothing here is read from the database but the head.
    - One computation per key at a time; requests for the same key and head wait for it.
    - Bounded (least recently used keys go first); errors are not kept.
    """

    def __init__(self, seconds: float | None = None, limit: int = 256) -> None:
        self.seconds = REUSE_SECONDS if seconds is None else seconds
        self._limit = limit
        self._lock = threading.Lock()
        self._answers: OrderedDict[Hashable, _Answer] = OrderedDict()
        self._running: dict[Hashable, threading.Event] = {}
        self.computed = 0  # how many answers were computed here (tests, metrics)

    def get(
        self,
        key: Hashable,
        head: tuple[int, bytes],
        compute: Callable[[], T],
        *,
        seconds: float | None = None,
    ) -> T:
        """The answer for ``key`` at ``head``: one kept (for ``seconds``, default the memo's
        own bound), or ``compute()``'s."""
        from conveyor import service

        bound = self.seconds if seconds is None else seconds
        while True:
            with self._lock:
                found = self._answers.get(key)
                age = time.monotonic() - found.started if found is not None else bound
                if found is not None and age < bound and found.head == head:
                    self._answers.move_to_end(key)
                    if age < bound * REFRESH_AFTER or key in self._running:
                        kept: T = found.value
                        return kept
                    # Late in its bound: this request computes the next answer while the
                    # others are still given this one, so none of them waits for it.
                    running = self._running[key] = threading.Event()
                    break
                other = self._running.get(key)
                if other is None:
                    running = self._running[key] = threading.Event()
                    break
            # Another request computes this key: its answer is ours if its head is ours.
            if not other.wait(timeout=_WAIT_SECONDS):
                return compute()
        try:
            started = time.monotonic()
            with service.heads_read() as heads:
                value = compute()
            with self._lock:
                self.computed += 1
                if all(h == head for h in heads):
                    self._answers[key] = _Answer(head, started, value)
                    self._answers.move_to_end(key)
                    while len(self._answers) > self._limit:
                        self._answers.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._running[key]
            running.set()


# The part of its bound after which a kept answer's next request computes its successor.
REFRESH_AFTER = 0.75

# How long a request waits for another's computation of the same answer before computing it.
_WAIT_SECONDS = 30.0


class _FreshOpener:
    """The server's opener: every repository it opens gets a registry client of its own
    (its options carry ``ServerState.admit``: only what conveyor.yaml names is opened),
    closed when the repository is let go. A registry client's one deadline
    (``CONVEYOR_DEADLINE``) counts from its creation, so one client shared by every request
    of a long-lived process would refuse everything once that much time had passed."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options

    def __call__(self, target: Target, *, create: bool) -> Repository:
        from conveyor.service import RegistryOpener

        opener = RegistryOpener(self.options)
        try:
            repository = opener(target, create=create)
        except BaseException:
            opener.close()
            raise
        weakref.finalize(repository, opener.close)
        return repository

    def close(self) -> None:
        """Nothing is shared: each client goes with its repository."""


def _require_server_identity(config: Config, signer: Signer) -> None:
    from conveyor.attest import Verifier

    for identity in config.identities.values():
        if identity.key_path is None:
            continue
        try:
            keyid = Verifier.from_pem(identity.key_path).keyid
        except ConveyorError:
            continue
        if keyid == signer.keyid:
            if {str(role) for role in identity.roles} != {"server"}:
                raise ConfigError(
                    f"{config.path}: server.signing_key belongs to identity {identity.name!r}, "
                    "which must hold the role 'server' (and only it)"
                )
            return
    raise ConfigError(
        f"{config.path}: the public key of server.signing_key is not an identity; list it "
        "under identities with roles: [server]"
    )
