"""Defaults for a build record from the CI system the command runs in (pure: the caller
hands over the environment variables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CiContext:
    commit: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    builder_id: str | None = None
    repository_url: str | None = None
    ref: str | None = None


def ci_context(env: Mapping[str, str]) -> CiContext:
    """Defaults from GitHub Actions or GitLab CI variables (none outside CI)."""
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = env.get("GITHUB_REPOSITORY")
        run_id = env.get("GITHUB_RUN_ID")
        attempt = env.get("GITHUB_RUN_ATTEMPT")
        workflow_ref = env.get("GITHUB_WORKFLOW_REF")
        return CiContext(
            commit=env.get("GITHUB_SHA"),
            run_id=f"{run_id}-{attempt}" if run_id and attempt and attempt != "1" else run_id,
            run_url=f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
            builder_id=f"{server}/{workflow_ref}" if workflow_ref else None,
            repository_url=f"{server}/{repo}" if repo else None,
            ref=env.get("GITHUB_REF"),
        )
    if env.get("GITLAB_CI") == "true":
        server = env.get("CI_SERVER_URL", "").rstrip("/")
        project = env.get("CI_PROJECT_PATH")
        return CiContext(
            commit=env.get("CI_COMMIT_SHA"),
            run_id=env.get("CI_PIPELINE_ID"),
            run_url=env.get("CI_PIPELINE_URL") or env.get("CI_JOB_URL"),
            builder_id=(
                f"{server}/{project}/-/runners/{env['CI_RUNNER_ID']}"
                if server and project and env.get("CI_RUNNER_ID")
                else None
            ),
            repository_url=env.get("CI_PROJECT_URL"),
            ref=env.get("CI_COMMIT_REF_NAME"),
        )
    return CiContext()
