"""Drift: kubectl / docker inspect / docker compose ps samples against promotion histories."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.errors import InputError
from conveyor.policy.drift import (
    DriftInputError,
    classify,
    environment_chooser,
    load_documents,
    parse_namespace_map,
    read_running,
    status_of,
    summary,
)

ASSETS = Path(__file__).parent.parent / "assets" / "drift"
D1, D2, D3, D4 = ("sha256:" + c * 64 for c in "1234")
HISTORY = {"production": [D1, D3], "staging": [D2, D1]}  # newest first
MAPPING = {"payment-api-production": "production", "payment-api-staging": "staging"}


def load(name: str) -> list[object]:
    return load_documents((ASSETS / name).read_text(), name)


def test_kubectl_pods_classified_per_namespace() -> None:
    running = read_running(load("kubectl-pods.json"))
    found = classify(
        running, environment_chooser("production", MAPPING, ["kube-system"]), HISTORY.__getitem__
    )
    got = {(c.running.owner, c.running.container): (c.environment, c.status) for c in found}
    assert got == {
        ("payment-api-7d9f8b6c5-x2k4q", "api"): ("production", "current"),
        # promoted to staging, never to production: the case drift exists for
        ("payment-api-canary-5c4b3a2-q9w8e", "api"): ("production", "never"),
        ("payment-api-canary-5c4b3a2-q9w8e", "migrate"): ("production", "previous"),
        # no imageID yet: the spec's digest is judged
        ("payment-api-6b5a4c3-r7t6y", "api"): ("staging", "current"),
        # a bare image id is no manifest digest
        ("debug-shell", "shell"): ("production", "unknown"),
    }
    assert summary(found)["production"] == {"current": 1, "previous": 1, "never": 1, "unknown": 1}


def test_docker_inspect_uses_repo_digests_of_the_image() -> None:
    running = read_running(load("docker-inspect.json"))
    by_name = {r.owner: r for r in running}
    assert by_name["payment-api-web-1"].digest == D2
    assert by_name["payment-api-web-1"].namespace == "payment-api"
    assert by_name["local-build"].digest is None
    found = classify(running, environment_chooser("production", {}), HISTORY.__getitem__)
    assert {c.running.owner: c.status for c in found} == {
        "payment-api-web-1": "never",
        "local-build": "unknown",
    }


def test_compose_ps_lines_with_docker_inspect() -> None:
    running = read_running([*load("compose-ps.json"), *load("docker-inspect.json")])
    assert [(r.source, r.container, r.digest) for r in running] == [
        ("compose", "web", D2),
        ("compose", "cache", D4),
        ("docker", "local-build", None),
    ]
    found = classify(
        running, environment_chooser("production", {"payment-api": "staging"}), HISTORY.get
    )
    assert [c.status for c in found] == ["current", "never", "unknown"]


def test_compose_ps_alone_knows_only_pinned_images() -> None:
    running = read_running(load("compose-ps.json"))
    assert [r.digest for r in running] == [None, D4]


@pytest.mark.parametrize(
    ("digest", "expected"), [(D1, "current"), (D3, "previous"), (D2, "never"), (None, "unknown")]
)
def test_status_of(digest: str | None, expected: str) -> None:
    assert status_of(digest, HISTORY["production"]) == expected


@pytest.mark.parametrize(
    "text", ["", "not json", '{"kind": "Deployment"}', "[1, 2]", "[" * 100_000, '{"a":1}\n{']
)
def test_hostile_input_is_refused(text: str) -> None:
    with pytest.raises(DriftInputError):
        read_running(load_documents(text, "input"))


def test_namespace_map() -> None:
    assert parse_namespace_map(["a=prod,b=staging", "c=dev"]) == {
        "a": "prod",
        "b": "staging",
        "c": "dev",
    }
    with pytest.raises(InputError):
        parse_namespace_map(["a"])


def test_digest_suffix_must_be_exact() -> None:
    pods = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"containerStatuses": [{"name": "c", "imageID": "x@sha256:" + "1" * 64 + "0"}]},
    }
    assert read_running([pods])[0].digest is None


def test_only_a_digest_never_promoted_fails_the_drift_check() -> None:
    from conveyor.policy.drift import failing

    assert failing({"current": 2, "previous": 1, "never": 0, "unknown": 1}) == 0
    assert failing({"current": 2, "previous": 1, "never": 3, "unknown": 1}) == 3
    assert failing({}) == 0
