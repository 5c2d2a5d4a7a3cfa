"""``service.PromotionLog``: the webhook's per-environment arrivals, kept current by folding
in only the entries appended since, and refusing a head that does not extend its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conveyor import service
from conveyor.ledger import LedgerTampered, open_ledger
from tests.unit.service._pipeline import Pipeline, make_pipeline

BODY = """\
environments:
  staging: {repository: oci:staging, requires: {}}
  prod: {repository: oci:prod, requires: {}}
"""


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return make_pipeline(
        tmp_path / "team", {"ci": "builder, tester, scanner", "deployer": "deployer"}, BODY
    )


def _digest(ref: str) -> str:
    return ref.split("@", 1)[1]


def test_extend_folds_in_new_arrivals_of_its_environment_only(pipeline: Pipeline) -> None:
    r1, r2, r3 = (pipeline.built(f"v{n}") for n in (1, 2, 3))
    pipeline.promote(r1, "prod")
    with service.Workspace.open(pipeline.config) as ws:
        log = service.PromotionLog.read(ws, "prod")
        assert log.arrivals == (_digest(r1),)
        assert log.extend(ws) is log  # nothing appended
        pipeline.promote(r2, "staging")  # another environment's arrival: not prod's
        pipeline.promote(r3, "prod")
        pipeline.promote(r2, "prod")
        extended = log.extend(ws)
        assert extended.arrivals == (_digest(r1), _digest(r3), _digest(r2))
        assert extended.size == ws.ledger.size() > log.size
        assert extended == service.PromotionLog.read(ws, "prod")  # the same as a full read
        assert extended.newest_first()[0] == _digest(r2)


def test_extend_believes_only_what_the_verified_reader_believes(pipeline: Pipeline) -> None:
    """A promotion row signed by the builder's key (no deployer role) is appended straight
    into the ledger: a full read ignores it, so does the incremental one."""
    from conveyor.attest import (
        IN_TOTO_PAYLOAD_TYPE,
        PROMOTION_V1,
        load_signing_key,
        make_statement,
        promotion,
        sign_envelope,
    )
    from conveyor.oci.digest import Digest

    r1, evil = pipeline.built("v1"), pipeline.built("evil")
    pipeline.promote(r1, "prod")
    with service.Workspace.open(pipeline.config) as ws:
        log = service.PromotionLog.read(ws, "prod")
        predicate = promotion(
            from_environment=None, to_environment="prod", repository="oci:prod",
            policy_sha256="0" * 64, gates=[],
        )  # fmt: skip
        statement = make_statement("oci:prod", Digest.parse(_digest(evil)), PROMOTION_V1, predicate)
        signer = load_signing_key(pipeline.key("ci"))
        ws.ledger.append(
            sign_envelope(statement, IN_TOTO_PAYLOAD_TYPE, [signer]),
            subject_digest=_digest(evil), subject_name="oci:prod", predicate_type=PROMOTION_V1,
            kind="promotion", signer="deployer", keyid=signer.keyid, environment="prod",
            commit=None,
        )  # fmt: skip
        extended = log.extend(ws)
        assert extended.size == log.size + 1
        assert extended.arrivals == (_digest(r1),)
        assert extended.arrivals == service.PromotionLog.read(ws, "prod").arrivals


def test_a_head_that_does_not_extend_the_cached_one_is_refused(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    r1 = pipeline.built("v1")
    pipeline.promote(r1, "prod")
    with service.Workspace.open(pipeline.config) as ws:
        log = service.PromotionLog.read(ws, "prod")
        # The database was replaced by another history with every hash recomputed (here:
        # another ledger, longer than the one the log was read from).
        rewritten = open_ledger(f"sqlite:///{tmp_path / 'rewritten.db'}")
        try:
            kept = ws.ledger.entries()[:-1]  # the promotion dropped, then other entries
            for n, entry in enumerate(kept + kept):
                rewritten.append(
                    entry.envelope if n < len(kept) else b'{"junk": %d}' % n,
                    subject_digest=entry.subject_digest, subject_name=entry.subject_name,
                    predicate_type=entry.predicate_type, kind=entry.kind, signer=entry.signer,
                    keyid=entry.keyid, environment=entry.environment, commit=entry.commit,
                )  # fmt: skip
            assert rewritten.size() > log.size
            other = service.Workspace(config=ws.config, ledger=rewritten, trusted=ws.trusted)
            with pytest.raises(LedgerTampered, match="does not extend the head it had"):
                log.extend(other)
        finally:
            rewritten.close()
        # A ledger shorter than the head the log was read at: rolled back.
        with pytest.raises(LedgerTampered, match="does not extend"):
            dataclasses.replace(log, size=log.size + 3).extend(ws)
        # Same size, another root.
        with pytest.raises(LedgerTampered, match="does not extend"):
            dataclasses.replace(log, root=b"\0" * 32).extend(ws)
