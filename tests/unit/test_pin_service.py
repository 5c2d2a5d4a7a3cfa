"""service.pin through the real registry client against the in-memory fake registry; the lock
file round trip; --from-lock and --offline touch no network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import pytest

from conveyor import service
from conveyor.configs.lockfile import read_lock
from conveyor.errors import ConfigError, InputError
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import push_image

HOST = "registry.example"


def _options(fake: FakeRegistry) -> service.RegistryOptions:
    return service.RegistryOptions(transport=fake.transport)


def _manifests(tmp_path: Path) -> tuple[Path, Path, Path]:
    deploy = tmp_path / "k8s" / "deploy.yaml"
    deploy.parent.mkdir()
    deploy.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
        "    spec:\n      containers:\n"
        f"      - name: web\n        image: {HOST}/team/web:v1  # the app\n"
        f"      - name: side\n        image: '{HOST}/team/side:v2'\n"
    )
    values = tmp_path / "chart" / "values.yaml"
    values.parent.mkdir()
    values.write_text(f"image:\n  repository: {HOST}/team/web\n  tag: v1\n  pullPolicy: Always\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {HOST}/team/base:3 AS build\nRUN true\n")
    return deploy, values, dockerfile


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry(HOST)


def test_pin_resolves_through_the_registry_and_writes_a_lock(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    web = push_image(fake, "team/web", "v1")
    side = push_image(fake, "team/side", "v2")
    base = push_image(fake, "team/base", "3")
    deploy, values, dockerfile = _manifests(tmp_path)
    lock = tmp_path / "pin.lock.json"
    report = service.pin([tmp_path], lock=lock, options=_options(fake))
    assert report.exit_code == 0, [r.error for r in report.files]
    assert f"image: {HOST}/team/web:v1@{web.digest}  # the app\n" in deploy.read_text()
    assert f"image: '{HOST}/team/side:v2@{side.digest}'\n" in deploy.read_text()
    assert values.read_text() == (
        f"image:\n  repository: {HOST}/team/web\n  tag: v1\n  digest: {web.digest}\n"
        "  pullPolicy: Always\n"
    )
    assert dockerfile.read_text().startswith(f"FROM {HOST}/team/base:3@{base.digest} AS build\n")
    document = json.loads(lock.read_text())
    assert document["version"] == 1
    images = document["images"]
    assert images[f"{HOST}/team/web:v1"]["digest"] == web.digest
    assert images[f"{HOST}/team/side:v2"]["digest"] == side.digest
    assert images[f"{HOST}/team/base:3"]["digest"] == base.digest
    assert {entry["registry"] for entry in images.values()} == {HOST}
    assert all(entry["resolved_at"].endswith("Z") for entry in images.values())

    # Second run: digests present, verified with the registry, nothing rewritten.
    before = {p: p.read_bytes() for p in (deploy, values, dockerfile)}
    again = service.pin([tmp_path], check=True, options=_options(fake))
    assert again.exit_code == 0
    assert again.changed == []
    assert {p: p.read_bytes() for p in before} == before


class _NoNetwork:
    """An opener that fails any use: --from-lock must never open a repository."""

    def __call__(self, target: object, *, create: bool) -> NoReturn:
        raise AssertionError("--from-lock must not open a repository")

    def close(self) -> None:
        pass


def test_from_lock_repins_without_network(tmp_path: Path, fake: FakeRegistry) -> None:
    web = push_image(fake, "team/web", "v1")
    push_image(fake, "team/side", "v2")
    push_image(fake, "team/base", "3")
    online = tmp_path / "online"
    online.mkdir()
    _manifests(online)
    lock = tmp_path / "pin.lock.json"
    service.pin([online], lock=lock, options=_options(fake))
    pinned = {p.relative_to(online): p.read_bytes() for p in online.rglob("*") if p.is_file()}

    air_gapped = tmp_path / "air-gapped"
    air_gapped.mkdir()
    _manifests(air_gapped)
    report = service.pin([air_gapped], from_lock=lock, opener=_NoNetwork())
    assert report.exit_code == 0, [r.error for r in report.files]
    repinned = {
        p.relative_to(air_gapped): p.read_bytes() for p in air_gapped.rglob("*") if p.is_file()
    }
    assert repinned == pinned
    assert web.digest in (air_gapped / "chart" / "values.yaml").read_text()


def test_from_lock_replaces_a_digest_that_differs_from_the_lock(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    web = push_image(fake, "team/web", "v1")
    lock = tmp_path / "lock.json"
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f"services:\n  web:\n    image: {HOST}/team/web:v1\n")
    service.pin([compose], lock=lock, options=_options(fake))
    stale = "sha256:" + "0" * 64
    compose.write_text(f"services:\n  web:\n    image: {HOST}/team/web:v1@{stale}\n")
    report = service.pin([compose], from_lock=lock, check=True)
    assert report.exit_code == 1
    assert report.files[0].sites[0].status == "repinned"
    service.pin([compose], from_lock=lock)
    assert compose.read_text() == f"services:\n  web:\n    image: {HOST}/team/web:v1@{web.digest}\n"


def test_from_lock_without_the_reference_fails_that_file(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    lock.write_text('{"version": 1, "environment": null, "images": {}}\n')
    compose = tmp_path / "docker-compose.yml"
    text = "services:\n  web:\n    image: nginx:1.25\n"
    compose.write_text(text)
    report = service.pin([compose], from_lock=lock)
    assert report.exit_code == 2
    assert "not in the lock file" in (report.files[0].error or "")
    assert compose.read_text() == text


def test_wrong_digest_is_exit_1_and_nothing_written(tmp_path: Path, fake: FakeRegistry) -> None:
    push_image(fake, "team/web", "v1")
    wrong = "sha256:" + "f" * 64
    compose = tmp_path / "docker-compose.yml"
    text = (
        f"services:\n  a:\n    image: {HOST}/team/web:v1@{wrong}\n"
        f"  b:\n    image: {HOST}/team/web:v1\n"
    )
    compose.write_text(text)
    report = service.pin([compose], options=_options(fake))
    assert report.exit_code == 1
    assert "not in the registry" in (report.files[0].error or "")
    assert compose.read_text() == text


def test_offline_keeps_written_digests_unverified_and_cannot_resolve_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = "sha256:" + "f" * 64
    pinned = tmp_path / "pinned.yml"
    pinned.write_text(f"services:\n  a:\n    image: {HOST}/team/web:v1@{digest}\n")
    report = service.pin([pinned], offline=True, check=True)
    assert report.exit_code == 0
    assert report.files[0].sites[0].status == "unchanged"
    assert "not verified" in report.files[0].sites[0].message
    tagged = tmp_path / "tagged.yml"
    tagged.write_text(f"services:\n  a:\n    image: {HOST}/team/web:v1\n")
    report = service.pin([tagged], offline=True)
    assert report.exit_code == 2
    assert "offline" in (report.files[0].error or "")


def test_registry_failure_is_exit_3_and_other_files_continue(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    web = push_image(fake, "team/web", "v1")
    down = tmp_path / "a-down.yml"
    down.write_text("services:\n  a:\n    image: registry.invalid:5000/team/web:v1\n")
    fine = tmp_path / "b-fine.yml"
    fine.write_text(f"services:\n  a:\n    image: {HOST}/team/web:v1\n")
    report = service.pin([tmp_path], options=_options(fake))
    by_name = {r.path.name: r for r in report.files}
    assert by_name["a-down.yml"].exit_code == 3
    assert down.read_text() == "services:\n  a:\n    image: registry.invalid:5000/team/web:v1\n"
    assert f"@{web.digest}" in fine.read_text()
    assert report.exit_code == 3


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        service.pin([tmp_path / "absent"])
    with pytest.raises(InputError, match="--check writes nothing"):
        service.pin([tmp_path], check=True, lock=tmp_path / "l.json")
    with pytest.raises(InputError, match="exclude each other"):
        service.pin([tmp_path], env="prod", from_lock=tmp_path / "l.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "invalid JSON"),
        (b'{"version": 2, "images": {}}', "version"),
        (b'{"version": 1, "images": []}', "images"),
        (b'{"version": 1, "images": {}, "images": {}}', "duplicate"),
        (b'{"version": 1, "images": {"nginx:1": {"digest": "sha256:00"}}}', "invalid lock"),
        (b'\xff\xfe{"version": 1}', "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    ],
)
def test_hostile_lock_files(tmp_path: Path, content: bytes, message: str) -> None:
    lock = tmp_path / "lock.json"
    lock.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_lock(lock)


def test_lock_entries_must_be_normalised_and_consistent(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    lock = tmp_path / "lock.json"
    lock.write_text(
        json.dumps(
            {
                "version": 1,
                "images": {
                    "nginx:1.25": {"digest": digest, "registry": "docker.io", "resolved_at": "x"},
                    "docker.io/library/redis:7": {
                        "digest": digest,
                        "registry": "ghcr.io",
                        "resolved_at": "x",
                    },
                },
            }
        )
    )
    with pytest.raises(ConfigError) as caught:
        read_lock(lock)
    assert len(caught.value.problems) == 2
    assert "normalised" in caught.value.problems[0]
    assert "registry" in caught.value.problems[1]


def test_a_registry_that_is_down_is_asked_once_per_run(tmp_path: Path, fake: FakeRegistry) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yml").write_text(
            f"services:\n  x:\n    image: registry.invalid:5000/team/{name}:v1\n"
        )
    report = service.pin([tmp_path], options=_options(fake))
    assert report.exit_code == 3
    assert len(report.failed) == 3
    asked = {r.url for r in fake.requests if "registry.invalid" in r.url and "/manifests/" in r.url}
    assert len(asked) == 1
