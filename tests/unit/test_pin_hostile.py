"""Hostile input: each bad file gets one clear error, is never rewritten, and the run goes on
with the other files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conveyor.configs.pin import apply, plan
from tests.unit._pin_support import ASSETS, FakeResolver

ALIAS_BOMB = (
    "apiVersion: v1\nkind: Pod\nmetadata: {name: bomb}\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "spec:\n  containers:\n  - name: a\n    image: nginx:1.25\n"
)
PYTHON_TAG = (
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
    "spec:\n  containers:\n  - name: a\n    image: nginx:1.25\n"
    "  x: !!python/object/apply:os.system ['touch /tmp/conveyor-pwned']\n"
)
INVALID_UTF8 = (
    b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
    b"spec:\n  containers:\n  - name: a\xff\xfe\n    image: nginx:1.25\n"
)
DUPLICATE_KEYS = (
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
    "spec:\n  containers:\n  - name: a\n    image: nginx:1.25\n    image: busybox:1.36\n"
)
BROKEN = "apiVersion: v1\nkind: Pod\nspec:\n  containers: [\n    image: nginx:1.25\n"
SELF_MERGE = (
    "apiVersion: v1\nkind: Pod\nmetadata: &m\n  name: p\n  <<: *m\n"
    "spec:\n  containers:\n  - name: a\n    image: nginx:1.25\n"
)
DEEP = "apiVersion: v1\nkind: Pod\nspec: " + "[" * 50_000 + "]" * 50_000 + "\n"


def _big_file(path: Path) -> None:
    # 50 MB of a valid-looking manifest: refused for its size, never parsed.
    head = "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n"
    item = "  - name: a\n    image: nginx:1.25\n"
    with path.open("w") as handle:
        handle.write(head)
        chunk = item * 10_000
        written = len(head)
        while written < 50 * 1024 * 1024:
            handle.write(chunk)
            written += len(chunk)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("alias-bomb.yaml", ALIAS_BOMB, "alias"),
        ("python-tag.yaml", PYTHON_TAG, "tag"),
        ("invalid-utf8.yaml", INVALID_UTF8, "UTF-8"),
        ("duplicate.yaml", DUPLICATE_KEYS, "duplicate"),
        ("broken.yaml", BROKEN, "YAML"),
        # Before: "more than 200049 YAML nodes (an alias bomb?)" with no line.
        ("self-merge.yaml", SELF_MERGE, "self-merge.yaml:3:11: a mapping or list includes itself"),
        ("deep.yaml", DEEP, "deep.yaml:3:1006: invalid YAML: exceeded maximum nesting depth"),
        ("big.yaml", None, "limit"),
    ],
)
def test_hostile_file_fails_alone(
    tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    bad = tmp_path / name
    if content is None:
        _big_file(bad)
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    original = bad.read_bytes()
    good = tmp_path / "z-good.yaml"
    shutil.copyfile(ASSETS / "kubernetes" / "before.yaml", good)

    report = plan([tmp_path], FakeResolver())
    apply(report)

    by_name = {r.path.name: r for r in report.files}
    failed = by_name[name]
    assert failed.error is not None
    assert message.lower() in failed.error.lower()
    assert "\n" not in failed.error
    assert str(bad) in failed.error  # names the file
    assert failed.exit_code == 2
    assert not failed.written
    assert bad.read_bytes() == original
    assert by_name["z-good.yaml"].written
    assert good.read_bytes() == (ASSETS / "kubernetes" / "after.yaml").read_bytes()
    assert report.exit_code == 2
    assert not Path("/tmp/conveyor-pwned").exists()


def test_file_changed_on_disk_while_pinning_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "deploy.yaml"
    shutil.copyfile(ASSETS / "kubernetes" / "before.yaml", target)
    report = plan([target], FakeResolver())
    target.write_text(target.read_text() + "# edited meanwhile\n")
    edited = target.read_bytes()
    apply(report)
    assert report.files[0].error is not None
    assert "changed on disk" in report.files[0].error
    assert target.read_bytes() == edited


def test_symlink_is_kept_and_its_target_rewritten(tmp_path: Path) -> None:
    real = tmp_path / "real" / "deploy.yaml"
    real.parent.mkdir()
    shutil.copyfile(ASSETS / "kubernetes" / "before.yaml", real)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    apply(plan([link], FakeResolver()))
    assert link.is_symlink()
    assert real.read_bytes() == (ASSETS / "kubernetes" / "after.yaml").read_bytes()


def test_unreadable_folder_entries_do_not_stop_the_run(tmp_path: Path) -> None:
    good = tmp_path / "deploy.yaml"
    shutil.copyfile(ASSETS / "kubernetes" / "before.yaml", good)
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "missing.yaml")
    report = plan([tmp_path], FakeResolver())
    apply(report)
    assert good.read_bytes() == (ASSETS / "kubernetes" / "after.yaml").read_bytes()
    dangling = [r for r in report.files if r.path.name == "dangling.yaml"]
    assert all(r.error is not None and "cannot read" in r.error for r in dangling)
