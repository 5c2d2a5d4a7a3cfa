from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from conveyor.errors import AuthenticationError, ConfigError
from conveyor.oci.digest import Digest
from conveyor.registry.auth import (
    DockerCredentials,
    config_key_host,
    parse_www_authenticate,
)
from conveyor.registry.client import RegistryClient
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import (
    auth_entry,
    client_for,
    push_image,
    repo,
    write_docker_config,
)

# --- WWW-Authenticate -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="registry"', [("basic", {"realm": "registry"})]),
        (
            'Bearer realm="https://auth.example/token",service="reg.example",'
            'scope="repository:a/b:pull,push"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://auth.example/token",
                        "service": "reg.example",
                        "scope": "repository:a/b:pull,push",
                    },
                )
            ],
        ),
        (
            'bearer realm="https://a/t", scope="repository:x:pull repository:y:pull"',
            [("bearer", {"realm": "https://a/t", "scope": "repository:x:pull repository:y:pull"})],
        ),
        (
            'Basic realm="a, b", Bearer realm="https://t",service=s',
            [("basic", {"realm": "a, b"}), ("bearer", {"realm": "https://t", "service": "s"})],
        ),
        ('Basic realm="say \\"hi\\""', [("basic", {"realm": 'say "hi"'})]),
        ("Negotiate", [("negotiate", {})]),
        (
            "Bearer REALM=https://t , Service = s",
            [("bearer", {"realm": "https://t", "service": "s"})],
        ),
        ("", []),
        (",,, ,", []),
        ('=x, realm="orphan"', []),
        ('Bearer realm="unterminated', [("bearer", {"realm": "unterminated"})]),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    parsed = [(c.scheme, dict(c.params)) for c in parse_www_authenticate(header)]
    assert parsed == expected


def test_parse_www_authenticate_hostile_long_input_is_linear() -> None:
    header = 'Bearer realm="' + "a," * 50_000 + '"' + ", x=y" * 10_000
    challenges = parse_www_authenticate(header)
    assert challenges[0].scheme == "bearer"
    assert challenges[0].params["x"] == "y"


# --- docker config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("reg.example:5000", "reg.example:5000"),
        ("https://Reg.Example/v2/", "reg.example"),
        ("http://localhost:5000", "localhost:5000"),
    ],
)
def test_config_key_host(key: str, host: str) -> None:
    assert config_key_host(key) == host


def test_auths_base64_and_username_password(tmp_path: Path) -> None:
    cfg = write_docker_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": auth_entry("hubuser", "hubpass"),
                "reg.example": {"username": "u2", "password": "p2"},
                "other.example": {},
            }
        },
    )
    creds = DockerCredentials(cfg)
    hub = creds.get("docker.io")
    assert hub is not None
    assert (hub.username, hub.password) == ("hubuser", "hubpass")
    plain = creds.get("reg.example")
    assert plain is not None
    assert (plain.username, plain.password) == ("u2", "p2")
    assert creds.get("other.example") is None
    assert creds.get("absent.example") is None
    assert "p2" not in repr(plain)


def test_docker_config_env_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_docker_config(tmp_path / "d", {"auths": {"r.example": auth_entry("a", "b")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    found = DockerCredentials().get("r.example")
    assert found is not None
    assert found.username == "a"


def test_home_docker_config_is_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_docker_config(tmp_path / ".docker", {"auths": {"r.example": auth_entry("h", "i")}})
    found = DockerCredentials().get("r.example")
    assert found is not None
    assert found.username == "h"


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", json.dumps({"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}})],
)
def test_bad_docker_config_is_a_clear_config_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError) as info:
        DockerCredentials(tmp_path).get("r.example")
    assert "config.json" in str(info.value)


def _helper(tmp_path: Path, name: str, script: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_cred_helpers_and_creds_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _helper(
        tmp_path,
        "test",
        'read server\necho "$server" >> "$(dirname "$0")/asked"\n'
        'printf \'{"ServerURL":"%s","Username":"helper-user","Secret":"helper-pw"}\' "$server"\n',
    )
    _helper(
        tmp_path,
        "store",
        'read server\nif [ "$server" = "https://index.docker.io/v1/" ]; then\n'
        '  echo \'{"Username":"<token>","Secret":"refresh-me"}\'; exit 0; fi\n'
        'echo "credentials not found in native keychain"; exit 1\n',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    cfg = write_docker_config(
        tmp_path / "cfg",
        {
            "credHelpers": {"helped.example": "test"},
            "credsStore": "store",
            "auths": {"inline.example": auth_entry("inline", "pw")},
        },
    )
    creds = DockerCredentials(cfg)
    helped = creds.get("helped.example")
    assert helped is not None
    assert (helped.username, helped.password) == ("helper-user", "helper-pw")
    assert creds.get("helped.example") is helped  # cached: the helper ran once
    assert (bin_dir / "asked").read_text().splitlines() == ["helped.example"]
    hub = creds.get("docker.io")
    assert hub is not None
    assert (hub.username, hub.identity_token) == (None, "refresh-me")
    assert creds.get("nowhere.example") is None
    inline = creds.get("inline.example")
    assert inline is not None
    assert inline.username == "inline"


def test_missing_helper_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = write_docker_config(tmp_path / "cfg", {"credsStore": "nosuch"})
    with pytest.raises(ConfigError, match="docker-credential-nosuch is not on PATH"):
        DockerCredentials(cfg).get("r.example")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("echo 'not json'\n", "other than the expected JSON"),
        ("echo boom >&2; exit 3\n", "failed"),
        ('echo \'{"Username": 1, "Secret": "x"}\'\n', "non-string"),
    ],
)
def test_broken_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, message: str
) -> None:
    bin_dir = _helper(tmp_path, "bad", "read server\n" + script)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    cfg = write_docker_config(tmp_path / "cfg", {"credHelpers": {"r.example": "bad"}})
    with pytest.raises(AuthenticationError, match=message):
        DockerCredentials(cfg).get("r.example")


# --- end to end with the fake -----------------------------------------------------------


def test_anonymous_registry_gets_no_authorization() -> None:
    fake = FakeRegistry()
    image = push_image(fake)
    with client_for(fake) as client:
        assert repo(client, fake).get_manifest(image.tag).digest.encoded in image.digest
    assert all("authorization" not in r.headers for r in fake.requests)


def test_basic_auth_from_config(tmp_path: Path) -> None:
    fake = FakeRegistry(require_auth=("alice", "wonderland"))
    image = push_image(fake)
    cfg = write_docker_config(tmp_path, {"auths": {fake.host: auth_entry("alice", "wonderland")}})
    with client_for(fake, config_dir=cfg) as client:
        client.ping(fake.host)
        r = repo(client, fake)
        r.get_manifest(image.tag)
        r.get_manifest(image.tag)  # a tag is asked again (a digest read once is remembered)
    # one 401 to learn the challenge, then Basic is sent up front
    assert [r.method for r in fake.requests].count("GET") == 4
    assert sum(1 for r in fake.requests if "authorization" not in r.headers) == 1


def test_basic_auth_without_credentials_says_what_to_do() -> None:
    fake = FakeRegistry(require_auth=("alice", "wonderland"))
    push_image(fake)
    with client_for(fake) as client, pytest.raises(AuthenticationError) as info:
        repo(client, fake).get_manifest("v1")
    assert "docker login fake.example" in str(info.value)
    assert info.value.exit_code == 3


def test_bearer_token_cached_per_scope(tmp_path: Path) -> None:
    fake = FakeRegistry(require_auth=("bob", "builder"), bearer=True)
    image = push_image(fake)
    cfg = write_docker_config(tmp_path, {"auths": {fake.host: auth_entry("bob", "builder")}})
    with client_for(fake, config_dir=cfg) as client:
        r = repo(client, fake)
        for _ in range(3):
            r.get_manifest(image.tag)
            for layer in image.layers:
                assert r.blob_size(Digest.parse(layer)) == len(image.layers[layer])
        other = repo(client, fake, "team/other")
        data = b"pushed with a push-scope token"
        other.write_blob(Digest.of(data), len(data), [data])
        other.write_blob(Digest.of(data + b"!"), len(data) + 1, [data, b"!"])
    scopes = [s for _, s in fake.tokens_issued]
    assert scopes.count(("repository:team/app:pull",)) == 1
    assert scopes.count(("repository:team/other:pull,push",)) == 1
    token_requests = [r for r in fake.requests if r.host == fake.auth_host]
    # the token service got Basic credentials; the registry only ever saw Bearer
    assert all(r.headers["authorization"].startswith("Basic ") for r in token_requests)
    registry_auth = [
        r.headers.get("authorization", "") for r in fake.requests if r.host == fake.host
    ]
    assert all(h == "" or h.startswith("Bearer ") for h in registry_auth)


def test_token_refetched_after_expiry() -> None:
    fake = FakeRegistry(bearer=True, token_lifetime=None)  # default lifetime: 60 s
    image = push_image(fake)
    now = [1000.0]
    client = RegistryClient(transport=fake.transport, sleep=lambda s: None, clock=lambda: now[0])
    with client:
        r = repo(client, fake)
        r.get_manifest(image.tag)
        now[0] += 30
        r.get_manifest(image.tag)
        assert len(fake.tokens_issued) == 1
        now[0] += 40  # past 60 s
        r.get_manifest(image.tag)
        assert len(fake.tokens_issued) == 2


def test_access_token_field_and_identity_token_flow(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example":
            assert request.method == "POST"
            form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
            assert form["grant_type"] == "refresh_token"
            assert form["refresh_token"] == "my-refresh-token"
            return httpx.Response(200, json={"access_token": "oauth-access", "expires_in": 300})
        if request.headers.get("authorization") == "Bearer oauth-access":
            return httpx.Response(200, json={})
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="r"'},
        )

    cfg = write_docker_config(
        tmp_path, {"auths": {"r.example": {"identitytoken": "my-refresh-token"}}}
    )
    with RegistryClient(
        transport=httpx.MockTransport(handler), docker_config_dir=cfg, sleep=lambda s: None
    ) as client:
        client.ping("r.example")
    assert [r.url.host for r in seen] == ["r.example", "auth.example", "r.example"]


def test_token_realm_over_plain_http_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example/token"'}
        )

    with (
        RegistryClient(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(AuthenticationError, match="plain HTTP"),
    ):
        client.ping("r.example")


def test_endless_401_gives_up_after_one_retry(tmp_path: Path) -> None:
    fake = FakeRegistry(require_auth=("u", "p"), bearer=True)
    push_image(fake)
    fake.always_401 = True
    cfg = write_docker_config(tmp_path, {"auths": {fake.host: auth_entry("u", "p")}})
    with client_for(fake, config_dir=cfg) as client, pytest.raises(AuthenticationError) as info:
        repo(client, fake).get_manifest("v1")
    registry_requests = [r for r in fake.requests if r.host == fake.host]
    assert len(registry_requests) == 2
    assert "were refused" in str(info.value)
    assert info.value.exit_code == 3


def test_wrong_password_for_token_service(tmp_path: Path) -> None:
    fake = FakeRegistry(require_auth=("u", "right"), bearer=True)
    push_image(fake)
    cfg = write_docker_config(
        tmp_path, {"auths": {fake.host: auth_entry("u", "not-the-right-pw-7731")}}
    )
    with client_for(fake, config_dir=cfg) as client, pytest.raises(AuthenticationError) as info:
        repo(client, fake).get_manifest("v1")
    assert "token service" in str(info.value)
    assert "not-the-right-pw-7731" not in str(info.value)


def test_unsupported_scheme() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})

    with (
        RegistryClient(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(AuthenticationError, match="unsupported scheme"),
    ):
        client.ping("r.example")
