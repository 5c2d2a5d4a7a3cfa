"""Signing keys, and ``conveyor init``: a starter workspace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import InputError


@dataclass(frozen=True)
class GeneratedKey:
    name: str
    private_key: Path
    public_key: Path
    keyid: str
    encrypted: bool


def generate_keys(
    name: str,
    *,
    kind: str = "ed25519",
    out_dir: str | Path = ".",
    overwrite: bool = False,
    password: bytes | None = None,
) -> GeneratedKey:
    """A key pair ``NAME.key`` / ``NAME.pub`` in ``out_dir``; encrypted with ``password``."""
    from conveyor.attest import Signer, generate_key, write_keypair

    if kind not in ("ed25519", "ecdsa-p256"):
        raise InputError(f"unknown key type {kind!r}: use ed25519 or ecdsa-p256")
    key = generate_key(kind)  # type: ignore[arg-type]
    private, public = write_keypair(
        key, Path(out_dir), name, password=password or None, overwrite=overwrite
    )
    return GeneratedKey(name, private, public, Signer(key).keyid, bool(password))


STARTER_CONFIG = """\
# conveyor.yaml: who may record evidence about an artifact, and (later) where it may go.
version: 1

# Each identity is a public key (relative to this file) and the roles it holds:
#   builder   records builds (SLSA provenance)      tester    records tests and smoke tests
#   scanner   records vulnerability scans           approver  approves a digest for an environment
#   deployer  promotes a digest into an environment
# A key that is not listed here cannot record anything.
identities:
  {name}: {{key: keys/{name}.pub, roles: [builder, tester, scanner]}}
  # deployer: {{key: keys/deployer.pub, roles: [deployer]}}
  # alice:    {{key: keys/alice.pub,    roles: [approver]}}

# The ledger: SQLite beside this file by default; CONVEYOR_DB=postgresql+psycopg://… for a team.
ledger:
  # url: sqlite:///.conveyor/conveyor.db
  key: keys/ledger.key          # signs checkpoints (conveyor audit checkpoint)
  public_key: keys/ledger.pub
"""


@dataclass(frozen=True)
class Initialised:
    config: Path
    keys: tuple[GeneratedKey, ...]


def init_workspace(
    directory: str | Path = ".", *, name: str = "ci", password: bytes | None = None
) -> Initialised:
    """A starter conveyor.yaml and the keys it names, in ``directory`` (never overwritten)."""
    base = Path(directory)
    config = base / "conveyor.yaml"
    if config.exists():
        raise InputError(f"{config} already exists; conveyor init never overwrites it")
    base.mkdir(parents=True, exist_ok=True)
    keys = (
        generate_keys(name, out_dir=base / "keys", password=password),
        generate_keys("ledger", out_dir=base / "keys", password=password),
    )
    config.write_text(STARTER_CONFIG.format(name=name))
    return Initialised(config, keys)
