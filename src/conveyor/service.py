"""The operations users name, wiring registry, ledger and policy. Faces call only this.

Sections:
- options and results shared by the faces
- image operations: resolve, inspect, copy, tags (a registry or an ``oci:`` layout)
- sample images for the demo
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import InputError, ManifestError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.manifest import (
    MAX_CONFIG_BYTES,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    parse_config,
    parse_manifest,
)
from conveyor.oci.name import LayoutReference, Reference, parse_target
from conveyor.oci.store import RawManifest, Repository
from conveyor.registry.copy import CopyProgress, CopyResult, copy as _copy

if TYPE_CHECKING:
    from conveyor.registry.client import RegistryClient

__all__ = [
    "CopyProgress",
    "CopyResult",
    "ImageInspection",
    "RegistryOptions",
    "ResolvedImage",
    "copy_image",
    "create_sample_image",
    "inspect",
    "list_tags",
    "resolve",
]

INSECURE_REGISTRIES_ENV = "CONVEYOR_INSECURE_REGISTRIES"


# --- options and results ------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. ``transport`` is an httpx transport, for tests only."""

    insecure_registries: tuple[str, ...] = ()
    docker_config_dir: Path | None = None
    transport: Any = None
    concurrency: int = 6

    @classmethod
    def from_environment(
        cls, insecure_registries: Sequence[str] = (), **kwargs: Any
    ) -> RegistryOptions:
        """Options from flags plus ``CONVEYOR_INSECURE_REGISTRIES`` (comma-separated)."""
        hosts = [h.strip() for h in insecure_registries if h.strip()]
        hosts += [
            h.strip() for h in os.environ.get(INSECURE_REGISTRIES_ENV, "").split(",") if h.strip()
        ]
        return cls(insecure_registries=tuple(dict.fromkeys(hosts)), **kwargs)


@dataclass(frozen=True)
class ResolvedImage:
    name: str  # "registry/repository" or "oci:PATH"
    digest: Digest
    media_type: str

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}"


@dataclass(frozen=True)
class ImageInspection:
    name: str
    digest: Digest
    media_type: str
    platforms: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    created: str | None
    total_size: int
    config_digest: Digest | None = None
    labels_from: str | None = None  # the platform whose config gave the labels, for an index
    children: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reference": self.reference,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "platforms": self.platforms,
            "labels": self.labels,
            "annotations": self.annotations,
            "created": self.created,
            "total_size": self.total_size,
            "config_digest": str(self.config_digest) if self.config_digest else None,
            "labels_from": self.labels_from,
            "manifests": self.children,
        }


# --- image operations ---------------------------------------------------------------------


def resolve(text: str, *, options: RegistryOptions | None = None) -> ResolvedImage:
    """Resolve a reference (tag or digest) to the digest of what it names, exactly once."""
    target = parse_target(text, strict=True)
    with _session(options) as open_repository:
        repository = open_repository(target, create=False)
        raw = repository.get_manifest(_wanted(target))
    return ResolvedImage(_name(target), raw.digest, raw.media_type)


def inspect(text: str, *, options: RegistryOptions | None = None) -> ImageInspection:
    """Digest, media type, platforms, labels, annotations, created and total size."""
    target = parse_target(text, strict=True)
    with _session(options) as open_repository:
        repository = open_repository(target, create=False)
        top = repository.get_manifest(_wanted(target))
        return _inspect(repository, _name(target), top)


def copy_image(
    source: str,
    destination: str,
    *,
    options: RegistryOptions | None = None,
    progress: CopyProgress | None = None,
) -> CopyResult:
    """Copy an image or a whole index, keeping its digest.

    The destination tag defaults to the source tag; a destination digest must equal the
    source digest (it is a check, not a rename).
    """
    src = parse_target(source, strict=True)
    dst = parse_target(destination)
    tag = dst.tag if dst.tag is not None else src.tag
    opts = options or RegistryOptions()
    with _session(opts) as open_repository:
        src_repository = open_repository(src, create=False)
        dst_repository = open_repository(dst, create=True)
        if dst.digest is not None:
            top = src_repository.get_manifest(_wanted(src))
            if top.digest != dst.digest:
                raise InputError(
                    f"destination digest {dst.digest.short} differs from the source digest "
                    f"{top.digest.short}; a copy never changes a digest"
                )
        return _copy(
            src_repository,
            _wanted(src),
            dst_repository,
            tags=[tag] if tag is not None else [],
            concurrency=opts.concurrency,
            progress=progress,
        )


def list_tags(text: str, *, options: RegistryOptions | None = None) -> list[str]:
    """Tags of a repository (``host/repo``) or of a layout (``oci:PATH``)."""
    target = parse_target(text)
    with _session(options) as open_repository:
        return open_repository(target, create=False).list_tags()


# --- sample images (demo) -------------------------------------------------------------------


def create_sample_image(
    layout_target: str, *, labels: Mapping[str, str], layer_sizes: tuple[int, ...] | None = None
) -> ResolvedImage:
    """Write a small fresh image into an OCI layout (``oci:PATH:TAG``), created if needed."""
    from conveyor.oci.sample import write_sample_image

    target = parse_target(layout_target, strict=True)
    if not isinstance(target, LayoutReference) or target.tag is None:
        raise InputError(f"{layout_target!r}: a sample image goes to oci:PATH:TAG")
    repository = LayoutRepository(Path(target.path), create=True)
    if layer_sizes:
        raw = write_sample_image(repository, tag=target.tag, labels=labels, layer_sizes=layer_sizes)
    else:
        raw = write_sample_image(repository, tag=target.tag, labels=labels)
    return ResolvedImage(_name(target), raw.digest, raw.media_type)


# --- internals ------------------------------------------------------------------------------


class _Opener:
    """Opens repositories for parsed targets; one registry client serves every registry."""

    def __init__(self, options: RegistryOptions) -> None:
        self._options = options
        self._client: RegistryClient | None = None

    def __call__(self, target: Reference | LayoutReference, *, create: bool) -> Repository:
        if isinstance(target, LayoutReference):
            return LayoutRepository(Path(target.path), create=create)
        if self._client is None:
            # httpx's package __init__ imports its own CLI (click, rich, pygments) when they
            # are installed, as they are here: ~0.1 s on every command. A None entry makes
            # that optional import fail fast, the documented fallback in httpx.
            sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
            from conveyor.registry.client import RegistryClient  # httpx: only when needed

            self._client = RegistryClient(
                insecure_registries=self._options.insecure_registries,
                docker_config_dir=self._options.docker_config_dir,
                transport=self._options.transport,
            )
        return self._client.repository(target)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@contextmanager
def _session(options: RegistryOptions | None) -> Iterator[_Opener]:
    opener = _Opener(options or RegistryOptions())
    try:
        yield opener
    finally:
        opener.close()


def _wanted(target: Reference | LayoutReference) -> str | Digest:
    if target.digest is not None:
        return target.digest
    if target.tag is not None:
        return target.tag
    raise InputError(f"{target} names no tag and no digest")  # strict parsing prevents it


def _name(target: Reference | LayoutReference) -> str:
    if isinstance(target, LayoutReference):
        return f"oci:{target.path}"
    return target.name


def _host_platform() -> tuple[str, str]:
    import platform

    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return "linux", arch


def _inspect(repository: Repository, name: str, top: RawManifest) -> ImageInspection:
    parsed = _parse(top, repository)
    sizes: dict[Digest, int] = {top.digest: len(top.data)}
    platforms: list[str] = []
    children: list[dict[str, Any]] = []
    image: ImageManifest | None = None
    labels_from: str | None = None
    if isinstance(parsed, ImageIndex):
        chosen: tuple[int, ImageManifest, str] | None = None
        host_os, host_arch = _host_platform()
        for descriptor in parsed.manifests:
            child_raw = repository.get_manifest(descriptor.digest)
            child = _parse(child_raw, repository)
            sizes[child_raw.digest] = len(child_raw.data)
            shown = str(descriptor.platform) if descriptor.platform else "unknown"
            platforms.append(shown)
            children.append(
                {"digest": str(descriptor.digest), "platform": shown, "size": descriptor.size}
            )
            if isinstance(child, ImageIndex):
                continue  # nested indexes: listed, not descended into for labels
            _add_blob_sizes(child, sizes)
            platform = descriptor.platform
            score = 0
            if platform is not None and platform.os == host_os:
                score = 2 if platform.architecture == host_arch else 1
            if platform is not None and platform.architecture == "unknown":
                score = -1  # attestation manifests of buildx
            if chosen is None or score > chosen[0]:
                chosen = (score, child, shown)
        if chosen is not None:
            _, image, labels_from = chosen
    else:
        image = parsed
        _add_blob_sizes(parsed, sizes)
    labels: dict[str, str] = {}
    created: str | None = None
    config_digest: Digest | None = None
    if image is not None:
        config = _read_config(repository, image)
        if config is not None:
            labels, created = dict(config.labels), config.created
            if not isinstance(parsed, ImageIndex) and config.architecture:
                platforms = [
                    f"{config.os or 'unknown'}/{config.architecture}"
                    + (f"/{config.variant}" if config.variant else "")
                ]
        config_digest = image.config.digest
    return ImageInspection(
        name=name,
        digest=top.digest,
        media_type=top.media_type,
        platforms=platforms,
        labels=labels,
        annotations=dict(parsed.annotations),
        created=created or parsed.annotations.get("org.opencontainers.image.created"),
        total_size=sum(sizes.values()),
        config_digest=config_digest,
        labels_from=labels_from,
        children=children,
    )


def _parse(raw: RawManifest, repository: Repository) -> ImageManifest | ImageIndex:
    try:
        return parse_manifest(raw.data, content_type=raw.media_type)
    except ManifestError as exc:
        raise ManifestError(f"{repository.display_name}@{raw.digest.short}: {exc}") from exc


def _add_blob_sizes(manifest: ImageManifest, sizes: dict[Digest, int]) -> None:
    for blob in manifest.blobs():
        sizes[blob.digest] = blob.size


def _read_config(repository: Repository, image: ImageManifest) -> ImageConfig | None:
    descriptor = image.config
    if descriptor.size > MAX_CONFIG_BYTES:
        raise ManifestError(
            f"image config {descriptor.digest.short} is {descriptor.size} bytes, over the "
            f"{MAX_CONFIG_BYTES}-byte limit"
        )
    if descriptor.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        return None  # an artifact (signature, SBOM...): no image config to read
    with repository.open_blob(descriptor.digest, size=descriptor.size) as chunks:
        data = b"".join(chunks)
    return parse_config(data)


# --- chain of custody and promotion (conveyor.custody, conveyor.promotion) ------------------
# Imported on first use: image commands (resolve, copy...) must not pay for pydantic, the
# policy engine and cryptography on every CI step.

if TYPE_CHECKING:
    from conveyor.custody import (
        AttachedAttestation as AttachedAttestation,
        GeneratedKey as GeneratedKey,
        Initialised as Initialised,
        Recorded as Recorded,
        UnknownSignerError as UnknownSignerError,
        approve as approve,
        attest_scan as attest_scan,
        attest_smoke as attest_smoke,
        attest_tests as attest_tests,
        audit_checkpoint as audit_checkpoint,
        audit_verify as audit_verify,
        generate_keys as generate_keys,
        init_workspace as init_workspace,
        list_attestations as list_attestations,
        record_build as record_build,
    )
    from conveyor.promotion import (
        CheckResult as CheckResult,
        EnvironmentStatus as EnvironmentStatus,
        HistoryItem as HistoryItem,
        PromotionDenied as PromotionDenied,
        PromotionResult as PromotionResult,
        Trace as Trace,
        TraceEvent as TraceEvent,
        check as check,
        history as history,
        promote as promote,
        rollback as rollback,
        status as status,
        trace as trace,
    )

_LAZY = {
    "AttachedAttestation": "conveyor.custody",
    "GeneratedKey": "conveyor.custody",
    "Initialised": "conveyor.custody",
    "Recorded": "conveyor.custody",
    "approve": "conveyor.custody",
    "attest_scan": "conveyor.custody",
    "attest_smoke": "conveyor.custody",
    "attest_tests": "conveyor.custody",
    "audit_checkpoint": "conveyor.custody",
    "audit_verify": "conveyor.custody",
    "generate_keys": "conveyor.custody",
    "init_workspace": "conveyor.custody",
    "list_attestations": "conveyor.custody",
    "record_build": "conveyor.custody",
    "UnknownSignerError": "conveyor.custody",
    "CheckResult": "conveyor.promotion",
    "EnvironmentStatus": "conveyor.promotion",
    "HistoryItem": "conveyor.promotion",
    "PromotionDenied": "conveyor.promotion",
    "PromotionResult": "conveyor.promotion",
    "Trace": "conveyor.promotion",
    "TraceEvent": "conveyor.promotion",
    "check": "conveyor.promotion",
    "history": "conveyor.promotion",
    "promote": "conveyor.promotion",
    "rollback": "conveyor.promotion",
    "status": "conveyor.promotion",
    "trace": "conveyor.promotion",
}
__all__ += list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor.service' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


# --- pin: rewrite deployment config to digests (conveyor.configs.pin) -----------------------

from conveyor.errors import VerificationError  # noqa: E402 - the pin section's own import

if TYPE_CHECKING:
    from conveyor.configs.pin import PinReport, Resolution
    from conveyor.custody import Workspace


class NotPromoted(VerificationError):
    """``pin --env ENV``: the ledger shows no promotion of this repository to ENV."""


class _RegistryPins:
    """Tags resolved through the registry (GET, digest of the bytes received); a digest
    already written is checked to exist. ``offline`` resolves nothing and checks nothing."""

    def __init__(self, opener: _Opener | None, *, offline: bool) -> None:
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


class _PromotedPins:
    """``--env ENV``: the digest most recently promoted (or rolled back) to ENV for the
    reference's repository, from ledger entries whose signatures verify; then checked to
    exist in the registry like any written digest."""

    def __init__(self, workspace: Workspace, environment: str, registry: _RegistryPins) -> None:
        self._workspace = workspace
        self._environment = environment
        self._registry = registry
        self._promoted: dict[str, Digest] | None = None
        self.ignored: list[str] = []

    def _load(self) -> dict[str, Digest]:
        # The one verified reader: signature, subject and the signer's role (deployer).
        from conveyor.attest import read_promotion
        from conveyor.promotion import PROMOTION_KINDS, VerifiedLedger

        verified = VerifiedLedger(self._workspace)
        promoted: dict[tuple[int, str], Digest] = {}
        items = [
            item
            for kind in PROMOTION_KINDS
            for item in verified.entries(kind=kind, environment=self._environment)
        ]
        for item in sorted(items, key=lambda i: i.entry.index):
            entry = item.entry
            digest = Digest.parse(entry.subject_digest)
            facts = read_promotion(item.predicate)
            if facts.to_environment != self._environment:
                verified.ignored.append(
                    f"ledger #{entry.index} ignored: signed for another environment"
                )
                continue
            names = {entry.subject_name, *item.statement.names(digest)}
            if facts.repository:
                names.add(facts.repository)
            for name in names:
                promoted[(entry.index, _repository_name(name))] = digest
        self.ignored.extend(verified.ignored)
        latest: dict[str, Digest] = {}
        for (_, name), digest in sorted(promoted.items()):
            latest[name] = digest
        return latest

    def pin(self, reference: Reference) -> Resolution:
        if self._promoted is None:
            self._promoted = self._load()
        digest = self._promoted.get(reference.name)
        if digest is None:
            note = f" ({len(self.ignored)} unverifiable entries ignored)" if self.ignored else ""
            raise NotPromoted(
                f"{reference.name} was never promoted to {self._environment} according to the "
                f"ledger{note}; promote it first or pin without --env"
            )
        return self._registry.verify(reference, digest, source="ledger")


def _repository_name(text: str) -> str:
    try:
        target = parse_target(text)
    except InputError:
        return text
    return _name(target)


def pin(
    paths: Sequence[str | Path],
    *,
    check: bool = False,
    env: str | None = None,
    lock: str | Path | None = None,
    from_lock: str | Path | None = None,
    options: RegistryOptions | None = None,
    config_path: str | Path | None = None,
    offline: bool = False,
    exclude: Sequence[str] = (),
) -> PinReport:
    """Rewrite every mutable image reference under ``paths`` to ``name:tag@digest``.

    The digest comes from the registry (a tag resolved now), from the ledger (``env``: what
    was promoted to that environment) or from a lock file (``from_lock``: no network at
    all). ``check`` writes nothing; ``lock`` writes the lock file of every reference pinned.
    A digest already written is checked to exist in the registry unless ``offline``.
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
        locked = read_lock(Path(from_lock))
        resolver = MappingResolver.from_lock(locked)
        report = plan(files, resolver, exclude=exclude, check=check, environment=env)
    else:
        with _session(options) as open_repository:
            registry = _RegistryPins(None if offline else open_repository, offline=offline)
            if env is not None:
                from conveyor.custody import _check_environment, open_workspace

                with open_workspace(config_path) as workspace:
                    _check_environment(workspace.config, env)
                    resolver = _PromotedPins(workspace, env, registry)
                    report = plan(files, resolver, exclude=exclude, check=check, environment=env)
            else:
                report = plan(files, registry, exclude=exclude, check=check)
    if not check:
        apply(report)
        if lock is not None:
            write_lock(Path(lock), report.lock)
    return report


__all__ += ["NotPromoted", "pin"]


# --- lint: deployment config and CI workflows -------------------------------------------------

if TYPE_CHECKING:
    from conveyor.configs.lint import LintReport, LintSettings


def lint_settings(config_path: str | Path | None = None) -> LintSettings:
    """The ``lint:`` section of conveyor.yaml (``--config``, ``CONVEYOR_CONFIG`` or
    ./conveyor.yaml); defaults when there is no config file. Only that section is read and
    checked, so lint works in a workspace whose keys or ledger are not set up."""
    from pydantic import ValidationError

    from conveyor.configs.lint import LintSettings
    from conveyor.errors import ConfigError
    from conveyor.policy.config import CONFIG_FILE_NAME, LintSpec, find_config
    from conveyor.yamlsource import load_yaml

    if (
        config_path is None
        and not os.environ.get("CONVEYOR_CONFIG")
        and not (Path.cwd() / CONFIG_FILE_NAME).is_file()
    ):
        return LintSettings()
    path = find_config(config_path)
    document = load_yaml(path)
    section = document.data.get("lint") if isinstance(document.data, dict) else None
    if section is None:
        return LintSettings()
    try:
        spec = LintSpec.model_validate(section)
    except ValidationError as exc:
        problems = [
            f"{document.where(('lint', *map(str, error['loc'])))}: "
            f"lint.{'.'.join(map(str, error['loc']))}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError(f"{path}: invalid 'lint' section: {problems[0]}", problems) from exc
    return LintSettings(severities=dict(spec.rules), exclude=tuple(spec.exclude))


def promoted_digests(environment: str, *, config_path: str | Path | None = None) -> set[str]:
    """Digests the ledger shows promoted (or rolled back) to ``environment``: only entries
    whose signatures verify and whose signed statement names that environment count."""
    from conveyor.promotion import history

    return {item.digest.lower() for item in history(environment, config_path=config_path)}


def lint(
    paths: Sequence[str | Path],
    *,
    environment: str | None = None,
    config_path: str | Path | None = None,
) -> LintReport:
    """Lint deployment config and CI workflows under ``paths`` (no network). With
    ``environment``, digests are checked against the ledger's promotions (CV008)."""
    from conveyor.configs.lint import lint as lint_files

    settings = lint_settings(config_path)
    lookup = None
    if environment is not None:
        promoted = promoted_digests(environment, config_path=config_path)

        def lookup(name: str) -> set[str]:
            return promoted if name == environment else set()

    return lint_files(
        [Path(path) for path in paths],
        settings=settings,
        environment=environment,
        promoted_digests=lookup,
    )


__all__ += ["lint", "lint_settings", "promoted_digests"]
