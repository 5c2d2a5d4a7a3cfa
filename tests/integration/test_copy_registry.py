"""conveyor copy against real CNCF distribution registries, cross-checked with skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conveyor import service
from conveyor.errors import DigestMismatch
from tests.support.images import BuiltImage, build_image, build_index
from tests.support.registry import RunningRegistry, skopeo

pytestmark = pytest.mark.registry


def _options(*registries: RunningRegistry) -> service.RegistryOptions:
    return service.RegistryOptions(insecure_registries=tuple(r.host for r in registries))


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


def _inspect(ref: str, *, raw: bool = False) -> str:
    args = ["inspect", "--tls-verify=false"] + (["--raw"] if raw else [])
    return skopeo(*args, f"docker://{ref}").stdout


def _manifest_status(registry: RunningRegistry, name: str, reference: str) -> int:
    response = httpx.head(
        f"{registry.url}/v2/{name}/manifests/{reference}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    return response.status_code


def test_copy_between_registries_keeps_digest_and_labels(
    tmp_path: Path, registry: RunningRegistry, registry_b: RunningRegistry
) -> None:
    labels = {"git.commit": "4f1c0ffee", "ci.run": "https://ci.example/run/1"}
    img = build_image(tmp_path / "img", labels=labels, layer_sizes=(300_000, 1_000_000))
    _push(img, f"{registry.host}/itest/app:v1")
    result = service.copy_image(
        f"{registry.host}/itest/app:v1",
        f"{registry_b.host}/itest/app:v1",
        options=_options(registry, registry_b),
    )
    assert str(result.digest) == img.digest
    assert result.blobs_copied == len(img.blobs)
    assert result.bytes_transferred == sum(img.blobs.values())
    info = json.loads(_inspect(f"{registry_b.host}/itest/app:v1"))
    assert info["Digest"] == img.digest
    assert info["Labels"] == labels
    again = service.copy_image(
        f"{registry.host}/itest/app:v1",
        f"{registry_b.host}/itest/app:v1",
        options=_options(registry, registry_b),
    )
    assert (again.blobs_copied, again.blobs_skipped, again.bytes_transferred) == (
        0,
        len(img.blobs),
        0,
    )


def test_same_registry_copy_mounts_without_moving_bytes(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    img = build_image(tmp_path / "img", layer_sizes=(500_000,))
    _push(img, f"{registry.host}/itest/mount-src:v1")
    result = service.copy_image(
        f"{registry.host}/itest/mount-src:v1",
        f"{registry.host}/itest/mount-dst:v1",
        options=_options(registry),
    )
    assert result.blobs_mounted == len(img.blobs)
    assert result.bytes_transferred == 0
    assert json.loads(_inspect(f"{registry.host}/itest/mount-dst:v1"))["Digest"] == img.digest


def test_multi_arch_index_copied_whole(
    tmp_path: Path, registry: RunningRegistry, registry_b: RunningRegistry
) -> None:
    idx = build_index(tmp_path / "idx", architectures=("amd64", "arm64", "ppc64le"))
    _push(idx, f"{registry.host}/itest/multi:v1", all_=True)
    result = service.copy_image(
        f"{registry.host}/itest/multi:v1",
        f"{registry_b.host}/itest/multi:v2",
        options=_options(registry, registry_b),
    )
    assert str(result.digest) == idx.digest
    assert result.manifests == 4
    raw = _inspect(f"{registry_b.host}/itest/multi:v2", raw=True)
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == idx.digest
    for child in json.loads(raw)["manifests"]:
        child_raw = _inspect(f"{registry_b.host}/itest/multi@{child['digest']}", raw=True)
        assert "sha256:" + hashlib.sha256(child_raw.encode()).hexdigest() == child["digest"]
    inspection = service.inspect(f"{registry_b.host}/itest/multi:v2", options=_options(registry_b))
    assert inspection.platforms == ["linux/amd64", "linux/arm64", "linux/ppc64le"]


def test_layout_written_by_conveyor_is_read_by_skopeo(
    tmp_path: Path, registry: RunningRegistry, registry_b: RunningRegistry
) -> None:
    img = build_image(tmp_path / "img", labels={"git.commit": "abc"})
    _push(img, f"{registry.host}/itest/to-layout:v1")
    layout = tmp_path / "conveyor-layout"
    result = service.copy_image(
        f"{registry.host}/itest/to-layout:v1", f"oci:{layout}:v1", options=_options(registry)
    )
    assert str(result.digest) == img.digest
    info = json.loads(skopeo("inspect", f"oci:{layout}:v1").stdout)
    assert info["Digest"] == img.digest
    assert info["Labels"] == {"git.commit": "abc"}
    # skopeo can also push it on, unchanged.
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://{registry_b.host}/itest/from-conveyor-layout:v1",
    )
    info_b = json.loads(_inspect(f"{registry_b.host}/itest/from-conveyor-layout:v1"))
    assert info_b["Digest"] == img.digest

    idx = build_index(tmp_path / "idx")
    _push(idx, f"{registry.host}/itest/idx-to-layout:v1", all_=True)
    service.copy_image(
        f"{registry.host}/itest/idx-to-layout:v1", f"oci:{layout}:multi", options=_options(registry)
    )
    raw = skopeo("inspect", "--raw", f"oci:{layout}:multi").stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == idx.digest


def test_layout_written_by_skopeo_is_read_by_conveyor(
    tmp_path: Path, registry: RunningRegistry, registry_b: RunningRegistry
) -> None:
    img = build_image(tmp_path / "img", labels={"ci.run": "77"})
    _push(img, f"{registry.host}/itest/via-skopeo:v1")
    layout = tmp_path / "skopeo-layout"
    skopeo(
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        f"docker://{registry.host}/itest/via-skopeo:v1",
        f"oci:{layout}:rel-1",
    )
    resolved = service.resolve(f"oci:{layout}:rel-1")
    assert str(resolved.digest) == img.digest
    assert service.inspect(f"oci:{layout}:rel-1").labels == {"ci.run": "77"}
    assert service.list_tags(f"oci:{layout}") == ["rel-1"]
    result = service.copy_image(
        f"oci:{layout}:rel-1",
        f"{registry_b.host}/itest/from-skopeo-layout:rel-1",
        options=_options(registry_b),
    )
    assert str(result.digest) == img.digest
    info = json.loads(_inspect(f"{registry_b.host}/itest/from-skopeo-layout:rel-1"))
    assert info["Digest"] == img.digest


def _blob_data_path(registry: RunningRegistry, digest: str) -> Path:
    encoded = digest.split(":")[1]
    return (
        registry.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / encoded[:2] / encoded
    ) / "data"


def test_tampered_blob_in_source_storage_is_detected(
    tmp_path: Path, registry: RunningRegistry, registry_b: RunningRegistry
) -> None:
    img = build_image(tmp_path / "img", layer_sizes=(200_000,))
    _push(img, f"{registry.host}/itest/tampered:v1")
    layer = max(img.blobs, key=lambda d: img.blobs[d])
    path = _blob_data_path(registry, layer)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(DigestMismatch):
        service.copy_image(
            f"{registry.host}/itest/tampered:v1",
            f"{registry_b.host}/itest/tampered:v1",
            options=_options(registry, registry_b),
        )
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "copy",
            f"{registry.host}/itest/tampered:v1",
            f"{registry_b.host}/itest/tampered-cli:v1",
            "--insecure-registry",
            registry.host,
            "--insecure-registry",
            registry_b.host,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert cli.returncode == 3
    assert "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
    assert "digest mismatch" in cli.stderr
    assert cli.stdout == ""
    for name in ("itest/tampered", "itest/tampered-cli"):
        assert _manifest_status(registry_b, name, "v1") == 404
        assert _manifest_status(registry_b, name, img.digest) == 404
    head = httpx.head(f"{registry_b.url}/v2/itest/tampered/blobs/{layer}")
    assert head.status_code == 404
