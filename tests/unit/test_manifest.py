"""Manifests, indexes and configs: real third-party documents and hostile ones."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from conveyor.errors import ManifestError
from conveyor.oci import mediatypes as mt
from conveyor.oci.digest import Digest
from conveyor.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageConfig,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_config,
    parse_manifest,
    strict_json_loads,
)

H = hashlib.sha256(b"x").hexdigest()
DIGEST = f"sha256:{H}"


def _descriptor(media_type: str = mt.OCI_LAYER_GZIP, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": DIGEST, "size": 1, **extra}


def _manifest(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _descriptor(mt.OCI_CONFIG),
        "layers": [_descriptor()],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


def _index(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [_descriptor(mt.OCI_MANIFEST, platform={"os": "linux", "architecture": "a"})],
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not _DROP}


_DROP = object()


def _bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _refused(data: bytes, fragment: str, content_type: str | None = None) -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, content_type=content_type)
    message = str(info.value)
    assert fragment.lower() in message.lower()
    assert "\n" not in message
    assert len(message) < 500
    return message


# --- the corpus ----------------------------------------------------------------------------


def _corpus_files(corpus: Path) -> list[Path]:
    files = sorted((corpus / "oci").glob("*.json"))
    assert files, "corpus/oci is empty"
    return files


def _all_descriptors(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = [*doc.get("manifests", []), *doc.get("layers", [])]
    found += [doc[key] for key in ("config", "subject") if doc.get(key)]
    return found


def _embedded_data_is_consistent(descriptor: dict[str, Any]) -> bool:
    if "data" not in descriptor:
        return True
    data = base64.b64decode(descriptor["data"])
    algorithm, _, encoded = str(descriptor["digest"]).partition(":")
    return len(data) == descriptor["size"] and hashlib.new(algorithm, data).hexdigest() == encoded


def _expected_platform(platform: dict[str, Any] | None) -> str | None:
    if platform is None:
        return None
    parts = [platform["os"], platform["architecture"]]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


def _check_descriptor(ours: Descriptor, theirs: dict[str, Any]) -> None:
    assert ours.media_type == theirs["mediaType"]
    assert str(ours.digest) == theirs["digest"]
    assert ours.size == theirs["size"]
    assert ours.annotations == theirs.get("annotations", {})
    assert ours.urls == theirs.get("urls", [])
    assert ours.artifact_type == theirs.get("artifactType")
    expected_platform = _expected_platform(theirs.get("platform"))
    assert (str(ours.platform) if ours.platform else None) == expected_platform
    if ours.platform is not None:
        platform = theirs["platform"]
        assert ours.platform.os_version == platform.get("os.version")
        assert ours.platform.os_features == platform.get("os.features", [])
        assert ours.platform.features == platform.get("features", [])
    if "data" in theirs:
        assert ours.data == base64.b64decode(theirs["data"])
    # Writing a descriptor back gives the same descriptor.
    assert Descriptor.from_json(json.loads(json.dumps(ours.to_json()))) == ours


def _check_document(parsed: ImageManifest | ImageIndex, doc: dict[str, Any]) -> None:
    assert parsed.schema_version == doc["schemaVersion"]
    assert parsed.annotations == doc.get("annotations", {})
    assert parsed.artifact_type == doc.get("artifactType")
    if doc.get("subject"):
        assert parsed.subject is not None
        _check_descriptor(parsed.subject, doc["subject"])
    else:
        assert parsed.subject is None
    if "manifests" in doc:
        assert isinstance(parsed, ImageIndex)
        assert parsed.media_type == doc.get("mediaType", mt.OCI_INDEX)
        assert len(parsed.manifests) == len(doc["manifests"])
        for ours, theirs in zip(parsed.manifests, doc["manifests"], strict=True):
            _check_descriptor(ours, theirs)
    else:
        assert isinstance(parsed, ImageManifest)
        assert parsed.media_type == doc.get("mediaType", mt.OCI_MANIFEST)
        _check_descriptor(parsed.config, doc["config"])
        for ours, theirs in zip(parsed.layers, doc["layers"], strict=True):
            _check_descriptor(ours, theirs)
        assert [str(b.digest) for b in parsed.blobs()] == [
            d["digest"] for d in [doc["config"], *doc["layers"]]
        ]


def test_every_corpus_document_parses_to_the_right_type(corpus: Path) -> None:
    kinds: set[str] = set()
    for path in _corpus_files(corpus):
        raw = path.read_bytes()
        doc = json.loads(raw)
        if "schemaVersion" not in doc:
            # An image config, not a manifest.
            _refused(raw, "schemaVersion")
            kinds.add("config")
            continue
        if not all(_embedded_data_is_consistent(d) for d in _all_descriptors(doc)):
            # Embedded data that does not hash to its digest is content we refuse to believe.
            _refused(raw, "embedded data")
            kinds.add("refused")
            continue
        content_types = [None]
        if "mediaType" in doc:
            content_types += [doc["mediaType"], doc["mediaType"] + "; charset=utf-8"]
        for content_type in content_types:
            parsed = parse_manifest(raw, content_type=content_type)
            _check_document(parsed, doc)
        kinds.add(type(parsed).__name__)
    assert {"ImageManifest", "ImageIndex", "config"} <= kinds


def test_docker_manifest_list_pointing_at_schema1_children_parses(corpus: Path) -> None:
    raw = (corpus / "oci" / "docker-manifest-list-v2.json").read_bytes()
    doc = json.loads(raw)
    parsed = parse_manifest(raw, content_type=mt.DOCKER_MANIFEST_LIST)
    assert isinstance(parsed, ImageIndex)
    assert [m.media_type for m in parsed.manifests] == [m["mediaType"] for m in doc["manifests"]]
    assert {m.media_type for m in parsed.manifests} == {mt.DOCKER_SCHEMA1}
    assert mt.is_index(parsed.media_type)


def test_corpus_index_with_every_field_once_its_embedded_data_is_consistent(
    corpus: Path,
) -> None:
    doc = json.loads(
        (corpus / "oci" / "oci-index-everything-subject-artifactType.json").read_text()
    )
    for descriptor in _all_descriptors(doc):
        if "data" in descriptor:
            data = base64.b64decode(descriptor["data"])
            descriptor["digest"] = f"sha256:{hashlib.sha256(data).hexdigest()}"
    parsed = parse_manifest(_bytes(doc))
    _check_document(parsed, doc)
    assert isinstance(parsed, ImageIndex)
    assert parsed.manifests[0].platform is not None
    assert parsed.manifests[0].platform.os_features


def test_corpus_config_labels(corpus: Path) -> None:
    configs = 0
    for path in _corpus_files(corpus):
        doc = json.loads(path.read_bytes())
        if "schemaVersion" in doc:
            continue
        configs += 1
        config = parse_config(path.read_bytes())
        assert config.labels == ((doc.get("config") or {}).get("Labels") or {})
        assert config.architecture == doc.get("architecture")
        assert config.os == doc.get("os")
        assert config.created == doc.get("created")
    assert configs


def test_truncated_corpus_documents_are_refused(corpus: Path) -> None:
    raw = (corpus / "oci" / "buildx-image-manifest.json").read_bytes().rstrip()
    for end in range(0, len(raw) - 1, 7):
        with pytest.raises(ManifestError):
            parse_manifest(raw[:end])


# --- shapes and media types ----------------------------------------------------------------


def test_manifest_and_index_basics() -> None:
    manifest = parse_manifest(_bytes(_manifest()))
    assert isinstance(manifest, ImageManifest)
    assert manifest.blobs() == [manifest.config, *manifest.layers]
    index = parse_manifest(_bytes(_index()))
    assert isinstance(index, ImageIndex)
    assert str(index.manifests[0].platform) == "linux/a"
    # Frozen values usable in sets.
    assert len({manifest, parse_manifest(_bytes(_manifest()))}) == 1
    assert len({index.manifests[0], *index.manifests}) == 1


def test_platform_string() -> None:
    assert str(Platform("arm64", "linux", variant="v8")) == "linux/arm64/v8"
    assert str(Platform("amd64", "windows", os_version="10.0.17763.1")) == "windows/amd64"


def test_both_manifests_and_layers_is_refused() -> None:
    _refused(_bytes(_manifest(manifests=[])), "both")
    _refused(_bytes(_index(layers=[])), "both")
    _refused(_bytes(_manifest(manifests=[], mediaType=_DROP)), "both")


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        (_manifest(), mt.OCI_INDEX),
        (_manifest(), mt.DOCKER_MANIFEST),
        (_index(), mt.OCI_MANIFEST),
        (_index(), mt.DOCKER_MANIFEST_LIST),
        (_manifest(mediaType=mt.DOCKER_MANIFEST), mt.OCI_MANIFEST + "; charset=utf-8"),
    ],
)
def test_media_type_disagreeing_with_content_type_is_refused(
    doc: dict[str, Any], content_type: str
) -> None:
    _refused(_bytes(doc), "served as", content_type)


@pytest.mark.parametrize(
    "content_type",
    [mt.OCI_MANIFEST, "APPLICATION/vnd.oci.image.manifest.v1+json ; charset=utf-8", None],
)
def test_content_type_parameters_and_case_are_ignored(content_type: str | None) -> None:
    assert isinstance(parse_manifest(_bytes(_manifest()), content_type=content_type), ImageManifest)


def test_generic_content_type_says_nothing() -> None:
    for content_type in ("application/json", "application/octet-stream", ""):
        parsed = parse_manifest(_bytes(_index()), content_type=content_type)
        assert isinstance(parsed, ImageIndex)


def test_unknown_content_type_is_refused() -> None:
    _refused(_bytes(_manifest()), "unsupported", "text/html")


def test_missing_media_type_field_uses_content_type() -> None:
    parsed = parse_manifest(_bytes(_manifest(mediaType=_DROP)), content_type=mt.OCI_MANIFEST)
    assert isinstance(parsed, ImageManifest)
    assert parsed.media_type == mt.OCI_MANIFEST
    parsed = parse_manifest(_bytes(_index(mediaType=_DROP)), content_type=mt.OCI_INDEX)
    assert isinstance(parsed, ImageIndex)
    # The Content-Type names an index but the document is a manifest.
    _refused(_bytes(_manifest(mediaType=_DROP)), "must not have", mt.OCI_INDEX)
    _refused(_bytes(_index(mediaType=_DROP)), "must not have", mt.OCI_MANIFEST)


def test_missing_media_type_everywhere_is_detected_by_shape() -> None:
    assert isinstance(parse_manifest(_bytes(_manifest(mediaType=_DROP))), ImageManifest)
    assert isinstance(parse_manifest(_bytes(_index(mediaType=_DROP))), ImageIndex)
    _refused(_bytes({"schemaVersion": 2}), "neither")


def test_docker_types_require_their_media_type_field() -> None:
    _refused(_bytes(_manifest(mediaType=_DROP)), "Docker", mt.DOCKER_MANIFEST)
    _refused(_bytes(_index(mediaType=_DROP)), "Docker", mt.DOCKER_MANIFEST_LIST)


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        ({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}, None),
        (_manifest(schemaVersion=1), None),
        (_manifest(mediaType=mt.DOCKER_SCHEMA1), None),
        (_manifest(mediaType=mt.DOCKER_SCHEMA1_SIGNED), None),
        (_manifest(mediaType=_DROP), mt.DOCKER_SCHEMA1_SIGNED),
        ({"schemaVersion": 1, "fsLayers": [], "signatures": []}, mt.DOCKER_SCHEMA1),
    ],
)
def test_docker_schema1_is_refused_clearly(doc: dict[str, Any], content_type: str | None) -> None:
    _refused(_bytes(doc), "schema 1 manifests are unsupported", content_type)


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/json",
        mt.OCI_CONFIG,
        "application/vnd.docker.distribution.manifest.v3+json",
    ],
)
def test_unknown_manifest_media_type_is_refused(media_type: str) -> None:
    _refused(_bytes(_manifest(mediaType=media_type)), "unsupported manifest media type")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(3, "only 2"), (0, "only 2"), ("2", "integer"), (2.0, "integer"), (True, "integer")],
)
def test_schema_version_must_be_the_integer_2(value: Any, fragment: str) -> None:
    _refused(_bytes(_manifest(schemaVersion=value)), fragment)


def test_missing_schema_version() -> None:
    _refused(_bytes(_manifest(schemaVersion=_DROP)), "schemaVersion")


@pytest.mark.parametrize("top", [[], "manifest", 2, None, True])
def test_top_level_must_be_an_object(top: Any) -> None:
    _refused(_bytes(top), "must be a JSON object")


def test_required_parts() -> None:
    _refused(_bytes(_manifest(config=_DROP)), "config")
    _refused(_bytes(_manifest(config=None)), "config")
    _refused(_bytes(_manifest(layers=_DROP)), "layers")
    _refused(_bytes(_manifest(layers={})), "must be an array")
    _refused(_bytes(_index(manifests=None)), "must be an array")
    assert parse_manifest(_bytes(_index(manifests=[]))) == ImageIndex(2, mt.OCI_INDEX, [])


# --- descriptors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("descriptor", "fragment"),
    [
        (_descriptor(size="1"), "size must be an integer"),
        (_descriptor(size=-1), "negative"),
        (_descriptor(size=1.5), "integer"),
        (_descriptor(size=True), "integer"),
        (_descriptor(size=None), "integer"),
        (_descriptor(size=2**63), "out of range"),
        (_descriptor(digest=f"md5:{'a' * 32}"), "md5"),
        (_descriptor(digest=f"sha256:{H.upper()}"), "lowercase"),
        (_descriptor(digest="sha256:abc"), "malformed"),
        (_descriptor(digest=H), "malformed digest"),
        (_descriptor(digest=12), "string"),
        (_descriptor(mediaType=None), "mediaType"),
        (_descriptor(mediaType=7), "string"),
        (_descriptor(mediaType="not a media type"), "not a valid media type"),
        (_descriptor(mediaType=""), "not a valid media type"),
        (_descriptor(artifactType="nope"), "not a valid media type"),
        (_descriptor(urls="https://x"), "list of strings"),
        (_descriptor(urls=[1]), "list of strings"),
        (_descriptor(annotations={"a": 1}), "string values"),
        (_descriptor(annotations=["a"]), "string values"),
        (_descriptor(platform={"os": "linux"}), "architecture"),
        (_descriptor(platform={"os": "linux", "architecture": 1}), "string"),
        (_descriptor(platform="linux/amd64"), "object"),
        (_descriptor(platform={"os": "l", "architecture": "a", "os.features": "x"}), "list"),
        (_descriptor(data="not base64!"), "base64"),
        (_descriptor(data=base64.b64encode(b"y").decode()), "does not hash"),
        (_descriptor(data=base64.b64encode(b"xx").decode()), "size says"),
        ({"digest": DIGEST, "size": 1}, "mediaType"),
        ({"mediaType": mt.OCI_LAYER_GZIP, "size": 1}, "digest"),
        ({"mediaType": mt.OCI_LAYER_GZIP, "digest": DIGEST}, "size"),
        ("sha256:abc", "must be a JSON object"),
    ],
)
def test_bad_descriptors_are_refused(descriptor: Any, fragment: str) -> None:
    _refused(_bytes(_manifest(layers=[_descriptor(), descriptor])), fragment)
    _refused(_bytes(_manifest(config=descriptor)), fragment)
    _refused(_bytes(_index(manifests=[descriptor])), fragment)
    _refused(_bytes(_manifest(subject=descriptor)), fragment)


def test_bad_layer_is_named_in_the_message() -> None:
    message = _refused(_bytes(_manifest(layers=[_descriptor(), _descriptor(size=-3)])), "size")
    assert "layers[1]" in message


def test_embedded_data_that_matches_is_kept() -> None:
    descriptor = _descriptor(data=base64.b64encode(b"x").decode())
    parsed = parse_manifest(_bytes(_manifest(layers=[descriptor])))
    assert isinstance(parsed, ImageManifest)
    assert parsed.layers[0].data == b"x"


def test_sha512_descriptor() -> None:
    digest = f"sha512:{hashlib.sha512(b'x').hexdigest()}"
    parsed = parse_manifest(_bytes(_manifest(layers=[_descriptor(digest=digest)])))
    assert isinstance(parsed, ImageManifest)
    assert parsed.layers[0].digest == Digest.parse(digest)


def test_unknown_fields_are_ignored() -> None:
    doc = _manifest(layers=[_descriptor(future={"x": [1, 2]})], future="yes")
    doc["config"]["another"] = None
    assert isinstance(parse_manifest(_bytes(doc)), ImageManifest)


def test_null_optional_fields_mean_absent() -> None:
    doc = _manifest(subject=None, annotations=None, artifactType=None)
    doc["layers"][0].update(urls=None, annotations=None, platform=None, data=None)
    parsed = parse_manifest(_bytes(doc))
    assert isinstance(parsed, ImageManifest)
    assert parsed.subject is None
    assert parsed.layers[0].annotations == {}


def test_descriptor_construction_is_validated() -> None:
    with pytest.raises(ManifestError):
        Descriptor(mt.OCI_LAYER_GZIP, Digest.parse(DIGEST), -1)
    with pytest.raises(ManifestError):
        Descriptor(mt.OCI_LAYER_GZIP, Digest.parse(DIGEST), 1, data=b"y")
    with pytest.raises(ManifestError, match="media type"):
        Descriptor("layer", Digest.parse(DIGEST), 1)
    with pytest.raises(ManifestError, match="media type"):
        Descriptor(mt.OCI_MANIFEST, Digest.parse(DIGEST), 1, artifact_type="")
    assert Descriptor(mt.OCI_LAYER_GZIP, Digest.parse(DIGEST), 1, data=b"x").data == b"x"


# --- hostile JSON ---------------------------------------------------------------------------


def test_oversized_manifest_is_refused_before_parsing() -> None:
    doc = _manifest(annotations={"pad": "x" * MAX_MANIFEST_BYTES})
    _refused(_bytes(doc), "limit")
    # Exactly at the limit is fine.
    padding = MAX_MANIFEST_BYTES - len(_bytes(_manifest(annotations={"pad": ""})))
    at_limit = _bytes(_manifest(annotations={"pad": "x" * padding}))
    assert len(at_limit) == MAX_MANIFEST_BYTES
    assert isinstance(parse_manifest(at_limit), ImageManifest)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"schemaVersion": 2, "schemaVersion": 2, "config": {}, "layers": []}',
        b'{"schemaVersion": 2, "mediaType": "%s", "mediaType": "%s", "manifests": []}'
        % (mt.OCI_MANIFEST.encode(), mt.OCI_INDEX.encode()),
        _bytes(_manifest()).replace(b'"size": 1', b'"size": 1, "size": 2', 1),
        _bytes(_manifest()).replace(b'"layers"', b'"annotations": {"a": "1", "a": "2"}, "layers"'),
    ],
)
def test_duplicate_keys_are_refused(raw: bytes) -> None:
    _refused(raw, "duplicate key")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(constant: bytes) -> None:
    raw = _bytes(_manifest()).replace(b'"size": 1', b'"size": ' + constant, 1)
    _refused(raw, "not valid JSON")


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(_manifest(annotations={"a": "é"}), ensure_ascii=False)
        .encode()
        .replace("é".encode(), b"\xc3"),
        b"\xff\xfe" + _bytes(_manifest()),
        _bytes(_manifest()).replace(b'"layers"', b'"\xed\xa0\x80": "", "layers"'),  # surrogate
    ],
)
def test_invalid_utf8_is_refused(raw: bytes) -> None:
    _refused(raw, "UTF-8")


def test_byte_order_mark_and_lone_surrogates_are_refused() -> None:
    _refused(b"\xef\xbb\xbf" + _bytes(_manifest()), "byte-order mark")
    _refused(_bytes(_manifest(annotations={"a": "\ud800"})), "surrogate")
    raw = _bytes(_manifest()).replace(b'"layers"', b'"\\udfff": 1, "layers"')
    _refused(raw, "surrogate")


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_deep_nesting_is_a_manifest_error_not_a_crash(depth: int) -> None:
    raw = b'{"schemaVersion": 2, "x": ' + b"[" * depth + b"]" * depth + b"}"
    _refused(raw, "nested")
    _refused(b"[" * depth, "")
    _refused(b'{"a":' * depth + b"1" + b"}" * depth, "nested")


def test_ordinary_nesting_is_fine() -> None:
    assert strict_json_loads(b'{"a": [[[[{"b": [1]}]]]]}') == {"a": [[[[{"b": [1]}]]]]}


@pytest.mark.parametrize(
    "raw",
    [b"", b" ", b"{", b'{"schemaVersion": 2', b"{} {}", b"{}x", b"'a'", b'{"a": 01}', b"{,}"],
)
def test_malformed_json_is_refused(raw: bytes) -> None:
    _refused(raw, "")


def test_huge_integers_are_refused_cleanly() -> None:
    raw = _bytes(_manifest()).replace(b'"size": 1', b'"size": ' + b"9" * 5000, 1)
    _refused(raw, "")


def test_strict_json_loads_names_what_it_reads() -> None:
    with pytest.raises(ManifestError, match=r"^referrers response is not valid JSON"):
        strict_json_loads(b"{", what="referrers response")
    with pytest.raises(ManifestError, match="must be bytes"):
        strict_json_loads("{}", what="x")  # type: ignore[arg-type]


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "labels"),
    [
        ({"architecture": "amd64", "os": "linux", "config": {"Labels": {"a": "1"}}}, {"a": "1"}),
        ({"config": {"Labels": None}}, {}),
        ({"config": None}, {}),
        ({}, {}),
        ({"config": {"Env": ["A=1"]}}, {}),
    ],
)
def test_config_labels(doc: dict[str, Any], labels: dict[str, str]) -> None:
    config = parse_config(_bytes(doc))
    assert config.labels == labels
    assert config.architecture == doc.get("architecture")


def test_config_fields() -> None:
    doc = {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
        "created": "2024-01-01T00:00:00Z",
        "author": "someone",
        "os.version": "1",
    }
    assert parse_config(_bytes(doc)) == ImageConfig(
        architecture="arm64",
        os="linux",
        variant="v8",
        os_version="1",
        created="2024-01-01T00:00:00Z",
        author="someone",
    )


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "JSON object"),
        ({"config": []}, "JSON object"),
        ({"config": {"Labels": {"a": 1}}}, "string values"),
        ({"config": {"Labels": ["a"]}}, "string values"),
        ({"architecture": 1}, "string"),
        ({"created": {}}, "string"),
    ],
)
def test_bad_configs_are_refused(doc: Any, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        parse_config(_bytes(doc))


def test_config_with_duplicate_label_is_refused() -> None:
    with pytest.raises(ManifestError, match="duplicate"):
        parse_config(b'{"config": {"Labels": {"a": "1", "a": "2"}}}')


# --- media types ----------------------------------------------------------------------------


def test_accept_header_lists_every_manifest_type() -> None:
    listed = {part.strip() for part in mt.ACCEPT_MANIFESTS.split(",")}
    assert listed == set(mt.ALL_MANIFEST_TYPES)
    assert mt.ALL_MANIFEST_TYPES == mt.MANIFEST_TYPES | mt.INDEX_TYPES
    assert not mt.MANIFEST_TYPES & mt.INDEX_TYPES


def test_is_index() -> None:
    assert mt.is_index(mt.OCI_INDEX)
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST + "; charset=utf-8")
    assert not mt.is_index(mt.OCI_MANIFEST)
    assert not mt.is_index(mt.DOCKER_MANIFEST)
    assert not mt.is_index("")


# --- properties -----------------------------------------------------------------------------


@given(st.binary(max_size=512))
def test_random_bytes_raise_only_manifest_error(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json, st.sampled_from([None, *sorted(mt.ALL_MANIFEST_TYPES), "text/plain"]))
def test_random_json_raises_only_manifest_error(value: Any, content_type: str | None) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(_bytes(value), content_type=content_type)


_KEYS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "size"]


@given(
    st.sampled_from(["manifest", "index"]),
    st.lists(st.tuples(st.sampled_from(_KEYS), _json), max_size=3),
)
def test_mutated_documents_raise_only_manifest_error(
    kind: str, mutations: list[tuple[str, Any]]
) -> None:
    doc = copy.deepcopy(_manifest() if kind == "manifest" else _index())
    for key, value in mutations:
        nested = key == "size" and isinstance(doc.get("config"), dict)
        target = doc["config"] if nested else doc
        target[key] = value
    try:
        parsed = parse_manifest(_bytes(doc))
    except ManifestError:
        return
    assert isinstance(parsed, ImageManifest | ImageIndex)


@given(st.binary(max_size=512))
def test_random_bytes_as_config_raise_only_manifest_error(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        parse_config(data)
