"""conveyor.yaml's ``admission:`` section: the issue's exact form, strict types, references."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import ConfigError

from ._policy_support import ISSUE_EXAMPLE, config_of

ISSUE_ADMISSION = """\
admission:
  namespaces:
    payment-api-staging: staging
    payment-api-production: production
  exempt_namespaces: [kube-system, conveyor]
"""


def test_the_issue_form_loads_with_defaults(tmp_path: Path) -> None:
    admission = config_of(tmp_path, ISSUE_EXAMPLE + ISSUE_ADMISSION).model.admission
    assert admission is not None
    assert dict(admission.namespaces) == {
        "payment-api-staging": "staging",
        "payment-api-production": "production",
    }
    assert admission.exempt_namespaces == ["kube-system", "conveyor"]
    assert admission.default == "allow"
    assert admission.previous == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  default: maybe\n", "admission.default"),
        ("  previous: -1\n", "admission.previous"),
        ("  previous: '2'\n", "admission.previous"),
        ("  exempt_namespaces: [payment-api-staging]\n", "both governed and exempt"),
        ("  namespace: {}\n", "admission.namespace"),
    ],
)
def test_bad_admission_settings_are_refused(tmp_path: Path, extra: str, expected: str) -> None:
    body = (
        ISSUE_EXAMPLE
        + ISSUE_ADMISSION.replace("  exempt_namespaces: [kube-system, conveyor]\n", "")
        + extra
    )
    with pytest.raises(ConfigError) as info:
        config_of(tmp_path, body)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_unknown_environment_and_bad_namespace_are_both_reported(tmp_path: Path) -> None:
    body = ISSUE_EXAMPLE + "admission:\n  namespaces:\n    prod: nowhere\n    Bad_NS: staging\n"
    with pytest.raises(ConfigError) as info:
        config_of(tmp_path, body)
    problems = "\n".join(info.value.problems)
    assert "admission.namespaces.prod: unknown environment 'nowhere'" in problems
    assert "Bad_NS" in problems


def test_admission_null_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config_of(tmp_path, ISSUE_EXAMPLE + "admission:\n")
