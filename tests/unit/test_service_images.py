"""Image operations of the service, offline: OCI layouts and the in-memory fake registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor import service
from conveyor.errors import InputError, InvalidReferenceError, NotFoundError
from conveyor.oci.layout import LayoutRepository
from conveyor.registry.testing import FakeRegistry
from tests.support.images import OCI_INDEX, build_image, build_index


def _fake_options(fake: FakeRegistry) -> service.RegistryOptions:
    return service.RegistryOptions(transport=fake.transport)


def test_options_merge_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_INSECURE_REGISTRIES", " b.local:5000 ,, c.local")
    options = service.RegistryOptions.from_environment(["a.local", "b.local:5000"])
    assert options.insecure_registries == ("a.local", "b.local:5000", "c.local")


def test_resolve_layout_and_registry_agree(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="v1", labels={"git.commit": "c0ffee"})
    fake = FakeRegistry("registry.example")
    options = _fake_options(fake)
    local = service.resolve(f"oci:{img.layout}:v1")
    assert str(local) == f"oci:{img.layout}@{img.digest}"
    service.copy_image(f"oci:{img.layout}:v1", "registry.example/team/app:v1", options=options)
    remote = service.resolve("registry.example/team/app:v1", options=options)
    assert str(remote) == f"registry.example/team/app@{img.digest}"
    assert remote.media_type == local.media_type
    assert service.list_tags("registry.example/team/app", options=options) == ["v1"]
    inspection = service.inspect(f"registry.example/team/app@{img.digest}", options=options)
    assert inspection.labels == {"git.commit": "c0ffee"}
    assert inspection.config_digest is not None


def test_resolve_refuses_implicit_latest(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="latest")
    with pytest.raises(InvalidReferenceError, match="no tag"):
        service.resolve(f"oci:{img.layout}")
    with pytest.raises(InvalidReferenceError):
        service.resolve("registry.example/app")


def test_inspect_index_reads_labels_from_a_child(tmp_path: Path) -> None:
    idx = build_index(tmp_path / "multi", architectures=("s390x", "amd64"), labels={"ci.run": "5"})
    result = service.inspect(f"oci:{idx.layout}:latest")
    assert result.media_type == OCI_INDEX
    assert result.platforms == ["linux/s390x", "linux/amd64"]
    assert result.labels == {"ci.run": "5"}
    assert result.labels_from in ("linux/s390x", "linux/amd64")
    assert len(result.children) == 2
    manifest_size = (idx.layout / "blobs/sha256" / idx.digest.split(":")[1]).stat().st_size
    assert result.total_size == sum(idx.blobs.values()) + manifest_size
    doc = result.to_dict()
    assert json.loads(json.dumps(doc))["digest"] == idx.digest


def test_copy_destination_tag_defaults_to_source_tag(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="rc1")
    result = service.copy_image(f"oci:{img.layout}:rc1", f"oci:{tmp_path / 'stage'}")
    assert str(result.digest) == img.digest
    assert LayoutRepository(tmp_path / "stage").list_tags() == ["rc1"]


def test_copy_by_digest_without_tag_leaves_untagged_entry(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="rc1")
    service.copy_image(f"oci:{img.layout}@{img.digest}", f"oci:{tmp_path / 'stage'}")
    stage = LayoutRepository(tmp_path / "stage")
    assert stage.list_tags() == []
    entries = json.loads((tmp_path / "stage" / "index.json").read_text())["manifests"]
    assert [e["digest"] for e in entries] == [img.digest]


def test_copy_refuses_a_destination_digest_that_differs(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="rc1")
    with pytest.raises(InputError, match="never changes a digest"):
        service.copy_image(f"oci:{img.layout}:rc1", f"oci:{tmp_path / 's'}@sha256:{'1' * 64}")
    ok = service.copy_image(f"oci:{img.layout}:rc1", f"oci:{tmp_path / 's'}:rc1@{img.digest}")
    assert str(ok.digest) == img.digest


def test_unknown_tag_is_not_found(tmp_path: Path) -> None:
    img = build_image(tmp_path / "dev", tag="rc1")
    with pytest.raises(NotFoundError):
        service.resolve(f"oci:{img.layout}:rc2")
    fake = FakeRegistry("registry.example")
    with pytest.raises(NotFoundError):
        service.resolve("registry.example/none:v1", options=_fake_options(fake))


def test_sample_image_is_readable_by_the_layout_and_labelled(tmp_path: Path) -> None:
    built = service.create_sample_image(
        f"oci:{tmp_path / 'demo'}:1.0", labels={"git.commit": "abc"}, layer_sizes=(1000, 2000)
    )
    assert service.resolve(f"oci:{tmp_path / 'demo'}:1.0").digest == built.digest
    assert service.inspect(str(built)).labels == {"git.commit": "abc"}
    with pytest.raises(InputError):
        service.create_sample_image("registry.example/app:v1", labels={})
