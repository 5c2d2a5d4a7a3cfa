"""The ledger contract on the in-memory store and on SQLite (a temp file)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.ledger import Ledger, MemoryLedger, open_ledger
from tests.support.ledger import LedgerContract, MakeLedger


class TestMemoryLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self) -> MakeLedger:
        return MemoryLedger


class TestSqliteLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self, tmp_path: Path) -> Iterator[MakeLedger]:
        opened: list[Ledger] = []
        counter = itertools.count()

        def make() -> Ledger:
            ledger = open_ledger(f"sqlite:///{tmp_path / f'l{next(counter)}' / 'conveyor.db'}")
            opened.append(ledger)
            return ledger

        yield make
        for ledger in opened:
            ledger.close()
