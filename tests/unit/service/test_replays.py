"""A hostile database writer against the verified reader (issue 9 #1, #3, #11).

Every attacker here can write the SQLite ledger but holds no signing key. Old, validly
signed envelopes are replayed through the ledger's own append path (which refuses them)
and with raw SQL (which defeats that refusal); rows are back-dated with raw SQL. Each must
leave the decision unchanged or make it fail closed.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import service
from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    SMOKE_V1,
    VULNS_V02,
    Signer,
    approval,
    load_signing_key,
    make_statement,
    sign_envelope,
    smoke,
)
from conveyor.ledger import DuplicateEvidence, LedgerTampered, SqlLedger, open_ledger
from conveyor.oci.digest import Digest
from conveyor.policy.config import load_config
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import push_image

HOST = "registry.example"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IDENTITIES = {
    "ci": "builder, tester, scanner",
    "deployer": "deployer",
    "alice": "approver",
}
ENVIRONMENTS = f"""\
environments:
  staging:
    repository: {HOST}/team/web-staging
    requires:
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0}}, max_age: 24h}}
  production:
    repository: {HOST}/team/web
    requires:
      after: {{environment: staging, smoke: true}}
      approvals: {{count: 1, max_age: 24h}}
"""
PASSING = '<testsuite name="u"><testcase name="a"/></testsuite>'
FAILING = '<testsuite name="u"><testcase name="a"><failure/></testcase></testsuite>'


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _trivy(created: str, critical: int = 0) -> dict[str, Any]:
    vulns = [
        {"VulnerabilityID": f"CVE-1-{i}", "PkgName": "p", "InstalledVersion": "1",
         "Severity": "CRITICAL"}
        for i in range(critical)
    ]  # fmt: skip
    return {
        "SchemaVersion": 2,
        "CreatedAt": created,
        "ArtifactName": "example/app",
        "ArtifactType": "container_image",
        "Metadata": {},
        "Results": [{"Target": "app", "Class": "os-pkgs", "Vulnerabilities": vulns}],
    }


@dataclass
class World:
    root: Path
    ws: service.Workspace
    ledger: SqlLedger
    db: Path
    fake: FakeRegistry
    signers: dict[str, Signer]

    def built(self, tag: str = "v1") -> str:
        image = push_image(self.fake, "team/build", tag)
        ref = f"{HOST}/team/build@{image.digest}"
        service.record_build(ref, commit=COMMIT, workspace=self.ws, signer=self.signers["ci"])
        return ref

    def tests(self, ref: str, xml: str) -> int:
        path = self.root / f"junit-{secrets.token_hex(4)}.xml"
        path.write_text(xml)
        recorded = service.attest_tests(ref, [path], workspace=self.ws, signer=self.signers["ci"])
        return recorded.ledger_index

    def scan(self, ref: str, *, critical: int = 0, created: str | None = None) -> int:
        path = self.root / f"scan-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps(_trivy(created or _z(datetime.now(UTC)), critical)))
        recorded = service.attest_scan(ref, path, workspace=self.ws, signer=self.signers["ci"])
        return recorded.ledger_index

    def sign(self, ref: str, predicate_type: str, predicate: dict[str, Any], who: str) -> bytes:
        digest = Digest.parse(ref.split("@")[1])
        statement = make_statement(f"{HOST}/team/build", digest, predicate_type, predicate)
        return sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [self.signers[who]])

    def append(
        self,
        ref: str,
        envelope: bytes,
        *,
        predicate_type: str,
        kind: str,
        who: str,
        environment: str | None = None,
        at: datetime | None = None,
    ) -> int:
        entry = self.ledger.append(
            envelope,
            subject_digest=ref.split("@")[1],
            subject_name=f"{HOST}/team/build",
            predicate_type=predicate_type,
            kind=kind,
            signer=who,
            keyid=self.signers[who].keyid,
            environment=environment,
            recorded_at=at,
        )
        return entry.index

    def sql(self, statement: str, *args: object) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute(statement, args)

    def replay_through_append(self, index: int) -> None:
        """The ledger's own append path refuses an old envelope outright."""
        old = self.ledger.entry(index)
        with pytest.raises(DuplicateEvidence) as info:
            self._reappend(old)
        assert info.value.index == index

    def replay_with_sql(self, index: int) -> int:
        """Raw SQL hides the old row's statement digest (not part of the Merkle leaf), so
        the append path takes the envelope again: a replay the tree itself is consistent
        with (``audit verify`` is the place that names it)."""
        old = self.ledger.entry(index)
        self.sql(
            "UPDATE ledger_entries SET statement_sha256 = ? WHERE idx = ?",
            secrets.token_hex(32),
            index,
        )
        return self._reappend(old)

    def _reappend(self, old: Any) -> int:
        entry = self.ledger.append(
            old.envelope,
            subject_digest=old.subject_digest,
            subject_name=old.subject_name,
            predicate_type=old.predicate_type,
            kind=old.kind,
            signer=old.signer,
            keyid=old.keyid,
            environment=old.environment,
            commit=old.commit,
        )
        return entry.index

    def verdict(self, ref: str, env: str) -> tuple[bool, tuple[tuple[str, bool], ...]]:
        decision = service.check(ref, environment=env, workspace=self.ws).decision
        return decision.allowed, tuple((g.gate, g.passed) for g in decision.gates)


def make_world(tmp_path: Path, *, ledger_key: bool = False, remember_reads: bool = False) -> World:
    lines = ["version: 1", "identities:"]
    signers = {}
    for name, roles in IDENTITIES.items():
        key = service.generate_keys(name, out_dir=tmp_path / "keys")
        signers[name] = load_signing_key(str(key.private_key))
        lines.append(f"  {name}: {{key: keys/{name}.pub, roles: [{roles}]}}")
    if ledger_key:
        service.generate_keys("ledger", out_dir=tmp_path / "keys")
        lines += ["ledger:", "  key: keys/ledger.key", "  public_key: keys/ledger.pub"]
    path = tmp_path / "conveyor.yaml"
    path.write_text("\n".join(lines) + "\n" + ENVIRONMENTS)
    db = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{db}")
    fake = FakeRegistry(HOST)
    opener = service.RegistryOpener(service.RegistryOptions(transport=fake.transport))
    ws = service.Workspace(
        config=load_config(path), ledger=ledger, opener=opener, remember_reads=remember_reads
    )
    return World(tmp_path, ws, ledger, db, fake, signers)


# Every attack also against a server's workspace, whose ReadCache believes rows it checked.
@pytest.fixture(params=[False, True], ids=["fresh", "cached"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    made = make_world(tmp_path, remember_reads=request.param)
    yield made
    made.ws.opener.close()
    made.ledger.close()


@pytest.fixture(params=[False, True], ids=["fresh", "cached"])
def keyed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    made = make_world(tmp_path, ledger_key=True, remember_reads=request.param)
    yield made
    made.ws.opener.close()
    made.ledger.close()


# --- replays leave every decision unchanged -------------------------------------------------


def test_a_replayed_passing_test_result_does_not_replace_the_failing_one(world: World) -> None:
    ref = world.built()
    world.scan(ref)
    passed = world.tests(ref, PASSING)
    world.tests(ref, FAILING)
    before = world.verdict(ref, "staging")
    assert ("tests", False) in before[1]
    world.replay_through_append(passed)
    assert world.verdict(ref, "staging") == before
    world.replay_with_sql(passed)
    assert world.verdict(ref, "staging") == before


def test_a_replayed_clean_scan_does_not_replace_the_critical_one(world: World) -> None:
    ref = world.built()
    world.tests(ref, PASSING)
    clean = world.scan(ref)
    world.scan(ref, critical=1)
    before = world.verdict(ref, "staging")
    assert ("scan", False) in before[1]
    world.replay_through_append(clean)
    assert world.verdict(ref, "staging") == before
    world.replay_with_sql(clean)
    assert world.verdict(ref, "staging") == before


def test_a_replayed_expired_approval_is_not_fresh(world: World) -> None:
    ref = world.built()
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    envelope = world.sign(
        ref, APPROVAL_V1, approval(environment="production", at=three_days_ago), "alice"
    )
    old = world.append(
        ref, envelope, predicate_type=APPROVAL_V1, kind="approval", who="alice",
        environment="production", at=three_days_ago,
    )  # fmt: skip
    before = world.verdict(ref, "production")
    assert ("approvals", False) in before[1]
    world.replay_through_append(old)
    assert world.verdict(ref, "production") == before
    world.replay_with_sql(old)
    assert world.verdict(ref, "production") == before


def test_a_replayed_old_smoke_test_is_not_after_the_arrival(world: World) -> None:
    ref = world.built()
    world.tests(ref, PASSING)
    world.scan(ref)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    envelope = world.sign(
        ref, SMOKE_V1, smoke(environment="staging", passed=True, at=two_hours_ago), "ci"
    )
    old = world.append(
        ref, envelope, predicate_type=SMOKE_V1, kind="smoke", who="ci",
        environment="staging", at=two_hours_ago,
    )  # fmt: skip
    service.promote(
        ref, environment="staging", workspace=world.ws, signer=world.signers["deployer"]
    )
    service.approve(
        ref, environment="production", workspace=world.ws, signer=world.signers["alice"]
    )
    before = world.verdict(ref, "production")
    assert ("after", False) in before[1]
    world.replay_through_append(old)
    assert world.verdict(ref, "production") == before
    world.replay_with_sql(old)
    assert world.verdict(ref, "production") == before
    # …and a smoke test made now does count: the gate is not simply stuck shut.
    service.attest_smoke(
        ref, environment="staging", passed=True, workspace=world.ws, signer=world.signers["ci"]
    )
    assert world.verdict(ref, "production")[0]


def test_trace_names_the_replay(world: World) -> None:
    ref = world.built()
    passed = world.tests(ref, PASSING)
    copy = world.replay_with_sql(passed)
    events = {e.index: e for e in service.trace(ref, workspace=world.ws).events}
    assert events[passed].verified
    assert not events[copy].verified
    assert "replay" in events[copy].summary


# --- signed times out of bounds do not count ------------------------------------------------


def test_a_scan_whose_signed_time_does_not_parse_is_not_dated_by_its_record(
    world: World,
) -> None:
    ref = world.built()
    world.tests(ref, PASSING)
    scan = {
        "scanner": {"uri": "pkg:github/aquasecurity/trivy", "db": {}, "result": []},
        "metadata": {"scanStartedOn": "0000-00-00T00:00:00Z", "scanFinishedOn": "0000-00-00"},
    }
    world.append(
        ref, world.sign(ref, VULNS_V02, scan, "ci"), predicate_type=VULNS_V02, kind="scan",
        who="ci",
    )  # fmt: skip
    checked = service.check(ref, environment="staging", workspace=world.ws)
    gate = next(g for g in checked.decision.gates if g.gate == "scan")
    assert not gate.passed
    assert "no scan" in gate.reason
    assert any("scanFinishedOn" in line and "does not parse" in line for line in checked.ignored)


def test_an_approval_signed_in_the_future_does_not_count(world: World) -> None:
    ref = world.built()
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    envelope = world.sign(
        ref, APPROVAL_V1, approval(environment="production", at=tomorrow), "alice"
    )
    world.append(
        ref, envelope, predicate_type=APPROVAL_V1, kind="approval", who="alice",
        environment="production",
    )  # fmt: skip
    checked = service.check(ref, environment="production", workspace=world.ws)
    assert ("approvals", False) in {(g.gate, g.passed) for g in checked.decision.gates}
    assert any("clock skew" in line for line in checked.ignored)


def test_a_result_signed_long_before_it_was_recorded_does_not_count(world: World) -> None:
    ref = world.built()
    week_ago = datetime.now(UTC) - timedelta(days=7)
    envelope = world.sign(
        ref, APPROVAL_V1, approval(environment="production", at=week_ago), "alice"
    )
    world.append(
        ref, envelope, predicate_type=APPROVAL_V1, kind="approval", who="alice",
        environment="production",
    )  # fmt: skip
    checked = service.check(ref, environment="production", workspace=world.ws)
    assert any("before it was recorded" in line for line in checked.ignored)


# --- re-recording the same statement ------------------------------------------------------


def test_recording_the_same_build_again_names_the_entry_that_holds_it(world: World) -> None:
    ref = world.built()
    size = world.ledger.size()
    again = service.record_build(ref, commit=COMMIT, workspace=world.ws, signer=world.signers["ci"])
    assert world.ledger.size() == size
    assert again.ledger_index == size - 1
    assert any("already recorded as ledger #" in note for note in again.notes)


# --- rows that do not belong to the signed tree fail closed --------------------------------


def _back_date_the_failure(world: World) -> str:
    ref = world.built()
    world.scan(ref)
    world.tests(ref, PASSING)
    failed = world.tests(ref, FAILING)
    assert not world.verdict(ref, "staging")[0]
    # The failing result, back-dated before the pass (and its time kept in bounds).
    world.sql(
        "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?",
        "2000-01-01T00:00:00.000000Z",
        failed,
    )
    return ref


def test_a_back_dated_failing_result_fails_check_closed(world: World) -> None:
    ref = _back_date_the_failure(world)
    with pytest.raises(LedgerTampered) as info:
        service.check(ref, environment="staging", workspace=world.ws)
    assert info.value.exit_code == 1
    assert "do not belong to the signed tree head" in str(info.value)


def test_a_back_dated_failing_result_under_a_checkpoint_fails_promote_closed(
    keyed: World,
) -> None:
    ref = keyed.built()
    keyed.scan(ref)
    keyed.tests(ref, PASSING)
    failed = keyed.tests(ref, FAILING)
    service.audit_checkpoint(workspace=keyed.ws)
    # The row lies under the signed checkpoint: it is proved against that, not the head.
    keyed.sql(
        "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?",
        "2000-01-01T00:00:00.000000Z",
        failed,
    )
    with pytest.raises(LedgerTampered):
        service.promote(
            ref, environment="staging", workspace=keyed.ws, signer=keyed.signers["deployer"]
        )
    assert service.history("staging", workspace=keyed.ws) == []


def test_a_forged_checkpoint_row_fails_closed(keyed: World) -> None:
    ref = keyed.built()
    service.audit_checkpoint(workspace=keyed.ws)
    keyed.sql("UPDATE ledger_checkpoints SET signature = ?", b"\0" * 64)
    with pytest.raises(LedgerTampered) as info:
        service.check(ref, environment="staging", workspace=keyed.ws)
    assert "checkpoint" in str(info.value)


def test_status_and_history_check_the_rows_they_show(world: World) -> None:
    ref = world.built()
    world.tests(ref, PASSING)
    world.scan(ref)
    result = service.promote(
        ref, environment="staging", workspace=world.ws, signer=world.signers["deployer"]
    )
    assert service.status(workspace=world.ws)[0].current is not None
    world.sql(
        "UPDATE ledger_entries SET recorded_at = ? WHERE idx = ?",
        "2000-01-01T00:00:00.000000Z",
        result.ledger_index,
    )
    with pytest.raises(LedgerTampered):
        service.history("staging", workspace=world.ws)
    with pytest.raises(LedgerTampered):
        service.status(workspace=world.ws)


def test_a_replay_an_old_ledger_kept_counts_for_nothing(world: World) -> None:
    """What the v0002 migration leaves of an old ledger's replays: a later copy marked
    ``occurrence`` 1 under the same statement digest."""
    ref = world.built()
    world.scan(ref)
    passed = world.tests(ref, PASSING)
    world.tests(ref, FAILING)
    before = world.verdict(ref, "staging")
    held = world.ledger.entry(passed).statement_sha256
    copy = world.replay_with_sql(passed)
    world.sql(
        "UPDATE ledger_entries SET statement_sha256 = ?, occurrence = 1 WHERE idx = ?", held, copy
    )
    world.sql("UPDATE ledger_entries SET statement_sha256 = ? WHERE idx = ?", held, passed)
    assert world.ledger.entry(copy).occurrence == 1
    assert world.verdict(ref, "staging") == before


def test_an_occurrence_column_set_with_sql_does_not_hide_a_result(world: World) -> None:
    """``occurrence`` is not part of the Merkle leaf: the reader computes replays itself."""
    ref = world.built()
    world.scan(ref)
    world.tests(ref, PASSING)
    failed = world.tests(ref, FAILING)
    before = world.verdict(ref, "staging")
    world.sql("UPDATE ledger_entries SET occurrence = 1 WHERE idx = ?", failed)
    assert world.verdict(ref, "staging") == before
