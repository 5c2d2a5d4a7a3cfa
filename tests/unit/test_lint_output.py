"""Lint runs over folders: hostile files, JSON and SARIF output, the CLI, conveyor.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor import service
from conveyor.cli.main import _register_commands, app
from conveyor.configs import ConfigFileError, read_source
from conveyor.configs.lint import RULES, lint
from conveyor.configs.sarif import artifact_uri, to_sarif
from conveyor.configs.yamlio import compose_documents, load_documents
from conveyor.errors import ConfigError, InputError

POD = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - name: a\n      image: nginx\n"
BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    + ["kind: Pod", "apiVersion: v1"]
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, "alias bomb"),
        ("apiVersion: v1\nkind: Pod\nx: !!python/object:os.system ls\n", "explicit YAML tag"),
        ("apiVersion: v1\nkind: Pod\nx: !!python/object/apply:os.system [ls]\n", "YAML tag"),
        ("apiVersion: v1\nkind: Pod\nx: !Ref y\n", "explicit YAML tag !Ref"),
        ("apiVersion: v1\nkind: Pod\nkind: Deployment\n", "duplicate key 'kind'"),
        ("apiVersion: v1\nkind: Pod\nspec: [unclosed\n", "invalid YAML"),
        ("apiVersion: v1\nkind: Pod\n" + "x: " + "[" * 5000 + "]" * 5000 + "\n", "YAML"),
    ],
)
def test_hostile_yaml_is_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        compose_documents(text, "deploy/pod.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("deploy/pod.yaml")
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigFileError):
        load_documents(text, "deploy/pod.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A mapping that merges itself, a list holding itself: before, "alias bomb", no line.
        ("kind: Pod\nmetadata: &m\n  name: p\n  <<: *m\n", "pod.yaml:2:11: a mapping or list"),
        ("kind: Pod\nx: &x [1, [2, *x]]\n", "pod.yaml:2:4: a mapping or list includes itself"),
    ],
)
def test_a_collection_that_includes_itself_is_refused_with_its_line(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigFileError) as caught:
        compose_documents(text, "deploy/pod.yaml")
    assert message in str(caught.value)


def test_an_impossible_date_is_a_marked_error_in_the_round_trip_reader() -> None:
    # compose_documents keeps scalars as text (lint and pin never read dates); ruamel's
    # round-trip reader constructs them and raised a bare ValueError (an internal error).
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {expires: 2027-13-45}}\n"
    compose_documents(text, "deploy/pod.yaml")
    with pytest.raises(ConfigFileError, match=r"^deploy/pod\.yaml:3:39: invalid date '2027-13-45'"):
        load_documents(text, "deploy/pod.yaml")


def test_read_source_refuses_big_and_non_utf8_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: the size is checked before reading
    with pytest.raises(ConfigFileError, match="larger than"):
        read_source(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nimage: caf\xe9\n")
    with pytest.raises(ConfigFileError, match=r"latin.yaml:2: not valid UTF-8"):
        read_source(latin)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_source(bom) == "a: 1\n"


def _hostile_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a-good.yaml": POD.encode(),
        "b-bomb.yaml": BOMB.encode(),
        "c-tag.yaml": b"apiVersion: v1\nkind: Pod\nx: !!python/object:os.system ls\n",
        "d-latin.yaml": b"apiVersion: v1\nkind: Pod\nimage: caf\xe9\n",
        "z-good.yaml": POD.replace("nginx", "redis:7").encode(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    with (root / "e-big.yaml").open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    files["e-big.yaml"] = b""
    return files


def test_a_run_reports_each_hostile_file_and_continues(tmp_path: Path) -> None:
    files = _hostile_tree(tmp_path)
    report = lint([tmp_path])
    assert report.files == 6
    assert sorted(Path(error.file).name for error in report.errors) == [
        "b-bomb.yaml",
        "c-tag.yaml",
        "d-latin.yaml",
        "e-big.yaml",
    ]
    assert {(Path(f.file).name, f.rule) for f in report.findings} == {
        ("a-good.yaml", "CV001"),
        ("a-good.yaml", "CV002"),
        ("z-good.yaml", "CV001"),
    }
    assert report.exit_code == 1
    for name, data in files.items():
        if data:
            assert (tmp_path / name).read_bytes() == data  # nothing rewritten


def test_display_paths_join_the_argument_and_the_relative_path(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "pod.yaml").write_text(POD)
    report = lint([tmp_path / "deploy"])
    assert {f.file for f in report.findings} == {str(tmp_path / "deploy" / "pod.yaml")}
    with pytest.raises(InputError, match="no such file"):
        lint([tmp_path / "missing"])


def test_sarif_has_what_github_code_scanning_needs(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(POD)
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nkind: x\n")
    sarif = to_sarif(lint([tmp_path]), root=tmp_path)
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"].endswith("sarif-2.1.0.json")
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [rule["id"] for rule in rules] == sorted(RULES)
    for rule in rules:
        assert rule["helpUri"].startswith("https://")
        assert float(rule["properties"]["security-severity"]) > 0
        assert rule["shortDescription"]["text"]
        assert rule["fullDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["CV001", "CV002"]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == "pod.yaml"
        assert location["region"] == {"startLine": 6, "startColumn": 14}
        assert result["partialFingerprints"]
    fingerprints = {next(iter(r["partialFingerprints"].values())) for r in results}
    assert len(fingerprints) == 2
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert "duplicate key" in invocation["toolExecutionNotifications"][0]["message"]["text"]


def test_artifact_uris_are_relative_and_encoded(tmp_path: Path) -> None:
    assert artifact_uri("deploy/my app.yaml") == "deploy/my%20app.yaml"
    assert artifact_uri("./deploy/a.yaml") == "deploy/a.yaml"
    assert artifact_uri(str(tmp_path / "x" / "a.yaml"), root=tmp_path) == "x/a.yaml"
    assert artifact_uri("/elsewhere/a.yaml", root=tmp_path) == "file:///elsewhere/a.yaml"


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    _register_commands()
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_cli_json_output_and_exit_codes(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "pod.yaml").write_text(POD)
    (tmp_path / "deploy" / "bad.yaml").write_bytes(b"apiVersion: v1\nkind: Pod\nx: \xff\n")
    result = runner.invoke(app, ["lint", "--format", "json", "deploy"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert [(f["rule"], f["file"], f["line"], f["column"]) for f in payload["findings"]] == [
        ("CV001", str(Path("deploy") / "pod.yaml"), 6, 14),
        ("CV002", str(Path("deploy") / "pod.yaml"), 6, 14),
    ]
    assert payload["errors"][0]["file"] == str(Path("deploy") / "bad.yaml")
    pinned = POD.replace("nginx", "nginx:1@sha256:" + "a" * 64)
    (tmp_path / "deploy" / "pod.yaml").write_text(pinned)
    (tmp_path / "deploy" / "bad.yaml").unlink()
    clean = runner.invoke(app, ["lint", "deploy"])
    assert clean.exit_code == 0, clean.stdout
    assert runner.invoke(app, ["lint", "--format", "xml", "deploy"]).exit_code == 2


def test_cli_text_and_sarif(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "Dockerfile").write_text("FROM alpine:3.20\n")
    text = runner.invoke(app, ["lint", "Dockerfile"])
    assert text.exit_code == 0  # CV003 is a warning
    assert "Dockerfile:1:6: warning CV003" in text.stdout
    sarif = runner.invoke(app, ["lint", "--format", "sarif", "Dockerfile"])
    assert json.loads(sarif.stdout)["runs"][0]["results"][0]["ruleId"] == "CV003"


def test_conveyor_yaml_lint_section(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "pod.yaml").write_text(POD)
    (tmp_path / "vendor-ish").mkdir()
    (tmp_path / "vendor-ish" / "pod.yaml").write_text(POD)
    (tmp_path / "conveyor.yaml").write_text(
        "version: 1\nidentities:\n  ci: {key: missing.pem, roles: [builder]}\n"
        "lint:\n  rules:\n    CV001: warning\n    CV002: 'off'\n  exclude: ['vendor-ish/**']\n"
    )
    settings = service.lint_settings()
    assert settings.severities == {"CV001": "warning", "CV002": "off"}
    result = runner.invoke(app, ["lint", "--format", "json", "."])
    assert result.exit_code == 0
    assert [(f["rule"], f["severity"]) for f in json.loads(result.stdout)["findings"]] == [
        ("CV001", "warning")
    ]
    (tmp_path / "conveyor.yaml").write_text(
        "version: 1\nlint:\n  rules:\n    CV1: error\n    CV003: fatal\n  unknown: 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        service.lint_settings()
    assert len(caught.value.problems) == 3
    assert all("conveyor.yaml:" in problem for problem in caught.value.problems)
