"""OCI image layout directories (``oci:PATH[:TAG]``): the embedded registry.

A layout is ``oci-layout`` (``{"imageLayoutVersion": "1.0.0"}``), ``index.json`` (an image
index whose entries name tags with the ``org.opencontainers.image.ref.name`` annotation) and
``blobs/<algorithm>/<encoded>``. Manifests are blobs too; the top-level ones are listed in
``index.json``, children of an index (and referrers listed by a ``sha256-<hex>`` tag index)
are stored as blobs only.

Cost: ``index.json`` is parsed and validated once per version, not on every operation. The
parsed entries live in a SQLite cache beside it (``index.json.sqlite``) stamped with the
identity of the ``index.json`` they describe (device, inode, size, mtime, ctime); a write
changes the cache rows it touches and regenerates ``index.json`` from them (one compact line
per entry), so no write walks every manifest. When the stamp does not match (another tool
wrote the layout, a crash between the two writes, no cache yet), the cache is rebuilt from
``index.json`` — and where it cannot be written (a read-only layout) an in-memory one is used.
A tool that rewrites ``index.json`` in place with the same size within one clock tick of our
write would go unnoticed; skopeo, umoci and oras each change its size or inode when they
change a tag.

Safety rules, each tested:
- a blob path is built only from a validated ``Digest`` and must resolve inside the layout
  (a symlink that escapes it is refused);
- ref names are checked against the OCI ref grammar, on write and on read: an ``index.json``
  naming ``../x`` makes the whole layout refused;
- a blob appears under its final name only after every byte was written, fsynced and hashed
  to its digest (temp file in the same directory, then atomic rename);
- ``index.json`` is rewritten atomically (temp + fsync + rename) and every read-modify-write
  of it (a tag, a referrers index merge) runs under one ``fcntl`` lock on
  ``index.json.lock``, so concurrent writers never lose each other's entries;
- writes from threads of one process to one layout are committed together: while one
  thread holds the lock and writes, the others queue their changes, and the next of them
  applies all queued changes (each in a savepoint of its own: one refused change fails
  only its writer) in one ``index.json`` rewrite. Each writer returns once its change is
  durable, as before; the fsyncs of a rewrite are shared by the batch (group commit);
- files are created with the process umask (0644 under the usual 022), as skopeo and oras
  do, so other users' tools can read the layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.errors import DigestError, ManifestError, NotFoundError, StorageError
from conveyor.oci.digest import Digest, verified_chunks, verify_bytes
from conveyor.oci.manifest import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    parse_manifest,
    strict_json_loads,
)
from conveyor.oci.mediatypes import INDEX_TYPES, OCI_INDEX
from conveyor.oci.referrers import merged_fallback, read_fallback, wanted_by_tag
from conveyor.oci.store import RawManifest, Repository

__all__ = ["LAYOUT_VERSION", "REF_NAME_ANNOTATION", "LayoutRepository", "validate_ref_name"]

LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_INDEX_JSON_BYTES = 32 * 1024 * 1024  # ~60,000 images with their referrers indexes
CHUNK_SIZE = 1024 * 1024
CACHE_NAME = "index.json.sqlite"
_INDEX_END = b"\n]}\n"
_SEP = b",\n"
# Which rows a put replaces (constant SQL; RETURNING would need SQLite 3.35).
_UNTAGGED = "ref_name IS NULL AND digest = ?"
_TAG_OR_UNTAGGED = "ref_name = ? OR (digest = ? AND ref_name IS NULL)"
_DELETES = {
    where: (f"SELECT line FROM entries WHERE {where}", f"DELETE FROM entries WHERE {where}")  # noqa: S608
    for where in (_UNTAGGED, _TAG_OR_UNTAGGED)
}
_CACHE_FORMAT = "1"
_BUSY_TIMEOUT_S = 30.0

# OCI annotations.md: ref ::= component ("/" component)*, component ::= alphanum
# (separator alphanum)*, separator ::= [-._:@+] | "--". No "..", no leading "/" or ".".
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"{_REF_COMPONENT}(?:/{_REF_COMPONENT})*")
_MAX_REF_NAME = 255

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    pos INTEGER PRIMARY KEY, digest TEXT NOT NULL, media_type TEXT, ref_name TEXT,
    line BLOB NOT NULL);
CREATE INDEX entries_by_ref ON entries (ref_name);
CREATE INDEX entries_by_digest ON entries (digest);
CREATE TABLE children (parent TEXT NOT NULL, child TEXT NOT NULL, PRIMARY KEY (parent, child));
CREATE INDEX children_by_child ON children (child);
CREATE TABLE subjects (
    referrer TEXT PRIMARY KEY, subject TEXT NOT NULL, artifact_type TEXT);
CREATE INDEX subjects_by_subject ON subjects (subject);
"""


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
        self._db: sqlite3.Connection | None = None
        self._db_in_memory = False
        self._removed: set[bytes] = set()  # index.json lines this write takes out ...
        self._added: list[bytes] = []  # ... and appends
        self._db_guard = threading.RLock()
        self._blob_dirs: dict[str, Path] = {}
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
        with self._reading():  # refuse a hostile index.json now, not halfway through a copy
            pass

    def close(self) -> None:
        with self._db_guard:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

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
            with self._reading() as db:
                row = db.execute(
                    "SELECT media_type FROM entries WHERE digest = ? ORDER BY pos LIMIT 1",
                    (str(digest),),
                ).fetchone()
            media_type = row[0] if row is not None else None
        else:
            digest, media_type = self._entry_for_tag(reference)
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
        self._store_manifest(manifest)
        self._grouped(lambda writer, db: writer._apply_put(db, manifest, tag))

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
            fd, tmp = _create_temp(directory, prefix=".tmp-", suffix=".partial")
        except OSError as exc:
            raise StorageError(f"cannot write to {self.display_name}: {exc}") from exc
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
        with self._reading() as db:
            rows = db.execute(
                "SELECT ref_name FROM entries WHERE ref_name IS NOT NULL "
                "GROUP BY ref_name ORDER BY MIN(pos)"
            ).fetchall()
        return [str(name) for (name,) in rows]

    # --- referrers (found by conveyor.oci.referrers) ------------------------------------

    def referrers(self, digest: Digest, *, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: those the ``<alg>-<hex>`` tag index
        lists, then untagged ``index.json`` entries whose manifest names ``digest`` as its
        subject (how oras-go's OCI store keeps them)."""
        found = read_fallback(self, digest)
        seen = {d.digest for d in found}
        with self._reading() as db:
            rows = db.execute(
                "SELECT e.line, s.artifact_type FROM subjects AS s "
                "JOIN entries AS e ON e.digest = s.referrer "
                "WHERE s.subject = ? AND e.ref_name IS NULL ORDER BY e.pos",
                (str(digest),),
            ).fetchall()
        for line, stored_type in rows:
            descriptor = Descriptor.from_json(
                _load_json(bytes(line), where=str(self._index_path)), where="index.json entry"
            )
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            if descriptor.artifact_type is None and stored_type is not None:
                descriptor = dataclasses.replace(descriptor, artifact_type=stored_type)
            found.append(descriptor)
        if artifact_type is not None:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    def attach_referrers(self, manifests: Sequence[RawManifest]) -> None:
        """Store manifests that have a ``subject`` and list them in their subjects'
        ``<alg>-<hex>`` indexes: read, merge and write under one lock, one ``index.json``
        update for all of them."""
        wanted = wanted_by_tag(manifests)  # refuses a manifest without a subject
        if not manifests:
            return  # nothing to list: no lock, no index.json write
        for manifest in manifests:
            self._store_manifest(manifest)
        # The merged indexes as they will most likely be, stored (and fsynced) before the
        # lock: under it each is merged again from what is there then, and only one another
        # writer changed meanwhile costs a blob write there.
        for tag, entries in wanted.items():
            merged = self._merged(tag, entries)
            if merged is not None:
                self._store_manifest(merged)

        def attach(writer: LayoutRepository, db: sqlite3.Connection) -> None:
            for tag, entries in wanted.items():
                merged = writer._merged(tag, entries)
                if merged is None:
                    continue
                writer._store_manifest(merged)  # stored already, unless it changed meanwhile
                writer._apply_put(db, merged, tag)
            for manifest in manifests:
                writer._record_facts(db, manifest)

        self._grouped(attach)

    def _merged(self, tag: str, entries: dict[str, dict[str, Any]]) -> RawManifest | None:
        """The fallback index ``tag`` with ``entries`` merged in (None: listed already), as
        this thread reads it (inside a write: with the batch's changes so far)."""
        try:
            current: RawManifest | None = self.get_manifest(tag)
        except NotFoundError:
            current = None
        return merged_fallback(current, entries, where=f"{self.display_name}:{tag}")

    def attach_referrer(self, manifest: RawManifest) -> None:
        self.attach_referrers([manifest])

    # --- internals: index.json and its cache --------------------------------------------

    @property
    def _index_path(self) -> Path:
        return self._root / "index.json"

    def _store_manifest(self, manifest: RawManifest) -> None:
        verify_bytes(manifest.data, manifest.digest, where="manifest to store")
        # Never store what we would refuse to read back (oversized, ambiguous, not JSON...).
        parse_manifest(manifest.data, content_type=manifest.media_type)
        self.write_blob(manifest.digest, len(manifest.data), [manifest.data])

    def _apply_put(self, db: sqlite3.Connection, manifest: RawManifest, tag: str | None) -> None:
        """Change the cache rows for one put (inside ``_writing``)."""
        digest = str(manifest.digest)
        children = self._record_facts(db, manifest)
        descriptor: dict[str, Any] = {
            "mediaType": manifest.media_type,
            "digest": digest,
            "size": len(manifest.data),
        }
        for child in sorted(children):
            # An index's children live as blobs only: drop the untagged entries they had.
            self._delete(db, _UNTAGGED, (child,))
        if tag is None:
            listed = db.execute("SELECT 1 FROM entries WHERE digest = ? LIMIT 1", (digest,))
            nested = db.execute(
                "SELECT 1 FROM children AS c JOIN entries AS e ON e.digest = c.parent "
                "WHERE c.child = ? LIMIT 1",
                (digest,),
            )
            if listed.fetchone() is None and nested.fetchone() is None:
                self._insert(db, descriptor, None)
            return
        line = _entry_line({**descriptor, "annotations": {REF_NAME_ANNOTATION: tag}})
        same = db.execute(
            "SELECT line FROM entries WHERE ref_name = ? OR (digest = ? AND ref_name IS NULL)",
            (tag, digest),
        ).fetchall()
        if [bytes(row[0]) for row in same] == [line]:
            return  # already so: nothing to write
        self._delete(db, _TAG_OR_UNTAGGED, (tag, digest))
        self._insert(db, {**descriptor, "annotations": {REF_NAME_ANNOTATION: tag}}, tag)

    def _delete(self, db: sqlite3.Connection, where: str, params: tuple[str, ...]) -> None:
        # Rows with equal lines have equal digest and ref name, so they go together: the
        # lines removed from index.json are exactly the lines of the rows deleted.
        select, delete = _DELETES[where]
        for (line,) in db.execute(select, params).fetchall():
            line = bytes(line)
            if line in self._added:
                self._added = [a for a in self._added if a != line]
            else:
                self._removed.add(line)
        db.execute(delete, params)

    def _insert(self, db: sqlite3.Connection, entry: dict[str, Any], tag: str | None) -> None:
        self._added.append(_insert_entry(db, entry, tag))

    def _record_facts(self, db: sqlite3.Connection, manifest: RawManifest) -> set[str]:
        """Remember what a manifest says about others (its children, its subject): facts of
        content-addressed bytes, true for as long as the digest exists."""
        children, subject, artifact_type = _facts(manifest.data)
        digest = str(manifest.digest)
        if children:
            db.executemany(
                "INSERT OR IGNORE INTO children (parent, child) VALUES (?, ?)",
                [(digest, child) for child in sorted(children)],
            )
        if subject is not None:
            db.execute(
                "INSERT OR IGNORE INTO subjects (referrer, subject, artifact_type) "
                "VALUES (?, ?, ?)",
                (digest, subject, artifact_type),
            )
        return children

    def _grouped(self, work: _Work) -> None:
        """Apply ``work`` to the cache rows and write ``index.json``, under the index lock,
        together with the writes other threads of this process queued meanwhile (module
        docstring); returns once it is written, or raises what refused it."""
        group = _group_of(self._root)
        job = _Job(work)
        with group.guard:
            group.queue.append(job)
            if not group.leading:
                group.leading = job.lead = True
        if not job.lead:
            job.woken.wait()  # done by another thread, or asked to lead the next batch
        if not job.done:
            with group.guard:
                jobs, group.queue = group.queue, []
            try:
                self._write_batch(jobs)
            finally:
                with group.guard:
                    if group.queue:
                        group.queue[0].woken.set()  # it leads the next batch
                    else:
                        group.leading = False
        if job.error is not None:
            raise job.error

    def _write_batch(self, jobs: list[_Job]) -> None:
        try:
            with self._index_lock(), self._writing() as db:
                for job in jobs:
                    saved = set(self._removed), list(self._added)
                    db.execute("SAVEPOINT one_write")
                    try:
                        job.work(self, db)
                    except sqlite3.Error:
                        raise  # the cache failed: the whole batch with it
                    except Exception as exc:  # one writer's refusal is its own
                        db.execute("ROLLBACK TO one_write")
                        self._removed, self._added = saved
                        job.error = exc
                    db.execute("RELEASE one_write")
        except BaseException as exc:  # the rewrite failed: every change of it with it
            for job in jobs:
                if job.error is None:
                    job.error = exc
        finally:
            for job in jobs:
                job.done = True
                job.woken.set()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A cache that matches the current ``index.json``, in a read transaction (or in
        the write transaction this thread already holds)."""
        with self._db_guard, self._cache_errors():
            if self._db is not None and self._db.in_transaction:
                yield self._db
                return
            db = self._synced()
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """Under the index lock: change cache rows, then write ``index.json`` from them and
        stamp the cache with it, in one cache transaction (a crash between the two leaves
        an old stamp, so the next reader rebuilds)."""
        with self._db_guard, self._cache_errors():
            db = self._synced()
            db.execute("BEGIN IMMEDIATE")
            self._removed, self._added = set(), []
            try:
                yield db
                if self._removed or self._added:
                    stamp = self._write_index(db)
                    _set_meta(db, "identity", stamp)
                    _set_meta(db, "written", stamp)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _cache_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(
                f"the index cache of {self.display_name} failed ({exc}); delete "
                f"{self._root / CACHE_NAME} to rebuild it from index.json"
            ) from exc

    def _synced(self) -> sqlite3.Connection:
        db = self._connection()
        if self._stamp_matches(db):
            return db
        # Our writers rename index.json and stamp the cache in one cache write transaction:
        # a reader that looked between the two waits for that commit and looks again,
        # rather than rebuilding the whole cache (with every reader of a busy layout).
        if not self._db_in_memory:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("COMMIT")
            except sqlite3.Error:
                pass  # a read-only cache: rebuilt in memory below
            if self._stamp_matches(db):
                return db
        return self._rebuild(db)

    def _stamp_matches(self, db: sqlite3.Connection) -> bool:
        """The cache describes the ``index.json`` there is now."""
        index = self._index_path
        try:
            current = _identity(os.stat(index))
        except FileNotFoundError as exc:
            raise StorageError(f"{self._path} is not an OCI image layout (no index.json)") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {index}: {exc}") from exc
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
        except sqlite3.Error:
            row = None
        return row is not None and row[0] == current

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        path = self._root / CACHE_NAME
        db: sqlite3.Connection | None = None
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        except OSError:
            info = os.stat_result((0,) * 10)  # unreadable: use memory
        if info is None or stat.S_ISREG(info.st_mode):
            with contextlib.suppress(sqlite3.Error, OSError):
                db = _open_cache(path, writable=os.access(self._root, os.W_OK))
        if db is None:
            db = _open_cache(None, writable=True)
            self._db_in_memory = True
        self._db = db
        return db

    def _rebuild(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """Parse and validate ``index.json`` into the cache (the only walk over manifests)."""
        index = self._index_path
        try:
            with index.open("rb") as f:
                identity = _identity(os.fstat(f.fileno()))
                raw = f.read(MAX_INDEX_JSON_BYTES + 1)
        except FileNotFoundError as exc:
            raise StorageError(f"{self._path} is not an OCI image layout (no index.json)") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {index}: {exc}") from exc
        if len(raw) > MAX_INDEX_JSON_BYTES:
            raise StorageError(f"{index} is over {MAX_INDEX_JSON_BYTES} bytes; refusing it")
        doc, entries = self._validated(raw)
        try:
            self._fill(db, doc, entries, identity)
        except sqlite3.Error:
            if self._db_in_memory:
                raise StorageError(f"cannot index {index}: the in-memory cache failed") from None
            # An unwritable or damaged cache file: work from memory.
            db.close()
            db = _open_cache(None, writable=True)
            self._db, self._db_in_memory = db, True
            self._fill(db, doc, entries, identity)
        return db

    def _fill(
        self,
        db: sqlite3.Connection,
        doc: dict[str, Any],
        entries: list[dict[str, Any]],
        identity: str,
    ) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            with contextlib.suppress(sqlite3.Error):
                row = db.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
                if row is not None and row[0] == identity:  # another reader rebuilt it
                    db.execute("COMMIT")
                    return
            _reset_schema(db)
            header = {k: v for k, v in doc.items() if k != "manifests"}
            _set_meta(db, "header", json.dumps(header, separators=(",", ":")))
            _set_meta(db, "format", _CACHE_FORMAT)
            db.executemany(
                "INSERT INTO entries (digest, media_type, ref_name, line) VALUES (?, ?, ?, ?)",
                (_entry_row(entry, _ref_name(entry)) for entry in entries),
            )
            # The one walk over manifests, once per foreign index.json: what indexes list
            # (a child put alone stays off the top level) and what untagged ones refer to.
            for entry in entries:
                if entry.get("mediaType") in INDEX_TYPES or _ref_name(entry) is None:
                    self._learn_from_blob(db, entry)
            _set_meta(db, "identity", identity)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _learn_from_blob(self, db: sqlite3.Connection, entry: dict[str, Any]) -> None:
        digest = _parse_digest(entry["digest"], self._index_path)
        data = self._read_blob_quickly(digest)
        if data is not None:  # absent, damaged or odd: reading it later says so
            self._record_facts(db, RawManifest(data, "", digest))

    def _read_blob_quickly(self, digest: Digest) -> bytes | None:
        """A manifest blob for the walk: its directory is checked once, the file is opened
        without following a symlink (one that is refused here is simply not learned)."""
        directory = self._blob_dirs.get(digest.algorithm)
        if directory is None:
            directory = self._blob_path(digest).parent.resolve()
            if not directory.is_relative_to(self._root):
                return None
            self._blob_dirs[digest.algorithm] = directory
        try:
            fd = os.open(directory / digest.encoded, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES or Digest.of(data, digest.algorithm) != digest:
            return None
        return data

    def _validated(self, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        path = self._index_path
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
            if not isinstance(entry.get("mediaType", ""), str):
                raise StorageError(f"{path} has an entry whose mediaType is not a string")
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
        return doc, manifests

    def _write_index(self, db: sqlite3.Connection) -> str:
        row = db.execute("SELECT value FROM meta WHERE key = 'header'").fetchone()
        header = json.loads(row[0]) if row is not None else {}
        if not isinstance(header, dict) or not header:
            header = {"schemaVersion": 2, "mediaType": OCI_INDEX}
        start = json.dumps(header, separators=(",", ":")).encode()[:-1] + b',"manifests":[\n'
        (count,) = db.execute("SELECT COUNT(*) FROM entries").fetchone()
        pieces = self._spliced(db, start, count)
        if pieces is None:  # not the file we wrote last: write every row out
            lines = [bytes(r[0]) for r in db.execute("SELECT line FROM entries ORDER BY pos")]
            pieces = [start, _SEP.join(lines), _INDEX_END]
        if sum(len(p) for p in pieces) > MAX_INDEX_JSON_BYTES:
            raise StorageError(
                f"{self._index_path} would grow over {MAX_INDEX_JSON_BYTES} bytes; refusing it"
            )
        try:
            written = _atomic_write(self._index_path, pieces)
            now = os.stat(self._index_path)  # a rename changes the ctime
        except OSError as exc:
            raise StorageError(f"cannot write {self._index_path}: {exc}") from exc
        _set_meta(db, "lines", str(count))
        if (now.st_dev, now.st_ino) != (written.st_dev, written.st_ino):
            return "replaced"  # someone replaced it already: the next reader rebuilds
        return _identity(now)

    def _spliced(
        self, db: sqlite3.Connection, start: bytes, count: int
    ) -> list[bytes | memoryview] | None:
        """The new index.json as pieces of the one we wrote last (one entry a line): less
        the removed lines, plus the added ones; no copy of the whole file is made. None when
        the file is not the one we wrote last."""
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('written', 'lines')"))
        try:
            with self._index_path.open("rb") as f:
                if meta.get("written") != _identity(os.fstat(f.fileno())):
                    return None
                raw = f.read(MAX_INDEX_JSON_BYTES + 1)
            lines_before = int(meta["lines"])
        except (OSError, KeyError, ValueError):
            return None
        if not (raw.startswith(start) and raw.endswith(_INDEX_END)):
            return None
        begin, end = len(start), len(raw) - len(_INDEX_END)
        # Each removed line goes with its separator: the one after it, or (the last line)
        # the one before it. Lines hold no newline, so "\n" + line + "," or "\n" only
        # matches a whole line.
        spans: list[tuple[int, int]] = []
        for line in self._removed:
            at = raw.find(line, begin)
            while at != -1:
                stop = at + len(line)
                whole = raw[at - 1 : at] == b"\n" and raw[stop : stop + 1] in (b",", b"\n")
                if whole and stop < end:
                    spans.append((at, stop + len(_SEP)))
                elif whole:
                    spans.append((max(begin, at - len(_SEP)), stop))
                at = raw.find(line, stop)
        view = memoryview(raw)
        kept: list[bytes | memoryview] = []
        cursor = begin
        for lo, hi in sorted(spans):
            if lo > cursor:
                kept.append(view[cursor:lo])
            cursor = max(cursor, hi)
        if cursor < end:
            kept.append(view[cursor:end])
        if kept and bytes(kept[0][: len(_SEP)]) == _SEP:
            kept[0] = kept[0][len(_SEP) :]
        if kept and bytes(kept[-1][-len(_SEP) :]) == _SEP:
            kept[-1] = kept[-1][: -len(_SEP)]
        kept = [piece for piece in kept if len(piece)]
        if lines_before - len(spans) + len(self._added) != count:
            return None  # the file is not what we think: write every row out
        pieces: list[bytes | memoryview] = [start, *kept]
        if self._added:
            pieces.extend(([_SEP] if kept else []) + [_SEP.join(self._added)])
        pieces.append(_INDEX_END)
        return pieces

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        lock_path = self._root / "index.json.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise StorageError(f"cannot lock {self._index_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _entry_for_tag(self, tag: str) -> tuple[Digest, str | None]:
        validate_ref_name(tag)
        with self._reading() as db:
            found = db.execute(
                "SELECT digest, media_type FROM entries WHERE ref_name = ? ORDER BY pos", (tag,)
            ).fetchall()
        if not found:
            raise NotFoundError(f"tag {tag!r} not found in {self.display_name}")
        if len({row[0] for row in found}) > 1:
            raise StorageError(
                f"tag {tag!r} names {len(found)} different manifests in {self.display_name}; "
                "refusing to guess"
            )
        digest, media_type = found[0]
        return _parse_digest(digest, self._index_path), media_type

    # --- internals: files ---------------------------------------------------------------

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


# --- writes grouped per process and layout ------------------------------------------------

# One queued change: it gets the layout object that writes the batch and its cache
# connection, inside the batch's write transaction.
_Work = Callable[[LayoutRepository, sqlite3.Connection], None]


@dataclass(eq=False)
class _Job:
    work: _Work
    lead: bool = False  # this thread writes the first batch
    done: bool = False
    error: BaseException | None = None
    woken: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Group:
    guard: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Job] = field(default_factory=list)
    leading: bool = False  # a thread is writing a batch (or about to)


_GROUPS: dict[Path, _Group] = {}
_GROUPS_GUARD = threading.Lock()


def _group_of(root: Path) -> _Group:
    with _GROUPS_GUARD:
        return _GROUPS.setdefault(root, _Group())


# --- the cache ---------------------------------------------------------------------------


def _open_cache(path: Path | None, *, writable: bool) -> sqlite3.Connection:
    if path is None:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        mode = "rwc" if writable else "ro"
        db = sqlite3.connect(
            f"{path.as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_S,
        )
        if writable:
            # WAL: a commit is atomic without an fsync of its own (a torn one is dropped
            # whole on recovery); losing the last commits on power loss only costs a
            # rebuild, as the stamp is written in the same transaction as its rows.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
    try:
        if db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() != (_CACHE_FORMAT,):
            raise sqlite3.DatabaseError("old cache format")
    except sqlite3.Error:
        if not writable:
            db.close()
            raise
        db.execute("BEGIN IMMEDIATE")
        try:
            _reset_schema(db)
            _set_meta(db, "format", _CACHE_FORMAT)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
    return db


def _reset_schema(db: sqlite3.Connection) -> None:
    for table in ("meta", "entries", "children", "subjects"):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _insert_entry(db: sqlite3.Connection, entry: dict[str, Any], ref_name: str | None) -> bytes:
    row = _entry_row(entry, ref_name)
    db.execute("INSERT INTO entries (digest, media_type, ref_name, line) VALUES (?, ?, ?, ?)", row)
    return row[3]


def _entry_row(
    entry: dict[str, Any], ref_name: str | None
) -> tuple[str, str | None, str | None, bytes]:
    media_type = entry.get("mediaType")
    return (
        entry["digest"],
        media_type if isinstance(media_type, str) else None,
        ref_name,
        _entry_line(entry),
    )


def _facts(data: bytes) -> tuple[set[str], str | None, str | None]:
    """(children, subject, artifact type) of a manifest's bytes, read strictly but without
    building the whole model (the walk over a big layout reads thousands)."""
    try:
        doc = strict_json_loads(data, what="manifest")
    except ManifestError:
        return set(), None, None
    if not isinstance(doc, dict):
        return set(), None, None
    children: set[str] = set()
    listed = doc.get("manifests")
    if isinstance(listed, list) and "layers" not in doc:
        children = {d for d in map(_descriptor_digest, listed) if d is not None}
    subject = _descriptor_digest(doc.get("subject"))
    artifact_type = doc.get("artifactType")
    config = doc.get("config")
    if artifact_type is None and isinstance(config, dict) and not children:
        artifact_type = config.get("mediaType")
    return children, subject, artifact_type if isinstance(artifact_type, str) else None


def _descriptor_digest(descriptor: Any) -> str | None:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
        return None
    try:
        return str(Digest.parse(descriptor["digest"]))
    except DigestError:
        return None


def _entry_line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode()


def _identity(info: os.stat_result) -> str:
    return ":".join(
        str(v) for v in (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    )


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


def _create_temp(directory: Path, *, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file for writing, created with the process umask (``mkstemp`` forces 0600,
    which other users' tools cannot read)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(100):
        path = directory / f"{prefix}{os.urandom(8).hex()}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def _atomic_write(path: Path, data: bytes | Sequence[bytes | memoryview]) -> os.stat_result:
    """Write ``path`` (bytes, or pieces written one after another) by temp file + fsync +
    rename; the new file's identity is returned."""
    fd, tmp = _create_temp(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in [data] if isinstance(data, bytes) else data:
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
            info = os.fstat(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    return info


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
