"""Writes v0001-with-replays.db. Run from the repository root with the code of commit e592a21
(schema 0001): ``python tests/assets/ledger/make_v0001.py``. Kept to show how the fixture was
made; the tests only read the committed database."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime

sys.path.insert(0, ".")

from tests.support.ledger import CI_KEY, LEDGER_KEY, make_envelope

from conveyor.ledger import open_ledger

PATH = "tests/assets/ledger/v0001-with-replays.db"


def main() -> None:
    ledger = open_ledger(f"sqlite:///{PATH}")

    def add(envelope: bytes, n: int, minute: int) -> None:
        ledger.append(
            envelope,
            subject_digest=f"sha256:{n:064x}",
            subject_name="example.com/app",
            predicate_type="https://conveyor.dev/test/v1",
            kind="tests",
            signer="ci",
            keyid=CI_KEY.keyid,
            recorded_at=datetime(2026, 11, 20, 10, minute, tzinfo=UTC),
        )

    envelopes = [make_envelope(n) for n in range(4)]
    for n, envelope in enumerate(envelopes):
        add(envelope, n, n)
    add(envelopes[1], 1, 10)  # the same envelope again (a replay)
    doc = json.loads(envelopes[2])
    doc["signatures"].append({"keyid": "other", "sig": base64.b64encode(b"x" * 32).decode()})
    add(json.dumps(doc).encode(), 2, 11)  # the same statement, another signature wrapper
    add(envelopes[1], 1, 12)  # a third copy of entry 1
    add(make_envelope(4), 4, 13)
    ledger.checkpoint(LEDGER_KEY)
    ledger.close()


if __name__ == "__main__":
    main()
