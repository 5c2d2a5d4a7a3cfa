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
        return ImageSite(
            path=self.path,
            display_path=self.display_path,
            line=found.line,
            column=found.column,
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
        """1-based line and column in the file of ``needle``, written near ``offset`` of the
        script text. Literal blocks map line by line; other styles are searched."""
        first = script.line
        if script.style == "|":
            first = script.line + 1 + script.text.count("\n", 0, offset)
        last = max(script.end_line, first)
        for number in range(first, min(last, len(self.lines)) + 1):
            at = self.lines[number - 1].find(needle) if needle else -1
            if at >= 0:
                return number, at + 1
        return script.line, script.column
