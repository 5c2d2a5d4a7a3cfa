"""The SQLite file ledger on the standard library's sqlite3 (``open_ledger(url, lazy=True)``):
the shared contract, no SQLAlchemy loaded, writes that exclude the SQLAlchemy store's across
processes, tampering caught, and every file that is not a current ledger left to the
SQLAlchemy store."""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import LedgerError
from conveyor.ledger import (
    Ledger,
    LedgerTampered,
    MemoryLedger,
    SqlLedger,
    open_ledger,
    verify_ledger,
)
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

    def test_newest_first_pages_below_an_end(self, make_ledger: MakeLedger) -> None:
        # The additions to the Ledger protocol on branch scale (entries end/newest_first,
        # head, reading), on this store too.
        ledger = make_ledger()
        assert isinstance(ledger, SqliteLedger)
        append_n(ledger, 24)
        newest = ledger.entries(kind="promotion", newest_first=True, limit=3)
        assert [e.index for e in newest] == [23, 20, 17]
        page = ledger.entries(kind="promotion", newest_first=True, limit=3, end=17)
        assert [e.index for e in page] == [14, 11, 8]
        assert [e.index for e in ledger.entries(end=3)] == [0, 1, 2]
        assert [e.index for e in ledger.entries(start=2, end=5, newest_first=True)] == [4, 3, 2]
        both = ledger.entries(kind="build", environment="production", newest_first=True)
        assert [e.index for e in both] == [12, 0]
        assert ledger.entries(end=0) == []
        assert ledger.entries(kind="promotion", end=2, newest_first=True) == []
        assert ledger.head() == (ledger.size(), ledger.root())
        with ledger.reading(), ledger.serialized("promote:dev"):  # a write may follow
            assert ledger.entries(kind="promotion", newest_first=True, limit=3) == newest
            append_n(ledger, 1, start=24)
            assert ledger.head() == (25, ledger.root())


def test_reads_and_writes_load_no_sqlalchemy(tmp_path: Path) -> None:
    url = _created(tmp_path / "conveyor.db")
    ledger = open_ledger(url)
    append_n(ledger, 7)
    ledger.close()
    script = textwrap.dedent(
        f"""
        import sys
        from conveyor.ledger import open_ledger
        from tests.support.ledger import LEDGER_KEY, append_n
        ledger = open_ledger({url!r}, lazy=True)
        with ledger.serialized("promote:dev"):
            append_n(ledger, 2, start=7)
        head = ledger.checkpoint(LEDGER_KEY)
        entries = ledger.entries(kind="tests")
        ledger.verify_inclusion(entries, size=head.size, root=head.root)
        assert ledger.size() == head.size == 9 and len(entries) == 3, (ledger.size(), entries)
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
    ledger = open_ledger(url)  # the SQLAlchemy store reads what sqlite3 wrote
    assert ledger.size() == 9
    assert verify_ledger(ledger, verify_envelope=verify_envelope).ok
    ledger.close()


def _serialized_worker(url: str, worker: int) -> None:
    # Even workers on sqlite3, odd ones on SQLAlchemy: both take the one write lock.
    ledger = open_ledger(url, lazy=worker % 2 == 0)
    assert isinstance(ledger, SqliteLedger) == (worker % 2 == 0)
    try:
        for _ in range(5):
            with ledger.serialized("promote:production"):
                # Read-then-write: without the lock two workers would see the same count.
                seen = len(ledger.entries(environment="production"))
                append_n(ledger, 1, start=seen * 4)  # i % 4 == 0: environment=production
    finally:
        ledger.close()


def test_serialized_blocks_exclude_the_sqlalchemy_stores_across_processes(
    tmp_path: Path,
) -> None:
    url = _created(tmp_path / "conveyor.db")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_serialized_worker, args=(url, w)) for w in range(6)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * 6
    reference = MemoryLedger()
    for k in range(30):
        append_n(reference, 1, start=k * 4)
    ledger = _lazy(url)
    # Each block saw every earlier block's append: the n-th append is envelope 4n.
    assert [e.envelope for e in ledger.entries()] == [e.envelope for e in reference.entries()]
    assert verify_ledger(ledger, verify_envelope=verify_envelope).ok
    ledger.close()


def test_a_block_that_raises_writes_nothing(tmp_path: Path) -> None:
    ledger = _lazy(_created(tmp_path / "conveyor.db"))
    append_n(ledger, 2)

    def crash() -> None:
        with ledger.serialized("promote:dev"):
            append_n(ledger, 3, start=2)
            assert ledger.size() == 5  # the block reads its own writes
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash()
    assert ledger.size() == 2
    other = open_ledger(ledger.url)
    assert other.size() == 2
    other.close()
    append_n(ledger, 1, start=2)  # the connection is usable after the rollback
    assert ledger.size() == 3
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
