"""A real ``conveyor promote`` process into an OCI image layout (SQLite ledger) SIGKILLed
right after its commit, before it attaches the promotion's attestation (the attach runs
after the commit, outside the environment's lock): the ledger holds the promotion, the
layout lists no attestation for it and the tags are behind. ``status`` says so, ``repair``
attaches the attestation from the ledger's envelope and moves the tags, and a retried
promote completes it instead.

The kill is injected at that exact point: the process replaces the attach step with
``SIGKILL`` of itself before running the real CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import service
from conveyor.oci.digest import Digest
from conveyor.oci.layout import LayoutRepository
from conveyor.oci.referrers import list_referrers
from tests.unit.service._pipeline import COMMIT, Pipeline, make_pipeline

pytestmark = [pytest.mark.slow]

BODY = """\
environments:
  staging:
    repository: oci:./staging
    tags: [staging, stable]
    requires:
      provenance: {}
"""
# The real CLI, SIGKILLed where it would attach the promotion's attestation.
KILLED_AT_ATTACH = """\
import os, signal, sys
from conveyor.service import _promote
_promote.attach_recorded = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["conveyor", *sys.argv[1:]]
from conveyor.cli.main import run
run()
"""


def _pipeline(root: Path) -> tuple[Pipeline, str, str]:
    pipeline = make_pipeline(root, {"ci": "builder", "deployer": "deployer"}, BODY)
    refs = []
    for tag in ("v1", "v2"):
        ref = pipeline.image(tag)
        service.record_build(
            ref, commit=COMMIT, run_id="42", key=pipeline.key("ci"), config_path=pipeline.config
        )
        refs.append(ref)
    pipeline.promote(refs[0], "staging")
    return pipeline, refs[0], refs[1]


def _promote_killed(pipeline: Pipeline, ref: str) -> int:
    args = ["promote", ref, "--to", "staging", "--key", pipeline.key("deployer")]
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AT_ATTACH, *args, "--config", str(pipeline.config)],
        capture_output=True, timeout=120, check=False, cwd=pipeline.root,
    )  # fmt: skip
    return done.returncode


def _promotions_listed(pipeline: Pipeline, digest: str) -> int:
    staging = LayoutRepository(pipeline.root / "staging")
    found = list_referrers(staging, Digest.parse(digest))
    return sum(
        1
        for d in found
        if (d.annotations or {}).get("in-toto.io/predicate-type", "").endswith("/promotion/v1")
    )


def _tags(pipeline: Pipeline) -> set[str]:
    staging = LayoutRepository(pipeline.root / "staging")
    return {str(staging.get_manifest(tag).digest) for tag in ("staging", "stable")}


def test_a_kill_between_commit_and_attach_is_said_by_status_and_mended_by_repair(
    tmp_path: Path,
) -> None:
    pipeline, v1, v2 = _pipeline(tmp_path / "p")
    first, second = v1.split("@")[1], v2.split("@")[1]
    assert _promote_killed(pipeline, v2) == -9
    history = service.history("staging", config_path=pipeline.config)
    assert [h.digest for h in history] == [second, first]  # recorded before the kill
    assert _tags(pipeline) == {first}  # behind the ledger, never ahead
    assert _promotions_listed(pipeline, second) == 0
    (status,) = service.status(config_path=pipeline.config)
    unlisted = [line for line in status.tags_apart if "does not list its attestation" in line]
    assert len(unlisted) == 1
    assert f"ledger #{history[0].index} records the promotion of {second}" in unlisted[0]
    assert unlisted[0].endswith("run conveyor repair staging")
    checked = pipeline_cli(pipeline, "repair", "staging", "--check")
    assert checked.returncode == 1
    assert "OUT OF STEP: staging: ledger #" in checked.stdout
    fixed = pipeline_cli(pipeline, "repair", "staging")
    assert fixed.returncode == 0, fixed.stderr
    assert "attached again: staging: ledger #" in fixed.stdout
    assert _promotions_listed(pipeline, second) == 1
    assert _tags(pipeline) == {second}
    assert service.status(config_path=pipeline.config)[0].tags_apart == ()
    listed = service.list_attestations(
        f"oci:{pipeline.root / 'staging'}@{second}", config_path=pipeline.config
    )
    assert all(item.verified and item.in_ledger for item in listed.found)
    again = pipeline_cli(pipeline, "repair", "staging", "--check")
    assert again.returncode == 0, again.stdout


def test_a_kill_between_commit_and_attach_is_completed_by_promoting_again(
    tmp_path: Path,
) -> None:
    pipeline, _, v2 = _pipeline(tmp_path / "p")
    second = v2.split("@")[1]
    assert _promote_killed(pipeline, v2) == -9
    size = len(service.history("staging", config_path=pipeline.config))
    again = pipeline.promote(v2, "staging")
    assert not again.recorded  # recorded once, never twice
    assert len(service.history("staging", config_path=pipeline.config)) == size
    assert any("does not list its attestation" in line for line in again.repaired)
    assert _promotions_listed(pipeline, second) == 1
    assert _tags(pipeline) == {second}
    assert service.status(config_path=pipeline.config)[0].tags_apart == ()


def pipeline_cli(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args, "--config", str(pipeline.config)],
        capture_output=True, text=True, timeout=120, check=False, cwd=pipeline.root,
    )  # fmt: skip
