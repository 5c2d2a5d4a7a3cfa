"""Lint rules, one table per rule and file kind, plus suppressions and settings."""

from __future__ import annotations

import pytest

from conveyor.configs.lint import RULES, Finding, LintSettings, lint_text, shape

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _rules(name: str, text: str, **kwargs: object) -> list[tuple[int, str, str]]:
    return [(f.line, f.rule, f.severity) for f in lint_text(name, text, **kwargs)]  # type: ignore[arg-type]


def _pod(image: str) -> str:
    return f"apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - name: a\n      image: {image}\n"


# --- CV001 / CV002 across kinds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx:1.25", [(6, "CV001", "error")]),
        ("nginx", [(6, "CV001", "error"), (6, "CV002", "error")]),
        ("nginx:latest", [(6, "CV001", "error"), (6, "CV002", "error")]),
        (f"nginx@{DIGEST}", []),
        (f"nginx:1.25@{DIGEST}", []),
        ("localhost:5000/app:latest", [(6, "CV001", "error"), (6, "CV002", "error")]),
        ("localhost:5000/app", [(6, "CV001", "error"), (6, "CV002", "error")]),
        ("'{{ .Values.image }}'", [(6, "CV001", "info")]),
        ("$IMAGE", [(6, "CV001", "info")]),
        ("registry.example.com/$NAME", [(6, "CV001", "info")]),
        ("ghcr.io/acme/app:${TAG}", [(6, "CV001", "error")]),
        ("ghcr.io/acme/app@${DIGEST}", []),
        ("NotAValid//Ref", [(6, "CV001", "info")]),
    ],
)
def test_kubernetes_image_shapes(image: str, expected: list[tuple[int, str, str]]) -> None:
    assert _rules("pod.yaml", _pod(image)) == expected


def test_each_kind_reports_cv001_and_cv002_at_the_reference() -> None:
    cases = {
        "docker-compose.yml": ("services:\n  web:\n    image: redis\n", 3, 12),
        "values.yaml": ("image:\n  repository: ghcr.io/a/b\n  tag: latest\n", 2, 15),
        "kustomization.yaml": ("images:\n  - name: nginx\n    newTag: latest\n", 2, 11),
        ".gitlab-ci.yml": ("stages: [a]\nimage: alpine\n", 2, 8),
        "ci.yml": ("on: push\njobs:\n  a:\n    container: node\n    steps: []\n", 4, 16),
    }
    for name, (text, line, column) in cases.items():
        findings = lint_text(name, text)
        assert [(f.rule, f.line, f.column) for f in findings] == [
            ("CV001", line, column),
            ("CV002", line, column),
        ], name
        assert all(f.fix for f in findings)


def test_helm_split_without_tag_is_cv001_but_not_cv002() -> None:
    # The chart's appVersion fills an absent tag: no digest, but not "latest" either.
    findings = lint_text("values.yaml", "image:\n  repository: ghcr.io/a/b\n")
    assert [(f.rule, f.severity) for f in findings] == [("CV001", "error")]
    assert "appVersion" in findings[0].message
    digest = lint_text(
        "values.yaml", f"image:\n  repository: a/b\n  tag: '1'\n  digest: {DIGEST}\n"
    )
    assert digest == []


def test_workflow_sites_and_run_scripts() -> None:
    text = f"""\
on: push
jobs:
  e2e:
    runs-on: ubuntu-latest
    services:
      db: postgres:16@{DIGEST}
    steps:
      - uses: docker://alpine@{DIGEST}
      - uses: docker://alpine:latest
      - run: |
          docker run --rm -v "$PWD:/w" ghcr.io/acme/tool:1.2 check
          docker run --rm ghcr.io/acme/tool@{DIGEST} check
          kubectl set image deploy/app app=ghcr.io/acme/app:$GITHUB_SHA
          helm upgrade app ./chart --set image.tag=latest
          helm upgrade app ./chart --set image.tag=1.2,image.digest={DIGEST}
          docker push ghcr.io/acme/app:latest
          docker push ghcr.io/acme/other:latest
          docker push ghcr.io/acme/other:${{{{ github.sha }}}}
"""
    assert [
        (line, rule)
        for line, rule, severity in _rules("ci.yml", text)
        if rule in ("CV001", "CV002")
    ] == [
        (9, "CV001"),
        (9, "CV002"),
        (11, "CV001"),
        (13, "CV001"),
        (14, "CV001"),
        (14, "CV002"),
        (16, "CV002"),  # pushed only as :latest; "other" also gets a unique tag
    ]


def test_step_output_is_followed_not_guessed() -> None:
    text = """\
on: push
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - id: build
        run: |
          echo "image=ghcr.io/acme/app:$GITHUB_SHA" >> $GITHUB_OUTPUT
      - uses: aws-actions/amazon-ecs-render-task-definition@v1
        with:
          image: ${{ steps.build.outputs.image }}
      - uses: aws-actions/amazon-ecs-render-task-definition@v1
        with:
          image: ${{ steps.unknown.outputs.image }}
"""
    found = [(f.line, f.rule, f.severity) for f in lint_text("ci.yml", text) if f.rule == "CV001"]
    assert found == [(11, "CV001", "error"), (14, "CV001", "info")]


@pytest.mark.parametrize(
    ("reference", "decided", "digest", "tag", "latest"),
    [
        ("a", True, False, None, True),
        ("a:1", True, False, "1", False),
        ("host:5000/a", True, False, None, True),
        ("host:5000/a:latest", True, False, "latest", True),
        (f"a@{DIGEST}", True, True, None, False),
        ("${{ env.IMAGE }}", False, False, None, False),
        ("${REGISTRY}/app:${TAG:-latest}", True, False, "${TAG:-latest}", False),
        ("docker://alpine", True, False, None, True),
        ("${{ x }}@${{ y }}", True, True, None, False),
    ],
)
def test_shape(reference: str, decided: bool, digest: bool, tag: str | None, latest: bool) -> None:
    found = shape(reference)
    assert (found.decided, found.digest, found.tag, found.latest) == (decided, digest, tag, latest)


# --- CV003 ----------------------------------------------------------------------------------


def test_dockerfile_from_rules() -> None:
    text = f"""\
FROM golang:1.22 AS build
FROM build
FROM gcr.io/distroless/static@{DIGEST}
ARG BASE
FROM $BASE
FROM alpine:latest
"""
    assert _rules("Dockerfile", text) == [
        (1, "CV003", "warning"),
        (5, "CV003", "info"),
        (6, "CV003", "warning"),  # a base image is not deployed: no CV002, but CV009
        (6, "CV009", "error"),
    ]


# --- CV004 / CV005 / CV006 / CV007 -----------------------------------------------------------

BUILD_AND_DEPLOY = """\
on: push
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment: production
    steps:
      - uses: actions/checkout@0123456789abcdef0123456789abcdef01234567
      - run: |
          docker build -t ghcr.io/acme/app:$GITHUB_SHA \\
            --label git.commit=$GITHUB_SHA --label ci.run=$GITHUB_RUN_ID .
          docker push ghcr.io/acme/app:$GITHUB_SHA
          kubectl apply -f k8s/
"""


def test_cv004_build_inside_a_deploy_job() -> None:
    assert _rules("ci.yml", BUILD_AND_DEPLOY) == [(9, "CV004", "error")]


def test_cv004_build_per_environment() -> None:
    text = """\
on: push
jobs:
  build-staging:
    runs-on: ubuntu-latest
    steps:
      - run: docker build --label org.opencontainers.image.revision=$GITHUB_SHA -t app:staging .
  build-production:
    runs-on: ubuntu-latest
    steps:
      - run: docker build --label org.opencontainers.image.revision=$GITHUB_SHA -t app:prod .
"""
    # Both jobs are named for an environment (deploy jobs) and build in them.
    assert _rules("ci.yml", text) == [(6, "CV004", "error"), (10, "CV004", "error")]


SPLIT = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    outputs:
      digest: ${{{{ steps.push.outputs.digest }}}}
    steps:
      - id: push
        uses: docker/build-push-action@0123456789abcdef0123456789abcdef01234567
        with:
          push: true
          tags: ghcr.io/acme/app:${{{{ github.sha }}}}
          labels: |
            git.commit=${{{{ github.sha }}}}
            ci.run=${{{{ github.run_id }}}}
  deploy:
    needs: build
    environment: staging
    runs-on: ubuntu-latest
    steps:
      - run: kubectl set image deploy/app app=ghcr.io/acme/app@{image}
"""


def test_cv005_deploy_takes_the_digest_from_the_build_job() -> None:
    good = SPLIT.format(image="${{ needs.build.outputs.digest }}")
    assert _rules("ci.yml", good) == []
    bad = SPLIT.format(image="x").replace("app@x", "app:${{ github.sha }}")
    assert _rules("ci.yml", bad) == [(16, "CV005", "warning"), (21, "CV001", "error")]


def test_cv006_labels_or_metadata_action() -> None:
    text = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - id: meta
        uses: docker/metadata-action@0123456789abcdef0123456789abcdef01234567
      - uses: docker/build-push-action@0123456789abcdef0123456789abcdef01234567
        with:
          labels: ${{ steps.meta.outputs.labels }}
      - uses: docker/build-push-action@0123456789abcdef0123456789abcdef01234567
      - run: buildah bud --label git.commit=1 -t x .
      - run: ko build --image-label org.opencontainers.image.revision=1 ./cmd
"""
    assert _rules("ci.yml", text) == [(11, "CV006", "warning"), (12, "CV006", "warning")]


def test_cv007_actions_not_pinned_to_a_commit() -> None:
    text = """\
on: push
jobs:
  a:
    uses: acme/workflows/.github/workflows/build.yml@v1
  b:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/checkout@main
      - uses: actions/checkout@0123456789abcdef0123456789abcdef01234567
      - uses: actions/checkout@0123456
      - uses: ./local-action
      - uses: docker://alpine@sha256:{h}
""".replace("{h}", "c" * 64)
    findings = [f for f in lint_text("ci.yml", text) if f.rule == "CV007"]
    assert [(f.line, f.column, f.reference) for f in findings] == [
        (4, 11, "acme/workflows/.github/workflows/build.yml@v1"),
        (8, 15, "actions/checkout@v4"),
        (9, 15, "actions/checkout@main"),
        (11, 15, "actions/checkout@0123456"),
    ]


# --- CV008 ----------------------------------------------------------------------------------


def test_cv008_digest_not_promoted_to_the_environment() -> None:
    text = _pod(f"ghcr.io/acme/app:1@{DIGEST}") + f"    - name: b\n      image: b@{OTHER}\n"
    assert _rules("pod.yaml", text, environment="production", promoted={DIGEST}) == [
        (8, "CV008", "error")
    ]
    assert _rules("pod.yaml", text) == []  # without an environment, no ledger check


# --- suppressions and settings --------------------------------------------------------------


def test_suppression_needs_a_reason() -> None:
    text = """\
FROM alpine:3 # conveyor: ignore[CV003] pinned by Renovate in the release branch
# conveyor: ignore[CV003] build image only, never shipped
FROM golang:1.22
FROM node:20 # conveyor: ignore[CV003]
FROM debian:12 # conveyor: ignore[CV001] wrong rule id suppresses nothing else
"""
    assert _rules("Dockerfile", text) == [
        (4, "CV003", "warning"),
        (4, "CV000", "warning"),
        (5, "CV003", "warning"),
    ]


def test_settings_change_severity_and_turn_rules_off() -> None:
    settings = LintSettings(severities={"CV001": "warning", "CV002": "off"})
    assert _rules("pod.yaml", _pod("nginx"), settings=settings) == [(6, "CV001", "warning")]
    info = LintSettings(severities={"CV001": "error"})
    assert _rules("pod.yaml", _pod("$IMAGE"), settings=info) == [(6, "CV001", "info")]


def test_every_rule_has_metadata() -> None:
    assert sorted(RULES) == [f"CV00{n}" for n in range(10)]
    for rule in RULES.values():
        assert rule.severity in ("error", "warning")
        assert 0 < rule.security_severity <= 10
        assert rule.help_uri.endswith(f"#{rule.id.lower()}-{rule.name}")


def test_finding_json_shape() -> None:
    finding = lint_text("pod.yaml", _pod("nginx:1"))[0]
    assert isinstance(finding, Finding)
    assert list(finding.to_dict()) == [
        "rule",
        "severity",
        "file",
        "line",
        "column",
        "reference",
        "message",
        "fix",
    ]
