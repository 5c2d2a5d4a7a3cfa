"""What the web page refuses, in Chromium (issue 14): people sign in only through the
provider; a reader sees no action and a hand-made POST as that reader is 403; a POST without
the session's CSRF token is 403 even for someone allowed to act; markup in an image label
stays text; every page sends the strict headers and raises no console error or CSP violation.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.browser.conftest import Site
from tests.support.server import COMMIT

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.registry, pytest.mark.slow]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
ACTIONS = re.compile(r"^(Approve|Promote to .*|Confirm promotion to .*|Roll back .*)$")
HOSTILE_TITLE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'><b onclick=alert(3)>b"


def _pages(digest: str) -> list[str]:
    return [
        "/",
        f"/artifacts/{digest}",
        "/environments/staging",
        "/environments/production",
        f"/commits/{COMMIT}",
        "/audit",
        "/diff/staging/production",
        "/search?q=nothing-like-this",
    ]


def test_a_person_signs_in_in_chromium_and_gets_a_session(site: Site, people: Any) -> None:
    alice = people()
    session = alice.sign_in("alice")
    assert session["identity"] == "alice"
    assert session["authenticated"] == {
        "method": "login",
        "issuer": site.login,
        "email": "alice@example.com",
    }
    assert session["csrf_token"]
    cookies = {c["name"]: c for c in alice.context.cookies(site.url)}
    session_cookie = cookies["conveyor_session"]
    assert session_cookie["httpOnly"] is True
    assert session_cookie["sameSite"] == "Lax"
    # the page's scripts cannot read the cookie, and the API answers as alice
    assert "conveyor_session" not in alice.page.evaluate("document.cookie")
    who = alice.context.request.get(f"{site.url}/api/v1/whoami")
    assert who.status == 200
    assert who.json()["identity"] == "alice"
    # another context is another person, not signed in
    stranger = people()
    assert stranger.context.request.get(f"{site.url}/api/v1/whoami").status == 401
    alice.problems.assert_none(alice.page)


def test_pages_send_people_who_are_not_signed_in_to_the_login(site: Site, people: Any) -> None:
    stranger = people()
    digest = "sha256:" + "0" * 64
    for path in _pages(digest):
        answer = stranger.context.request.get(site.url + path, max_redirects=0)
        assert answer.status == 303, (path, answer.status)
        target = urlsplit(answer.headers["location"])
        assert target.path == "/login", (path, answer.headers["location"])
        assert parse_qs(target.query)["next"] == [path], (path, answer.headers["location"])
    # followed in the browser, it ends on the provider's sign-in form, then back on the page
    stranger.page.goto(f"{site.url}/audit")
    assert stranger.page.url.startswith(site.login), stranger.page.url
    stranger.page.locator("input[name=sub]").fill("rita")
    stranger.page.get_by_role("button", name="Authorize").click()
    stranger.page.wait_for_url(f"{site.url}/audit")


def test_every_page_sends_strict_headers_and_raises_no_error(site: Site, people: Any) -> None:
    digest = site.in_staging("headers")
    rita = people()
    rita.sign_in("rita")
    for path in _pages(digest):
        response = rita.goto(path)
        expected = 404 if path.startswith("/search") else 200  # nothing matched
        assert response.status == expected, (path, response.status)
        headers = response.headers
        assert headers["content-type"].startswith("text/html"), path
        assert headers.get("content-security-policy") == CSP, (path, headers)
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("referrer-policy") == "same-origin", path
        # no inline script or style anywhere: every script and stylesheet is a file of ours
        inline = rita.page.evaluate(
            """() => ({
                scripts: [...document.scripts].filter(s => !s.src).length,
                styles: document.querySelectorAll("style, [style]").length,
                handlers: [...document.querySelectorAll("*")].filter(
                    e => [...e.attributes].some(a => a.name.startsWith("on"))).length,
                foreign: [...document.querySelectorAll("script[src], link[href], img[src]")]
                    .map(e => e.src || e.href).filter(u => !u.startsWith(location.origin)),
            })"""
        )
        assert inline == {"scripts": 0, "styles": 0, "handlers": 0, "foreign": []}, (path, inline)
        rita.problems.assert_none(rita.page)
    # static files are served with a long cache and nosniff
    for selector, attribute in (("script[src]", "src"), ('link[rel="stylesheet"]', "href")):
        for url in rita.page.locator(selector).evaluate_all(f"els => els.map(e => e.{attribute})"):
            answer = rita.context.request.get(url)
            assert answer.status == 200, url
            assert answer.headers.get("x-content-type-options") == "nosniff", url
            assert "max-age=" in answer.headers.get("cache-control", ""), (url, answer.headers)


def test_a_reader_sees_no_actions_and_a_forged_post_is_refused(site: Site, people: Any) -> None:
    site.in_staging("reader-earlier")  # staging could be rolled back: by a deployer only
    digest = site.in_staging("reader")
    rita = people()
    session = rita.sign_in("rita", next_path=f"/artifacts/{digest}")
    assert session["identity"] == "viewer"
    page = rita.page
    expect(page.get_by_role("heading", level=1)).to_contain_text(digest[7:19])
    for path in (f"/artifacts/{digest}", "/", "/environments/production", "/environments/staging"):
        rita.goto(path)
        actions = page.get_by_role("button", name=ACTIONS).or_(
            page.get_by_role("link", name=ACTIONS)
        )
        expect(actions).to_have_count(0)
        expect(page.locator("form.approve")).to_have_count(0)
    rita.goto(f"/artifacts/{digest}")
    rita.problems.assert_none(page)

    csrf = session["csrf_token"]
    forged = {
        f"/artifacts/{digest}/approve": {"environment": "production", "comment": "forged"},
        f"/artifacts/{digest}/promote": {"environment": "production"},
        "/environments/staging/rollback": {},
    }
    for path, fields in forged.items():
        answer = rita.context.request.post(
            site.url + path, form={**fields, "csrf_token": csrf}, max_redirects=0
        )
        assert answer.status == 403, (path, answer.status, answer.text())
    # an approver's POST without the session's CSRF token (or with another's) is refused too
    alice = people()
    alice_session = alice.sign_in("alice")
    for token in (None, "", csrf, alice_session["csrf_token"][:-2] + "AA"):
        fields = {"environment": "production", "comment": "no token"}
        if token is not None:
            fields["csrf_token"] = token
        answer = alice.context.request.post(
            f"{site.url}/artifacts/{digest}/approve", form=fields, max_redirects=0
        )
        assert answer.status == 403, (token, answer.status, answer.text())
    # nothing of it was recorded
    kinds = [(e["kind"], e["signer"]) for e in site.events(digest)]
    assert not [k for k in kinds if k[0] == "approval"], kinds
    assert ("promotion", "viewer") not in kinds
    # the same approver with the token is accepted: the refusals were the token's doing
    good = alice.context.request.post(
        f"{site.url}/artifacts/{digest}/approve",
        form={"environment": "production", "csrf_token": alice_session["csrf_token"]},
        max_redirects=0,
    )
    assert good.status == 303, (good.status, good.text())
    assert ("approval", "alice") in [(e["kind"], e["signer"]) for e in site.events(digest)]


def test_markup_in_a_label_renders_as_text(site: Site, people: Any) -> None:
    ref = site.push_image("markup", {"org.opencontainers.image.title": HOSTILE_TITLE})
    site.record_build(ref)
    digest = ref.split("@", 1)[1]
    rita = people()
    rita.sign_in("rita", next_path=f"/artifacts/{digest}")
    page = rita.page
    expect(page.get_by_text(HOSTILE_TITLE, exact=False).first).to_be_visible()
    _no_markup_took_effect(page)
    rita.problems.assert_none(page)
    # markup in the search box comes back as text on the nothing-matched page too
    assert rita.goto("/search?q=" + quote(HOSTILE_TITLE)).status == 404
    expect(page.locator("main")).to_contain_text("Nothing matched")
    expect(page.locator("main")).to_contain_text("<script>alert(1)</script>")
    _no_markup_took_effect(page)
    rita.problems.assert_none(page)


def _no_markup_took_effect(page: Any) -> None:
    found = page.evaluate(
        """() => ({
            inlineScripts: [...document.scripts].filter(s => s.textContent.includes("alert"))
                .length,
            images: document.querySelectorAll('img[src="x"], img[onerror]').length,
            bold: document.querySelectorAll("b[onclick]").length,
        })"""
    )
    assert found == {"inlineScripts": 0, "images": 0, "bold": 0}, found


def test_a_deployer_s_post_past_denying_gates_or_with_hostile_fields_is_a_4xx_page(
    site: Site, people: Any
) -> None:
    digest = site.in_staging("gates-deny")  # no approvals yet: production denies
    dana = people()
    csrf = dana.sign_in("dana")["csrf_token"]
    request = dana.context.request
    promote = f"{site.url}/artifacts/{digest}/promote"
    denied = request.post(
        promote, form={"environment": "production", "csrf_token": csrf}, max_redirects=0
    )
    assert 400 <= denied.status < 500, (denied.status, denied.text())
    assert "approvals: 0 of 2" in denied.text()
    assert denied.headers.get("content-security-policy") == CSP
    assert ("promotion", "deployer") not in [(e["kind"], e["signer"]) for e in site.events(digest)]
    hostile = [
        (promote, {"environment": "<script>alert(1)</script>"}),
        (promote, {"environment": "production", "break_glass_reason": "x" * 100_000}),
        (f"{site.url}/artifacts/sha256:{'0' * 64}/promote", {"environment": "production"}),
        (f"{site.url}/artifacts/not-a-digest/approve", {"environment": "production"}),
        (f"{site.url}/environments/nowhere/rollback", {}),
        (f"{site.url}/environments/staging/rollback", {"to": "sha256:" + "f" * 64}),
    ]
    for url, fields in hostile:
        answer = request.post(url, form={**fields, "csrf_token": csrf}, max_redirects=0)
        assert 400 <= answer.status < 500, (url, answer.status, answer.text()[:300])
        assert "<script>alert(1)</script>" not in answer.text(), url
        assert "Traceback" not in answer.text(), url
    # the confirmation page offers nothing to press while the gates deny, and says why
    dana.goto(f"/artifacts/{digest}/promote?environment=production")
    confirm = dana.page.get_by_role("button", name="Confirm promotion to production")
    expect(confirm).to_be_disabled()
    expect(dana.page.locator("main")).to_contain_text("approvals: 0 of 2")
    expect(dana.page.locator("main")).to_contain_text("✗")
    dana.problems.assert_none(dana.page)
