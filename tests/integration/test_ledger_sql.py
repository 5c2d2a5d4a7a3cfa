"""The ledger on real databases: the shared contract, tampering by raw SQL, concurrent
appends from many processes, and bad databases — each on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor.errors import InputError, LedgerError
from conveyor.ledger import Checkpoint, MemoryLedger, SqlLedger, merkle, open_ledger, verify_ledger
from conveyor.ledger.models import leaf_data, statement_sha256
from tests.support.ledger import (
    LEDGER_KEY,
    LedgerContract,
    MakeLedger,
    append_n,
    verify_envelope,
)
from tests.support.postgres import start_postgres

TRUSTED = {LEDGER_KEY.keyid: LEDGER_KEY}
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of URLs of fresh, empty databases on the parametrised backend."""
    if request.param == "postgresql":
        factory: Callable[[], str] = request.getfixturevalue("postgres_database")
        return factory
    counter = itertools.count()
    return lambda: f"sqlite:///{tmp_path / f'db{next(counter)}' / 'conveyor.db'}"


@pytest.fixture
def make_ledger(new_url: Callable[[], str]) -> Iterator[MakeLedger]:
    opened: list[SqlLedger] = []

    def make() -> SqlLedger:
        ledger = open_ledger(new_url())
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


class TestSqlContract(LedgerContract):
    """The same contract as the in-memory store, on SQLite and PostgreSQL."""


# -- tampering by raw SQL ------------------------------------------------------------------


class Raw:
    """Direct SQL on the ledger's database, as an attacker with database access would."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def run(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []

    def row(self, index: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(
                conn.execute(sa.text("SELECT * FROM ledger_entries WHERE idx = :i"), {"i": index})
                .mappings()
                .one()
            )

    def put_row(self, index: int, values: dict[str, Any]) -> None:
        columns = [c for c in values if c != "idx"]
        sets = ", ".join(f"{c} = :{c}" for c in columns)
        sql = f"UPDATE ledger_entries SET {sets} WHERE idx = :idx"  # noqa: S608 (our names)
        self.run(sql, **{**values, "idx": index})

    def insert_row(self, values: dict[str, Any]) -> None:
        names, marks = ", ".join(values), ", ".join(":" + c for c in values)
        self.run(f"INSERT INTO ledger_entries ({names}) VALUES ({marks})", **values)  # noqa: S608

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def tampered(make_ledger: MakeLedger) -> Iterator[tuple[SqlLedger, Raw, Checkpoint]]:
    """A 12-entry ledger, its raw database, and a checkpoint at size 12 kept elsewhere."""
    ledger = make_ledger()
    assert isinstance(ledger, SqlLedger)
    append_n(ledger, 12)
    external = ledger.checkpoint(LEDGER_KEY)
    assert _audit(ledger, external).ok
    raw = Raw(_real_url(ledger))
    yield ledger, raw, external
    raw.close()


def _real_url(ledger: SqlLedger) -> str:
    return ledger._engine.url.render_as_string(hide_password=False)


def _audit(ledger: SqlLedger, checkpoint: Checkpoint | None = None) -> Any:
    return verify_ledger(
        ledger,
        verify_envelope=verify_envelope,
        checkpoint=checkpoint,
        checkpoint_verifiers=TRUSTED,
    )


def test_tamper_changed_envelope_byte(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, _ = tampered
    envelope = bytearray(raw.row(5)["envelope"])
    envelope[40] ^= 0x01
    raw.run("UPDATE ledger_entries SET envelope = :e WHERE idx = 5", e=bytes(envelope))
    report = _audit(ledger)
    assert not report.ok
    assert report.first_bad_index == 5
    assert report.problems[0].startswith("entry 5: the stored envelope bytes do not hash")
    assert all(p.startswith("entry 5:") for p in report.problems)


def test_tamper_edited_fact_column(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, _ = tampered
    raw.run("UPDATE ledger_entries SET environment = 'production' WHERE idx = 7")
    report = _audit(ledger)
    assert report.first_bad_index == 7
    assert "leaf hash does not match its recorded facts" in report.problems[0]


def test_tamper_deleted_entry(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, _ = tampered
    raw.run("DELETE FROM ledger_entries WHERE idx = 4")
    report = _audit(ledger)
    assert not report.ok
    assert report.first_bad_index == 4
    assert report.problems[0] == ("entry 4 is missing (the next stored index is 5): it was deleted")


def test_tamper_swapped_entries(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, _ = tampered
    third, seventh = raw.row(3), raw.row(7)
    raw.put_row(3, {**seventh, "occurrence": 1})  # dodge the unique index mid-swap
    raw.put_row(7, third)
    raw.run("UPDATE ledger_entries SET occurrence = 0 WHERE idx = 3")
    report = _audit(ledger)
    assert not report.ok
    assert report.first_bad_index == 3
    assert report.problems[0].startswith("entry 3: its leaf hash does not match")


def test_tamper_swapped_indexes(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, _ = tampered
    raw.run("UPDATE ledger_entries SET idx = -1 WHERE idx = 2")
    raw.run("UPDATE ledger_entries SET idx = 2 WHERE idx = 9")
    raw.run("UPDATE ledger_entries SET idx = 9 WHERE idx = -1")
    report = _audit(ledger)
    assert report.first_bad_index == 2
    assert report.problems[0].startswith("entry 2:")


def _shift_up_from(raw: Raw, index: int) -> None:
    # Two steps: a single "idx = idx + 1" can collide with the primary key mid-statement.
    raw.run("UPDATE ledger_entries SET idx = -(idx + 1) WHERE idx >= :i", i=index)
    raw.run("UPDATE ledger_entries SET idx = -idx WHERE idx < 0")


def test_tamper_inserted_entry(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, _ = tampered
    copy = raw.row(2)  # a genuinely signed envelope, replayed
    _shift_up_from(raw, 4)
    raw.insert_row({**copy, "idx": 4, "occurrence": 1})
    raw.run("UPDATE ledger_head SET size = size + 1")
    report = _audit(ledger)
    assert not report.ok
    assert report.first_bad_index == 4
    assert report.problems[0].startswith("entry 4: its leaf hash does not match")


def _forge(raw: Raw, rows: list[dict[str, Any]]) -> None:
    """Replace the whole ledger by ``rows`` (row dicts as ``Raw.row`` returns them) with every
    leaf, tree root, node and the head recomputed, and no stored checkpoints: what a forger
    with database access (but no signing key) can do. A repeated statement gets the next
    ``occurrence`` so the unique index lets it in, as a forger would arrange."""
    compact = merkle.CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    seen: dict[str, int] = {}
    forged: list[dict[str, Any]] = []
    for index, r in enumerate(rows):
        envelope = bytes(r["envelope"])
        facts = {
            "recorded_at": r["recorded_at"], "kind": r["kind"],
            "subject_digest": r["subject_digest"], "subject_name": r["subject_name"],
            "predicate_type": r["predicate_type"], "environment": r["environment"],
            "commit": r["source_commit"], "signer": r["signer"], "keyid": r["keyid"],
            "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
        }  # fmt: skip
        leaf = merkle.leaf_hash(leaf_data(index=index, **facts))
        compact.append(leaf, lambda lv, ix, h: nodes.append((lv, ix, h)))
        statement = statement_sha256(envelope)
        occurrence = seen.get(statement, 0)
        seen[statement] = occurrence + 1
        row = {k: v for k, v in facts.items() if k != "commit"}
        forged.append(
            {**row, "idx": index, "envelope": envelope, "source_commit": r["source_commit"],
             "leaf_hash": leaf, "tree_root": compact.root(), "statement_sha256": statement,
             "occurrence": occurrence}
        )  # fmt: skip
    raw.run("DELETE FROM ledger_entries")
    raw.run("DELETE FROM ledger_nodes")
    raw.run("DELETE FROM ledger_checkpoints")
    for row in forged:
        raw.insert_row(row)
    for level, idx, h in nodes:
        raw.run("INSERT INTO ledger_nodes VALUES (:l, :i, :h)", l=level, i=idx, h=h)
    raw.run(
        "UPDATE ledger_head SET size = :s, root = :r, frontier = :f",
        s=compact.size,
        r=compact.root(),
        f=compact.to_bytes(),
    )


def test_tamper_reordered_with_every_hash_recomputed_needs_the_checkpoint(
    tampered: tuple[SqlLedger, Raw, Checkpoint],
) -> None:
    """A forger who reorders genuine entries and rebuilds every hash, the head and the nodes,
    and drops the stored checkpoints, leaves an internally consistent ledger: only a
    checkpoint kept elsewhere exposes the rewrite."""
    ledger, raw, external = tampered
    rows = [raw.row(i) for i in range(12)]
    rows[3], rows[7] = rows[7], rows[3]
    _forge(raw, rows)
    assert _audit(ledger).ok  # internally consistent, and every envelope is genuinely signed
    report = _audit(ledger, external)
    assert not report.ok
    assert report.problems == [
        f"checkpoint of size 12 at {external.time}: the ledger's root at size 12 differs "
        "from the signed root: entries before 12 were rewritten"
    ]


def test_replay_forced_in_with_every_hash_recomputed_is_flagged(
    tampered: tuple[SqlLedger, Raw, Checkpoint],
) -> None:
    """Issue 9 #1: a genuinely signed envelope re-inserted (tree rebuilt around it, the unique
    index dodged with occurrence 1) is a replay the audit names, checkpoint or not."""
    ledger, raw, _ = tampered
    rows = [raw.row(i) for i in range(12)]
    rows.insert(4, {**rows[2], "recorded_at": rows[3]["recorded_at"]})
    _forge(raw, rows)
    report = _audit(ledger)
    assert not report.ok
    assert report.replays == [4]
    assert report.problems == [
        "entry 4 repeats the signed statement of entry 2 (a replayed envelope: one statement "
        "is one entry; readers must not count it)"
    ]


def test_tamper_truncated(tampered: tuple[SqlLedger, Raw, Checkpoint]) -> None:
    ledger, raw, external = tampered
    raw.run("DELETE FROM ledger_entries WHERE idx >= 9")
    report = _audit(ledger)
    assert not report.ok
    assert report.first_bad_index == 9
    assert "the ledger head records 12 entries but 9 are stored (truncated)" in report.problems
    assert any("older backup" in p for p in _audit(ledger, external).problems)


def test_tamper_restored_from_an_older_backup(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    assert isinstance(ledger, SqlLedger)
    raw = Raw(_real_url(ledger))
    try:
        append_n(ledger, 8)
        ledger.checkpoint(LEDGER_KEY)
        backup_head = raw.run("SELECT size, root, frontier FROM ledger_head")[0]
        append_n(ledger, 5, start=8)
        external = ledger.checkpoint(LEDGER_KEY)  # printed into a CI log, kept elsewhere
        assert _audit(ledger, external).ok
        # Restore the backup taken at size 8: newer rows, nodes and checkpoints vanish.
        raw.run("DELETE FROM ledger_entries WHERE idx >= 8")
        raw.run("DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > 8")
        raw.run("DELETE FROM ledger_checkpoints WHERE size > 8")
        raw.run(
            "UPDATE ledger_head SET size = :s, root = :r, frontier = :f",
            s=backup_head[0],
            r=backup_head[1],
            f=backup_head[2],
        )
        assert _audit(ledger).ok  # the restored database is consistent on its own
        report = _audit(ledger, external)
        assert not report.ok
        assert report.first_bad_index == 8
        assert report.problems == [
            f"checkpoint of size 13 at {external.time} records 13 entries but the ledger has "
            "only 8: truncated or restored from an older backup"
        ]
        ledger.root_at(8)  # the restored ledger still answers proofs up to its size
    finally:
        raw.close()


def test_stored_checkpoint_exposes_a_rewrite_before_it(
    tampered: tuple[SqlLedger, Raw, Checkpoint],
) -> None:
    ledger, raw, _ = tampered
    raw.run("UPDATE ledger_checkpoints SET root = :r", r=merkle.EMPTY_ROOT)
    report = _audit(ledger)
    assert any("signature does not verify" in p for p in report.problems)
    assert any("were rewritten" in p for p in report.problems)


# -- many processes appending at once -------------------------------------------------------


def _append_worker(url: str, worker: int, count: int) -> None:
    ledger = open_ledger(url)
    try:
        append_n(ledger, count, start=worker * 1000)
    finally:
        ledger.close()


@pytest.mark.slow
def test_concurrent_appends_from_twenty_processes(new_url: Callable[[], str]) -> None:
    url = new_url()  # fresh: the processes also race to create the schema
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_worker, args=(url, w, 10)) for w in range(20)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * 20
    ledger = open_ledger(url)
    try:
        entries = ledger.entries()
        assert [e.index for e in entries] == list(range(200))
        assert ledger.size() == 200
        assert len({e.envelope for e in entries}) == 200
        report = verify_ledger(ledger, verify_envelope=verify_envelope)
        assert report.ok, report.problems
        assert report.checked_signatures == 200
    finally:
        ledger.close()


def _serialized_worker(url: str, worker: int, out: Any) -> None:
    ledger = open_ledger(url)
    try:
        for _ in range(5):
            with ledger.serialized("promote:production"):
                # Read-then-write: without the lock two workers would see the same count.
                seen = len(ledger.entries(environment="production"))
                append_n(ledger, 1, start=seen * 4)  # i % 4 == 0: environment=production
        out.put(worker)
    finally:
        ledger.close()


@pytest.mark.slow
def test_serialized_blocks_exclude_each_other_across_processes(
    new_url: Callable[[], str],
) -> None:
    url = new_url()
    open_ledger(url).close()
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    workers = [context.Process(target=_serialized_worker, args=(url, w, out)) for w in range(6)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * 6
    ledger = open_ledger(url)
    try:
        # Each block saw every earlier block's append: the n-th append is envelope 4n.
        assert [e.envelope for e in ledger.entries()] == [
            e.envelope for e in _reference_serialized(30)
        ]
    finally:
        ledger.close()


def _reference_serialized(n: int) -> list[Any]:
    reference = MemoryLedger()
    for k in range(n):
        append_n(reference, 1, start=k * 4)
    return reference.entries()


# -- bad databases ---------------------------------------------------------------------------


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.db"
    path.write_bytes(b"this is not a SQLite database, just some text\n" * 100)
    with pytest.raises(LedgerError) as caught:
        open_ledger(f"sqlite:///{path}")
    message = str(caught.value)
    assert "\n" not in message
    assert "not a database" in message
    assert caught.value.exit_code == 3


def test_a_directory_where_the_database_should_be(tmp_path: Path) -> None:
    with pytest.raises(LedgerError):
        open_ledger(f"sqlite:///{tmp_path}")


def test_a_schema_from_a_newer_conveyor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    open_ledger(url).close()
    raw = Raw(url)
    raw.run("UPDATE alembic_version SET version_num = 'from_the_future'")
    raw.close()
    with pytest.raises(LedgerError, match="upgrade conveyor"):
        open_ledger(url)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgresql_is_a_one_line_error_without_the_password() -> None:
    url = f"postgresql+psycopg://conveyor:s3cret-canary-pw@127.0.0.1:{_closed_port()}/ledger"
    with pytest.raises(LedgerError) as caught:
        open_ledger(url)
    message = str(caught.value)
    assert "s3cret-canary-pw" not in message
    assert "s3cret-canary-pw" not in repr(caught.value.args)
    assert "***" in message
    assert "\n" not in message
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "not a url", "postgresql+asyncpg://h/d"],
)
def test_unsupported_urls_are_input_errors(url: str) -> None:
    with pytest.raises(InputError):
        open_ledger(url)


# -- crashes ----------------------------------------------------------------------------------


def _append_forever(url: str, done: Any) -> None:
    ledger = open_ledger(url)
    i = 0
    while True:
        append_n(ledger, 1, start=i)
        i += 1
        with done.get_lock():
            done.value = i


@pytest.mark.slow
def test_a_writer_killed_mid_append_leaves_a_consistent_ledger(
    new_url: Callable[[], str],
) -> None:
    url = new_url()
    open_ledger(url).close()
    context = multiprocessing.get_context("fork")
    done = context.Value("i", 0)
    writer = context.Process(target=_append_forever, args=(url, done))
    writer.start()
    deadline = time.monotonic() + 60
    while done.value < 25 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(writer.pid or 0, signal.SIGKILL)
    writer.join()
    acknowledged = done.value
    ledger = open_ledger(url)
    try:
        # Every acknowledged append survived; at most the one in flight committed unseen.
        assert acknowledged <= ledger.size() <= acknowledged + 1
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok
        append_n(ledger, 1, start=10_000)  # no lock left behind
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok
    finally:
        ledger.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_postgresql_crash_keeps_every_committed_entry() -> None:
    server = start_postgres(fsync=True)  # durability matters here: fsync on
    try:
        url = server.create_database()
        ledger = open_ledger(url)
        append_n(ledger, 20)
        root = ledger.root()
        ledger.close()
        server.crash_and_restart()
        ledger = open_ledger(url)
        try:
            assert ledger.size() == 20
            assert ledger.root() == root
            assert verify_ledger(ledger, verify_envelope=verify_envelope).ok
        finally:
            ledger.close()
    finally:
        server.stop()
