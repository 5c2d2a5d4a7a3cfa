"""What the registry benchmarks (benchmarks/copy.py, startup.py) share: a real registry,
the measured-process environment (bytecode compiled, as a user's ``pip install`` leaves
it), skopeo's blob cache, medians."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CONVEYOR = [sys.executable, "-m", "conveyor"]
SKOPEO_BLOB_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")


@dataclass
class Registry:
    """A CNCF distribution registry (Debian ``docker-registry``) on a loopback port."""

    workdir: Path
    host: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        log = (self.workdir / "registry.log").open("ab")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=log
        )
        self.host = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=0.5) as answer:  # noqa: S310 (http://127.0.0.1)
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start; see {self.workdir / 'registry.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def fresh(self) -> None:
        """Restart with empty storage (the registry caches blob metadata in memory)."""
        self.stop()
        shutil.rmtree(self.workdir / "storage", ignore_errors=True)
        self.start()


def measured_environment() -> dict[str, str]:
    """The environment of measured processes: bytecode is written and read, as after a
    user's ``pip install`` (this machine sets PYTHONDONTWRITEBYTECODE=1)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_bytecode() -> str:
    """Compile ``src/`` and the interpreter's environment once, before anything is timed."""
    import sysconfig

    paths = [str(ROOT / "src"), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *paths],
        check=False,
        capture_output=True,
        env=measured_environment(),
    )
    return (
        "bytecode compiled (compileall of src/, site-packages, stdlib); measured processes "
        "run without PYTHONDONTWRITEBYTECODE"
    )


def clear_skopeo_cache() -> None:
    """skopeo mounts across repositories only when this cache knows the blob: a fresh CI
    machine has none."""
    try:
        SKOPEO_BLOB_CACHE.unlink()
    except FileNotFoundError:
        pass
    except PermissionError:
        print(f"warning: cannot delete {SKOPEO_BLOB_CACHE}; skopeo may mount", file=sys.stderr)


def median(values: list[float]) -> float:
    return statistics.median(values)


def push_with_skopeo(layout: Path, target: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:latest",
            f"docker://{target}",
        ],
        check=True,
    )
