"""People sign in through the real OpenID provider in Chromium and reach conveyor signed in."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Site

pytestmark = [pytest.mark.browser, pytest.mark.registry, pytest.mark.slow]


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
    # the page itself cannot read the cookie (HttpOnly), and the API answers as alice
    assert "conveyor_session" not in alice.page.evaluate("document.cookie")
    who = alice.context.request.get(f"{site.url}/api/v1/whoami")
    assert who.status == 200
    assert who.json()["identity"] == "alice"
    # another context is another person: not signed in
    stranger = people()
    assert stranger.context.request.get(f"{site.url}/api/v1/whoami").status == 401
    alice.problems.assert_none(alice.page)
