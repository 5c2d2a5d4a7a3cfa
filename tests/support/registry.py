"""Real CNCF distribution registries (Debian ``docker-registry``) for integration tests.

Each registry runs from a temp config on an ephemeral 127.0.0.1 port and is stopped at the
end of the session. ``skopeo`` is the independent client used to cross-check our work.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REGISTRY_BINARY = "docker-registry"


@dataclass(frozen=True)
class RunningRegistry:
    host: str  # "127.0.0.1:PORT"
    root: Path
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def skopeo_creds(self) -> list[str]:
        if self.username is None:
            return []
        return ["--creds", f"{self.username}:{self.password}"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(
    workdir: Path, *, htpasswd: tuple[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], RunningRegistry]:
    if shutil.which(REGISTRY_BINARY) is None:
        pytest.skip("docker-registry is not installed (make test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    root.mkdir(exist_ok=True)
    auth = ""
    if htpasswd is not None:
        import bcrypt

        user, password = htpasswd
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (workdir / "htpasswd").write_text(f"{user}:{hashed}\n")
        auth = f"auth:\n  htpasswd:\n    realm: conveyor-test\n    path: {workdir / 'htpasswd'}\n"
    for _attempt in range(5):
        port = _free_port()
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + auth
        )
        log = (workdir / "registry.log").open("ab")
        proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=0.5)
                if r.status_code in (200, 401):
                    running = RunningRegistry(
                        f"127.0.0.1:{port}", root, *(htpasswd or (None, None))
                    )
                    return proc, running
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"docker-registry did not start; see {workdir / 'registry.log'}")


def stop_registry(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """An open registry (no auth) on an ephemeral loopback port."""
    proc, running = start_registry(tmp_path_factory.mktemp("registry-open"))
    yield running
    stop_registry(proc)


@pytest.fixture(scope="session")
def registry_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A second open registry, for cross-registry copies."""
    proc, running = start_registry(tmp_path_factory.mktemp("registry-b"))
    yield running
    stop_registry(proc)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry with htpasswd Basic auth (user ``tester``)."""
    proc, running = start_registry(
        tmp_path_factory.mktemp("registry-auth"), htpasswd=("tester", "s3cret-canary-pw")
    )
    yield running
    stop_registry(proc)


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (make test installs it)")
    return subprocess.run(
        ["skopeo", *args], check=True, capture_output=True, text=True, timeout=timeout
    )
