"""One entry point: read a config file's kind and the image references it names.

``analyse`` parses the file once and keeps what the lint rules need besides the sites (the
workflow's jobs and steps); ``extract_sites`` is the sites alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from conveyor.configs import (
    compose,
    dockerfile,
    github_actions,
    gitlab_ci,
    helm,
    kubernetes,
    kustomize,
    shell,
    yamlio,
)
from conveyor.configs.builder import SiteBuilder
from conveyor.configs.files import detect_kind
from conveyor.configs.sites import ImageSite
from conveyor.configs.yamlio import Scalar

_YAML_EXTRACTORS = {
    "kubernetes": kubernetes.extract,
    "helm-values": helm.extract,
    "kustomize": kustomize.extract,
    "compose": compose.extract,
    "gitlab-ci": gitlab_ci.extract,
}


@dataclass
class ParsedFile:
    path: Path
    display_path: str
    kind: str | None
    lines: list[str]
    sites: list[ImageSite] = field(default_factory=list)
    workflow: github_actions.Workflow | None = None
    # Builds and deploy commands of a plain shell script (kind "shell").
    script: shell.ScriptInfo | None = None


def analyse(path: Path, text: str, *, display_path: str, kind: str | None = None) -> ParsedFile:
    """Parse ``text`` (read from ``path``) once. Raises ``ConfigFileError`` for YAML conveyor
    refuses (invalid, hostile); a file of no known kind gives no sites."""
    kind = kind or detect_kind(path, text)
    lines = text.splitlines()
    parsed = ParsedFile(path=path, display_path=display_path, kind=kind, lines=lines)
    if kind is None:
        return parsed
    builder = SiteBuilder(path=path, display_path=display_path, kind=kind, lines=lines)
    if kind == "dockerfile":
        parsed.sites = dockerfile.extract(builder, text)
        return parsed
    if kind == "shell":
        parsed.script = shell.analyse(text)
        whole = Scalar(text=text, line=0, column=1, end_line=len(lines), style="|")
        parsed.sites = builder.script_sites(whole, parsed.script.references)
        return parsed
    documents = yamlio.compose_documents(text, display_path)
    if kind == "github-actions":
        parsed.sites, parsed.workflow = github_actions.extract(builder, documents)
    else:
        parsed.sites = _YAML_EXTRACTORS[kind](builder, documents)
    return parsed


def extract_sites(
    path: Path, text: str, *, display_path: str, kind: str | None = None
) -> list[ImageSite]:
    """Every image reference in ``text`` (read from ``path``), in file order."""
    sites = analyse(path, text, display_path=display_path, kind=kind).sites
    return sorted(sites, key=lambda site: (site.line, site.column))
