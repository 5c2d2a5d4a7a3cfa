"""The only CLI module that prints: plain lines, JSON, Rich tables and progress.

Rich is imported lazily (inside functions) so ``conveyor --help`` stays fast. Machine output
(references, JSON) goes to stdout; human summaries and progress go to stderr, so
``digest=$(conveyor resolve …)`` and ``conveyor copy … --json | jq`` just work.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.oci.digest import Digest
    from conveyor.service import CopyProgress, CopyResult

_consoles: dict[str, Console] = {}


def _console(stream: str = "stdout") -> Console:
    if stream not in _consoles:
        from rich.console import Console

        _consoles[stream] = Console(
            stderr=stream == "stderr", highlight=False, soft_wrap=True, emoji=False
        )
    return _consoles[stream]


def line(text: str) -> None:
    """One plain line on stdout (no markup, no wrapping)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def info(text: str) -> None:
    """One plain line on stderr, for humans."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def as_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def short_digest(digest: str) -> str:
    """``sha256:0123456789ab``: the algorithm and the first 12 hex digits."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def inspection(result: Mapping[str, Any]) -> None:
    """A readable summary of an image or index (``ImageInspection.to_dict()``, in both
    modes): one ``key  value`` line per fact."""
    size = int(result["total_size"])
    rows: list[tuple[str, str]] = [
        ("reference", str(result["reference"])),
        ("media type", str(result["media_type"])),
        ("platforms", ", ".join(result["platforms"]) or "-"),
        ("created", result["created"] or "-"),
        ("total size", f"{human_size(size)} ({size} bytes)"),
    ]
    if result.get("labels_from"):
        rows.append(("labels from", str(result["labels_from"])))
    rows += [("label", f"{key}={value}") for key, value in sorted(result["labels"].items())]
    rows += [("annotation", f"{k}={v}") for k, v in sorted(result["annotations"].items())]
    rows += [("manifest", f"{c['platform']}  {c['digest']}") for c in result["manifests"]]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
    if _plain_stdout() and all(text.isascii() and text.isprintable() for text in lines):
        # What Rich writes here too (no style off a terminal, nothing to sanitise), without
        # importing it.
        sys.stdout.write("".join(f"{text}\n" for text in lines))
        sys.stdout.flush()
        return
    from rich.text import Text

    console = _console()
    for key, value in rows:
        console.print(Text(key.ljust(width), style="bold") + Text("  " + value))


def _plain_stdout() -> bool:
    """Rich would write no escape codes to stdout: not a terminal, nor told it is one
    (``TTY_COMPATIBLE``, ``FORCE_COLOR``)."""
    if "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ:
        return False
    try:
        return not sys.stdout.isatty()
    except ValueError:  # closed
        return False


def copy_warnings(result: CopyResult) -> None:
    """What a peer tool may trip over in the copy (always on stderr, even with --quiet)."""
    for warning in result.warnings:
        info(f"conveyor: warning: {warning}")


def copy_summary(result: CopyResult, *, to_stdout: bool = False) -> None:
    """One human line about a copy: on stderr (stdout carries the reference) or stdout."""
    (line if to_stdout else info)(
        f"copied {result.blobs_copied} blob(s) ({human_size(result.bytes_transferred)}), "
        f"mounted {result.blobs_mounted}, skipped {result.blobs_skipped}, "
        f"{result.manifests} manifest(s) in {result.seconds:.2f} s"
    )


def note(text: str, *, style: str = "dim") -> None:
    from rich.text import Text

    _console().print(Text(text, style=style))


class _RichCopyProgress:
    """A byte progress bar fed from the copy's worker threads."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._task: Any = None
        self._blobs = 0
        self._done = 0
        self._lock = threading.Lock()

    def start(self, total_bytes: int, blobs: int) -> None:
        with self._lock:
            self._blobs = blobs
            self._task = self._progress.add_task(f"blobs 0/{blobs}", total=max(total_bytes, 1))

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=nbytes)

    def blob_done(self, digest: Digest, how: str) -> None:
        with self._lock:
            self._done += 1
            if self._task is not None:
                self._progress.update(self._task, description=f"blobs {self._done}/{self._blobs}")


@contextmanager
def copy_progress(enabled: bool) -> Iterator[CopyProgress | None]:
    """A Rich progress display on stderr when ``enabled`` (a terminal, not --quiet)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=_console("stderr"),
        transient=True,
    ) as progress:
        yield _RichCopyProgress(progress)
