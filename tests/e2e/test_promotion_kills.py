"""Issue 9 #2, measured: a real ``conveyor promote`` process SIGKILLed at every step.

A real distribution registry sits behind a loopback proxy that kills the promoter at the
N-th registry request — on its arrival (before the registry sees it), and for every write
also once the registry has accepted it. The steps between two requests (the ledger's
commit among them) are covered by the arrival of the next request. After each kill:

- no tag of the environment names a digest the ledger has not recorded for it;
- ``status`` says exactly when the tags are out of step with the ledger, and when the
  recorded promotion's attestation is not listed (it is attached after the commit);
- ``repair`` puts them in step (tags = what the ledger says the environment holds; the
  attestation attached again from the ledger's envelope);
- promoting again converges: tags, ledger and history all name the new digest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import service
from conveyor.errors import NotFoundError
from tests.support.images import build_image
from tests.support.killproxy import KillPlan, kill_proxy
from tests.support.registry import RunningRegistry

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAGS = ("staging", "stable")
CONFIG = """\
version: 1
identities:
  ci:       {{key: keys/ci.pub,       roles: [builder]}}
  deployer: {{key: keys/deployer.pub, roles: [deployer]}}
environments:
  staging:
    repository: {repository}
    tags: [staging, stable]
    requires:
      provenance: {{}}
"""

pytestmark = [pytest.mark.registry, pytest.mark.slow]


@dataclass
class Images:
    v1: str  # oci:LAYOUT@digest
    v2: str


@dataclass
class Setup:
    registry: RunningRegistry
    proxy: str
    plan: KillPlan
    keys: Path
    images: Images


@pytest.fixture(scope="module")
def setup(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("kills")
    keys = base / "keys"
    for name in ("ci", "deployer"):
        service.generate_keys(name, out_dir=keys)
    refs = []
    for tag in ("v1", "v2"):
        img = build_image(base / "img", tag=tag, labels={"git.commit": COMMIT, "ci.run": tag})
        refs.append(f"oci:{img.layout}@{img.digest}")
    with kill_proxy(registry.host) as (proxy, plan):
        yield Setup(registry, proxy, plan, keys, Images(*refs))


@pytest.fixture(autouse=True)
def _plain_http(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_INSECURE_REGISTRIES", f"{setup.registry.host},{setup.proxy}")


@dataclass
class Workspace:
    root: Path
    config: Path
    repository: str  # as the registry names it (not through the proxy)
    source: str  # where its images are built
    images: Images | None = None

    def key(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    def v(self, number: int) -> str:
        assert self.images is not None
        return f"{self.source}@{_digest(self.images.v1 if number == 1 else self.images.v2)}"


def _workspace(setup: Setup, root: Path, name: str) -> Workspace:
    root.mkdir(parents=True)
    shutil.copytree(setup.keys, root / "keys")
    config = root / "conveyor.yaml"
    config.write_text(CONFIG.format(repository=f"{setup.proxy}/{name}"))
    # Each workspace builds into its own repository: its referrer listing is its own.
    source = f"{setup.registry.host}/build-{name}"
    ws = Workspace(root, config, f"{setup.registry.host}/{name}", source, setup.images)
    options = service.RegistryOptions.from_environment()
    for run, layout in (("v1", setup.images.v1), ("v2", setup.images.v2)):
        ref = f"{source}@{_digest(layout)}"
        service.copy_image(layout, ref, options=options)
        service.record_build(ref, commit=COMMIT, run_id=run, key=ws.key("ci"), config_path=config)
    service.promote(ws.v(1), environment="staging", key=ws.key("deployer"), config_path=config)
    return ws


def _promote_process(
    setup: Setup, ws: Workspace, at: int | None = None, when: str = "arrival"
) -> tuple[int, list[tuple[str, str]]]:
    """Run ``conveyor promote v2`` (killed at request ``at``): exit code, requests made."""
    setup.plan.reset()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "promote", ws.v(2), "--to", "staging",
         "--key", ws.key("deployer"), "--config", str(ws.config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ws.root,
    )  # fmt: skip
    setup.plan.reset(pid=proc.pid if at is not None else None, at=at, when=when)
    try:
        code = proc.wait(timeout=120)
        return code, list(setup.plan.log)
    finally:
        setup.plan.reset()


def _tags(ws: Workspace) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    options = service.RegistryOptions.from_environment()
    for tag in TAGS:
        try:
            found[tag] = str(service.resolve(f"{ws.repository}:{tag}", options=options).digest)
        except NotFoundError:
            found[tag] = None
    return found


def _recorded(ws: Workspace) -> list[str]:
    return [h.digest for h in service.history("staging", config_path=ws.config)]  # newest first


def _digest(ref: str) -> str:
    return ref.split("@")[1]


def _promotion_listed(ws: Workspace, digest: str) -> bool:
    """The repository lists a verified attestation of the ledger's promotion of ``digest``."""
    listed = service.list_attestations(f"{ws.repository}@{digest}", config_path=ws.config)
    return any(
        item.predicate_type.endswith("/promotion/v1") and item.verified and item.in_ledger
        for item in listed.found
    )


def _check_after_kill(setup: Setup, ws: Workspace) -> str:
    """The invariant, then status, repair and a new promote converging. Returns what the
    kill left: 'nothing recorded', 'recorded, attestation unlisted' (the attach comes after
    the commit; the tags, after it, are behind too), 'recorded, tags behind' or 'done'."""
    tags, recorded = _tags(ws), _recorded(ws)
    for tag, digest in tags.items():
        assert digest in recorded, f"tag {tag} names {digest}, never recorded for staging"
    current = recorded[0]
    apart = {t for t, d in tags.items() if d != current}
    unlisted = current != _digest(setup.images.v1) and not _promotion_listed(ws, current)
    (status,) = service.status(config_path=ws.config)
    said = [line for line in status.tags_apart if "does not list its attestation" in line]
    assert len(status.tags_apart) - len(said) == len(apart), status.tags_apart
    assert len(said) == (1 if unlisted else 0), status.tags_apart
    assert all("conveyor repair staging" in line for line in status.tags_apart)
    report = service.repair("staging", config_path=ws.config)
    assert set(report.moved) == apart
    assert len(report.attached) == (1 if unlisted else 0)
    assert report.in_step
    assert set(_tags(ws).values()) == {current}
    assert current == _digest(setup.images.v1) or _promotion_listed(ws, current)
    assert service.status(config_path=ws.config)[0].tags_apart == ()
    left = (
        "nothing recorded"
        if current == _digest(setup.images.v1)
        else "recorded, attestation unlisted"
        if unlisted
        else "done"
        if not apart
        else "recorded, tags behind"
    )
    again = service.promote(
        ws.v(2), environment="staging", key=ws.key("deployer"), config_path=ws.config
    )
    assert str(again.digest) == _digest(setup.images.v2)
    assert set(_tags(ws).values()) == {_digest(setup.images.v2)}
    assert _recorded(ws)[0] == _digest(setup.images.v2)
    assert _recorded(ws).count(_digest(setup.images.v2)) == 1  # recorded once, never twice
    return left


def _clean_run(setup: Setup, tmp_path: Path, name: str) -> list[tuple[str, str]]:
    """The requests of an uninterrupted promotion (repository names used once each: a
    repository that already holds the blobs would need fewer requests)."""
    ws = _workspace(setup, tmp_path / "clean", name)
    code, steps = _promote_process(setup, ws)
    assert code == 0
    assert steps, "the promotion made no registry request through the proxy"
    return steps


def test_sigkill_at_every_step_of_a_promotion(setup: Setup, tmp_path: Path) -> None:
    steps = _clean_run(setup, tmp_path, "kill-clean")
    # Accepted-but-unanswered matters for manifest writes (tags, referrers, the fallback
    # index); for a blob it is the arrival of the next request.
    writes = [i for i, (m, p) in enumerate(steps, 1) if m == "PUT" and "/manifests/" in p]
    tag_puts = [i for i, (m, p) in enumerate(steps, 1) if m == "PUT" and p.endswith(TAGS)]
    assert len(tag_puts) == len(TAGS)
    # The tag writes accepted first: the kills the issue reported (a tag moved, unrecorded).
    plans = [(at, "answered") for at in tag_puts]
    plans += [(at, "answered") for at in writes if at not in tag_puts]
    plans += [(at, "arrival") for at in range(1, len(steps) + 1)]
    outcomes: dict[str, int] = {}
    for number, (at, when) in enumerate(plans):
        ws = _workspace(setup, tmp_path / f"k{number}", f"kill-{number}")
        code, _ = _promote_process(setup, ws, at, when)
        assert code == -9, f"step {at} ({when}) {steps[at - 1]}: not killed (exit {code})"
        left = _check_after_kill(setup, ws)
        outcomes[left] = outcomes.get(left, 0) + 1
    # Every kind of interruption happened, and none left a tag ahead of the ledger.
    assert outcomes.get("recorded, tags behind", 0) >= len(TAGS)
    assert outcomes.get("recorded, attestation unlisted", 0) > 0
    assert outcomes.get("nothing recorded", 0) > 0
    print(json.dumps({"steps": len(steps), "kills": len(plans), "outcomes": outcomes}))
    assert sum(outcomes.values()) == len(plans)


def test_conveyor_repair_as_a_process(setup: Setup, tmp_path: Path) -> None:
    steps = _clean_run(setup, tmp_path, "cli-clean")
    first_tag = next(i for i, (m, p) in enumerate(steps, 1) if m == "PUT" and p.endswith(TAGS))
    ws = _workspace(setup, tmp_path / "cli", "kill-cli")
    code, _ = _promote_process(setup, ws, first_tag, "arrival")
    assert code == -9
    assert _recorded(ws)[0] == _digest(setup.images.v2)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--config", str(ws.config)],
            capture_output=True, text=True, timeout=120, check=False, cwd=ws.root,
        )  # fmt: skip

    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert "OUT OF STEP" in status.stdout
    assert "conveyor repair staging" in status.stdout
    checked = cli("repair", "staging", "--check", "--json")
    assert checked.returncode == 1, checked.stderr
    assert {a["tag"] for a in json.loads(checked.stdout)["apart"]} == set(TAGS)
    fixed = cli("repair", "staging")
    assert fixed.returncode == 0, fixed.stderr
    assert "now name " + _digest(setup.images.v2) in fixed.stdout
    assert set(_tags(ws).values()) == {_digest(setup.images.v2)}
    again = cli("repair", "staging", "--check")
    assert again.returncode == 0
    assert "every tag names" in again.stdout


def test_promotion_repairs_a_lost_referrer_listing_on_a_real_registry(
    setup: Setup, tmp_path: Path
) -> None:
    """Issue 9 #4, the operations part: distribution 2.8 has no referrers API, so the
    listing is the ``sha256-<hex>`` fallback index. Entries a concurrent writer lost there
    are re-attached in the destination from the ledger when the digest is promoted."""
    from conveyor.oci.digest import Digest
    from conveyor.oci.name import parse_target
    from conveyor.oci.referrers import fallback_tag, list_referrers
    from conveyor.oci.store import RawManifest

    ws = _workspace(setup, tmp_path / "lost", "lost-listing")
    service.generate_keys("alice", out_dir=ws.root / "keys")
    text = ws.config.read_text()
    ws.config.write_text(
        text.replace(
            "identities:\n", "identities:\n  alice: {key: keys/alice.pub, roles: [approver]}\n"
        )
    )
    for _ in range(3):
        service.approve(ws.v(2), environment="staging", key=ws.key("alice"), config_path=ws.config)
    digest = Digest.parse(_digest(ws.v(2)))
    options = service.RegistryOptions.from_environment()
    opener = service.RegistryOpener(options)
    try:
        source = opener(parse_target(ws.source), create=False)
        assert len(list_referrers(source, digest)) == 4  # build + 3 approvals
        index = source.get_manifest(fallback_tag(digest))
        document = json.loads(index.data)
        document["manifests"] = document["manifests"][:1]  # what a lost race leaves
        data = json.dumps(document).encode()
        source.put_manifest(
            RawManifest(data, index.media_type, Digest.of(data)), tag=fallback_tag(digest)
        )
        assert len(list_referrers(source, digest)) == 1
    finally:
        opener.close()
    result = service.promote(
        ws.v(2), environment="staging", key=ws.key("deployer"), config_path=ws.config
    )
    assert result.referrers_carried == 4  # one carried, three re-attached from the ledger
    listed = service.list_attestations(f"{ws.repository}@{digest}", config_path=ws.config)
    assert len(listed.found) == 5  # and the promotion itself
    assert all(item.verified and item.in_ledger for item in listed.found)
