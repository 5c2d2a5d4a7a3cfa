"""conveyor.yaml written by someone hostile or careless: every shape is one ConfigError naming
file:line (exit 2 from the CLI), never an internal error, a RecursionError or a long parse;
and values of the wrong type are refused, not coerced (issue 9, items 8 and 10)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.errors import ConfigError
from conveyor.policy.config import load_config
from conveyor.yamlsource import parse_yaml

KEYS = "identities:\n  ci: {key: ci.pub, roles: [builder]}\n"
SCAN_EXCEPTION = (
    "version: 1\n"
    + KEYS
    + "environments:\n"
    + "  dev:\n"
    + "    repository: oci:/tmp/dev\n"
    + "    requires:\n"
    + "      scan:\n"
    + "        exceptions:\n"
    + "          - {id: CVE-2026-1, reason: accepted, expires: EXPIRES}\n"
)
APPROVALS = (
    "version: 1\n"
    + KEYS
    + "environments:\n"
    + "  prod:\n"
    + "    repository: oci:/tmp/prod\n"
    + "    requires:\n"
    + "      approvals: {count: COUNT}\n"
)

HOSTILE = {
    # A merge key at the top level: ruamel raised KeyError('version').
    "merge-key": ("base: &b {version: 1}\n<<: *b\n" + KEYS, r":1:1: base: unknown key"),
    # A mapping that merges itself: ruamel raised AttributeError.
    "self-merge": ("a: &a\n  b: 1\n  <<: *a\n", r":1:4: a merge key \('<<'\) includes itself"),
    "self-alias": ("a: &a [1, *a]\n", r":1:4: an alias includes itself"),
    # 50,000-deep nesting: a RecursionError after seconds.
    "deep-flow-seq": ("x: " + "[" * 50_000 + "]" * 50_000 + "\n", r":1:\d+: .*nesting depth"),
    "deep-flow-map": ("x: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n", r":1:\d+: .*nesting"),
    "deep-block-seq": ("- " * 50_000 + "1\n", r":1:\d+: .*nesting depth"),
    "deep-within-libyaml": ("x: " + "[" * 200 + "]" * 200 + "\n", r":1:\d+: nested deeper"),
    # An invalid date: ValueError("month must be in 1..12") from datetime.
    "invalid-date": (
        SCAN_EXCEPTION.replace("EXPIRES", "2027-13-45"),
        r":10:57: invalid value '2027-13-45': month must be in 1\.\.12",
    ),
    "invalid-time": (
        SCAN_EXCEPTION.replace("EXPIRES", "2027-01-01T25:00:00Z"),
        r":10:57: invalid value '2027-01-01T25:00:00Z': hour must be",
    ),
    "set-tag": (
        "version: 1\nidentities:\n  ci: {key: ci.pub, roles: !!set {builder, tester}}\n",
        r":3:28: explicit YAML tag !!set is not allowed",
    ),
    "binary-tag": ("version: !!binary aGk=\n", r":1:10: explicit YAML tag !!binary"),
    "bad-int-tag": ("version: !!int one\n", r":1:10: invalid value 'one': not a valid !!int"),
    "python-tag": ("version: !!python/object:os.system ls\n", r":1:10: explicit YAML tag"),
    "infinity": ("version: .inf\n", r":1:10: invalid value '.inf': not a finite number"),
    "duplicate": ("version: 1\nversion: 1\n", r":2:1: duplicate key 'version'"),
    "merge-scalar": ("a: {<<: 1}\n", r":1:9: '<<' merges mappings only"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_one_error_with_file_and_line(tmp_path: Path, name: str) -> None:
    text, expected = HOSTILE[name]
    path = tmp_path / "conveyor.yaml"
    path.write_text(text)
    (tmp_path / "ci.pub").write_text("placeholder")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(re.escape(str(path)) + expected, message), message


def test_merge_keys_are_expanded_with_the_mappings_own_keys_winning(tmp_path: Path) -> None:
    text = (
        "version: 1\n"
        "identities:\n"
        "  ci: &ci {key: ci.pub, roles: [builder]}\n"
        "  tester:\n"
        "    <<: *ci\n"
        "    roles: [tester]\n"
        "environments:\n"
        "  dev: &env {repository: oci:/tmp/dev, requires: {}}\n"
        "  staging:\n"
        "    <<: [*env]\n"
        "    repository: oci:/tmp/staging\n"
        "    tags: [stable]\n"
    )
    path = tmp_path / "conveyor.yaml"
    path.write_text(text)
    (tmp_path / "ci.pub").write_text("placeholder")
    config = load_config(path)
    assert {role.value for role in config.identities["tester"].roles} == {"tester"}
    assert config.identities["tester"].key_path == tmp_path / "ci.pub"
    staging = config.model.environment("staging")
    assert (staging.repository, staging.tags) == ("oci:/tmp/staging", ["stable"])
    # A merged key is located where it is written (in the base mapping).
    document = parse_yaml(text.encode(), path=path)
    assert document.where(("identities", "tester", "key")) == f"{path}:3:12"
    assert document.where(("identities", "tester", "roles")) == f"{path}:6:5"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: 16:00", "16:00"),  # YAML 1.1 would read sexagesimal 960
        ("a: yes", "yes"),
        ("a: on", "on"),
        ("a: 0o17", 15),
        ("a: 0x1F", 31),
        ("a: 017", 17),  # YAML 1.2: decimal
        ("a: 1_000", "1_000"),
        ("a: -1.5e3", -1500.0),
        ("a: ~", None),
        ("a:", None),
        ("a: TRUE", True),
        ("a: '1'", "1"),
        ("a: !!str 1", "1"),
        ("a: !!int '7'", 7),
        ("a: 2026-12-31", "2026-12-31"),
        ("a: 2026-12-31T12:30:00Z", "2026-12-31T12:30:00+00:00"),
        ("a: 2026-12-31 12:30:00.5 +01:00", "2026-12-31T12:30:00.500000+01:00"),
        ("a: 2026-12-31T12:30:00", "2026-12-31T12:30:00"),  # no zone: load_config refuses it
    ],
)
def test_plain_scalars_follow_the_yaml_1_2_core_schema(text: str, value: object) -> None:
    data = parse_yaml(text.encode(), path=Path("c.yaml")).data["a"]
    assert (data.isoformat() if hasattr(data, "isoformat") else data) == value


STRICT = {
    "version-true": ("version: true\n" + KEYS, ":1:1: version: expected the whole number 1"),
    "version-float": ("version: 1.0\n" + KEYS, ":1:1: version: expected the whole number 1"),
    "version-text": ("version: '1'\n" + KEYS, ":1:1: version: expected the whole number 1"),
    "count-text": (
        APPROVALS.replace("COUNT", "'2'"),
        ":8:19: environments.prod.requires.approvals.count: expected a whole number, not the "
        "text '2'",
    ),
    "count-true": (
        APPROVALS.replace("COUNT", "true"),
        ":8:19: environments.prod.requires.approvals.count: expected a whole number, not the "
        "boolean true",
    ),
    "count-float": (APPROVALS.replace("COUNT", "2.0"), "count: expected a whole number, not"),
    "max-bool": (
        APPROVALS.replace("approvals: {count: COUNT}", "scan: {max: {critical: false}}"),
        "scan.max.critical: expected a whole number, not the boolean false",
    ),
    "tests-text": (
        APPROVALS.replace("approvals: {count: COUNT}", "tests: {min_passed: '10'}"),
        "tests.min_passed: expected a whole number, not the text '10'",
    ),
    "smoke-text": (
        APPROVALS.replace("approvals: {count: COUNT}", "after: {environment: prod, smoke: 'yes'}"),
        "after.smoke: expected true or false, not the text 'yes'",
    ),
    "roles-set": (
        "version: 1\nidentities:\n  ci: {key: ci.pub, roles: !!set {builder: null}}\n",
        ":3:28: explicit YAML tag !!set is not allowed",
    ),
}


@pytest.mark.parametrize("name", sorted(STRICT))
def test_values_of_the_wrong_type_are_refused_one_error_each(tmp_path: Path, name: str) -> None:
    text, expected = STRICT[name]
    path = tmp_path / "conveyor.yaml"
    path.write_text(text)
    (tmp_path / "ci.pub").write_text("placeholder")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems or [str(info.value)]
    relevant = [p for p in problems if "cycle in 'after'" not in p]  # the smoke case's
    assert len(relevant) == 1, problems
    assert expected in relevant[0], relevant[0]
    assert relevant[0].startswith(f"{path}:")


def test_the_right_types_still_load(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yaml"
    path.write_text(
        APPROVALS.replace("COUNT", "2")
        + "  staging:\n    repository: oci:/tmp/staging\n"
        + "    requires: {tests: {min_passed: 10}, after: {environment: prod, smoke: true},"
        + " scan: {max: {critical: 0}}}\n"
    )
    (tmp_path / "ci.pub").write_text("placeholder")
    config = load_config(path)
    assert config.model.version == 1
    prod = config.model.environment("prod").requires.approvals
    assert prod is not None
    assert prod.count == 2


@pytest.mark.parametrize("name", ["merge-key", "self-merge", "deep-flow-seq", "invalid-date"])
def test_the_cli_exits_2_with_file_and_line(tmp_path: Path, name: str) -> None:
    text, expected = HOSTILE[name]
    path = tmp_path / "conveyor.yaml"
    path.write_text(text)
    (tmp_path / "ci.pub").write_text("placeholder")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert re.search(re.escape(str(path)) + expected, done.stderr), done.stderr
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr
