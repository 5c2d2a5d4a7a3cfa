"""Surgical, round-trip edits of configuration text: only the reference changes.

The YAML is never re-dumped (a dump reflows long lines, re-indents sequences and drops
quirks). Every edit is a span of the original text replaced by new text: a reference
rewritten at the line and column the extraction found it, or one new ``digest:`` line
inserted into a mapping. Comments, key order, quoting, indentation, ``---`` separators,
CRLF line endings and the presence of a trailing newline are untouched because they are
never rewritten.

The YAML parser (libyaml's composer: nodes with start and end marks and their quoting
style, nothing constructed) is used only to *locate* keys inside a mapping and to *verify*
the result: the edited text is composed again and its tree must equal the original tree with
exactly the intended values substituted (``verify_yaml``), down to each scalar's text as
written, its tag and its quoting style.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.errors import InputError

__all__ = [
    "EditError",
    "KeyInsert",
    "TextEditor",
    "YamlSubstitution",
    "compose",
    "find_mapping",
    "find_node",
    "scalar_text",
    "set_mapping_value",
    "split_lines",
    "verify_yaml",
]

# A character that may appear inside an image reference; an occurrence of the reference text
# counts only when the characters around it are not of this kind.
_REFERENCE_CHAR = re.compile(r"[A-Za-z0-9._\-/:@+]")
# Line breaks as libyaml counts them (marks, hence ImageSite lines of YAML kinds), and as
# Python's str.splitlines does (the line-based extractors: Dockerfile, shell).
_LINE_BREAK = re.compile("\r\n|\r|\n|\x85|\u2028|\u2029")
_SPLITLINES_BREAK = re.compile("\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_COMMON_BREAK = re.compile("\r\n|\r|\n")
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


def split_lines(text: str, *, yaml: bool = True) -> list[str]:
    """Lines with their own line break kept, counted as YAML does (``yaml``) or as
    ``str.splitlines`` does; joining the result gives ``text`` back."""
    lines: list[str] = []
    start = 0
    for match in (_LINE_BREAK if yaml else _SPLITLINES_BREAK).finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines


def _line_break(line: str) -> str:
    if line.endswith("\r\n"):
        return "\r\n"
    if line and _SPLITLINES_BREAK.fullmatch(line[-1]):
        return line[-1]
    return ""


def dominant_line_break(text: str) -> str:
    match = _COMMON_BREAK.search(text)
    return match.group(0) if match else "\n"


class TextEditor:
    """Collects span edits against one text and applies them at once (non-overlapping)."""

    def __init__(self, text: str, *, what: str, yaml: bool = True) -> None:
        self.text = text
        self.what = what  # the file, for messages
        self.lines = split_lines(text, yaml=yaml)
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
        if span in self._spans:
            return  # the same edit twice: one anchored value reached through aliases
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
#
# Nodes are libyaml's composed nodes (``conveyor.configs.yamlio.compose_documents``): each
# keeps its start and end marks and its style, and nothing is constructed. Paths hold key
# *text* and sequence indexes, document index first (as ``ImageSite.location`` does).

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"


def compose(text: str, *, what: str) -> list[Any]:
    """The documents of ``text`` as checked libyaml nodes (hostile input refused)."""
    from conveyor.configs.yamlio import compose_documents

    return compose_documents(text, what)


def _is_mapping(node: Any) -> bool:
    return type(node).__name__ == "MappingNode"


def _is_sequence(node: Any) -> bool:
    return type(node).__name__ == "SequenceNode"


def _is_scalar(node: Any) -> bool:
    return type(node).__name__ == "ScalarNode"


def _pair(mapping: Any, key: str) -> tuple[Any, Any] | None:
    for key_node, value in mapping.value:
        if _is_scalar(key_node) and key_node.value == key:
            return key_node, value
    return None


def find_node(documents: Sequence[Any], path: Sequence[str | int], *, what: str) -> Any:
    """The node at ``path`` (document index first)."""
    if not path or not isinstance(path[0], int) or not 0 <= path[0] < len(documents):
        raise EditError(f"{what}: no YAML document at {list(path)!r}")
    node = documents[path[0]]
    for step in path[1:]:
        if _is_mapping(node):
            pair = _pair(node, str(step))
            node = pair[1] if pair is not None else None
        elif _is_sequence(node) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
        else:
            node = None
        if node is None:
            raise EditError(f"{what}: no YAML value at {list(path)!r}")
    return node


def find_mapping(documents: Sequence[Any], path: Sequence[str | int], *, what: str) -> Any:
    node = find_node(documents, path, what=what)
    if not _is_mapping(node):
        raise EditError(f"{what}: expected a mapping at {list(path)!r}")
    return node


def scalar_text(node: Any) -> str | None:
    """A string scalar's value (None for null, numbers' text is kept as written)."""
    if not _is_scalar(node) or node.tag == _NULL_TAG:
        return None
    return str(node.value)


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
    present = _pair(mapping, change.key)
    if present is not None:
        _replace_value(editor, present[0], present[1], change.value, what=what)
        return
    anchors = [
        pair for pair in mapping.value if _is_scalar(pair[0]) and pair[0].value in change.after
    ]
    if not anchors:
        raise EditError(f"{what}: no {' or '.join(change.after)} key to place {change.key} after")
    key_node, value_node = anchors[-1]
    line = key_node.start_mark.line + 1
    if not _is_scalar(value_node) or value_node.style in ("|", ">"):
        raise EditError(
            f"{what}:{line}: the value of {key_node.value} is not a one-line scalar; "
            f"add {change.key}: by hand"
        )
    end_line, end_column = value_node.end_mark.line + 1, value_node.end_mark.column + 1
    if mapping.flow_style:
        editor.insert_at(end_line, end_column, f", {change.key}: {change.value}")
        return
    if end_line != line:
        raise EditError(
            f"{what}:{line}: the value of {key_node.value} is not on its key's line; "
            f"add {change.key}: by hand"
        )
    for other, _ in mapping.value:
        if other is not key_node and other.start_mark.line + 1 == line:
            raise EditError(f"{what}:{line}: several keys on one line; add {change.key}: by hand")
    indent = " " * key_node.start_mark.column
    editor.insert_line_after(line, f"{indent}{change.key}: {change.value}")


def _replace_value(editor: TextEditor, key: Any, node: Any, value: str, *, what: str) -> None:
    """Replace the one-line scalar ``node`` (possibly empty or null), keeping its quotes."""
    line = key.end_mark.line + 1
    if not _is_scalar(node) or node.style in ("|", ">"):
        raise EditError(f"{what}:{line}: {key.value} is not a one-line scalar; set it by hand")
    empty = node.value == "" and node.style in (None, "")  # libyaml may tag it str
    if empty or (node.tag == _NULL_TAG and node.value in ("~", "null", "Null", "NULL")):
        # "digest:" (empty) or "digest: ~" / "null": the value (if any) follows the colon.
        body = editor.lines[line - 1].rstrip("\r\n")
        match = re.compile(r"[ \t]*:[ \t]*(~|null|Null|NULL)?").match(body, key.end_mark.column)
        if match is None:
            raise EditError(f"{what}:{line}: cannot find the value of {key.value}; set it by hand")
        if match.group(1):
            editor.replace_span(line, match.start(1) + 1, len(match.group(1)), value)
        else:
            gap = "" if body[match.end() - 1 : match.end()] in (" ", "\t") else " "
            editor.insert_at(line, match.end() + 1, gap + value)
        return
    start, end = node.start_mark, node.end_mark
    if start.line != end.line:
        raise EditError(f"{what}:{line}: {key.value} spans lines; set it by hand")
    quote = node.style if node.style in ("'", '"') else ""
    editor.replace_span(
        start.line + 1, start.column + 1, end.column - start.column, quote + value + quote
    )


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class YamlSubstitution:
    """What one edit means for the parsed tree: the scalar at ``path`` becomes ``value``
    (``key`` None), or the mapping at ``path`` gets ``key: value``."""

    path: tuple[str | int, ...]
    value: str
    key: str | None = None
    after: tuple[str, ...] = ()  # a new key goes right after the last of these present


# Comparable copies of node trees: ("s", tag, style, text) | ("m", [(k, v), …]) | ("q", […]).
_Plain = Any


def _plain(node: Any, budget: list[int], *, what: str) -> _Plain:
    budget[0] -= 1
    if budget[0] < 0:
        raise EditError(f"{what}: too many YAML values to verify (an alias bomb?)")
    if node is None:
        return None
    if _is_mapping(node):
        return [
            "m",
            [[_plain(k, budget, what=what), _plain(v, budget, what=what)] for k, v in node.value],
        ]
    if _is_sequence(node):
        return ["q", [_plain(item, budget, what=what) for item in node.value]]
    return ["s", node.tag, node.style or "", node.value]


def verify_yaml(
    before: str,
    after: str,
    substitutions: Iterable[YamlSubstitution],
    *,
    what: str,
    old_documents: Sequence[Any] | None = None,
) -> None:
    """Parse both texts; the new tree must equal the old tree with ``substitutions``
    applied, and nothing else changed: values as written, tags, quoting style, key order,
    number of documents. ``old_documents``: ``before`` already composed."""
    old_docs = list(old_documents) if old_documents is not None else compose(before, what=what)
    new_docs = compose(after, what=what)
    if len(old_docs) != len(new_docs):
        raise EditError(f"{what}: the number of YAML documents changed; nothing written")
    budget = [MAX_VERIFY_NODES]
    expected = [_plain(doc, budget, what=what) for doc in old_docs]
    for change in substitutions:
        _substitute(expected, change, what=what)
    got = [_plain(doc, budget, what=what) for doc in new_docs]
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want != have:
            raise EditError(
                f"{what}: document {index + 1} would change beyond the image references; "
                "nothing written (please report this file)"
            )


def _walk(documents: list[_Plain], path: Sequence[str | int], *, what: str) -> _Plain:
    if not path or not isinstance(path[0], int) or not 0 <= path[0] < len(documents):
        raise EditError(f"{what}: no YAML document at {list(path)!r}")
    node = documents[path[0]]
    for step in path[1:]:
        found = None
        if node is not None and node[0] == "m":
            found = next((v for k, v in node[1] if k[0] == "s" and k[3] == str(step)), None)
        elif node is not None and node[0] == "q" and isinstance(step, int):
            found = node[1][step] if 0 <= step < len(node[1]) else None
        if found is None:
            raise EditError(f"{what}: no YAML value at {list(path)!r}")
        node = found
    return node


def _substitute(documents: list[_Plain], change: YamlSubstitution, *, what: str) -> None:
    target = _walk(documents, change.path, what=what)
    if change.key is None:
        if target[0] != "s":
            raise EditError(f"{what}: expected a scalar at {list(change.path)!r}")
        target[1], target[3] = _STR_TAG, change.value  # same style: the edit keeps quotes
        return
    if target[0] != "m":
        raise EditError(f"{what}: expected a mapping at {list(change.path)!r}")
    pairs = target[1]
    for key, value in pairs:
        if key[0] == "s" and key[3] == change.key:
            style = value[2] if value[0] == "s" and value[1] == _STR_TAG else ""
            value[:] = ["s", _STR_TAG, style, change.value]
            return
    at = len(pairs)
    for index, (key, _) in enumerate(pairs):
        if key[0] == "s" and key[3] in change.after:
            at = index + 1
    pairs.insert(at, [["s", _STR_TAG, "", change.key], ["s", _STR_TAG, "", change.value]])
