"""Extraction: one table test per file kind, positions, locations, kind detection, discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.configs import ImageSite, detect_kind, discover, extract_sites
from conveyor.configs.yamlio import follow, load_documents


def _sites(name: str, text: str, kind: str | None = None) -> list[ImageSite]:
    return extract_sites(Path(name), text, display_path=name, kind=kind)


def _refs(name: str, text: str, kind: str | None = None) -> list[tuple[int, int, str, str]]:
    return [(s.line, s.column, s.role, s.reference) for s in _sites(name, text, kind)]


K8S = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: busybox
      containers:
        - name: web
          image: "nginx:1.25"
        - name: side
          image: ghcr.io/acme/side@sha256:{h}
      ephemeralContainers:
        - {name: debug, image: 'alpine:3'}
---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - image: ghcr.io/acme/job:v1
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    spec:
      containers:
        - image: redis:7
---
apiVersion: v1
kind: ConfigMap
data:
  containers: "image: not-an-image"
""".replace("{h}", "a" * 64)


def test_kubernetes_workloads_cronjob_list_and_positions() -> None:
    assert _refs("deploy.yaml", K8S) == [
        (10, 18, "deploy", "busybox"),
        (13, 19, "deploy", "nginx:1.25"),
        (15, 18, "deploy", "ghcr.io/acme/side@sha256:" + "a" * 64),
        (17, 33, "deploy", "alpine:3"),
        (27, 22, "deploy", "ghcr.io/acme/job:v1"),
        (36, 18, "deploy", "redis:7"),
    ]


def test_locations_follow_into_round_trip_documents() -> None:
    documents = load_documents(K8S, "deploy.yaml")
    for site in _sites("deploy.yaml", K8S):
        assert site.location is not None
        assert follow(documents, site.location) == site.reference
        # line/column point at the reference text itself
        assert K8S.splitlines()[site.line - 1][site.column - 1 :].startswith(site.reference)


HELM = """\
image:
  repository: ghcr.io/acme/app
  tag: "1.2.3"
  pullPolicy: IfNotPresent
redis:
  enabled: false
  registry: docker.io
  repository: bitnami/redis
  tag: 7.2
  digest: sha256:{h}
chart:
  image:
    repository: ghcr.io/acme/chart-default
sidecars:
  - name: metrics
    image: exporter:latest
    imagePullPolicy: Always
kubectlImage: bitnami/kubectl:1.30
templated:
  image: "{{ .Values.global.registry }}/app:{{ .Chart.AppVersion }}"
notAnImage:
  repository: https://github.com/acme/app
""".replace("{h}", "b" * 64)


def test_helm_values_split_and_plain() -> None:
    sites = _sites("values.yaml", HELM)
    assert [(s.line, s.form, s.reference, s.dynamic) for s in sites] == [
        (2, "helm-split", "ghcr.io/acme/app:1.2.3", False),
        (8, "helm-split", "docker.io/bitnami/redis:7.2@sha256:" + "b" * 64, False),
        (13, "helm-split", "ghcr.io/acme/chart-default", False),
        (16, "scalar", "exporter:latest", False),
        (18, "scalar", "bitnami/kubectl:1.30", False),
        (20, "scalar", "{{ .Values.global.registry }}/app:{{ .Chart.AppVersion }}", True),
    ]
    assert sites[0].parent == (0, "image")
    assert sites[0].location == (0, "image", "repository")


def test_kustomize_images() -> None:
    text = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: quay.io/argoproj/argocd
    newName: ghcr.io/acme/argocd
    newTag: v2.10.0
  - name: nginx
    newTag: latest
  - name: redis
    digest: sha256:{h}
  - name: only-renamed
    newName: ghcr.io/acme/renamed
""".replace("{h}", "c" * 64)
    sites = _sites("kustomization.yaml", text)
    assert [(s.line, s.column, s.reference, s.form) for s in sites] == [
        (5, 14, "ghcr.io/acme/argocd:v2.10.0", "kustomize"),
        (7, 11, "nginx:latest", "kustomize"),
        (9, 11, "redis@sha256:" + "c" * 64, "kustomize"),
    ]
    assert sites[0].parent == (0, "images", 0)


def test_compose_services_and_merge_keys() -> None:
    text = """\
x-base: &base
  image: postgres:16
  restart: always
services:
  web:
    image: ${REGISTRY:-acme}/web:${TAG:-latest}
    build: .
  db:
    <<: *base
  cache:
    image: 'redis'
"""
    sites = _sites("docker-compose.yml", text)
    assert [(s.line, s.column, s.reference, s.dynamic, s.location) for s in sites] == [
        (2, 10, "postgres:16", False, None),
        (6, 12, "${REGISTRY:-acme}/web:${TAG:-latest}", True, (0, "services", "web", "image")),
        (11, 13, "redis", False, (0, "services", "cache", "image")),
    ]


WORKFLOW = """\
name: ci
on: [push]
jobs:
  test:
    runs-on: ubuntu-latest
    container: node:20
    services:
      db:
        image: postgres
      cache: redis:7
    steps:
      - uses: actions/checkout@v4
      - uses: docker://alpine:3.19
      - run: |
          echo hi
          docker run --rm -e A=1 -v "$PWD:/src" ghcr.io/acme/tool:1.0 make
          docker push ghcr.io/acme/app:latest
  deploy:
    container:
      image: ${{ matrix.image }}
    steps:
      - run: >-
          helm upgrade --install app ./chart --set image.tag=${{ github.sha }}
      - run: kubectl set image deployment/app app=ghcr.io/acme/app:v1 -n prod
"""


def test_github_actions_sites() -> None:
    assert [(s.line, s.column, s.role, s.via, s.reference) for s in _sites("ci.yml", WORKFLOW)] == [
        (6, 16, "deploy", None, "node:20"),
        (9, 16, "service", None, "postgres"),
        (10, 14, "service", None, "redis:7"),
        (13, 15, "action", None, "docker://alpine:3.19"),
        (16, 49, "deploy", "docker run", "ghcr.io/acme/tool:1.0"),
        (17, 23, "push", "docker push", "ghcr.io/acme/app:latest"),
        (20, 14, "deploy", None, "${{ matrix.image }}"),
        (23, 62, "deploy", "helm --set", "image.tag=${{ github.sha }}"),
        (24, 51, "deploy", "kubectl set image", "ghcr.io/acme/app:v1"),
    ]


def test_gitlab_ci_sites() -> None:
    text = """\
image: python:3.12
stages: [build, deploy]
services:
  - name: docker:dind
deploy:
  stage: deploy
  image:
    name: bitnami/kubectl:latest
  script:
    - kubectl set image deploy/app app=registry.gitlab.com/acme/app:$CI_COMMIT_SHA
"""
    assert _refs(".gitlab-ci.yml", text) == [
        (1, 8, "deploy", "python:3.12"),
        (4, 11, "service", "docker:dind"),
        (8, 11, "deploy", "bitnami/kubectl:latest"),
        (10, 40, "deploy", "registry.gitlab.com/acme/app:$CI_COMMIT_SHA"),
    ]


def test_dockerfile_from_lines() -> None:
    text = """\
# syntax=docker/dockerfile:1
ARG BASE=alpine:3.19
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
RUN go build
FROM build AS test
FROM scratch
FROM ${BASE}
from gcr.io/distroless/static@sha256:{h} as final
""".replace("{h}", "d" * 64)
    assert _refs("Dockerfile", text) == [
        (2, 10, "base", "alpine:3.19"),  # FROM ${BASE}: the ARG default is the image
        (3, 32, "base", "golang:1.22"),
        (8, 6, "base", "gcr.io/distroless/static@sha256:" + "d" * 64),
    ]


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("Dockerfile.prod", "FROM x\n", "dockerfile"),
        ("build.containerfile", "FROM x\n", "dockerfile"),
        ("kustomization.yaml", "resources: []\n", "kustomize"),
        (
            "k.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n",
            "kustomize",
        ),
        ("repo/.github/workflows/x.yml", "name: x\n", "github-actions"),
        ("renamed.yaml", "on: push\njobs:\n  a: {}\n", "github-actions"),
        (".gitlab-ci.yml", "a: {}\n", "gitlab-ci"),
        ("docker-compose.yml", "services:\n  a: {}\n", "compose"),
        ("stack.yaml", "version: '3'\nservices:\n  a: {}\n", "compose"),
        ("pod.yaml", "apiVersion: v1\nkind: Pod\n", "kubernetes"),
        ("values-prod.yaml", "image:\n  tag: x\n", "helm-values"),
        ("chart/values.yaml", "replicaCount: 1\n", None),
        ("random.yaml", "a: 1\n", None),
        ("README.md", "image: x\n", None),
        ("deploy.sh", "docker run x\n", "shell"),
    ],
)
def test_detect_kind(name: str, text: str, kind: str | None) -> None:
    assert detect_kind(Path(name), text) == kind


def test_discover_skips_vendored_folders_and_honours_excludes(tmp_path: Path) -> None:
    for relative in [
        "deploy/app.yaml",
        "deploy/skip/x.yaml",
        "Dockerfile",
        "notes.txt",
        ".git/config.yaml",
        "node_modules/a/b.yaml",
        "vendor/c.yml",
    ]:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("a: 1\n")
    found = [display for _, display in discover([tmp_path], exclude=["deploy/skip/**"])]
    assert found == [str(tmp_path / "Dockerfile"), str(tmp_path / "deploy/app.yaml")]
    named = tmp_path / "notes.txt"
    assert list(discover([named])) == [(named, str(named))]
