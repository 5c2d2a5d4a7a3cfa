"""Precision and recall of CV001/CV002 over the shared corpus, against a ground truth built by
reading the files (tests/assets/lint/ground_truth.json; see its README)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from conveyor.configs.lint import lint

GROUND_TRUTH = Path(__file__).resolve().parents[1] / "assets" / "lint" / "ground_truth.json"
FOLDERS = ("workflows", "manifests")


def _key(file: str, line: int, rule: str, reference: str) -> tuple[str, int, str, str]:
    return (file, line, rule, reference.strip())


def test_cv001_cv002_precision_and_recall_on_the_corpus(corpus: Path) -> None:
    expected = Counter(
        _key(e["file"], e["line"], e["rule"], e["reference"])
        for e in json.loads(GROUND_TRUTH.read_text(encoding="utf-8"))["findings"]
    )
    report = lint([corpus / folder for folder in FOLDERS])
    assert report.errors == []
    assert report.files == 29
    found = Counter(
        _key(str(Path(f.file).relative_to(corpus).as_posix()), f.line, f.rule, f.reference)
        for f in report.findings
        if f.rule in ("CV001", "CV002") and f.severity == "error"
    )
    true_positives = sum((found & expected).values())
    precision = true_positives / max(sum(found.values()), 1)
    recall = true_positives / max(sum(expected.values()), 1)
    print(
        f"\nCV001/CV002 on the corpus: precision {precision:.3f}, recall {recall:.3f} "
        f"({true_positives} of {sum(expected.values())} expected, {sum(found.values())} found)"
    )
    missed = sorted(expected - found)
    extra = sorted(found - expected)
    assert precision >= 0.95, f"false positives: {extra}"
    assert recall >= 0.95, f"missed: {missed}"


def test_ground_truth_entries_point_at_their_reference(corpus: Path) -> None:
    # The data itself is checked against the files: each reference is written on its line.
    for entry in json.loads(GROUND_TRUTH.read_text(encoding="utf-8"))["findings"]:
        line = (corpus / entry["file"]).read_text(encoding="utf-8").splitlines()[entry["line"] - 1]
        # Split references (Helm, kustomize) are anchored at the line naming the repository.
        name = entry["reference"].rsplit(":", 1)[0]
        assert entry["reference"] in line or name in line, entry
