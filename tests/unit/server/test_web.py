"""The web page (issue 14) in process: rendering, escaping, authentication, CSRF, roles,
clean 404/400 pages, security headers, and the forms that approve, promote and roll back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.server.web import events
from conveyor.server.web.render import CSP
from tests.unit.server._web_support import COMMIT, COMMIT_2, HOSTILE, WebTeam, make_web_team

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
UNKNOWN = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebTeam]:
    """Read-only tests share one team: v1 built, tested, scanned and in staging."""
    made = make_web_team(tmp_path_factory.mktemp("web") / "team")
    yield made
    made.client.app.state.conveyor.close()  # type: ignore[attr-defined]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[WebTeam]:
    """A team of its own, for the tests that record."""
    made = make_web_team(tmp_path / "team")
    yield made
    made.client.app.state.conveyor.close()  # type: ignore[attr-defined]


def _pages(team: WebTeam) -> list[str]:
    digest = team.digest("v1")
    return [
        "/",
        "/?fragment=board",
        f"/artifacts/{digest}",
        f"/artifacts/{digest}/promote?environment=production",
        "/environments/staging",
        f"/commits/{COMMIT}",
        "/audit",
        "/diff/staging/production",
        "/search?q=nothing-like-this",
    ]


def _main(html: str) -> str:
    found = re.search(r"<main[^>]*>(.*)</main>", html, re.S)
    assert found, html[:500]
    return found.group(1)


# --- rendering ----------------------------------------------------------------------------------


def test_the_board_shows_each_environment_in_order_with_its_digest(team: WebTeam) -> None:
    page = team.as_("viewer").get("/")
    assert page.status_code == 200
    html = page.text
    staging = html.index('<section class="environment" aria-labelledby="env-staging">')
    production = html.index('<section class="environment" aria-labelledby="env-production">')
    assert staging < production
    assert '<h2 id="env-staging">staging</h2>' in html
    digest = team.digest("v1")
    assert f'<code class="digest" title="{digest}">{digest[:19]}</code>' in html
    assert "Copy digest" in html
    assert COMMIT[:12] in html
    assert 'href="https://ci.example/run/42"' in html
    assert "by deployer" in html
    # the candidate waits between staging and production, its failing gate in words
    waiting = html.index('<section class="candidate" aria-label="Waiting for production">')
    assert staging < waiting < production
    assert "✗ approvals: 0 of 2" in html
    assert "✓ 4 of 4 gates passed" in html


def test_the_board_says_a_failing_approvals_gate_in_words_once(team: WebTeam) -> None:
    html = team.as_("viewer").get("/").text
    waiting = html[html.index('aria-label="Waiting for production"') :]
    waiting = waiting[: waiting.index("</section>")]
    assert '<li class="fail">✗ approvals: 0 of 2</li>' in waiting
    assert "approvals: none" not in waiting  # not the gate's reason repeated after its name


def test_the_board_fragment_is_the_main_element_inner_html(team: WebTeam) -> None:
    full = team.as_("viewer").get("/").text
    fragment = team.as_("viewer").get("/?fragment=board")
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "<main" not in fragment.text
    assert fragment.text.strip() == _main(full).strip()


def test_the_artifact_page_shows_the_chain_of_custody(team: WebTeam) -> None:
    digest = team.digest("v1")
    html = team.as_("viewer").get(f"/artifacts/{digest}").text
    assert f'<h1>Artifact <code class="digest" title="{digest}">{digest[:19]}</code>' in html
    timeline = re.search(r'<ol class="timeline">(.*?)</ol>', html, re.S)
    assert timeline
    steps = re.findall(r"<li class=\"step (\w+)\">(.*?)</li>", timeline.group(1), re.S)
    assert [kind for kind, _ in steps] == ["build", "tests", "scan", "promotion"]
    for _, body in steps:
        assert "✓ verified" in body
        assert re.search(r'<code title="sha256:[0-9a-f]{64}">', body)  # the attestation
        assert "<dt>Who</dt><dd>" in body
    assert "linux/amd64" in html
    assert "CVE-2024-0002" in html  # the latest scan's findings
    assert "https://slsa.dev/provenance/v1" in html  # a referrer
    assert '<a href="/environments/staging">staging</a>' in html  # where it runs now
    assert "✗ approvals: 0 of 2 approvals" in html  # production's gate check


def test_a_label_with_markup_is_text(team: WebTeam) -> None:
    html = team.as_("viewer").get(f"/artifacts/{team.digest('v1')}").text
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&#34;title&#34;)&lt;/script&gt;" in html
    assert "<script>" not in html  # no inline script at all
    assert "style=" not in html
    assert "<style" not in html


def test_every_html_response_carries_the_security_headers(team: WebTeam) -> None:
    client = team.as_("viewer")
    for path in [*_pages(team), f"/artifacts/{UNKNOWN}", "/artifacts/sha256:zz", "/commits/xyz"]:
        page = client.get(path)
        assert page.headers["content-type"].startswith("text/html"), path
        assert page.headers["content-security-policy"] == CSP, path
        assert "frame-ancestors 'none'" in CSP
        assert "script-src 'self'" in CSP
        assert page.headers["x-content-type-options"] == "nosniff", path
        assert page.headers["referrer-policy"] == "same-origin", path


def test_static_files_are_versioned_and_cached_long(team: WebTeam) -> None:
    html = team.as_("viewer").get("/").text
    css = re.search(r'href="(/static/[0-9a-f]{16}/conveyor\.css)"', html)
    js = re.search(r'src="(/static/[0-9a-f]{16}/conveyor\.js)"', html)
    assert css
    assert js
    for url, kind in ((css.group(1), "text/css"), (js.group(1), "text/javascript")):
        answer = team.client.get(url)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(kind)
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert team.client.get("/static/0000000000000000/conveyor.css").status_code == 404
    assert team.client.get("/api/v1/healthz").headers.get("cache-control") in (None, "no-store")


def test_the_other_pages_render(team: WebTeam) -> None:
    client = team.as_("viewer")
    commit = client.get(f"/commits/{COMMIT}")
    assert commit.status_code == 200
    assert team.digest("v1") in commit.text
    assert "staging: promoted to staging" in commit.text
    history = client.get("/environments/staging")
    assert history.status_code == 200
    assert team.digest("v1")[:19] in history.text
    diff = client.get("/diff/staging/production")
    assert diff.status_code == 200
    assert "CVE-2024-0001 (low)" in diff.text  # in staging's digest, not in production's
    audit = client.get("/audit")
    assert audit.status_code == 200
    assert "<dd>4 entries</dd>" in audit.text
    assert "Verify now" in audit.text


# --- authentication, CSRF, roles ----------------------------------------------------------------


def test_a_page_without_credentials_redirects_to_login(team: WebTeam) -> None:
    nobody = team.as_(None)
    for path in _pages(team):
        answer = nobody.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=/"), path
    assert nobody.get("/environments/staging").headers["location"] == (
        "/login?next=/environments/staging"
    )
    assert nobody.get("/events").status_code == 401  # not a page: the API's refusal


def test_a_bearer_token_reads_the_pages(team: WebTeam) -> None:
    created = team.state.tokens().create("viewer-web", identity="viewer", created_by="test")  # type: ignore[attr-defined]
    answer = team.as_(None).get("/", headers={"Authorization": f"Bearer {created.token}"})
    assert answer.status_code == 200
    assert "Signed in as <strong>viewer</strong>" in answer.text


def test_a_reader_sees_no_action_buttons(team: WebTeam) -> None:
    client = team.as_("viewer")
    artifact = client.get(f"/artifacts/{team.digest('v1')}").text
    assert 'class="approve"' not in artifact
    assert ">Approve<" not in artifact
    assert "Promote to" not in artifact
    assert "Roll back" not in client.get("/environments/staging").text
    confirm = client.get(f"/artifacts/{team.digest('v1')}/promote?environment=production").text
    assert "Confirm promotion" not in confirm


def test_action_buttons_follow_the_roles(team: WebTeam) -> None:
    digest = team.digest("v1")
    approver = team.as_("alice").get(f"/artifacts/{digest}").text
    assert '<form class="approve"' in approver
    assert "Promote to" not in approver
    assert '<label for="approve-environment">Environment</label>' in approver
    assert '<label for="approve-comment">Comment</label>' in approver
    deployer = team.as_("deployer").get(f"/artifacts/{digest}").text
    assert 'class="approve"' not in deployer
    # production's gates deny: a disabled button, with the reasons
    assert re.search(r"<button type=\"button\" disabled[^>]*>Promote to production</button>",
                     deployer)  # fmt: skip
    assert "Denied: approvals: 0 of 2 approvals" in deployer


def test_a_form_without_the_csrf_token_is_refused(fresh: WebTeam) -> None:
    alice = fresh.as_("alice")
    before = fresh.ledger_size()
    path = f"/artifacts/{fresh.digest('v1')}/approve"
    bobs = fresh.csrf(fresh.as_("bob"))  # another session's token
    for form in ({"environment": "production"},
                 {"environment": "production", "csrf_token": "forged"},
                 {"environment": "production", "csrf_token": bobs}):  # fmt: skip
        answer = alice.post(path, data=form)
        assert answer.status_code == 403, form
        assert "CSRF" in answer.text
        assert answer.headers["content-security-policy"] == CSP
    assert fresh.ledger_size() == before


def test_a_readers_hand_made_post_is_refused(fresh: WebTeam) -> None:
    viewer = fresh.as_("viewer")
    csrf = fresh.csrf(viewer)
    digest = fresh.digest("v1")
    before = fresh.ledger_size()
    for path, form in (
        (f"/artifacts/{digest}/approve", {"environment": "production"}),
        (f"/artifacts/{digest}/promote", {"environment": "production"}),
        ("/environments/staging/rollback", {}),
    ):
        answer = viewer.post(path, data={**form, "csrf_token": csrf})
        assert answer.status_code == 403, path
        assert "viewer may not" in answer.text
    assert fresh.as_(None).post(f"/artifacts/{digest}/approve", data={}).status_code == 401
    assert fresh.ledger_size() == before


# --- 404 and 400 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"/artifacts/{UNKNOWN}",
        f"/artifacts/{UNKNOWN}/promote?environment=production",
        "/environments/nowhere",
        "/commits/" + "a" * 40,
        "/diff/staging/nowhere",
        "/diff/nowhere/production",
    ],
)
def test_an_unknown_thing_is_a_clean_404(team: WebTeam, path: str) -> None:
    answer = team.as_("viewer").get(path)
    assert answer.status_code == 404
    assert "<h1>Not found</h1>" in answer.text
    assert "Traceback" not in answer.text


def test_an_unknown_environment_in_a_confirmation_is_404(team: WebTeam) -> None:
    answer = team.as_("deployer").get(f"/artifacts/{team.digest('v1')}/promote?environment=qa")
    assert answer.status_code == 404
    assert "unknown environment &#39;qa&#39;" in answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/artifacts/sha256:zz",
        "/artifacts/not-a-digest",
        "/artifacts/sha256:" + "0" * 63,
        "/artifacts/md5:" + "0" * 32,
        "/artifacts/sha256:" + "0" * 64 + "%0A%3Cb%3E",
        "/artifacts/" + "a" * 5000,
        "/artifacts/sha256:zz/promote?environment=production",
        "/commits/xyz",
        "/commits/0123",
        "/commits/" + "a" * 65,
    ],
)
def test_a_bad_digest_or_commit_is_400_in_one_line(team: WebTeam, path: str) -> None:
    answer = team.as_("viewer").get(path)
    assert answer.status_code == 400, answer.text[-600:]
    message = re.search(r'<p class="error">(.*?)</p>', answer.text, re.S)
    assert message
    assert "\n" not in message.group(1)
    assert "<b>" not in answer.text
    assert "Traceback" not in answer.text


def test_a_hostile_form_is_a_one_line_400(fresh: WebTeam) -> None:
    alice = fresh.as_("alice")
    csrf = fresh.csrf(alice)
    path = f"/artifacts/{fresh.digest('v1')}/approve"
    too_long = alice.post(path, data={"csrf_token": csrf, "environment": "production",
                                      "comment": "x" * 5000})  # fmt: skip
    assert too_long.status_code == 400
    assert "comment: longer than 4096" in too_long.text
    missing = alice.post(path, data={"csrf_token": csrf})
    assert missing.status_code == 400
    assert "choose the environment" in missing.text
    unknown = alice.post(path, data={"csrf_token": csrf, "environment": "qa"})
    assert unknown.status_code == 404


# --- acting -------------------------------------------------------------------------------------


def test_approve_then_promote_in_the_browser(fresh: WebTeam) -> None:
    digest = fresh.digest("v1")
    for who in ("alice", "bob"):
        client = fresh.as_(who)
        answer = client.post(
            f"/artifacts/{digest}/approve",
            data={"environment": "production", "comment": f"ok from {who}",
                  "csrf_token": fresh.csrf(client)},
        )  # fmt: skip
        assert answer.status_code == 303, answer.text[-800:]
        assert answer.headers["location"] == f"/artifacts/{digest}"
    deployer = fresh.as_("deployer")
    page = deployer.get(f"/artifacts/{digest}").text
    assert "Approvals that count: alice, bob" in page
    assert "approved for production: ok from bob" in page
    assert (
        f'href="/artifacts/{digest}/promote?environment=production">Promote to production</a>'
        in page
    )
    confirm = deployer.get(f"/artifacts/{digest}/promote?environment=production").text
    assert f'<code class="full">{digest}</code>' in confirm
    assert "✓ passed" in confirm
    assert "✗ failed" not in confirm
    assert '<button type="submit">Confirm promotion to production</button>' in confirm
    done = deployer.post(
        f"/artifacts/{digest}/promote",
        data={"environment": "production", "csrf_token": fresh.csrf(deployer)},
    )
    assert done.status_code == 303, re.findall(r"✗[^<]*", done.text)
    board = deployer.get("/").text
    production = board[board.index('aria-labelledby="env-production"') :]
    assert digest[:19] in production
    timeline = deployer.get(f"/artifacts/{digest}").text
    kinds = re.findall(r'<li class="step (\w+)">', timeline)
    assert kinds == ["build", "tests", "scan", "promotion", "approval", "approval", "promotion"]
    assert timeline.count("✓ verified") >= len(kinds)
    assert "<dd>login alice@example.com (signed by server)</dd>" in timeline  # how she signed in


def test_the_artifact_page_says_which_approvals_do_not_count_and_why(fresh: WebTeam) -> None:
    digest = fresh.digest("v1")
    for who in ("alice", "bob"):
        client = fresh.as_(who)
        form = {"environment": "production", "csrf_token": fresh.csrf(client)}
        assert client.post(f"/artifacts/{digest}/approve", data=form).status_code == 303
    # alice would promote: her own approval does not count (distinct_from: promoter).
    page = fresh.as_("alice").get(f"/artifacts/{digest}").text
    target = page[page.index('aria-labelledby="target-production"') :]
    target = target[: target.index("</section>")]
    assert "Approvals that count: bob (1 of 2)" in target
    assert "Not counted: alice (the promoter)" in target
    deployer = fresh.as_("deployer").get(f"/artifacts/{digest}").text
    assert "Approvals that count: alice, bob (2 of 2)" in deployer
    assert "Not counted" not in deployer


def test_a_denied_promotion_re_renders_the_confirmation_with_409(fresh: WebTeam) -> None:
    deployer = fresh.as_("deployer")
    digest = fresh.digest("v1")
    before = fresh.ledger_size()
    answer = deployer.post(
        f"/artifacts/{digest}/promote",
        data={"environment": "production", "csrf_token": fresh.csrf(deployer)},
    )
    assert answer.status_code == 409
    assert '<p class="error" role="alert">✗ promotion of' in answer.text
    assert "approvals: 0 of 2" in answer.text
    assert "disabled" in answer.text
    assert "Confirm promotion to production" in answer.text
    assert fresh.ledger_size() == before


def test_roll_back_in_the_browser(fresh: WebTeam) -> None:
    second = fresh.image("v2", commit=COMMIT_2)
    fresh.record(second, commit=COMMIT_2)
    fresh.promote(second, "staging")
    deployer = fresh.as_("deployer")
    page = deployer.get("/environments/staging").text
    assert '<button type="submit">Roll back staging</button>' in page
    answer = deployer.post(
        "/environments/staging/rollback", data={"csrf_token": fresh.csrf(deployer)}
    )
    assert answer.status_code == 303, answer.text[-800:]
    assert answer.headers["location"] == "/environments/staging"
    history = deployer.get("/environments/staging").text
    rows = re.findall(r"<tr(?: class=\"current\")?>(.*?)</tr>", history, re.S)
    assert len(rows) == 4  # the header and three arrivals
    assert fresh.digest("v1")[:19] in rows[1]
    assert "↩ rollback" in rows[1]
    # a digest never in staging: refused with the page and its one line
    bad = deployer.post(
        "/environments/staging/rollback",
        data={"csrf_token": fresh.csrf(deployer), "to": UNKNOWN},
    )
    assert bad.status_code == 400
    assert "was never in staging" in bad.text


def test_verify_now_shows_the_result(fresh: WebTeam) -> None:
    viewer = fresh.as_("viewer")
    answer = viewer.post("/audit/verify", data={"csrf_token": fresh.csrf(viewer)})
    assert answer.status_code == 200
    assert "✓ verified: 4 entries" in answer.text
    assert viewer.post("/audit/verify", data={}).status_code == 403


def test_search_leads_to_the_page(team: WebTeam) -> None:
    client = team.as_("viewer")
    digest = team.digest("v1")
    cases = {
        digest: f"/artifacts/{digest}",
        COMMIT: f"/commits/{COMMIT}",
        COMMIT[:10]: f"/commits/{COMMIT[:10]}",
        "staging": "/environments/staging",
        f"oci:{team.root / 'build'}:v1": f"/artifacts/{digest}",
    }
    for query, where in cases.items():
        answer = client.get("/search", params={"q": query})
        assert answer.status_code == 303, (query, answer.text[-500:])
        assert answer.headers["location"] == where
    for query in (UNKNOWN, "b" * 40, "no such thing", "<script>x</script>"):
        answer = client.get("/search", params={"q": query})
        assert answer.status_code == 404, query
        assert "Nothing matched" in answer.text
        assert "<script>x" not in answer.text
    assert '<form role="search"' in client.get("/").text


def test_events_tell_the_ledger_size_and_its_growth(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "STREAM_SECONDS", 0.5)
    monkeypatch.setattr(events, "POLL_SECONDS", 0.1)
    viewer = fresh.as_("viewer")
    answer = viewer.get("/events")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert f"event: ledger\ndata: {fresh.ledger_size()}\n\n" in answer.text


def test_break_glass_is_not_offered_when_other_gates_fail_too(fresh: WebTeam) -> None:
    digest = fresh.digest("v1")  # no approvals yet: the approvals gate fails beside the freeze
    text = fresh.config.read_text()
    fresh.config.write_text(text.replace("environments:\n", (
        "freeze:\n  windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']\n"
        "  environments: [production]\n  break_glass: {approvals: 1}\n"
    ) + "environments:\n", 1))  # fmt: skip
    deployer = fresh.as_("deployer")
    confirm = deployer.get(f"/artifacts/{digest}/promote?environment=production").text
    assert "a freeze is on" in confirm
    assert "Break-glass reason" not in confirm  # refused whatever the reason
    assert 'disabled aria-describedby="why">Confirm promotion to production</button>' in confirm
    page = deployer.get(f"/artifacts/{digest}").text
    assert 'disabled aria-describedby="why-production">Promote to production</button>' in page


def test_break_glass_only_during_a_freeze_and_with_a_reason(fresh: WebTeam) -> None:
    digest = fresh.digest("v1")
    fresh.approve(fresh.images["v1"], "production", "alice")  # alice with her own key
    bob = fresh.as_("bob")
    form = {"environment": "production", "csrf_token": fresh.csrf(bob)}
    assert bob.post(f"/artifacts/{digest}/approve", data=form).status_code == 303
    deployer = fresh.as_("deployer")
    confirm = deployer.get(f"/artifacts/{digest}/promote?environment=production").text
    assert "Break-glass reason" not in confirm  # no freeze: no break-glass
    text = fresh.config.read_text()
    fresh.config.write_text(text.replace("environments:\n", (
        "freeze:\n  windows: ['2020-01-01T00:00:00Z/2999-01-01T00:00:00Z']\n"
        "  environments: [production]\n  break_glass: {approvals: 1}\n"
    ) + "environments:\n", 1))  # fmt: skip
    confirm = deployer.get(f"/artifacts/{digest}/promote?environment=production").text
    assert "a freeze is on" in confirm
    assert '<label for="break-glass">Break-glass reason</label>' in confirm
    assert 'name="break_glass_reason" rows="2" maxlength="4096" required' in confirm
    path = f"/artifacts/{digest}/promote"
    csrf = fresh.csrf(deployer)
    refused = deployer.post(path, data={"environment": "production", "csrf_token": csrf})
    assert refused.status_code == 409
    assert "freeze" in refused.text
    short = deployer.post(path, data={"environment": "production", "csrf_token": csrf,
                                      "break_glass_reason": "incident 7"})  # fmt: skip
    assert short.status_code == 409  # break-glass needs one approval more than the gate
    assert "2 of 3 approvals: alice, bob" in short.text
    carol = fresh.as_("carol")
    form = {"environment": "production", "csrf_token": fresh.csrf(carol)}
    assert carol.post(f"/artifacts/{digest}/approve", data=form).status_code == 303
    done = deployer.post(path, data={"environment": "production", "csrf_token": csrf,
                                     "break_glass_reason": "incident 7"})  # fmt: skip
    assert done.status_code == 303, re.findall(r"✗[^<]*", done.text)
    history = deployer.get("/environments/production").text
    assert "⚠ break-glass: incident 7" in history


def test_events_follow_the_ledger_as_it_grows(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setattr(events, "STREAM_SECONDS", 2.0)
    monkeypatch.setattr(events, "POLL_SECONDS", 0.1)
    before = fresh.ledger_size()
    timer = threading.Timer(0.5, fresh.approve, (fresh.images["v1"], "production"))
    timer.start()
    answer = fresh.as_("viewer").get("/events")
    timer.join()
    sizes = re.findall(r"event: ledger\ndata: (\d+)\n\n", answer.text)
    assert sizes == [str(before), str(before + 1)]


def test_a_ci_run_url_that_is_not_http_is_no_link(fresh: WebTeam) -> None:
    from conveyor import service

    ref = fresh.image("v3", commit=COMMIT_2)
    service.record_build(ref, commit=COMMIT_2, run_id="42", run_url="javascript:alert(1)",
                         key=fresh.key("ci"), config_path=fresh.config)  # fmt: skip
    html = fresh.as_("viewer").get(f"/artifacts/{fresh.digest('v3')}").text
    assert "<dt>CI run</dt><dd>42</dd>" in html
    assert 'href="javascript:' not in html


def test_the_board_shows_the_last_drift_snapshot(fresh: WebTeam) -> None:
    from conveyor.server.drift import DriftStore

    url = fresh.state.config().configured_ledger_url  # type: ignore[attr-defined]
    store = DriftStore.open(url)
    store.put("staging", "ops", {"summary": {"current": 2, "never": 1}, "containers": []})
    store.close()
    html = fresh.as_("viewer").get("/").text
    staging = html[html.index('aria-labelledby="env-staging"') :]
    staging = staging[: staging.index("</section>")]
    assert "✗ 1 of 3 not as recorded" in staging
    assert "current 2, never 1" in staging
    assert "by ops" in staging


def test_the_board_marks_drift_as_the_cli_fails_it(fresh: WebTeam) -> None:
    """Only a digest never promoted there is drift (``conveyor drift`` exits 1 on it alone); a
    previous digest (mid-rollout, rolled back) and one without a digest are shown, not failed."""
    from conveyor.server.drift import DriftStore

    store = DriftStore.open(fresh.state.config().configured_ledger_url)  # type: ignore[attr-defined]
    store.put("staging", "ops", {"summary": {"current": 2, "previous": 1, "unknown": 1},
                                 "containers": []})  # fmt: skip
    store.close()
    html = fresh.as_("viewer").get("/").text
    staging = html[html.index('aria-labelledby="env-staging"') :]
    staging = staging[: staging.index("</section>")]
    assert "✓ 2 running as recorded" in staging
    assert "not as recorded" not in staging
    assert "current 2, previous 1, unknown 1" in staging


def test_the_api_and_the_pages_share_one_drift_store(
    fresh: WebTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.server.drift import DriftStore

    opened: list[DriftStore] = []
    real = DriftStore.open

    def counted(url: str) -> DriftStore:
        opened.append(real(url))
        return opened[-1]

    monkeypatch.setattr(DriftStore, "open", counted)
    created = fresh.state.tokens().create("viewer-drift", identity="viewer", created_by="test")  # type: ignore[attr-defined]
    assert fresh.as_("viewer").get("/").status_code == 200  # the board reads drift
    bearer = {"Authorization": f"Bearer {created.token}"}
    answer = fresh.as_(None).get("/api/v1/environments/staging/drift", headers=bearer)
    assert answer.status_code == 404  # no snapshot yet, read through the API's store
    assert fresh.as_("viewer").get("/environments/staging").status_code == 200
    assert len(opened) == 1  # one engine on the database, not one per face


def test_the_diff_lists_the_commits_between_two_environments(fresh: WebTeam) -> None:
    first = fresh.images["v1"]
    fresh.approve(first, "production", "alice")
    bob = fresh.as_("bob")
    form = {"environment": "production", "csrf_token": fresh.csrf(bob)}
    assert bob.post(f"/artifacts/{fresh.digest('v1')}/approve", data=form).status_code == 303
    staging_target = first.replace(first.split("@")[0], f"oci:{fresh.root / 'staging'}")
    fresh.promote(staging_target, "production")
    second = fresh.image("v2", commit=COMMIT_2)
    fresh.record(second, commit=COMMIT_2, findings=(("CVE-2024-0009", "LOW"),))
    fresh.promote(second, "staging")
    html = fresh.as_("viewer").get("/diff/staging/production").text
    assert COMMIT_2[:12] in html  # arrived in staging since production's digest
    assert "CVE-2024-0009 (low)" in html  # added
    assert "CVE-2024-0001 (low), CVE-2024-0002 (medium)" in html  # removed
    same = fresh.as_("viewer").get("/diff/staging/staging").text
    assert "✓ Both run the same digest." in same
