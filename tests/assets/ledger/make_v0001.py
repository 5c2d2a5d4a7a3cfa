import json, base64, sys
sys.path.insert(0, ".")
from datetime import UTC, datetime
from conveyor.ledger import open_ledger
from tests.support.ledger import make_envelope, LEDGER_KEY, CI_KEY

path = "tests/assets/ledger/v0001-with-replays.db"
ledger = open_ledger(f"sqlite:///{path}")
def add(env, n, when):
    return ledger.append(env, subject_digest=f"sha256:{n:064x}", subject_name="example.com/app",
        predicate_type="https://conveyor.dev/test/v1", kind="tests", signer="ci", keyid=CI_KEY.keyid,
        environment=None, recorded_at=datetime(2026, 11, 20, 10, when, tzinfo=UTC))
envs = [make_envelope(n) for n in range(4)]
for n, e in enumerate(envs):
    add(e, n, n)
add(envs[1], 1, 10)              # the same envelope again (a replay)
doc = json.loads(envs[2])
doc["signatures"] = doc["signatures"] + [{"keyid": "other", "sig": base64.b64encode(b"x"*32).decode()}]
add(json.dumps(doc).encode(), 2, 11)  # the same statement, another signature wrapper
add(envs[1], 1, 12)              # a third copy of entry 1
add(make_envelope(4), 4, 13)
ledger.checkpoint(LEDGER_KEY)
print(ledger.size(), ledger.origin)
ledger.close()
