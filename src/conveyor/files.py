"""Reading a file argument: a regular file of bounded size, or a one-line refusal.

Every file a user names (a report, a key, a checkpoint, a config) goes through
``read_bounded``. It opens without blocking (a FIFO with no writer must not hang us), checks
on the open descriptor that the file is a regular one (no FIFO, device such as
``/dev/zero``, socket or directory; checking the descriptor, not the path, leaves no window
to swap the file), refuses by size before reading when the size is known, and never reads
more than ``max_bytes + 1`` bytes, so a file that grows while we read cannot make us hold
more than the cap either.

Callers translate ``UnreadableFile`` into their own domain error (``EvidenceError``,
``KeyFileError``, ``ConfigFileError``) with the wording their users expect.
"""

from __future__ import annotations

import os
import stat

from conveyor.errors import InputError

__all__ = ["FileTooLarge", "UnreadableFile", "read_bounded"]

_CHUNK = 1024 * 1024
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class UnreadableFile(InputError):
    """A file argument that is missing, unreadable or not a regular file. ``reason`` is a
    short phrase without the path ("a named pipe (FIFO)", "No such file or directory")."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: cannot read it ({reason})")
        self.path = path
        self.reason = reason


class FileTooLarge(UnreadableFile):
    """A regular file larger than the cap; ``size`` is ``None`` when it grew while read."""

    def __init__(self, path: str, size: int | None, max_bytes: int) -> None:
        said = f"{size} bytes, " if size is not None else ""
        super().__init__(path, f"{said}larger than the {max_bytes}-byte limit")
        self.size = size
        self.max_bytes = max_bytes


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: str | os.PathLike[str], *, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Raises ``UnreadableFile`` (not a regular file, or an ``OSError``) or ``FileTooLarge``.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise UnreadableFile(name, exc.strerror or type(exc).__name__) from None
    try:
        try:
            info = os.fstat(fd)
        except OSError as exc:
            raise UnreadableFile(name, exc.strerror or type(exc).__name__) from None
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(name, _kind(info.st_mode))
        if info.st_size > max_bytes:
            raise FileTooLarge(name, info.st_size, max_bytes)
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            try:
                chunk = os.read(fd, min(remaining, _CHUNK))
            except OSError as exc:
                raise UnreadableFile(name, exc.strerror or type(exc).__name__) from None
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise FileTooLarge(name, None, max_bytes)
    return data
