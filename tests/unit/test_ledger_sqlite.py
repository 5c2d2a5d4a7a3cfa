"""The SQLite file ledger read through the standard library (``open_ledger(url, lazy=True)``):
the shared contract, no SQLAlchemy for reads, tampering caught, and every file that is not a
current ledger left to the SQLAlchemy store."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import LedgerError
from conveyor.ledger import Ledger, LedgerTampered, SqlLedger, open_ledger, verify_ledger
from conveyor.ledger.sqlite import SqliteLedger, file_of
from tests.support.ledger import (
    LEDGER_KEY,
    LedgerContract,
    MakeLedger,
    append_n,
    verify_envelope,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _created(path: Path) -> str:
    """A fresh ledger file at the current schema (made by the SQLAlchemy store)."""
    url = f"sqlite:///{path}"
    open_ledger(url).close()
    return url


def _lazy(url: str) -> SqliteLedger:
    ledger = open_ledger(url, lazy=True)
    assert isinstance(ledger, SqliteLedger)
    return ledger


class TestStdlibSqliteLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self, tmp_path: Path) -> Iterator[MakeLedger]:
        opened: list[Ledger] = []
        counter = itertools.count()

        def make() -> Ledger:
            ledger = _lazy(_created(tmp_path / f"l{next(counter)}" / "conveyor.db"))
            opened.append(ledger)
            return ledger

        yield make
        for ledger in opened:
            ledger.close()


def test_reads_load_no_sqlalchemy(tmp_path: Path) -> None:
    url = _created(tmp_path / "conveyor.db")
    ledger = open_ledger(url)
    append_n(ledger, 7)
    ledger.checkpoint(LEDGER_KEY)
    ledger.close()
    script = textwrap.dedent(
        f"""
        import sys
        from conveyor.ledger import open_ledger
        ledger = open_ledger({url!r}, lazy=True)
        head = ledger.latest_checkpoint()
        entries = ledger.entries(kind="tests")
        ledger.verify_inclusion(entries, size=head.size, root=head.root)
        assert ledger.size() == 7 and len(entries) == 2, (ledger.size(), len(entries))
        ledger.close()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.stdout.strip() == "[]"


def test_a_write_goes_through_sqlalchemy_and_reads_in_its_block_see_it(tmp_path: Path) -> None:
    ledger = _lazy(_created(tmp_path / "conveyor.db"))
    append_n(ledger, 2)
    with ledger.serialized("promote:dev"):
        append_n(ledger, 1, start=2)
        assert ledger.size() == 3
        assert [e.index for e in ledger.entries()] == [0, 1, 2]
    other = _lazy(ledger.url)  # another process's view: committed
    assert other.size() == 3
    other.close()
    ledger.close()


def test_a_row_changed_with_raw_sql_fails_inclusion(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.db"
    ledger = _lazy(_created(path))
    append_n(ledger, 9)
    head = ledger.checkpoint(LEDGER_KEY)
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE ledger_entries SET environment = 'production' WHERE idx = 5")
    raw.close()
    with pytest.raises(LedgerTampered, match="entries 5 do not belong"):
        ledger.verify_inclusion(ledger.entries(), size=head.size, root=head.root)
    report = verify_ledger(ledger, verify_envelope=verify_envelope)
    assert not report.ok
    ledger.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///relative.db?timeout=5",  # query parameters: SQLAlchemy's parsing
        "sqlite:///with%20escape.db",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite+pysqlite:///x.db",
        "postgresql://u:p@localhost/db",
    ],
)
def test_only_plain_file_urls_take_the_stdlib_path(url: str) -> None:
    assert file_of(url) is None


def test_a_file_that_is_not_a_current_ledger_is_opened_by_sqlalchemy(tmp_path: Path) -> None:
    missing = tmp_path / "new" / "conveyor.db"
    created = open_ledger(f"sqlite:///{missing}", lazy=True)
    assert isinstance(created, SqlLedger)  # created and migrated as before
    created.close()
    old = tmp_path / "old.db"
    _created(old)
    raw = sqlite3.connect(old)
    with raw:
        raw.execute("UPDATE alembic_version SET version_num = '0003_old'")
    raw.close()
    with pytest.raises(LedgerError, match="schema is not one this conveyor knows"):
        open_ledger(f"sqlite:///{old}", lazy=True)  # as SqlLedger reports it
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match=r"ledger database sqlite:///\S+junk.db failed"):
        open_ledger(f"sqlite:///{junk}", lazy=True)


def test_driver_errors_after_opening_are_ledger_errors(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.db"
    ledger = _lazy(_created(path))
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("DROP TABLE ledger_checkpoints")
    raw.close()
    with pytest.raises(LedgerError, match="failed: OperationalError: no such table"):
        ledger.checkpoints()
    ledger.close()
