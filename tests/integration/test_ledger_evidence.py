# ruff: noqa: F811  (fixtures imported from test_ledger_sql are used by name)
"""The ledger's defences on real databases (SQLite and PostgreSQL): one statement one entry
(unique index, concurrent replays, the v0002 migration of a ledger written by schema 0001),
rows checked against the signed tree, the incremental audit against raw tampering, and reads
that use indexes."""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conveyor.ledger import (
    DuplicateEvidence,
    LedgerTampered,
    SqlLedger,
    open_ledger,
    parse_checkpoint,
    statement_sha256,
    verify_ledger,
)
from conveyor.ledger.sql import SCHEMA_HEAD
from tests.integration.test_ledger_sql import (  # noqa: F401  (fixtures used by name)
    TRUSTED,
    Raw,
    _audit,
    _real_url,
    make_ledger,
    new_url,
    tampered,
)
from tests.support.ledger import (
    LEDGER_KEY,
    MakeLedger,
    append_n,
    append_one,
    make_envelope,
    verify_envelope,
    verify_facts,
)

FIXTURE = Path(__file__).resolve().parent.parent / "assets" / "ledger" / "v0001-with-replays.db"


# -- the database refuses a replay ------------------------------------------------------------


def test_the_unique_index_refuses_a_replay_written_with_raw_sql(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    assert isinstance(ledger, SqlLedger)
    append_n(ledger, 3)
    raw = Raw(_real_url(ledger))
    try:
        copy = raw.row(1)
        with pytest.raises(sa.exc.IntegrityError):
            raw.insert_row({**copy, "idx": 3})
    finally:
        raw.close()
    assert ledger.size() == 3


def _append_the_same(url: str, out: Any) -> None:
    ledger = open_ledger(url)
    try:
        append_one(ledger, make_envelope(42), 42)
        out.put("appended")
    except DuplicateEvidence as error:
        out.put(f"duplicate of {error.index}")
    finally:
        ledger.close()


@pytest.mark.slow
def test_concurrent_appends_of_one_envelope_record_it_once(new_url: Callable[[], str]) -> None:
    url = new_url()
    open_ledger(url).close()
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    workers = [context.Process(target=_append_the_same, args=(url, out)) for _ in range(8)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * 8
    results = sorted(out.get(timeout=5) for _ in workers)
    assert results == ["appended"] + ["duplicate of 0"] * 7
    ledger = open_ledger(url)
    try:
        assert ledger.size() == 1
    finally:
        ledger.close()


def test_a_replay_marker_set_on_an_original_is_flagged(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    """The occurrence column is not under the leaf hash; readers skip marked entries, so a
    marker set by raw SQL on an original (a failing test result, say) would hide it."""
    ledger, raw, head = tampered
    raw.run("UPDATE ledger_entries SET occurrence = 1 WHERE idx = 6")
    message = (
        "entry 6 is marked as copy 1 of its statement but is copy 0: its occurrence column "
        "was edited (it would hide the entry from readers)"
    )
    assert _audit(ledger).problems == [message]
    append_n(ledger, 2, start=12)
    raw.run("UPDATE ledger_entries SET occurrence = 3 WHERE idx = 13")
    report = verify_ledger(
        ledger, verify_envelope=verify_facts, checkpoint=head, checkpoint_verifiers=TRUSTED,
        incremental=True,
    )  # fmt: skip
    assert report.problems == [message.replace("6", "13").replace("copy 1", "copy 3")]


# -- the v0002 migration of a ledger written by schema 0001 -------------------------------------


def _copy_fixture_into(url: str) -> None:
    """Put the fixture's 0001-schema ledger at ``url`` (SQLite: the file; PostgreSQL: the
    0001 schema created by Alembic, then every row copied)."""
    target = sa.make_url(url)
    if target.get_backend_name() == "sqlite":
        assert target.database
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURE, target.database)
        return
    from alembic import command
    from alembic.config import Config

    from conveyor.ledger.sql import MIGRATIONS

    source = sa.create_engine(f"sqlite:///{FIXTURE}")
    engine = sa.create_engine(target.set(drivername="postgresql+psycopg"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001_ledger")
            conn.exec_driver_sql("DELETE FROM ledger_head")
            with source.connect() as read:
                for table in ("ledger_head", "ledger_entries", "ledger_nodes"):
                    found = read.exec_driver_sql(f"SELECT * FROM {table}")  # noqa: S608
                    rows = [dict(r._mapping) for r in found]
                    conn.execute(sa.table(table, *(sa.column(c) for c in rows[0])).insert(), rows)
                for r in read.exec_driver_sql("SELECT * FROM ledger_checkpoints"):
                    row = {k: v for k, v in r._mapping.items() if k != "id"}
                    columns = (sa.column(c) for c in row)
                    conn.execute(sa.table("ledger_checkpoints", *columns).insert(), row)
    finally:
        source.dispose()
        engine.dispose()


def test_migration_keeps_and_marks_the_replays_of_an_old_ledger(
    new_url: Callable[[], str],
) -> None:
    url = new_url()
    _copy_fixture_into(url)
    ledger = open_ledger(url)  # migrates 0001 → v0002
    try:
        raw = Raw(_real_url(ledger))
        assert [r[0] for r in raw.run("SELECT version_num FROM alembic_version")] == [SCHEMA_HEAD]
        raw.close()
        entries = ledger.entries()
        assert [e.index for e in entries] == list(range(8))
        assert [e.occurrence for e in entries] == [0, 0, 0, 0, 1, 1, 2, 0]
        assert all(e.statement_sha256 == statement_sha256(e.envelope) for e in entries)
        assert (
            entries[4].statement_sha256
            == entries[6].statement_sha256
            == entries[1].statement_sha256
        )
        assert entries[5].statement_sha256 == entries[2].statement_sha256
        assert entries[5].envelope != entries[2].envelope  # another wrapper, same statement
        # The tree is untouched: every hash, root and the stored (legacy) checkpoint hold; the
        # audit names exactly the three kept replays.
        report = verify_ledger(
            ledger, verify_envelope=verify_envelope, checkpoint_verifiers=TRUSTED
        )
        assert report.replays == [4, 5, 6]
        assert report.problems == [
            f"entry {j} repeats the signed statement of entry {i} (a replayed envelope: one "
            "statement is one entry; readers must not count it)"
            for j, i in ((4, 1), (5, 2), (6, 1))
        ]
        (stored,) = ledger.checkpoints()
        assert not stored.is_signed_note  # written in the legacy form, still read and trusted
        assert stored.verify(TRUSTED)
        # From now on the database refuses replays, and the ledger keeps growing.
        with pytest.raises(DuplicateEvidence) as caught:
            append_one(ledger, make_envelope(1), 1)
        assert caught.value.index == 1
        append_one(ledger, make_envelope(8), 8)
        cp = ledger.checkpoint(LEDGER_KEY)
        assert cp.is_signed_note
        again = verify_ledger(
            ledger, verify_envelope=verify_envelope, checkpoint=parse_checkpoint(cp.to_text()),
            checkpoint_verifiers=TRUSTED,
        )  # fmt: skip
        assert again.replays == [4, 5, 6]
        assert len(again.problems) == 3
    finally:
        ledger.close()


# -- rows checked against the signed tree head (issue 9 #3) ------------------------------------


def test_verify_inclusion_catches_a_back_dated_row(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    ledger, raw, head = tampered
    ledger.verify_inclusion(ledger.entries(), size=head.size, root=head.root)
    raw.run("UPDATE ledger_entries SET recorded_at = '2020-01-01T00:00:00.000000Z' WHERE idx = 5")
    rows = ledger.entries(subject_digest=f"sha256:{5 % 3:064x}")
    assert 5 in [e.index for e in rows]
    with pytest.raises(LedgerTampered) as caught:
        ledger.verify_inclusion(rows, size=head.size, root=head.root)
    assert caught.value.indexes == [5]
    # A forger who also rewrites the stored leaf hash and nodes still cannot match the root.
    raw.run(
        "UPDATE ledger_entries SET leaf_hash = :h WHERE idx = 5",
        h=ledger.entry(5).computed_leaf_hash(),
    )
    with pytest.raises(LedgerTampered):
        ledger.verify_inclusion([ledger.entry(5)], size=head.size, root=head.root)


def test_verify_inclusion_of_a_row_whose_nodes_were_deleted(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    ledger, raw, head = tampered
    raw.run("DELETE FROM ledger_nodes")
    with pytest.raises(LedgerTampered):
        ledger.verify_inclusion([ledger.entry(0)], size=head.size, root=head.root)


# -- the incremental audit against raw tampering -------------------------------------------------


def _incremental(ledger: SqlLedger, checkpoint: Any) -> Any:
    return verify_ledger(
        ledger, verify_envelope=verify_facts, checkpoint=checkpoint, checkpoint_verifiers=TRUSTED,
        incremental=True,
    )  # fmt: skip


def test_incremental_audit_catches_a_rewritten_tree_before_the_checkpoint(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    ledger, raw, head = tampered  # head: a checkpoint at size 12
    append_n(ledger, 4, start=12)
    assert _incremental(ledger, head).ok
    raw.run("UPDATE ledger_nodes SET hash = :h WHERE level = 3 AND idx = 0", h=b"\x00" * 32)
    report = _incremental(ledger, head)
    assert not report.ok
    assert report.problems[0].startswith(
        "the ledger's stored tree at size 12 does not have the trusted checkpoint's root"
    )


def test_incremental_audit_catches_edited_new_entries_and_nodes(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    ledger, raw, head = tampered
    append_n(ledger, 5, start=12)
    raw.run("UPDATE ledger_entries SET kind = 'approval' WHERE idx = 14")
    report = _incremental(ledger, head)
    assert report.first_bad_index == 14
    assert "leaf hash does not match" in report.problems[0]
    raw.run("UPDATE ledger_entries SET kind = 'promotion' WHERE idx = 14")  # put back
    assert _incremental(ledger, head).ok
    raw.run("UPDATE ledger_nodes SET hash = :h WHERE level = 2 AND idx = 3", h=b"\x01" * 32)
    report = _incremental(ledger, head)
    assert report.problems == [
        "the consistency proof from the trusted checkpoint (size 12) to the ledger's head "
        "(size 17) does not verify: the stored Merkle nodes were changed"
    ]


def test_incremental_audit_catches_a_truncation_below_the_checkpoint(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    ledger, raw, head = tampered
    raw.run("DELETE FROM ledger_entries WHERE idx >= 10")
    raw.run("UPDATE ledger_head SET size = 10")
    report = _incremental(ledger, head)
    assert not report.incremental  # the checkpoint is longer than the ledger: full audit
    assert any("truncated or restored from an older backup" in p for p in report.problems)


# -- reads that use indexes (issue 11) -------------------------------------------------------------


def _plan(ledger: SqlLedger, query: sa.Select[Any]) -> str:
    engine = ledger._engine
    with engine.connect() as conn:
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
            return " | ".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled}").all()
        return " | ".join(str(r[0]) for r in rows)


def test_the_reads_the_operations_need_use_indexes(make_ledger: MakeLedger) -> None:
    from conveyor.ledger.sql import _ENTRY_COLUMNS, entries_table

    ledger = make_ledger()
    assert isinstance(ledger, SqlLedger)
    append_n(ledger, 50)
    c = entries_table.c
    select = sa.select(*_ENTRY_COLUMNS).order_by(c.idx)
    for query, index in (
        (select.where(c.subject_digest == f"sha256:{0:064x}"), "ix_ledger_entries_subject_digest"),
        (select.where(c.kind == "promotion", c.environment == "production"),
         "ix_ledger_entries_environment_kind"),
        (select.where(c.environment == "production"), "ix_ledger_entries_environment"),
        (select.where(c.source_commit == "0" * 40), "ix_ledger_entries_source_commit"),
    ):  # fmt: skip
        plan = _plan(ledger, query)
        assert index in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "SCAN ledger_entries" not in plan.replace(
            f"ledger_entries USING INDEX {index}", ""
        ), plan


def test_the_latest_checkpoint_is_one_index_probe(make_ledger: MakeLedger) -> None:
    from conveyor.ledger.sql import _CHECKPOINT_COLUMNS, checkpoints_table

    ledger = make_ledger()
    assert isinstance(ledger, SqlLedger)
    append_n(ledger, 3)
    for _ in range(5):
        ledger.checkpoint(LEDGER_KEY)
    query = sa.select(*_CHECKPOINT_COLUMNS).order_by(checkpoints_table.c.id.desc()).limit(1)
    plan = _plan(ledger, query)
    assert "TEMP B-TREE" not in plan, plan  # SQLite: walks the rowid backwards, stops at one
    assert "Sort" not in plan, plan  # PostgreSQL: a backward index scan
    assert "Seq Scan" not in plan, plan
    assert ledger.latest_checkpoint() == ledger.checkpoints()[-1]


# -- one operation's reads on one connection (SqlLedger.reading) --------------------------------


def test_a_row_tampered_during_a_reading_block_is_read_as_it_now_stands(
    tampered: tuple[SqlLedger, Raw, Any],
) -> None:
    """The block's connection reads in autocommit: a row changed by another writer after it
    was read is read again as changed (no stale snapshot), and refused."""
    ledger, raw, head = tampered
    with ledger.reading():
        ledger.verify_inclusion(ledger.entries(), size=head.size, root=head.root)
        raw.run("UPDATE ledger_entries SET environment = 'staging' WHERE idx = 7")
        assert ledger.entry(7).environment == "staging"
        with pytest.raises(LedgerTampered) as caught:
            ledger.verify_inclusion(ledger.entries(), size=head.size, root=head.root)
        assert caught.value.indexes == [7]


def test_a_reading_block_holds_one_connection_and_its_writes_commit(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger()
    assert isinstance(ledger, SqlLedger)
    append_n(ledger, 3)
    checkouts: list[object] = []
    sa.event.listen(ledger._engine.pool, "checkout", lambda *a: checkouts.append(a))
    raw = Raw(_real_url(ledger))
    try:
        with ledger.reading():
            for _ in range(5):
                ledger.entries(kind="build", newest_first=True, limit=2)
                ledger.head()
            append_n(ledger, 1, start=3)  # a transaction of its own: committed at once
            assert raw.run("SELECT count(*) FROM ledger_entries")[0][0] == 4

            class Boom(Exception):
                pass

            def fails() -> None:
                with ledger.serialized("promote/staging"):
                    append_n(ledger, 1, start=4)
                    raise Boom

            with pytest.raises(Boom):
                fails()
            assert ledger.size() == 4  # rolled back
            with ledger.serialized("promote/staging"):
                append_n(ledger, 2, start=4)
                assert raw.run("SELECT size FROM ledger_head")[0][0] == 4  # not yet committed
            assert raw.run("SELECT size FROM ledger_head")[0][0] == 6
            # Back in autocommit: another writer's append is seen at once.
            other = open_ledger(_real_url(ledger))
            append_n(other, 1, start=6)
            other.close()
            assert ledger.size() == 7
        if ledger._postgres:
            assert len(checkouts) == 1
        assert verify_ledger(ledger, verify_envelope=verify_envelope).ok
    finally:
        raw.close()
