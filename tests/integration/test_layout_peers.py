"""Layouts conveyor writes, read by other people's tools (skopeo, umoci), as other users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.referrers import attach_referrer, fallback_tag, list_referrers
from tests.support.attesters import referrer_for
from tests.support.images import build_image
from tests.support.registry import skopeo

pytestmark = pytest.mark.registry  # needs skopeo


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own temp tree is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _as_nobody(*command: str, home: Path) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to run a tool as another user")
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
    )


def _python_for_nobody(home: Path) -> str:
    """A Python >= 3.11 another user may run (the venv's may live under /root)."""
    for candidate in (sys.executable, "/usr/bin/python3.11", "/usr/bin/python3"):
        done = _as_nobody(
            candidate, "-c", "import sys; assert sys.version_info >= (3, 11)", home=home
        )
        if done.returncode == 0:
            return candidate
    pytest.skip("no Python >= 3.11 that another user may run")


def _conveyor_layout(root: Path, tags: int = 1) -> tuple[LayoutRepository, str]:
    """A layout written by conveyor: an image copied in under ``v1`` … with a referrer."""
    img = build_image(root / "src", tag="v1", labels={"git.commit": "abc"})
    source = LayoutRepository(img.layout)
    layout = LayoutRepository(root / "dst", create=True)
    for digest, size in img.blobs.items():
        parsed = Digest.parse(digest)
        with source.open_blob(parsed) as chunks:
            layout.write_blob(parsed, size, chunks)
    manifest = source.get_manifest("v1")
    for n in range(1, tags + 1):
        layout.put_manifest(manifest, tag=f"v{n}")
    attach_referrer(layout, referrer_for(layout, manifest, "sbom"))
    return layout, img.digest


def test_another_user_reads_a_layout_we_wrote(shared_dir: Path, usual_umask: None) -> None:
    layout, digest = _conveyor_layout(shared_dir)
    path = layout.path
    done = _as_nobody("skopeo", "inspect", f"oci:{path}:v1", home=shared_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Digest"] == digest
    root = Path(__file__).resolve().parents[2]
    read = (
        "import sys; from pathlib import Path; from conveyor.oci.layout import LayoutRepository;"
        "r = LayoutRepository(Path(sys.argv[1])); print(r.get_manifest('v1').digest)"
    )
    env_path = f"{root / 'src'}"
    python = _python_for_nobody(shared_dir)
    done = _as_nobody(
        "env", f"PYTHONPATH={env_path}", python, "-c", read, str(path), home=shared_dir
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == digest
    # A stale cache the reader may not rewrite: it reads index.json itself.
    index = json.loads((path / "index.json").read_text())
    index["manifests"].append(
        {
            **index["manifests"][0],
            "annotations": {"org.opencontainers.image.ref.name": "added-by-hand"},
        }
    )
    (path / "index.json").write_text(json.dumps(index))
    done = _as_nobody(
        "env",
        f"PYTHONPATH={env_path}",
        python,
        "-c",
        read.replace("'v1'", "'added-by-hand'"),
        str(path),
        home=shared_dir,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == digest


def test_umoci_reads_a_layout_we_wrote(shared_dir: Path, usual_umask: None) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    layout, digest = _conveyor_layout(shared_dir, tags=30)
    subject = Digest.parse(digest)
    done = _as_nobody("umoci", "ls", "--layout", str(layout.path), home=shared_dir)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {*(f"v{n}" for n in range(1, 31)), fallback_tag(subject)}
    done = _as_nobody("umoci", "stat", "--image", f"{layout.path}:v30", home=shared_dir)
    assert done.returncode == 0, done.stderr


def test_skopeo_writes_into_our_layout_and_we_keep_both(tmp_path: Path) -> None:
    layout, digest = _conveyor_layout(tmp_path, tags=3)
    other = build_image(tmp_path / "other", tag="latest", labels={"git.commit": "def"})
    skopeo("copy", "--preserve-digests", f"oci:{other.layout}:latest", f"oci:{layout.path}:theirs")
    info = json.loads(skopeo("inspect", f"oci:{layout.path}:v2").stdout)
    assert info["Digest"] == digest
    assert str(layout.get_manifest("theirs").digest) == other.digest
    layout.put_manifest(layout.get_manifest("v1"), tag="after-skopeo")
    fresh = LayoutRepository(layout.path)
    assert set(fresh.list_tags()) == {
        "v1",
        "v2",
        "v3",
        "theirs",
        "after-skopeo",
        fallback_tag(Digest.parse(digest)),
    }
    assert len(list_referrers(fresh, Digest.parse(digest))) == 1
    info = json.loads(skopeo("inspect", f"oci:{layout.path}:theirs").stdout)
    assert info["Digest"] == other.digest
