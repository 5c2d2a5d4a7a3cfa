"""The CI recipes cannot deploy after a denied promotion, nor deploy an empty digest.

Checked three ways: the independent schema checkers (check-jsonschema's GitHub workflow and
GitLab CI schemas, actionlint), the job graph as each CI system runs it (issue 10, item 4:
GitLab lets a pipeline go on past a failed manual job unless ``allow_failure: false``), and
the deploy scripts themselves, run by a real shell with stand-ins for helm and conveyor.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKFLOW = EXAMPLES / "github-actions" / "promote.yml"
GITLAB = EXAMPLES / "gitlab-ci" / ".gitlab-ci.yml"
DIGEST = "sha256:" + "ab" * 32
HELM_ARGS = f"--set image.repository=registry.example.com/payment-api --set image.digest={DIGEST}"
# Stand-ins: helm records that it ran and with what; the network is not touched.
STUBS = 'helm() { printf "%s\\n" "$*" >> helm.calls; }\nwget() { :; }\ncurl() { :; }\n'


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    if found.is_file():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return on_path


# --- independent checkers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", WORKFLOW), ("vendor.gitlab-ci", GITLAB)],
)
def test_each_recipe_passes_its_ci_systems_schema(schema: str, path: Path) -> None:
    done = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_github_workflow_passes_actionlint() -> None:
    done = subprocess.run(
        [_tool("actionlint"), "-no-color", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- GitLab: the job graph ------------------------------------------------------------------


def _gitlab() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(GITLAB.read_text())
    return document


def _job(document: dict[str, Any], name: str) -> dict[str, Any]:
    """A job with its ``extends`` merged in (the job's own keys win), as GitLab does."""
    job = dict(document[name])
    parents = job.pop("extends", [])
    for parent in [parents] if isinstance(parents, str) else parents:
        job = {**_job(document, parent), **job}
    return job


def _jobs(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: _job(document, name)
        for name, value in document.items()
        if isinstance(value, dict) and not name.startswith(".") and "script" in value
    }


def _script(job: dict[str, Any]) -> str:
    return "\n".join(job.get("script", []))


def _allowed_to_fail(job: dict[str, Any]) -> bool:
    # GitLab: a manual job outside `rules` defaults to allow_failure: true, others to false.
    default = job.get("when") == "manual" and "rules" not in job
    return bool(job.get("allow_failure", default))


def _gitlab_runs_after(document: dict[str, Any], failed: str) -> set[str]:
    """The jobs that still run when ``failed`` fails (every other job succeeding)."""
    jobs = _jobs(document)
    outcome: dict[str, str] = {}

    def result(name: str) -> str:
        if name in outcome:
            return outcome[name]
        job = jobs[name]
        needs = job.get("needs", [])
        upstream = [need if isinstance(need, str) else need["job"] for need in needs]
        broken = [u for u in upstream if result(u) in ("failed", "skipped")]
        when = job.get("when", "on_success")
        if when == "always" or (when == "on_failure" and broken):
            runs = True
        else:
            runs = not broken and when != "on_failure"
        if not runs:
            outcome[name] = "skipped"
        elif name == failed:
            outcome[name] = "passed-with-warnings" if _allowed_to_fail(job) else "failed"
        else:
            outcome[name] = "passed"
        return outcome[name]

    return {name for name in jobs if result(name) not in ("skipped",) and name != failed}


def _downstream(jobs: dict[str, dict[str, Any]], name: str) -> set[str]:
    """The jobs that need ``name``, directly or through others."""
    found: set[str] = set()
    frontier = {name}
    while frontier:
        frontier = {
            other
            for other, job in jobs.items()
            if other not in found and frontier & set(job.get("needs", []))
        }
        found |= frontier
    return found


def test_a_denied_gitlab_promotion_stops_its_deploy() -> None:
    document = _gitlab()
    jobs = _jobs(document)
    promotions = [name for name, job in jobs.items() if "conveyor promote" in _script(job)]
    deploys = {name for name, job in jobs.items() if "helm upgrade" in _script(job)}
    assert promotions
    assert deploys == {"deploy-staging", "deploy-production"}
    for promotion in promotions:
        # Before the fix: promote-production (manual, no allow_failure) could fail and
        # deploy-production still ran, deploying the chart's default image.
        assert not _allowed_to_fail(jobs[promotion]), promotion
        after = _downstream(jobs, promotion) & deploys
        assert after, promotion  # each promotion feeds a deploy
        still_running = _gitlab_runs_after(document, promotion)
        assert not still_running & after, (promotion, sorted(still_running & after))


def test_the_gitlab_graph_model_does_let_a_deploy_through_an_allowed_failure() -> None:
    # The model above must be able to fail: the old recipe's shape.
    document = _gitlab()
    document["promote-production"] = {
        key: value
        for key, value in document["promote-production"].items()
        if key != "allow_failure"
    }
    assert "deploy-production" in _gitlab_runs_after(document, "promote-production")


def test_gitlab_deploy_jobs_have_a_timeout_and_need_a_promotion() -> None:
    jobs = _jobs(_gitlab())
    for name, job in jobs.items():
        if "helm upgrade" not in _script(job):
            continue
        assert re.fullmatch(r"\d+\s*[mh]", str(job.get("timeout", ""))), name
        needed = [jobs[n] for n in job["needs"] if isinstance(n, str)]
        assert any("conveyor promote" in _script(other) for other in needed), name
        assert job.get("when", "on_success") == "on_success", name


# --- GitHub: the jobs and steps -------------------------------------------------------------


def _workflow() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return document


def test_a_denied_github_promotion_stops_its_deploy() -> None:
    jobs = _workflow()["jobs"]
    deploying = {
        name: job
        for name, job in jobs.items()
        if any("helm upgrade" in step.get("run", "") for step in job["steps"])
    }
    assert set(deploying) == {"deploy-staging", "deploy-production"}
    for name, job in deploying.items():
        assert isinstance(job.get("timeout-minutes"), int), name
        assert not job.get("continue-on-error"), name
        steps = job["steps"]
        promote = next(i for i, s in enumerate(steps) if "conveyor promote" in s.get("run", ""))
        helm = next(i for i, s in enumerate(steps) if "helm upgrade" in s.get("run", ""))
        assert promote <= helm, name
        # The promote step fails the job; nothing up to the deploy runs regardless.
        for step in steps[promote : helm + 1]:
            assert not step.get("continue-on-error"), (name, step.get("name"))
            condition = str(step.get("if", ""))
            assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", condition), condition


# --- the deploy scripts, run by a shell ------------------------------------------------------


def _run(
    shell: list[str], script: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    done = subprocess.run(
        [*shell, STUBS + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    calls = cwd / "helm.calls"
    return done.returncode, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("job", ["deploy-staging", "deploy-production"])
@pytest.mark.parametrize(
    ("helm_args", "deploys"),
    [
        (None, False),  # the failed promotion uploaded no artifact
        ("", False),
        ("promotion denied\n", False),
        ("--set image.repository=registry.example.com/payment-api --set image.digest=\n", False),
        (HELM_ARGS + "\n", True),
    ],
)
def test_the_gitlab_deploy_refuses_a_missing_or_empty_digest(
    tmp_path: Path, job: str, helm_args: str | None, deploys: bool
) -> None:
    if helm_args is not None:
        (tmp_path / "helm-args.txt").write_text(helm_args)
    script = _script(_jobs(_gitlab())[job])
    # GitLab runs a job's lines in one shell that stops at the first failing line.
    code, calls = _run(["sh", "-e", "-c"], script, tmp_path)
    if deploys:
        assert code == 0
        assert len(calls) == 1
        assert calls[0].endswith(HELM_ARGS)
    else:
        assert code != 0
        assert calls == []


def _github_step(job: str, needle: str) -> str:
    steps = _workflow()["jobs"][job]["steps"]
    run: str = next(s["run"] for s in steps if needle in s.get("run", ""))
    return run


GITHUB_SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]


@pytest.mark.parametrize(
    ("promoted", "repository", "deploys"),
    [
        ("", "", False),  # the promote step's outputs, had it not run or failed
        ("", "registry.example.com/payment-api", False),
        ("sha256:", "registry.example.com/payment-api", False),
        (DIGEST, "", False),
        (DIGEST, "registry.example.com/payment-api", True),
    ],
)
def test_the_github_staging_deploy_refuses_an_empty_digest(
    tmp_path: Path, promoted: str, repository: str, deploys: bool
) -> None:
    script = _github_step("deploy-staging", "helm upgrade")
    code, calls = _run(
        GITHUB_SHELL, script, tmp_path, {"PROMOTED": promoted, "REPOSITORY": repository}
    )
    assert (code == 0) is deploys
    assert (calls != []) is deploys
    if deploys:
        assert f"--set image.digest={DIGEST}" in calls[0]


@pytest.mark.parametrize(
    ("conveyor", "deploys"),
    [
        ('echo "production: denied: 1 of 2 approvals" >&2; exit 1', False),
        ("exit 0", False),  # nothing printed
        ("echo 'promoted, nothing to add'", False),
        (f"echo '{HELM_ARGS}'", True),
    ],
)
def test_the_github_production_deploy_stops_at_a_denied_promotion(
    tmp_path: Path, conveyor: str, deploys: bool
) -> None:
    script = _github_step("deploy-production", "helm upgrade")
    stub = f"conveyor() {{ {conveyor}; }}\n"
    code, calls = _run(GITHUB_SHELL, stub + script, tmp_path, {"IMAGE": "x", "DIGEST": DIGEST})
    assert (code == 0) is deploys
    assert (calls != []) is deploys
