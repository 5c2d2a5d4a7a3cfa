"""The entry point builds only the invoked command: the table of which module registers which
command matches the modules, and a command answers the same through its one-command app as
through the whole app (help, usage errors, exit codes)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from conveyor.cli import main as entry
from conveyor.cli.app import app, one_command

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[2]


def _registered_by_module() -> dict[str, str]:
    entry._register_commands()
    found: dict[str, str] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or typer.main.get_command_name(command.callback.__name__)
        found[name] = command.callback.__module__.removeprefix("conveyor.cli.")
    for group in app.registered_groups:
        owners = {
            module
            for module in set(entry.COMMAND_MODULES.values())
            if any(
                value is group.typer_instance
                for value in vars(importlib.import_module(f"conveyor.cli.{module}")).values()
            )
        }
        assert len(owners) == 1, (group.name, owners)
        assert group.name is not None
        found[group.name] = owners.pop()
    return found


def test_the_table_names_the_module_of_every_command() -> None:
    assert _registered_by_module() == entry.COMMAND_MODULES


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status"], "status"),
        (["--server", "http://127.0.0.1:1", "history", "dev"], "history"),
        (["--server=http://127.0.0.1:1", "--insecure-server", "audit", "verify"], "audit"),
        (["--help"], None),
        (["--version"], None),
        ([], None),
        (["statu"], None),  # a typo: the whole app suggests the name
        (["--bogus", "status"], None),
        (["--server"], None),
    ],
)
def test_invoked_command(args: list[str], expected: str | None) -> None:
    assert entry.invoked_command(args) == expected


CASES = [
    ["check", "--help"],
    ["check"],  # missing argument: usage error, exit 2
    ["status", "--bogus"],
    ["audit", "--help"],
    ["audit", "verify", "--help"],
    ["audit", "nope"],
    ["keys"],
    ["resolve", "--help"],
    ["serve", "--help"],
    ["token", "--help"],
]


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_one_command_answers_as_the_whole_app(args: list[str]) -> None:
    entry._register_commands()
    whole = runner.invoke(app, args, prog_name="conveyor")
    one = runner.invoke(one_command(args[0]), args, prog_name="conveyor")
    assert (one.exit_code, one.output) == (whole.exit_code, whole.output)


def test_a_process_imports_only_the_invoked_command_module() -> None:
    script = (
        "import sys\n"
        "from conveyor.cli.main import main\n"
        "code = main(['status', '--help'])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('conveyor.cli.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    code, modules = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert code == "0"
    assert "conveyor.cli.promotion" in modules
    for other in ("configs", "images", "custody", "demo", "pin", "drift", "login", "serve"):
        assert f"conveyor.cli.{other}'" not in modules


def test_read_commands_on_a_sqlite_ledger_load_no_sqlalchemy(tmp_path: Path) -> None:
    from conveyor import service
    from conveyor.ledger import open_ledger

    service.generate_keys("ci", out_dir=tmp_path / "keys")
    db = tmp_path / "ledger.db"
    config = tmp_path / "conveyor.yaml"
    config.write_text(
        "version: 1\n"
        "identities:\n  ci: {key: keys/ci.pub, roles: [builder]}\n"
        f"ledger:\n  url: sqlite:///{db}\n"
        f"environments:\n  dev:\n    repository: oci:{tmp_path}/dev\n    requires: {{}}\n"
    )
    open_ledger(f"sqlite:///{db}").close()  # created and migrated (SQLAlchemy + Alembic)
    script = (
        "import sys\n"
        "from conveyor.cli.main import main\n"
        f"codes = [main([*args, '--config', {str(config)!r}]) for args in"
        " (['status'], ['history', 'dev'])]\n"
        "print(codes, sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'alembic'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.stdout.strip().splitlines()[-1] == "[0, 0] []", done.stderr


def test_execute_in_process_imports_the_module_a_command_needs(tmp_path: Path) -> None:
    # The demo runs its steps with execute() in its own process, after only cli.demo was
    # imported: a step's command must still be found.
    script = (
        "import conveyor.cli.demo\n"
        "from conveyor.cli.app import execute\n"
        f"print(execute(['keys', 'generate', 'ci', '--out', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.stdout.strip().splitlines()[-1] == "0", done.stderr
    assert (tmp_path / "ci.pub").is_file()


def _python(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.strip()


def test_importing_the_entry_module_loads_no_cli_and_leaves_the_collector_alone() -> None:
    out = _python(
        "import gc, sys\n"
        "before = gc.get_threshold()\n"
        "import conveyor.cli.main\n"
        "print('typer' in sys.modules, gc.get_threshold() == before)\n"
    )
    assert out == "False True"


def test_the_console_entry_tunes_the_collector_for_one_command_and_freezes_before_exit() -> None:
    # Start-up leaves tens of thousands of objects alive to the end; the console entry
    # raises the first threshold so start-up is not collected a hundred times, and freezes
    # what is alive so the collections at exit skip it. atexit handlers still run.
    out = _python(
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print(gc.get_threshold()[0], gc.get_freeze_count() > 0))\n"
        "sys.argv = ['conveyor', '--version']\n"
        "from conveyor.cli.main import run\n"
        "run()\n"
    )
    version, collector = out.splitlines()
    assert version == "conveyor 0.1.0"
    threshold, frozen = collector.split()
    assert int(threshold) > 700  # the interpreter's default
    assert frozen == "True"


def test_serve_gives_the_collector_the_interpreter_settings_back() -> None:
    out = _python(
        "import gc\n"
        "own = gc.get_threshold()\n"
        "from conveyor.cli import main\n"
        "gc.set_threshold(main.START_UP_GC_THRESHOLD)\n"
        "main.serving_for_long()\n"
        "print(gc.get_threshold() == own)\n"
    )
    assert out == "True"
