"""Dockerfile images: what a build pulls (role ``base``), one site each.

- ``FROM image`` (``via="FROM"``); ``scratch`` and earlier stage names (``FROM build``,
  compared case-insensitively, as BuildKit does) are not images; ``--platform=…`` and
  ``AS name`` are skipped.
- ``COPY --from=image`` (``via="COPY --from"``) and ``RUN --mount=…,from=image``
  (``via="RUN --mount"``): an image unless it names an earlier stage or a stage index.
- Build arguments: ``FROM ${BASE}`` with a global ``ARG BASE=alpine:3.19`` (declared before
  the first ``FROM``) is the image ``alpine:3.19`` written on the ``ARG`` line: the site is
  there (``via="ARG"``), so lint judges the default and pin pins it. A reference that mixes
  text and arguments (``FROM ${REGISTRY}/app:${TAG}``) stays a dynamic site on its own line,
  with ``default`` holding what the defaults make of it; without a default it is only
  dynamic (a build argument decides it).

Instructions continue over lines ending in the escape character (``\\``, or the one the
``# escape=`` directive names); heredoc bodies (``RUN <<EOF``) are not instructions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from conveyor.configs.builder import SiteBuilder
from conveyor.configs.sites import ImageSite

_INSTRUCTION_RE = re.compile(r"^\s*([A-Za-z]+)(\s+|$)")
_ESCAPE_RE = re.compile(r"^#\s*escape\s*=\s*([\\`])\s*$", re.IGNORECASE)
_DIRECTIVE_RE = re.compile(r"^#\s*[A-Za-z]+\s*=")
_HEREDOC_RE = re.compile(r"<<-?\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")
_VARIABLE_RE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<fallback>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_ANY_VARIABLE_RE = re.compile(r"\$")
_STAGE_INDEX_RE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Instruction:
    keyword: str  # upper case
    first: int  # 1-based line of the keyword
    lines: list[tuple[int, str]]  # (line number, text) of every physical line
    body: str  # the arguments, continuations joined


@dataclass(frozen=True)
class _Argument:
    name: str
    default: str | None
    line: int
    column: int  # 1-based, of the default's first character


def extract(builder: SiteBuilder, text: str) -> list[ImageSite]:
    sites: list[ImageSite] = []
    stages: set[str] = set()
    global_args: dict[str, _Argument] = {}
    stage_args: dict[str, _Argument] = {}
    seen_from = False
    pinned_args: set[str] = set()  # ARG defaults already made a site (one site per ARG)
    for instruction in _instructions(builder.lines):
        keyword = instruction.keyword
        if keyword == "ARG":
            for argument in _arguments(instruction):
                if not seen_from:
                    global_args[argument.name] = argument
                elif argument.default is None and argument.name in global_args:
                    stage_args[argument.name] = global_args[argument.name]  # re-declared
                else:
                    stage_args[argument.name] = argument
        elif keyword == "FROM":
            seen_from = True
            stage_args = {}
            site = _from_site(builder, instruction, stages, global_args, pinned_args)
            if site is not None:
                sites.append(site)
        elif keyword == "COPY":
            for option, image in _options(instruction.body, "--from"):
                site = _site(builder, instruction, option, image, stages, stage_args, "COPY --from")
                if site is not None:
                    sites.append(site)
        elif keyword == "RUN":
            for option, mount in _options(instruction.body, "--mount"):
                source = _mount_source(mount)
                if source is not None:
                    site = _site(
                        builder, instruction, option, source, stages, stage_args, "RUN --mount"
                    )
                    if site is not None:
                        sites.append(site)
    return sites


def _instructions(lines: list[str]) -> list[_Instruction]:
    escape = "\\"
    found: list[_Instruction] = []
    number = 0
    in_directives = True
    while number < len(lines):
        line = lines[number]
        number += 1
        stripped = line.strip()
        if in_directives:
            match = _ESCAPE_RE.match(stripped)
            if match is not None:
                escape = match.group(1)
                continue
            if _DIRECTIVE_RE.match(stripped):
                continue
            in_directives = False
        if not stripped or stripped.startswith("#"):
            continue
        head = _INSTRUCTION_RE.match(line)
        if head is None:
            continue
        first = number
        physical = [(number, line)]
        body = line[head.end() :]
        continued = body.rstrip().endswith(escape)
        while continued and number < len(lines):
            following = lines[number]
            number += 1
            physical.append((number, following))
            if not following.strip() or following.strip().startswith("#"):
                continue  # comments and blank lines inside an instruction are dropped
            body = body.rstrip().removesuffix(escape) + " " + following
            continued = following.rstrip().endswith(escape)
        body = body.rstrip().removesuffix(escape) if continued else body
        heredocs = [match.group(2) for match in _HEREDOC_RE.finditer(body)]
        for terminator in heredocs:
            while number < len(lines):
                number += 1
                if lines[number - 1].strip() == terminator:
                    break
        found.append(_Instruction(head.group(1).upper(), first, physical, body))
    return found


def _words(body: str) -> list[str]:
    return body.split(" #", 1)[0].split()


def _locate(instruction: _Instruction, needle: str, after: int = 0) -> tuple[int, int]:
    """1-based line and column of ``needle`` in the instruction's physical lines (on the
    first line, searched from column ``after``)."""
    for index, (number, line) in enumerate(instruction.lines):
        at = line.find(needle, after if index == 0 else 0)
        if at >= 0:
            return number, at + 1
    return instruction.first, 1


def _arguments(instruction: _Instruction) -> list[_Argument]:
    arguments = []
    for word in _words(instruction.body):
        name, equals, value = word.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        if not equals:
            arguments.append(_Argument(name, None, instruction.first, 1))
            continue
        unquoted = value[1:-1] if len(value) >= 2 and value[0] == value[-1] in "\"'" else value
        line, column = _locate(instruction, word)
        offset = len(name) + 1 + (1 if unquoted != value else 0)
        arguments.append(_Argument(name, unquoted or None, line, column + offset))
    return arguments


def _options(body: str, name: str) -> list[tuple[str, str]]:
    """``(option as written, value)`` of each leading ``--name=value`` flag."""
    found = []
    for word in _words(body):
        if not word.startswith("--"):
            break  # flags come first; the rest is the command or the sources
        option, equals, value = word.partition("=")
        if option.lower() == name and equals:
            found.append((word, value.strip("\"'")))
    return found


def _mount_source(mount: str) -> str | None:
    for part in mount.split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == "from" and value.strip():
            return value.strip().strip("\"'")
    return None


def _from_site(
    builder: SiteBuilder,
    instruction: _Instruction,
    stages: set[str],
    arguments: dict[str, _Argument],
    pinned_args: set[str],
) -> ImageSite | None:
    words = _words(instruction.body)
    image = next((word for word in words if not word.startswith("--")), None)
    if image is None:
        return None
    rest = words[words.index(image) + 1 :]
    if len(rest) >= 2 and rest[0].lower() == "as":
        stages.add(rest[1].lower())
    if image.lower() == "scratch" or image.lower() in stages:
        return None
    whole = _VARIABLE_RE.fullmatch(image)
    if whole is not None:
        name = whole.group("braced") or whole.group("plain")
        argument = arguments.get(name)
        if (
            argument is not None
            and argument.default
            and not _ANY_VARIABLE_RE.search(argument.default)
        ):
            if argument.default.lower() == "scratch" or argument.default.lower() in stages:
                return None  # FROM ${VARIANT} naming a stage is not an image
            if name in pinned_args:
                return None  # the same ARG default, already a site
            pinned_args.add(name)
            return builder.line_site(
                argument.line, argument.column, argument.default, role="base", via="ARG"
            )
    line, column = _locate(instruction, image, _keyword_end(instruction))
    site = builder.line_site(line, column, image, role="base", via="FROM")
    return _with_default(site, image, arguments)


def _site(
    builder: SiteBuilder,
    instruction: _Instruction,
    option: str,
    image: str,
    stages: set[str],
    arguments: dict[str, _Argument],
    via: str,
) -> ImageSite | None:
    if image.lower() in stages or _STAGE_INDEX_RE.fullmatch(image):
        return None
    line, column = _locate(instruction, option, _keyword_end(instruction))
    column += max(option.find(image), 0)
    site = builder.line_site(line, column, image, role="base", via=via)
    return _with_default(site, image, arguments)


def _keyword_end(instruction: _Instruction) -> int:
    head = _INSTRUCTION_RE.match(instruction.lines[0][1])
    return head.end() if head else 0


def _with_default(site: ImageSite, image: str, arguments: dict[str, _Argument]) -> ImageSite:
    """``site`` with ``default``: ``image`` with each argument replaced by its default, when
    every one has a default (``${NAME:-word}`` uses ``word`` when NAME has none)."""
    if "$" not in image:
        return site
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group("braced") or match.group("plain")
        argument = arguments.get(name)
        if argument is not None and argument.default:
            return argument.default
        if match.group("fallback"):
            return str(match.group("fallback"))
        missing = True
        return ""

    resolved = _VARIABLE_RE.sub(value, image)
    if missing or "$" in resolved:
        return site
    return replace(site, default=resolved)
