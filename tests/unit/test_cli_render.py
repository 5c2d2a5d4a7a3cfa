"""``render.inspection`` writes plain lines off a terminal without importing Rich: they must
be exactly what Rich writes there, and anything Rich would change takes Rich's path."""

from __future__ import annotations

import pytest

from conveyor.cli import render
from conveyor.oci.digest import Digest
from conveyor.oci.inspect import ChildManifest, ImageInspection

DIGEST = Digest.parse("sha256:" + "ab" * 32)
LABELS = [
    {"git.commit": "0123abc", "org.opencontainers.image.title": "app"},
    {"empty": "", "trailing": "space ", "  lead": "x"},
    {"tab": "a\tb", "newline": "a\nb", "escape": "\x1b[31mred", "bell": "\x07", "cr": "a\rb"},
    {"unicode": "caf\u00e9 \u2603 \u5bbd\u5b57", "markup": "[bold]not markup[/bold]"},
]


def _inspection(labels: dict[str, str]) -> ImageInspection:
    return ImageInspection(
        name="registry.example/app",
        digest=DIGEST,
        media_type="application/vnd.oci.image.index.v1+json",
        platforms=["linux/amd64", "linux/arm64"],
        labels=labels,
        annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        created=None,
        total_size=123_456_789,
        labels_from="linux/amd64",
        children=[ChildManifest(DIGEST, "linux/amd64", 10)],
    )


@pytest.mark.parametrize("labels", LABELS, ids=["plain", "spaces", "controls", "unicode"])
def test_plain_lines_are_what_rich_writes(
    labels: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(render, "_consoles", {})
    render.inspection(_inspection(labels).to_dict())
    ours = capsys.readouterr().out
    monkeypatch.setattr(render, "_plain_stdout", lambda: False)
    render.inspection(_inspection(labels).to_dict())
    assert ours == capsys.readouterr().out
    assert ours.count("\n") >= 8


def test_forced_colour_takes_rich(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr(render, "_consoles", {})
    render.inspection(_inspection(LABELS[0]).to_dict())
    assert "\x1b[1m" in capsys.readouterr().out  # the keys in bold, as before
