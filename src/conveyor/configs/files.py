"""Finding config files under the paths a user names, and telling their kinds apart.

Kinds are recognised by name first (``Dockerfile``, ``kustomization.yaml``,
``.github/workflows/*.yml``, ``*values*.yaml``, ``*compose*.yml``, ``.gitlab-ci.yml``) and
then by content (``apiVersion``/``kind``, top-level ``jobs:`` + ``on:``, ``services:``), so a
renamed file is still read. Only a few regular expressions run over the text: the file is
parsed once, later, by the extractor of its kind.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from conveyor.configs.sites import ConfigFileError
from conveyor.files import FileTooLarge, UnreadableFile, read_bounded

MAX_FILE_BYTES = 10 * 1024 * 1024
SKIPPED_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "vendor", "third_party", ".venv", "venv", ".tox"}
)
_YAML_SUFFIXES = (".yaml", ".yml")

_WORKFLOW_ON_RE = re.compile(r"^(?:on|\"on\"|'on'|true)\s*:", re.MULTILINE)
_JOBS_RE = re.compile(r"^jobs\s*:", re.MULTILINE)
_SERVICES_RE = re.compile(r"^services\s*:", re.MULTILINE)
_API_VERSION_RE = re.compile(r"^\s*(?:-\s+)?apiVersion\s*:", re.MULTILINE)
_KIND_RE = re.compile(r"^\s*(?:-\s+)?kind\s*:\s*['\"]?(\w+)", re.MULTILINE)
_KUSTOMIZATION_RE = re.compile(r"^kind\s*:\s*['\"]?Kustomization\b", re.MULTILINE)
_GITLAB_RE = re.compile(r"^(?:stages|default|include|workflow|variables)\s*:", re.MULTILINE)
_GITLAB_JOB_RE = re.compile(r"^\s+(?:script|before_script)\s*:", re.MULTILINE)
_HELM_IMAGE_RE = re.compile(r"^\s*(?:image|repository)\s*:", re.MULTILINE)


def discover(paths: Sequence[Path], *, exclude: Sequence[str] = ()) -> Iterator[tuple[Path, str]]:
    """Yield ``(file, display path)`` for every candidate config file under ``paths``.

    A file named on the command line is always yielded; folders are walked in sorted order,
    skipping VCS and vendored folders. ``exclude`` holds glob patterns matched against the
    display path and the path relative to the folder given (``charts/**``, ``*.tmpl.yaml``).
    The display path is the argument as given joined with the relative path.
    """
    for given in paths:
        if given.is_dir():
            yield from _walk(given, exclude)
        elif not _excluded(str(given), PurePosixPath(given.as_posix()), exclude):
            yield given, str(given)


def _walk(root: Path, exclude: Sequence[str]) -> Iterator[tuple[Path, str]]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            relative = PurePosixPath(path.relative_to(root).as_posix())
            display = str(root / relative)
            if not is_candidate(relative) or _excluded(display, relative, exclude):
                continue
            yield path, display


def _excluded(display: str, relative: PurePosixPath, patterns: Sequence[str]) -> bool:
    if not patterns:
        return False
    texts = {display, relative.as_posix(), relative.name}
    parents = [parent.as_posix() for parent in relative.parents if parent.as_posix() != "."]
    for pattern in patterns:
        stripped = pattern.rstrip("/")
        for text in texts:
            if fnmatch.fnmatchcase(text, pattern) or fnmatch.fnmatchcase(text, stripped):
                return True
        if stripped.endswith("/**"):
            stripped = stripped[:-3]
        if any(fnmatch.fnmatchcase(parent, stripped) for parent in parents):
            return True
    return False


def is_candidate(relative: PurePosixPath) -> bool:
    """Names worth opening while walking a folder (a named file is always opened)."""
    name = relative.name
    return name.lower().endswith(_YAML_SUFFIXES) or _is_dockerfile_name(name)


def _is_dockerfile_name(name: str) -> bool:
    lower = name.lower()
    return (
        lower in ("dockerfile", "containerfile")
        or lower.startswith(("dockerfile.", "containerfile."))
        or lower.endswith((".dockerfile", ".containerfile"))
    )


def detect_kind(path: Path, text: str) -> str | None:
    """The kind of config ``text`` (read from ``path``) is, or None when it is none we read."""
    name = path.name
    lower = name.lower()
    if _is_dockerfile_name(name):
        return "dockerfile"
    if lower.endswith((".sh", ".bash")):
        return "shell"
    if not lower.endswith(_YAML_SUFFIXES):
        return None
    posix = path.as_posix()
    if lower in ("kustomization.yaml", "kustomization.yml") or _KUSTOMIZATION_RE.search(text):
        return "kustomize"
    if "/.github/workflows/" in f"/{posix}" or (
        _JOBS_RE.search(text) and _WORKFLOW_ON_RE.search(text)
    ):
        return "github-actions"
    if lower in (".gitlab-ci.yml", ".gitlab-ci.yaml") or (
        _GITLAB_RE.search(text) and _GITLAB_JOB_RE.search(text) and not _JOBS_RE.search(text)
    ):
        return "gitlab-ci"
    if "compose" in lower and _SERVICES_RE.search(text):
        return "compose"
    if _API_VERSION_RE.search(text) and _KIND_RE.search(text):
        return "kubernetes"
    if "values" in lower and _HELM_IMAGE_RE.search(text):
        return "helm-values"
    if _SERVICES_RE.search(text):
        return "compose"
    if _HELM_IMAGE_RE.search(text) and "/charts/" in f"/{posix}":
        return "helm-values"
    return None


def read_source(path: Path, *, max_bytes: int = MAX_FILE_BYTES, display: str | None = None) -> str:
    """The text of ``path``; ``ConfigFileError`` (one line, names the file) when it is too big,
    unreadable or not UTF-8. A UTF-8 byte order mark is dropped."""
    shown = display if display is not None else str(path)
    try:
        raw = read_bounded(path, max_bytes=max_bytes)
    except FileTooLarge as exc:
        size = f"{exc.size} bytes, larger" if exc.size is not None else "larger"
        raise ConfigFileError(
            f"{shown}: {size} than the {max_bytes}-byte limit; not read", path=shown
        ) from exc
    except UnreadableFile as exc:
        raise ConfigFileError(f"{shown}: cannot read: {exc.reason}", path=shown) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigFileError(
            f"{shown}:{line}: not valid UTF-8 (byte offset {exc.start}); save the file as UTF-8",
            path=shown,
        ) from exc
    return text.removeprefix("\ufeff")
