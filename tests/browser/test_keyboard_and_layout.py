"""The web page for keyboards and small screens, in Chromium (issue 14): an approval made with
the keyboard alone, a visible focus on every stop on the way, the board without horizontal
scrolling at 375 px and with its columns side by side at 1280 px (screenshots of both kept as
test artifacts), and a board that reads completely without JavaScript.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Site, environment

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.registry, pytest.mark.slow]

# What has focus, and whether the browser draws it: an outline or a box shadow.
_FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  const shadow = style.boxShadow !== "none" && style.boxShadow !== "";
  return {
    tag: el.tagName.toLowerCase(),
    text: (el.getAttribute("aria-label") || el.innerText || el.name || "").trim().slice(0, 60),
    inApproveForm: !!el.closest("form.approve"),
    visible: outline || shadow,
  };
}"""


def _press(page: Any, key: str, path: list[dict[str, Any]]) -> dict[str, Any] | None:
    page.keyboard.press(key)
    focused: dict[str, Any] | None = page.evaluate(_FOCUSED)
    if focused is not None:
        path.append(focused)
        assert focused["visible"], f"no visible focus on {focused} after {key}"
    return focused


def _tab_until(page: Any, wanted: str, path: list[dict[str, Any]], limit: int = 80) -> None:
    for _ in range(limit):
        focused = _press(page, "Tab", path)
        if focused and focused["inApproveForm"] and focused["tag"] == wanted:
            return
    raise AssertionError(f"Tab never reached the approve form's {wanted}: {path}")


def test_an_approval_with_the_keyboard_alone(site: Site, people: Any) -> None:
    digest = site.in_staging("keyboard")
    alice = people()
    alice.sign_in("alice", next_path=f"/artifacts/{digest}")
    page = alice.page
    path: list[dict[str, Any]] = []
    _tab_until(page, "select", path)
    select = page.locator("form.approve").get_by_label("Environment")
    # the environment still to approve for is production; choose it with arrows if need be
    for _ in range(5):
        if select.input_value() == "production":
            break
        page.keyboard.press("ArrowDown")
    assert select.input_value() == "production"
    comment = _press(page, "Tab", path)
    assert comment is not None
    assert (comment["tag"], comment["inApproveForm"]) == ("textarea", True), comment
    page.keyboard.type("approved with the keyboard alone")
    button = _press(page, "Tab", path)
    assert button is not None
    assert (button["tag"], button["text"], button["inApproveForm"]) == ("button", "Approve", True)
    # back and forth: Shift+Tab returns to the comment, Tab to the button again
    back = _press(page, "Shift+Tab", path)
    assert back is not None
    assert back["tag"] == "textarea"
    _press(page, "Tab", path)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{site.url}/artifacts/{digest}"
    events = {(e["kind"], e["signer"], e["environment"]) for e in site.events(digest)}
    assert ("approval", "alice", "production") in events
    timeline = page.locator("ol.timeline > li", has_text="alice")
    expect(timeline.first).to_contain_text("✓ verified")
    alice.problems.assert_none(page)


def test_the_board_at_375_and_1280_px(site: Site, people: Any, artifacts_dir: Path) -> None:
    site.in_production("layout-production")
    site.in_staging("layout-staging")  # a different digest waits for production
    shots = {}
    for width in (1280, 375):  # each screenshot is kept before its checks
        person = people(width=width, height=800)
        person.sign_in("rita", next_path="/")
        page = person.page
        staging, production = environment(page, "staging"), environment(page, "production")
        expect(staging).to_be_visible()
        expect(production).to_be_visible()
        shots[width] = artifacts_dir / f"board-{width}px.png"
        page.screenshot(path=str(shots[width]), full_page=True)
        widths = page.evaluate(
            "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
        )
        assert widths["scroll"] <= widths["inner"], (width, widths)  # no sideways scrolling
        first, second = staging.bounding_box(), production.bounding_box()
        for box in (first, second):
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= width + 0.5, (width, box)
        if width == 1280:  # side by side: left to right, overlapping vertically
            assert first["x"] + first["width"] <= second["x"], (first, second)
            assert first["y"] < second["y"] + second["height"], (first, second)
            assert second["y"] < first["y"] + first["height"], (first, second)
        person.problems.assert_none(page)
    for shot in shots.values():
        assert shot.stat().st_size > 1000, shot


def test_an_artifact_page_fits_375_px(site: Site, people: Any, artifacts_dir: Path) -> None:
    digest = site.in_staging("narrow-artifact")
    person = people(width=375, height=800)
    person.sign_in("alice", next_path=f"/artifacts/{digest}")
    widths = person.page.evaluate(
        "() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})"
    )
    person.page.screenshot(path=str(artifacts_dir / "artifact-375px.png"), full_page=True)
    assert widths["scroll"] <= widths["inner"], widths
    person.problems.assert_none(person.page)


def test_the_board_reads_without_javascript(site: Site, people: Any) -> None:
    digest = site.in_staging("no-script")
    # sign in with JavaScript, then read the board in a context that runs none
    reader = people(javascript=False)
    reader.sign_in("rita", next_path="/")
    page = reader.page
    headings = [h.strip() for h in page.locator("section.environment h2").all_inner_texts()]
    assert headings == ["staging", "production"]
    shown = environment(page, "staging").locator(f'code.digest[title="{digest}"]')
    expect(shown).to_be_visible()
    expect(page.get_by_role("button", name="Copy digest")).to_have_count(0)  # JS only, hidden
    # with JavaScript the copy button puts the full digest on the clipboard
    person = people()
    person.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    person.sign_in("rita", next_path="/")
    copy = environment(person.page, "staging").get_by_role("button", name="Copy digest")
    expect(copy.first).to_be_visible()
    copy.first.click()
    assert person.page.evaluate("navigator.clipboard.readText()") == digest
    person.problems.assert_none(person.page)
