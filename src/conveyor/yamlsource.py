"""Read a YAML file into plain Python data that remembers where each value came from.

Used for conveyor's own config files, whose every problem is reported with file and line.
Hostile input is refused with a one-line ``ConfigError``: explicit tags (``!!python/object``),
alias bombs (a node budget), oversized files, invalid UTF-8 and duplicate keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_NODES = 100_000

Location = tuple[str | int, ...]


@dataclass
class YamlDocument:
    path: Path
    data: Any
    positions: dict[Location, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Sequence[str | int]) -> str:
        """``file:line:column`` (1-based) of ``loc``, or of its nearest located ancestor."""
        key: Location = tuple(loc)
        while key not in self.positions and key:
            key = key[:-1]
        line, column = self.positions.get(key, (0, 0))
        return f"{self.path}:{line + 1}:{column + 1}"


def load_yaml(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> YamlDocument:
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes} bytes; refusing to parse it")
    return parse_yaml(raw, path=path)


def parse_yaml(raw: bytes, *, path: Path) -> YamlDocument:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{at}: {problem}") from exc
    except YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    document = YamlDocument(path=path, data=None)
    budget = [MAX_NODES]
    document.data = _plain(tree, (), document, budget)
    return document


def _plain(node: Any, loc: Location, doc: YamlDocument, budget: list[int]) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{doc.path}: more than {MAX_NODES} values (an alias bomb?); refusing")
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, TaggedScalar) or (
        tag is not None and not str(tag).startswith("tag:yaml.org,2002:")
    ):
        raise ConfigError(f"{doc.where(loc)}: explicit YAML tag {tag!s} is not allowed")
    if tag is not None and str(tag).startswith("tag:yaml.org,2002:python"):
        raise ConfigError(f"{doc.where(loc)}: explicit YAML tag {tag!s} is not allowed")
    if isinstance(node, CommentedMap):
        result: dict[str, Any] = {}
        for key in node:
            if not isinstance(key, str | int | bool) or isinstance(key, float):
                raise ConfigError(f"{doc.where(loc)}: mapping keys must be plain scalars")
            line_col = node.lc.key(key)
            child_loc = (*loc, str(key))
            if line_col is not None:
                doc.positions[child_loc] = (int(line_col[0]), int(line_col[1]))
            result[str(key)] = _plain(node[key], child_loc, doc, budget)
        return result
    if isinstance(node, CommentedSeq):
        items = []
        for index, item in enumerate(node):
            line_col = node.lc.item(index)
            child_loc = (*loc, index)
            if line_col is not None:
                doc.positions[child_loc] = (int(line_col[0]), int(line_col[1]))
            items.append(_plain(item, child_loc, doc, budget))
        return items
    if isinstance(node, Mapping | Sequence) and not isinstance(node, str):
        raise ConfigError(f"{doc.where(loc)}: unsupported YAML node")
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{doc.where(loc)}: non-finite number")
    if isinstance(node, str):
        return str(node)  # drop ruamel's scalar string subclasses
    return node
