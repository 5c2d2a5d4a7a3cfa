"""Surgical, round-trip edits of configuration text: only the reference changes.

The YAML is never re-dumped (a dump reflows long lines, re-indents sequences and drops
quirks). Every edit is a span of the original text replaced by new text: a reference
rewritten at the line and column the extraction found it, or one new ``digest:`` line
inserted into a mapping. Comments, key order, quoting, indentation, ``---`` separators,
CRLF line endings and the presence of a trailing newline are untouched because they are
never rewritten.

ruamel.yaml (round-trip mode) is used only to *locate* keys inside a mapping and to
*verify* the result: the edited text is parsed again and its tree must equal the original
tree with exactly the intended values substituted (``verify_yaml``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import InputError

__all__ = [
    "EditError",
    "KeyInsert",
    "TextEditor",
    "YamlSubstitution",
    "find_mapping",
    "load_yaml_documents",
    "mapping_key_position",
    "verify_yaml",
]

# A character that may appear inside an image reference; an occurrence of the reference text
# counts only when the characters around it are not of this kind.
_REFERENCE_CHAR = re.compile(r"[A-Za-z0-9._\-/:@+]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Walking a tree costs one step per node; an alias bomb that slipped through is refused.
MAX_VERIFY_NODES = 1_000_000
# How far below its key a multi-line scalar's reference text may start.
MAX_SCALAR_LINES = 3


class EditError(InputError):
    """The file cannot be edited in place safely; nothing is written."""


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    text: str


def split_lines(text: str) -> list[str]:
    """Lines with their own line break kept (``\\r\\n``, ``\\r`` or ``\\n``), as YAML counts
    them; joining the result gives ``text`` back."""
    lines: list[str] = []
    start = 0
    for match in _LINE_BREAK.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines


def _line_break(line: str) -> str:
    if line.endswith("\r\n"):
        return "\r\n"
    if line.endswith(("\r", "\n")):
        return line[-1]
    return ""


def dominant_line_break(text: str) -> str:
    match = _LINE_BREAK.search(text)
    return match.group(0) if match else "\n"


class TextEditor:
    """Collects span edits against one text and applies them at once (non-overlapping)."""

    def __init__(self, text: str, *, what: str) -> None:
        self.text = text
        self.what = what  # the file, for messages
        self.lines = split_lines(text)
        self._offsets: list[int] = []
        offset = 0
        for line in self.lines:
            self._offsets.append(offset)
            offset += len(line)
        self._spans: list[_Span] = []

    # --- locating ---------------------------------------------------------------------------

    def _line(self, line: int) -> str:
        if not 1 <= line <= len(self.lines):
            raise EditError(f"{self.what}:{line}: no such line; the file changed while pinning?")
        return self.lines[line - 1]

    def locate(self, line: int, column: int, old: str) -> int:
        """Offset in the text of ``old`` on ``line``, the occurrence nearest ``column``
        (1-based) whose neighbours are not reference characters. A block or multi-line
        scalar (``image: >-`` then the reference) starts on a line without the text: the next
        few lines are searched too (the YAML verification checks the result)."""
        last = min(line + MAX_SCALAR_LINES, len(self.lines))
        for number in range(line, last + 1):
            found = self._find_on_line(number, column if number == line else 1, old)
            if found is not None:
                return found
        raise EditError(
            f"{self.what}:{line}:{column}: cannot find {old!r} on that line to rewrite it "
            "in place; pin it by hand"
        )

    def _find_on_line(self, line: int, column: int, old: str) -> int | None:
        content = self._line(line)
        body = content[: len(content) - len(_line_break(content))]
        found: list[int] = []
        start = body.find(old)
        while start != -1:
            before = body[start - 1] if start > 0 else ""
            after = body[start + len(old)] if start + len(old) < len(body) else ""
            # "docker://" before a reference is a transport prefix, not part of the name.
            bounded_before = not before or not _REFERENCE_CHAR.fullmatch(before)
            if not bounded_before and body[:start].endswith("docker://"):
                bounded_before = True
            if bounded_before and (not after or not _REFERENCE_CHAR.fullmatch(after)):
                found.append(start)
            start = body.find(old, start + 1)
        if not found:
            return None
        best = min(found, key=lambda at: abs(at - (column - 1)))
        return self._offsets[line - 1] + best

    # --- edits --------------------------------------------------------------------------------

    def replace(self, line: int, column: int, old: str, new: str) -> None:
        """Rewrite the reference text ``old`` found on ``line`` near ``column`` to ``new``."""
        start = self.locate(line, column, old)
        self._add(_Span(start, start + len(old), new))

    def replace_span(self, line: int, column: int, length: int, new: str) -> None:
        """Rewrite exactly ``length`` characters at ``line``/``column`` (1-based)."""
        content = self._line(line)
        if column - 1 + length > len(content) - len(_line_break(content)):
            raise EditError(f"{self.what}:{line}:{column}: edit runs past the end of the line")
        start = self._offsets[line - 1] + column - 1
        self._add(_Span(start, start + length, new))

    def insert_line_after(self, line: int, content: str) -> None:
        """Insert ``content`` as a new line after ``line``, with the file's line break."""
        current = self._line(line)
        brk = _line_break(current)
        end = self._offsets[line - 1] + len(current)
        if brk:
            self._add(_Span(end, end, content + brk))
        else:  # the last line, without a trailing newline: keep it that way
            self._add(_Span(end, end, dominant_line_break(self.text) + content))

    def insert_at(self, line: int, column: int, text: str) -> None:
        content = self._line(line)
        if column - 1 > len(content) - len(_line_break(content)):
            raise EditError(f"{self.what}:{line}:{column}: insertion past the end of the line")
        start = self._offsets[line - 1] + column - 1
        self._add(_Span(start, start, text))

    def _add(self, span: _Span) -> None:
        for other in self._spans:
            overlap = span.start < other.end and other.start < span.end
            same_point = span.start == span.end == other.start == other.end
            if overlap or same_point:
                raise EditError(f"{self.what}: two edits touch the same text; pin it by hand")
        self._spans.append(span)

    @property
    def changed(self) -> bool:
        return bool(self._spans)

    def result(self) -> str:
        text = self.text
        for span in sorted(self._spans, key=lambda s: s.start, reverse=True):
            text = text[: span.start] + span.text + text[span.end :]
        return text


# --- YAML: locate keys, insert a key, verify -----------------------------------------------


def load_yaml_documents(text: str, *, what: str) -> list[Any]:
    """Every document of ``text`` as ruamel round-trip nodes (quotes preserved).

    Only for text the extraction layer already accepted (no tags, no alias bombs); the
    verification walk still has a node budget.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    try:
        return list(yaml.load_all(text))
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise EditError(f"{what}: cannot parse the YAML: {first}") from exc
    except (ValueError, TypeError, RecursionError) as exc:
        raise EditError(f"{what}: cannot parse the YAML: {type(exc).__name__}") from exc


def find_node(documents: Sequence[Any], path: Sequence[str | int], *, what: str) -> Any:
    """The node at ``path`` (document index first)."""
    if not path or not isinstance(path[0], int) or not 0 <= path[0] < len(documents):
        raise EditError(f"{what}: no YAML document at {list(path)!r}")
    node = documents[path[0]]
    for step in path[1:]:
        try:
            node = _child(node, step)
        except (KeyError, IndexError, TypeError) as exc:
            raise EditError(f"{what}: no YAML value at {list(path)!r}") from exc
    return node


def _child(node: Any, step: str | int) -> Any:
    """``node[step]``; a path holds key *text*, while YAML may have built an int or a bool."""
    if isinstance(node, Mapping) and step not in node:
        for key in node:
            if str(key) == str(step):
                return node[key]
    return node[step]


def find_mapping(documents: Sequence[Any], path: Sequence[str | int], *, what: str) -> Any:
    from ruamel.yaml.comments import CommentedMap

    node = find_node(documents, path, what=what)
    if not isinstance(node, CommentedMap):
        raise EditError(f"{what}: expected a mapping at {list(path)!r}")
    return node


def mapping_key_position(mapping: Any, key: str) -> tuple[int, int]:
    """1-based line and column of ``key`` in a ruamel mapping."""
    line0, column0 = mapping.lc.key(key)
    return int(line0) + 1, int(column0) + 1


def _value_position(mapping: Any, key: str) -> tuple[int, int]:
    line0, column0 = mapping.lc.value(key)
    return int(line0) + 1, int(column0) + 1


@dataclass(frozen=True)
class KeyInsert:
    """Set ``key: value`` in the mapping at ``parent``: replace an empty or present value of
    ``key`` in place, or insert a new key right after the last of ``after`` that exists."""

    parent: tuple[str | int, ...]
    key: str
    value: str
    after: tuple[str, ...]


def set_mapping_value(
    editor: TextEditor, documents: Sequence[Any], change: KeyInsert, *, what: str
) -> None:
    """Apply ``change`` as a text edit (see ``KeyInsert``)."""
    mapping = find_mapping(documents, change.parent, what=what)
    if change.key in mapping:
        _replace_value(editor, mapping, change.key, change.value, what=what)
        return
    anchors = [key for key in change.after if key in mapping]
    if not anchors:
        raise EditError(f"{what}: no {' or '.join(change.after)} key to place {change.key} after")
    anchor = max(anchors, key=lambda key: mapping_key_position(mapping, key))
    key_line, key_column = mapping_key_position(mapping, anchor)
    value_line, value_column = _value_position(mapping, anchor)
    if value_line != key_line:
        raise EditError(
            f"{what}:{key_line}: the value of {anchor} is not on its key's line; "
            f"add {change.key}: by hand"
        )
    if mapping.fa.flow_style():
        end = _flow_value_end(editor, value_line, value_column, what=what)
        editor.insert_at(value_line, end, f", {change.key}: {change.value}")
        return
    content = editor.lines[key_line - 1]
    stripped = content.rstrip("\r\n")
    raw_value = stripped[value_column - 1 :].lstrip()
    if raw_value[:1] in ("|", ">", "&", "*", "!", "[", "{"):
        raise EditError(
            f"{what}:{key_line}: the value of {anchor} is not a one-line scalar; "
            f"add {change.key}: by hand"
        )
    # Another key of the same mapping on the same line (flow-ish layouts): refuse.
    for other in mapping:
        if other != anchor and mapping_key_position(mapping, other)[0] == key_line:
            raise EditError(
                f"{what}:{key_line}: several keys on one line; add {change.key}: by hand"
            )
    editor.insert_line_after(key_line, " " * (key_column - 1) + f"{change.key}: {change.value}")


def _replace_value(editor: TextEditor, mapping: Any, key: str, value: str, *, what: str) -> None:
    """Replace the scalar value of ``key`` (possibly empty or null), keeping its quotes."""
    key_line, key_column = mapping_key_position(mapping, key)
    line = editor.lines[key_line - 1]
    body = line.rstrip("\r\n")
    current = mapping[key]
    if current is None:
        # "digest:" or "digest: ~" / "digest: null": the value (if any) follows the colon.
        match = re.compile(r"\s*:[ \t]*(~|null|Null|NULL)?").match(body, key_column - 1 + len(key))
        if match is None:
            raise EditError(f"{what}:{key_line}: cannot find the value of {key}; set it by hand")
        if match.group(1):
            start, length = match.start(1), len(match.group(1))
            editor.replace_span(key_line, start + 1, length, value)
        else:
            editor.insert_at(
                key_line, match.end() + 1, ("" if body[match.end() - 1] == " " else " ") + value
            )
        return
    if not isinstance(current, str):
        raise EditError(f"{what}:{key_line}: {key} is not a string; set it by hand")
    value_line, value_column = _value_position(mapping, key)
    vline = editor.lines[value_line - 1]
    quote = vline[value_column - 1 : value_column]
    if quote in ("'", '"'):
        if current == "":
            editor.replace_span(value_line, value_column, 2, quote + value + quote)
            return
        if "'" in current or '"' in current or "\\" in current:
            raise EditError(f"{what}:{value_line}: unusual {key} value; set it by hand")
        expected = quote + current + quote
        if vline[value_column - 1 : value_column - 1 + len(expected)] != expected:
            raise EditError(f"{what}:{value_line}: cannot find the value of {key}; set it by hand")
        editor.replace_span(value_line, value_column + 1, len(current), value)
        return
    if vline[value_column - 1 : value_column - 1 + len(current)] != current or not current:
        raise EditError(f"{what}:{value_line}: cannot find the value of {key}; set it by hand")
    editor.replace_span(value_line, value_column, len(current), value)


def _flow_value_end(editor: TextEditor, line: int, column: int, *, what: str) -> int:
    """1-based column just after a one-line scalar in a flow mapping."""
    body = editor.lines[line - 1].rstrip("\r\n")
    at = column - 1
    quote = body[at : at + 1]
    if quote in ("'", '"'):
        index = at + 1
        while index < len(body):
            char = body[index]
            if quote == '"' and char == "\\":
                index += 2
                continue
            if char == quote:
                if quote == "'" and body[index + 1 : index + 2] == "'":
                    index += 2
                    continue
                return index + 2
            index += 1
        raise EditError(f"{what}:{line}: unterminated quoted value; add the digest by hand")
    index = at
    while index < len(body) and body[index] not in ",}":
        index += 1
    while index > at and body[index - 1] in " \t":
        index -= 1
    if index == at or index >= len(body):
        raise EditError(f"{what}:{line}: cannot find the end of the value; add the digest by hand")
    return index + 1


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class YamlSubstitution:
    """What one edit means for the parsed tree: the scalar at ``path`` becomes ``value``
    (``key`` None), or the mapping at ``path`` gets ``key: value``."""

    path: tuple[str | int, ...]
    value: str
    key: str | None = None
    after: tuple[str, ...] = ()  # a new key goes right after the last of these present


def _plain(node: Any, budget: list[int], *, what: str) -> Any:
    """A comparable copy of a ruamel tree: mappings keep key order, strings keep their
    quoting style (ruamel's scalar string classes), numbers and booleans keep their type."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    budget[0] -= 1
    if budget[0] < 0:
        raise EditError(f"{what}: too many YAML values to verify (an alias bomb?)")
    if isinstance(node, CommentedMap | Mapping):
        return {key: _plain(value, budget, what=what) for key, value in node.items()}
    if isinstance(node, CommentedSeq | list | tuple):
        return [_plain(item, budget, what=what) for item in node]
    return node


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return ("map", tuple((_frozen(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("seq", tuple(_frozen(item) for item in value))
    if isinstance(value, str):
        return ("str", _quote_style(value), str(value))
    return (type(value).__name__, value)


def _quote_style(value: str) -> str:
    name = type(value).__name__
    if "SingleQuoted" in name:
        return "single"
    if "DoubleQuoted" in name:
        return "double"
    if "Literal" in name or "Folded" in name:
        return "block"
    return "plain"


def verify_yaml(
    before: str,
    after: str,
    substitutions: Iterable[YamlSubstitution],
    *,
    what: str,
    old_documents: Sequence[Any] | None = None,
) -> None:
    """Parse both texts; the new tree must equal the old tree with ``substitutions``
    applied, and nothing else changed (values, types, key order, quoting style).
    ``old_documents``: ``before`` already parsed (round trip, quotes preserved)."""
    old_docs = (
        list(old_documents) if old_documents is not None else load_yaml_documents(before, what=what)
    )
    new_docs = load_yaml_documents(after, what=what)
    if len(old_docs) != len(new_docs):
        raise EditError(f"{what}: the number of YAML documents changed; nothing written")
    budget = [MAX_VERIFY_NODES]
    expected = [_plain(doc, budget, what=what) for doc in old_docs]
    for change in substitutions:
        try:
            _substitute(expected, change, what=what)
        except (KeyError, IndexError, TypeError) as exc:
            raise EditError(f"{what}: no YAML value at {list(change.path)!r}") from exc
    got = [_plain(doc, budget, what=what) for doc in new_docs]
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if _frozen(want) != _frozen(have):
            raise EditError(
                f"{what}: document {index + 1} would change beyond the image references; "
                "nothing written (please report this file)"
            )


def _substitute(documents: list[Any], change: YamlSubstitution, *, what: str) -> None:
    path = change.path
    if not path or not isinstance(path[0], int) or not 0 <= path[0] < len(documents):
        raise EditError(f"{what}: no YAML document at {list(path)!r}")
    if change.key is not None:
        holder = documents[path[0]]
        for step in path[1:]:
            holder = _child(holder, step)
        if not isinstance(holder, dict):
            raise EditError(f"{what}: expected a mapping at {list(path)!r}")
        if change.key in holder:
            holder[change.key] = _same_style(holder[change.key], change.value)
            return
        present = [key for key in holder if key in change.after]
        items = list(holder.items())
        at = (
            max(index for index, (key, _) in enumerate(items) if key in present) + 1
            if present
            else len(items)
        )
        items.insert(at, (change.key, change.value))
        holder.clear()
        holder.update(items)
        return
    if len(path) == 1:
        documents[path[0]] = _same_style(documents[path[0]], change.value)
        return
    holder = documents[path[0]]
    for step in path[1:-1]:
        holder = _child(holder, step)
    last: Any = path[-1]
    if isinstance(holder, dict) and last not in holder:
        last = next((key for key in holder if str(key) == str(last)), last)
    holder[last] = _same_style(holder[last], change.value)


def _same_style(current: Any, value: str) -> Any:
    """``value`` typed like ``current`` (the edit keeps the quote style)."""
    if isinstance(current, str) and type(current) is not str:
        try:
            return type(current)(value)
        except TypeError:
            return value
    return value
