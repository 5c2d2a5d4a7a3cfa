"""A small in-process pipeline for operation tests: keys, conveyor.yaml, a layout image,
evidence recorded through ``conveyor.service`` (SQLite ledger beside the config)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from conveyor import service
from tests.support.images import build_image

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PASSING_JUNIT = '<testsuite name="unit"><testcase name="a"/><testcase name="b"/></testsuite>'
TRIVY = {
    "SchemaVersion": 2,
    "ArtifactName": "example/app",
    "ArtifactType": "container_image",
    "Metadata": {},
    "Results": [{"Target": "app", "Class": "os-pkgs", "Vulnerabilities": []}],
}


@dataclass
class Pipeline:
    root: Path
    config: Path

    def key(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    def image(self, tag: str = "v1") -> str:
        img = build_image(
            self.root / "build", tag=tag, labels={"git.commit": COMMIT, "ci.run": "42"}
        )
        return f"oci:{img.layout}@{img.digest}"

    def built(self, tag: str = "v1") -> str:
        ref = self.image(tag)
        service.record_build(
            ref, commit=COMMIT, run_id="42", key=self.key("ci"), config_path=self.config
        )
        junit = self.root / "junit.xml"
        junit.write_text(PASSING_JUNIT)
        service.attest_tests(ref, [junit], key=self.key("ci"), config_path=self.config)
        scan = self.root / "scan.json"
        # Scans are recorded when they are made: the signed finish must be near the record.
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        scan.write_text(json.dumps({**TRIVY, "CreatedAt": now}))
        service.attest_scan(ref, scan, key=self.key("ci"), config_path=self.config)
        return ref

    def approve(self, ref: str, env: str, who: str) -> service.Recorded:
        return service.approve(ref, environment=env, key=self.key(who), config_path=self.config)

    def promote(self, ref: str, env: str, **kwargs: object) -> service.PromotionResult:
        return service.promote(
            ref, environment=env, key=self.key("deployer"), config_path=self.config, **kwargs
        )


def make_pipeline(root: Path, identities: dict[str, str], body: str) -> Pipeline:
    """``identities``: name -> roles as YAML list text; ``body``: the rest of conveyor.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "identities:"]
    for name, roles in identities.items():
        service.generate_keys(name, out_dir=root / "keys")
        lines.append(f"  {name}: {{key: keys/{name}.pub, roles: [{roles}]}}")
    config = root / "conveyor.yaml"
    config.write_text("\n".join(lines) + "\n" + body)
    return Pipeline(root, config)
