"""Image references: ``[registry/]repository[:tag][@digest]`` and ``oci:PATH[:tag][@digest]``.

The grammar and normalisation follow distribution/reference (what ``docker pull`` accepts):

- the first path component is a registry only when it contains ``.`` or ``:``, is
  ``localhost``, or contains an uppercase letter; otherwise the registry is ``docker.io``;
- ``index.docker.io`` is ``docker.io``, and a one-component Docker Hub name gets ``library/``;
- path components are lowercase alphanumerics joined by ``.``, ``_``, ``__`` or dashes;
- a tag is ``[\\w][\\w.-]{0,127}``; the whole name is at most 255 characters;
- ``name:tag@digest`` keeps both; the digest must be sha256 or sha512.

Where distribution/reference would accept a first component that is not a valid host (and
silently drop the domain), we refuse it: every ``Reference`` has a registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.errors import DigestError, InvalidReferenceError
from conveyor.oci.digest import Digest

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
DOCKER_TRANSPORT = "docker://"
# name (255) + ":" + tag (128) + "@sha512:" + 128 hex, rounded up: refuse megabytes early.
_REFERENCE_MAX = 1024
LAYOUT_TRANSPORT = "oci:"

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")(?::[0-9]+)?"
# \w must mean ASCII [A-Za-z0-9_] as in Go's RE2, not Unicode word characters.
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST_SHAPE = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT)
_REMOTE_NAME_RE = re.compile(_REMOTE_NAME)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_TAG_RE = re.compile(_TAG)
_DIGEST_SHAPE_RE = re.compile(_DIGEST_SHAPE)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# OCI image layout org.opencontainers.image.ref.name, one component (no "/"), and without
# ":" so that ``oci:PATH:TAG`` stays unambiguous.
_LAYOUT_TAG_RE = re.compile(r"[A-Za-z0-9]+(?:(?:[-._@+]|--)[A-Za-z0-9]+)*")
_LAYOUT_TAG_MAX = 255
# Other skopeo/containers transports: refused rather than misread as a Docker Hub name.
_OTHER_TRANSPORTS = (
    "oci-archive:",
    "docker-archive:",
    "docker-daemon:",
    "containers-storage:",
    "dir:",
    "ostree:",
    "sif:",
    "tarball:",
)


def _shorten(text: str, limit: int = 80) -> str:
    """A printable one-line copy of untrusted input for error messages."""
    short = text if len(text) <= limit else text[:limit] + "…"
    return repr(short)


def _fullmatch(pattern: re.Pattern[str], text: str) -> bool:
    # "$" would accept a trailing newline; fullmatch does not.
    return pattern.fullmatch(text) is not None


def _is_domain_like(component: str) -> bool:
    """distribution/reference's splitDockerDomain test for "this component is a registry"."""
    return (
        component == "localhost"
        or component == LEGACY_DEFAULT_REGISTRY
        or any(c in component for c in ".:")
        or component.lower() != component
    )


def _parse_digest(text: str, original: str) -> Digest:
    if not _fullmatch(_DIGEST_SHAPE_RE, text):
        raise InvalidReferenceError(
            f"invalid digest in reference {_shorten(original)}: expected @sha256:<64 hex> "
            "or @sha512:<128 hex>"
        )
    try:
        return Digest.parse(text)
    except DigestError as exc:
        raise InvalidReferenceError(
            f"invalid digest in reference {_shorten(original)}: {exc}"
        ) from exc


def _check_tag(tag: str, original: str) -> None:
    if not tag:
        raise InvalidReferenceError(f"empty tag in reference {_shorten(original)}")
    if len(tag) > 128:
        raise InvalidReferenceError(
            f"tag in reference {_shorten(original)} is {len(tag)} characters; at most 128 allowed"
        )
    if not _fullmatch(_TAG_RE, tag):
        raise InvalidReferenceError(
            f"invalid tag {_shorten(tag)} in reference {_shorten(original)}: a tag is letters, "
            "digits, '_', '.' and '-' and may not start with '.' or '-'"
        )


def _check_registry(registry: str, original: str) -> None:
    if not _fullmatch(_DOMAIN_RE, registry):
        raise InvalidReferenceError(
            f"invalid registry host {_shorten(registry)} in reference {_shorten(original)}: "
            "expected host[:port], IPv4 or [IPv6][:port]"
        )
    if not _is_domain_like(registry):
        raise InvalidReferenceError(
            f"registry {_shorten(registry)} would be read as a Docker Hub namespace: a "
            "registry host needs a '.', a ':port', uppercase letters or to be 'localhost'"
        )


def _check_repository(repository: str, original: str) -> None:
    if repository.lower() != repository:
        raise InvalidReferenceError(
            f"invalid reference {_shorten(original)}: repository name must be lowercase"
        )
    if not _fullmatch(_REMOTE_NAME_RE, repository):
        raise InvalidReferenceError(
            f"invalid repository name {_shorten(repository)} in reference "
            f"{_shorten(original)}: use lowercase letters and digits separated by '/', '.', "
            "'_', '__' or '-'"
        )


def _normalise(registry: str, repository: str) -> tuple[str, str]:
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = OFFICIAL_PREFIX + repository
    return registry, repository


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised registry reference. Construct with ``parse``; direct construction is
    validated and normalised too (``index.docker.io`` → ``docker.io``, ``library/``)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        registry, repository = _normalise(self.registry, self.repository)
        text = f"{registry}/{repository}"
        _check_registry(registry, text)
        _check_repository(repository, text)
        if len(text) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReferenceError(
                f"reference name {_shorten(text)} is {len(text)} characters; "
                f"at most {NAME_TOTAL_LENGTH_MAX} allowed"
            )
        if self.tag is not None:
            _check_tag(self.tag, text)
        if self.digest is not None and not isinstance(self.digest, Digest):
            raise InvalidReferenceError(f"digest of {_shorten(text)} must be a Digest")
        # Frozen: normalisation must bypass the generated __setattr__.
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> Reference:
        """Parse what a user or a config file wrote. ``strict`` refuses a reference with
        neither tag nor digest instead of letting it mean ``:latest`` later."""
        original = text
        if text.startswith(DOCKER_TRANSPORT):
            text = text[len(DOCKER_TRANSPORT) :]
        if not text:
            raise InvalidReferenceError("empty image reference: expected [registry/]name[:tag]")
        if len(text) > _REFERENCE_MAX:
            raise InvalidReferenceError(
                f"reference {_shorten(original)} is {len(text)} characters; far longer than "
                "any valid reference"
            )
        if any(c.isspace() or not c.isprintable() for c in text):
            raise InvalidReferenceError(
                f"invalid reference {_shorten(original)}: whitespace or control characters"
            )
        if _fullmatch(_IDENTIFIER_RE, text):
            raise InvalidReferenceError(
                f"invalid reference {_shorten(original)}: a bare 64-character hex string is "
                "not a repository name; write name@sha256:<hex>"
            )

        first, slash, rest = text.partition("/")
        if slash and _is_domain_like(first):
            registry, remainder = first, rest
        else:
            registry, remainder = DEFAULT_REGISTRY, text

        remainder, at, digest_text = remainder.partition("@")
        repository, colon, tag_text = remainder.partition(":")
        if not repository:
            raise InvalidReferenceError(
                f"invalid reference {_shorten(original)}: missing repository name"
            )
        if repository.lower() != repository:
            raise InvalidReferenceError(
                f"invalid reference {_shorten(original)}: repository name must be lowercase"
            )
        if ":" in tag_text:
            raise InvalidReferenceError(
                f"invalid reference {_shorten(original)}: more than one ':' after the name "
                "(a registry port must be followed by '/repository')"
            )
        if "@" in digest_text:
            raise InvalidReferenceError(
                f"invalid reference {_shorten(original)}: more than one '@'"
            )
        digest = _parse_digest(digest_text, original) if at else None
        tag: str | None = None
        if colon:
            _check_tag(tag_text, original)
            tag = tag_text
        _check_registry(registry, original)
        _check_repository(repository, original)
        if strict and tag is None and digest is None:
            raise InvalidReferenceError(
                f"reference {_shorten(original)} names no tag and no digest; add :tag or "
                "@sha256:... (conveyor never assumes :latest)"
            )
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    @property
    def wanted(self) -> str | Digest:
        """What this reference pins: the digest if it names one, else its tag."""
        return _wanted(self.tag, self.digest, self)

    @property
    def familiar(self) -> str:
        """The short form ``docker`` prints (``alpine:3.19``, ``user/app``); parses back to
        this same reference."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            path = self.repository
            short = path.removeprefix(OFFICIAL_PREFIX)
            if "/" not in short and not _fullmatch(_IDENTIFIER_RE, short):
                name = short
            elif not _is_domain_like(path.split("/", 1)[0]):
                # A first component like "foo.bar" would be read back as a registry.
                name = path
        return name + self._suffix()

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if known, else the tag, else ``latest``."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag if self.tag is not None else DEFAULT_TAG

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag is not None else ""
        if self.digest is not None:
            suffix += f"@{self.digest}"
        return suffix

    def __str__(self) -> str:
        return self.name + self._suffix()


def _check_layout_tag(tag: str, original: str) -> None:
    if not tag:
        raise InvalidReferenceError(f"empty tag in layout reference {_shorten(original)}")
    if len(tag) > _LAYOUT_TAG_MAX:
        raise InvalidReferenceError(
            f"layout tag in {_shorten(original)} is {len(tag)} characters; "
            f"at most {_LAYOUT_TAG_MAX} allowed"
        )
    if not _fullmatch(_LAYOUT_TAG_RE, tag):
        raise InvalidReferenceError(
            f"invalid layout tag {_shorten(tag)} in {_shorten(original)}: letters and digits "
            "joined by '.', '_', '-', '--', '+' or '@' (no '/', '..', ':' or NUL)"
        )


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """An artifact in an OCI image layout directory: ``oci:PATH[:tag][@digest]``.

    ``tag`` is the ``org.opencontainers.image.ref.name`` annotation in ``index.json``.
    """

    path: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise InvalidReferenceError("oci: needs a directory path, as in oci:./layout:tag")
        if "\x00" in self.path or any(not c.isprintable() for c in self.path):
            raise InvalidReferenceError(
                f"layout path {_shorten(self.path)} contains NUL or control characters"
            )
        if self.tag is not None:
            _check_layout_tag(self.tag, f"{LAYOUT_TRANSPORT}{self.path}:{self.tag}")
        if self.digest is not None and not isinstance(self.digest, Digest):
            raise InvalidReferenceError(f"digest of {_shorten(self.path)} must be a Digest")

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> LayoutReference:
        if not text.startswith(LAYOUT_TRANSPORT):
            raise InvalidReferenceError(f"layout reference {_shorten(text)} must start with 'oci:'")
        rest = text[len(LAYOUT_TRANSPORT) :]
        digest: Digest | None = None
        head, at, digest_text = rest.rpartition("@")
        # A suffix with a ':' and no '/' is meant as a digest, so a bad one is an error,
        # not silently part of the path.
        if at and ":" in digest_text and "/" not in digest_text:
            digest = _parse_digest(digest_text, text)
            rest = head
        tag: str | None = None
        head, colon, tag_text = rest.rpartition(":")
        if colon and "/" not in tag_text and tag_text and _fullmatch(_LAYOUT_TAG_RE, tag_text):
            tag, rest = tag_text, head
        elif colon and head and not tag_text:
            raise InvalidReferenceError(f"empty tag in layout reference {_shorten(text)}")
        if strict and tag is None and digest is None:
            raise InvalidReferenceError(
                f"layout reference {_shorten(text)} names no tag and no digest; add :tag or "
                "@sha256:..."
            )
        return cls(rest, tag, digest)

    @property
    def name(self) -> str:
        """``oci:PATH``: the layout as a target, without tag or digest."""
        return LAYOUT_TRANSPORT + self.path

    @property
    def wanted(self) -> str | Digest:
        """What this reference pins: the digest if it names one, else its tag."""
        return _wanted(self.tag, self.digest, self)

    def with_digest(self, digest: Digest) -> LayoutReference:
        return LayoutReference(self.path, self.tag, digest)

    def with_tag(self, tag: str | None) -> LayoutReference:
        return LayoutReference(self.path, tag, self.digest)

    def __str__(self) -> str:
        text = LAYOUT_TRANSPORT + self.path
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


# Where an image is or goes: a registry repository or an OCI layout.
Target = Reference | LayoutReference


def _wanted(tag: str | None, digest: Digest | None, target: object) -> str | Digest:
    if digest is not None:
        return digest
    if tag is not None:
        return tag
    raise InvalidReferenceError(f"{target} names no tag and no digest")


def parse_target(text: str, *, strict: bool = False) -> Reference | LayoutReference:
    """What users type for a source or destination: ``oci:PATH[:tag][@digest]``,
    ``docker://REF`` or a bare ``REF``."""
    if text.startswith(LAYOUT_TRANSPORT):
        return LayoutReference.parse(text, strict=strict)
    for transport in _OTHER_TRANSPORTS:
        if text.startswith(transport):
            raise InvalidReferenceError(
                f"transport {transport!r} in {_shorten(text)} is not supported; use "
                "oci:PATH[:tag] for an OCI layout or docker://REF (or a bare REF) for a registry"
            )
    return Reference.parse(text, strict=strict)
