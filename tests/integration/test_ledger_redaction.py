"""Issue 9 #5: no credential of a database URL reaches any message, traceback or log line.

Each case drives a real failure (a closed port, a real PostgreSQL server refusing the
database, libpq refusing an option, the `conveyor` CLI as a process) with a canary secret in
one credential-bearing part of the URL, and searches everything the user could see.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from conveyor.errors import ConveyorError
from conveyor.ledger import open_ledger

CANARY = "c4nary-Secret-7f3e"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Where the canary sits; {base} is a URL without credentials.
CASES = {
    "password parameter": "{base}?password={canary}",
    "sslpassword parameter": "{base}?sslmode=disable&sslpassword={canary}",
    "passfile parameter": "{base}?passfile=/tmp/{canary}/pgpass",
    "userinfo": "postgresql+psycopg://conveyor:{canary}@{host}:{port}/{database}",
    "percent-encoded userinfo": "postgresql://conveyor:{encoded}%40x@{host}:{port}/{database}",
    "parameter in another case": "{base}?PassWord={canary}",
    "option libpq refuses": "{base}?password={canary}&no_such_libpq_option=1",
}


def _urls(host: str, port: int, database: str = "ledger") -> list[str]:
    base = f"postgresql+psycopg://conveyor@{host}:{port}/{database}"
    encoded = CANARY.replace("-", "%2D")
    return [
        case.format(base=base, canary=CANARY, encoded=encoded, host=host, port=port,
                    database=database)
        for case in CASES.values()
    ]  # fmt: skip


def _everything_shown(error: BaseException) -> str:
    """The message, its args, and the traceback as printed (chained causes included)."""
    return "\n".join([str(error), repr(error.args), "".join(traceback.format_exception(error))])


def _assert_hidden(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    shown = _everything_shown(error)
    for spelling in (CANARY, CANARY.replace("-", "%2D")):
        assert spelling not in shown
        assert spelling not in caplog.text
    assert "***" in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("case", range(len(CASES)), ids=list(CASES))
def test_a_closed_port_never_shows_a_credential(
    case: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = _urls("127.0.0.1", _closed_port())[case]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConveyorError) as caught:
        open_ledger(url)
    assert caught.value.exit_code in (2, 3)
    _assert_hidden(caught.value, caplog)


@pytest.mark.postgres
def test_a_real_server_refusing_the_database_never_shows_a_credential(
    postgres_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import make_url

    admin = make_url(postgres_server.url)  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG)
    for url in _urls(str(admin.host), int(admin.port or 5432), database="no_such_database"):
        with pytest.raises(ConveyorError) as caught:
            open_ledger(url)
        _assert_hidden(caught.value, caplog)


def test_the_cli_never_shows_a_credential(tmp_path: Path) -> None:
    """`conveyor audit verify` against an unreachable team database, debug output on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PG"))}
    run = [sys.executable, "-m", "conveyor"]
    init = subprocess.run(
        [*run, "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    for url in _urls("127.0.0.1", _closed_port())[:4]:
        for debug in ("", "1"):
            result = subprocess.run(
                [*run, "audit", "verify"], cwd=tmp_path,
                env={**env, "CONVEYOR_DB": url, "CONVEYOR_DEBUG": debug},
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert result.returncode == 3, result.stderr
            assert CANARY not in result.stdout + result.stderr
            assert "***" in result.stderr
