"""pin, per file kind: before/after golden files (written by hand), byte for byte.

The resolver is a table (tests/unit/_pin_support.py); the after-files were written with the
same table's digests. Pinning twice changes nothing; ``--check`` exit codes follow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conveyor.configs.pin import PinReport, apply, plan, plan_file
from tests.unit._pin_support import ASSETS, FakeResolver, fake_digest

# (asset folder, before, after, the name the file gets in the work tree, its kind)
CASES = [
    ("kubernetes", "before.yaml", "after.yaml", "deploy.yaml", "kubernetes"),
    ("kubernetes-crlf", "before.yaml", "after.yaml", "pod.yaml", "kubernetes"),
    ("helm-values", "before.yaml", "after.yaml", "values.yaml", "helm-values"),
    ("helm-crlf", "before.yaml", "after.yaml", "values.yaml", "helm-values"),
    ("kustomize", "before.yaml", "after.yaml", "kustomization.yaml", "kustomize"),
    ("compose", "before.yml", "after.yml", "docker-compose.yml", "compose"),
    ("github-actions", "before.yml", "after.yml", ".github/workflows/ci.yml", "github-actions"),
    ("gitlab-ci", "before.yml", "after.yml", ".gitlab-ci.yml", "gitlab-ci"),
    ("dockerfile", "before.Dockerfile", "after.Dockerfile", "Dockerfile", "dockerfile"),
]
IDS = [case[0] for case in CASES]


def _place(tmp_path: Path, folder: str, before: str, name: str) -> Path:
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ASSETS / folder / before, target)
    return target


def _pin(paths: list[Path], resolver: FakeResolver, *, check: bool = False) -> PinReport:
    report = plan(paths, resolver, check=check)
    if not check:
        apply(report)
    return report


@pytest.mark.parametrize(("folder", "before", "after", "name", "kind"), CASES, ids=IDS)
def test_golden(tmp_path: Path, folder: str, before: str, after: str, name: str, kind: str) -> None:
    target = _place(tmp_path, folder, before, name)
    original_mode = 0o640
    target.chmod(original_mode)
    report = _pin([tmp_path], FakeResolver())
    assert [r.display_path for r in report.files] == [str(tmp_path / name)]
    result = report.files[0]
    assert result.kind == kind
    assert result.error is None, result.error
    assert report.exit_code == 0
    assert target.read_bytes() == (ASSETS / folder / after).read_bytes()
    assert result.written
    assert target.stat().st_mode & 0o777 == original_mode
    assert not list(target.parent.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.parametrize(("folder", "before", "after", "name", "kind"), CASES, ids=IDS)
def test_pinning_twice_changes_nothing(
    tmp_path: Path, folder: str, before: str, after: str, name: str, kind: str
) -> None:
    target = _place(tmp_path, folder, after, name)
    resolver = FakeResolver()
    report = _pin([target], resolver)
    assert report.files[0].error is None, report.files[0].error
    assert report.changed == []
    assert target.read_bytes() == (ASSETS / folder / after).read_bytes()
    # Every pinned reference was checked (digest present), none resolved by tag again.
    assert resolver.calls
    assert all("@sha256:" in call for call in resolver.calls)


@pytest.mark.parametrize(("folder", "before", "after", "name", "kind"), CASES, ids=IDS)
def test_check_changes_nothing_and_says_so(
    tmp_path: Path, folder: str, before: str, after: str, name: str, kind: str
) -> None:
    target = _place(tmp_path, folder, before, name)
    report = _pin([target], FakeResolver(), check=True)
    assert report.exit_code == 1
    assert [r.path for r in report.changed] == [target]
    assert target.read_bytes() == (ASSETS / folder / before).read_bytes()
    diff = report.files[0].diff()
    assert diff.startswith(f"--- a/{str(target).lstrip('/')}")
    assert "+" in diff
    pinned = _pin([target], FakeResolver())
    assert pinned.exit_code == 0
    assert _pin([target], FakeResolver(), check=True).exit_code == 0


def test_golden_site_statuses_kubernetes(tmp_path: Path) -> None:
    target = _place(tmp_path, "kubernetes", "before.yaml", "deploy.yaml")
    result = plan_file(target, str(target), FakeResolver())
    statuses = {(s.line, s.status) for s in result.sites}
    assert (12, "pinned") in statuses
    assert (33, "unchanged") in statuses  # already pinned, digest checked
    assert (35, "skipped") in statuses  # a template
    pinned = [s for s in result.sites if s.status == "pinned"]
    assert all(s.digest and s.new_reference and s.new_reference.endswith(s.digest) for s in pinned)
    assert {s.reference for s in pinned} == {
        "registry.example.com/team/migrate:2.1",
        "nginx:1.25",
        "busybox:1.36",
    }


def test_golden_scripts_and_dynamic_values_are_left_alone(tmp_path: Path) -> None:
    target = _place(tmp_path, "github-actions", "before.yml", ".github/workflows/ci.yml")
    result = plan_file(target, str(target), FakeResolver())
    skipped = {s.reference: s.message for s in result.sites if s.status == "skipped"}
    assert any("alpine:3.19" in ref for ref in skipped)  # `docker run` in a run: script
    assert all(
        "script" in message or "run time" in message or "not pinned" in message
        for message in skipped.values()
    )


def test_wrong_digest_fails_the_file_only(tmp_path: Path) -> None:
    good = _place(tmp_path, "compose", "before.yml", "docker-compose.yml")
    bad = _place(tmp_path, "kustomize", "before.yaml", "kustomization.yaml")
    resolver = FakeResolver(extra=set())  # the registry does not hold kustomize's redis digest
    report = _pin([tmp_path], resolver)
    by_path = {r.path: r for r in report.files}
    assert by_path[bad].error is not None
    assert "not in the registry" in by_path[bad].error
    assert by_path[bad].exit_code == 1
    assert bad.read_bytes() == (ASSETS / "kustomize" / "before.yaml").read_bytes()
    assert good.read_bytes() == (ASSETS / "compose" / "after.yml").read_bytes()
    assert report.exit_code == 1


def test_registry_down_fails_files_that_need_it(tmp_path: Path) -> None:
    compose = _place(tmp_path, "compose", "before.yml", "docker-compose.yml")
    docker = _place(tmp_path, "dockerfile", "before.Dockerfile", "Dockerfile")
    resolver = FakeResolver(down={"registry.example.com"})
    report = _pin([tmp_path], resolver)
    by_path = {r.path: r for r in report.files}
    assert by_path[compose].exit_code == 3
    assert compose.read_bytes() == (ASSETS / "compose" / "before.yml").read_bytes()
    assert docker.read_bytes() == (ASSETS / "dockerfile" / "after.Dockerfile").read_bytes()
    assert report.exit_code == 3
    # One failing registry is asked once per reference, not once per site.
    assert resolver.calls.count("registry.example.com/team/web:1.4.2") <= 1


def test_unknown_tag_is_an_error_for_that_file(tmp_path: Path) -> None:
    target = _place(tmp_path, "compose", "before.yml", "docker-compose.yml")
    tags = {k: v for k, v in FakeResolver().tags.items() if "postgres" not in k}
    report = _pin([target], FakeResolver(tags))
    assert report.files[0].error is not None
    assert "postgres:16-alpine" in report.files[0].error
    assert target.read_bytes() == (ASSETS / "compose" / "before.yml").read_bytes()


def test_implicit_latest_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pod.yaml"
    target.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - name: a\n    image: nginx\n"
    )
    report = _pin([target], FakeResolver())
    assert report.files[0].error is not None
    assert "no tag" in report.files[0].error
    assert report.exit_code == 2


def test_helm_tag_from_chart_app_version(tmp_path: Path) -> None:
    (tmp_path / "Chart.yaml").write_text(
        "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: 1.4.2\n"
    )
    values = tmp_path / "values.yaml"
    values.write_text('image:\n  repository: registry.example.com/team/web\n  tag: ""\n')
    report = _pin([values], FakeResolver())
    assert report.files[0].error is None, report.files[0].error
    assert values.read_text() == (
        'image:\n  repository: registry.example.com/team/web\n  tag: ""\n'
        f"  digest: {fake_digest('1')}\n"
    )
    assert report.files[0].sites[0].message == "tag from Chart.yaml appVersion"
