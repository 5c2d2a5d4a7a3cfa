"""The demo's step checks and directory rules (the whole run is tests/e2e/test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.demo import Step, prepare_directory
from conveyor.errors import InputError


def test_a_step_checks_exit_code_and_text() -> None:
    step = Step(("promote", "x"), why="w", exit_code=1, expect=("denied",), refuse=("promoted",))
    assert step.problems(1, "… denied") == []
    assert step.problems(0, "… denied") == ["exit code 0, expected 1"]
    assert step.problems(1, "promoted x") == ["output lacks 'denied'", "output shows 'promoted'"]


def test_a_step_prints_as_a_shell_command() -> None:
    step = Step(("approve", "oci:r@sha256:ab", "--comment", "looks good"), why="w")
    assert step.command == "conveyor approve oci:r@sha256:ab --comment 'looks good'"


def test_the_demo_directory_must_be_new_or_empty(tmp_path: Path) -> None:
    assert prepare_directory(tmp_path / "new") == (tmp_path / "new").resolve()
    assert (tmp_path / "new").is_dir()
    assert prepare_directory(tmp_path / "new") == (tmp_path / "new").resolve()  # empty: fine
    (tmp_path / "new" / "conveyor.yaml").write_text("x")
    with pytest.raises(InputError, match="not an empty directory"):
        prepare_directory(tmp_path / "new")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError):
        prepare_directory(tmp_path / "file")
    fresh = prepare_directory(None)
    assert fresh.is_dir()
    assert not any(fresh.iterdir())
    fresh.rmdir()
