"""Docker schema 2 copied into an OCI layout: kept byte for byte, with a warning whose claim
skopeo 1.9 and umoci confirm (issue 10 #6)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conveyor.oci.layout import LayoutRepository
from conveyor.oci.name import Reference
from conveyor.registry.client import RegistryClient
from conveyor.registry.copy import copy
from tests.support.images import build_image
from tests.support.registry import RunningRegistry, skopeo

pytestmark = pytest.mark.registry

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def test_docker_image_into_a_layout_warns_and_the_peers_agree(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    image = build_image(tmp_path / "img")
    skopeo(
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:latest",
        f"docker://{registry.host}/docker/app:v1",
    )
    layout = tmp_path / "layout"
    with RegistryClient(insecure_registries=[registry.host]) as client:
        source = client.repository(Reference.parse(f"{registry.host}/docker/app:v1"))
        expected = source.get_manifest("v1").digest
        result = copy(source, "v1", LayoutRepository(layout, create=True), tags=["v1"])
    assert result.digest == expected
    assert result.media_type == DOCKER_MANIFEST
    assert len(result.warnings) == 1
    # What the warning says, checked with the tools it names.
    refused = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:v1"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0
    if shutil.which("umoci"):
        umoci = subprocess.run(
            ["umoci", "stat", "--image", f"{layout}:v1"], capture_output=True, text=True, timeout=60
        )
        assert umoci.returncode != 0
        assert DOCKER_MANIFEST in umoci.stderr


def test_conveyor_copy_prints_the_warning_once(tmp_path: Path, registry: RunningRegistry) -> None:
    import sys

    image = build_image(tmp_path / "img")
    skopeo(
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:latest",
        f"docker://{registry.host}/docker/cli:v1",
    )
    conveyor = Path(sys.executable).with_name("conveyor")
    done = subprocess.run(
        [
            str(conveyor),
            "copy",
            "--insecure-registry",
            registry.host,
            f"{registry.host}/docker/cli:v1",
            f"oci:{tmp_path / 'layout'}:v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("conveyor: warning:")]
    assert len(warnings) == 1
    assert "Docker" in warnings[0]
