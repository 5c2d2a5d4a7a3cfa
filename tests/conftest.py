"""Shared fixtures. A developer's own Docker config, HOME and PG* never leak into a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# A loaded CI machine must not turn a slow example into a failure: no per-example deadline.
settings.register_profile(
    "conveyor", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("conveyor")

pytest_plugins = ["tests.support.registry", "tests.support.postgres"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT.parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("PG", "CONVEYOR_", "DOCKER_", "GITHUB_", "GITLAB_", "CI_")):
            monkeypatch.delenv(name, raising=False)
    for name in (
        "REGISTRY_AUTH_FILE",
        "SSL_CERT_FILE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def corpus() -> Path:
    """The shared corpus of real third-party files; tests using it skip on a fresh clone."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS} (absent in a fresh clone)")
    return CORPUS
