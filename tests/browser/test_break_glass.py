"""Break-glass during a freeze, in Chromium (issue 14): the confirmation page of "Promote to
production" shows the freeze and asks for a "Break-glass reason"; without one (or with only
spaces) the server refuses; with a reason but too few approvals it refuses and says how many
count; with the reason and the extra approval it promotes, and the environment's history
marks the entry as break-glass.

The shared site has no freeze: ``frozen_production`` writes one into its conveyor.yaml (the
server reloads it when the file changes) and puts the file back afterwards. Tests on one
worker run one at a time, so no other test sees the freeze."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Site, environment

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.registry, pytest.mark.slow]

REASON = "incident 42: the payment outage"
# A third approver (API only), for the approval break-glass asks for beyond the gate's two.
FREEZE = """\
freeze:
  windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']
  environments: [production]
  break_glass: {approvals: 1}
"""


@pytest.fixture
def frozen_production(site: Site) -> Iterator[None]:
    config = site.team.config
    before = config.read_text()
    frozen = before.replace("  root:", "  carol:    {roles: [approver]}\n  root:", 1).replace(
        "environments:\n", FREEZE + "environments:\n", 1
    )
    assert "carol:" in frozen
    assert frozen.count("freeze:") == 1
    config.write_text(frozen)
    try:
        yield
    finally:
        config.write_text(before)


def _confirm(page: Any) -> Any:
    return page.get_by_role("button", name="Confirm promotion to production")


def test_break_glass_during_a_freeze(site: Site, people: Any, frozen_production: None) -> None:
    digest = site.in_staging("break-glass")
    staged = f"{site.staging_repository}@{digest}"
    for approver in ("alice", "bob"):
        body = {"reference": staged, "environment": "production"}
        site.api("POST", "/api/v1/approvals", identity=approver, json=body)

    dana = people()
    dana.sign_in("dana", next_path=f"/artifacts/{digest}/promote?environment=production")
    page = dana.page
    body = page.locator("body")
    expect(body).to_contain_text("a freeze is on")
    expect(body).to_contain_text("frozen by")
    reason = page.get_by_label("Break-glass reason")
    expect(reason).to_be_visible()
    expect(reason).to_have_attribute("required", "")
    expect(_confirm(page)).to_be_enabled()

    # empty: the browser itself does not send the form
    _confirm(page).click()
    assert reason.evaluate("e => e.validity.valueMissing") is True
    assert page.url.endswith("/promote?environment=production"), page.url

    # only spaces: the browser sends it, the server refuses (409) and keeps the page
    reason.fill("   ")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        _confirm(page).click()
    assert posted.value.status == 409
    expect(page.get_by_role("alert")).to_contain_text("freeze")
    expect(page.get_by_role("alert")).to_contain_text("3 approver approvals")

    # a reason, but break-glass asks for one approval more than the gate's two
    page.get_by_label("Break-glass reason").fill(REASON)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        _confirm(page).click()
    assert posted.value.status == 409
    expect(page.get_by_role("alert")).to_contain_text("2 of 3 approvals: alice, bob")
    expect(page.get_by_label("Break-glass reason")).to_have_value(REASON)  # kept to retry

    # the extra approval, then the same form goes through
    body = {"reference": staged, "environment": "production"}
    site.api("POST", "/api/v1/approvals", identity="carol", json=body)
    _confirm(page).click()
    page.wait_for_url(f"{site.url}/artifacts/{digest}")

    dana.goto("/environments/production")
    current = page.locator("table.history tr.current")
    expect(current.locator(f'code.digest[title="{digest}"]')).to_have_count(1)
    expect(current).to_contain_text(f"⚠ break-glass: {REASON}")
    dana.goto("/")
    expect(environment(page, "production")).to_contain_text(f"break-glass: {REASON}")
    dana.problems.assert_none(page)
