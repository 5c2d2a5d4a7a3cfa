"""Promotion in-process: a ``Workspace`` built from the in-memory ledger and the fake
registry (no SQLite, no subprocess), covering the paths the end-to-end tests cannot reach."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import service
from conveyor.attest import (
    APPROVAL_V1,
    IN_TOTO_PAYLOAD_TYPE,
    PROMOTION_V1,
    Signer,
    approval,
    load_signing_key,
    make_statement,
    promotion,
    sign_envelope,
)
from conveyor.errors import InputError
from conveyor.ledger import MemoryLedger
from conveyor.oci.digest import Digest
from conveyor.oci.name import parse_target
from conveyor.policy.config import load_config
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import push_image

HOST = "registry.example"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IDENTITIES = {
    "ci": "builder, tester, scanner",
    "deployer": "deployer",
    "alice": "approver",
    "bob": "approver",
}
ENVIRONMENTS = f"""\
environments:
  staging:
    repository: {HOST}/team/web-staging
    tags: [staging]
    requires: {{}}
  production:
    repository: {HOST}/team/web
    tags: [production]
    requires:
      after: staging
      approvals: {{count: 1}}
"""


@dataclass
class World:
    ws: service.Workspace
    fake: FakeRegistry
    ledger: MemoryLedger
    signers: dict[str, Signer]

    def built(self, tag: str = "v1") -> str:
        image = push_image(self.fake, "team/build", tag)
        ref = f"{HOST}/team/build@{image.digest}"
        service.record_build(ref, commit=COMMIT, workspace=self.ws, signer=self.signers["ci"])
        return ref

    def promote(self, ref: str, env: str, **kwargs: object) -> service.PromotionResult:
        return service.promote(
            ref, environment=env, workspace=self.ws, signer=self.signers["deployer"], **kwargs
        )

    def approve(self, ref: str, env: str, who: str = "alice") -> None:
        service.approve(ref, environment=env, workspace=self.ws, signer=self.signers[who])

    def tags(self, repository: str) -> dict[str, Digest]:
        repo = self.ws.opener(parse_target(f"{HOST}/{repository}"), create=False)
        return {tag: repo.get_manifest(tag).digest for tag in repo.list_tags()}

    def has(self, repository: str, ref: str) -> bool:
        repo = self.ws.opener(parse_target(f"{HOST}/{repository}"), create=False)
        return repo.has_manifest(Digest.parse(ref.split("@")[1]))

    def append(self, envelope: bytes, digest: str, *, kind: str, env: str, who: str) -> None:
        self.ledger.append(
            envelope,
            subject_digest=digest,
            subject_name=f"{HOST}/team/web",
            predicate_type=PROMOTION_V1 if kind == "promotion" else APPROVAL_V1,
            kind=kind,
            signer=who,
            keyid=self.signers[who].keyid,
            environment=env,
        )


def make_world(tmp_path: Path, environments: str = ENVIRONMENTS, head: str = "") -> World:
    lines = ["version: 1", "identities:"]
    signers = {}
    for name, roles in IDENTITIES.items():
        key = service.generate_keys(name, out_dir=tmp_path / "keys")
        signers[name] = load_signing_key(str(key.private_key))
        lines.append(f"  {name}: {{key: keys/{name}.pub, roles: [{roles}]}}")
    path = tmp_path / "conveyor.yaml"
    path.write_text(head + "\n".join(lines) + "\n" + environments)
    fake = FakeRegistry(HOST)
    ledger = MemoryLedger()
    opener = service.RegistryOpener(service.RegistryOptions(transport=fake.transport))
    ws = service.Workspace(config=load_config(path), ledger=ledger, opener=opener)
    return World(ws, fake, ledger, signers)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = make_world(tmp_path)
    yield made
    made.ws.opener.close()


def test_a_promotion_places_the_digest_moves_the_tags_and_records_it(world: World) -> None:
    ref = world.built()
    result = world.promote(ref, "staging")
    assert result.recorded
    assert result.copied is not None
    assert world.tags("team/web-staging") == {"staging": result.digest}
    assert [h.digest for h in service.history("staging", workspace=world.ws)] == [
        str(result.digest)
    ]
    assert result.referrers_carried == 1  # the build record travelled with the image


def test_a_denial_comes_before_the_copy_and_records_nothing(world: World) -> None:
    ref = world.built()
    world.promote(ref, "staging")
    size = world.ledger.size()
    with pytest.raises(service.PromotionDenied) as info:
        world.promote(ref, "production")
    assert info.value.decision is not None
    assert [g.gate for g in info.value.decision.failed] == ["approvals"]
    assert not world.has("team/web", ref)
    assert world.ledger.size() == size


def test_already_there_is_a_no_op(world: World) -> None:
    ref = world.built()
    world.promote(ref, "staging")
    size = world.ledger.size()
    again = world.promote(ref, "staging")
    assert not again.recorded
    assert again.copied is None
    assert again.ledger_index is None
    assert world.ledger.size() == size


class _RacingLedger(MemoryLedger):
    """Lets ``before_lock`` run once, just before a promoter takes the environment's lock:
    another promoter that moves the environment on in between."""

    before_lock: object = None

    @contextmanager
    def serialized(self, lock_name: str) -> Iterator[None]:
        hook, self.before_lock = self.before_lock, None
        if callable(hook):
            hook()
        with super().serialized(lock_name):
            yield


def test_another_promoter_moving_the_environment_between_copy_and_lock(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.ledger = world.ws.ledger = _RacingLedger()  # type: ignore[misc]
    first, second = world.built("v1"), world.built("v2")
    world.promote(first, "staging")
    # We ask for `first` again: it is there, so nothing is copied outside the lock. Then
    # `second` lands before we hold the lock: the decision is made again and `first` is
    # placed and tagged under it.
    world.ledger.before_lock = lambda: world.promote(second, "staging")  # type: ignore[attr-defined]
    result = world.promote(first, "staging")
    assert result.recorded
    assert result.copied is not None
    assert world.tags("team/web-staging") == {"staging": result.digest}
    history = [h.digest for h in service.history("staging", workspace=world.ws)]
    assert history == [first.split("@")[1], second.split("@")[1], first.split("@")[1]]


def _forged_signature(envelope: bytes) -> bytes:
    document = json.loads(envelope)
    signature = bytearray(base64.b64decode(document["signatures"][0]["sig"]))
    signature[0] ^= 0xFF
    document["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    return json.dumps(document).encode()


def test_a_claim_that_fails_verification_forces_a_new_decision(world: World) -> None:
    ref = world.built()
    world.promote(ref, "staging")
    digest = ref.split("@")[1]
    statement = make_statement(
        f"{HOST}/team/build", Digest.parse(digest), APPROVAL_V1, approval(environment="production")
    )
    good = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [world.signers["alice"]])
    # Read as a claim it is alice's approval and would pass the gate; its signature is bad.
    world.append(_forged_signature(good), digest, kind="approval", env="production", who="alice")
    with pytest.raises(service.PromotionDenied):
        world.promote(ref, "production")
    checked = service.check(ref, environment="production", workspace=world.ws)
    assert not checked.decision.allowed
    assert any("ignored" in note for note in checked.ignored)
    world.approve(ref, "production", "bob")
    assert world.promote(ref, "production").recorded


def test_break_glass_during_a_freeze(tmp_path: Path) -> None:
    freeze = (
        "freeze:\n  windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']\n"
        "  break_glass: {approvals: 1}\n"
    )
    world = make_world(tmp_path, ENVIRONMENTS, head="")
    path = world.ws.config.path
    path.write_text(path.read_text().replace("environments:\n", freeze + "environments:\n", 1))
    world.ws = service.Workspace(
        config=load_config(path), ledger=world.ledger, opener=world.ws.opener
    )
    ref = world.built()
    with pytest.raises(service.PromotionDenied, match="freeze"):
        world.promote(ref, "staging")
    with pytest.raises(service.PromotionDenied, match="break-glass refused"):
        world.promote(ref, "staging", break_glass="incident 7")
    world.approve(ref, "staging", "alice")
    result = world.promote(ref, "staging", break_glass="incident 7")
    assert result.decision.frozen
    assert result.decision.break_glass == "incident 7"
    assert service.history("staging", workspace=world.ws)[0].break_glass == "incident 7"


def test_rollback_outside_the_history_is_refused(world: World) -> None:
    first, second = world.built("v1"), world.built("v2")
    world.promote(first, "staging")
    world.promote(second, "staging")
    stranger = push_image(world.fake, "team/build", "v3").digest
    with pytest.raises(InputError, match="was never in staging"):
        service.rollback(
            "staging", to=stranger, workspace=world.ws, signer=world.signers["deployer"]
        )
    back = service.rollback("staging", workspace=world.ws, signer=world.signers["deployer"])
    assert back.rollback
    assert str(back.digest) == first.split("@")[1]
    assert world.tags("team/web-staging") == {"staging": back.digest}


def test_a_promotion_signed_without_the_deployer_role_is_trusted_nowhere(world: World) -> None:
    # Bug 1: pin --env believed what history, status and the gates ignore.
    ref = world.built()
    digest = ref.split("@")[1]
    predicate = promotion(
        from_environment=None,
        to_environment="staging",
        repository=f"{HOST}/team/web-staging",
        policy_sha256="0" * 64,
        gates=[],
    )
    statement = make_statement(
        f"{HOST}/team/web-staging", Digest.parse(digest), PROMOTION_V1, predicate
    )
    envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [world.signers["ci"]])
    world.append(envelope, digest, kind="promotion", env="staging", who="ci")
    assert service.history("staging", workspace=world.ws) == []
    assert service.promoted_digests("staging", workspace=world.ws) == set()
    target = world.ws.config.path.parent / "compose.yml"
    target.write_text(f"services:\n  web:\n    image: {HOST}/team/web-staging:staging\n")
    report = service.pin([target], env="staging", workspace=world.ws, opener=world.ws.opener)
    assert report.exit_code == 1
    assert "never promoted to staging" in (report.files[0].error or "")


def test_the_role_an_approvals_gate_names_may_approve(tmp_path: Path) -> None:
    # Bug 2: approvals.role meant "approver and that role"; now it is that role alone.
    environments = ENVIRONMENTS.replace(
        "approvals: {count: 1}", "approvals: {count: 1, role: release-manager}"
    )
    IDENTITIES["rm"] = "release-manager"
    try:
        world = make_world(tmp_path, environments, head="roles: [release-manager]\n")
    finally:
        del IDENTITIES["rm"]
    ref = world.built()
    world.promote(ref, "staging")
    with pytest.raises(service.UnknownSignerError, match="release-manager"):
        world.approve(ref, "production", "alice")
    world.approve(ref, "production", "rm")
    assert world.promote(ref, "production").recorded
