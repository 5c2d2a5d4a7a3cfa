"""conveyor.yaml environments, gates and freezes: the schema, every error at once, the
published JSON Schema."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conveyor.errors import ConfigError, InputError
from conveyor.oci.name import LayoutReference, Reference
from conveyor.policy.config import (
    ConfigModel,
    Role,
    Severity,
    UnknownEnvironmentError,
    load_config,
    render_config_json_schema,
)

from ._policy_support import IDENTITIES, ISSUE_EXAMPLE, config_of, write_config

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "conveyor.schema.json"


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_of(tmp_path, body)
    assert "\n" not in str(info.value)
    return info.value.problems


def _line(problem: str) -> int:
    match = re.search(r"conveyor\.yaml:(\d+):\d+: ", problem)
    assert match, problem
    return int(match.group(1))


HEAD_LINES = len(IDENTITIES.splitlines())


def test_the_issue_example_loads_exactly(tmp_path: Path) -> None:
    config = config_of(tmp_path, ISSUE_EXAMPLE)
    staging = config.model.environment("staging")
    production = config.model.environment("production")
    assert list(config.model.environments) == ["staging", "production"]
    assert staging.target == Reference("registry.example.com", "payment-api-staging")
    assert staging.tags == ["staging"]
    assert staging.requires.provenance is not None
    assert staging.requires.provenance.builder_id is None
    assert staging.requires.tests is not None
    assert (staging.requires.tests.min_passed, staging.requires.tests.max_failed) == (1, 0)
    assert staging.requires.scan is not None
    assert staging.requires.scan.max == {Severity.CRITICAL: 0, Severity.HIGH: 0}
    assert staging.requires.scan.max_age == timedelta(hours=24)
    assert staging.requires.after is None
    assert production.requires.after is not None
    assert production.requires.after.environment == "staging"
    assert production.requires.after.smoke is True
    assert production.requires.after.soak is None
    assert production.requires.approvals is not None
    assert production.requires.approvals.count == 2
    assert production.requires.approvals.role is Role.APPROVER
    assert production.requires.approvals.distinct_from == ["builder", "promoter"]
    assert production.requires.provenance is None
    assert config.model.freeze is None


def test_identities_only_still_loads(tmp_path: Path) -> None:
    config = config_of(tmp_path, "")
    assert config.model.environments == {}
    assert set(config.identities) == {"ci", "deployer", "alice", "bob", "carol", "dave"}
    with pytest.raises(UnknownEnvironmentError, match="defines: none") as info:
        config.model.environment("production")
    assert isinstance(info.value, InputError)
    assert info.value.exit_code == 2


def test_every_key_in_one_config(tmp_path: Path) -> None:
    body = """\
    environments:
      dev:
        repository: oci:./layouts/dev
        requires: {}
      staging:
        repository: localhost:5000/team/app
        tags: [staging, v1.2.3, latest_good]
        requires:
          after: dev
          provenance: {builder_id: "https://github.com/acme/*"}
          tests: {min_passed: 10, max_failed: 2}
          scan:
            max: {critical: 0, high: 2, medium: 10, low: 100, negligible: 1000, unknown: 5}
            max_age: PT12H
            exceptions:
              - {id: CVE-2026-0001, reason: not reachable, expires: 2027-01-31}
              - id: GHSA-xxxx-yyyy-zzzz
                reason: vendor fix pending
                expires: 2027-01-31T12:00:00+01:00
              - {id: CVE-2026-0003, reason: quoted, expires: "2027-02-01T00:00:00Z"}
      production:
        repository: docker.io/acme/app
        tags: [production]
        requires:
          after: {environment: staging, soak: 1d12h, smoke: true}
          approvals:
            count: 2
            role: approver
            distinct_from: [builder, promoter, deployer]
            max_age: 7d
          freeze:
            windows:
              - 2026-12-20T00:00:00Z/2027-01-02T00:00:00Z
              - weekly:
                  {days: [fri, sat, sun], from: "16:00", to: "23:59", timezone: Europe/Berlin}
            break_glass: {approvals: 1, role: approver}
    freeze:
      windows: ["2026-12-24/P3D"]
      environments: [staging, production]
    """
    model = config_of(tmp_path, body).model
    assert model.environment("dev").target == LayoutReference("./layouts/dev")
    staging = model.environment("staging").requires
    assert staging.after is not None
    assert staging.after.environment == "dev"
    assert staging.scan is not None
    assert staging.scan.max_age == timedelta(hours=12)
    expires = [item.expires for item in staging.scan.exceptions]
    assert expires == [
        datetime(2027, 1, 31, tzinfo=UTC),
        datetime(2027, 1, 31, 11, tzinfo=UTC),
        datetime(2027, 2, 1, tzinfo=UTC),
    ]
    assert all(type(moment) is datetime for moment in expires)
    production = model.environment("production").requires
    assert production.after is not None
    assert production.after.soak == timedelta(hours=36)
    assert production.approvals is not None
    assert production.approvals.max_age == timedelta(days=7)
    assert production.freeze is not None
    assert production.freeze.break_glass is not None
    assert len(model.freezes_for("production")) == 2
    assert len(model.freezes_for("staging")) == 1
    assert model.freezes_for("dev") == ()


def test_the_gate_mistakes_of_the_brief_are_all_reported_with_lines(tmp_path: Path) -> None:
    body = """\
    environments:
      staging:
        repository: registry.example.com/app-staging
        requires:
          after: {environment: qa}
          tests: {min_passed: 1}
          scan: {max: {critical: 0, severe: 1}, max_age: 24}
      production:
        repository: registry.example.com/app
        requires:
          after: {environment: canary}
          approvals: {count: 2}
          scann: {}
      canary:
        repository: registry.example.com/app-canary
        requires:
          after: {environment: production, soak: 3 days}
          scan:
            exceptions: [{id: CVE-2026-1, expires: 2027-01-01}]
      orphan:
        repository: registry.example.com/orphan
    """
    problems = _problems(tmp_path, body)
    joined = "\n".join(problems)
    first = HEAD_LINES + 1
    expected = {
        (first + 4, "unknown environment 'qa'"),
        (first + 6, "unknown severity 'severe'"),
        (first + 6, "max_age: a duration needs a unit"),
        (first + 10, "cycle in 'after': production -> canary -> production"),
        (first + 12, "unknown gate 'scann'"),
        (first + 16, "invalid duration '3 days'"),
        (first + 18, "exceptions.0.reason: required key is missing"),
        (first + 19, "environments.orphan.requires: required key is missing"),
    }
    assert len(problems) == len(expected), joined
    for line, text in expected:
        assert any(_line(p) == line and text in p for p in problems), (line, text, joined)
    assert [_line(p) for p in problems] == sorted(_line(p) for p in problems)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "environments:\n  a: {repository: r.io/a, requires: {after: a}}\n",
            "cycle in 'after': a -> a",
        ),
        (
            "environments:\n"
            "  a: {repository: r.io/a, requires: {after: c}}\n"
            "  b: {repository: r.io/b, requires: {after: a}}\n"
            "  c: {repository: r.io/c, requires: {after: b}}\n",
            "cycle in 'after': a -> c -> b -> a",
        ),
        ("environments:\n  a: {repository: r.io/a}\n", "without gates says 'requires: {}'"),
        ("environments:\n  a: {repository: r.io/a, requires: }\n", "requires"),
        (
            "environments:\n  a: {repository: r.io/a, requires: {provenance: }}\n",
            "a gate needs a mapping",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {scan: {max_age: }}}\n",
            "empty value",
        ),
        ("environments:\n  a: {repository: r.io/a:v1, requires: {}}\n", "no tag or digest"),
        (
            "environments:\n  a: {repository: 'r.io/a@sha256:" + "0" * 64 + "', requires: {}}\n",
            "no tag or digest",
        ),
        ("environments:\n  a: {repository: 'oci:./x:v1', requires: {}}\n", "no tag or digest"),
        ("environments:\n  a: {repository: R.io/UPPER, requires: {}}\n", "lowercase"),
        ("environments:\n  a: {repository: 'ftp://x', requires: {}}\n", "repository"),
        ("environments:\n  a: {repository: '', requires: {}}\n", "repository"),
        ("environments:\n  a: {repository: r.io/a, tags: ['-x'], requires: {}}\n", "invalid tag"),
        (
            "environments:\n  a: {repository: r.io/a, tags: [a, a], requires: {}}\n",
            "more than once",
        ),
        ("environments:\n  a: {repository: oci:./x, tags: [_x], requires: {}}\n", "layout tag"),
        ("environments:\n  Prod: {repository: r.io/a, requires: {}}\n", "lowercase letters"),
        ("environments:\n  a: {repository: r.io/a, requires: {}, colour: red}\n", "unknown key"),
        (
            "environments:\n  a: {repository: r.io/a, requires: {tests: {max_failed: -1}}}\n",
            "greater than or equal to 0",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {scan: {max: {high: -1}}}}\n",
            "greater than or equal to 0",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {approvals: {count: 0}}}\n",
            "greater than or equal to 1",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {approvals: {count: 1, "
            "role: admin}}}\n",
            "role",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {approvals: {count: 1, "
            "distinct_from: [approver]}}}\n",
            "no approval could ever count",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {approvals: {count: 1, "
            "distinct_from: [auditor]}}}\n",
            "distinct_from.0",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {scan: {exceptions: "
            "[{id: X, reason: ' ', expires: 2027-01-01}]}}}\n",
            "reason must say something",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {scan: {exceptions: "
            "[{id: X, reason: r, expires: 2027-01-01 10:00:00}]}}}\n",
            "needs a time zone",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {scan: {exceptions: "
            "[{id: X, reason: r, expires: next week}]}}}\n",
            "not an ISO-8601",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {scan: {exceptions: "
            "[{id: X, reason: r, expires: 2027-01-01}, "
            "{id: x, reason: r, expires: 2027-01-01}]}}}\n",
            "listed more than once",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {after: {environment: a, "
            "soak: P1M}}}\n",
            "years or months",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: []}}}\n",
            "at least 1",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
            "['2027-01-02T00:00:00Z/2026-12-20T00:00:00Z']}}}\n",
            "ends before it starts",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
            "[{weekly: {days: [friday], from: '16:00', to: '23:59', timezone: UTC}}]}}}\n",
            "'mon', 'tue'",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
            "[{weekly: {days: [fri], from: 16:00, to: '23:59', timezone: Mars/Olympus}}]}}}\n",
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
            "[{weekly: {days: [fri], from: '4pm', to: '23:59', timezone: UTC}}]}}}\n",
            "weekly.from",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
            "[{daily: {}}]}}}\n",
            "unknown key",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
            "[2026-12-20T00:00:00Z/P1D], break_glass: {approvals: 0}}}}\n",
            "greater than or equal to 1",
        ),
        (
            "environments:\n  a: {repository: r.io/a, requires: {}}\n"
            "freeze: {windows: [2026-12-20T00:00:00Z/P1D], environments: [b]}\n",
            "freeze.environments.0: unknown environment 'b'",
        ),
        ("freeze:\n", "freeze needs a mapping"),
        ("environments: [a, b]\n", "environments"),
    ],
)
def test_single_mistakes(tmp_path: Path, body: str, message: str) -> None:
    problems = _problems(tmp_path, body)
    assert any(message in problem for problem in problems), problems
    assert all(_line(problem) > HEAD_LINES for problem in problems), problems


def test_union_member_names_never_leak_into_messages(tmp_path: Path) -> None:
    body = (
        "environments:\n  a: {repository: r.io/a, requires: {freeze: {windows: "
        "[{weekly: {days: [fri], from: '16:00', to: '16:00', timezone: UTC}}, 42]}}}\n"
    )
    problems = _problems(tmp_path, body)
    joined = "\n".join(problems)
    assert "same minute" in joined
    assert "function-" not in joined
    assert "FreezeSpec" not in joined
    assert "weekly.weekly" not in joined


def test_after_shorthand_equals_the_mapping(tmp_path: Path) -> None:
    short = config_of(
        tmp_path,
        "environments:\n  a: {repository: r.io/a, requires: {}}\n"
        "  b: {repository: r.io/b, requires: {after: a}}\n",
    )
    long = config_of(
        tmp_path,
        "environments:\n  a: {repository: r.io/a, requires: {}}\n"
        "  b: {repository: r.io/b, requires: {after: {environment: a}}}\n",
    )
    assert short.model == long.model


def test_published_schema_is_the_generated_one() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == render_config_json_schema(), (
        "docs/conveyor.schema.json is stale; regenerate it with: .venv/bin/python -c "
        '"from conveyor.policy.config import render_config_json_schema as r; '
        "open('docs/conveyor.schema.json', 'w').write(r())\""
    )


def test_schema_describes_the_keys_of_the_issue() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    assert set(defs["RequiresSpec"]["properties"]) == {
        "provenance",
        "tests",
        "scan",
        "after",
        "approvals",
        "freeze",
    }
    assert defs["RequiresSpec"]["additionalProperties"] is False
    assert "requires" in defs["EnvironmentSpec"]["required"]
    assert set(defs["WeeklyWindowSpec"]["properties"]) == {"days", "from", "to", "timezone"}
    for name in ("ScanSpec", "AfterSpec", "ApprovalsSpec", "FreezeSpec", "RequiresSpec"):
        assert '"null"' not in json.dumps(defs[name]), name


def test_schema_model_round_trip_is_stable() -> None:
    # A model dumped to JSON validates back to an equal model (what policy hashing relies on).
    model = ConfigModel.model_validate(
        {
            "version": 1,
            "identities": {"ci": {"key": "ci.pub", "roles": ["builder"]}},
            "environments": {
                "a": {
                    "repository": "r.io/a",
                    "requires": {
                        "scan": {
                            "max_age": "24h",
                            "exceptions": [{"id": "X", "reason": "r", "expires": "2027-01-01"}],
                        },
                        "freeze": {
                            "windows": [
                                {
                                    "weekly": {
                                        "days": ["fri"],
                                        "from": "16:00",
                                        "to": "23:59",
                                        "timezone": "Europe/Berlin",
                                    }
                                }
                            ]
                        },
                    },
                }
            },
        }
    )
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert ConfigModel.model_validate(dumped) == model


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(
        ["24h", "x", "", "staging", "critical", "2026-12-20T00:00:00Z/P1D", "16:00", "UTC"]
    ),
)
_values = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "max",
                    "count",
                    "role",
                    "environment",
                    "soak",
                    "smoke",
                    "windows",
                    "weekly",
                    "days",
                    "from",
                    "to",
                    "timezone",
                    "exceptions",
                    "id",
                    "reason",
                    "expires",
                    "critical",
                    "min_passed",
                    "max_failed",
                    "max_age",
                    "break_glass",
                    "approvals",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requires=st.dictionaries(
        st.sampled_from(["provenance", "tests", "scan", "after", "approvals", "freeze", "x"]),
        _values,
        max_size=4,
    )
)
def test_random_gate_config_loads_or_is_refused_cleanly(tmp_path: Path, requires: object) -> None:
    environments = {
        "staging": {"repository": "r.io/s", "requires": {}},
        "production": {"repository": "r.io/p", "requires": requires},
    }
    path = write_config(tmp_path, f"environments: {json.dumps(environments)}\n")
    try:
        load_config(path)
    except ConfigError as error:
        problems = error.problems
    else:
        return
    assert problems
    assert all(re.search(r"conveyor\.yaml:\d+:\d+: ", p) for p in problems)


DOC_FILE = SCHEMA_FILE.parent / "configuration.md"


def _property_names(node: object) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            names.update(properties)
        for value in node.values():
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


def test_configuration_doc_shows_the_issue_example_and_every_key() -> None:
    doc = DOC_FILE.read_text(encoding="utf-8")
    assert ISSUE_EXAMPLE in doc
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    keys = _property_names(schema)
    assert {"repository", "requires", "distinct_from", "break_glass", "timezone"} <= keys
    undocumented = sorted(key for key in keys if f"`{key}`" not in doc)
    assert undocumented == []
    for severity in Severity:
        assert f"`{severity.value}`" in doc
    for role in Role:
        assert f"`{role.value}`" in doc
