"""The CLI in-process: commands through Typer's CliRunner (each command module can be
imported on its own), and the one error renderer (``cli.app.execute``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import conveyor.cli.images
import conveyor.cli.promotion  # noqa: F401 - registers its commands on the app
from conveyor.cli.app import app, execute
from conveyor.cli.main import main
from tests.support.images import build_image

runner = CliRunner()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, str]:
    image = build_image(tmp_path / "img", tag="v1", labels={"git.commit": "abc1234"})
    return image.layout, image.digest


def test_resolve_prints_name_at_digest(layout: tuple[Path, str]) -> None:
    path, digest = layout
    result = runner.invoke(app, ["resolve", f"oci:{path}:v1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"oci:{path}@{digest}"


def test_inspect_json_lists_labels(layout: tuple[Path, str]) -> None:
    path, digest = layout
    result = runner.invoke(app, ["inspect", f"oci:{path}:v1", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["digest"] == digest
    assert shown["labels"] == {"git.commit": "abc1234"}


def test_history_needs_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["history", "staging"])
    assert result.exit_code != 0
    assert "conveyor.yaml" in str(result.exception)


def test_an_error_is_one_line_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["resolve", f"oci:{tmp_path / 'missing'}:v1"])
    err = capsys.readouterr().err
    assert code in (2, 3)
    assert err.startswith("conveyor: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_conveyor_debug_shows_the_traceback_of_any_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = main(["resolve", f"oci:{tmp_path / 'missing'}:v1"])
    capsys.readouterr()
    monkeypatch.setenv("CONVEYOR_DEBUG", "1")
    code = execute(["resolve", f"oci:{tmp_path / 'missing'}:v1"])
    err = capsys.readouterr().err
    assert code == quiet  # the same exit code, with the traceback before the one line
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip("\n").splitlines()[-1].startswith("conveyor: error: ")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("conveyor ")
