"""The CLI as users run it: a subprocess, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.images import OCI_INDEX, OCI_MANIFEST, build_image, build_index


def conveyor(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _blob_size(layout: Path, digest: str) -> int:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).stat().st_size


def test_help_lists_the_image_commands() -> None:
    result = conveyor("--help")
    assert result.returncode == 0, result.stderr
    for command in ("resolve", "inspect", "copy", "tags", "demo"):
        assert command in result.stdout
    copy_help = conveyor("copy", "--help")
    assert copy_help.returncode == 0
    assert "--insecure-registry" in copy_help.stdout
    assert "--json" in copy_help.stdout


def test_resolve_prints_name_at_digest(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="v1")
    result = conveyor("resolve", f"oci:{img.layout}:v1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"oci:{img.layout}@{img.digest}\n"
    # What resolve prints is itself a reference that resolves to the same thing.
    again = conveyor("resolve", result.stdout.strip())
    assert again.stdout == result.stdout


def test_inspect_json_image(tmp_path: Path) -> None:
    labels = {
        "git.commit": "0123456789abcdef0123456789abcdef01234567",
        "ci.run": "https://ci.example/runs/42",
        "org.opencontainers.image.revision": "0123456",
    }
    img = build_image(tmp_path / "dev", tag="v1", labels=labels, architecture="arm64")
    result = conveyor("inspect", f"oci:{img.layout}:v1", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["digest"] == img.digest
    assert doc["media_type"] == OCI_MANIFEST
    assert doc["labels"] == labels
    assert doc["platforms"] == ["linux/arm64"]
    assert doc["created"] == "2026-11-26T00:00:00Z"
    assert doc["total_size"] == sum(img.blobs.values()) + _blob_size(img.layout, img.digest)
    human = conveyor("inspect", f"oci:{img.layout}:v1")
    assert human.returncode == 0
    assert "git.commit=0123456789abcdef0123456789abcdef01234567" in human.stdout
    assert img.digest in human.stdout


def test_inspect_json_index(tmp_path: Path) -> None:
    idx = build_index(tmp_path / "multi", tag="v2", labels={"ci.run": "99"})
    result = conveyor("inspect", f"oci:{idx.layout}:v2", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["digest"] == idx.digest
    assert doc["media_type"] == OCI_INDEX
    assert doc["platforms"] == ["linux/amd64", "linux/arm64"]
    assert doc["labels"] == {"ci.run": "99"}
    assert doc["total_size"] == sum(idx.blobs.values()) + _blob_size(idx.layout, idx.digest)


def test_copy_json_then_tags(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="v1", layer_sizes=(50_000, 80_000))
    dst = tmp_path / "staging"
    result = conveyor("copy", f"oci:{img.layout}:v1", f"oci:{dst}:candidate", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["digest"] == img.digest
    assert summary["blobs_copied"] + summary["blobs_mounted"] == len(img.blobs)
    assert summary["blobs_skipped"] == 0
    assert {"bytes_transferred", "seconds", "manifests"} <= summary.keys()
    raw = (dst / "blobs" / "sha256" / img.digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == img.digest

    plain = conveyor("copy", f"oci:{img.layout}:v1", f"oci:{dst}")  # tag defaults to v1
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == f"oci:{dst}@{img.digest}\n"
    assert plain.stderr == ""  # not a terminal: no progress, no summary

    tags = conveyor("tags", f"oci:{dst}", "--json")
    assert tags.returncode == 0, tags.stderr
    assert sorted(json.loads(tags.stdout)) == ["candidate", "v1"]


def test_copy_to_mismatching_digest_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="v1")
    other = "sha256:" + "0" * 64
    result = conveyor("copy", f"oci:{img.layout}:v1", f"oci:{tmp_path / 'x'}@{other}")
    assert result.returncode == 2
    assert "never changes a digest" in result.stderr


def _traversal_layout(tmp_path: Path) -> str:
    img = build_image(tmp_path / "evil", tag="v1")
    index = json.loads((img.layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "../../etc/x"
    (img.layout / "index.json").write_text(json.dumps(index))
    return f"oci:{img.layout}:v1"


BAD_INPUT = [
    ("malformed reference", ["resolve", "Foo//bar:tag"], 2),
    ("uppercase repository", ["inspect", "registry.example/App:v1"], 2),
    ("unknown digest algorithm", ["resolve", "registry.example/app@md5:" + "a" * 32], 2),
    ("short sha256", ["resolve", "registry.example/app@sha256:abc"], 2),
    ("no tag and no digest", ["resolve", "registry.example/app"], 2),
    ("other transport", ["copy", "docker-archive:/x.tar", "oci:/tmp/y:v1"], 2),
    ("bad digest in layout reference", ["resolve", "oci:/tmp/y@sha256:zz"], 2),
    ("layout missing", ["resolve", "oci:/nonexistent/conveyor-layout:v1"], 3),
    ("layout with ../ names", ["resolve", "TRAVERSAL"], 3),
    ("layout with ../ names, copy", ["copy", "TRAVERSAL", "oci:DEST:v1"], 3),
    (
        "unreachable registry",
        ["resolve", "127.0.0.1:1/app:v1", "--insecure-registry", "127.0.0.1:1"],
        3,
    ),
    ("unknown option", ["resolve", "--no-such-option", "x"], 2),
]


@pytest.mark.parametrize(("case", "args", "code"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_one_line_error(tmp_path: Path, case: str, args: list[str], code: int) -> None:
    traversal = _traversal_layout(tmp_path) if any("TRAVERSAL" in a for a in args) else ""
    has_destination = any("DEST" in a for a in args)
    args = [a.replace("TRAVERSAL", traversal).replace("DEST", str(tmp_path / "d")) for a in args]
    result = conveyor(*args)
    assert result.returncode == code, (case, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    if case != "unknown option":  # click's usage message spans lines by design
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("conveyor: error: ")
    if has_destination:
        assert not (tmp_path / "d").exists()  # the destination got nothing, not even a layout


def test_insecure_registries_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the insecure entry conveyor uses HTTPS; with it (env) plain HTTP: the error says.
    monkeypatch.setenv("CONVEYOR_INSECURE_REGISTRIES", "127.0.0.1:1, other.example")
    result = conveyor("resolve", "127.0.0.1:1/app:v1")
    assert result.returncode == 3
    assert "http://127.0.0.1:1/" in result.stderr
