"""YAML for config files: a fast, position-keeping reader for lint, a round-trip one for pin.

``compose_documents`` uses libyaml's composer (PyYAML's C binding, ~50x faster than pure
Python) and returns the node graph: every node keeps its start line and column, scalars keep
their text as written (``1.10`` stays ``"1.10"``), and nothing is constructed, so no tag can
run code. ``load_documents`` returns ruamel round-trip documents for rewriting, after the
same checks. Both refuse, with a one-line ``ConfigFileError`` naming the file:

- explicit tags other than YAML's own (``!!python/object``, ``!Ref`` …);
- alias bombs: more than ``MAX_NODES`` nodes once aliases are expanded;
- duplicate mapping keys (which value would a tool use?);
- nesting deeper than libyaml's limit (1000 levels); the walks here are iterative;
- a collection that includes itself (``a: &a [*a]``, a mapping merging itself);
- (round trip) an impossible date such as ``2027-13-45``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml  # type: ignore[import-untyped]

from conveyor.configs.sites import ConfigFileError, Location

MAX_NODES = 200_000

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_DEFAULT_TAGS = {
    yaml.ScalarNode: "tag:yaml.org,2002:str",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
    yaml.MappingNode: "tag:yaml.org,2002:map",
}


class _Resolver:
    """Resolves no implicit types (every plain scalar stays text: lint reads text) and no
    path resolvers: a third of the parse time was PyYAML's generic resolver."""

    def resolve(self, kind: type, value: object, implicit: object) -> str:
        return _DEFAULT_TAGS[kind]

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


_CParser: Any = getattr(getattr(yaml, "cyaml", None), "CParser", None)
if _CParser is not None:

    class _FastLoader(_CParser, _Resolver):  # type: ignore[misc]
        pass

    _Loader: Any = _FastLoader
else:  # PyYAML without libyaml: slower, same results
    _Loader = yaml.BaseLoader
_STANDARD_TAGS = frozenset(
    "tag:yaml.org,2002:" + name
    for name in (
        "str",
        "int",
        "float",
        "bool",
        "null",
        "map",
        "seq",
        "timestamp",
        "merge",
        "binary",
        "omap",
        "set",
        "pairs",
        "value",
    )
)
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_KEY = "<<"

Node = Any  # yaml.Node: ScalarNode | SequenceNode | MappingNode


@dataclass(frozen=True)
class Scalar:
    """A scalar's text and where it starts (1-based line and column of its first character,
    inside quotes), and how far its source text runs (``end_line``, 1-based)."""

    text: str
    line: int
    column: int
    end_line: int
    style: str | None


def compose_documents(text: str, display_path: str) -> list[Node]:
    """The documents of ``text`` as checked libyaml nodes (an empty document is None)."""
    loader = _Loader(text)
    documents: list[Node] = []
    try:
        while loader.check_node():
            documents.append(loader.get_node())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{display_path}:{mark.line + 1}:{mark.column + 1}" if mark else display_path
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigFileError(f"{where}: invalid YAML: {problem}", path=display_path) from exc
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigFileError(f"{display_path}: invalid YAML: {first}", path=display_path) from exc
    except RecursionError as exc:  # only the pure-Python fallback composer recurses
        raise ConfigFileError(
            f"{display_path}: YAML nested too deeply; refusing it", path=display_path
        ) from exc
    finally:
        loader.dispose()
    checked = [None if _is_null(doc) else doc for doc in documents]
    if "*" in text:
        _no_cycles(checked, display_path)
    # Every node written takes at least two characters; beyond that, aliases multiply.
    _check(
        checked,
        display_path,
        MAX_NODES + len(text) // 2,
        tags="!" in text,
    )
    return checked


def _is_null(node: Node) -> bool:
    return (
        isinstance(node, yaml.ScalarNode)
        and not node.style
        and (node.tag == _NULL_TAG or node.value in _NULLS)
    )


def _check(documents: list[Node], display_path: str, limit: int, *, tags: bool) -> None:
    """Refuse explicit tags, duplicate keys and alias bombs. Scalars are only visited when
    the text has a '!' (a tag), collections always; the budget counts every visit, so
    aliases that multiply a subtree exhaust it."""
    budget = limit
    stack: list[Node] = [doc for doc in documents if doc is not None]
    mapping, sequence, scalar_class = yaml.MappingNode, yaml.SequenceNode, yaml.ScalarNode
    while stack:
        node = stack.pop()
        if tags and node.tag not in _STANDARD_TAGS:
            raise ConfigFileError(
                f"{_at(display_path, node)}: explicit YAML tag {node.tag!s} is not allowed in "
                "a config file; remove it",
                path=display_path,
            )
        kind = node.__class__
        if kind is scalar_class:
            continue
        children = node.value
        budget -= len(children) + 1
        if budget < 0:
            raise ConfigFileError(
                f"{display_path}: more than {limit} YAML nodes once aliases are expanded "
                "(an alias bomb?); refusing it",
                path=display_path,
            )
        if kind is mapping:
            if len(children) > 1:
                _no_duplicates(children, display_path)
            for key, value in children:
                if tags or key.__class__ is not scalar_class:
                    stack.append(key)
                if tags or value.__class__ is not scalar_class:
                    stack.append(value)
        elif kind is sequence:
            if tags:
                stack.extend(children)
            else:
                stack.extend(item for item in children if item.__class__ is not scalar_class)


def _no_cycles(documents: list[Node], display_path: str) -> None:
    """Refuse a collection that contains itself through an alias (``a: &a [*a]``, or a
    mapping merging itself): any walk of it would never end. Depth-first, iterative, each
    node once, so it costs no more than the document."""
    collection = (yaml.MappingNode, yaml.SequenceNode)
    state: dict[int, bool] = {}  # id -> True while on the current path, False when done

    def children(node: Node) -> Iterator[Node]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                yield key
                yield value
        else:
            yield from node.value

    for root in documents:
        if not isinstance(root, collection) or id(root) in state:
            continue
        state[id(root)] = True
        stack = [(root, children(root))]
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                state[id(node)] = False
                stack.pop()
                continue
            if not isinstance(child, collection):
                continue
            seen = state.get(id(child))
            if seen:
                raise ConfigFileError(
                    f"{_at(display_path, child)}: a mapping or list includes itself through "
                    "an alias or merge key; refusing it",
                    path=display_path,
                )
            if seen is None:
                state[id(child)] = True
                stack.append((child, children(child)))


def _no_duplicates(pairs: list[tuple[Node, Node]], display_path: str) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key.__class__ is yaml.ScalarNode and key.value != _MERGE_KEY:
            if key.value in seen:
                raise ConfigFileError(
                    f"{_at(display_path, key)}: duplicate key {key.value!r}; a tool would "
                    "silently use one of the values",
                    path=display_path,
                )
            seen.add(key.value)


def _at(display_path: str, node: Node) -> str:
    mark = node.start_mark
    return f"{display_path}:{mark.line + 1}:{mark.column + 1}"


# --- reading nodes ---------------------------------------------------------------------------


def is_mapping(node: Node) -> bool:
    return isinstance(node, yaml.MappingNode)


def is_sequence(node: Node) -> bool:
    return isinstance(node, yaml.SequenceNode)


def is_scalar(node: Node) -> bool:
    return isinstance(node, yaml.ScalarNode)


def entries(node: Node) -> Iterator[tuple[str, Node]]:
    """``(key, value)`` of a mapping with scalar keys, merge keys (``<<: *base``) expanded
    after the mapping's own keys (which win)."""
    if not isinstance(node, yaml.MappingNode):
        return
    own: set[str] = set()
    merged: list[Node] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        if key.value == _MERGE_KEY and not key.style:
            merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
            continue
        own.add(key.value)
        yield key.value, value
    for base in merged:
        for key_text, value in entries(base):
            if key_text not in own:
                own.add(key_text)
                yield key_text, value


def own_entries(node: Node) -> Iterator[tuple[str, Node]]:
    """``(key, value)`` written in this mapping itself (no merge keys): paths stay exact."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value != _MERGE_KEY:
            yield key.value, value


def get(node: Node, key: str) -> Node | None:
    for name, value in entries(node):
        if name == key:
            return value
    return None


def items(node: Node) -> list[Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def text(node: Node) -> str | None:
    """A scalar's text, or None for a null, a collection or nothing."""
    if not isinstance(node, yaml.ScalarNode) or _is_null(node):
        return None
    return str(node.value)


def scalar(node: Node) -> Scalar | None:
    value = text(node)
    if value is None:
        return None
    start = node.start_mark
    quoted = node.style in ("'", '"')
    return Scalar(
        text=value,
        line=start.line + 1,
        column=start.column + 1 + (1 if quoted else 0),
        end_line=node.end_mark.line + 1,
        style=node.style,
    )


def position(node: Node) -> tuple[int, int]:
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


# --- round trip (pin) ------------------------------------------------------------------------


def round_trip_yaml() -> Any:
    """A ruamel ``YAML`` set up to keep quotes and long lines as written."""
    from ruamel.yaml import YAML

    handler = YAML(typ="rt")
    handler.Constructor = _checked_constructor()
    handler.preserve_quotes = True
    handler.width = 1 << 16
    return handler


@functools.cache
def _checked_constructor() -> Any:
    """ruamel's round-trip constructor, with an impossible date (``2027-13-45``) a marked
    YAML error instead of a bare ValueError."""
    from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor

    class CheckedConstructor(RoundTripConstructor):
        def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
            try:
                return super().construct_yaml_timestamp(node, values)
            except ValueError as exc:
                raise ConstructorError(
                    None, None, f"invalid date {node.value!r}: {exc}", node.start_mark
                ) from exc

    CheckedConstructor.add_constructor(
        "tag:yaml.org,2002:timestamp", CheckedConstructor.construct_yaml_timestamp
    )
    return CheckedConstructor


def load_documents(text: str, display_path: str) -> list[Any]:
    """Round-trip documents of ``text`` (ruamel ``CommentedMap``/``CommentedSeq``), after the
    same hostile-input checks as ``compose_documents``. Locations from ``ImageSite`` index
    into this list (document first)."""
    compose_documents(text, display_path)
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return list(round_trip_yaml().load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{display_path}:{mark.line + 1}:{mark.column + 1}" if mark else display_path
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigFileError(f"{where}: {problem}", path=display_path) from exc
    except YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigFileError(f"{display_path}: invalid YAML: {first}", path=display_path) from exc


def follow(documents: list[Any], location: Location) -> Any:
    """The value at ``location`` in round-trip ``documents`` (KeyError/IndexError if gone)."""
    node: Any = documents
    for part in location:
        if isinstance(part, int):
            node = node[part]
        else:
            node = node[part] if part in node else _key_like(node, part)
    return node


def _key_like(mapping: Any, key: str) -> Any:
    # ruamel constructs keys (``1:`` is an int); locations hold the text.
    for candidate in mapping:
        if str(candidate) == key:
            return mapping[candidate]
    raise KeyError(key)
