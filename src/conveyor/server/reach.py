"""What ``conveyor serve`` may open: only the registries and layouts conveyor.yaml names.

A request names a reference; without this the server would open any path on its disk
(answering whether it exists) or connect to any host and port (a probe from inside the
team's network). ``Reach.admit`` is given every target before the server's opener touches
the filesystem or the network (``RegistryOptions.reach``), so the API, the web page and
everything recorded through the server get the same rule; the CLI in direct mode has none.

Allowed: each environment's repository (exactly that repository, or that layout directory),
``server.registries`` (``host[:port]``: every repository there; ``host[:port]/prefix``: that
repository and those under it) and ``server.layouts`` (directories: layouts at or under
them). Hosts compare case-insensitively, IPv6 literals in their compressed form, and
``index.docker.io``/``registry-1.docker.io`` as ``docker.io``; anything else (another port,
another spelling of an address) is another location. A layout path is screened by its text
first, so nothing outside the configured directories is looked at; one inside is then
compared by its real path (symlinks and ``..`` resolved) and opened by that path.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.oci.name import DEFAULT_REGISTRY, LayoutReference, Reference
from conveyor.server.auth import NotAllowed

if TYPE_CHECKING:
    from conveyor.oci.name import Target
    from conveyor.policy.config import Config

REFUSAL = (
    "not allowed: the server opens only the registries and layouts conveyor.yaml names "
    "(the environments' repositories, server.registries and server.layouts)"
)
# Names the registry client reaches Docker Hub by: one location.
_DOCKER_HUB = {"index.docker.io", "registry-1.docker.io"}


def canonical_registry(registry: str) -> str:
    """``host[:port]`` compared as one location: host lowercased, IPv6 compressed."""
    if registry.startswith("["):
        address, _, rest = registry[1:].partition("]")
        try:
            address = ipaddress.IPv6Address(address).compressed
        except ValueError:
            address = address.lower()
        return f"[{address}]{rest}"
    host, colon, port = registry.partition(":")
    host = host.lower()
    if host in _DOCKER_HUB:
        host = DEFAULT_REGISTRY
    return f"{host}{colon}{port}"


def _with_real(paths: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((path, os.path.realpath(path)) for path in paths)


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


@dataclass(frozen=True)
class Reach:
    repositories: frozenset[tuple[str, str]]  # (registry, repository), exactly
    prefixes: tuple[tuple[str, str], ...]  # (registry, prefix); "": the whole registry
    # (absolute, real) path pairs, resolved once when the configuration is read:
    layouts: tuple[tuple[str, str], ...]  # layout directories, exactly
    layout_dirs: tuple[tuple[str, str], ...]  # directories: layouts at or under them

    @classmethod
    def of(cls, config: Config) -> Reach:
        from conveyor.policy.config import registry_location

        repositories: set[tuple[str, str]] = set()
        layouts: list[str] = []
        for name in config.model.environments:
            target = config.environment_target(name)
            if isinstance(target, LayoutReference):
                layouts.append(os.path.abspath(target.path))
            else:
                repositories.add((canonical_registry(target.registry), target.repository))
        spec = config.model.server
        prefixes: list[tuple[str, str]] = []
        layout_dirs: list[str] = []
        if spec is not None:
            for entry in spec.registries:
                registry, prefix = registry_location(entry)
                prefixes.append((canonical_registry(registry), prefix))
            layout_dirs = [os.path.abspath(config.resolve_path(d)) for d in spec.layouts]
        return cls(
            frozenset(repositories), tuple(prefixes), _with_real(layouts), _with_real(layout_dirs)
        )

    def admit(self, target: Target) -> Target:
        """``target`` (a layout by its real path) if the server may open it; else raise
        ``NotAllowed`` with one message that says nothing about the target."""
        if isinstance(target, LayoutReference):
            return self._admit_layout(target)
        if self._admits_repository(target):
            return target
        raise NotAllowed(REFUSAL)

    def _admits_repository(self, target: Reference) -> bool:
        registry = canonical_registry(target.registry)
        if (registry, target.repository) in self.repositories:
            return True
        return any(
            registry == host
            and (
                not prefix
                or target.repository == prefix
                or target.repository.startswith(prefix + "/")
            )
            for host, prefix in self.prefixes
        )

    def _admit_layout(self, target: LayoutReference) -> LayoutReference:
        # abspath is textual (cwd and ".." only): a path outside every configured location
        # is refused before anything on disk is looked at.
        lexical = os.path.abspath(target.path)
        if not self._admits_path(lexical, textual=True):
            raise NotAllowed(REFUSAL)
        real = os.path.realpath(lexical)
        if not self._admits_path(real, textual=False):
            raise NotAllowed(REFUSAL)
        return LayoutReference(real, target.tag, target.digest)

    def _admits_path(self, path: str, *, textual: bool) -> bool:
        def forms(pair: tuple[str, str]) -> tuple[str, ...]:
            return pair if textual else pair[1:]

        return any(path in forms(layout) for layout in self.layouts) or any(
            _within(path, form) for pair in self.layout_dirs for form in forms(pair)
        )
