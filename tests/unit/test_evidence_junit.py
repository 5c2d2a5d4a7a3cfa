"""JUnit ingestion: every corpus file against an independent count, dialects, hostile input."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as StdET
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from hypothesis import given, settings, strategies as st

from conveyor.errors import InputError
from conveyor.evidence import (
    EvidenceError,
    TestReport,
    merge_reports,
    parse_junit,
    parse_junit_file,
)
from conveyor.evidence.junit import MAX_INVENTED
from tests.conftest import CORPUS

JUNIT_DIR = CORPUS / "junit"
JUNIT_FILES = sorted(p.name for p in JUNIT_DIR.glob("*")) if JUNIT_DIR.is_dir() else []


# -- an independent count over trusted corpus files (stdlib ElementTree, no conveyor code) --
def independent_counts(data: bytes) -> Counter[str]:
    root = StdET.fromstring(data)  # noqa: S314 - the trusted corpus, parsed for the oracle
    counts: Counter[str] = Counter()
    for case in root.iter("testcase"):
        kinds = [child.tag for child in case]
        if "error" in kinds:
            counts["errored"] += 1
        elif "failure" in kinds:
            counts["failed"] += 1
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    for suite in root.iter("testsuite"):
        counts["errored"] += sum(1 for child in suite if child.tag in ("error", "failure"))
    counts["suites"] = len({s.get("name") for s in root.iter("testsuite") if s.get("name")})
    return counts


def test_the_corpus_has_junit_files(corpus: Path) -> None:
    assert len(JUNIT_FILES) >= 10, "expected the shared corpus' junit/ files"


# Where a corpus file's suite attributes claim worse than its cases, the worse is kept
# (issue 9 #12): gotestsum's root says errors="1" (the failing TestMain) while every case
# reads as passed or failed, so one passed case counts as errored.
CLAIMED_WORSE = {"gotestsum-junitxml-report.xml": {"passed": -1, "errored": +1}}


@pytest.mark.parametrize("name", JUNIT_FILES)
def test_corpus_totals_match_an_independent_count(corpus: Path, name: str) -> None:
    data = (corpus / "junit" / name).read_bytes()
    expected = independent_counts(data)
    expected.update(CLAIMED_WORSE.get(name, {}))
    report = parse_junit(data, path=name)
    assert (report.passed, report.failed, report.errored, report.skipped) == (
        expected["passed"],
        expected["failed"],
        expected["errored"],
        expected["skipped"],
    )
    assert report.total == sum(expected[k] for k in ("passed", "failed", "errored", "skipped"))
    assert report.total == len(report.cases)
    assert len(report.suites) == expected["suites"]
    assert report.sha256.encoded == hashlib.sha256(data).hexdigest()
    assert report.path == name
    assert Counter(c.outcome for c in report.cases) == Counter(
        {k: expected[k] for k in ("passed", "failed", "errored", "skipped") if expected[k]}
    )


@pytest.mark.parametrize("name", JUNIT_FILES)
def test_corpus_tool_is_detected_from_the_content(corpus: Path, name: str) -> None:
    # The file names say which tool wrote each file (see SOURCES.md); the parser only
    # sees the bytes.
    by_prefix = {
        "pytest-": "pytest",
        "surefire-": "surefire",
        "go-junit-report-": "go-junit-report",
        "gotestsum-": "gotestsum",
        "jest-": "jest",
    }
    expected = [tool for prefix, tool in by_prefix.items() if name.startswith(prefix)]
    assert expected, f"new corpus file {name}: add its tool to this table"
    report = parse_junit((corpus / "junit" / name).read_bytes(), path=name)
    if name == "jest-junit-empty.xml":
        assert report.tool in ("jest", "unknown")
    else:
        assert report.tool == expected[0]


def test_flaky_surefire_test_counts_as_passed(corpus: Path) -> None:
    data = (corpus / "junit" / "surefire-TEST-FlakyTest.xml").read_bytes()
    root = StdET.fromstring(data)  # noqa: S314 - the trusted corpus, parsed for the oracle
    flaky = [c.get("name") for c in root.iter("testcase") if c.find("flakyFailure") is not None]
    assert flaky
    report = parse_junit(data)
    outcomes = {c.name: c.outcome for c in report.cases}
    assert all(outcomes[name] == "passed" for name in flaky)


def test_jest_suites_that_failed_to_run_are_errored(corpus: Path) -> None:
    report = parse_junit((corpus / "junit" / "jest-junit-suite-errors.xml").read_bytes())
    assert report.errored == 2
    assert not report.succeeded
    # The attributes say tests="0": the disagreement is noted, the cases are trusted.
    assert any("tests=0" in note for note in report.notes)


def test_go_build_failures_are_errored(corpus: Path) -> None:
    report = parse_junit((corpus / "junit" / "go-junit-report-build-errors.xml").read_bytes())
    build = [c for c in report.cases if c.name.startswith("[")]
    assert build
    assert all(c.outcome == "errored" for c in build)


# -- dialects, written out by hand -----------------------------------------------------------
def test_bare_testsuite_root() -> None:
    report = parse_junit(
        b'<testsuite name="s" tests="2"><testcase name="a" classname="k" time="0.5"/>'
        b'<testcase name="b"><skipped/></testcase></testsuite>'
    )
    assert (report.passed, report.skipped, report.total) == (1, 1, 2)
    assert report.suites == ("s",)
    assert report.cases[0].time == 0.5
    assert report.cases[0].classname == "k"
    assert report.cases[1].classname is None
    assert report.notes == ()


def test_nested_suites_give_cases_the_innermost_name() -> None:
    report = parse_junit(
        b"<testsuites><testsuite name='outer'>"
        b"<testsuite name='inner'><testcase name='a'><failure/></testcase></testsuite>"
        b"<testcase name='b'/>"
        b"<testsuite><testcase name='c'><error/></testcase></testsuite>"
        b"</testsuite></testsuites>"
    )
    assert [(c.suite, c.name, c.outcome) for c in report.cases] == [
        ("inner", "a", "failed"),
        ("outer", "b", "passed"),
        ("outer", "c", "errored"),
    ]
    assert report.suites == ("outer", "inner")


def test_old_pytest_without_suite_names() -> None:
    report = parse_junit(
        b'<?xml version="1.0" encoding="utf-8"?><testsuite errors="0" failures="1" '
        b'skipped="1" tests="3" time="0.1"><testcase classname="t.m" name="ok" time="0"/>'
        b'<testcase classname="t.m" name="bad"><failure message="x">trace</failure></testcase>'
        b'<testcase classname="t.m" name="skip"><skipped type="pytest.skip" message="m"/>'
        b"</testcase></testsuite>"
    )
    assert (report.passed, report.failed, report.skipped) == (1, 1, 1)
    assert report.suites == ()
    assert report.tool == "pytest"
    assert report.notes == ()


def test_surefire_rerun_failure_that_never_passed_is_failed() -> None:
    report = parse_junit(
        b'<testsuite name="k" tests="2" failures="1"><properties>'
        b'<property name="surefire.version" value="3"/></properties>'
        b'<testcase name="always"><failure message="no"/><rerunFailure message="no"/>'
        b"<rerunFailure/></testcase>"
        b'<testcase name="flaky"><flakyError message="once"/></testcase></testsuite>'
    )
    assert {c.name: c.outcome for c in report.cases} == {"always": "failed", "flaky": "passed"}
    assert report.tool == "surefire"


def test_error_outranks_failure_and_skipped() -> None:
    report = parse_junit(
        b"<testsuite name='s'><testcase name='a'><skipped/><failure/><error/></testcase>"
        b"<testcase name='b'><skipped/><failure/></testcase></testsuite>"
    )
    assert [c.outcome for c in report.cases] == ["errored", "failed"]


def test_suite_level_error_counts_as_one_errored_case() -> None:
    report = parse_junit(
        b'<testsuites><testsuite name="broken" tests="0" errors="1">'
        b"<error message='Test suite failed to run'>boom</error></testsuite></testsuites>"
    )
    assert (report.errored, report.total) == (1, 1)
    assert report.cases[0].suite == "broken"


def test_attributes_that_lie_are_noted_and_the_worse_is_kept() -> None:
    report = parse_junit(
        b'<testsuite name="s" tests="10" failures="0"><testcase name="a"><failure/></testcase>'
        b"</testsuite>"
    )
    # failures=0 claims better than the cases: the cases count. tests=10 claims nine tests
    # the report does not show: they did not pass, so they count as errored.
    assert (report.total, report.failed, report.errored, report.passed) == (10, 1, 9, 0)
    assert any("tests=10" in n for n in report.notes)
    assert any("failures=0" in n for n in report.notes)


def test_suite_failures_beside_plain_cases_are_failures() -> None:
    # issue 9 #12: failures="5" with five plain testcases was recorded as 5 passed.
    cases = b"".join(b'<testcase name="t%d"/>' % i for i in range(5))
    report = parse_junit(b'<testsuite name="s" tests="5" failures="5">' + cases + b"</testsuite>")
    assert (report.passed, report.failed, report.total) == (0, 5, 5)
    assert not report.succeeded
    assert any("failures=5" in n and "trusted the suite" in n for n in report.notes)


def test_suite_claims_errors_and_skips_beyond_its_cases() -> None:
    report = parse_junit(
        b'<testsuites errors="2"><testsuite name="s" skipped="1">'
        b'<testcase name="a"/><testcase name="b"/></testsuite></testsuites>'
    )
    # The inner suite's skip takes one passed case; the root's two errors take the other
    # and invent one more case named after the (root) suite.
    assert (report.passed, report.skipped, report.errored, report.total) == (0, 1, 2, 3)
    assert len(report.cases) == report.total


def test_absurd_claims_are_bounded() -> None:
    suites = b"".join(b'<testsuite name="s%d" failures="999999999"/>' % i for i in range(50))
    report = parse_junit(b"<testsuites>" + suites + b"</testsuites>")
    assert report.failed == MAX_INVENTED  # still failing, and memory stays bounded
    assert report.total == len(report.cases) == MAX_INVENTED


def test_namespaced_elements_and_comments_are_read() -> None:
    report = parse_junit(
        b'<j:testsuites xmlns:j="urn:x"><!-- c --><j:testsuite name="s">'
        b"<?pi x?><j:testcase name='a'><j:skipped/></j:testcase></j:testsuite></j:testsuites>"
    )
    assert (report.skipped, report.total) == (1, 1)


def test_declared_latin1_encoding_is_honoured() -> None:
    report = parse_junit(
        b'<?xml version="1.0" encoding="ISO-8859-1"?><testsuite name="caf\xe9">'
        b'<testcase name="\xe9t\xe9"/></testsuite>'
    )
    assert report.suites == ("café",)
    assert report.cases[0].name == "été"


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", ""])
def test_bad_times_become_none(value: str) -> None:
    xml = f'<testsuite><testcase name="a" time="{value}"/></testsuite>'.encode()
    assert parse_junit(xml).cases[0].time is None


def test_merge_reports_sums_and_counts_identical_files_once() -> None:
    a = parse_junit(b'<testsuite name="a"><testcase name="x"/></testsuite>', path="a.xml")
    b = parse_junit(
        b'<testsuite name="b"><testcase name="y"><failure/></testcase>'
        b'<testcase name="z"><skipped/></testcase></testsuite>',
        path="b.xml",
    )
    again = parse_junit(b'<testsuite name="a"><testcase name="x"/></testsuite>', path="copy.xml")
    summary = merge_reports([a, b, again])
    assert (summary.passed, summary.failed, summary.skipped, summary.total) == (1, 1, 1, 3)
    assert summary.files == (("a.xml", a.sha256), ("b.xml", b.sha256))
    assert summary.suites == ("a", "b")
    assert not summary.succeeded
    empty = merge_reports([])
    assert (empty.total, empty.files) == (0, ())


def test_merge_reports_over_the_corpus_sums_every_file(corpus: Path) -> None:
    reports = [parse_junit(p.read_bytes(), path=p.name) for p in sorted(JUNIT_DIR.glob("*"))]
    summary = merge_reports(reports)
    assert summary.total == sum(r.total for r in reports)
    assert summary.failed == sum(r.failed for r in reports)
    assert len(summary.files) == len(reports)


# -- property: whatever tree we write, the counts come back ----------------------------------
OUTCOME_CHILD = {
    "passed": "",
    "failed": "<failure/>",
    "errored": "<error/>",
    "skipped": "<skipped/>",
}
suites_strategy = st.lists(
    st.tuples(
        st.text(alphabet="abc<&\"' ", max_size=5),
        st.lists(st.sampled_from(sorted(OUTCOME_CHILD)), max_size=6),
        st.integers(min_value=0, max_value=99),
    ),
    max_size=5,
)


@given(suites=suites_strategy, wrap=st.booleans())
@settings(max_examples=60, deadline=None)
def test_generated_reports_count_exactly(
    suites: list[tuple[str, list[str], int]], wrap: bool
) -> None:
    parts = []
    for name, outcomes, claimed in suites:
        cases = "".join(
            f'<testcase name="c{i}">{OUTCOME_CHILD[o]}</testcase>' for i, o in enumerate(outcomes)
        )
        parts.append(f"<testsuite name={quoteattr(name)} tests='{claimed}'>{cases}</testsuite>")
    body = "".join(parts)
    if wrap or len(suites) != 1:
        body = f"<testsuites>{body}</testsuites>"
    report = parse_junit(body.encode())
    expected = Counter(o for _, outcomes, _ in suites for o in outcomes)
    # A suite claiming more tests than it shows: the missing ones count as errored.
    expected["errored"] += sum(max(0, claimed - len(outcomes)) for _, outcomes, claimed in suites)
    assert report.passed == expected["passed"]
    assert report.failed == expected["failed"]
    assert report.errored == expected["errored"]
    assert report.skipped == expected["skipped"]
    assert report.total == sum(expected.values())


# -- hostile input ---------------------------------------------------------------------------
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<testsuite name="&x;"><testcase name="a"/></testsuite>'
)
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']><testsuite name="&lol9;"/>'
)
EXTERNAL_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE testsuite SYSTEM "http://127.0.0.1:9/junit.dtd"><testsuite/>'
)
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><testsuite/>'
)

HOSTILE = {
    "xxe": XXE,
    "billion-laughs": BILLION_LAUGHS,
    "external-dtd": EXTERNAL_DTD,
    "parameter-entity": PARAMETER_ENTITY,
    "truncated": b'<?xml version="1.0"?><testsuites><testsuite name="s"><testcase name="a">',
    "invalid-utf8": b'<?xml version="1.0" encoding="UTF-8"?><testsuite name="\xc3\x28"/>',
    "binary-garbage": bytes(range(256)) * 4,
    "empty": b"",
    "whitespace": b" \n\t ",
    "not-xml": b'{"tests": 3}',
    "wrong-root": b"<html><body><testcase name='a'/></body></html>",
    "two-roots": b"<testsuite/><testsuite/>",
    "declaration-only": b'<?xml version="1.0"?>',
    "unknown-encoding": b'<?xml version="1.0" encoding="bogus"?><testsuite/>',
    "multibyte-encoding": b'<?xml version="1.0" encoding="utf-7"?><testsuite/>',
    "not-a-text-codec": b'<?xml version="1.0" encoding="rot13"?><testsuite/>',
    "lying-encoding": b'<?xml version="1.0" encoding="UTF-16"?><testsuite/>',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_one_line_evidence_error_naming_the_file(name: str) -> None:
    with pytest.raises(EvidenceError) as caught:
        parse_junit(HOSTILE[name], path=f"reports/{name}.xml")
    message = str(caught.value)
    assert message.startswith(f"reports/{name}.xml: ")
    assert "\n" not in message
    assert "root:" not in message  # no /etc/passwd content ever surfaces
    assert isinstance(caught.value, InputError)
    assert caught.value.exit_code == 2


def test_deep_nesting_is_refused() -> None:
    depth = 200_000
    data = b"<testsuites>" + b"<testsuite>" * depth + b"<testcase/>" * 1000
    with pytest.raises(EvidenceError, match="nested"):
        parse_junit(data, path="deep.xml")


def test_entity_attacks_are_named_as_such() -> None:
    for data in (XXE, BILLION_LAUGHS, EXTERNAL_DTD):
        with pytest.raises(EvidenceError, match="DTD"):
            parse_junit(data, path="x.xml")


def test_invalid_utf8_says_so() -> None:
    with pytest.raises(EvidenceError, match="UTF-8"):
        parse_junit(HOSTILE["invalid-utf8"], path="x.xml")


def test_oversized_bytes_are_refused_before_parsing() -> None:
    data = b"<testsuite>" + b"<testcase name='a'/>" * 100 + b"</testsuite>"
    with pytest.raises(EvidenceError, match="too large") as caught:
        parse_junit(data, path="big.xml", max_bytes=len(data) - 1)
    assert str(caught.value).startswith("big.xml: ")
    assert parse_junit(data, max_bytes=len(data)).total == 100


def test_a_100_mib_file_is_refused_by_size_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "huge.xml"
    with big.open("wb") as handle:
        handle.write(b"<testsuites><testsuite name='s'>")
        handle.truncate(100 * 1024 * 1024)  # sparse: no 100 MB ever held in memory
    with pytest.raises(EvidenceError, match="too large") as caught:
        parse_junit_file(big)
    assert str(caught.value).startswith(f"{big}: ")
    assert "100.0 MiB" in str(caught.value)


def test_missing_file_is_an_evidence_error(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="cannot read"):
        parse_junit_file(tmp_path / "absent.xml")


def test_parse_junit_file_reads_and_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "ok.xml"
    path.write_bytes(b"<testsuite name='s'><testcase name='a'/></testsuite>")
    report = parse_junit_file(path)
    assert isinstance(report, TestReport)
    assert report.path == str(path)
    assert report.total == 1


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_evidence_error(data: bytes) -> None:
    message = "fuzz.xml: (parsed)"
    try:
        report = parse_junit(data, path="fuzz.xml")
    except EvidenceError as exc:
        message = str(exc)
    else:
        assert report.total == len(report.cases)
    assert "\n" not in message
    assert message.startswith("fuzz.xml: ")


ENCODINGS = ["utf-8", "latin-1", "utf-16", "utf-7", "idna", "base64", "cp1252", "nope", ""]


@given(
    st.sampled_from(ENCODINGS),
    st.text(alphabet="<>/=\"' !&;#x[]testsuicaeflrokpdnm?-", max_size=120),
)
@settings(max_examples=300, deadline=None)
def test_random_markup_raises_only_evidence_error(encoding: str, text: str) -> None:
    declaration = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding else ""
    message = ""
    try:
        parse_junit((declaration + text).encode(), path="fuzz.xml")
    except EvidenceError as exc:
        message = str(exc)
    assert "\n" not in message
