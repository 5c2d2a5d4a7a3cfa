"""A fake resolver for pin tests: a table of tags and a set of digests the "registry" holds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from conveyor.configs.pin import DigestNotFound, Resolution
from conveyor.errors import NotFoundError, RegistryError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference

WHEN = "2026-01-01T00:00:00Z"
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "pin"


def fake_digest(char: str) -> str:
    return "sha256:" + (char * 64)[:64]


# The digests the golden after-files were written with (by hand), per normalised reference.
TAGS: dict[str, str] = {
    "docker.io/library/nginx:1.25": fake_digest("a"),
    "docker.io/library/busybox:1.36": fake_digest("b"),
    "registry.example.com/team/migrate:2.1": fake_digest("d"),
    "registry.example.com/team/report:v3": fake_digest("c"),
    "registry.example.com/team/web:1.4.2": fake_digest("1"),
    "docker.io/bitnami/redis:7.2.4": fake_digest("2"),
    "docker.io/envoyproxy/envoy:v1.29.1": fake_digest("3"),
    "docker.io/prom/statsd-exporter:v0.26.0": fake_digest("4"),
    "registry.example.com/team/api-server:v2.0.1": fake_digest("5"),
    "docker.io/library/redis:7": fake_digest("6"),
    "docker.io/library/postgres:16-alpine": fake_digest("7"),
    "docker.io/library/node:20-bookworm": fake_digest("8"),
    "ghcr.io/example/linter:1.3": fake_digest("9"),
    "ghcr.io/example/deployer:2024.05": fake_digest("ab"),
    "docker.io/library/golang:1.22-bookworm": fake_digest("10"),
    "docker.io/library/alpine:3.19": fake_digest("20"),
    "gcr.io/distroless/static:nonroot": fake_digest("cd"),  # the before-file's ARG default
}
# Digests written in the before-files that the fake registry holds.
EXTRA_DIGESTS = {fake_digest("e"), fake_digest("cd")}


class FakeResolver:
    """Resolves tags from ``tags``; a written digest must be one the registry holds.

    ``down`` lists registry hosts that fail like an unreachable registry.
    """

    def __init__(
        self,
        tags: Mapping[str, str] | None = None,
        *,
        extra: set[str] | None = None,
        down: set[str] | None = None,
    ) -> None:
        self.tags = dict(TAGS if tags is None else tags)
        self.known = set(self.tags.values()) | (EXTRA_DIGESTS if extra is None else extra)
        self.down = down or set()
        self.calls: list[str] = []

    def pin(self, reference: Reference) -> Resolution:
        self.calls.append(str(reference))
        if reference.registry in self.down:
            raise RegistryError(f"{reference.registry}: connection refused", retryable=True)
        if reference.digest is not None:
            if str(reference.digest) not in self.known:
                raise DigestNotFound(f"{reference.name}@{reference.digest} is not in the registry")
            return Resolution(
                reference.digest, "present", reference.registry, "2026-01-01T00:00:00Z"
            )
        key = f"{reference.name}:{reference.tag}"
        if key not in self.tags:
            raise NotFoundError(f"{key}: manifest unknown")
        return Resolution(Digest.parse(self.tags[key]), "registry", reference.registry, WHEN)
