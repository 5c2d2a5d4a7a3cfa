"""kustomize bases (issue 10, item 10): a base's ``image: web`` that an overlay's ``images:``
sets is a placeholder, not a finding; pin leaves it and pins the overlay's entry (before:
an untagged-image error, and ``pin`` exited 2)."""

from __future__ import annotations

from pathlib import Path

from conveyor.configs.kustomize import image_name, placeholders
from conveyor.configs.lint import lint
from conveyor.configs.pin import apply, plan
from tests.unit._pin_support import TAGS, FakeResolver, fake_digest

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - name: web
          image: web
        - name: sidecar
          image: busybox:1.36
"""
OVERLAY = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
images:
  - name: web
    newName: ghcr.io/acme/web
    newTag: "1.4.2"
"""


def _tree(root: Path, overlay: str = OVERLAY) -> Path:
    (root / "base").mkdir(parents=True)
    (root / "base" / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    (root / "base" / "deployment.yaml").write_text(DEPLOYMENT)
    (root / "overlays" / "prod").mkdir(parents=True)
    (root / "overlays" / "prod" / "kustomization.yaml").write_text(overlay)
    return root / "base" / "deployment.yaml"


def _findings(root: Path, *paths: Path) -> list[tuple[str, int, str, str]]:
    report = lint(list(paths) or [root])
    assert report.errors == []
    return [
        (str(Path(f.file).relative_to(root)), f.line, f.rule, f.reference) for f in report.findings
    ]


def test_a_placeholder_set_by_an_overlay_is_not_a_finding(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert _findings(tmp_path) == [
        ("base/deployment.yaml", 11, "CV001", "busybox:1.36"),  # not set by the overlay
        ("overlays/prod/kustomization.yaml", 7, "CV001", "ghcr.io/acme/web:1.4.2"),
    ]


def test_the_overlay_decides_only_with_a_tag_or_digest(tmp_path: Path) -> None:
    # newName alone keeps the base's (missing) tag: `web` still runs as :latest.
    _tree(tmp_path, OVERLAY.replace('    newTag: "1.4.2"\n', ""))
    rules = [(file, rule) for file, _, rule, ref in _findings(tmp_path) if ref == "web"]
    assert rules == [("base/deployment.yaml", "CV001"), ("base/deployment.yaml", "CV002")]


def test_without_the_overlay_in_view_the_base_is_judged_alone(tmp_path: Path) -> None:
    _tree(tmp_path)
    rules = {rule for _, _, rule, ref in _findings(tmp_path, tmp_path / "base") if ref == "web"}
    assert rules == {"CV001", "CV002"}


def test_pin_leaves_the_placeholder_and_pins_the_overlay(tmp_path: Path) -> None:
    deployment = _tree(tmp_path)
    resolver = FakeResolver({**TAGS, "ghcr.io/acme/web:1.4.2": fake_digest("f")})
    report = plan([tmp_path], resolver)
    assert report.exit_code == 0, [r.error for r in report.files]
    apply(report)
    assert deployment.read_text() == DEPLOYMENT.replace(
        "busybox:1.36", f"busybox:1.36@{fake_digest('b')}"
    )
    overlay = (tmp_path / "overlays" / "prod" / "kustomization.yaml").read_text()
    assert overlay == OVERLAY + f"    digest: {fake_digest('f')}\n"
    [base] = [r for r in report.files if r.path == deployment]
    [skipped] = [s for s in base.sites if s.reference == "web"]
    assert skipped.status == "skipped"
    assert "overlays/prod/kustomization.yaml" in skipped.message


def test_nested_bases_components_and_cycles(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "kustomization.yml").write_text(
        "resources: [deploy.yaml, ../base, ../missing, https://example.com/x.yaml]\n"
        "images: [{name: api, newTag: '2'}]\n"
    )
    (tmp_path / "base" / "deploy.yaml").write_text(DEPLOYMENT)
    (tmp_path / "mid").mkdir()
    (tmp_path / "mid" / "kustomization.yaml").write_text("bases: [../base]\n")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "kustomization.yaml").write_text(
        f"components: [../mid]\nimages: [{{name: web, digest: '{fake_digest('a')}'}}]\n"
    )
    found = placeholders(
        [tmp_path / "base" / "kustomization.yml", tmp_path / "top" / "kustomization.yaml"]
    )
    assert found == {
        tmp_path / "base" / "deploy.yaml": {
            "api": tmp_path / "base" / "kustomization.yml",
            "web": tmp_path / "top" / "kustomization.yaml",
        }
    }


def test_image_names_as_kustomize_matches_them() -> None:
    assert image_name("web") == "web"
    assert image_name("web:1.0") == "web"
    assert image_name(f"web@{fake_digest('a')}") == "web"
    assert image_name("localhost:5000/team/web:1") == "localhost:5000/team/web"


def test_kustomize_itself_renders_the_pinned_overlay(tmp_path: Path) -> None:
    # The independent check: kubectl's built-in kustomize (offline) builds the overlay.
    import shutil
    import subprocess

    import pytest
    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    _tree(tmp_path)
    resolver = FakeResolver({**TAGS, "ghcr.io/acme/web:1.4.2": fake_digest("f")})
    apply(plan([tmp_path], resolver))
    done = subprocess.run(
        [kubectl, "kustomize", str(tmp_path / "overlays" / "prod")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    containers = yaml.safe_load(done.stdout)["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [
        f"ghcr.io/acme/web:1.4.2@{fake_digest('f')}",
        f"busybox:1.36@{fake_digest('b')}",
    ]
