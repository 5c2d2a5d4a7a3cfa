"""`conveyor pin` as users run it (from a lock file: no network): output, diff, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def conveyor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "lock.json").write_text(
        json.dumps(
            {
                "version": 1,
                "environment": None,
                "images": {
                    "docker.io/library/nginx:1.25": {
                        "digest": DIGEST,
                        "registry": "docker.io",
                        "resolved_at": "2026-01-01T00:00:00Z",
                    },
                    "docker.io/library/redis:7": {
                        "digest": OTHER,
                        "registry": "docker.io",
                        "resolved_at": "2026-01-01T00:00:00Z",
                    },
                },
            }
        )
    )
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "docker-compose.yml").write_text(
        "services:\n  web:\n    image: nginx:1.25 # front\n  cache:\n    image: redis:7\n"
        "  app:\n    image: ${APP_IMAGE}\n"
    )
    return repo


def test_help_lists_pin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "pin" in result.stdout


def test_check_diff_then_pin(tmp_path: Path) -> None:
    repo = _setup(tmp_path)
    compose = repo / "docker-compose.yml"
    original = compose.read_text()
    check = conveyor("pin", "--check", "--diff", "--from-lock", "../lock.json", ".", cwd=repo)
    assert check.returncode == 1, check.stderr
    assert compose.read_text() == original
    assert "docker-compose.yml: would pin 2 reference(s)" in check.stdout
    assert f"+    image: nginx:1.25@{DIGEST} # front" in check.stdout
    assert "-    image: nginx:1.25 # front" in check.stdout
    assert "left as is: decided at run time" in check.stderr
    assert "1 would change" in check.stderr

    done = conveyor("pin", "--from-lock", "../lock.json", ".", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert f"nginx:1.25 -> nginx:1.25@{DIGEST}" in done.stdout
    assert compose.read_text() == original.replace("nginx:1.25", f"nginx:1.25@{DIGEST}").replace(
        "redis:7", f"redis:7@{OTHER}"
    )
    again = conveyor("pin", "--check", "--from-lock", "../lock.json", ".", cwd=repo)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""


def test_bad_files_exit_2_and_are_named(tmp_path: Path) -> None:
    repo = _setup(tmp_path)
    (repo / "bomb.yaml").write_text(
        "apiVersion: v1\nkind: Pod\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
            for i in range(6)
        )
    )
    result = conveyor("pin", "--from-lock", "../lock.json", ".", cwd=repo)
    assert result.returncode == 2
    assert "bomb.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"nginx:1.25@{DIGEST}" in (repo / "docker-compose.yml").read_text()


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    result = conveyor("pin", "--check", "--lock", "x.json", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("conveyor: error: --check writes nothing")
    missing = conveyor("pin", "--from-lock", "absent.json", ".", cwd=tmp_path)
    assert missing.returncode == 2
    assert "absent.json" in missing.stderr
