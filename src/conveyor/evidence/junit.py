"""JUnit XML test reports → ``TestReport``: totals, suites, cases and the file's sha256.

One reader for the common dialects: a ``<testsuites>`` root or a bare ``<testsuite>``,
nested suites, pytest (with or without the ``name="pytest tests"`` root), Maven Surefire,
go-junit-report, gotestsum and jest-junit.

Counting rules (what the totals mean):

- Totals come from the ``<testcase>`` elements and the suites' ``tests``/``failures``/
  ``errors``/``skipped`` attributes, trusting whichever is worse, and every disagreement
  is listed in ``TestReport.notes``. Tools get the attributes wrong both ways (gotestsum
  reports a failing ``TestMain`` in a suite that says ``tests="0"``), and a report can be
  edited to say ``failures="5"`` beside five plain cases. So: a suite claiming more
  errors, failures or skips than its cases show turns that many of its passed cases into
  errored, failed or skipped ones (the last ones; which ones is unknowable), inventing
  cases named after the suite when too few passed; a suite claiming more tests than it
  has cases counts the missing ones as errored. Claims below the cases change nothing.
  At most ``MAX_INVENTED`` cases are invented per report (an absurd count still fails).
- A case's outcome comes from its direct children: ``<error>`` → errored, else
  ``<failure>`` → failed, else ``<skipped>`` → skipped, else passed.
- Surefire reruns: ``<flakyFailure>``/``<flakyError>`` alone mean the test passed after
  retries → passed; ``<rerunFailure>``/``<rerunError>`` sit beside the final
  ``<failure>``/``<error>``, which decides.
- A suite that failed before running any test may carry ``<error>`` or ``<failure>``
  directly under ``<testsuite>`` (jest-junit writes "Test suite failed to run" as a case
  with ``<error>`` in a suite with ``tests="0"``; other writers put the element on the
  suite): each such suite-level element counts as one errored case named after the suite,
  so a suite that could not run is never read as "0 tests, all green".
- go-junit-report's ``[build failed]`` / ``[setup failed]`` cases carry ``<error>`` and
  therefore count as errored.

Hostile input: defusedxml refuses any DTD (so no entity expansion, XXE or external DTD),
the input is capped by size before parsing (default 50 MiB), and the parser feeds a
counting target instead of building a tree, so memory stays proportional to the cases
kept, not to the markup or the captured output.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import defusedxml
import defusedxml.ElementTree as SafeET

from conveyor.evidence._input import DEFAULT_MAX_BYTES, check_size, read_capped
from conveyor.evidence.errors import EvidenceError
from conveyor.oci.digest import Digest

Outcome = Literal["passed", "failed", "errored", "skipped"]

_ROOTS = ("testsuites", "testsuite")
_MAX_NOTES = 20
# Real reports nest a handful of levels; every case updates each enclosing suite's
# counters, so unbounded nesting would make counting quadratic.
MAX_DEPTH = 64
MAX_INVENTED = 1000


@dataclass(frozen=True, slots=True)
class TestCaseResult:
    __test__ = False  # not a pytest test class, despite the name

    suite: str
    name: str
    classname: str | None
    outcome: Outcome
    time: float | None


@dataclass(frozen=True, slots=True)
class TestReport:
    """One JUnit file. ``total == passed + failed + errored + skipped`` always."""

    __test__ = False

    path: str
    sha256: Digest
    suites: tuple[str, ...]
    passed: int
    failed: int
    errored: int
    skipped: int
    total: int
    cases: tuple[TestCaseResult, ...]
    tool: str
    notes: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        """No failures, no errors (says nothing about whether any test ran)."""
        return self.failed == 0 and self.errored == 0


@dataclass(frozen=True, slots=True)
class TestSummary:
    """Totals across several JUnit files; identical files (same sha256) count once."""

    __test__ = False

    files: tuple[tuple[str, Digest], ...]
    suites: tuple[str, ...]
    passed: int
    failed: int
    errored: int
    skipped: int
    total: int
    tools: tuple[str, ...]

    @property
    def succeeded(self) -> bool:
        return self.failed == 0 and self.errored == 0


def _local(tag: object) -> str:
    # Namespaced tags ("{ns}testcase") are read by their local name; comments and
    # processing instructions have non-string tags and are ignored.
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2] if "}" in tag else tag


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip().replace(",", ""))  # some tools write "1,234.5"
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _count_attr(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


@dataclass
class _Suite:
    name: str
    case_suite: str  # the name its cases get: the innermost enclosing suite that has one
    attributes: dict[str, str]
    first: int = 0  # index of its first case in _Collector.cases (cases stream in order)
    counts: dict[str, int] = field(
        default_factory=lambda: {"passed": 0, "failed": 0, "errored": 0, "skipped": 0}
    )


@dataclass
class _OpenCase:
    attributes: dict[str, str]
    outcome: Outcome = "passed"


_SURFIRE_RERUNS = ("flakyFailure", "flakyError", "rerunFailure", "rerunError")


class _Collector:
    """An expat parser target: counts as elements stream by and builds no tree.

    Memory therefore stays proportional to the cases kept, not to the markup (stack traces
    and captured output are never even stored: the target has no ``data`` method).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.stack: list[str] = []
        self.suites: list[_Suite] = []
        self.suite_names: dict[str, None] = {}
        self.case: _OpenCase | None = None
        self.cases: list[TestCaseResult] = []
        self.totals = {"passed": 0, "failed": 0, "errored": 0, "skipped": 0}
        self.notes: list[str] = []
        self.root_name: str | None = None
        self.hints: set[str] = set()
        self.invented = 0  # cases added for counts a suite claims (bounded: MAX_INVENTED)

    # -- parser target protocol ----------------------------------------------------------
    def start(self, raw_tag: str, attributes: dict[str, str]) -> None:
        tag = _local(raw_tag)
        parent = self.stack[-1] if self.stack else None
        self.stack.append(tag)
        if len(self.stack) > MAX_DEPTH:
            raise EvidenceError(
                self.path, f"XML nested more than {MAX_DEPTH} elements deep; refusing the report"
            )
        if parent is None:
            self._start_root(tag, attributes)
        if tag == "testsuite":
            self._start_suite(attributes)
        elif tag == "testcase":
            self.case = _OpenCase(attributes)
        elif parent == "testcase" and self.case is not None:
            self._case_child(tag, attributes)
        elif parent == "testsuite" and tag in ("error", "failure"):
            self._suite_level_error(tag)
        elif tag == "property":
            self._property(attributes)

    def end(self, raw_tag: str) -> None:
        tag = self.stack.pop()
        if tag == "testcase" and self.case is not None:
            self._end_case(self.case)
            self.case = None
        elif tag == "testsuite" or (tag == "testsuites" and not self.stack):
            suite = self.suites.pop()
            self._cross_check(suite)

    def close(self) -> None:
        return None

    # -- pieces ---------------------------------------------------------------------------
    def _start_root(self, tag: str, attributes: dict[str, str]) -> None:
        if tag not in _ROOTS:
            raise EvidenceError(
                self.path,
                f"root element <{tag or '?'}> is not <testsuites> or <testsuite>; "
                "is this a JUnit XML report?",
            )
        self.root_name = attributes.get("name")
        if tag == "testsuites":
            self.suites.append(_Suite("", "", dict(attributes), first=len(self.cases)))

    def _start_suite(self, attributes: dict[str, str]) -> None:
        name = (attributes.get("name") or "").strip()
        self.suites.append(
            _Suite(
                name, name or self._current_suite_name(), dict(attributes), first=len(self.cases)
            )
        )
        if name:
            self.suite_names.setdefault(name, None)
        if name == "pytest":
            self.hints.add("pytest")
        for key, value in attributes.items():
            # xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/…"
            if key.endswith("chemaLocation") and "surefire" in value:
                self.hints.add("surefire")
        if "id" in attributes and "hostname" in attributes:
            self.hints.add("go-junit-report-shape")

    def _current_suite_name(self) -> str:
        return self.suites[-1].case_suite if self.suites else ""

    def _case_child(self, tag: str, attributes: dict[str, str]) -> None:
        case = self.case
        assert case is not None
        if tag == "error":
            case.outcome = "errored"
        elif tag == "failure":
            if case.outcome != "errored":
                case.outcome = "failed"
        elif tag == "skipped":
            if case.outcome == "passed":
                case.outcome = "skipped"
        elif tag in _SURFIRE_RERUNS:
            self.hints.add("surefire")
        if (attributes.get("type") or "").startswith("pytest."):
            self.hints.add("pytest")

    def _record(self, case: TestCaseResult) -> None:
        self.cases.append(case)
        self.totals[case.outcome] += 1
        for suite in self.suites:
            suite.counts[case.outcome] += 1

    def _end_case(self, case: _OpenCase) -> None:
        classname = case.attributes.get("classname")
        self._record(
            TestCaseResult(
                suite=self._current_suite_name(),
                name=case.attributes.get("name") or "",
                classname=classname if classname else None,
                outcome=case.outcome,
                time=_seconds(case.attributes.get("time")),
            )
        )

    def _suite_level_error(self, tag: str) -> None:
        name = self._current_suite_name()
        self._record(
            TestCaseResult(suite=name, name=name, classname=None, outcome="errored", time=None)
        )
        self._note(f"suite {name!r} has a suite-level <{tag}>: counted as one errored case")

    def _property(self, attributes: dict[str, str]) -> None:
        name = attributes.get("name") or ""
        if name == "go.version":
            self.hints.add("go")
        elif name.startswith(("surefire.", "java.")):
            self.hints.add("surefire")

    def _note(self, text: str) -> None:
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(text)

    def _cross_check(self, suite: _Suite) -> None:
        """Compare the suite's claimed counts with its cases and keep the worse of the two."""
        label = f"suite {suite.name!r}" if suite.name else "report"
        claims: tuple[tuple[str, Outcome], ...] = (
            ("errors", "errored"),
            ("failures", "failed"),
            ("skipped", "skipped"),
        )
        for attribute, outcome in claims:
            said = _count_attr(suite.attributes.get(attribute))
            actual = suite.counts[outcome]
            if said is None or said == actual:
                continue
            if said < actual:
                self._note(
                    f"{label} says {attribute}={said} but its test cases give {actual}; "
                    "counted the test cases"
                )
                continue
            moved = self._demote(suite, outcome, said - actual)
            made = min(said - actual - moved, MAX_INVENTED - self.invented)
            for _ in range(made):
                self._invent(suite, outcome, f"{attribute} the suite counts")
            self._note(
                f"{label} says {attribute}={said} but its test cases give {actual}; "
                f"trusted the suite: {moved} passed case(s) counted as {outcome}"
                + (f", {made} case(s) added" if made else "")
            )
        said = _count_attr(suite.attributes.get("tests"))
        actual = sum(suite.counts.values())
        if said is not None and said != actual:
            if said < actual:
                self._note(
                    f"{label} says tests={said} but its test cases give {actual}; "
                    "counted the test cases"
                )
            else:
                made = min(said - actual, MAX_INVENTED - self.invented)
                for _ in range(made):
                    self._invent(suite, "errored", "a test the suite counts but does not show")
                self._note(
                    f"{label} says tests={said} but has {actual} test cases; "
                    f"{made} missing case(s) added as errored"
                )

    def _demote(self, suite: _Suite, outcome: Outcome, wanted: int) -> int:
        """Turn up to ``wanted`` of the suite's passed cases (the last ones) into ``outcome``."""
        moved = 0
        for index in range(len(self.cases) - 1, suite.first - 1, -1):
            if moved == wanted:
                break
            case = self.cases[index]
            if case.outcome != "passed":
                continue
            self.cases[index] = replace(case, outcome=outcome)
            for counts in (self.totals, suite.counts, *(open_.counts for open_ in self.suites)):
                counts["passed"] -= 1
                counts[outcome] += 1
            moved += 1
        return moved

    def _invent(self, suite: _Suite, outcome: Outcome, what: str) -> None:
        name = suite.case_suite
        case = TestCaseResult(
            suite=name, name=f"[{what}]", classname=None, outcome=outcome, time=None
        )
        self.cases.append(case)
        self.invented += 1
        for counts in (self.totals, suite.counts, *(open_.counts for open_ in self.suites)):
            counts[outcome] += 1

    def tool(self) -> str:
        if "surefire" in self.hints:
            return "surefire"
        if "pytest" in self.hints or self.root_name == "pytest tests":
            return "pytest"
        if "go" in self.hints:
            # go-junit-report v2 writes id and hostname on every suite; gotestsum does not.
            return "go-junit-report" if "go-junit-report-shape" in self.hints else "gotestsum"
        if self.root_name == "jest tests":
            return "jest"
        return "unknown"


_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _parse_problem(data: bytes, exc: ET.ParseError) -> str:
    """Name the likely cause: a wrong encoding reads better than expat's "invalid token"."""
    declared = _DECLARED_ENCODING.match(data[:200])
    encoding = declared.group(1).decode("ascii").lower() if declared else "utf-8"
    if encoding.replace("_", "-") in ("utf-8", "utf8") and not data.startswith(
        (b"\xff\xfe", b"\xfe\xff")
    ):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"not valid UTF-8 (bad byte at offset {bad.start}); is it a JUnit XML report?"
    return f"not well-formed XML ({exc})"


def parse_junit(
    data: bytes, *, path: str = "<junit>", max_bytes: int = DEFAULT_MAX_BYTES
) -> TestReport:
    """Read one JUnit XML report. Raises ``EvidenceError`` (naming ``path``) on bad input."""
    check_size(data, path=path, max_bytes=max_bytes)
    if not data.strip():
        raise EvidenceError(path, "empty file; expected a JUnit XML report")
    collector = _Collector(path)
    try:
        parser = SafeET.DefusedXMLParser(
            target=collector, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        parser.feed(data)
        parser.close()
    except defusedxml.DTDForbidden as exc:
        raise EvidenceError(
            path,
            "refusing XML with a DTD (<!DOCTYPE …>): JUnit reports need none, and DTDs "
            "carry entity-expansion and external-entity (XXE) attacks",
        ) from exc
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden) as exc:
        raise EvidenceError(
            path, "refusing XML that declares entities or external references"
        ) from exc
    except ET.ParseError as exc:
        raise EvidenceError(path, _parse_problem(data, exc)) from exc
    except defusedxml.DefusedXmlException as exc:
        raise EvidenceError(path, f"refusing unsafe XML ({type(exc).__name__})") from exc
    except (LookupError, ValueError) as exc:
        # The XML declaration names an encoding Python cannot feed expat (unknown, multi-byte
        # like UTF-7 or EUC-JP, or not a text codec at all like rot13).
        raise EvidenceError(
            path, "unsupported character encoding in the XML declaration; write UTF-8"
        ) from exc
    totals = collector.totals
    return TestReport(
        path=path,
        sha256=Digest.of(data),
        suites=tuple(collector.suite_names),
        passed=totals["passed"],
        failed=totals["failed"],
        errored=totals["errored"],
        skipped=totals["skipped"],
        total=sum(totals.values()),
        cases=tuple(collector.cases),
        tool=collector.tool(),
        notes=tuple(collector.notes),
    )


def parse_junit_file(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> TestReport:
    """Read a JUnit file from disk; an oversized file is refused before it is read."""
    name = os.fspath(path)
    return parse_junit(read_capped(name, max_bytes=max_bytes), path=name, max_bytes=max_bytes)


def merge_reports(reports: Sequence[TestReport]) -> TestSummary:
    """Totals across files. A file given twice (same sha256) is counted once."""
    seen: set[Digest] = set()
    files: list[tuple[str, Digest]] = []
    suites: dict[str, None] = {}
    tools: dict[str, None] = {}
    passed = failed = errored = skipped = 0
    for report in reports:
        if report.sha256 in seen:
            continue
        seen.add(report.sha256)
        files.append((report.path, report.sha256))
        suites.update(dict.fromkeys(report.suites))
        tools.setdefault(report.tool, None)
        passed += report.passed
        failed += report.failed
        errored += report.errored
        skipped += report.skipped
    return TestSummary(
        files=tuple(files),
        suites=tuple(suites),
        passed=passed,
        failed=failed,
        errored=errored,
        skipped=skipped,
        total=passed + failed + errored + skipped,
        tools=tuple(tools),
    )
