"""Pin deployment config to digests: plan every rewrite, then apply it atomically.

``plan`` reads each file, finds its image sites (``conveyor.configs.extract``), asks a
``Resolver`` for the digest of every mutable reference and prepares the edited bytes; nothing
is written. ``apply`` writes the files that changed, each through a temp file and a rename.

A file is all or nothing: if one of its references fails (unparsable, unresolvable, a digest
the registry does not have, hostile YAML), the file is left exactly as it was and the run
goes on with the other files; the report carries an exit code for the worst failure.

This module does no network I/O: the resolver is given (the service wires the registry,
the ledger or a lock file; tests pass a dict).

How each form is rewritten (the tag always stays, for readers):
- ``scalar`` (``image: nginx:1.25``, compose, Actions ``container:``/``services:``/
  ``uses: docker://``) and ``line`` (Dockerfile ``FROM``): the reference text becomes
  ``nginx:1.25@sha256:…`` at the line and column where it was found.
- ``helm-split`` (``image.repository``/``image.tag``): ``digest: sha256:…`` is set (an empty
  ``digest: ""`` is filled in its quotes) or inserted after ``tag``.
- ``kustomize`` (``images:`` entries): ``digest: sha256:…`` likewise, after ``newTag``.
- Dynamic values (``${{ }}``, ``{{ }}``, ``$VAR``) and commands in scripts are never
  rewritten: they are reported as left alone.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from conveyor.configs.lockfile import LockEntry, LockFile, lock_key, write_atomically
from conveyor.configs.rewrite import (
    EditError,
    KeyInsert,
    TextEditor,
    YamlSubstitution,
    compose,
    find_mapping,
    find_node,
    scalar_text,
    set_mapping_value,
    verify_yaml,
)
from conveyor.configs.sites import ImageSite
from conveyor.errors import (
    ConveyorError,
    DigestError,
    InputError,
    InvalidReferenceError,
    StorageError,
    VerificationError,
)
from conveyor.oci.digest import Digest
from conveyor.oci.name import DOCKER_TRANSPORT, Reference

__all__ = [
    "PIN_ROLES",
    "DigestNotFound",
    "FileResult",
    "MappingResolver",
    "NotInLock",
    "PinReport",
    "Resolution",
    "Resolver",
    "SiteResult",
    "apply",
    "plan",
    "plan_file",
]

# Images that run somewhere: deployed, a CI service or job container, a build's base image.
# Pushed tags and Actions (`uses: owner/repo@v1`) are not images to pin.
PIN_ROLES = frozenset({"deploy", "service", "base"})
YAML_KINDS = frozenset(
    {"kubernetes", "helm-values", "kustomize", "compose", "github-actions", "gitlab-ci"}
)
MAX_FILE_BYTES = 10 * 1024 * 1024
_BOM = "\ufeff"


class DigestNotFound(VerificationError):
    """A digest written in a file that the registry does not hold (a wrong digest)."""


class NotInLock(InputError):
    """A reference the lock file has no entry for (``--from-lock``)."""


@dataclass(frozen=True)
class Resolution:
    """The digest a reference is pinned to, and where that digest came from."""

    digest: Digest
    source: str  # "registry" (a tag resolved) | "ledger" (--env) | "present" | "lock"
    registry: str
    resolved_at: str
    verified: bool = True  # False: a digest kept as written, not checked (offline)


class Resolver(Protocol):
    """Tells the digest to pin ``reference`` to.

    ``reference`` carries its tag and, when the file already names one, its digest. A
    resolver returns that digest after checking it (or another one: ``--env`` and
    ``--from-lock`` pin to what the ledger or the lock says), or raises a ``ConveyorError``
    (``DigestNotFound`` for a wrong digest, ``RegistryError`` when the registry fails us).
    """

    def pin(self, reference: Reference) -> Resolution: ...


def now_text() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class MappingResolver:
    """A resolver from a mapping of references to digests: the lock file, and tests.

    Keys are references in any spelling (``nginx:1.25``, ``docker.io/library/nginx:1.25``);
    a reference with a tag must have an entry. A reference written with only a digest is
    kept as written (nothing to look up, nothing to verify offline).
    """

    def __init__(
        self,
        digests: Mapping[str, Digest | str],
        *,
        source: str = "lock",
        what: str = "the lock file",
        resolved_at: Mapping[str, str] | None = None,
    ) -> None:
        self._digests: dict[str, Digest] = {}
        for key, value in digests.items():
            ref = Reference.parse(key.removeprefix(DOCKER_TRANSPORT))
            digest = value if isinstance(value, Digest) else Digest.parse(value)
            self._digests[lock_key(ref.with_digest(digest) if ref.tag is None else ref)] = digest
        self._source = source
        self._what = what
        self._resolved_at = dict(resolved_at or {})
        self.asked: list[str] = []  # every reference looked up, for tests

    @classmethod
    def from_lock(cls, lock: LockFile) -> MappingResolver:
        return cls(
            {key: entry.digest for key, entry in lock.images.items()},
            source="lock",
            resolved_at={key: entry.resolved_at for key, entry in lock.images.items()},
        )

    def pin(self, reference: Reference) -> Resolution:
        self.asked.append(str(reference))
        if reference.tag is None:
            if reference.digest is None:  # pragma: no cover - the planner refuses it first
                raise InvalidReferenceError(f"{reference.name} names no tag and no digest")
            return Resolution(
                reference.digest, "present", reference.registry, now_text(), verified=False
            )
        key = lock_key(_without_digest(reference))
        digest = self._digests.get(key)
        if digest is None:
            raise NotInLock(
                f"{key} is not in {self._what}; pin it with network access first "
                "(conveyor pin --lock FILE)"
            )
        return Resolution(
            digest, self._source, reference.registry, self._resolved_at.get(key, now_text())
        )


def _without_digest(reference: Reference) -> Reference:
    return Reference(reference.registry, reference.repository, reference.tag)


class _Cached:
    """One answer (or one error) per distinct reference in a run; a registry that is down
    (no answer, or 5xx after the client's retries) is not asked again in the same run."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._answers: dict[str, Resolution | ConveyorError] = {}
        self._down: dict[str, ConveyorError] = {}

    def pin(self, reference: Reference) -> Resolution:
        key = str(reference)
        if key not in self._answers and reference.registry in self._down:
            self._answers[key] = self._down[reference.registry]
        if key not in self._answers:
            try:
                self._answers[key] = self._resolver.pin(reference)
            except ConveyorError as exc:
                self._answers[key] = exc
                if _registry_down(exc):
                    self._down[reference.registry] = exc
        answer = self._answers[key]
        if isinstance(answer, ConveyorError):
            raise answer
        return answer


def _registry_down(exc: ConveyorError) -> bool:
    from conveyor.errors import AuthenticationError, NotFoundError, RegistryError

    if not isinstance(exc, RegistryError) or isinstance(exc, NotFoundError | AuthenticationError):
        return False
    return exc.status is None or exc.status >= 500


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteResult:
    """What happened to one image site.

    ``status``: ``pinned`` (a digest added), ``repinned`` (a digest replaced: ``--env`` or
    ``--from-lock`` named another one), ``unchanged`` (already pinned, digest checked),
    ``skipped`` (dynamic, a script command, not an image that runs) or ``error``.
    """

    line: int
    column: int
    kind: str
    role: str
    reference: str  # as written
    status: str
    new_reference: str | None = None
    digest: str | None = None
    source: str | None = None
    resolved_at: str | None = None
    message: str = ""
    exit_code: int = 0

    @property
    def noteworthy(self) -> bool:
        """Worth a note to the user: a skipped image that runs (deploy, service, base), or a
        reference left unchanged for a reason."""
        if self.status == "skipped":
            return self.role in ("deploy", "service", "base")
        return self.status == "unchanged" and bool(self.message)


@dataclass
class FileResult:
    path: Path
    display_path: str
    kind: str | None
    sites: list[SiteResult] = field(default_factory=list)
    before: bytes | None = None
    after: bytes | None = None  # None: nothing to write (unchanged or failed)
    error: str | None = None  # why the file is left as it was
    exit_code: int = 0
    written: bool = False

    @property
    def changed(self) -> bool:
        return self.after is not None and self.after != self.before

    @property
    def failed(self) -> bool:
        return self.error is not None

    def diff(self) -> str:
        """A unified diff of the change (empty when nothing changes)."""
        if not self.changed or self.before is None or self.after is None:
            return ""
        old = self.before.decode("utf-8").splitlines(keepends=True)
        new = self.after.decode("utf-8").splitlines(keepends=True)
        shown = self.display_path.lstrip("/")
        lines = difflib.unified_diff(old, new, fromfile=f"a/{shown}", tofile=f"b/{shown}")
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass
class PinReport:
    files: list[FileResult]
    lock: LockFile
    check: bool = False

    @property
    def changed(self) -> list[FileResult]:
        return [result for result in self.files if result.changed]

    @property
    def failed(self) -> list[FileResult]:
        return [result for result in self.files if result.failed]

    @property
    def exit_code(self) -> int:
        """The worst of: 3 (registry, disk), 2 (bad input), 1 (wrong digest, or ``--check``
        found something to change), 0."""
        code = max((result.exit_code for result in self.files), default=0)
        if self.check and self.changed:
            code = max(code, 1)
        return code


# --- planning -------------------------------------------------------------------------------

ExtractSites = Callable[..., list[ImageSite]]


def plan(
    paths: Sequence[Path],
    resolver: Resolver,
    *,
    exclude: Sequence[str] = (),
    check: bool = False,
    environment: str | None = None,
) -> PinReport:
    """Plan the pinning of every config file under ``paths``; writes nothing."""
    from conveyor.configs.files import discover
    from conveyor.configs.kustomize import placeholders

    cached = _Cached(resolver)
    results: list[FileResult] = []
    entries: dict[str, LockEntry] = {}
    found = list(discover(paths, exclude=exclude))
    kustomized = placeholders(path for path, _ in found)
    for path, display in found:
        result = plan_file(
            path,
            display,
            cached,
            lock_entries=entries,
            placeholders=kustomized.get(Path(os.path.abspath(path))),
        )
        if result.kind is None and not result.failed:
            continue  # not a config file we read
        results.append(result)
    return PinReport(results, LockFile(entries, environment), check=check)


def plan_file(
    path: Path,
    display_path: str,
    resolver: Resolver,
    *,
    kind: str | None = None,
    lock_entries: dict[str, LockEntry] | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    placeholders: Mapping[str, Path] | None = None,
) -> FileResult:
    """Plan one file. Any failure leaves ``after`` None and sets ``error``/``exit_code``.
    ``placeholders``: image names a kustomization that builds this file sets (left as
    they are; the kustomization's ``images:`` entry is pinned instead)."""
    result = FileResult(path, display_path, kind)
    try:
        _plan_into(result, resolver, kind, lock_entries, max_bytes, placeholders)
    except ConveyorError as exc:
        result.after = None
        result.error = str(exc)
        result.exit_code = max(result.exit_code, exc.exit_code)
    except (RecursionError, ValueError, TypeError) as exc:  # a parser meeting hostile input
        result.after = None
        result.error = f"{display_path}: cannot read it safely ({type(exc).__name__}); not pinned"
        result.exit_code = max(result.exit_code, 2)
    return result


def _read(path: Path, display: str, max_bytes: int) -> tuple[bytes, str]:
    from conveyor.configs.sites import ConfigFileError

    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ConfigFileError(
                    f"{display}: {size} bytes, larger than the {max_bytes}-byte limit; not pinned",
                    path=display,
                )
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigFileError(
            f"{display}: cannot read: {exc.strerror or exc}", path=display
        ) from exc
    if len(raw) > max_bytes:
        raise ConfigFileError(
            f"{display}: larger than the {max_bytes}-byte limit; not pinned", path=display
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigFileError(
            f"{display}:{line}: not valid UTF-8 (byte offset {exc.start}); not pinned",
            path=display,
        ) from exc
    return raw, text


def _plan_into(
    result: FileResult,
    resolver: Resolver,
    kind: str | None,
    lock_entries: dict[str, LockEntry] | None,
    max_bytes: int,
    placeholders: Mapping[str, Path] | None = None,
) -> None:
    from conveyor.configs.extract import extract_sites
    from conveyor.configs.files import detect_kind
    from conveyor.configs.kustomize import image_name, is_placeholder

    raw, text = _read(result.path, result.display_path, max_bytes)
    result.before = raw
    bom = text.startswith(_BOM)
    body = text.removeprefix(_BOM)  # positions are counted without the byte order mark
    kind = kind or detect_kind(result.path, body)
    result.kind = kind
    if kind is None:
        return
    sites = extract_sites(result.path, body, display_path=result.display_path, kind=kind)
    set_elsewhere = {
        id(site): placeholders[image_name(site.reference)]
        for site in sites
        if placeholders and is_placeholder(site, placeholders)
    }
    editor = TextEditor(body, what=result.display_path, yaml=kind in YAML_KINDS)
    documents: list[Any] | None = None
    if kind in YAML_KINDS and any(
        _wants_pin(site) and id(site) not in set_elsewhere for site in sites
    ):
        documents = compose(body, what=result.display_path)
    substitutions: list[YamlSubstitution] = []
    expected: dict[tuple[Any, ...], str] = {}
    local_entries: dict[str, LockEntry] = {}
    for site in sites:
        if id(site) in set_elsewhere:
            result.sites.append(
                SiteResult(
                    line=site.line,
                    column=site.column,
                    kind=site.kind,
                    role=site.role,
                    reference=site.reference,
                    status="skipped",
                    message=f"left as is: a placeholder that {set_elsewhere[id(site)]} sets "
                    "(images:)",
                )
            )
            continue
        outcome = _plan_site(site, resolver, editor, documents, substitutions, expected)
        result.sites.append(outcome)
        if outcome.exit_code:
            result.exit_code = max(result.exit_code, outcome.exit_code)
        elif outcome.digest is not None and outcome.source is not None:
            _remember(local_entries, site, outcome)
    failures = [site for site in result.sites if site.status == "error"]
    if failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        result.error = (
            f"{result.display_path}:{first.line}:{first.column}: {first.message}{more}; "
            "file not rewritten"
        )
        return
    if lock_entries is not None:
        lock_entries.update(local_entries)
    if not editor.changed:
        return
    new_body = editor.result()
    if documents is not None:
        verify_yaml(
            body, new_body, substitutions, what=result.display_path, old_documents=documents
        )
    _verify_sites(result, sites, new_body, expected, extract_sites, kind)
    result.after = ((_BOM if bom else "") + new_body).encode("utf-8")


def _runs(site: ImageSite) -> bool:
    """An image that runs: deployed, a CI container or service, a base image, or an
    Actions step ``uses: docker://IMAGE`` (other ``uses:`` are actions, not images)."""
    if site.role == "action":
        return site.reference.startswith(DOCKER_TRANSPORT)
    return site.role in PIN_ROLES


def _in_script(site: ImageSite) -> bool:
    """A reference inside a command (``run:`` scripts, shell files), not a config value."""
    return site.kind == "shell" or (site.form == "line" and site.kind != "dockerfile")


def _wants_pin(site: ImageSite) -> bool:
    return _runs(site) and not _in_script(site) and not site.dynamic


def _remember(entries: dict[str, LockEntry], site: ImageSite, outcome: SiteResult) -> None:
    assert outcome.digest is not None
    assert outcome.source is not None
    try:
        reference = _parse(_strip_digest(outcome.reference))
    except InvalidReferenceError:
        return
    digest = Digest.parse(outcome.digest)
    key = lock_key(reference if reference.tag is not None else reference.with_digest(digest))
    when = outcome.resolved_at or now_text()
    entries[key] = LockEntry(digest, reference.registry, when, outcome.source)


def _strip_transport(text: str) -> tuple[str, str]:
    if text.startswith(DOCKER_TRANSPORT):
        return DOCKER_TRANSPORT, text[len(DOCKER_TRANSPORT) :]
    return "", text


def _strip_digest(text: str) -> str:
    return text.split("@", 1)[0] if "@" in text else text


def _parse(text: str) -> Reference:
    _, bare = _strip_transport(text)
    reference = Reference.parse(bare)
    if reference.tag is None and reference.digest is None:
        raise InvalidReferenceError(
            f"{text!r} names no tag (an implicit :latest); write the tag you mean, then pin"
        )
    return reference


def _plan_site(
    site: ImageSite,
    resolver: Resolver,
    editor: TextEditor,
    documents: list[Any] | None,
    substitutions: list[YamlSubstitution],
    expected: dict[tuple[Any, ...], str],
) -> SiteResult:
    base: dict[str, Any] = {
        "line": site.line,
        "column": site.column,
        "kind": site.kind,
        "role": site.role,
        "reference": site.reference,
    }
    if not _runs(site):
        return SiteResult(**base, status="skipped", message=f"not pinned: a {site.role} reference")
    if _in_script(site):
        return SiteResult(
            **base, status="skipped", message="left as is: a command in a script (pin by hand)"
        )
    if site.dynamic:
        return SiteResult(
            **base,
            status="skipped",
            message="left as is: decided at run time (a template or variable)",
        )
    try:
        if site.form in ("scalar", "line"):
            return _plan_scalar(site, base, resolver, editor, documents, substitutions, expected)
        if site.form in ("helm-split", "kustomize"):
            return _plan_split(site, base, resolver, editor, documents, substitutions)
        raise InputError(f"unknown site form {site.form!r}")
    except ConveyorError as exc:
        message = str(exc)
        prefix = f"{site.display_path}:"
        if message.startswith(prefix):  # our own editor's messages already name the file
            message = message.split(": ", 1)[1] if ": " in message else message
        return SiteResult(**base, status="error", message=message, exit_code=exc.exit_code)


def _plan_scalar(
    site: ImageSite,
    base: dict[str, Any],
    resolver: Resolver,
    editor: TextEditor,
    documents: list[Any] | None,
    substitutions: list[YamlSubstitution],
    expected: dict[tuple[Any, ...], str],
) -> SiteResult:
    written = site.reference
    reference = _parse(written)
    resolution = resolver.pin(reference)
    if reference.digest == resolution.digest:
        return SiteResult(
            **base,
            status="unchanged",
            digest=str(resolution.digest),
            source=resolution.source,
            resolved_at=resolution.resolved_at,
            message="" if resolution.verified else "digest kept as written (not verified)",
        )
    new_written = f"{_strip_digest(written)}@{resolution.digest}"
    editor.replace(site.line, site.column, written, new_written)
    if site.kind in YAML_KINDS:
        if site.location is None or documents is None:
            raise EditError(f"{site.display_path}:{site.line}: no YAML path for {written!r}")
        old_value = scalar_text(find_node(documents, site.location, what=site.display_path))
        if old_value is None or old_value.count(written) != 1:
            raise EditError(
                f"{site.display_path}:{site.line}: {written!r} is not one value; pin it by hand"
            )
        substitutions.append(
            YamlSubstitution(tuple(site.location), old_value.replace(written, new_written))
        )
    expected[_site_key(site)] = new_written
    return SiteResult(
        **base,
        status="repinned" if reference.digest is not None else "pinned",
        new_reference=new_written,
        digest=str(resolution.digest),
        source=resolution.source,
        resolved_at=resolution.resolved_at,
    )


_SPLIT_ANCHORS = {
    "helm-split": ("registry", "repository", "image", "tag"),
    "kustomize": ("name", "newName", "newTag"),
}


def _plan_split(
    site: ImageSite,
    base: dict[str, Any],
    resolver: Resolver,
    editor: TextEditor,
    documents: list[Any] | None,
    substitutions: list[YamlSubstitution],
) -> SiteResult:
    if site.parent is None or documents is None:
        raise EditError(f"{site.display_path}:{site.line}: no YAML path for {site.reference!r}")
    mapping = find_mapping(documents, site.parent, what=site.display_path)
    present_pair = next((v for k, v in mapping.value if scalar_text(k) == "digest"), None)
    present = scalar_text(present_pair) if present_pair is not None else None
    reference = Reference.parse(_strip_digest(site.reference))
    note = ""
    if reference.tag is None and site.form == "helm-split":
        app_version = _chart_app_version(site.path)
        if app_version is not None:
            reference = reference.with_tag(app_version)
            note = "tag from Chart.yaml appVersion"
    if reference.tag is None:
        raise InvalidReferenceError(
            f"{site.reference!r} has no tag to resolve; set "
            f"{'image.tag' if site.form == 'helm-split' else 'newTag'}, then pin"
        )
    if present is not None and present.strip():
        try:
            reference = reference.with_digest(Digest.parse(present.strip()))
        except DigestError as exc:
            raise InvalidReferenceError(f"digest {present!r}: {exc}") from exc
    resolution = resolver.pin(reference)
    if reference.digest == resolution.digest:
        return SiteResult(
            **base,
            status="unchanged",
            digest=str(resolution.digest),
            source=resolution.source,
            resolved_at=resolution.resolved_at,
            message="" if resolution.verified else "digest kept as written (not verified)",
        )
    anchors = _SPLIT_ANCHORS[site.form]
    change = KeyInsert(tuple(site.parent), "digest", str(resolution.digest), anchors)
    set_mapping_value(editor, documents, change, what=site.display_path)
    substitutions.append(
        YamlSubstitution(tuple(site.parent), str(resolution.digest), key="digest", after=anchors)
    )
    return SiteResult(
        **base,
        status="repinned" if reference.digest is not None else "pinned",
        new_reference=f"{_without_digest(reference).familiar}@{resolution.digest}",
        digest=str(resolution.digest),
        source=resolution.source,
        resolved_at=resolution.resolved_at,
        message=note,
    )


MAX_CHART_BYTES = 1024 * 1024


def _chart_app_version(values: Path) -> str | None:
    """``appVersion`` of the ``Chart.yaml`` beside a values file: the tag Helm uses when
    ``image.tag`` is empty."""
    from conveyor.configs import yamlio

    chart = values.parent / "Chart.yaml"
    try:
        if not chart.is_file() or chart.stat().st_size > MAX_CHART_BYTES:
            return None
        text = chart.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    documents = yamlio.compose_documents(text, str(chart))
    if not documents or not yamlio.is_mapping(documents[0]):
        return None
    version = yamlio.text(yamlio.get(documents[0], "appVersion"))
    return version.strip() if version and version.strip() else None


def _site_key(site: ImageSite) -> tuple[Any, ...]:
    if site.location is not None:
        return ("yaml", *site.location, site.role)
    return ("line", site.line, site.column if site.kind == "shell" else 0, site.role)


def _verify_sites(
    result: FileResult,
    before: list[ImageSite],
    new_body: str,
    expected: dict[tuple[Any, ...], str],
    extract_sites: ExtractSites,
    kind: str,
) -> None:
    """Extract the sites of the edited text again: as many as before, and every rewritten
    reference reads back as intended."""
    after = extract_sites(result.path, new_body, display_path=result.display_path, kind=kind)
    if len(after) != len(before):
        raise EditError(
            f"{result.display_path}: the edit changed the number of image references "
            f"({len(before)} → {len(after)}); nothing written (please report this file)"
        )
    found: dict[tuple[Any, ...], list[str]] = {}
    for site in after:
        found.setdefault(_site_key(site), []).append(_strip_transport(site.reference)[1])
    for key, new_written in expected.items():
        if _strip_transport(new_written)[1] not in found.get(key, []):
            raise EditError(
                f"{result.display_path}: {new_written!r} does not read back after the edit; "
                "nothing written (please report this file)"
            )


# --- applying ---------------------------------------------------------------------------------


def apply(report: PinReport) -> None:
    """Write every changed file atomically. A file that changed on disk since it was read is
    not overwritten (an error on that file)."""
    for result in report.files:
        if not result.changed or result.after is None:
            continue
        try:
            current = result.path.read_bytes()
        except OSError as exc:
            _fail(result, StorageError(f"{result.display_path}: cannot read it again: {exc}"))
            continue
        if current != result.before:
            _fail(
                result,
                InputError(
                    f"{result.display_path}: changed on disk while pinning; not rewritten, "
                    "run pin again"
                ),
            )
            continue
        try:
            write_atomically(result.path, result.after)
        except ConveyorError as exc:
            _fail(result, exc)
            continue
        result.written = True


def _fail(result: FileResult, exc: ConveyorError) -> None:
    result.error = str(exc)
    result.exit_code = max(result.exit_code, exc.exit_code)
