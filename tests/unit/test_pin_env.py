"""pin --env ENV: deploy what was promoted, not what a tag points at today.

The ledger is a real workspace (conveyor.yaml, keys, SQLite) in a temp folder; promotion
entries are signed in-toto statements appended the way the promotion code records them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import service
from conveyor.attest import (
    IN_TOTO_PAYLOAD_TYPE,
    PROMOTION_V1,
    Signer,
    generate_key,
    load_signing_key,
    make_statement,
    promotion,
    sign_envelope,
)
from conveyor.oci.digest import Digest
from conveyor.registry.testing import FakeRegistry
from tests.unit._registry_support import push_image

HOST = "registry.example"
NAME = f"{HOST}/team/web"


class Workspace:
    def __init__(self, root: Path) -> None:
        service.init_workspace(root)
        deployer = service.generate_keys("deployer", out_dir=root / "keys")
        self.config = root / "conveyor.yaml"
        text = self.config.read_text()
        assert "  # deployer:" in text
        self.config.write_text(text.replace("  # deployer:", "  deployer:"))
        self.signer = load_signing_key(str(deployer.private_key))

    def promote(
        self,
        digest: str,
        environment: str,
        *,
        name: str = NAME,
        kind: str = "promotion",
        signer: Signer | None = None,
    ) -> None:
        signer = signer or self.signer
        predicate = promotion(
            from_environment=None,
            to_environment=environment,
            repository=name,
            policy_sha256="0" * 64,
            gates=[],
            rollback=kind == "rollback",
        )
        statement = make_statement(name, Digest.parse(digest), PROMOTION_V1, predicate)
        envelope = sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer])
        with service.Workspace.open(self.config) as workspace:
            workspace.ledger.append(
                envelope,
                subject_digest=digest,
                subject_name=name,
                predicate_type=PROMOTION_V1,
                kind=kind,
                signer="deployer",
                keyid=signer.keyid,
                environment=environment,
            )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry(HOST)


def _compose(path: Path, image: str) -> Path:
    path.write_text(f"services:\n  web:\n    image: {image}  # the app\n")
    return path


def _pin(paths: list[Path], ws: Workspace, fake: FakeRegistry, **kw: object) -> service.PinReport:
    return service.pin(
        paths,
        env="production",
        config_path=ws.config,
        options=service.RegistryOptions(transport=fake.transport),
        **kw,  # type: ignore[arg-type]
    )


def test_env_pins_the_promoted_digest_not_the_tag(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    first = push_image(fake, "team/web", "v1")
    second = push_image(fake, "team/web", "v1")  # the tag moved on after the promotion
    workspace.promote(first.digest, "production")
    workspace.promote(second.digest, "staging")
    target = _compose(tmp_path / "docker-compose.yml", f"{NAME}:v1")
    report = _pin([target], workspace, fake)
    assert report.exit_code == 0, report.files[0].error
    assert target.read_text() == (
        f"services:\n  web:\n    image: {NAME}:v1@{first.digest}  # the app\n"
    )
    assert report.files[0].sites[0].source == "ledger"


def test_the_most_recent_promotion_or_rollback_wins(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    one = push_image(fake, "team/web", "v1")
    two = push_image(fake, "team/web", "v2")
    workspace.promote(one.digest, "production")
    workspace.promote(two.digest, "production")
    target = _compose(tmp_path / "a.yml", f"{NAME}:v1")
    _pin([target], workspace, fake)
    assert f"@{two.digest}" in target.read_text()
    workspace.promote(one.digest, "production", kind="rollback")
    report = _pin([target], workspace, fake)
    assert report.files[0].sites[0].status == "repinned"
    assert f"{NAME}:v1@{one.digest}  # the app" in target.read_text()


def test_never_promoted_is_an_error_for_that_file_only(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    web = push_image(fake, "team/web", "v1")
    push_image(fake, "team/other", "v1")
    workspace.promote(web.digest, "production")
    workspace.promote(web.digest, "staging", name=f"{HOST}/team/other")
    other = _compose(tmp_path / "other.yml", f"{HOST}/team/other:v1")
    fine = _compose(tmp_path / "web.yml", f"{NAME}:v1")
    report = _pin([tmp_path], workspace, fake)
    by_name = {r.path.name: r for r in report.files}
    assert "never promoted to production" in (by_name["other.yml"].error or "")
    assert by_name["other.yml"].exit_code == 1
    assert other.read_text() == f"services:\n  web:\n    image: {HOST}/team/other:v1  # the app\n"
    assert f"@{web.digest}" in fine.read_text()
    assert report.exit_code == 1


def test_forged_promotions_are_ignored(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    real = push_image(fake, "team/web", "v1")
    forged = push_image(fake, "team/web", "evil")
    workspace.promote(real.digest, "production")
    stranger = Signer(generate_key("ed25519"))
    workspace.promote(forged.digest, "production", signer=stranger)
    target = _compose(tmp_path / "a.yml", f"{NAME}:v1")
    _pin([target], workspace, fake)
    assert f"@{real.digest}" in target.read_text()
    assert forged.digest not in target.read_text()


def test_promoted_digest_missing_from_the_registry_is_refused(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    push_image(fake, "team/web", "v1")
    workspace.promote("sha256:" + "9" * 64, "production")
    target = _compose(tmp_path / "a.yml", f"{NAME}:v1")
    report = _pin([target], workspace, fake)
    assert report.exit_code == 1
    assert "not in the registry" in (report.files[0].error or "")
    offline = _pin([target], workspace, fake, offline=True)
    assert offline.exit_code == 0
    assert "sha256:" + "9" * 64 in target.read_text()


def test_env_with_lock_records_the_environment(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    web = push_image(fake, "team/web", "v1")
    workspace.promote(web.digest, "production")
    target = _compose(tmp_path / "a.yml", f"{NAME}:v1")
    lock = tmp_path / "production.lock.json"
    _pin([target], workspace, fake, lock=lock)
    from conveyor.configs.lockfile import read_lock

    locked = read_lock(lock)
    assert locked.environment == "production"
    assert str(locked.images[f"{NAME}:v1"].digest) == web.digest
    assert locked.images[f"{NAME}:v1"].source == "ledger"


def test_promotions_by_a_signer_without_the_deployer_role_are_ignored(
    tmp_path: Path, workspace: Workspace, fake: FakeRegistry
) -> None:
    # Regression: pin --env checked the signature but not the signer's role, so an identity
    # of conveyor.yaml that may only build (ci) could decide what production pins to.
    real = push_image(fake, "team/web", "v1")
    sneaked = push_image(fake, "team/web", "v2")
    ci = load_signing_key(str(workspace.config.parent / "keys" / "ci.key"))
    workspace.promote(real.digest, "production")
    workspace.promote(sneaked.digest, "production", signer=ci)
    target = _compose(tmp_path / "a.yml", f"{NAME}:v1")
    _pin([target], workspace, fake)
    assert f"@{real.digest}" in target.read_text()
    assert sneaked.digest not in target.read_text()
    only_ci = _compose(tmp_path / "b.yml", f"{HOST}/team/other:v1")
    push_image(fake, "team/other", "v1")
    workspace.promote(sneaked.digest, "production", name=f"{HOST}/team/other", signer=ci)
    report = _pin([only_ci], workspace, fake)
    assert report.exit_code == 1
    assert "never promoted to production" in (report.files[0].error or "")
    assert "lacks the role deployer" in (report.files[0].error or "") or (
        "ignored" in (report.files[0].error or "")
    )
