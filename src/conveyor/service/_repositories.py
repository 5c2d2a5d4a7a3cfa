"""How repositories are reached: registry options and the opener that turns a parsed target
into a ``Repository`` (a registry repository or an ``oci:`` layout)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from conveyor.oci.name import LayoutReference, Target
from conveyor.oci.store import Repository

if TYPE_CHECKING:
    import httpx

    from conveyor.registry.client import RegistryClient

INSECURE_REGISTRIES_ENV = "CONVEYOR_INSECURE_REGISTRIES"


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. ``transport`` replaces the network (tests, a fake).
    ``reach``: which targets may be opened at all (the server's ``ServerState.admit``); it gets
    every target before anything is opened, raises to refuse, returns the target to open."""

    insecure_registries: tuple[str, ...] = ()
    docker_config_dir: Path | None = None
    transport: httpx.BaseTransport | None = None
    concurrency: int = 6
    reach: Callable[[Target], Target] | None = None

    @classmethod
    def from_environment(
        cls,
        insecure_registries: Sequence[str] = (),
        *,
        environ: Mapping[str, str] | None = None,
        docker_config_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        concurrency: int = 6,
    ) -> RegistryOptions:
        """Options from flags plus ``CONVEYOR_INSECURE_REGISTRIES`` (comma-separated)."""
        import os

        env = os.environ if environ is None else environ
        hosts = [h.strip() for h in insecure_registries if h.strip()]
        hosts += [h.strip() for h in env.get(INSECURE_REGISTRIES_ENV, "").split(",") if h.strip()]
        return cls(
            insecure_registries=tuple(dict.fromkeys(hosts)),
            docker_config_dir=docker_config_dir,
            transport=transport,
            concurrency=concurrency,
        )


class Opener(Protocol):
    """Opens the repository a target names; ``close`` releases what it opened."""

    def __call__(self, target: Target, *, create: bool) -> Repository: ...

    def close(self) -> None: ...


class RegistryOpener:
    """The default opener: layouts on disk, and one registry client for every registry,
    created on first use (image commands on layouts never import httpx)."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self._client: RegistryClient | None = None
        self._lock = threading.Lock()  # a server shares one opener between requests

    def __call__(self, target: Target, *, create: bool) -> Repository:
        if self.options.reach is not None:
            target = self.options.reach(target)
        if isinstance(target, LayoutReference):
            from conveyor.oci.layout import LayoutRepository  # registry commands never need it

            return LayoutRepository(Path(target.path), create=create)
        with self._lock:
            return self._registry_client().repository(target)

    def _registry_client(self) -> RegistryClient:
        if self._client is None:
            # httpx's package __init__ imports its own CLI (click, rich, pygments) when they
            # are installed, as they are here: ~0.1 s on every command. A None entry makes
            # that optional import fail fast, the documented fallback in httpx.
            sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
            from conveyor.registry.client import RegistryClient  # httpx: only when needed

            self._client = RegistryClient(
                insecure_registries=self.options.insecure_registries,
                docker_config_dir=self.options.docker_config_dir,
                transport=self.options.transport,
            )
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


@contextmanager
def open_session(options: RegistryOptions | None = None) -> Iterator[Opener]:
    """A ``RegistryOpener`` for one operation, closed at the end of it."""
    opener = RegistryOpener(options)
    try:
        yield opener
    finally:
        opener.close()
