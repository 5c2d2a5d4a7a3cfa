"""A server's ``ReadCache`` against a hostile database writer: rows checked by one request
are believed by the next only while they stay byte-for-byte the same and the tree head the
next request reads extends the one they were proved under.

Each test warms the cache first (the same workspace, ``remember_reads=True``, as
``conveyor serve`` builds it), then tampers with the SQLite ledger, then asks again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor import service
from conveyor.ledger import LedgerTampered, MemoryLedger
from conveyor.service._evidence import ReadCache, VerifiedLedger, remember_reads
from tests.support.ledger import append_n, append_one, make_envelope
from tests.unit.service.test_replays import FAILING, PASSING, World, make_world


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path, remember_reads=True)
    yield made
    made.ws.opener.close()
    made.ledger.close()


def _failing(world: World) -> tuple[str, int, int]:
    ref = world.built()
    world.scan(ref)
    passed = world.tests(ref, PASSING)
    failed = world.tests(ref, FAILING)
    for _ in range(2):  # the second answer comes from the cache
        assert not world.verdict(ref, "staging")[0]
    return ref, passed, failed


def test_the_cache_is_used_between_requests(cached: World) -> None:
    _ref, _, failed = _failing(cached)
    cache = remember_reads(cached.ws)
    known = cache.known(cached.ledger.entry(failed))
    assert known is not None
    assert known.verified is not None
    assert known.proved is not None


def test_a_row_back_dated_after_it_was_cached_fails_check_closed(cached: World) -> None:
    ref, _, failed = _failing(cached)
    cached.sql(
        "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?",
        "2000-01-01T00:00:00.000000Z",
        failed,
    )
    with pytest.raises(LedgerTampered) as info:
        service.check(ref, environment="staging", workspace=cached.ws)
    assert "do not belong to the signed tree head" in str(info.value)


def test_an_envelope_swapped_after_it_was_cached_is_refused(cached: World) -> None:
    """The failing result's row gets the passing result's (validly signed) envelope."""
    ref, passed, failed = _failing(cached)
    good = cached.ledger.entry(passed)
    cached.sql(
        "UPDATE ledger_entries SET envelope = ?, envelope_sha256 = ? WHERE idx = ?",
        good.envelope,
        good.envelope_sha256,
        failed,
    )
    with pytest.raises(LedgerTampered):
        service.check(ref, environment="staging", workspace=cached.ws)


def test_a_column_outside_the_leaf_changed_after_caching_is_checked_afresh(
    cached: World,
) -> None:
    """``occurrence`` is not under the leaf hash: the row still proves, and still counts."""
    ref, _, failed = _failing(cached)
    before = cached.verdict(ref, "staging")
    cached.sql("UPDATE ledger_entries SET occurrence = 7 WHERE idx = ?", failed)
    assert cached.verdict(ref, "staging") == before


def test_a_promotion_back_dated_after_status_cached_it_fails_status_closed(
    cached: World,
) -> None:
    ref = cached.built()
    cached.tests(ref, PASSING)
    cached.scan(ref)
    result = service.promote(
        ref, environment="staging", workspace=cached.ws, signer=cached.signers["deployer"]
    )
    for _ in range(2):
        assert service.status(workspace=cached.ws)[0].current is not None
    cached.sql(
        "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?",
        "2000-01-01T00:00:00.000000Z",
        result.ledger_index,
    )
    with pytest.raises(LedgerTampered):
        service.status(workspace=cached.ws)
    with pytest.raises(LedgerTampered):
        service.history("staging", workspace=cached.ws)


def test_a_cached_signature_still_has_its_signed_time_checked(cached: World) -> None:
    """The signature is cached; the signed-time bounds are checked against each reader's
    "now": a reader whose clock says the evidence was signed in its future refuses it."""
    _ref, passed, _ = _failing(cached)
    entry = cached.ledger.entry(passed)
    assert VerifiedLedger(cached.ws).verify(entry) is not None
    earlier = VerifiedLedger(cached.ws, now=datetime.now(UTC) - timedelta(days=2))
    assert earlier.verify(entry) is None
    assert "after the time it was recorded (or now)" in earlier.ignored[0]


def test_a_workspace_of_another_config_starts_empty(cached: World) -> None:
    _failing(cached)
    other = service.Workspace(
        config=cached.ws.config, ledger=cached.ledger, trusted={}, remember_reads=True
    )
    try:
        assert remember_reads(other) is not remember_reads(cached.ws)
        assert remember_reads(other).known(cached.ledger.entry(0)) is None
        assert VerifiedLedger(other).verify(cached.ledger.entry(0)) is None  # no trusted keys
    finally:
        other.close()


def _append(ledger: MemoryLedger, numbers: range) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)  # one time: equal rows make equal leaves
    for n in numbers:
        append_one(ledger, make_envelope(n), n, recorded_at=at)


def test_the_cache_forgets_everything_when_the_tree_was_rewritten() -> None:
    honest, forked = MemoryLedger(), MemoryLedger()
    _append(honest, range(6))
    _append(forked, range(5))
    _append(forked, range(7, 9))  # the same first five leaves, then others
    assert forked.root_at(5) == honest.root_at(5)
    cache = ReadCache()
    five = (5, forked.root_at(5))
    generation = cache.adopt(five, forked)
    assert generation is not None
    row = honest.entry(2)
    cache.learn(row, generation, proved=generation)
    # The honest head extends the cached one: the row stays proved.
    assert cache.adopt(honest.head(), honest) == generation
    assert cache.known(row) is not None
    # A head that does not extend the cached one: a new generation, nothing believed.
    rewritten = cache.adopt(forked.head(), forked)
    assert rewritten is not None
    assert rewritten != generation
    assert cache.known(row) is None
    # A reader of the older generation adds nothing any more.
    cache.learn(row, generation, proved=generation)
    assert cache.known(row) is None


def test_the_cache_keys_rows_by_every_column() -> None:
    ledger = MemoryLedger()
    append_n(ledger, 3)
    cache = ReadCache()
    generation = cache.adopt(ledger.head(), ledger)
    row = ledger.entry(1)
    cache.learn(row, generation, proved=generation)
    assert cache.known(row) is not None
    for change in (
        {"recorded_at": "2000-01-01T00:00:00.000000Z"},
        {"environment": "production"},
        {"envelope": row.envelope + b" "},
        {"occurrence": 1},
    ):
        assert cache.known(dataclasses.replace(row, **change)) is None  # type: ignore[arg-type]


def test_the_cache_is_bounded() -> None:
    ledger = MemoryLedger()
    append_n(ledger, 10)
    cache = ReadCache(limit=4)
    generation = cache.adopt(ledger.head(), ledger)
    for row in ledger.entries():
        cache.learn(row, generation, proved=generation)
    assert [cache.known(row) is not None for row in ledger.entries()] == [False] * 6 + [True] * 4
