"""Read a YAML file into plain Python data that remembers where each value came from.

Used for conveyor's own config files, whose every problem is reported with file and line.
The file is composed by libyaml (PyYAML's C binding: fast, and it refuses nesting deeper than
1000 levels in microseconds) and the node graph is turned into data here, so that each
hostile shape becomes a one-line ``ConfigError`` with ``file:line:column``:

- explicit tags other than ``!!str``/``!!int``/``!!float``/``!!bool``/``!!null``/
  ``!!timestamp``/``!!map``/``!!seq`` (``!!python/object``, ``!!set``, ``!Ref`` …);
- alias bombs (a node budget) and aliases or merge keys that include themselves;
- nesting deeper than ``MAX_DEPTH`` (conveyor.yaml is a few levels deep);
- duplicate keys, non-scalar keys, oversized files, invalid UTF-8;
- values that look like a date or a number but are none (``2027-13-45``), non-finite numbers.

Plain scalars are typed by the YAML 1.2 core schema (``yes`` and ``16:00`` stay text, as they
did with ruamel), plus YAML timestamps; merge keys (``<<: *base``) are expanded, the mapping's
own keys winning. The resolver is written here because PyYAML's is YAML 1.1 (``16:00`` would
be the number 960) and ruamel's composer recurses (50,000-deep nesting took seconds to end in
a RecursionError) and loses positions under merge keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from conveyor.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

Location = tuple[str | int, ...]

_PLAIN = "tag:conveyor.dev,2026:plain"  # a plain scalar, to be typed by the core schema
_YAML = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset(
    _YAML + name for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq")
)
_MERGE = "<<"

# YAML 1.2 core schema (spec 10.3.2), and the YAML timestamp type.
_NULL_RE = re.compile(r"(?:~|null|Null|NULL|)")
_TRUE_RE = re.compile(r"(?:true|True|TRUE)")
_FALSE_RE = re.compile(r"(?:false|False|FALSE)")
_INT_RE = re.compile(r"[-+]?[0-9]+")
_OCTAL_RE = re.compile(r"0o[0-7]+")
_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT_RE = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[Tt]|[ \t]+)([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]*))?(?:[ \t]*(Z|[-+][0-9]{1,2}(?::?[0-9]{2})?))?"
)


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


class _KeepTags:
    """No implicit typing while composing: plain scalars are marked, explicit tags kept."""

    def resolve(self, kind: type, value: object, implicit: object) -> str:
        if kind is yaml.ScalarNode:
            plain = isinstance(implicit, tuple) and bool(implicit[0])
            return _PLAIN if plain else _YAML + "str"
        return _YAML + ("seq" if kind is yaml.SequenceNode else "map")

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


# libyaml's parser when PyYAML has it; else the pure-Python one (slower; its recursion is
# caught below). Either way only the composer runs: no constructor, so no tag can run code.
_Parser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", None) or yaml.SafeLoader


class _Composer(_KeepTags, _Parser):  # type: ignore[misc]
    pass


def parse_yaml(raw: bytes, *, path: Path) -> YamlDocument:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    composer = _Composer(text)
    try:
        root = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigError(f"{at}: {problem}") from exc
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML: {first}") from exc
    except RecursionError as exc:  # only the pure-Python composer recurses
        raise ConfigError(f"{path}: YAML nested too deeply; refusing it") from exc
    finally:
        composer.dispose()
    document = YamlDocument(path=path, data=None)
    if root is not None:
        document.data = _Builder(document).value(root, (), 0)
    return document


class _Builder:
    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.budget = MAX_NODES
        self.open: set[int] = set()  # nodes being built: an alias to one includes itself

    def at(self, node: Any) -> str:
        mark = node.start_mark
        return f"{self.document.path}:{mark.line + 1}:{mark.column + 1}"

    def value(self, node: Any, loc: Location, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise ConfigError(
                f"{self.document.path}: more than {MAX_NODES} values (an alias bomb?); refusing"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{self.at(node)}: nested deeper than {MAX_DEPTH} levels; refusing")
        tag = str(node.tag)
        if tag != _PLAIN and tag not in _ALLOWED_TAGS:
            shown = "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag
            raise ConfigError(f"{self.at(node)}: explicit YAML tag {shown} is not allowed")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, tag)
        if id(node) in self.open:
            raise ConfigError(f"{self.at(node)}: an alias includes itself; refusing")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, loc, depth)
            return self.mapping(node, loc, depth)
        finally:
            self.open.discard(id(node))

    def sequence(self, node: Any, loc: Location, depth: int) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            self.document.positions[child] = _position(item)
            items.append(self.value(item, child, depth + 1))
        return items

    def mapping(self, node: Any, loc: Location, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in self.pairs(node, depth):
            name = key.value
            if name in result:
                raise ConfigError(f"{self.at(key)}: duplicate key {name!r}")
            child = (*loc, name)
            self.document.positions[child] = _position(key)
            result[name] = self.value(value, child, depth + 1)
        return result

    def pairs(self, node: Any, depth: int) -> list[tuple[Any, Any]]:
        """The mapping's own pairs, then those merged in by ``<<`` that it does not set."""
        own: list[tuple[Any, Any]] = []
        merged: list[Any] = []
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or str(key.tag) not in (_PLAIN, _YAML + "str"):
                raise ConfigError(f"{self.at(key)}: mapping keys must be plain scalars")
            if key.value == _MERGE and key.tag == _PLAIN:
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                if not all(isinstance(source, yaml.MappingNode) for source in sources):
                    raise ConfigError(f"{self.at(value)}: '<<' merges mappings only")
                merged.extend(sources)
                continue
            own.append((key, value))
        if not merged:
            return own
        names = {key.value for key, _ in own}
        result = list(own)
        for source in merged:
            if id(source) in self.open:
                raise ConfigError(f"{self.at(source)}: a merge key ('<<') includes itself")
            if depth > MAX_DEPTH:
                raise ConfigError(f"{self.at(source)}: merge keys nested too deeply; refusing")
            self.budget -= len(source.value)
            if self.budget < 0:
                raise ConfigError(
                    f"{self.document.path}: more than {MAX_NODES} values (an alias bomb?)"
                )
            self.open.add(id(source))
            try:
                inherited = self.pairs(source, depth + 1)
            finally:
                self.open.discard(id(source))
            for key, value in inherited:
                if key.value not in names:
                    names.add(key.value)
                    result.append((key, value))
        return result

    def scalar(self, node: Any, tag: str) -> Any:
        text = str(node.value)
        if tag == _YAML + "str":
            return text
        try:
            return _typed(text, tag)
        except ValueError as exc:
            raise ConfigError(f"{self.at(node)}: invalid value {text[:40]!r}: {exc}") from exc


def _position(node: Any) -> tuple[int, int]:
    mark = node.start_mark
    return int(mark.line), int(mark.column)


def _typed(text: str, tag: str) -> Any:
    """The value of a plain scalar (YAML 1.2 core schema, timestamps) or an explicitly
    tagged one; ValueError when the text is not what its tag or shape says."""
    plain = tag == _PLAIN
    if (plain or tag == _YAML + "null") and _NULL_RE.fullmatch(text):
        return None
    if plain or tag == _YAML + "bool":
        if _TRUE_RE.fullmatch(text):
            return True
        if _FALSE_RE.fullmatch(text):
            return False
    if plain or tag == _YAML + "int":
        if _INT_RE.fullmatch(text):
            return int(text, 10)
        if _OCTAL_RE.fullmatch(text):
            return int(text[2:], 8)
        if _HEX_RE.fullmatch(text):
            return int(text[2:], 16)
    if plain or tag == _YAML + "float":
        if _SPECIAL_FLOAT_RE.fullmatch(text):
            raise ValueError("not a finite number")
        if _FLOAT_RE.fullmatch(text):
            return float(text)
    if plain or tag == _YAML + "timestamp":
        moment = _timestamp(text)
        if moment is not None:
            return moment
    if plain:
        return text
    raise ValueError(f"not a valid !!{tag.removeprefix(_YAML)}")


def _timestamp(text: str) -> date | datetime | None:
    """A YAML timestamp; None when ``text`` does not have the shape of one."""
    found = _DATE_RE.fullmatch(text)
    if found is not None:
        return date(*(int(part) for part in found.groups()))
    found = _TIMESTAMP_RE.fullmatch(text)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    zone: timezone | None = None
    if offset == "Z":
        zone = UTC
    elif offset:
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = (digits[:-2], digits[-2:]) if len(digits) > 2 else (digits, "0")
        zone = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    return datetime(
        int(year),
        int(month),
        int(day),
        int(hour),
        int(minute),
        int(second),
        micro,
        tzinfo=zone,
    )
