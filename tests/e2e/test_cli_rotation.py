"""Issue 9 #7 through the real CLI: ``conveyor keys rotate`` keeps the history readable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.service._pipeline import make_pipeline

BODY = """\
environments:
  staging:
    repository: oci:./staging  # comment kept
    tags: [staging]
    requires:
      provenance: {}
"""


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args, "--config", str(root / "conveyor.yaml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=root,
    )  # fmt: skip


def test_keys_rotate_as_a_process(tmp_path: Path) -> None:
    pipeline = make_pipeline(
        tmp_path / "p", {"ci": "builder, tester, scanner", "deployer": "deployer"}, BODY
    )
    ref = pipeline.built()
    pipeline.promote(ref, "staging")
    rotated = _cli(pipeline.root, "keys", "rotate", "deployer", "--json")
    assert rotated.returncode == 0, rotated.stderr
    facts = json.loads(rotated.stdout)
    assert facts["retired"] == [str(pipeline.root / "keys" / "deployer.pub")]
    assert Path(facts["private_key"]).is_file()
    text = pipeline.config.read_text()
    assert "# comment kept" in text
    assert f"retired: {facts['retired_at']}" in text
    history = _cli(pipeline.root, "history", "staging", "--json")
    assert history.returncode == 0, history.stderr
    assert [h["digest"] for h in json.loads(history.stdout)["history"]] == [ref.split("@")[1]]
    status = _cli(pipeline.root, "status")
    assert "staging: oci:" in status.stdout
    assert "empty" not in status.stdout
    audit = _cli(pipeline.root, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # The old key can sign nothing any more; the new one can.
    old = _cli(pipeline.root, "promote", pipeline.built("v2"), "--to", "staging",
               "--key", pipeline.key("deployer"))  # fmt: skip
    assert old.returncode == 1
    assert "retired" in old.stderr
    new = _cli(pipeline.root, "promote", pipeline.built("v3"), "--to", "staging",
               "--key", facts["private_key"])  # fmt: skip
    assert new.returncode == 0, new.stderr
    unknown = _cli(pipeline.root, "keys", "rotate", "nobody")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("conveyor: error: ")
