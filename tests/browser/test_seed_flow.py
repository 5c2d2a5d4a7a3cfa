"""The seed flow in Chromium (issue 14): the board shows staging and production; alice and bob
sign in through the OpenID provider and approve on the artifact page; the deployer promotes
to production from the artifact page; a board open in another browser follows along without a
reload (server-sent events); the timeline shows every step verified; skopeo finds the very
digest in the production registry.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Site, environment
from tests.support.registry import skopeo
from tests.support.server import COMMIT

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.registry, pytest.mark.slow]

# The server checks the ledger about once a second; a loaded CI machine gets slack (ms).
LIVE_UPDATE = 20_000


def _promote_control(page: Any, env: str) -> Any:
    name = f"Promote to {env}"
    return page.get_by_role("link", name=name).or_(page.get_by_role("button", name=name))


def _approve(person: Any, digest: str, comment: str) -> None:
    page = person.page
    form = page.locator("form.approve")
    form.get_by_label("Environment").select_option("production")
    form.get_by_label("Comment").fill(comment)
    form.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{person.site.url}/artifacts/{digest}")


def test_the_seed_flow_in_the_browser(site: Site, people: Any) -> None:
    earlier = site.in_staging("seed-earlier")  # something for staging to roll back to
    digest = site.in_staging("seed")

    # a board open elsewhere (a reader), which must follow along without a reload
    watcher = people()
    watcher.sign_in("rita", next_path="/")
    board = watcher.page
    headings = board.locator("section.environment h2").all_inner_texts()
    assert [h.strip() for h in headings] == ["staging", "production"]  # in `after` order
    staging, production = environment(board, "staging"), environment(board, "production")
    expect(staging.locator(f'code.digest[title="{digest}"]')).to_be_visible()
    expect(production.locator(f'code.digest[title="{digest}"]')).to_have_count(0)
    waiting = board.locator('section.candidate[aria-label="Waiting for production"]')
    expect(waiting).to_contain_text("approvals: 0 of 2")
    expect(waiting).to_contain_text("✗")
    board.evaluate("window.__sameDocument = 'still here'")

    # the deployer, before anyone approved: promotion is offered disabled, with the reasons
    dana = people()
    dana.sign_in("dana", next_path=f"/artifacts/{digest}")
    denied = dana.page.get_by_role("button", name="Promote to production")
    expect(denied).to_be_disabled()
    expect(dana.page.locator("body")).to_contain_text("approvals: 0 of 2")

    # alice approves in her own browser; the reader's board shows it by itself
    alice = people()
    alice.sign_in("alice", next_path=f"/artifacts/{digest}")
    _approve(alice, digest, "alice read the diff")
    expect(waiting).to_contain_text("approvals: 1 of 2", timeout=LIVE_UPDATE)

    bob = people()
    bob.sign_in("bob", next_path=f"/artifacts/{digest}")
    expect(bob.page.locator("body")).to_contain_text("alice")  # who else approved
    _approve(bob, digest, "bob too")

    # the deployer promotes from the artifact page, through the confirmation page
    dana.page.reload()
    promote = _promote_control(dana.page, "production")
    expect(promote).to_be_enabled()
    promote.click()
    confirm = dana.page.get_by_role("button", name="Confirm promotion to production")
    expect(confirm).to_be_visible()
    expect(dana.page.locator("body")).to_contain_text(digest)  # the exact, full digest
    expect(dana.page.locator("body")).not_to_contain_text("✗")  # every gate passes
    expect(dana.page.locator("body")).to_contain_text("✓")
    confirm.click()
    dana.page.wait_for_load_state()
    assert dana.page.url.startswith(site.url), dana.page.url

    # the board updates without a reload: production now runs the digest
    expect(production.locator(f'code.digest[title="{digest}"]')).to_be_visible(timeout=LIVE_UPDATE)
    assert board.evaluate("window.__sameDocument") == "still here"
    assert board.url == f"{site.url}/"

    # the registry agrees, asked by an independent client
    info = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", f"docker://{site.production_repository}:production"
        ).stdout
    )
    assert info["Digest"] == digest

    # the timeline: every step, each with who, how they authenticated, and verified
    dana.goto(f"/artifacts/{digest}")
    expect(dana.page.get_by_role("heading", level=1)).to_contain_text(digest[7:19])
    steps = dana.page.locator("ol.timeline > li")
    texts = steps.all_inner_texts()
    assert len(texts) >= 8, texts  # build, tests, scan, staging, smoke, 2 approvals, production
    for text in texts:
        assert "✓ verified" in text, text
        assert "✗" not in text, text
        assert "sha256:" in text, text  # the attestation's digest
    joined = "\n".join(texts).lower()
    for step in ("build", "test", "scan", "smoke", "approv", "promot"):
        assert step in joined, (step, texts)
    by_alice = [t for t in texts if "alice" in t]
    assert by_alice, texts
    assert any("alice@example.com" in t for t in by_alice), by_alice  # how she authenticated
    assert any("bob" in t for t in texts), texts
    assert any("deployer" in t for t in texts), texts

    # and the ledger says the same: the approvals and the promotion name the people
    events = {(e["kind"], e["signer"], e["environment"]) for e in site.events(digest)}
    assert {
        ("approval", "alice", "production"),
        ("approval", "bob", "production"),
        ("promotion", "deployer", "production"),
    } <= events
    # an environment's history, newest first, and the deployer may roll back from there
    dana.goto("/environments/production")
    expect(dana.page.locator(f'code.digest[title="{digest}"]').first).to_be_visible()
    dana.goto("/environments/staging")
    shown = dana.page.locator("table.history code.digest").evaluate_all(
        "els => els.map(e => e.title)"
    )
    assert shown.index(digest) < shown.index(earlier), shown
    expect(dana.page.get_by_role("button", name="Roll back staging")).to_be_visible()
    for person in (watcher, dana, alice, bob):
        person.problems.assert_none(person.page)


def test_verify_now_on_the_audit_page(site: Site, people: Any) -> None:
    site.in_staging("audit")
    rita = people()
    rita.sign_in("rita", next_path="/audit")
    rita.page.get_by_role("button", name="Verify now").click()
    rita.page.wait_for_load_state()
    expect(rita.page.get_by_role("status")).to_contain_text("✓ verified")
    rita.problems.assert_none(rita.page)


def test_the_search_box_finds_a_digest_a_tag_and_a_commit(site: Site, people: Any) -> None:
    digest = site.in_staging("search")
    rita = people()
    rita.sign_in("rita", next_path="/")
    page = rita.page
    for query, lands in (
        (digest, f"/artifacts/{digest}"),
        (f"{site.staging_repository}:staging", f"/artifacts/{digest}"),  # a tag reference
        (COMMIT, f"/commits/{COMMIT}"),
        ("production", "/environments/production"),
    ):
        search = page.get_by_role("search")
        search.get_by_label("Search").fill(query)
        search.get_by_role("button", name="Search").click()
        page.wait_for_url(site.url + lands)
        expect(page.locator("main")).to_be_visible()
    # the commit page lists the digest built from it
    page.goto(f"{site.url}/commits/{COMMIT}")
    expect(page.locator(f'code.digest[title="{digest}"]').first).to_be_visible()
    rita.problems.assert_none(page)
