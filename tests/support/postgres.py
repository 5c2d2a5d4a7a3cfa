"""A throwaway PostgreSQL 15 cluster for integration tests.

``initdb`` + ``pg_ctl`` from the machine's binaries, in a fresh temp dir, listening on an
ephemeral 127.0.0.1 port only, stopped and removed at the end of the session. ``initdb``
refuses to run as root, so as root the server runs as the ``postgres`` user (``runuser``);
its data directory's parents must be enterable by that user, hence ``chmod 755``.
``fsync=off`` by default for speed: a durability test starts its own with ``fsync=True``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin")]


def _binary(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningPostgres:
    root: Path
    data: Path
    port: int
    as_user: list[str]
    pg_ctl: str
    options: str = ""
    _shared_ready: bool = False

    @property
    def url(self) -> str:
        """The admin database ``postgres`` as the ``postgres`` superuser (trust auth)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def create_schema(self) -> str:
        """A new empty schema in the shared ``conveyor`` database, as a URL whose connections
        use it as their search path: as isolated as a database for the ledger, and ~100x
        cheaper to make than ``CREATE DATABASE``."""
        import psycopg

        if not self._shared_ready:
            with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
                conn.execute('CREATE DATABASE "conveyor"')
            self._shared_ready = True
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self._dsn("conveyor"), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.database_url('conveyor')}?options=-csearch_path%3D{name}"

    def _dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def crash_and_restart(self) -> None:
        """Stop the server the way a crash would (``-m immediate``: no shutdown checkpoint,
        WAL replay at start) and start it again on the same port."""
        log = self.root / "postgres.log"
        for mode in ("stop", "start"):
            extra = ["-m", "immediate"] if mode == "stop" else ["-l", str(log), "-o", self.options]
            subprocess.run(
                [*self.as_user, self.pg_ctl, "-D", str(self.data), *extra, "-w", "-t", "60", mode],
                capture_output=True, timeout=90, check=True,
            )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(*, fsync: bool = False) -> RunningPostgres:
    """Start a fresh cluster (skips the test when the binaries are absent)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    root.chmod(0o755)
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {error.stderr.decode(errors='replace')}") from error
    log = root / "postgres.log"
    for _attempt in range(5):
        port = _free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} "
            "-c max_connections=100"
            + ("" if fsync else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        )
        started = subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30",
             "start"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if started.returncode == 0:
            return RunningPostgres(root, data, port, as_user, pg_ctl, options)
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start: {tail}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[RunningPostgres]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: RunningPostgres) -> str:
    """URL of the session cluster's admin database (shared: tests create their own)."""
    return postgres_server.url


@pytest.fixture
def postgres_database(postgres_server: RunningPostgres) -> Callable[[], str]:
    """A factory of fresh, empty, isolated places on the session cluster (one per call):
    a schema of a shared database, see ``RunningPostgres.create_schema``."""
    return postgres_server.create_schema
