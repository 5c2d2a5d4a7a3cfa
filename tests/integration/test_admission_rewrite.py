"""A ledger history rewritten under a running webhook, every hash recomputed, is refused.

Production's promotions: D1, D2, D3; with ``previous: 1`` D1 has left the window. A writer
with database access but no key removes D3's promotion, recomputes the whole tree (a
self-consistent ledger: nothing inside it is wrong) and pads it past its old size. Read from
scratch, that history admits D1 again; the webhook, which holds the head it saw, finds the
new head does not extend it and denies everything.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.ledger import open_ledger
from tests.support.admission import (
    IDENTITIES,
    admission_team,
    build,
    pod_review,
    promote,
    start_tls_server,
)

pytestmark = pytest.mark.slow


def _rewrite(db: Path, scratch: Path) -> None:
    """Rebuild the ledger without its last promotion and copy it over the live one."""
    live = open_ledger(f"sqlite:///{db}")
    rewritten = open_ledger(f"sqlite:///{scratch}")
    try:
        entries = live.entries()
        last = max(e.index for e in entries if e.kind == "promotion")
        kept = [e for e in entries if e.index != last]
        padding = len(entries) + 2 - len(kept)
        for n, entry in enumerate(kept + kept[:padding]):
            rewritten.append(
                entry.envelope if n < len(kept) else b'{"padding": %d}' % n,
                subject_digest=entry.subject_digest, subject_name=entry.subject_name,
                predicate_type=entry.predicate_type, kind=entry.kind, signer=entry.signer,
                keyid=entry.keyid, environment=entry.environment, commit=entry.commit,
            )  # fmt: skip
        assert rewritten.size() > live.size()
    finally:
        live.close()
        rewritten.close()
    with sqlite3.connect(db) as conn:
        conn.execute("ATTACH DATABASE ? AS rewritten", (str(scratch),))
        for table in ("ledger_entries", "ledger_nodes", "ledger_head"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed table names)
            conn.execute(f"INSERT INTO {table} SELECT * FROM rewritten.{table}")  # noqa: S608


def test_a_history_rewritten_while_serving_is_denied(tmp_path: Path) -> None:
    team = admission_team(tmp_path / "team")
    tokens = {identity: team.token(f"{identity}-token", identity) for identity in IDENTITIES}
    tls = start_tls_server(team)
    tls.tokens.update(tokens)
    try:
        digests = []
        for tag in ("v1", "v2", "v3"):
            ref, digest = build(tls, team, tag)
            promote(tls, ref, "production")
            digests.append(digest)
        d1, _d2, d3 = digests
        assert tls.review(pod_review(d3))["allowed"] is True  # the cache holds this head
        assert "not within the last 2" in tls.review(pod_review(d1))["status"]["message"]
        _rewrite(team.root / ".conveyor" / "conveyor.db", tmp_path / "rewritten.db")
        for running in (d1, d3):
            response = tls.review(pod_review(running))
            assert response["allowed"] is False, response
            message = response["status"]["message"]
            assert "could not decide, so it denies" in message
            assert "does not extend the head it had" in message
    finally:
        tls.stop()
