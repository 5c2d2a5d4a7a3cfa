"""References: the distribution/reference grammar, normalisation, layouts and targets."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, strategies as st

from conveyor.errors import InvalidReferenceError
from conveyor.oci.digest import Digest
from conveyor.oci.name import LayoutReference, Reference, parse_target

H256 = hashlib.sha256(b"conveyor").hexdigest()
H512 = hashlib.sha512(b"conveyor").hexdigest()
D256 = f"sha256:{H256}"
D512 = f"sha512:{H512}"

# (input, registry, repository, tag, digest, normalised str)
VALID: list[tuple[str, str, str, str | None, str | None, str]] = [
    # Docker Hub normalisation
    ("alpine", "docker.io", "library/alpine", None, None, "docker.io/library/alpine"),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None, "docker.io/library/alpine:3.19"),
    (
        "alpine:latest",
        "docker.io",
        "library/alpine",
        "latest",
        None,
        "docker.io/library/alpine:latest",
    ),
    ("docker.io/alpine", "docker.io", "library/alpine", None, None, "docker.io/library/alpine"),
    (
        "docker.io/library/alpine",
        "docker.io",
        "library/alpine",
        None,
        None,
        "docker.io/library/alpine",
    ),
    (
        "index.docker.io/alpine",
        "docker.io",
        "library/alpine",
        None,
        None,
        "docker.io/library/alpine",
    ),
    ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None, "docker.io/user/app:v1"),
    ("user/app", "docker.io", "user/app", None, None, "docker.io/user/app"),
    ("user/app:1.0", "docker.io", "user/app", "1.0", None, "docker.io/user/app:1.0"),
    ("library/alpine", "docker.io", "library/alpine", None, None, "docker.io/library/alpine"),
    ("library/a/b", "docker.io", "library/a/b", None, None, "docker.io/library/a/b"),
    ("docker.io/user/app", "docker.io", "user/app", None, None, "docker.io/user/app"),
    ("a/b/c/d", "docker.io", "a/b/c/d", None, None, "docker.io/a/b/c/d"),
    ("docker.io", "docker.io", "library/docker.io", None, None, "docker.io/library/docker.io"),
    # localhost and ports
    ("localhost/app", "localhost", "app", None, None, "localhost/app"),
    ("localhost:5000/app", "localhost:5000", "app", None, None, "localhost:5000/app"),
    ("localhost:5000/x:1", "localhost:5000", "x", "1", None, "localhost:5000/x:1"),
    (
        "localhost:5000/team/app:v2",
        "localhost:5000",
        "team/app",
        "v2",
        None,
        "localhost:5000/team/app:v2",
    ),
    # A bare "localhost:5000" is a Docker Hub name with tag 5000 (as in distribution).
    (
        "localhost:5000",
        "docker.io",
        "library/localhost",
        "5000",
        None,
        "docker.io/library/localhost:5000",
    ),
    ("localhost", "docker.io", "library/localhost", None, None, "docker.io/library/localhost"),
    ("example:5000/app", "example:5000", "app", None, None, "example:5000/app"),
    (
        "registry.example.com/team/app",
        "registry.example.com",
        "team/app",
        None,
        None,
        "registry.example.com/team/app",
    ),
    (
        "registry.example.com:443/team/app:1",
        "registry.example.com:443",
        "team/app",
        "1",
        None,
        "registry.example.com:443/team/app:1",
    ),
    (
        "ghcr.io/owner/repo:sha-abc123",
        "ghcr.io",
        "owner/repo",
        "sha-abc123",
        None,
        "ghcr.io/owner/repo:sha-abc123",
    ),
    ("my-registry.local/x", "my-registry.local", "x", None, None, "my-registry.local/x"),
    ("a.b.c.d.e/x", "a.b.c.d.e", "x", None, None, "a.b.c.d.e/x"),
    (
        "xn--bcher-kva.example/x",
        "xn--bcher-kva.example",
        "x",
        None,
        None,
        "xn--bcher-kva.example/x",
    ),
    # IP addresses
    ("127.0.0.1:5000/repo", "127.0.0.1:5000", "repo", None, None, "127.0.0.1:5000/repo"),
    ("127.0.0.1/repo:t", "127.0.0.1", "repo", "t", None, "127.0.0.1/repo:t"),
    ("[::1]:5000/repo", "[::1]:5000", "repo", None, None, "[::1]:5000/repo"),
    ("[::1]/repo", "[::1]", "repo", None, None, "[::1]/repo"),
    (
        "[2001:db8::1]:5000/a/b:c",
        "[2001:db8::1]:5000",
        "a/b",
        "c",
        None,
        "[2001:db8::1]:5000/a/b:c",
    ),
    ("[fe80::AB:1]:443/x", "[fe80::AB:1]:443", "x", None, None, "[fe80::AB:1]:443/x"),
    # Uppercase first component is a domain, as in splitDockerDomain
    ("Foo/bar", "Foo", "bar", None, None, "Foo/bar"),
    (
        "Registry.Example.COM/app:1",
        "Registry.Example.COM",
        "app",
        "1",
        None,
        "Registry.Example.COM/app:1",
    ),
    # Path component separators
    ("a.b/c_d", "a.b", "c_d", None, None, "a.b/c_d"),
    ("x.io/a__b", "x.io", "a__b", None, None, "x.io/a__b"),
    ("x.io/a---b", "x.io", "a---b", None, None, "x.io/a---b"),
    ("x.io/a-b.c_d__e", "x.io", "a-b.c_d__e", None, None, "x.io/a-b.c_d__e"),
    ("user/a0.b1", "docker.io", "user/a0.b1", None, None, "docker.io/user/a0.b1"),
    ("0/1", "docker.io", "0/1", None, None, "docker.io/0/1"),
    # Tags
    ("x.io/a:_", "x.io", "a", "_", None, "x.io/a:_"),
    ("x.io/a:A-Z_09.x", "x.io", "a", "A-Z_09.x", None, "x.io/a:A-Z_09.x"),
    ("x.io/a:" + "t" * 128, "x.io", "a", "t" * 128, None, "x.io/a:" + "t" * 128),
    ("alpine:3", "docker.io", "library/alpine", "3", None, "docker.io/library/alpine:3"),
    # Digests
    (
        f"alpine@{D256}",
        "docker.io",
        "library/alpine",
        None,
        D256,
        f"docker.io/library/alpine@{D256}",
    ),
    (f"x.io/a@{D512}", "x.io", "a", None, D512, f"x.io/a@{D512}"),
    (
        f"alpine:3.19@{D256}",
        "docker.io",
        "library/alpine",
        "3.19",
        D256,
        f"docker.io/library/alpine:3.19@{D256}",
    ),
    (f"localhost:5000/x:1@{D256}", "localhost:5000", "x", "1", D256, f"localhost:5000/x:1@{D256}"),
    (f"[::1]:5000/r@{D512}", "[::1]:5000", "r", None, D512, f"[::1]:5000/r@{D512}"),
    # docker:// prefix
    ("docker://alpine:3", "docker.io", "library/alpine", "3", None, "docker.io/library/alpine:3"),
    ("docker://localhost:5000/x", "localhost:5000", "x", None, None, "localhost:5000/x"),
    (f"docker://ghcr.io/o/r:t@{D256}", "ghcr.io", "o/r", "t", D256, f"ghcr.io/o/r:t@{D256}"),
    # Long but allowed: name exactly 255 characters.
    ("x.io/" + "a" * 250, "x.io", "a" * 250, None, None, "x.io/" + "a" * 250),
]

# (input, fragment of the message)
INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    ("docker://", "empty"),
    ("Alpine", "must be lowercase"),
    ("user/App", "must be lowercase"),
    ("docker.io/User/app", "must be lowercase"),
    ("ghcr.io/Owner/repo:tag", "must be lowercase"),
    ("x.io/" + "a" * 251, "255"),
    ("user/" + "a" * 250, "255"),  # 255 + "docker.io/" counts, as in distribution
    ("x.io/a:" + "t" * 129, "128"),
    ("alpine:" + "t" * 200, "128"),
    ("alpine:", "empty tag"),
    ("alpine:.x", "invalid tag"),
    ("alpine:-x", "invalid tag"),
    ("alpine:a/b", "invalid"),
    ("alpine:t@g", "digest"),
    ("alpine:t:u", "more than one ':'"),
    ("a:b:c", "more than one ':'"),
    ("alpine:tåg", "invalid tag"),
    ("alpine@", "digest"),
    ("alpine@sha256:abc", "digest"),
    (f"alpine@sha256:{H256.upper()}", "lowercase hex"),
    (f"alpine@md5:{'a' * 32}", "md5"),
    (f"alpine@sha1:{'a' * 40}", "sha1"),
    (f"alpine@sha256:{H256}0", "digest"),
    (f"alpine@sha512:{H256}", "digest"),
    (f"alpine@{H256}", "digest"),
    (f"alpine@{D256}@{D256}", "more than one '@'"),
    (H256, "64-character hex"),
    (" alpine", "whitespace"),
    ("alpine ", "whitespace"),
    ("alp ine", "whitespace"),
    ("alpine\n", "whitespace"),
    ("alpine\x00", "control"),
    ("/alpine", "invalid repository"),
    ("x.io/", "missing repository"),
    ("x.io//a", "invalid repository"),
    ("a//b", "invalid repository"),
    ("user/app/", "invalid repository"),
    ("-alpine", "invalid repository"),
    ("alpine-", "invalid repository"),
    ("a..b", "invalid repository"),
    ("a___b", "invalid repository"),
    ("a.-b", "invalid repository"),
    ("x.io/a+b", "invalid repository"),
    ("a_b.c/foo", "invalid registry"),
    ("-x.io/a", "invalid registry"),
    ("x-.io/a", "invalid registry"),
    ("x.io:port/a", "invalid registry"),
    ("x.io:/a", "invalid registry"),
    ("::1/repo", "invalid registry"),
    ("[::1/repo", "invalid registry"),
    ("[fe80::1%eth0]:5000/x", "invalid registry"),
    ("[::g]/x", "invalid registry"),
    ("x_y:5000/a", "invalid registry"),
    ("https://x.io/a", "invalid"),
    ("@" + D256, "missing repository"),
    (":tag", "missing repository"),
]


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "normalised"),
    VALID,
    ids=[case[0][:60] for case in VALID],
)
def test_valid_references(
    text: str,
    registry: str,
    repository: str,
    tag: str | None,
    digest: str | None,
    normalised: str,
) -> None:
    ref = Reference.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert (str(ref.digest) if ref.digest else None) == digest
    assert str(ref) == normalised
    assert ref.name == f"{registry}/{repository}"
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar) == ref


@pytest.mark.parametrize(("text", "fragment"), INVALID, ids=[c[0][:60] for c in INVALID])
def test_invalid_references(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert len(message) < 400


def test_megabyte_input_is_refused_early() -> None:
    with pytest.raises(InvalidReferenceError, match="far longer"):
        Reference.parse("a" * 1_000_000)


def test_table_size() -> None:
    assert len(VALID) + len(INVALID) >= 80


def test_error_quotes_a_shortened_copy_of_long_input() -> None:
    text = "Upper/" + "a" * 5000
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert "'Upper/aaaa" in str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("docker.io/library/alpine:3.19", "alpine:3.19"),
        ("docker.io/user/app", "user/app"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        (f"alpine@{D256}", f"alpine@{D256}"),
        ("docker.io/library/a/b", "library/a/b"),
        ("ghcr.io/o/r:t", "ghcr.io/o/r:t"),
        # A first path component that looks like a host keeps docker.io/ so it reads back.
        ("docker.io/foo.bar/x", "docker.io/foo.bar/x"),
        ("docker.io/localhost/x", "docker.io/localhost/x"),
        (f"docker.io/library/{H256}", f"library/{H256}"),
    ],
)
def test_familiar(text: str, familiar: str) -> None:
    ref = Reference.parse(text)
    assert ref.familiar == familiar
    assert Reference.parse(familiar) == ref


def test_reference_asks_for_digest_then_tag_then_latest() -> None:
    assert Reference.parse("alpine").reference == "latest"
    assert Reference.parse("alpine:3").reference == "3"
    assert Reference.parse(f"alpine:3@{D256}").reference == D256


@pytest.mark.parametrize("text", ["alpine", "docker://x.io/a", "localhost:5000/app"])
def test_strict_refuses_no_tag_and_no_digest(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match=r"add :tag or @sha256:"):
        Reference.parse(text, strict=True)


@pytest.mark.parametrize("text", ["alpine:3", f"alpine@{D256}", f"x.io/a:t@{D512}"])
def test_strict_accepts_tag_or_digest(text: str) -> None:
    assert Reference.parse(text, strict=True) == Reference.parse(text)


def test_strict_still_reports_the_real_problem_first() -> None:
    with pytest.raises(InvalidReferenceError, match="lowercase"):
        Reference.parse("Alpine", strict=True)


def test_with_digest_keeps_tag_and_with_tag_keeps_digest() -> None:
    ref = Reference.parse("x.io/a:1")
    digest = Digest.parse(D256)
    pinned = ref.with_digest(digest)
    assert (pinned.tag, pinned.digest) == ("1", digest)
    assert str(pinned) == f"x.io/a:1@{D256}"
    assert pinned.with_tag(None) == Reference("x.io", "a", None, digest)
    assert pinned.with_tag("2").tag == "2"
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("bad tag")


def test_direct_construction_is_validated_and_normalised() -> None:
    assert Reference("index.docker.io", "alpine") == Reference.parse("alpine")
    assert Reference("docker.io", "user/app") == Reference.parse("user/app")
    for registry, repository in [
        ("x.io", "Upper"),
        ("x.io", ""),
        ("", "a"),
        ("foo", "a"),  # would read back as a Docker Hub namespace
        ("x.io", "a//b"),
    ]:
        with pytest.raises(InvalidReferenceError):
            Reference(registry, repository)
    with pytest.raises(InvalidReferenceError):
        Reference("x.io", "a", tag="")


def test_reference_is_hashable_and_frozen() -> None:
    ref = Reference.parse("alpine:3")
    assert {ref, Reference.parse("docker.io/library/alpine:3")} == {ref}
    with pytest.raises(AttributeError):
        ref.tag = "4"  # type: ignore[misc]


# --- property tests ------------------------------------------------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def _path_component(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


_domain_component = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_port = st.integers(1, 65535).map(lambda p: f":{p}")
_ipv6 = st.lists(st.from_regex(r"[0-9a-fA-F]{1,4}", fullmatch=True), min_size=2, max_size=8).map(
    lambda groups: (
        "[" + "::".join(groups[:2]) + (":" + ":".join(groups[2:]) if groups[2:] else "") + "]"
    )
)
_registry = st.one_of(
    st.just("localhost"),
    st.builds(lambda p: "localhost" + p, _port),
    st.builds(
        lambda parts, port: ".".join(parts) + port,
        st.lists(_domain_component, min_size=2, max_size=4),
        st.one_of(st.just(""), _port),
    ),
    st.builds(lambda host, port: host + port, _domain_component, _port),
    st.builds(lambda host, port: host + port, _ipv6, st.one_of(st.just(""), _port)),
    st.builds(
        lambda a, b, c, d, port: f"{a}.{b}.{c}.{d}{port}",
        *[st.integers(0, 255)] * 4,
        st.one_of(st.just(""), _port),
    ),
    st.just("docker.io"),
    st.just("index.docker.io"),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.one_of(
    st.binary(max_size=8).map(lambda b: f"sha256:{hashlib.sha256(b).hexdigest()}"),
    st.binary(max_size=8).map(lambda b: f"sha512:{hashlib.sha512(b).hexdigest()}"),
)


@st.composite
def reference_texts(draw: st.DrawFn) -> str:
    path = "/".join(draw(st.lists(_path_component(), min_size=1, max_size=3)))
    registry = draw(st.one_of(st.none(), _registry))
    if registry is None and "." in path.split("/")[0] and "/" in path:
        # "a.b/c" names registry a.b: without a registry the text would mean another thing.
        registry = "docker.io"
    text = path if registry is None else f"{registry}/{path}"
    if draw(st.booleans()):
        text += ":" + draw(_tag)
    if draw(st.booleans()):
        text += "@" + draw(_digest)
    if draw(st.booleans()):
        text = "docker://" + text
    return text


@given(reference_texts())
def test_round_trip_of_generated_references(text: str) -> None:
    ref = Reference.parse(text)
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar) == ref
    assert str(ref).startswith(ref.registry + "/")
    assert ref.registry not in ("index.docker.io",)
    if ref.registry == "docker.io":
        assert "/" in ref.repository


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_invalid_reference(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReferenceError as exc:
        message = str(exc)
    else:
        message = ""
        assert Reference.parse(str(ref)) == ref
    assert "\n" not in message


# --- layouts and targets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "tag", "digest"),
    [
        ("oci:./layout", "./layout", None, None),
        ("oci:/tmp/layout:v1", "/tmp/layout", "v1", None),
        ("oci:layout:1.0.0", "layout", "1.0.0", None),
        (f"oci:/tmp/l@{D256}", "/tmp/l", None, D256),
        (f"oci:/tmp/l:v1@{D512}", "/tmp/l", "v1", D512),
        ("oci:/tmp/a:b/c", "/tmp/a:b/c", None, None),  # suffix has '/': all path
        ("oci:/tmp/x:../../etc", "/tmp/x:../../etc", None, None),  # never a tag
        ("oci:/tmp/x:..", "/tmp/x:..", None, None),
        ("oci:/tmp/a@b", "/tmp/a@b", None, None),
        ("oci:/tmp/a:v1@beta", "/tmp/a", "v1@beta", None),
        ("oci:/tmp/a:x--y+z", "/tmp/a", "x--y+z", None),
        ("oci:/srv/my layout:t", "/srv/my layout", "t", None),
    ],
)
def test_layout_references(text: str, path: str, tag: str | None, digest: str | None) -> None:
    target = parse_target(text)
    assert isinstance(target, LayoutReference)
    assert target.path == path
    assert target.tag == tag
    assert (str(target.digest) if target.digest else None) == digest
    if ":" not in path and "@" not in path:
        assert parse_target(str(target)) == target
    # Whatever was parsed as a tag is a single safe component.
    if target.tag is not None:
        assert "/" not in target.tag
        assert ".." not in target.tag
        assert "\x00" not in target.tag


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("oci:", "directory path"),
        ("oci::v1", "directory path"),
        ("oci:/tmp/x:", "empty tag"),
        ("oci:/tmp/x\x00:v1", "NUL"),
        ("oci:/tmp/x:v\x001", "NUL"),
        ("oci:/tmp/x\n:v1", "control"),
        ("oci:/tmp/x@sha256:zz", "invalid digest"),
        (f"oci:/tmp/x@md5:{'a' * 32}", "md5"),
        (f"oci:/tmp/x@sha256:{H256.upper()}", "lowercase hex"),
        ("oci:/tmp/x:" + "t" * 256, "at most 255"),
    ],
)
def test_invalid_layout_references(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_target(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("tag", ["../etc", "..", ".", "a/b", "a\x00", "a:b", "/abs", "a\\b", ""])
def test_layout_tag_refuses_traversal(tag: str) -> None:
    with pytest.raises(InvalidReferenceError):
        LayoutReference("/tmp/x", tag)
    with pytest.raises(InvalidReferenceError):
        LayoutReference("/tmp/x").with_tag(tag)


def test_layout_with_digest_and_tag_and_str() -> None:
    digest = Digest.parse(D256)
    layout = LayoutReference("/tmp/l").with_tag("v1").with_digest(digest)
    assert str(layout) == f"oci:/tmp/l:v1@{D256}"
    assert layout.with_tag(None) == LayoutReference("/tmp/l", None, digest)
    assert parse_target(str(layout)) == layout


def test_layout_strict() -> None:
    with pytest.raises(InvalidReferenceError, match="add :tag"):
        parse_target("oci:/tmp/l", strict=True)
    assert parse_target("oci:/tmp/l:v1", strict=True) == LayoutReference("/tmp/l", "v1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine:3", "docker.io/library/alpine:3"),
        ("docker://alpine:3", "docker.io/library/alpine:3"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
    ],
)
def test_targets_that_are_registry_references(text: str, expected: str) -> None:
    target = parse_target(text)
    assert isinstance(target, Reference)
    assert str(target) == expected


@pytest.mark.parametrize(
    "text",
    ["docker-archive:foo.tar", "oci-archive:/tmp/x.tar:v1", "dir:/tmp/x", "docker-daemon:a:1"],
)
def test_other_transports_are_refused_not_misread(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match="not supported"):
        parse_target(text)


def test_strict_target_refuses_bare_name() -> None:
    with pytest.raises(InvalidReferenceError, match="never assumes :latest"):
        parse_target("docker://alpine", strict=True)


_layout_tag = st.from_regex(r"[A-Za-z0-9]+((\.|_|-|--|\+|@)[A-Za-z0-9]+){0,3}", fullmatch=True)
_layout_path = st.from_regex(r"(\.|/tmp|/srv/a-b)(/[a-z0-9_.-]{1,8}){0,3}", fullmatch=True)


@given(_layout_path, st.one_of(st.none(), _layout_tag), st.one_of(st.none(), _digest))
def test_layout_round_trip(path: str, tag: str | None, digest: str | None) -> None:
    layout = LayoutReference(path, tag, Digest.parse(digest) if digest else None)
    assert parse_target(str(layout)) == layout
