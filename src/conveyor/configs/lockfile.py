"""The pin lock file: every image reference → the digest it was pinned to.

JSON (stdlib only, no YAML hazards, stable diffs): sorted keys, two-space indent, one
trailing newline. ``pin --lock FILE`` writes it; ``pin --from-lock FILE`` re-pins from it
without any network, for air-gapped machines.

    {
      "version": 1,
      "generator": "conveyor pin",
      "environment": null,
      "images": {
        "docker.io/library/nginx:1.25": {
          "digest": "sha256:…",
          "registry": "docker.io",
          "resolved_at": "2026-11-26T20:37:06Z",
          "source": "registry"
        }
      }
    }

Keys are normalised references (``registry/repository:tag``), so ``nginx:1.25`` and
``docker.io/library/nginx:1.25`` share one entry. A reference written with a digest and no
tag is keyed ``registry/repository@digest``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError, DigestError, InvalidReferenceError, StorageError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference

__all__ = [
    "LOCK_VERSION",
    "MAX_LOCK_BYTES",
    "LockEntry",
    "LockFile",
    "lock_key",
    "read_lock",
    "write_atomically",
    "write_lock",
]

LOCK_VERSION = 1
MAX_LOCK_BYTES = 16 * 1024 * 1024
SOURCES = ("registry", "ledger", "present", "lock")


@dataclass(frozen=True)
class LockEntry:
    digest: Digest
    registry: str
    resolved_at: str  # RFC 3339 UTC, "Z"
    source: str  # registry (a tag resolved) | ledger (--env) | present (digest verified) | lock

    def to_dict(self) -> dict[str, str]:
        return {
            "digest": str(self.digest),
            "registry": self.registry,
            "resolved_at": self.resolved_at,
            "source": self.source,
        }


@dataclass(frozen=True)
class LockFile:
    images: Mapping[str, LockEntry]
    environment: str | None = None

    def digest_for(self, reference: Reference) -> Digest | None:
        entry = self.images.get(lock_key(reference))
        return entry.digest if entry is not None else None

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "version": LOCK_VERSION,
            "generator": "conveyor pin",
            "environment": self.environment,
            "images": {key: self.images[key].to_dict() for key in sorted(self.images)},
        }
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def lock_key(reference: Reference) -> str:
    """``registry/repository:tag``, or ``registry/repository@digest`` without a tag."""
    if reference.tag is not None:
        return f"{reference.name}:{reference.tag}"
    if reference.digest is not None:
        return f"{reference.name}@{reference.digest}"
    raise InvalidReferenceError(f"{reference.name} names no tag and no digest; nothing to lock")


def read_lock(path: Path) -> LockFile:
    """Read and validate a lock file; every problem is reported at once."""
    from conveyor.files import FileTooLarge, UnreadableFile, read_bounded

    try:
        raw = read_bounded(path, max_bytes=MAX_LOCK_BYTES)
    except FileTooLarge as exc:
        raise ConfigError(
            f"{path}: larger than {MAX_LOCK_BYTES} bytes; not a pin lock file"
        ) from exc
    except UnreadableFile as exc:
        raise ConfigError(f"cannot read the lock file {path}: {exc.reason}") from exc
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not a pin lock file (invalid JSON: {exc})") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: not a pin lock file (expected a JSON object)")
    if document.get("version") != LOCK_VERSION:
        raise ConfigError(
            f"{path}: lock file version {document.get('version')!r} is not supported "
            f"(expected {LOCK_VERSION}); write it again with conveyor pin --lock"
        )
    environment = document.get("environment")
    if environment is not None and not isinstance(environment, str):
        raise ConfigError(f"{path}: environment must be a string or null")
    images = document.get("images")
    if not isinstance(images, dict):
        raise ConfigError(f"{path}: 'images' must be an object of reference → entry")
    problems: list[str] = []
    entries: dict[str, LockEntry] = {}
    for key, value in images.items():
        try:
            entries[key] = _entry(key, value)
        except (ConfigError, InvalidReferenceError, DigestError) as exc:
            problems.append(f"images[{key!r}]: {exc}")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} invalid lock entries", problems)
    return LockFile(entries, environment)


def _entry(key: str, value: Any) -> LockEntry:
    reference = Reference.parse(key)
    if lock_key(reference) != key:
        raise ConfigError(f"not a normalised reference (expected {lock_key(reference)!r})")
    if not isinstance(value, dict):
        raise ConfigError("expected an object with digest, registry, resolved_at")
    for name in ("digest", "registry", "resolved_at"):
        if not isinstance(value.get(name), str):
            raise ConfigError(f"{name} must be a string")
    digest = Digest.parse(value["digest"])
    if reference.digest is not None and reference.digest != digest:
        raise ConfigError("the key's digest and the entry's digest differ")
    if value["registry"] != reference.registry:
        raise ConfigError(f"registry {value['registry']!r} differs from the reference's")
    source = value.get("source", "registry")
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}")
    return LockEntry(digest, value["registry"], value["resolved_at"], source)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def write_lock(path: Path, lock: LockFile) -> None:
    write_atomically(path, lock.to_json().encode("ascii"))


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename in the same directory.

    An existing file keeps its mode; a symlink keeps pointing where it did (its target is
    replaced). A reader sees the old bytes or the new ones, never a torn file.
    """
    target = Path(os.path.realpath(path))
    try:
        mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
