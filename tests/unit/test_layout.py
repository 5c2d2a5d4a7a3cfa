"""OCI image layout store: read, write, verify, refuse traversal, atomicity, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conveyor.errors import (
    DigestMismatch,
    ManifestError,
    NotFoundError,
    StorageError,
)
from conveyor.oci.digest import Digest
from conveyor.oci.layout import REF_NAME_ANNOTATION, LayoutRepository, validate_ref_name
from conveyor.oci.store import RawManifest, Repository
from tests.support.images import OCI_INDEX, OCI_MANIFEST, build_image, build_index


def _digest(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def _index(layout: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((layout / "index.json").read_text())
    return doc


def _manifest(data: bytes, media_type: str = OCI_MANIFEST) -> RawManifest:
    return RawManifest(data=data, media_type=media_type, digest=_digest(data))


def _valid_manifest(n: int) -> RawManifest:
    config = json.dumps({"n": n}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": str(_digest(config)),
            "size": len(config),
        },
        "layers": [],
    }
    return _manifest(json.dumps(doc).encode())


def _blob_path(layout: Path, digest: Digest) -> Path:
    return layout / "blobs" / digest.algorithm / digest.encoded


def test_create_writes_spec_files(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "new", create=True)
    assert isinstance(repo, Repository)
    assert json.loads((tmp_path / "new" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    index = _index(tmp_path / "new")
    assert index["schemaVersion"] == 2
    assert index["manifests"] == []
    assert (tmp_path / "new" / "blobs").is_dir()
    assert repo.list_tags() == []
    assert repo.display_name == f"oci:{tmp_path / 'new'}"


def test_missing_layout_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        LayoutRepository(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="oci-layout"):
        LayoutRepository(tmp_path / "empty")


def test_reads_layout_written_independently(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1", labels={"git.commit": "abc"})
    repo = LayoutRepository(img.layout)
    raw = repo.get_manifest("v1")
    assert str(raw.digest) == img.digest
    assert raw.media_type == OCI_MANIFEST
    assert hashlib.sha256(raw.data).hexdigest() == img.digest.split(":")[1]
    assert repo.get_manifest(Digest.parse(img.digest)).data == raw.data
    assert repo.list_tags() == ["v1"]
    for digest, size in img.blobs.items():
        d = Digest.parse(digest)
        assert repo.blob_size(d) == size
        with repo.open_blob(d, size=size) as chunks:
            data = b"".join(chunks)
        assert hashlib.sha256(data).hexdigest() == d.encoded
    with pytest.raises(NotFoundError):
        repo.get_manifest("v2")


def test_tampered_blob_is_refused_on_read(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", layer_sizes=(4096,))
    layer = next(Digest.parse(d) for d, s in img.blobs.items() if s > 4096)
    path = _blob_path(img.layout, layer)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    repo = LayoutRepository(img.layout)
    with pytest.raises(DigestMismatch), repo.open_blob(layer) as chunks:
        for _ in chunks:
            pass


def test_tampered_manifest_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l")
    path = _blob_path(img.layout, Digest.parse(img.digest))
    path.write_bytes(path.read_bytes().replace(b"schemaVersion", b"schemaVersioN"))
    with pytest.raises(DigestMismatch):
        LayoutRepository(img.layout).get_manifest("latest")


def test_write_blob_then_read_back(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = _digest(data)
    repo.write_blob(digest, len(data), [data[i : i + 65536] for i in range(0, len(data), 65536)])
    assert repo.blob_size(digest) == len(data)
    assert _blob_path(tmp_path / "l", digest).read_bytes() == data
    # Writing again is a no-op (content addressed).
    repo.write_blob(digest, len(data), [data])
    with repo.open_blob(digest, size=len(data)) as chunks:
        assert b"".join(chunks) == data


def test_write_blob_with_wrong_bytes_leaves_nothing(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    digest = _digest(b"the real content")
    with pytest.raises(DigestMismatch):
        repo.write_blob(digest, 16, [b"not the content!"])
    assert repo.blob_size(digest) is None
    assert list((tmp_path / "l" / "blobs").rglob("*")) in ([], [tmp_path / "l/blobs/sha256"])


def test_failing_chunk_iterator_leaves_no_blob(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    data = os.urandom(200_000)
    digest = _digest(data)

    def broken() -> Iterator[bytes]:
        yield data[:100_000]
        raise ConnectionResetError("the network went away")

    with pytest.raises(ConnectionResetError):
        repo.write_blob(digest, len(data), broken())
    assert repo.blob_size(digest) is None
    leftovers = [p for p in (tmp_path / "l" / "blobs").rglob("*") if p.is_file()]
    assert leftovers == []


def test_put_manifest_tags_replace_and_digest_entries(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    m1, m2 = _valid_manifest(1), _valid_manifest(2)
    repo.put_manifest(m1)
    repo.put_manifest(m1)  # by digest, twice: one untagged entry
    entries = _index(tmp_path / "l")["manifests"]
    assert entries == [{"mediaType": OCI_MANIFEST, "digest": str(m1.digest), "size": len(m1.data)}]
    repo.put_manifest(m1, tag="v1")
    repo.put_manifest(m2, tag="v2")
    repo.put_manifest(m2, tag="v1")  # moves v1
    entries = _index(tmp_path / "l")["manifests"]
    assert isinstance(entries, list)
    names = {e["annotations"][REF_NAME_ANNOTATION]: e["digest"] for e in entries}
    assert names == {"v1": str(m2.digest), "v2": str(m2.digest)}
    assert repo.get_manifest("v1").data == m2.data
    assert sorted(repo.list_tags()) == ["v1", "v2"]
    assert repo.has_manifest(m1.digest)  # the blob stays


def test_put_manifest_refuses_wrong_digest(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    lying = RawManifest(data=b'{"schemaVersion":2}', media_type=OCI_MANIFEST, digest=_digest(b"x"))
    with pytest.raises(DigestMismatch):
        repo.put_manifest(lying)
    assert _index(tmp_path / "l")["manifests"] == []


def test_index_children_are_blobs_only(tmp_path: Path) -> None:
    src = build_index(tmp_path / "src", tag="multi")
    source = LayoutRepository(src.layout)
    top = source.get_manifest("multi")
    children = [Digest.parse(c["digest"]) for c in json.loads(top.data)["manifests"]]
    dst = LayoutRepository(tmp_path / "dst", create=True)
    for blob, size in src.blobs.items():
        with source.open_blob(Digest.parse(blob)) as chunks:
            dst.write_blob(Digest.parse(blob), size, chunks)
    for child in children:
        dst.put_manifest(source.get_manifest(child))
    dst.put_manifest(top)
    dst.put_manifest(top, tag="multi")
    entries = _index(tmp_path / "dst")["manifests"]
    assert isinstance(entries, list)
    assert [e["digest"] for e in entries] == [str(top.digest)]
    assert entries[0]["mediaType"] == OCI_INDEX
    # A child put again by digest does not reappear at the top level.
    dst.put_manifest(source.get_manifest(children[0]))
    assert len(_index(tmp_path / "dst")["manifests"]) == 1  # type: ignore[arg-type]
    assert all(dst.has_manifest(c) for c in children)


@pytest.mark.parametrize(
    "tag",
    ["../x", "..", "a/../../b", "/etc", ".hidden", "a..b", "", "x" * 300, "a b", "a\nb", "é"],
)
def test_bad_tags_are_refused(tmp_path: Path, tag: str) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    m = _valid_manifest(0)
    with pytest.raises(StorageError):
        repo.put_manifest(m, tag=tag)
    with pytest.raises(StorageError):
        repo.get_manifest(tag)
    assert _index(tmp_path / "l")["manifests"] == []


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "1.0_rc-1", "a--b", "release/2026", "A:B@C+d"])
def test_valid_ref_names(tag: str) -> None:
    assert validate_ref_name(tag) == tag


@pytest.mark.parametrize("name", ["../../etc/passwd", "../x", "a/../b", "/abs"])
def test_layout_with_traversal_ref_name_is_refused(tmp_path: Path, name: str) -> None:
    img = build_image(tmp_path / "l")
    index = _index(img.layout)
    index["manifests"][0]["annotations"][REF_NAME_ANNOTATION] = name  # type: ignore[index]
    (img.layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(StorageError, match="not a valid ref name"):
        LayoutRepository(img.layout)


@pytest.mark.parametrize(
    "index_text",
    [
        "not json",
        "[]",
        '{"manifests": 3}',
        '{"manifests": [{"digest": "md5:abc", "size": 1}]}',
        '{"manifests": [{"digest": "sha256:../../x", "size": 1}]}',
        '{"manifests": [], "manifests": []}',
        '{"manifests": [{"digest": "sha256:' + "a" * 64 + '", "annotations": []}]}',
    ],
)
def test_hostile_index_json_is_refused(tmp_path: Path, index_text: str) -> None:
    img = build_image(tmp_path / "l")
    (img.layout / "index.json").write_text(index_text)
    with pytest.raises(StorageError):
        LayoutRepository(img.layout)


def test_bad_layout_version_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l")
    (img.layout / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(StorageError, match="imageLayoutVersion"):
        LayoutRepository(img.layout)


def test_symlinked_blob_escaping_layout_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"secret outside the layout")
    digest = _digest(secret.read_bytes())
    repo = LayoutRepository(tmp_path / "l", create=True)
    link = _blob_path(tmp_path / "l", digest)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    with pytest.raises(StorageError, match="outside the layout"):
        repo.blob_size(digest)
    with pytest.raises(StorageError, match="outside the layout"), repo.open_blob(digest):
        pass
    with pytest.raises(StorageError, match="outside the layout"):
        repo.get_manifest(digest)


def test_symlinked_blobs_directory_escaping_layout_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    img = build_image(tmp_path / "l")
    (img.layout / "blobs").rename(outside)
    (img.layout / "blobs").symlink_to(outside)
    with pytest.raises(StorageError, match="outside the layout"):
        LayoutRepository(img.layout).get_manifest("latest")


def test_concurrent_index_updates_lose_nothing(tmp_path: Path) -> None:
    LayoutRepository(tmp_path / "l", create=True)
    manifests = [_valid_manifest(i) for i in range(24)]
    errors: list[BaseException] = []

    def writer(chunk: list[RawManifest], offset: int) -> None:
        repo = LayoutRepository(tmp_path / "l")  # separate object, as another process would
        try:
            for n, m in enumerate(chunk):
                repo.put_manifest(m, tag=f"t{offset + n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(manifests[i : i + 6], i)) for i in range(0, 24, 6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    repo = LayoutRepository(tmp_path / "l")
    assert sorted(repo.list_tags()) == sorted(f"t{i}" for i in range(24))
    for i, m in enumerate(manifests):
        assert repo.get_manifest(f"t{i}").digest == m.digest


@contextmanager
def _index_lock_held_elsewhere(layout: Path) -> Iterator[None]:
    """The layout's index lock taken as another process would take it."""
    import fcntl

    fd = os.open(layout / "index.json.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _queued(layout: Path) -> int:
    from conveyor.oci import layout as module

    group = module._group_of(layout.resolve())
    with group.guard:
        return len(group.queue)


def test_writes_queued_while_the_lock_is_held_share_one_index_json_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.oci import layout as module

    LayoutRepository(tmp_path / "l", create=True)
    rewrites: list[int] = []
    original = module._atomic_write

    def counted(path: Path, data: object) -> os.stat_result:
        if path.name == "index.json":
            rewrites.append(1)
        return original(path, data)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_atomic_write", counted)
    manifests = [_valid_manifest(i) for i in range(10)]
    errors: list[BaseException] = []

    def put(n: int) -> None:
        try:
            LayoutRepository(tmp_path / "l").put_manifest(manifests[n], tag=f"t{n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with _index_lock_held_elsewhere(tmp_path / "l"):
        threads = [threading.Thread(target=put, args=(n,)) for n in range(10)]
        for t in threads:
            t.start()
        # The first writer waits for the lock; the nine others queue behind it.
        for _ in range(500):
            if _queued(tmp_path / "l") == 9:
                break
            threading.Event().wait(0.01)
        assert _queued(tmp_path / "l") == 9
    for t in threads:
        t.join()
    assert errors == []
    assert len(rewrites) == 2  # the first writer's, then one for the nine queued
    (tmp_path / "l" / "index.json.sqlite").unlink()  # what index.json itself says
    repo = LayoutRepository(tmp_path / "l")
    assert {tag: repo.get_manifest(tag).digest for tag in repo.list_tags()} == {
        f"t{n}": m.digest for n, m in enumerate(manifests)
    }


def test_a_refused_write_in_a_batch_fails_only_its_writer(tmp_path: Path) -> None:
    from conveyor.oci.referrers import attestation_manifest, fallback_tag

    repo = LayoutRepository(tmp_path / "l", create=True)
    subject = _valid_manifest(99)
    repo.put_manifest(subject)
    referrer = attestation_manifest(subject, b"{}", "p", created="2026-12-01T00:00:00Z")
    not_an_index = _valid_manifest(98)
    manifests = [_valid_manifest(i) for i in range(6)]
    errors: dict[str, BaseException] = {}

    def run(name: str, write: Callable[[LayoutRepository], None]) -> threading.Thread:
        def target() -> None:
            try:
                write(LayoutRepository(tmp_path / "l"))
            except BaseException as exc:
                errors[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    def tag(n: int) -> Callable[[LayoutRepository], None]:
        return lambda r: r.put_manifest(manifests[n], tag=f"t{n}")

    def wait_for(queued: int) -> None:
        for _ in range(500):
            if _queued(tmp_path / "l") == queued and _leading(tmp_path / "l"):
                return
            threading.Event().wait(0.01)
        raise AssertionError(f"{queued} writes never queued")

    with _index_lock_held_elsewhere(tmp_path / "l"):
        threads = [run("t0", tag(0))]  # leads, waits for the lock
        wait_for(0)
        # Queued in this order: the subject's fallback tag is made to name an image
        # manifest, then the attach (which found no fallback index before queuing) meets it.
        threads.append(
            run("tag", lambda r: r.put_manifest(not_an_index, tag=fallback_tag(subject.digest)))
        )
        wait_for(1)
        threads.append(run("attach", lambda r: r.attach_referrers([referrer])))
        wait_for(2)
        threads += [run(f"t{n}", tag(n)) for n in range(1, 6)]
        wait_for(7)
    for t in threads:
        t.join()
    assert list(errors) == ["attach"]
    assert isinstance(errors["attach"], ManifestError)
    repo = LayoutRepository(tmp_path / "l")
    for n, m in enumerate(manifests):
        assert repo.get_manifest(f"t{n}").digest == m.digest
    assert repo.get_manifest(fallback_tag(subject.digest)).digest == not_an_index.digest
    listed = {e["digest"] for e in _index(tmp_path / "l")["manifests"]}  # type: ignore[union-attr]
    assert str(referrer.digest) not in listed  # nothing of the refused write is left


def _leading(layout: Path) -> bool:
    from conveyor.oci import layout as module

    group = module._group_of(layout.resolve())
    with group.guard:
        return group.leading


def test_a_reader_between_a_writers_rename_and_its_commit_waits_rather_than_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With many readers on a busy layout, each one that looked in that window rebuilt the
    # whole cache (parsing index.json, reading every untagged manifest).
    from conveyor.oci import layout as module

    LayoutRepository(tmp_path / "l", create=True).put_manifest(_valid_manifest(0), tag="a")
    renamed, go = threading.Event(), threading.Event()
    set_meta = module._set_meta

    def paused(db: object, key: str, value: str) -> None:
        if key == "lines" and threading.current_thread().name == "writer":
            renamed.set()  # index.json is renamed; the cache's stamp is not committed yet
            go.wait(10)
        set_meta(db, key, value)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_set_meta", paused)
    rebuilds: list[int] = []
    rebuild = LayoutRepository._rebuild

    def counted(self: LayoutRepository, db: object) -> object:
        rebuilds.append(1)
        return rebuild(self, db)  # type: ignore[arg-type]

    monkeypatch.setattr(LayoutRepository, "_rebuild", counted)
    reader = LayoutRepository(tmp_path / "l")
    new = _valid_manifest(1)
    writer = threading.Thread(
        target=lambda: LayoutRepository(tmp_path / "l").put_manifest(new, tag="b"), name="writer"
    )
    writer.start()
    assert renamed.wait(10)
    seen: dict[str, list[str]] = {}
    looking = threading.Thread(target=lambda: seen.update(tags=reader.list_tags()))
    looking.start()
    looking.join(0.3)
    assert looking.is_alive()  # it waits for the writer's commit
    go.set()
    writer.join(10)
    looking.join(10)
    assert seen["tags"] == ["a", "b"]
    assert rebuilds == []


def test_manifest_over_limit_is_refused(tmp_path: Path) -> None:
    repo = LayoutRepository(tmp_path / "l", create=True)
    big = b'{"schemaVersion":2,"pad":"' + b"a" * (4 * 1024 * 1024) + b'"}'
    digest = _digest(big)
    repo.write_blob(digest, len(big), [big])
    with pytest.raises(ManifestError, match="limit"):
        repo.get_manifest(digest)
    with pytest.raises(ManifestError, match="limit"):
        repo.put_manifest(RawManifest(big, OCI_MANIFEST, digest), tag="big")


def test_manifest_media_type_disagreeing_with_index_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l")
    index = _index(img.layout)
    index["manifests"][0]["mediaType"] = OCI_INDEX  # type: ignore[index]
    (img.layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ManifestError, match="ambiguous"):
        LayoutRepository(img.layout).get_manifest("latest")


def test_duplicate_tag_pointing_two_ways_is_refused(tmp_path: Path) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    other = build_image(tmp_path / "l", tag=None, write_index_entry=False)
    index = _index(img.layout)
    entries = index["manifests"]
    assert isinstance(entries, list)
    entries.append({**entries[0], "digest": other.digest})
    (img.layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(StorageError, match="refusing to guess"):
        LayoutRepository(img.layout).get_manifest("v1")


def test_mount_blob_hard_links_between_layouts(tmp_path: Path) -> None:
    img = build_image(tmp_path / "a", layer_sizes=(10_000,))
    source = LayoutRepository(img.layout)
    dest = LayoutRepository(tmp_path / "b", create=True)
    for digest in img.blobs:
        d = Digest.parse(digest)
        assert dest.mount_blob(d, source)
        assert dest.blob_size(d) == img.blobs[digest]
        assert os.path.samefile(_blob_path(img.layout, d), _blob_path(tmp_path / "b", d))
    missing = _digest(b"nothing")
    assert not dest.mount_blob(missing, source)


def test_mount_blob_refuses_corrupt_source(tmp_path: Path) -> None:
    img = build_image(tmp_path / "a", layer_sizes=(10_000,))
    layer = next(Digest.parse(d) for d, s in img.blobs.items() if s > 10_000)
    path = _blob_path(img.layout, layer)
    path.write_bytes(b"tampered" + path.read_bytes()[8:])
    dest = LayoutRepository(tmp_path / "b", create=True)
    assert not dest.mount_blob(layer, LayoutRepository(img.layout))
    assert dest.blob_size(layer) is None


# --- files other users can read (issue 10 #5) ------------------------------------------


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_files_follow_the_process_umask(
    tmp_path: Path, umask: int, file_mode: int, dir_mode: int
) -> None:
    old = os.umask(umask)
    try:
        repo = LayoutRepository(tmp_path / "l", create=True)
        m = _valid_manifest(1)
        blob = b"layer bytes"
        repo.write_blob(_digest(blob), len(blob), [blob])
        repo.put_manifest(m, tag="v1")
    finally:
        os.umask(old)
    layout = tmp_path / "l"
    files = [layout / "oci-layout", layout / "index.json", _blob_path(layout, _digest(blob))]
    files.append(_blob_path(layout, m.digest))
    for path in files:
        assert path.stat().st_mode & 0o777 == file_mode, path
    for path in (layout, layout / "blobs", layout / "blobs" / "sha256"):
        assert path.stat().st_mode & 0o777 == dir_mode, path


# --- cost: index.json parsed once per version, no walk over manifests (issue 11) -----


def _index_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import conveyor.oci.layout as layout_module

    parsed: list[str] = []
    real = layout_module._load_json

    def counting(raw: bytes, *, where: str) -> object:
        if where.endswith("index.json"):
            parsed.append(where)
        return real(raw, where=where)

    monkeypatch.setattr(layout_module, "_load_json", counting)
    return parsed


def test_index_json_is_parsed_once_per_version_not_per_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    parsed = _index_parses(monkeypatch)
    # Each step opens the layout afresh, as one conveyor command after another would.
    LayoutRepository(img.layout).get_manifest("v1")
    assert len(parsed) == 1  # written by another tool: read and checked once
    for n in range(5):
        repo = LayoutRepository(img.layout)
        repo.put_manifest(_valid_manifest(n), tag=f"t{n}")
        assert repo.get_manifest(f"t{n}").digest == _valid_manifest(n).digest
        assert repo.get_manifest("v1").digest == Digest.parse(img.digest)
    assert sorted(LayoutRepository(img.layout).list_tags()) == sorted(
        ["v1", *(f"t{n}" for n in range(5))]
    )
    assert len(parsed) == 1
    # What we wrote is what skopeo and umoci read: a plain, valid index.json.
    index = _index(img.layout)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    assert [e["annotations"][REF_NAME_ANNOTATION] for e in index["manifests"]] == [  # type: ignore[index]
        "v1",
        *(f"t{n}" for n in range(5)),
    ]


def test_a_write_reads_no_other_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = build_index(tmp_path / "l", tag="multi")
    repo = LayoutRepository(src.layout)
    top = repo.get_manifest("multi")
    for n in range(20):  # twenty listed indexes: the old write parsed every one of them
        repo.put_manifest(top, tag=f"multi-{n}")
    reads: list[Digest] = []
    real = LayoutRepository._read_manifest_blob

    def counting(self: LayoutRepository, digest: Digest) -> bytes:
        reads.append(digest)
        return real(self, digest)

    monkeypatch.setattr(LayoutRepository, "_read_manifest_blob", counting)
    fresh = LayoutRepository(src.layout)
    fresh.put_manifest(_valid_manifest(7), tag="new")
    fresh.put_manifest(_valid_manifest(8))
    assert reads == []
    # A child of a listed index is still kept off the top level.
    child = Digest.parse(json.loads(top.data)["manifests"][0]["digest"])
    fresh.put_manifest(fresh.get_manifest(child))
    assert str(child) not in [e["digest"] for e in _index(src.layout)["manifests"]]  # type: ignore[attr-defined]


def _replace_index(layout: Path, index: dict[str, object], *, in_place: bool) -> None:
    text = json.dumps(index)
    if in_place:
        (layout / "index.json").write_text(text)
    else:
        (layout / "index.json.new").write_text(text)
        (layout / "index.json.new").replace(layout / "index.json")


@pytest.mark.parametrize("in_place", [False, True])
def test_a_change_made_by_another_tool_is_seen(tmp_path: Path, in_place: bool) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    repo = LayoutRepository(img.layout)
    repo.put_manifest(_valid_manifest(1), tag="ours")
    other = build_image(tmp_path / "l", tag=None, write_index_entry=False)
    index = _index(img.layout)
    entries = index["manifests"]
    assert isinstance(entries, list)
    entries.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": other.digest,
            "size": _blob_path(img.layout, Digest.parse(other.digest)).stat().st_size,
            "annotations": {REF_NAME_ANNOTATION: "theirs"},
        }
    )
    _replace_index(img.layout, index, in_place=in_place)
    for reader in (repo, LayoutRepository(img.layout)):
        assert str(reader.get_manifest("theirs").digest) == other.digest
        assert sorted(reader.list_tags()) == ["ours", "theirs", "v1"]
    # and our next write keeps their entry
    repo.put_manifest(_valid_manifest(2), tag="ours-2")
    assert sorted(LayoutRepository(img.layout).list_tags()) == ["ours", "ours-2", "theirs", "v1"]


def test_a_crash_between_index_json_and_its_cache_leaves_nothing_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conveyor.oci.layout as layout_module

    repo = LayoutRepository(tmp_path / "l", create=True)
    repo.put_manifest(_valid_manifest(1), tag="v1")
    real = layout_module._set_meta

    def crash(db: object, key: str, value: str) -> None:
        if key == "identity":
            raise KeyboardInterrupt("killed after index.json was renamed")
        real(db, key, value)  # type: ignore[arg-type]

    monkeypatch.setattr(layout_module, "_set_meta", crash)
    with pytest.raises(KeyboardInterrupt):
        repo.put_manifest(_valid_manifest(2), tag="v1")
    monkeypatch.setattr(layout_module, "_set_meta", real)
    assert _index(tmp_path / "l")["manifests"][0]["digest"] == str(_valid_manifest(2).digest)  # type: ignore[index]
    for reader in (repo, LayoutRepository(tmp_path / "l")):
        assert reader.get_manifest("v1").digest == _valid_manifest(2).digest


@pytest.mark.parametrize("damage", ["garbage", "empty", "symlink", "directory"])
def test_a_damaged_cache_is_rebuilt_or_bypassed(tmp_path: Path, damage: str) -> None:
    img = build_image(tmp_path / "l", tag="v1")
    LayoutRepository(img.layout).put_manifest(_valid_manifest(1), tag="t1")
    cache = img.layout / "index.json.sqlite"
    outside = tmp_path / "outside"
    outside.write_bytes(b"not yours")
    cache.unlink()
    if damage == "garbage":
        cache.write_bytes(os.urandom(4096))
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "symlink":
        cache.symlink_to(outside)
    else:
        cache.mkdir()
    repo = LayoutRepository(img.layout)
    assert repo.get_manifest("t1").digest == _valid_manifest(1).digest
    repo.put_manifest(_valid_manifest(2), tag="t2")
    assert sorted(LayoutRepository(img.layout).list_tags()) == ["t1", "t2", "v1"]
    assert outside.read_bytes() == b"not yours"


def test_a_cache_naming_a_bad_ref_is_refused_like_index_json(tmp_path: Path) -> None:
    import sqlite3

    repo = LayoutRepository(tmp_path / "l", create=True)
    repo.put_manifest(_valid_manifest(1), tag="v1")
    repo.close()
    with sqlite3.connect(tmp_path / "l" / "index.json.sqlite") as db:
        db.execute("UPDATE entries SET digest = 'sha256:../../etc/passwd'")
    with pytest.raises(StorageError, match="invalid digest"):
        LayoutRepository(tmp_path / "l").get_manifest("v1")


def test_index_json_written_line_by_line_matches_a_full_rewrite(tmp_path: Path) -> None:
    """Many puts, tag moves, untagged puts and referrers: the index.json we update in place
    of rebuilding lists exactly what a model of the operations says, in order."""
    import random

    from conveyor.oci.referrers import attach_referrer, fallback_tag
    from tests.support.attesters import referrer_for

    rng = random.Random(11)
    repo = LayoutRepository(tmp_path / "l", create=True)
    model: list[dict[str, object]] = []  # the entries index.json must hold, in order
    manifests = [_valid_manifest(n) for n in range(12)]

    def put(m: RawManifest, tag: str | None) -> None:
        if tag is None:
            if not any(e["digest"] == str(m.digest) for e in model):
                model.append(
                    {"mediaType": OCI_MANIFEST, "digest": str(m.digest), "size": len(m.data)}
                )
        else:
            wanted = {
                "mediaType": OCI_MANIFEST,
                "digest": str(m.digest),
                "size": len(m.data),
                "annotations": {REF_NAME_ANNOTATION: tag},
            }
            replaced = [
                e
                for e in model
                if e.get("annotations", {}).get(REF_NAME_ANNOTATION) == tag  # type: ignore[attr-defined]
                or (e["digest"] == str(m.digest) and "annotations" not in e)
            ]
            if replaced == [wanted]:  # already so: left where it is, nothing written
                LayoutRepository(tmp_path / "l").put_manifest(m, tag=tag)
                return
            model[:] = [
                e
                for e in model
                if e.get("annotations", {}).get(REF_NAME_ANNOTATION) != tag  # type: ignore[attr-defined]
                and not (e["digest"] == str(m.digest) and "annotations" not in e)
            ]
            model.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": str(m.digest),
                    "size": len(m.data),
                    "annotations": {REF_NAME_ANNOTATION: tag},
                }
            )
        LayoutRepository(tmp_path / "l").put_manifest(m, tag=tag)

    for step in range(60):
        m = rng.choice(manifests)
        kind = rng.random()
        if kind < 0.2:
            put(m, None)
        elif kind < 0.85:
            put(m, f"t{rng.randrange(8)}")
        else:  # a referrer: its tag index moves, the referrer stays off the top level
            tagged = [
                e
                for e in model
                if "annotations" in e
                and not str(e["annotations"][REF_NAME_ANNOTATION]).startswith("sha256-")
            ]  # type: ignore[index]
            if not tagged:
                continue
            subject = repo.get_manifest(str(tagged[0]["annotations"][REF_NAME_ANNOTATION]))  # type: ignore[index]
            attach_referrer(repo, referrer_for(repo, subject, f"r{step}"))
            tag = fallback_tag(subject.digest)
            index_entry = next(
                e
                for e in _index(tmp_path / "l")["manifests"]  # type: ignore[attr-defined]
                if e.get("annotations", {}).get(REF_NAME_ANNOTATION) == tag
            )
            model[:] = [
                e for e in model if e.get("annotations", {}).get(REF_NAME_ANNOTATION) != tag
            ]  # type: ignore[attr-defined]
            model.append(index_entry)
        assert _index(tmp_path / "l")["manifests"] == model, step
    # A reader that starts from index.json alone sees the same.
    (tmp_path / "l" / "index.json.sqlite").unlink()
    fresh = LayoutRepository(tmp_path / "l")
    tags = [e["annotations"][REF_NAME_ANNOTATION] for e in model if "annotations" in e]  # type: ignore[index]
    assert fresh.list_tags() == tags


_PUTTER = """
import json, sys
from pathlib import Path
from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.store import RawManifest
path, offset = Path(sys.argv[1]), int(sys.argv[2])
for n in range(offset, offset + 400):
    config = json.dumps({"n": n}).encode()
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": str(Digest.of(config)), "size": len(config)}, "layers": []}
    data = json.dumps(doc).encode()
    repo = LayoutRepository(path)
    repo.put_manifest(RawManifest(data, doc["mediaType"], Digest.of(data)), tag=f"t{n % 50}")
    print(n, flush=True)
"""


def test_a_writer_killed_at_any_moment_leaves_a_consistent_layout(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    LayoutRepository(tmp_path / "l", create=True)
    root = Path(__file__).resolve().parents[2]
    rng = random.Random(5)
    for round_ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _PUTTER, str(tmp_path / "l"), str(round_ * 1000)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(root / "src")},
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # it has started writing
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # What index.json says, read without any cache, is what conveyor says.
        index = json.loads((tmp_path / "l" / "index.json").read_text())
        truth = {e["annotations"][REF_NAME_ANNOTATION]: e["digest"] for e in index["manifests"]}
        for reader in (LayoutRepository(tmp_path / "l"), LayoutRepository(tmp_path / "l")):
            assert sorted(reader.list_tags()) == sorted(truth)
            for tag, digest in truth.items():
                assert str(reader.get_manifest(tag).digest) == digest
