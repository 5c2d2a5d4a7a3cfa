"""Pure rules used when recording: CI context and label agreement."""

from __future__ import annotations

import pytest

from conveyor.errors import VerificationError
from conveyor.policy.labels import check_labels_agree
from conveyor.service import ci_context

FULL = "0123456789abcdef0123456789abcdef01234567"


def test_github_actions_context() -> None:
    ctx = ci_context(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_SHA": FULL,
            "GITHUB_RUN_ID": "99",
            "GITHUB_RUN_ATTEMPT": "2",
            "GITHUB_REPOSITORY": "acme/pay",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_WORKFLOW_REF": "acme/pay/.github/workflows/ci.yml@refs/heads/main",
            "GITHUB_REF": "refs/heads/main",
        }
    )
    assert ctx.commit == FULL
    assert ctx.run_id == "99-2"  # a re-run is another run
    assert ctx.run_url == "https://github.com/acme/pay/actions/runs/99"
    assert ctx.builder_id == (
        "https://github.com/acme/pay/.github/workflows/ci.yml@refs/heads/main"
    )
    assert ctx.repository_url == "https://github.com/acme/pay"


def test_gitlab_ci_context() -> None:
    ctx = ci_context(
        {
            "GITLAB_CI": "true",
            "CI_COMMIT_SHA": FULL,
            "CI_PIPELINE_ID": "1234",
            "CI_PIPELINE_URL": "https://gitlab.example/acme/pay/-/pipelines/1234",
            "CI_SERVER_URL": "https://gitlab.example",
            "CI_PROJECT_PATH": "acme/pay",
            "CI_PROJECT_URL": "https://gitlab.example/acme/pay",
            "CI_RUNNER_ID": "7",
        }
    )
    assert ctx.commit == FULL
    assert ctx.run_id == "1234"
    assert ctx.run_url == "https://gitlab.example/acme/pay/-/pipelines/1234"
    assert ctx.builder_id == "https://gitlab.example/acme/pay/-/runners/7"


def test_no_ci_means_no_defaults() -> None:
    assert ci_context({"GITHUB_SHA": FULL}) == ci_context({})


@pytest.mark.parametrize(
    ("labels", "run_id"),
    [
        ({}, None),
        ({"git.commit": FULL}, None),
        ({"git.commit": FULL[:7]}, "42"),  # an abbreviated label agrees with its full commit
        ({"org.opencontainers.image.revision": FULL.upper()}, None),
        ({"ci.run": "42"}, "42"),
        ({"ci.run": "42"}, None),  # no run id given: nothing to disagree with
    ],
)
def test_labels_that_agree(labels: dict[str, str], run_id: str | None) -> None:
    check_labels_agree(labels, commit=FULL, run_id=run_id)


@pytest.mark.parametrize(
    ("labels", "run_id"),
    [
        ({"git.commit": "fedcba9"}, None),
        ({"git.commit": FULL[:6]}, None),  # too short to be an abbreviation
        ({"org.opencontainers.image.revision": "main"}, None),
        ({"ci.run": "41"}, "42"),
    ],
)
def test_labels_that_disagree(labels: dict[str, str], run_id: str | None) -> None:
    with pytest.raises(VerificationError, match="same story"):
        check_labels_agree(labels, commit=FULL, run_id=run_id)
