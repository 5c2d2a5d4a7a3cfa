"""The CI recipes talk to the server with OIDC (issue 13): no signing key and no database URL
in CI, the production deploy job bound to its environment, and the server configuration the
READMEs show maps each job's token (claims shaped as the providers document them) to exactly
the identity the recipe means."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.policy.config import load_config
from conveyor.server import oidc
from tests.support.oidc import CiIssuer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKFLOW = EXAMPLES / "github-actions" / "promote.yml"
GITLAB = EXAMPLES / "gitlab-ci" / ".gitlab-ci.yml"
SECRETS = re.compile(r"CONVEYOR_DB|CONVEYOR_SIGNING_KEY|CONVEYOR_\w*KEY|secrets\.CONVEYOR")


def test_the_github_workflow_uses_oidc_and_holds_no_conveyor_secret() -> None:
    text = WORKFLOW.read_text()
    assert SECRETS.search(text) is None, SECRETS.search(text)
    document = yaml.safe_load(text)
    assert document["permissions"]["id-token"] == "write"
    assert document["env"]["CONVEYOR_SERVER"].startswith("https://")
    jobs = document["jobs"]
    assert jobs["deploy-production"]["environment"] == "production"
    assert jobs["deploy-staging"]["environment"] == "staging"
    for name, job in jobs.items():  # no job narrows the permissions away from id-token
        assert "permissions" not in job or job["permissions"].get("id-token") == "write", name


def test_the_gitlab_pipeline_uses_id_tokens_and_holds_no_conveyor_secret() -> None:
    text = GITLAB.read_text()
    assert SECRETS.search(text) is None, SECRETS.search(text)
    document = yaml.safe_load(text)
    assert document["variables"]["CONVEYOR_SERVER"].startswith("https://")
    assert document[".conveyor"]["id_tokens"] == {"CONVEYOR_ID_TOKEN": {"aud": "conveyor"}}
    for name, job in document.items():
        script = " ".join(job.get("script", [])) if isinstance(job, dict) else ""
        if "conveyor " in script:
            assert job.get("extends") == ".conveyor", name  # so it has the ID token
    assert document["promote-production"]["environment"]["name"] == "production"


def _server_config(readme: Path, tmp_path: Path) -> Any:
    blocks = re.findall(r"^```yaml\n(.*?)^```", readme.read_text(), re.DOTALL | re.MULTILINE)
    [block] = [b for b in blocks if "oidc:" in b and "identities:" in b]
    from conveyor import service

    service.generate_keys("server", out_dir=tmp_path / "keys")
    path = tmp_path / "conveyor.yaml"
    path.write_text(block)
    return load_config(path)


def _identity(config: Any, provider: str, claims: dict[str, Any]) -> str | list[str]:
    matched = [
        name
        for name, spec in config.model.identities.items()
        if spec.oidc is not None
        and spec.oidc.issuer == provider
        and oidc._matches(spec.oidc.claims, claims, spec.oidc.without)
    ]
    return matched[0] if len(matched) == 1 else matched


def test_the_github_readme_config_maps_each_job_to_its_identity(tmp_path: Path) -> None:
    config = _server_config(EXAMPLES / "github-actions" / "README.md", tmp_path)
    issuer = CiIssuer(url="https://token.actions.githubusercontent.com")
    assert _identity(config, "github", issuer.github_claims()) == "ci"
    staging = issuer.github_claims(environment="staging")
    assert _identity(config, "github", staging) == "deployer-staging"
    prod = issuer.github_claims(environment="production")
    assert _identity(config, "github", prod) == "deployer-prod"
    assert _identity(config, "github", issuer.github_claims(ref="refs/heads/feature")) == []
    assert _identity(config, "github", issuer.github_claims(repo="acme/other")) == []
    assert "deployer" in {str(r) for r in config.identities["deployer-prod"].roles}
    assert "deployer" not in {str(r) for r in config.identities["ci"].roles}


@pytest.mark.parametrize(
    ("environment", "identity"),
    [(None, "ci"), ("staging", "deployer-staging"), ("production", "deployer-prod")],
)
def test_the_gitlab_readme_config_maps_each_job_to_its_identity(
    tmp_path: Path, environment: str | None, identity: str
) -> None:
    config = _server_config(EXAMPLES / "gitlab-ci" / "README.md", tmp_path)
    claims = CiIssuer(url="https://gitlab.example.com").gitlab_claims()
    if environment:
        claims.update(
            environment=environment, environment_protected="true", environment_action="start"
        )
    assert _identity(config, "gitlab", claims) == identity
    unprotected = {**claims, "ref_protected": "false"}
    if environment != "production":
        assert _identity(config, "gitlab", unprotected) == []
