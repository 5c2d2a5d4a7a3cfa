"""Issue 9 #7: rotating an identity's key keeps its history.

A retired key still vouches for what it signed before its retirement (recorded before it
AND signed before it): status, history, ``after`` gates, rollback and ``audit verify`` keep
working after ``conveyor keys rotate``. What it signs after its retirement counts nowhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor import service
from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    approval,
    load_signing_key,
    make_statement,
    sign_envelope,
)
from conveyor.errors import ConfigError, InputError
from conveyor.ledger import MemoryLedger, open_ledger
from conveyor.oci.digest import Digest
from conveyor.policy.config import load_config
from tests.unit.service._pipeline import Pipeline, make_pipeline

IDENTITIES = {
    "ci": "builder, tester, scanner",
    "deployer": "deployer",
    "alice": "approver",
}
BODY = """\
# the ledger, beside this file
environments:
  staging:
    repository: oci:./staging   # keep this comment
    tags: [staging]
    requires:
      provenance: {}
  production:
    repository: oci:./production
    tags: [production]
    requires:
      after: staging
      approvals: {count: 1}
"""


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path / "p", IDENTITIES, BODY)


def _promoted_through(pipeline: Pipeline) -> tuple[str, str]:
    """v1 in staging and production, v2 in staging: a history worth keeping."""
    first, second = pipeline.built("v1"), pipeline.built("v2")
    pipeline.promote(first, "staging")
    pipeline.approve(first, "production", "alice")
    pipeline.promote(first, "production")
    pipeline.promote(second, "staging")
    return first, second


def _views(pipeline: Pipeline) -> dict[str, object]:
    status = {s.environment: s.current.digest if s.current else None for s in
              service.status(config_path=pipeline.config)}  # fmt: skip
    return {
        "status": status,
        "history": [h.digest for h in service.history("staging", config_path=pipeline.config)],
        "audit": service.audit_verify(config_path=pipeline.config).ok,
    }


def test_rotating_the_deployers_key_keeps_status_history_after_rollback_and_audit(
    pipeline: Pipeline,
) -> None:
    first, second = _promoted_through(pipeline)
    before = _views(pipeline)
    assert before["audit"] is True
    comments = [line for line in pipeline.config.read_text().splitlines() if "#" in line]
    rotation = service.rotate_key("deployer", config_path=pipeline.config)
    text = pipeline.config.read_text()
    assert [line for line in text.splitlines() if "#" in line] == comments
    assert "retired: " in text
    # The new key is the current one; the CI keeps pointing at the file it now holds.
    new_key = str(rotation.new_key.private_key)
    after = _views(pipeline)
    assert after == before
    # `after: staging` still sees the promotions the retired key signed.
    third = pipeline.built("v3")
    pipeline.approve(second, "production", "alice")
    promoted = service.promote(
        second, environment="production", key=new_key, config_path=pipeline.config
    )
    assert promoted.recorded
    back = service.rollback("production", key=new_key, config_path=pipeline.config)
    assert str(back.digest) == first.split("@")[1]
    assert service.promote(third, environment="staging", key=new_key, config_path=pipeline.config)
    assert service.audit_verify(config_path=pipeline.config).ok
    # The retired key records nothing new.
    with pytest.raises(service.UnknownSignerError, match="retired"):
        pipeline.promote(pipeline.built("v4"), "staging")


def test_replacing_the_key_in_place_was_what_erased_the_history(pipeline: Pipeline) -> None:
    """The issue's reproduction, as a user did it before `keys rotate`: it still erases
    everything (the old key is simply not trusted); the retired form keeps it."""
    _promoted_through(pipeline)
    keys = pipeline.root / "keys"
    service.generate_keys("deployer2", out_dir=keys)
    text = pipeline.config.read_text()
    pipeline.config.write_text(
        text.replace("{key: keys/deployer.pub,", "{key: keys/deployer2.pub,")
    )
    assert _views(pipeline)["history"] == []
    retired = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    pipeline.config.write_text(
        text.replace(
            "{key: keys/deployer.pub,",
            f"{{keys: [{{key: keys/deployer2.pub}}, {{key: keys/deployer.pub, retired: "
            f"'{retired}'}}],",
        )
    )
    assert len(_views(pipeline)["history"]) == 2  # type: ignore[arg-type]


def _approval_signed(pipeline: Pipeline, ref: str, *, at: datetime | None) -> bytes:
    signer = load_signing_key(pipeline.key("alice"))
    digest = Digest.parse(ref.split("@")[1])
    statement = make_statement(
        "example/app", digest, APPROVAL_V1, approval(environment="production", at=at)
    )
    return sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])


def _append(pipeline: Pipeline, envelope: bytes, ref: str, keyid: str) -> None:
    config = load_config(pipeline.config)
    ledger = open_ledger(config.configured_ledger_url)
    try:
        ledger.append(
            envelope,
            subject_digest=ref.split("@")[1],
            subject_name="example/app",
            predicate_type=APPROVAL_V1,
            kind="approval",
            signer="alice",
            keyid=keyid,
            environment="production",
        )
    finally:
        ledger.close()


def test_a_statement_by_a_retired_key_after_its_retirement_does_not_count(
    pipeline: Pipeline,
) -> None:
    first = pipeline.built("v1")
    pipeline.promote(first, "staging")
    old = load_signing_key(pipeline.key("alice"))
    rotation = service.rotate_key("alice", config_path=pipeline.config)
    # Someone holding the old private key signs an approval after the retirement and
    # writes it straight into the ledger (recorded after, signed after).
    envelope = _approval_signed(pipeline, first, at=datetime.now(UTC))
    _append(pipeline, envelope, first, old.keyid)
    checked = service.check(first, environment="production", config_path=pipeline.config)
    assert not checked.decision.allowed
    assert any("retired" in note for note in checked.ignored)
    report = service.audit_verify(config_path=pipeline.config)
    assert not report.ok
    assert any("retired" in problem for problem in report.problems)
    # Back-dated signed time does not help: the record time is after the retirement.
    _append(pipeline, _approval_signed(pipeline, first, at=rotation.retired_at - timedelta(days=1)),
            first, old.keyid)  # fmt: skip
    assert not service.check(
        first, environment="production", config_path=pipeline.config
    ).decision.allowed
    # The new key's approval counts.
    service.approve(
        first,
        environment="production",
        key=str(rotation.new_key.private_key),
        config_path=pipeline.config,
    )
    assert service.check(
        first, environment="production", config_path=pipeline.config
    ).decision.allowed


def test_recorded_before_but_signed_after_the_retirement_does_not_count(
    pipeline: Pipeline,
) -> None:
    first = pipeline.built("v1")
    pipeline.promote(first, "staging")
    old = load_signing_key(pipeline.key("alice"))
    retired = datetime.now(UTC) + timedelta(hours=1)  # scheduled retirement
    text = pipeline.config.read_text()
    service.generate_keys("alice2", out_dir=pipeline.root / "keys")
    pipeline.config.write_text(
        text.replace(
            "{key: keys/alice.pub,",
            "{keys: [{key: keys/alice2.pub}, {key: keys/alice.pub, retired: "
            f"'{retired.isoformat()}'}}],",
        )
    )
    # Recorded now (before), but it claims a signed time after the retirement.
    _append(pipeline, _approval_signed(pipeline, first, at=retired + timedelta(minutes=1)),
            first, old.keyid)  # fmt: skip
    checked = service.check(first, environment="production", config_path=pipeline.config)
    assert not checked.decision.allowed
    assert any("signed after it" in note for note in checked.ignored)
    # Signed and recorded before: counts.
    _append(pipeline, _approval_signed(pipeline, first, at=datetime.now(UTC)), first, old.keyid)
    assert service.check(
        first, environment="production", config_path=pipeline.config
    ).decision.allowed


# --- the config forms and the rewrite ---------------------------------------------------------


def test_rotate_twice_keeps_both_retired_keys_and_the_block_form(pipeline: Pipeline) -> None:
    first = service.rotate_key(
        "deployer", config_path=pipeline.config, now=datetime(2026, 11, 1, tzinfo=UTC)
    )
    second = service.rotate_key(
        "deployer", config_path=pipeline.config, now=datetime(2026, 11, 2, tzinfo=UTC)
    )
    config = load_config(pipeline.config)
    keys = config.identities["deployer"].all_keys
    assert [k.path for k in keys] == [
        second.new_key.public_key,
        first.new_key.public_key,
        pipeline.root / "keys" / "deployer.pub",
    ]
    assert [k.retired for k in keys] == [
        None,
        datetime(2026, 11, 2, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    ]
    assert config.identities["deployer"].key_path == second.new_key.public_key


BLOCK = """\
version: 1
identities:
  # who deploys
  deployer:
    keys:
      - key: keys/deployer.pub   # the first one
        # note
      - key: keys/old.pub
        retired: 2026-01-01
    roles: [deployer]
"""


def test_rotate_edits_a_block_keys_list_surgically(tmp_path: Path) -> None:
    service.generate_keys("deployer", out_dir=tmp_path / "keys")
    service.generate_keys("old", out_dir=tmp_path / "keys")
    path = tmp_path / "conveyor.yaml"
    path.write_text(BLOCK)
    rotation = service.rotate_key(
        "deployer", config_path=path, now=datetime(2026, 12, 1, 12, tzinfo=UTC)
    )
    stem = rotation.new_key.public_key.name
    assert path.read_text() == BLOCK.replace(
        "      - key: keys/deployer.pub   # the first one\n",
        f"      - {{key: keys/{stem}}}\n"
        "      - key: keys/deployer.pub   # the first one\n"
        "        retired: 2026-12-01T12:00:00Z\n",
    )
    assert load_config(path).identities["deployer"].key_path == rotation.new_key.public_key


def test_rotate_refuses_an_unknown_identity_and_leaves_no_files(pipeline: Pipeline) -> None:
    before = sorted(p.name for p in (pipeline.root / "keys").iterdir())
    with pytest.raises(InputError, match="no identity 'mallory'"):
        service.rotate_key("mallory", config_path=pipeline.config)
    assert sorted(p.name for p in (pipeline.root / "keys").iterdir()) == before


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{key: keys/ci.pub, keys: [{key: keys/ci.pub}], roles: [builder]}", "not both"),
        ("{keys: [], roles: [builder]}", "at least 1"),
        ("{keys: [{key: keys/ci.pub}, {key: keys/ci.pub}], roles: [builder]}", "more than once"),
        ("{keys: [{key: keys/ci.pub, retired: 2027-13-45}], roles: [builder]}", "2027-13-45"),
        ("{keys: [{key: keys/ci.pub, retired: true}], roles: [builder]}", "retired"),
        ("{keys: [{key: keys/nope.pub}], roles: [builder]}", "does not exist"),
        ("{keys: [{key: keys/ci.pub, expires: 2027-01-01}], roles: [builder]}", "expires"),
    ],
)
def test_hostile_keys_forms_are_one_clear_error(tmp_path: Path, spec: str, message: str) -> None:
    service.generate_keys("ci", out_dir=tmp_path / "keys")
    path = tmp_path / "conveyor.yaml"
    path.write_text(f"version: 1\nidentities:\n  ci: {spec}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in " ".join(info.value.problems) + str(info.value)
    assert "conveyor.yaml:3" in " ".join(info.value.problems) + str(info.value)


def test_one_key_under_two_identities_is_refused(tmp_path: Path) -> None:
    service.generate_keys("ci", out_dir=tmp_path / "keys")
    path = tmp_path / "conveyor.yaml"
    path.write_text(
        "version: 1\nidentities:\n  ci: {key: keys/ci.pub, roles: [builder]}\n"
        "  other: {keys: [{key: keys/x.pub}, {key: keys/ci.pub, retired: 2026-01-01}], "
        "roles: [tester]}\n"
    )
    service.generate_keys("x", out_dir=tmp_path / "keys")
    with pytest.raises(ConfigError, match="one key, one identity"):
        service.Workspace(config=load_config(path), ledger=MemoryLedger())
