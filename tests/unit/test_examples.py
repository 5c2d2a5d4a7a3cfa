"""Every conveyor command the CI recipes and their READMEs show exists, with those flags.

Commands are taken from the shell the files run (GitHub ``run:``, GitLab ``script:`` /
``before_script:``, fenced shell blocks and inline code in the READMEs), with ``\\``
continuations joined and ``$(…)`` / pipes / ``&&`` split, then checked against the real Typer
app: the command path must exist, every ``--flag`` must be one of that command's options, and
(for complete commands) click must parse the whole line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import yaml

from conveyor.cli.main import _register_commands, app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKFLOW = EXAMPLES / "github-actions" / "promote.yml"
GITLAB = EXAMPLES / "gitlab-ci" / ".gitlab-ci.yml"
READMES = (
    EXAMPLES / "github-actions" / "README.md",
    EXAMPLES / "gitlab-ci" / "README.md",
    EXAMPLES.parent / "README.md",  # the project's own tour
    *sorted((EXAMPLES.parent / "docs").glob("*.md")),
)
SHELL_FENCES = ("bash", "sh", "shell", "console")
GITHUB_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# --- finding the commands ----------------------------------------------------------------------


def github_scripts(path: Path) -> list[str]:
    document = yaml.safe_load(path.read_text())
    return [
        step["run"]
        for job in document["jobs"].values()
        for step in job.get("steps", [])
        if isinstance(step, dict) and "run" in step
    ]


def gitlab_scripts(path: Path) -> list[str]:
    document = yaml.safe_load(path.read_text())
    scripts: list[str] = []
    for job in document.values():
        if not isinstance(job, dict):
            continue
        for key in ("before_script", "script", "after_script"):
            lines = job.get(key, [])
            scripts += [lines] if isinstance(lines, str) else list(lines)
    return scripts


def markdown_scripts(path: Path) -> tuple[list[str], list[str]]:
    """Fenced shell blocks (complete commands) and inline code spans (may hold ``…``)."""
    text = path.read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    fenced = [
        "\n".join(line.removeprefix("$ ") for line in body.splitlines())
        for fence, body in blocks
        if fence in SHELL_FENCES
    ]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    inline = [span for span in re.findall(r"`([^`\n]+)`", prose) if "conveyor " in span]
    return fenced, inline


def conveyor_commands(script: str) -> list[list[str]]:
    """Each ``conveyor …`` simple command in a shell script, as argv after ``conveyor``."""
    script = GITHUB_EXPRESSION.sub("GHA_EXPR", script.replace("\\\n", " "))
    tokens: list[str] = []
    for line in script.splitlines():  # a newline ends a command, like ';'
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens += [*lexer, ";"]
    commands: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token and all(c in "();<>|&" for c in token):
            words = [w for w in current if not ASSIGNMENT.match(w)] if current else []
            # ``x=$(conveyor …)``: the ``$`` ends the word before the parenthesis.
            if words and words[0] in ("conveyor", "$conveyor"):
                commands.append(words[1:])
            current = []
        else:
            current.append(token.removesuffix("$") if token.endswith("=$") else token)
    return commands


# --- checking them against the real app --------------------------------------------------------


def _root() -> Any:
    # Typer carries its own copy of click: duck-type groups and options.
    _register_commands()
    return typer.main.get_command(app)


def command_problems(argv: list[str], *, complete: bool = True) -> list[str]:
    """What is wrong with ``conveyor ARGV``: unknown command, unknown flag, unparsable."""
    command = _root()
    path = ["conveyor"]
    rest = list(argv)
    while hasattr(command, "commands"):
        if not rest or rest[0].startswith("-"):
            return [f"{' '.join(path)}: no subcommand"]
        name = rest.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return [f"{' '.join(path)}: no command {name!r}"]
        command, path = sub, [*path, name]
    options: dict[str, Any] = {}
    for param in command.params:
        if param.param_type_name == "option":
            for opt in (*param.opts, *param.secondary_opts):
                options[opt] = param
    problems = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            name = token.split("=", 1)[0]
            if name == "--help":
                pass
            elif name not in options:
                problems.append(f"{' '.join(path)}: no option {name!r}")
            elif not options[name].is_flag and "=" not in token:
                i += 1  # its value
        i += 1
    if complete and not problems:
        try:
            command.make_context(" ".join(path), list(rest), resilient_parsing=False)
        except typer.TyperException as exc:
            problems.append(f"{' '.join(path)}: {exc.format_message()}")
    return problems


# --- the files ---------------------------------------------------------------------------------


def _all_commands() -> list[tuple[str, list[str], bool]]:
    found: list[tuple[str, list[str], bool]] = []
    for script in github_scripts(WORKFLOW):
        found += [(WORKFLOW.name, argv, True) for argv in conveyor_commands(script)]
    for script in gitlab_scripts(GITLAB):
        found += [(GITLAB.name, argv, True) for argv in conveyor_commands(script)]
    for readme in READMES:
        if not readme.is_file():
            continue
        fenced, inline = markdown_scripts(readme)
        name = f"{readme.parent.name}/{readme.name}"
        for script in fenced:
            found += [(name, argv, True) for argv in conveyor_commands(script)]
        for span in inline:
            found += [(name, argv, False) for argv in conveyor_commands(span)]
    return found


def test_every_conveyor_command_in_the_examples_exists_with_its_flags() -> None:
    problems = [
        f"{where}: conveyor {shlex.join(argv)}: {problem}"
        for where, argv, complete in _all_commands()
        for problem in command_problems(argv, complete=complete)
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "scripts"),
    [("github", lambda: github_scripts(WORKFLOW)), ("gitlab", lambda: gitlab_scripts(GITLAB))],
)
def test_each_recipe_runs_the_whole_pipeline(source: str, scripts: Any) -> None:
    commands = [" ".join(argv) for script in scripts() for argv in conveyor_commands(script)]
    for wanted in (
        "record build",
        "attest tests",
        "attest scan",
        "attest smoke",
        "promote",
        "--to staging",
        "--to production",
        "--passed",
        "--failed",
        "--helm-args",
    ):
        assert any(wanted in c for c in commands), (source, wanted)
    # Build once: every command names the digest variable, never a tag of the build.
    for command in commands:
        if command.startswith(("record", "attest", "promote", "check")):
            assert "@$DIGEST" in command or "$STAGING_IMAGE" in command, command


def test_the_github_workflow_promotes_the_built_digest() -> None:
    document = yaml.safe_load(WORKFLOW.read_text())
    jobs = document["jobs"]
    assert list(jobs) == ["build", "test", "deploy-staging", "deploy-production"]
    assert jobs["build"]["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    push = next(s for s in jobs["build"]["steps"] if s.get("id") == "push")
    assert re.fullmatch(r"docker/build-push-action@[0-9a-f]{40}", push["uses"])
    assert "git.commit=${{ github.sha }}" in push["with"]["labels"]
    assert "ci.run=${{ github.run_id }}" in push["with"]["labels"]
    for name in ("test", "deploy-staging", "deploy-production"):
        assert jobs[name]["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    assert jobs["deploy-production"]["environment"] == "production"
    uses = [s["uses"] for job in jobs.values() for s in job["steps"] if "uses" in s]
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    scripts = " ".join(github_scripts(WORKFLOW))
    assert "helm upgrade" in scripts
    assert "--set image.digest=" in scripts


def test_the_gitlab_pipeline_passes_the_digest_between_jobs() -> None:
    document = yaml.safe_load(GITLAB.read_text())
    assert document["stages"] == ["build", "test", "deploy-staging", "deploy-production"]
    assert document["build"]["artifacts"]["reports"]["dotenv"] == "build.env"
    build_script = " ".join(document["build"]["script"])
    assert "git.commit=" in build_script
    assert "ci.run=" in build_script
    for name, job in document.items():
        script = " ".join(job.get("script", [])) if isinstance(job, dict) else ""
        if "$DIGEST" in script:
            assert "build" in job["needs"], name  # the dotenv report reaches only these
    assert document["promote-production"]["when"] == "manual"


# --- the checker itself must fail on mistakes ---------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('conveyor promote "$IMAGE@$DIGEST" --to staging --ouput github', "no option '--ouput'"),
        ('conveyor promot "$IMAGE@$DIGEST" --to staging', "no command 'promot'"),
        ("conveyor attest test x reports/junit.xml", "no command 'test'"),
        ("conveyor attest --key k", "no subcommand"),
        ('conveyor promote "$IMAGE@$DIGEST" --output github', "--to"),  # required option
        ('conveyor promote "$IMAGE@$DIGEST" --to staging --output yaml', "yaml"),  # choice
        ("conveyor record build x --commit c --run_id 1", "no option '--run_id'"),
        ("conveyor attest smoke x --env staging --pased", "no option '--pased'"),
    ],
)
def test_a_misspelt_command_or_flag_is_caught(line: str, expected: str) -> None:
    [argv] = conveyor_commands(line)
    problems = command_problems(argv)
    assert problems
    assert expected in " ".join(problems)


def test_commands_are_found_across_continuations_substitutions_and_pipes() -> None:
    script = (
        "set -e\n"
        'conveyor record build "$IMAGE@$DIGEST" \\\n'
        "  --commit ${{ github.sha }} \\\n"
        "  --run-id ${{ github.run_id }}\n"
        'helm_args=$(conveyor promote "$IMAGE@$DIGEST" --to production --helm-args)\n'
        "echo conveyor is not a command here && CONVEYOR_DB=x conveyor status | cat\n"
        "# conveyor bogus --in-a-comment\n"
    )
    assert conveyor_commands(script) == [
        ["record", "build", "$IMAGE@$DIGEST", "--commit", "GHA_EXPR", "--run-id", "GHA_EXPR"],
        ["promote", "$IMAGE@$DIGEST", "--to", "production", "--helm-args"],
        ["status"],
    ]
    assert all(command_problems(argv) == [] for argv in conveyor_commands(script))


def test_the_examples_hold_enough_commands_to_mean_something() -> None:
    found = _all_commands()
    assert len([f for f in found if f[0] == WORKFLOW.name]) >= 8
    assert len([f for f in found if f[0] == GITLAB.name]) >= 8
    assert any(not complete for _, _, complete in found)  # README inline code is read too


def test_conveyor_lint_finds_no_errors_in_the_recipes(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    if "lint" not in _root().commands:
        pytest.skip("conveyor lint is not available")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "lint", str(EXAMPLES), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,  # no conveyor.yaml here: lint's defaults
    )
    findings = json.loads(done.stdout)["findings"]
    files = {Path(f["file"]).name for f in findings}
    errors = [f for f in findings if f["severity"] in ("error", "warning")]
    assert errors == []
    assert done.returncode == 0, done.stderr
    assert ".gitlab-ci.yml" in files  # lint did read the recipes (its variables are infos)
