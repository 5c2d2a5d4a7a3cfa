"""pin over the shared corpus of real third-party manifests and workflows (read-only: the
files are copied to a temp folder first).

The resolver answers every tag with a digest derived from the reference. Independently of
pin's own bookkeeping, the test checks each rewritten file line by line: a changed line
equals the old one once ``@sha256:…`` is removed, an inserted line is a ``digest:`` key, and
nothing else moves. Then the extraction reads every pinnable site back with a digest, and a
second run changes nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from conveyor.configs.extract import extract_sites
from conveyor.configs.files import detect_kind
from conveyor.configs.pin import DigestNotFound, Resolution, apply, plan
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference

_DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}")
_INSERTED_RE = re.compile(r"^\s*digest: sha256:[0-9a-f]{64}$")
_FLOW_INSERT_RE = re.compile(r", digest: sha256:[0-9a-f]{64}")


class AnyTag:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def pin(self, reference: Reference) -> Resolution:
        self.asked.append(str(reference))
        if reference.digest is not None:
            return Resolution(reference.digest, "present", reference.registry, "t")
        if reference.tag is None:
            raise DigestNotFound("no tag")
        digest = Digest.parse("sha256:" + hashlib.sha256(str(reference).encode()).hexdigest())
        return Resolution(digest, "registry", reference.registry, "t")


def _copy(corpus: Path, tmp_path: Path) -> Path:
    work = tmp_path / "corpus"
    for folder in ("manifests", "workflows"):
        shutil.copytree(corpus / folder, work / folder)
    return work


def _unpinned(text: str) -> str:
    return _FLOW_INSERT_RE.sub("", _DIGEST_RE.sub("", text))


def test_pin_changes_only_references_in_real_files(corpus: Path, tmp_path: Path) -> None:
    work = _copy(corpus, tmp_path)
    before = {p: p.read_text(encoding="utf-8") for p in sorted(work.rglob("*")) if p.is_file()}
    report = plan([work], AnyTag())
    apply(report)
    assert report.files, "the corpus should hold config files"
    for result in report.files:
        # A corpus file may fail only on a reference pin refuses to guess (implicit latest).
        assert result.error is None or "no tag" in result.error, result.error
    rewritten = 0
    for path, old in before.items():
        new = path.read_text(encoding="utf-8")
        if new == old:
            continue
        rewritten += 1
        old_lines = old.splitlines(keepends=True)
        new_lines = new.splitlines(keepends=True)
        matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
        for op, a1, a2, b1, b2 in matcher.get_opcodes():
            if op == "equal":
                continue
            if op == "insert":
                assert all(_INSERTED_RE.match(line.rstrip("\r\n")) for line in new_lines[b1:b2])
                continue
            assert op == "replace", (path.name, op, old_lines[a1:a2])
            assert a2 - a1 == b2 - b1, (path.name, old_lines[a1:a2], new_lines[b1:b2])
            for old_line, new_line in zip(old_lines[a1:a2], new_lines[b1:b2], strict=True):
                assert _unpinned(new_line) == _unpinned(old_line), (path.name, new_line)
                assert _DIGEST_RE.search(new_line) or _FLOW_INSERT_RE.search(new_line)
        # Line endings and the final newline are as they were.
        assert old.endswith("\n") == new.endswith("\n")
        assert ("\r\n" in old) == ("\r\n" in new)
    assert rewritten >= 8, f"only {rewritten} corpus files rewritten"

    # Read back: every site pin handles now names a digest.
    for result in report.files:
        if result.error is not None or result.kind is None:
            continue
        text = result.path.read_text(encoding="utf-8")
        kind = detect_kind(result.path, text)
        for site in extract_sites(result.path, text, display_path=str(result.path), kind=kind):
            handled = [s for s in result.sites if s.status in ("pinned", "repinned", "unchanged")]
            if (site.line, site.column) in {(s.line, s.column) for s in handled} or any(
                s.reference == site.reference for s in handled
            ):
                assert "@sha256:" in site.reference or site.form in ("helm-split", "kustomize")

    # Idempotent on real files.
    pinned = {p: p.read_bytes() for p in before}
    again = plan([work], AnyTag(), check=True)
    assert again.changed == []
    assert {p: p.read_bytes() for p in pinned} == pinned


@pytest.mark.parametrize("folder", ["manifests", "workflows"])
def test_check_reports_without_writing(corpus: Path, tmp_path: Path, folder: str) -> None:
    work = _copy(corpus, tmp_path)
    before = {p: p.read_bytes() for p in (work / folder).rglob("*") if p.is_file()}
    report = plan([work / folder], AnyTag(), check=True)
    assert {p: p.read_bytes() for p in before} == before
    assert report.changed
    assert report.exit_code >= 1
