"""The generated images are valid for an independent client (skopeo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.images import build_image, build_index
from tests.support.registry import RunningRegistry, skopeo

pytestmark = pytest.mark.registry


def test_skopeo_pushes_generated_image_with_same_digest(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    img = build_image(tmp_path / "img", labels={"git.commit": "abc123"})
    dest = f"docker://{registry.host}/support/img:v1"
    skopeo(
        "copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{img.layout}:latest", dest
    )
    info = json.loads(skopeo("inspect", "--tls-verify=false", dest).stdout)
    assert info["Digest"] == img.digest
    assert info["Labels"]["git.commit"] == "abc123"


def test_skopeo_pushes_generated_index_whole(tmp_path: Path, registry: RunningRegistry) -> None:
    idx = build_index(tmp_path / "idx")
    dest = f"docker://{registry.host}/support/idx:v1"
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{idx.layout}:latest",
        dest,
    )
    raw = skopeo("inspect", "--raw", "--tls-verify=false", dest).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    import hashlib

    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == idx.digest
