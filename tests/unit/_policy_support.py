"""Builders for policy tests: a config written to disk and evidence values."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conveyor.policy.config import Config, load_config
from conveyor.policy.model import (
    ApprovalEvidence,
    BuildEvidence,
    EvidenceRef,
    EvidenceSet,
    PromotionEvidence,
    PromotionRequest,
    ScanEvidence,
    SmokeEvidence,
    TestEvidence,
)

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BUILDER_ID = "https://github.com/acme/payment/.github/workflows/build.yml"

IDENTITIES = """\
version: 1
identities:
  ci:       {key: keys/ci.pub,       roles: [builder, tester, scanner]}
  deployer: {key: keys/deployer.pub, roles: [deployer]}
  alice:    {key: keys/alice.pub,    roles: [approver]}
  bob:      {key: keys/bob.pub,      roles: [approver]}
  carol:    {key: keys/carol.pub,    roles: [approver, deployer]}
  dave:     {key: keys/dave.pub,     roles: [approver, builder]}
"""

# The exact example of issue 4, section 1.
ISSUE_EXAMPLE = """\
environments:
  staging:
    repository: registry.example.com/payment-api-staging
    tags: [staging]
    requires:
      provenance: {}
      tests: {min_passed: 1, max_failed: 0}
      scan: {max: {critical: 0, high: 0}, max_age: 24h}
  production:
    repository: registry.example.com/payment-api
    tags: [production]
    requires:
      after: {environment: staging, smoke: true}
      approvals: {count: 2, role: approver, distinct_from: [builder, promoter]}
      tests: {min_passed: 1, max_failed: 0}
      scan: {max: {critical: 0, high: 0}, max_age: 24h}
"""

ROLES = {
    "ci": frozenset({"builder", "tester", "scanner"}),
    "deployer": frozenset({"deployer"}),
    "alice": frozenset({"approver"}),
    "bob": frozenset({"approver"}),
    "carol": frozenset({"approver", "deployer"}),
    "dave": frozenset({"approver", "builder"}),
    "mallory": frozenset(),
}


def write_config(tmp_path: Path, body: str, *, head: str = IDENTITIES) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    for name in ROLES:
        (keys / f"{name}.pub").write_text("placeholder")
    path = tmp_path / "conveyor.yaml"
    path.write_text(head + textwrap.dedent(body))
    return path


def config_of(tmp_path: Path, body: str) -> Config:
    return load_config(write_config(tmp_path, body))


@dataclass
class Ledger:
    """Hands out ledger indexes in order, like the real append-only log."""

    now: datetime = NOW
    next_index: int = 0
    builds: list[BuildEvidence] = field(default_factory=list)
    tests: list[TestEvidence] = field(default_factory=list)
    scans: list[ScanEvidence] = field(default_factory=list)
    smokes: list[SmokeEvidence] = field(default_factory=list)
    approvals: list[ApprovalEvidence] = field(default_factory=list)
    promotions: list[PromotionEvidence] = field(default_factory=list)

    def ref(self, signer: str, at: datetime, roles: frozenset[str] | None = None) -> EvidenceRef:
        self.next_index += 1
        return EvidenceRef(
            index=self.next_index,
            envelope_digest=f"sha256:{self.next_index:064x}",
            signer=signer,
            signer_roles=ROLES.get(signer, frozenset()) if roles is None else roles,
            recorded_at=at,
        )

    def build(
        self,
        *,
        signer: str = "ci",
        ago: timedelta = timedelta(hours=5),
        commit: str = COMMIT,
        run_id: str | None = "42",
        builder_id: str | None = BUILDER_ID,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.builds.append(
            BuildEvidence(
                ref=self.ref(signer, self.now - ago),
                commit=commit,
                run_id=run_id,
                builder_id=builder_id,
                labels={"git.commit": COMMIT, "ci.run": "42"} if labels is None else labels,
            )
        )

    def test(
        self,
        passed: int = 10,
        failed: int = 0,
        errored: int = 0,
        *,
        signer: str = "ci",
        ago: timedelta = timedelta(hours=4),
    ) -> None:
        self.tests.append(
            TestEvidence(self.ref(signer, self.now - ago), passed, failed, errored, 0)
        )

    def scan(
        self,
        counts: dict[str, int] | None = None,
        findings: tuple[tuple[str, str], ...] = (),
        *,
        signer: str = "ci",
        ago: timedelta = timedelta(hours=3),
        scanned_ago: timedelta | None = None,
    ) -> None:
        scanned_at = None if scanned_ago is None else self.now - scanned_ago
        self.scans.append(
            ScanEvidence(self.ref(signer, self.now - ago), scanned_at, counts or {}, findings)
        )

    def promote(
        self,
        environment: str,
        *,
        ago: timedelta = timedelta(hours=2),
        signer: str = "deployer",
        digest: str = DIGEST,
    ) -> None:
        self.promotions.append(
            PromotionEvidence(self.ref(signer, self.now - ago), environment, digest)
        )

    def smoke(
        self,
        environment: str,
        passed: bool = True,
        *,
        ago: timedelta = timedelta(hours=1),
        signer: str = "ci",
    ) -> None:
        self.smokes.append(SmokeEvidence(self.ref(signer, self.now - ago), environment, passed))

    def approve(
        self,
        signer: str,
        environment: str = "production",
        *,
        digest: str = DIGEST,
        ago: timedelta = timedelta(minutes=30),
    ) -> None:
        self.approvals.append(
            ApprovalEvidence(self.ref(signer, self.now - ago), environment, digest)
        )

    def evidence(self, digest: str = DIGEST) -> EvidenceSet:
        return EvidenceSet(
            digest=digest,
            builds=tuple(self.builds),
            tests=tuple(self.tests),
            scans=tuple(self.scans),
            smokes=tuple(self.smokes),
            approvals=tuple(self.approvals),
            promotions=tuple(self.promotions),
        )


def request(
    environment: str,
    *,
    promoter: str = "deployer",
    now: datetime = NOW,
    break_glass: str | None = None,
    rollback: bool = False,
) -> PromotionRequest:
    return PromotionRequest(
        digest=DIGEST,
        environment=environment,
        promoter=promoter,
        promoter_roles=ROLES.get(promoter, frozenset()),
        now=now,
        break_glass=break_glass,
        rollback=rollback,
    )


def full_ledger(now: datetime = NOW) -> Ledger:
    """Evidence that satisfies both environments of the issue's example at ``now``."""
    ledger = Ledger(now=now)
    ledger.build(ago=timedelta(hours=6))
    ledger.test(ago=timedelta(hours=5))
    ledger.scan({"critical": 0, "high": 0, "medium": 3}, ago=timedelta(hours=5))
    ledger.promote("staging", ago=timedelta(hours=4))
    ledger.smoke("staging", ago=timedelta(hours=3))
    ledger.approve("alice")
    ledger.approve("bob")
    return ledger
