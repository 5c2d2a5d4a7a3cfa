"""conveyor pin against a real CNCF distribution registry (images pushed with skopeo), then
lint finds no CV001; the digests written are the ones skopeo reports."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor.configs.extract import extract_sites
from conveyor.configs.files import detect_kind, discover
from tests.support.images import BuiltImage, build_image, build_index
from tests.support.registry import RunningRegistry, skopeo

pytestmark = pytest.mark.registry


def _push(img: BuiltImage, dest: str, *, all_: bool = False) -> None:
    extra = ["--all"] if all_ else []
    skopeo(
        "copy",
        *extra,
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{img.layout}:latest",
        f"docker://{dest}",
    )


def _skopeo_digest(ref: str) -> str:
    """The digest of what the tag names now, by skopeo: sha256 of the raw manifest bytes."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
        check=True,
        capture_output=True,
        timeout=300,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _conveyor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _lint() -> Callable[[list[Path]], Any] | None:
    try:
        from conveyor.configs.lint import lint
    except ImportError:  # pragma: no cover - the lint layer lands separately
        return None
    return lint


def _write_tree(root: Path, host: str) -> None:
    (root / "k8s").mkdir(parents=True)
    (root / "k8s" / "deploy.yaml").write_text(
        "# web and its worker\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
        "    spec:\n      containers:\n"
        f"        - name: web\n          image: {host}/pin/web:v1   # the app\n"
        "---\n"
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: worker\nspec:\n  template:\n"
        "    spec:\n      initContainers:\n"
        f"      - name: init\n        image: '{host}/pin/multi:1'\n"
        f'      containers:\n      - name: worker\n        image: "{host}/pin/worker:2.0"\n'
    )
    (root / "chart").mkdir()
    (root / "chart" / "values.yaml").write_text(
        f"image:\n  repository: {host}/pin/web\n  tag: v1\n  digest: ''\n  pullPolicy: Always\n"
    )
    (root / "overlay").mkdir()
    (root / "overlay" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n"
        f"images:\n- name: web\n  newName: {host}/pin/web\n  newTag: v1\n"
    )
    (root / "docker-compose.yml").write_text(
        f"services:\n  worker:\n    image: {host}/pin/worker:2.0\n"
    )
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "ci.yml").write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
        f"    container: {host}/pin/base:3.19\n"
        f"    services:\n      db:\n        image: {host}/pin/worker:2.0\n"
        f"    steps:\n      - uses: docker://{host}/pin/base:3.19\n"
    )
    (root / "Dockerfile").write_text(
        f"FROM --platform=$BUILDPLATFORM {host}/pin/base:3.19 AS build\nRUN true\n"
        f"FROM {host}/pin/multi:1\nCOPY --from=build /x /x\n"
    )


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("pin-images")
    images = {
        "pin/web:v1": build_image(work / "web", labels={"git.commit": "c0ffee1"}),
        "pin/worker:2.0": build_image(work / "worker"),
        "pin/base:3.19": build_image(work / "base"),
    }
    for name, img in images.items():
        _push(img, f"{registry.host}/{name}")
    multi = build_index(work / "multi", architectures=("amd64", "arm64"))
    _push(multi, f"{registry.host}/pin/multi:1", all_=True)
    names = [*images, "pin/multi:1"]
    return {name: _skopeo_digest(f"{registry.host}/{name}") for name in names}


def test_pin_then_lint_finds_no_cv001(
    tmp_path: Path, registry: RunningRegistry, pushed: dict[str, str]
) -> None:
    root = tmp_path / "repo"
    _write_tree(root, registry.host)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    lint = _lint()
    if lint is not None:  # the lint sees the mistakes pin is about to fix
        assert len([f for f in lint([root]).findings if f.rule == "CV001"]) >= 8

    check = _conveyor("pin", "--check", "--insecure-registry", registry.host, ".", cwd=root)
    assert check.returncode == 1, check.stderr
    assert {p: p.read_bytes() for p in before} == before

    done = _conveyor(
        "pin", "--insecure-registry", registry.host, "--lock", "../pin.lock.json", ".", cwd=root
    )
    assert done.returncode == 0, done.stderr
    assert "pinned" in done.stdout

    for name, digest in pushed.items():
        repository, tag = name.split(":")
        expected = f"{registry.host}/{repository}:{tag}@{digest}"
        written = "".join(p.read_text() for p in root.rglob("*") if p.is_file())
        assert expected in written or f"digest: '{digest}'" in written, name
    values = (root / "chart" / "values.yaml").read_text()
    assert f"  digest: '{pushed['pin/web:v1']}'\n" in values
    kustomization = (root / "overlay" / "kustomization.yaml").read_text()
    assert kustomization.endswith(f"  newTag: v1\n  digest: {pushed['pin/web:v1']}\n")
    deploy = (root / "k8s" / "deploy.yaml").read_text()
    assert f"image: {registry.host}/pin/web:v1@{pushed['pin/web:v1']}   # the app\n" in deploy
    assert f"image: '{registry.host}/pin/multi:1@{pushed['pin/multi:1']}'\n" in deploy
    dockerfile = (root / "Dockerfile").read_text()
    assert dockerfile.startswith(
        f"FROM --platform=$BUILDPLATFORM {registry.host}/pin/base:3.19@{pushed['pin/base:3.19']}"
        " AS build\n"
    )

    # Every deploy site now names a digest (extraction), and lint has no CV001 left.
    for path, display in discover([root]):
        text = path.read_text()
        kind = detect_kind(path, text)
        if kind is None:
            continue
        for site in extract_sites(path, text, display_path=display, kind=kind):
            assert "@sha256:" in site.reference, (display, site.reference)
    if lint is not None:
        report = lint([root])
        cv001 = [f for f in report.findings if f.rule == "CV001"]
        assert cv001 == [], cv001
        assert report.errors == []

    again = _conveyor("pin", "--check", "--insecure-registry", registry.host, ".", cwd=root)
    assert again.returncode == 0, again.stderr

    lock = json.loads((tmp_path / "pin.lock.json").read_text())
    for name, digest in pushed.items():
        assert lock["images"][f"{registry.host}/{name}"]["digest"] == digest


def test_from_lock_needs_no_registry(
    tmp_path: Path, registry: RunningRegistry, pushed: dict[str, str]
) -> None:
    online = tmp_path / "online"
    _write_tree(online, registry.host)
    lock = tmp_path / "lock.json"
    done = _conveyor(
        "pin", "--insecure-registry", registry.host, "--lock", str(lock), ".", cwd=online
    )
    assert done.returncode == 0, done.stderr
    offline = tmp_path / "offline"
    _write_tree(offline, registry.host)
    # No --insecure-registry: any registry request would fail on TLS; none is made.
    again = _conveyor("pin", "--from-lock", str(lock), ".", cwd=offline)
    assert again.returncode == 0, again.stderr
    for path in online.rglob("*"):
        if path.is_file():
            assert (offline / path.relative_to(online)).read_bytes() == path.read_bytes()


def test_wrong_digest_and_unknown_tag(
    tmp_path: Path, registry: RunningRegistry, pushed: dict[str, str]
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    wrong = root / "wrong.yml"
    wrong_text = f"services:\n  a:\n    image: {registry.host}/pin/web:v1@sha256:{'0' * 64}\n"
    wrong.write_text(wrong_text)
    unknown = root / "unknown.yml"
    unknown_text = f"services:\n  a:\n    image: {registry.host}/pin/web:no-such-tag\n"
    unknown.write_text(unknown_text)
    fine = root / "fine.yml"
    fine.write_text(f"services:\n  a:\n    image: {registry.host}/pin/worker:2.0\n")
    result = _conveyor("pin", "--insecure-registry", registry.host, ".", cwd=root)
    assert result.returncode == 3, result.stderr  # the unknown tag: the registry said 404
    assert "wrong.yml" in result.stderr
    assert "not in the registry" in result.stderr
    assert wrong.read_text() == wrong_text
    assert unknown.read_text() == unknown_text
    assert f"@{pushed['pin/worker:2.0']}" in fine.read_text()
    shutil.rmtree(root)
