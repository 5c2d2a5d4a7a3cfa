"""OCI image layout directories (``oci:PATH[:TAG]``): the embedded registry.

A layout is ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an image
index whose entries name tags with the ``org.opencontainers.image.ref.name`` annotation) and
``blobs/<algorithm>/<encoded>``. Manifests are blobs too; the top-level ones are listed in
``index.json``, children of an index are stored as blobs only.

Safety rules, each tested:
- a blob path is built only from a validated ``Digest`` and must resolve inside the layout
  (a symlink that escapes it is refused);
- ref names are checked against the OCI ref grammar, on write and on read: an ``index.json``
  naming ``../x`` makes the whole layout refused;
- a blob appears under its final name only after every byte was written, fsynced and hashed
  to its digest (temp file in the same directory, then atomic rename);
- ``index.json`` is rewritten atomically (temp + rename) under an ``fcntl`` lock file, so
  concurrent writers never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from conveyor.errors import DigestError, ManifestError, NotFoundError, StorageError
from conveyor.oci.digest import Digest, verified_chunks, verify_bytes
from conveyor.oci.manifest import MAX_MANIFEST_BYTES, ImageIndex, parse_manifest
from conveyor.oci.mediatypes import INDEX_TYPES, OCI_INDEX
from conveyor.oci.store import RawManifest, Repository

__all__ = ["LAYOUT_VERSION", "REF_NAME_ANNOTATION", "LayoutRepository", "validate_ref_name"]

LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_INDEX_JSON_BYTES = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024

# OCI annotations.md: ref ::= component ("/" component)*, component ::= alphanum
# (separator alphanum)*, separator ::= [-._:@+] | "--". No "..", no leading "/" or ".".
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"{_REF_COMPONENT}(?:/{_REF_COMPONENT})*")
_MAX_REF_NAME = 255


def validate_ref_name(name: str) -> str:
    """Return ``name`` if it is a valid OCI ref name (a tag in a layout), else raise."""
    if not isinstance(name, str) or len(name) > _MAX_REF_NAME or not _REF_NAME.fullmatch(name):
        shown = name[:80] if isinstance(name, str) else type(name).__name__
        raise StorageError(
            f"invalid tag {shown!r} for an OCI layout: use letters, digits and . _ - "
            "(no '..', no leading '/' or '.')"
        )
    return name


class LayoutRepository:
    """One OCI image layout directory, implementing the ``Repository`` protocol."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self._path = Path(path)
        try:
            if create:
                self._create()
            self._root = self._path.resolve(strict=True)
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"no OCI image layout at {self._path}: the directory does not exist"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot open OCI image layout {self._path}: {exc}") from exc
        self._check_layout_file()
        self._read_index()  # refuse a hostile index.json now, not halfway through a copy

    # --- Repository protocol -----------------------------------------------------------

    @property
    def display_name(self) -> str:
        return f"oci:{self._path}"

    @property
    def path(self) -> Path:
        return self._path

    def get_manifest(self, reference: str | Digest) -> RawManifest:
        if isinstance(reference, Digest):
            digest = reference
            media_type = None
            for entry in self._read_index()["manifests"]:
                if entry["digest"] == str(digest):
                    media_type = entry.get("mediaType")
                    break
        else:
            entry = self._entry_for_tag(reference)
            digest = _parse_digest(entry["digest"], self._index_path)
            media_type = entry.get("mediaType")
        data = self._read_manifest_blob(digest)
        try:
            parsed = parse_manifest(data, content_type=media_type)
        except ManifestError as exc:
            raise ManifestError(f"{self.display_name}@{digest.short}: {exc}") from exc
        return RawManifest(data=data, media_type=parsed.media_type, digest=digest)

    def has_manifest(self, digest: Digest) -> bool:
        return self.blob_size(digest) is not None

    def put_manifest(self, manifest: RawManifest, *, tag: str | None = None) -> None:
        if tag is not None:
            validate_ref_name(tag)
        verify_bytes(manifest.data, manifest.digest, where="manifest to store")
        # Never store what we would refuse to read back (oversized, ambiguous, not JSON...).
        parse_manifest(manifest.data, content_type=manifest.media_type)
        self.write_blob(manifest.digest, len(manifest.data), [manifest.data])
        children = _child_digests(manifest)
        descriptor: dict[str, Any] = {
            "mediaType": manifest.media_type,
            "digest": str(manifest.digest),
            "size": len(manifest.data),
        }
        with self._index_lock():
            index = self._read_index()
            entries: list[dict[str, Any]] = index["manifests"]
            # An index's children live as blobs only: drop the untagged entries they had.
            entries = [e for e in entries if not (e["digest"] in children and not _ref_name(e))]
            if tag is None:
                listed = any(e["digest"] == str(manifest.digest) for e in entries)
                nested = str(manifest.digest) in self._children_of_entries(entries)
                if not listed and not nested:
                    entries.append(descriptor)
            else:
                entries = [
                    e
                    for e in entries
                    if _ref_name(e) != tag
                    and not (e["digest"] == str(manifest.digest) and not _ref_name(e))
                ]
                entries.append({**descriptor, "annotations": {REF_NAME_ANNOTATION: tag}})
            index["manifests"] = entries
            self._write_index(index)

    def blob_size(self, digest: Digest) -> int | None:
        path = self._blob_path(digest)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"cannot read blob {digest.short} in {self.display_name}: {exc}"
            ) from exc

    def open_blob(
        self, digest: Digest, *, size: int | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        return self._open_blob(digest, size)

    def write_blob(self, digest: Digest, size: int, chunks: Iterable[bytes]) -> None:
        final = self._blob_path(digest)
        if self.blob_size(digest) is not None:
            _close_unread(chunks)
            return
        directory = final.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".partial")
        except OSError as exc:
            raise StorageError(f"cannot write to {self.display_name}: {exc}") from exc
        tmp = Path(tmp_name)
        where = f"blob {digest.short} for {self.display_name}"
        try:
            # Errors from ``chunks`` (the source) pass through as they are; errors of our
            # own disk become StorageError.
            with os.fdopen(fd, "wb") as out:
                for chunk in verified_chunks(chunks, digest, size=size, where=where):
                    _on_disk(out.write, chunk, where=where)
                _on_disk(out.flush, where=where)
                _on_disk(os.fsync, out.fileno(), where=where)
            _on_disk(os.replace, tmp, final, where=where)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_directory(directory)

    def mount_blob(self, digest: Digest, source: Repository) -> bool:
        """Hard-link a blob from another layout on the same filesystem, after verifying it."""
        if not isinstance(source, LayoutRepository) or source.blob_size(digest) is None:
            return False
        if self.blob_size(digest) is not None:
            return True
        origin = source._blob_path(digest)
        try:
            with origin.open("rb") as f:
                hasher = digest.hasher()
                while block := f.read(CHUNK_SIZE):
                    hasher.update(block)
        except OSError as exc:
            raise StorageError(
                f"cannot read blob {digest.short} in {source.display_name}: {exc}"
            ) from exc
        if hasher.hexdigest() != digest.encoded:
            return False  # let the copy stream it and report the mismatch on the way
        final = self._blob_path(digest)
        tmp = final.parent / f".tmp-link-{os.urandom(8).hex()}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.link(origin, tmp)
            os.replace(tmp, final)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False  # other filesystem, no permission: the caller copies instead
        _fsync_directory(final.parent)
        return True

    def list_tags(self) -> list[str]:
        tags: list[str] = []
        for entry in self._read_index()["manifests"]:
            name = _ref_name(entry)
            if name is not None and name not in tags:
                tags.append(name)
        return tags

    # --- internals ----------------------------------------------------------------------

    @property
    def _index_path(self) -> Path:
        return self._root / "index.json"

    def _create(self) -> None:
        self._path.mkdir(parents=True, exist_ok=True)
        (self._path / "blobs").mkdir(exist_ok=True)
        layout_file = self._path / "oci-layout"
        if not layout_file.exists():
            _atomic_write(layout_file, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())
        if not (self._path / "index.json").exists():
            _atomic_write(
                self._path / "index.json",
                json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode(),
            )

    def _check_layout_file(self) -> None:
        layout_file = self._root / "oci-layout"
        try:
            raw = layout_file.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"{self._path} is not an OCI image layout (no oci-layout file)"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {layout_file}: {exc}") from exc
        doc = _load_json(raw[:65536], where=str(layout_file))
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise StorageError(
                f"{layout_file} has imageLayoutVersion {version!r}; only 1.x layouts are supported"
            )

    def _read_index(self) -> dict[str, Any]:
        path = self._index_path
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_INDEX_JSON_BYTES + 1)
        except FileNotFoundError as exc:
            raise StorageError(f"{self._path} is not an OCI image layout (no index.json)") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc
        if len(raw) > MAX_INDEX_JSON_BYTES:
            raise StorageError(f"{path} is over {MAX_INDEX_JSON_BYTES} bytes; refusing it")
        doc = _load_json(raw, where=str(path))
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list):
            raise StorageError(f"{path} is not an image index (no 'manifests' list)")
        for entry in manifests:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                raise StorageError(f"{path} has an entry without a digest")
            _parse_digest(entry["digest"], path)
            if not isinstance(entry.get("size", 0), int):
                raise StorageError(f"{path} has an entry with a non-integer size")
            annotations = entry.get("annotations", {})
            if not isinstance(annotations, dict):
                raise StorageError(f"{path} has an entry whose annotations are not an object")
            name = annotations.get(REF_NAME_ANNOTATION)
            if name is not None:
                try:
                    validate_ref_name(name)
                except StorageError as exc:
                    raise StorageError(
                        f"refusing OCI layout {self._path}: index.json names a ref "
                        f"{str(name)[:80]!r} that is not a valid ref name (path traversal?)"
                    ) from exc
        result: dict[str, Any] = doc
        return result

    def _write_index(self, index: dict[str, Any]) -> None:
        try:
            _atomic_write(self._index_path, json.dumps(index, separators=(",", ":")).encode())
        except OSError as exc:
            raise StorageError(f"cannot write {self._index_path}: {exc}") from exc

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        lock_path = self._root / "index.json.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot lock {self._index_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _entry_for_tag(self, tag: str) -> dict[str, Any]:
        validate_ref_name(tag)
        found = [e for e in self._read_index()["manifests"] if _ref_name(e) == tag]
        if not found:
            raise NotFoundError(f"tag {tag!r} not found in {self.display_name}")
        if len({e["digest"] for e in found}) > 1:
            raise StorageError(
                f"tag {tag!r} names {len(found)} different manifests in {self.display_name}; "
                "refusing to guess"
            )
        entry: dict[str, Any] = found[0]
        return entry

    def _children_of_entries(self, entries: list[dict[str, Any]]) -> set[str]:
        children: set[str] = set()
        for entry in entries:
            if entry.get("mediaType") in INDEX_TYPES:
                try:
                    raw = self._read_manifest_blob(_parse_digest(entry["digest"], self._index_path))
                except (NotFoundError, ManifestError):
                    continue
                children |= _child_digests(
                    RawManifest(raw, entry["mediaType"], Digest.parse(entry["digest"]))
                )
        return children

    def _blob_path(self, digest: Digest) -> Path:
        if not isinstance(digest, Digest):  # paths come only from validated digests
            raise DigestError("internal: a blob path needs a Digest")
        path = self._root / "blobs" / digest.algorithm / digest.encoded
        try:
            resolved = path.resolve()
        except OSError as exc:
            raise StorageError(
                f"cannot resolve blob {digest.short} in {self.display_name}: {exc}"
            ) from exc
        if not resolved.is_relative_to(self._root):
            raise StorageError(
                f"refusing blob {digest.short} in {self.display_name}: it is a symlink that "
                "leads outside the layout"
            )
        return path

    def _read_manifest_blob(self, digest: Digest) -> bytes:
        path = self._blob_path(digest)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError as exc:
            raise NotFoundError(f"manifest {digest} not found in {self.display_name}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read manifest {digest.short}: {exc}") from exc
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest {digest.short} in {self.display_name} is over the "
                f"{MAX_MANIFEST_BYTES} byte limit; refusing it"
            )
        verify_bytes(data, digest, where=self.display_name)
        return data

    @contextlib.contextmanager
    def _open_blob(self, digest: Digest, size: int | None) -> Iterator[Iterator[bytes]]:
        path = self._blob_path(digest)
        try:
            f = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {digest} not found in {self.display_name}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest.short}: {exc}") from exc
        with f:
            yield verified_chunks(_read_chunks(f, path), digest, size=size, where=self.display_name)


# --- helpers ----------------------------------------------------------------------------


def _read_chunks(f: Any, path: Path) -> Iterator[bytes]:
    try:
        while block := f.read(CHUNK_SIZE):
            yield block
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def _on_disk(operation: Any, *args: Any, where: str) -> Any:
    try:
        return operation(*args)
    except OSError as exc:
        raise StorageError(f"cannot write {where}: {exc}") from exc


def _close_unread(chunks: Iterable[bytes]) -> None:
    # The blob is already committed; a generator source is simply closed unread.
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations") or {}
    name = annotations.get(REF_NAME_ANNOTATION)
    return name if isinstance(name, str) else None


def _parse_digest(text: str, where: Path) -> Digest:
    try:
        return Digest.parse(text)
    except DigestError as exc:
        raise StorageError(f"{where} lists an invalid digest: {exc}") from exc


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _load_json(raw: bytes, *, where: str) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_reject_duplicates)
    except (ValueError, RecursionError) as exc:
        raise StorageError(f"{where} is not valid JSON: {exc}") from exc


def _child_digests(manifest: RawManifest) -> set[str]:
    if manifest.media_type not in INDEX_TYPES:
        return set()
    try:
        parsed = parse_manifest(manifest.data, content_type=manifest.media_type)
    except ManifestError:
        return set()
    if not isinstance(parsed, ImageIndex):
        return set()
    return {str(child.digest) for child in parsed.manifests}


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
