"""Helpers shared by the registry unit tests: small images written straight into the fake."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry.client import RegistryClient
from conveyor.registry.testing import FakeRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class PushedImage:
    name: str
    tag: str
    digest: str
    manifest: bytes
    layers: dict[str, bytes]


def push_image(
    fake: FakeRegistry, name: str = "team/app", tag: str = "v1", *, layer_size: int = 4096
) -> PushedImage:
    layer = os.urandom(layer_size)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer_digest = fake.add_blob(name, layer)
    config_digest = fake.add_blob(name, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    digest = fake.add_manifest(name, manifest, OCI_MANIFEST, tag=tag)
    return PushedImage(name, tag, digest, manifest, {layer_digest: layer, config_digest: config})


def write_docker_config(directory: Path, doc: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return directory


def auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_for(
    fake: FakeRegistry,
    *,
    config_dir: Path | None = None,
    sleeps: list[float] | None = None,
    **kwargs: object,
) -> RegistryClient:
    recorded = sleeps if sleeps is not None else []
    return RegistryClient(
        transport=fake.transport,
        docker_config_dir=config_dir,
        sleep=recorded.append,
        **kwargs,  # type: ignore[arg-type]
    )


def repo(client: RegistryClient, fake: FakeRegistry, name: str = "team/app"):  # type: ignore[no-untyped-def]
    return client.repository(Reference.parse(f"{fake.host}/{name}:v1"))


def digest(text: str) -> Digest:
    return Digest.parse(text)
