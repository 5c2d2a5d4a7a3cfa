"""Typed, validated OCI / Docker schema 2 manifests, indexes, descriptors and image configs.

Every document comes from someone we do not trust (a registry, a layout on disk), so parsing
is strict: duplicate keys, NaN, invalid UTF-8, oversized or ambiguous documents and wrong
field types are refused with a ``ManifestError``. Unknown fields are ignored, as the OCI
image spec requires. Models are frozen dataclasses validated by hand: no coercion ever
turns ``"12"`` into ``12``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import DigestError, ManifestError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
_MAX_SIZE = 2**63 - 1  # descriptor sizes are int64

# RFC 6838 type/subtype, as the OCI descriptor spec asks of mediaType and artifactType.
_MEDIA_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# Content-Types that say nothing about which manifest this is.
_GENERIC_CONTENT_TYPES = frozenset({"", "application/json", "application/octet-stream"})


# --- strict JSON --------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:60]!r}")
        result[key] = value
    return result


def _check_structure(value: Any, what: str, *, check_strings: bool) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` and, when asked, lone UTF-16
    surrogates (``"\\ud800"``: valid JSON, but not encodable text). Iterative."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                raise ManifestError(f"{what} contains a lone UTF-16 surrogate escape")
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ManifestError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list) or (check_strings and isinstance(child, str)):
                stack.append((child, depth + 1))


def strict_json_loads(data: bytes, *, what: str = "document") -> Any:
    """Decode JSON from untrusted bytes, refusing what lenient parsers let through.

    Refused with a one-line ``ManifestError``: invalid UTF-8 (and a BOM), duplicate keys,
    ``NaN``/``Infinity``, nesting deeper than ``MAX_JSON_DEPTH``, lone surrogate escapes,
    trailing garbage.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ManifestError(f"{what} must be bytes, not {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{what} is not valid UTF-8 (byte {exc.start})") from exc
    if text.startswith("\ufeff"):
        raise ManifestError(f"{what} starts with a byte-order mark; JSON must not")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except RecursionError as exc:  # the C scanner recurses per level
        raise ManifestError(f"{what} is nested too deeply; refusing it") from exc
    except ValueError as exc:  # JSONDecodeError, our hooks, int digit limits
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(f"{what} is not valid JSON: {reason[:200]}") from exc
    if isinstance(value, dict | list):
        # Surrogates can only arrive as \\u escapes (raw ones fail UTF-8 decoding above).
        _check_structure(value, what, check_strings=_SURROGATE_ESCAPE_RE.search(text) is not None)
    elif isinstance(value, str) and _SURROGATE_RE.search(value):
        raise ManifestError(f"{what} contains a lone UTF-16 surrogate escape")
    return value


# --- field readers --------------------------------------------------------------------------


class _Fields:
    """Typed access to one JSON object with error messages that say where."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ManifestError(f"{where} must be a JSON object, not {_json_type(obj)}")
        self.obj: dict[str, Any] = obj
        self.where = where

    def _bad(self, key: str, expected: str) -> ManifestError:
        return ManifestError(
            f"{self.where}.{key} must be {expected}, not {_json_type(self.obj[key])}"
        )

    def has(self, key: str) -> bool:
        return key in self.obj

    def str_(self, key: str, *, required: bool = False) -> str | None:
        if key not in self.obj or (self.obj[key] is None and not required):
            if required:
                raise ManifestError(f"{self.where} lacks the required field {key!r}")
            return None
        value = self.obj[key]
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def req_str(self, key: str) -> str:
        value = self.str_(key, required=True)
        assert value is not None
        return value

    def int_(self, key: str) -> int:
        if key not in self.obj:
            raise ManifestError(f"{self.where} lacks the required field {key!r}")
        value = self.obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        return value

    def str_list(self, key: str) -> list[str]:
        value = self.obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return list(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(key, "an object of string values")
        return dict(value)

    def media_type(self, key: str, *, required: bool = False) -> str | None:
        value = self.str_(key, required=required)
        if value is not None and not _MEDIA_TYPE_RE.fullmatch(value):
            raise ManifestError(f"{self.where}.{key} {value[:80]!r} is not a valid media type")
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- models ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Platform:
    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None
    os_features: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: Any, where: str = "platform") -> Platform:
        f = _Fields(obj, where)
        return cls(
            architecture=f.req_str("architecture"),
            os=f.req_str("os"),
            variant=f.str_("variant"),
            os_version=f.str_("os.version"),
            os_features=f.str_list("os.features"),
            features=f.str_list("features"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version is not None:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant is not None:
            out["variant"] = self.variant
        if self.features:
            out["features"] = list(self.features)
        return out

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    def __hash__(self) -> int:
        return hash((self.architecture, self.os, self.variant, self.os_version))


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A typed pointer to content: media type, digest and size (OCI image spec)."""

    media_type: str
    digest: Digest
    size: int
    urls: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        for value in (self.media_type, self.artifact_type):
            if value is not None and not (
                isinstance(value, str) and _MEDIA_TYPE_RE.fullmatch(value)
            ):
                raise ManifestError(f"{str(value)[:80]!r} is not a valid media type")
        if not isinstance(self.digest, Digest):
            raise ManifestError("descriptor digest must be a Digest")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ManifestError("descriptor size must be an integer")
        if not 0 <= self.size <= _MAX_SIZE:
            raise ManifestError(f"descriptor size {self.size} is out of range (0..2^63-1)")
        if self.data is not None:
            if len(self.data) != self.size:
                raise ManifestError(
                    f"descriptor {self.digest.short}: embedded data is {len(self.data)} bytes "
                    f"but size says {self.size}"
                )
            if Digest.of(bytes(self.data), self.digest.algorithm) != self.digest:
                raise ManifestError(
                    f"descriptor {self.digest.short}: embedded data does not hash to its digest"
                )

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> Descriptor:
        f = _Fields(obj, where)
        media_type = f.media_type("mediaType", required=True)
        assert media_type is not None
        digest_text = f.req_str("digest")
        try:
            digest = Digest.parse(digest_text)
        except DigestError as exc:
            raise ManifestError(f"{where}.digest: {exc}") from exc
        size = f.int_("size")
        if size < 0:
            raise ManifestError(f"{where}.size is negative ({size})")
        platform = None
        if f.obj.get("platform") is not None:
            platform = Platform.from_json(f.obj["platform"], f"{where}.platform")
        data = None
        data_text = f.str_("data")
        if data_text is not None:
            try:
                data = base64.b64decode(data_text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ManifestError(f"{where}.data is not valid base64") from exc
        try:
            return cls(
                media_type=media_type,
                digest=digest,
                size=size,
                urls=f.str_list("urls"),
                annotations=f.str_map("annotations"),
                platform=platform,
                artifact_type=f.media_type("artifactType"),
                data=data,
            )
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """The descriptor as OCI JSON (for writing an index.json or a manifest)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        return out

    def __hash__(self) -> int:
        return hash((self.media_type, self.digest, self.size))


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """An OCI image manifest or a Docker schema 2 manifest."""

    schema_version: int
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def blobs(self) -> list[Descriptor]:
        """Every blob the manifest needs: config first, then layers."""
        return [self.config, *self.layers]

    def __hash__(self) -> int:
        return hash((self.media_type, self.config, tuple(self.layers)))


@dataclass(frozen=True, slots=True)
class ImageIndex:
    """An OCI image index or a Docker manifest list."""

    schema_version: int
    media_type: str
    manifests: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def __hash__(self) -> int:
        return hash((self.media_type, tuple(self.manifests)))


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The facts conveyor reads from an image config blob (OCI or Docker)."""

    architecture: str | None = None
    os: str | None = None
    variant: str | None = None
    os_version: str | None = None
    created: str | None = None
    author: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.architecture, self.os, self.variant, self.created))


# --- parsing --------------------------------------------------------------------------------

_SCHEMA1_MESSAGE = (
    "Docker schema 1 manifests are unsupported (deprecated since 2017); re-push the image "
    "with a current client or convert it to schema 2/OCI (skopeo copy --format v2s2)"
)


def _schema1(media_type: str | None) -> bool:
    return media_type is not None and (
        media_type in mt.SCHEMA1_TYPES or media_type.startswith(mt.DOCKER_SCHEMA1.split("+")[0])
    )


def _decide_media_type(f: _Fields, content_type: str | None) -> str:
    """Which kind of document this is, from its mediaType, the Content-Type and its shape."""
    field_type = f.str_("mediaType")
    header = mt.essence(content_type) if content_type is not None else ""
    if _schema1(field_type) or _schema1(header):
        raise ManifestError(_SCHEMA1_MESSAGE)
    if header in _GENERIC_CONTENT_TYPES:
        header = ""
    if header and header not in mt.ALL_MANIFEST_TYPES:
        raise ManifestError(
            f"unsupported manifest media type {header[:100]!r} (Content-Type); expected one of "
            + ", ".join(sorted(mt.ALL_MANIFEST_TYPES))
        )
    if field_type is not None and field_type not in mt.ALL_MANIFEST_TYPES:
        raise ManifestError(
            f"unsupported manifest media type {field_type[:100]!r}; expected one of "
            + ", ".join(sorted(mt.ALL_MANIFEST_TYPES))
        )
    if field_type is not None and header and field_type != header:
        raise ManifestError(
            f"manifest says mediaType {field_type!r} but was served as {header!r}; "
            "refusing the ambiguous document"
        )
    has_manifests = f.has("manifests")
    has_layers = f.has("layers") or f.has("config")
    if has_manifests and has_layers:
        raise ManifestError(
            "document has both 'manifests' and 'layers'/'config': it is neither clearly an "
            "index nor a manifest; refusing it"
        )
    media_type = field_type or header
    if not media_type:
        if has_manifests:
            return mt.OCI_INDEX
        if has_layers:
            return mt.OCI_MANIFEST
        raise ManifestError(
            "document has no mediaType and neither 'manifests' nor 'config'/'layers'; "
            "it is not an image manifest or index"
        )
    if media_type == mt.DOCKER_MANIFEST and field_type is None:
        # Docker schema 2 requires the field; OCI (since 1.0) only recommends it.
        raise ManifestError("Docker schema 2 manifest lacks its required mediaType field")
    if media_type == mt.DOCKER_MANIFEST_LIST and field_type is None:
        raise ManifestError("Docker manifest list lacks its required mediaType field")
    return media_type


def _descriptor(f: _Fields, key: str) -> Descriptor | None:
    if f.obj.get(key) is None:
        return None
    return Descriptor.from_json(f.obj[key], key)


def _descriptors(f: _Fields, key: str) -> list[Descriptor]:
    if key not in f.obj:
        raise ManifestError(f"{f.where} lacks the required field {key!r}")
    items = f.obj[key]
    if not isinstance(items, list):
        raise ManifestError(f"{f.where}.{key} must be an array, not {_json_type(items)}")
    return [Descriptor.from_json(item, f"{key}[{i}]") for i, item in enumerate(items)]


def parse_manifest(data: bytes, *, content_type: str | None = None) -> ImageManifest | ImageIndex:
    """Parse and validate an image manifest or index.

    ``content_type`` is the media type the bytes were served or stored as (a registry's
    Content-Type, a layout's descriptor); its parameters are ignored. When both it and the
    document's ``mediaType`` are known they must agree.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit; refusing it"
        )
    document = strict_json_loads(data, what="manifest")
    f = _Fields(document, "manifest")
    if f.has("schemaVersion"):
        schema_version = f.int_("schemaVersion")
    else:
        raise ManifestError("manifest lacks the required field 'schemaVersion'")
    if schema_version == 1:
        raise ManifestError(_SCHEMA1_MESSAGE)
    if schema_version != 2:
        raise ManifestError(f"manifest schemaVersion is {schema_version}; only 2 is supported")
    media_type = _decide_media_type(f, content_type)
    subject = _descriptor(f, "subject")
    annotations = f.str_map("annotations")
    artifact_type = f.media_type("artifactType")
    if media_type in mt.INDEX_TYPES:
        if f.has("layers") or f.has("config"):
            raise ManifestError(f"{media_type} must not have 'config' or 'layers'")
        return ImageIndex(
            schema_version=schema_version,
            media_type=media_type,
            manifests=_descriptors(f, "manifests"),
            subject=subject,
            annotations=annotations,
            artifact_type=artifact_type,
        )
    if f.has("manifests"):
        raise ManifestError(f"{media_type} must not have 'manifests'")
    if f.obj.get("config") is None:
        raise ManifestError(f"{media_type} lacks the required field 'config'")
    config = Descriptor.from_json(f.obj["config"], "config")
    return ImageManifest(
        schema_version=schema_version,
        media_type=media_type,
        config=config,
        layers=_descriptors(f, "layers"),
        subject=subject,
        annotations=annotations,
        artifact_type=artifact_type,
    )


def parse_config(data: bytes) -> ImageConfig:
    """Read the facts conveyor needs from an OCI or Docker image config blob."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ManifestError(
            f"image config is {len(data)} bytes, over the {MAX_CONFIG_BYTES}-byte limit"
        )
    document = strict_json_loads(data, what="image config")
    f = _Fields(document, "image config")
    labels: dict[str, str] = {}
    inner = f.obj.get("config")
    if inner is not None:
        labels = _Fields(inner, "image config.config").str_map("Labels")
    return ImageConfig(
        architecture=f.str_("architecture"),
        os=f.str_("os"),
        variant=f.str_("variant"),
        os_version=f.str_("os.version"),
        created=f.str_("created"),
        author=f.str_("author"),
        labels=labels,
    )
