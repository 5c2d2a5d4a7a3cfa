"""What the extractors find: one ``ImageSite`` per image reference written in a config file.

Lint and pin both work on sites: lint judges each reference, pin rewrites it in place, so a
site carries both the position a human reads (``line``/``column``) and the YAML path a
round-trip editor follows (``location``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import InputError

Location = tuple[str | int, ...]

KINDS = (
    "kubernetes",
    "helm-values",
    "kustomize",
    "compose",
    "github-actions",
    "gitlab-ci",
    "dockerfile",
    "shell",
)
ROLES = ("deploy", "base", "push", "service", "action")
FORMS = ("scalar", "helm-split", "kustomize", "line")

# ${{ expr }} (Actions), {{ .Values.x }} (Helm/Go templates), $VAR, ${VAR}, $(cmd): the value
# is only known when the file is rendered or run.
_DYNAMIC_RE = re.compile(r"\$\{\{|\{\{|\$[A-Za-z_{(]|<%")


class ConfigFileError(InputError):
    """A config file conveyor refuses to read (too big, not UTF-8, hostile or invalid YAML).

    The message is one line and names the file; ``path`` is the display path."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


def is_dynamic(text: str) -> bool:
    """True when ``text`` holds a template or variable whose value is decided at run time."""
    return _DYNAMIC_RE.search(text) is not None


@dataclass(frozen=True)
class ImageSite:
    """One image reference as written in a file.

    ``line``/``column`` are 1-based and point at the first character of the reference text
    (inside quotes); for split Helm values and kustomize entries they point at the
    ``repository``/``name`` value. ``location`` is the YAML path of the scalar holding the
    reference (document index first), ``parent`` the path of the mapping holding split keys;
    both are None for line-based kinds (Dockerfile, shell) and for commands in CI scripts.
    """

    path: Path
    display_path: str
    line: int
    column: int
    kind: str
    reference: str
    role: str
    location: Location | None
    form: str
    dynamic: bool
    parent: Location | None = None
    # How the reference is used when it is not a plain YAML value: "docker run",
    # "docker push", "kubectl set image", "helm --set", "build-push-action tags", "FROM".
    via: str | None = None
    # What a dynamic reference is when its variables keep their defaults (a Dockerfile
    # ``FROM ${REGISTRY}/app:${TAG}`` with ``ARG`` defaults); lint judges that, pin skips it.
    default: str | None = None
