"""Making ``ImageSite`` values from YAML nodes and script words (shared by the extractors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conveyor.configs import yamlio
from conveyor.configs.shell import ScriptReference
from conveyor.configs.sites import ImageSite, Location, is_dynamic
from conveyor.configs.yamlio import Node, Scalar


@dataclass
class SiteBuilder:
    path: Path
    display_path: str
    kind: str
    lines: list[str]

    def scalar(
        self,
        node: Node,
        location: Location | None,
        *,
        role: str,
        via: str | None = None,
    ) -> ImageSite | None:
        """A site for a scalar that holds a whole reference (None for an empty or null value)."""
        found = yamlio.scalar(node)
        if found is None or not found.text.strip():
            return None
        reference = found.text.strip()
        line, column = found.line, found.column
        if found.style in ("|", ">"):
            # A block scalar starts at its indicator; the text is on the lines below.
            line, column = locate_in_script(self.lines, found, 0, reference.split("\n", 1)[0])
        return ImageSite(
            path=self.path,
            display_path=self.display_path,
            line=line,
            column=column,
            kind=self.kind,
            reference=reference,
            role=role,
            location=location,
            form="scalar",
            dynamic=is_dynamic(reference),
            via=via,
        )

    def split(
        self,
        anchor: Node,
        reference: str,
        parent: Location | None,
        *,
        form: str,
        role: str = "deploy",
        anchor_key: str | None = None,
    ) -> ImageSite:
        """A site for a reference spread over keys (Helm ``image:``, kustomize ``images:``)."""
        line, column = yamlio.position(anchor)
        found = yamlio.scalar(anchor)
        if found is not None:
            line, column = found.line, found.column
        location = (*parent, anchor_key) if parent is not None and anchor_key else None
        return ImageSite(
            path=self.path,
            display_path=self.display_path,
            line=line,
            column=column,
            kind=self.kind,
            reference=reference,
            role=role,
            location=location,
            form=form,
            dynamic=is_dynamic(reference),
            parent=parent,
        )

    def line_site(
        self, line: int, column: int, reference: str, *, role: str, via: str
    ) -> ImageSite:
        return ImageSite(
            path=self.path,
            display_path=self.display_path,
            line=line,
            column=column,
            kind=self.kind,
            reference=reference,
            role=role,
            location=None,
            form="line",
            dynamic=is_dynamic(reference),
            via=via,
        )

    def script_sites(self, script: Scalar, found: list[ScriptReference]) -> list[ImageSite]:
        """Sites for references found in a script held by the YAML scalar ``script``."""
        sites = []
        for item in found:
            line, column = self.locate_in_script(script, item.offset, item.locate)
            sites.append(self.line_site(line, column, item.reference, role=item.role, via=item.via))
        return sites

    def locate_in_script(self, script: Scalar, offset: int, needle: str) -> tuple[int, int]:
        return locate_in_script(self.lines, script, offset, needle)


def locate_in_script(lines: list[str], script: Scalar, offset: int, needle: str) -> tuple[int, int]:
    """1-based line and column in the file of ``needle``, written near ``offset`` of the
    script held by the scalar ``script``. Literal blocks map line by line; other styles are
    searched from the scalar's first line."""
    first = script.line
    if script.style == "|":
        first = script.line + 1 + script.text.count("\n", 0, offset)
        exact = _literal_column(lines, script, offset, first)
        if exact is not None and lines[first - 1][exact - 1 :].startswith(needle):
            return first, exact
    last = max(script.end_line, first)
    for number in range(max(first, 1), min(last, len(lines)) + 1):
        at = lines[number - 1].find(needle) if needle else -1
        if at >= 0:
            return number, at + 1
    return max(script.line, 1), script.column


def _literal_column(lines: list[str], script: Scalar, offset: int, line: int) -> int | None:
    """The column of script ``offset`` in a literal block: the block's indentation (that of
    its first non-blank line) plus the offset within the script line."""
    if not 0 < line <= len(lines):
        return None
    for number in range(script.line + 1, min(script.end_line, len(lines)) + 1):
        text = lines[number - 1]
        if text.strip():
            indent = len(text) - len(text.lstrip(" "))
            return indent + offset - (script.text.rfind("\n", 0, offset) + 1) + 1
    return None
