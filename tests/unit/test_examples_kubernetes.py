"""examples/kubernetes: the fields the webhook's safety rests on, and a schema check
(kubernetes-validate; kubectl --dry-run=client needs an API server, which cannot run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "kubernetes"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all((EXAMPLES / name).read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [
        d for f in sorted(EXAMPLES.glob("*.yaml")) for d in documents(f.name) if d["kind"] == kind
    ]


def test_webhook_fails_closed_and_spares_conveyors_namespace() -> None:
    (config,) = by_kind("ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] <= 10
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"]["path"] == "/admission/validate"
    excluded = [
        e for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
    ]  # fmt: skip
    assert "conveyor" in excluded[0]["values"]
    assert hook["clientConfig"]["service"]["namespace"] == "conveyor"
    resources = {r for rule in hook["rules"] for r in rule["resources"]}
    assert resources >= {
        "pods", "pods/ephemeralcontainers", "deployments", "statefulsets", "daemonsets",
        "replicasets", "replicationcontrollers", "jobs", "cronjobs",
    }  # fmt: skip
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "conveyor/conveyor-tls"
    )


def test_server_serves_tls_from_cert_manager() -> None:
    (deployment,) = by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "@sha256:" in container["image"]
    assert "--tls-cert=/etc/conveyor/tls/tls.crt" in container["args"]
    secrets = {
        v["name"]: v.get("secret", {}).get("secretName")
        for v in deployment["spec"]["template"]["spec"]["volumes"]
    }
    certificates = {c["spec"]["secretName"] for c in by_kind("Certificate")}
    assert secrets["tls"] in certificates
    (service,) = by_kind("Service")
    assert service["metadata"]["name"] == "conveyor"


def test_drift_cronjob_posts_pods_with_a_token() -> None:
    (cron,) = by_kind("CronJob")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = " ".join(spec["containers"][0]["args"])
    assert "kubectl get pods -A -o json" in script
    assert "/api/v1/environments/production/drift" in script
    assert "Authorization: Bearer" in script
    assert "--cacert" in script  # verifies conveyor's certificate


def test_examples_validate_against_the_kubernetes_schemas() -> None:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) missing")
    files = [str(p) for p in sorted(EXAMPLES.glob("*.yaml")) if p.name != "kustomization.yaml"]
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *files],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
