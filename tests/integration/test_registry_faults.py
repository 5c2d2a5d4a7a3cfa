"""Slow, silent and failing registries: a real registry behind a fault-injecting proxy.

Issue 9 #6 (the overall deadline, the minimum transfer rate) and #13 (retries). The
deadline tests run ``conveyor`` as a process with ``CONVEYOR_DEADLINE`` of a few seconds and
assert how it ends (one line, exit 3); the subprocess time-out only guards against a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conveyor.errors import RegistryError
from conveyor.oci.digest import Digest
from conveyor.oci.name import Reference
from conveyor.registry.client import RegistryClient
from conveyor.registry.copy import BLOB_ATTEMPTS, copy
from tests.support.faults import Fault, FaultProxy, Rule
from tests.support.images import BuiltImage, build_image
from tests.support.registry import RunningRegistry, skopeo

pytestmark = pytest.mark.registry

DEADLINE = 3  # seconds: short, so that a test ends soon whatever it finds
HANG_GUARD = 120  # the old code ran 600+ s here; a pass never comes near this


def _push(image: BuiltImage, registry: RunningRegistry, target: str) -> None:
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:latest",
        f"docker://{registry.host}/{target}",
    )


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, registry: RunningRegistry) -> BuiltImage:
    image = build_image(tmp_path_factory.mktemp("faults") / "img", layer_sizes=(4096, 8192))
    _push(image, registry, "faults/app:v1")
    return image


def _conveyor(*args: str, insecure: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["CONVEYOR_DEADLINE"] = str(DEADLINE)
    env["CONVEYOR_INSECURE_REGISTRIES"] = ",".join(insecure)
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_GUARD,
    )


def _assert_deadline_error(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"overall deadline of {DEADLINE} s" in lines[0]
    assert "CONVEYOR_DEADLINE" in lines[0]
    assert "Traceback" not in done.stderr


def _on_manifests(fault: Fault) -> Rule:
    return lambda method, path, n: fault if "/manifests/" in path else None


@pytest.mark.parametrize(
    "fault",
    [Fault.silent(), Fault.trickle(0.5), Fault.trickle(0.5, body_only=True)],
    ids=["silent", "trickled-headers", "trickled-body"],
)
def test_resolve_ends_at_the_deadline(
    registry: RunningRegistry, pushed: BuiltImage, fault: Fault
) -> None:
    with FaultProxy(registry.host, _on_manifests(fault)) as proxy:
        done = _conveyor("resolve", f"{proxy.host}/faults/app:v1", insecure=[proxy.host])
    _assert_deadline_error(done)


def test_copy_of_a_trickled_blob_ends_at_the_deadline(
    registry: RunningRegistry, registry_b: RunningRegistry, pushed: BuiltImage
) -> None:
    # One byte every 0.2 s stays well inside every socket time-out and above nothing.
    def rule(method: str, path: str, n: int) -> Fault | None:
        if method == "GET" and "/blobs/sha256:" in path:
            return Fault.trickle(0.2, body_only=True)
        return None

    with FaultProxy(registry.host, rule) as proxy:
        done = _conveyor(
            "copy",
            f"{proxy.host}/faults/app:v1",
            f"{registry_b.host}/faults/deadline:v1",
            "--quiet",
            insecure=[proxy.host, registry_b.host],
        )
    _assert_deadline_error(done)
    # Nothing was named in the destination: the manifest goes last, after every blob.
    with pytest.raises(subprocess.CalledProcessError):
        skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry_b.host}/faults/deadline:v1",
        )


def test_a_blob_below_the_minimum_rate_is_cut_off(
    registry: RunningRegistry, registry_b: RunningRegistry, pushed: BuiltImage
) -> None:
    # 20 bytes/s against a floor of 2000 bytes/s over 1 s windows; the deadline is far away.
    def rule(method: str, path: str, n: int) -> Fault | None:
        if method == "GET" and "/blobs/sha256:" in path:
            return Fault.trickle(0.05, body_only=True)
        return None

    with (
        FaultProxy(registry.host, rule) as proxy,
        RegistryClient(
            insecure_registries=[proxy.host, registry_b.host],
            deadline=90,
            min_rate=2000,
            rate_window=1.0,
        ) as client,
        pytest.raises(RegistryError) as info,
    ):
        copy(
            client.repository(Reference.parse(f"{proxy.host}/faults/app:v1")),
            "v1",
            client.repository(Reference.parse(f"{registry_b.host}/faults/slow:v1")),
            concurrency=1,
        )
    message = str(info.value)
    assert "below the minimum of 2000 bytes/s" in message
    assert f"after {BLOB_ATTEMPTS} attempts" in message
    assert "deadline" not in message


def test_a_503_on_a_streamed_blob_upload_restarts_that_upload(
    registry: RunningRegistry, registry_b: RunningRegistry, pushed: BuiltImage
) -> None:
    # Issue 9 #13: a registry answering 503 to streamed uploads for a while failed the copy
    # (three attempts in a row, no pause). Now: a new session each time, with backoff.
    def rule(method: str, path: str, n: int) -> Fault | None:
        if method == "PUT" and "/blobs/uploads/" in path and n <= 3:
            return Fault.status(503)
        return None

    with (
        FaultProxy(registry_b.host, rule) as proxy,
        RegistryClient(insecure_registries=[registry.host, proxy.host]) as client,
    ):
        result = copy(
            client.repository(Reference.parse(f"{registry.host}/faults/app:v1")),
            "v1",
            client.repository(Reference.parse(f"{proxy.host}/faults/retried:v1")),
            concurrency=1,
            tags=["v1"],
        )
        log = list(proxy.log)
    assert str(result.digest) == pushed.digest
    assert [a for m, p, a in log if m == "PUT" and "/blobs/uploads/" in p] == [
        *["status"] * 3,
        *["forward"] * len(pushed.blobs),
    ]
    # A new upload session for each refused attempt, then one per blob.
    assert len([p for m, p, a in log if m == "POST"]) == len(pushed.blobs) + 3
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{registry_b.host}/faults/retried:v1"
    )
    assert Digest.of(raw.stdout.encode()) == Digest.parse(pushed.digest)


def test_500_on_get_is_retried_against_a_real_registry(
    registry: RunningRegistry, pushed: BuiltImage
) -> None:
    def rule(method: str, path: str, n: int) -> Fault | None:
        return Fault.status(500) if "/manifests/" in path and n <= 2 else None

    with (
        FaultProxy(registry.host, rule) as proxy,
        RegistryClient(insecure_registries=[proxy.host], sleep=lambda s: None) as client,
    ):
        raw = client.repository(Reference.parse(f"{proxy.host}/faults/app:v1")).get_manifest("v1")
        assert [a for m, p, a in proxy.log if "/manifests/" in p] == ["status", "status", "forward"]
    assert str(raw.digest) == pushed.digest
