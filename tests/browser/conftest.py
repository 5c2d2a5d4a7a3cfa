"""Fixtures for the web page in a real browser (issue 14).

``site`` (one per xdist worker, shared by the package): two real distribution registries
(build and staging on one, production on the other), a real OpenID provider
(``oidc-provider-mock``) people sign in at, and a real ``conveyor serve`` on a loopback port.
``browser`` (one per worker): the Debian Chromium driven by Playwright's sync API;
``playwright install`` cannot download here, so the executable is given. Every context
resolves only loopback names, records console errors, page errors and CSP violations, and
tests assert there are none on conveyor's own pages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.support.images import build_image
from tests.support.registry import RunningRegistry, skopeo
from tests.support.server import (
    COMMIT,
    PASSING_JUNIT,
    RunningServer,
    Team,
    free_port,
    make_team,
    trivy_report,
)

CHROMIUM = Path("/usr/bin/chromium")
# Read at import: the autouse fixture clears CONVEYOR_* from each test's environment.
ARTIFACTS = Path(
    os.environ.get("CONVEYOR_TEST_ARTIFACTS") or REPO_ROOT / "build" / "test-artifacts"
)
LOGIN_SECRET = "login-secret-for-browser-tests"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Nothing leaves the machine: a page that loads anything from a CDN fails visibly.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]

# People sign in at the provider by its ``sub``; conveyor maps the verified email to them.
PEOPLE = {
    "alice": "alice@example.com",
    "bob": "bob@example.com",
    "dana": "dana@example.com",  # the deployer
    "rita": "rita@example.com",  # a reader
}

CONFIG = """\
version: 1
identities:
  ci:       {{key: keys/ci.pub, roles: [builder, tester, scanner]}}
  release:  {{roles: [deployer]}}
  deployer: {{login: {{email: dana@example.com}}, roles: [deployer]}}
  alice:    {{login: {{email: alice@example.com}}, roles: [approver]}}
  bob:      {{login: {{email: bob@example.com}}, roles: [approver]}}
  viewer:   {{login: {{email: rita@example.com}}, roles: [reader]}}
  root:     {{roles: [admin]}}
  server:   {{key: keys/server.pub, roles: [server]}}
ledger:
  key: keys/ledger.key
  public_key: keys/ledger.pub
server:
  url: {url}
  signing_key: keys/server.key
  login:
    issuer: {login}
    client_id: conveyor
    client_secret_env: CONVEYOR_LOGIN_SECRET
  registries: ["{build}"]
environments:
  staging:
    repository: {staging}
    tags: [staging]
    requires:
      provenance: {{}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
  production:
    repository: {production}
    tags: [production]
    requires:
      after: {{environment: staging, smoke: true}}
      approvals: {{count: 2, role: approver, distinct_from: [builder, promoter]}}
      tests: {{min_passed: 1, max_failed: 0}}
      scan: {{max: {{critical: 0, high: 0}}, max_age: 24h}}
"""


@dataclass
class BrowserTeam(Team):
    """The team with what its server needs in the environment: the login client's secret and
    the loopback registries it may reach over plain HTTP."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


@dataclass
class Site:
    """A running conveyor server, its registries and its login provider."""

    team: BrowserTeam
    server: RunningServer
    build: RunningRegistry  # where CI pushes, and the staging repository
    production: RunningRegistry
    login: str  # the provider's URL
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def staging_repository(self) -> str:
        return f"{self.build.host}/app-staging"

    @property
    def production_repository(self) -> str:
        return f"{self.production.host}/app"

    def token(self, identity: str) -> str:
        """An API token for ``identity``, made once through the admin's API."""
        if identity not in self.tokens:
            made = self.api(
                "POST",
                "/api/v1/tokens",
                identity="root",
                json={"name": identity, "identity": identity},
            )
            self.tokens[identity] = str(made["token"])
        return self.tokens[identity]

    def api(self, method: str, path: str, *, identity: str = "ci", **kw: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token(identity)}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=120) as client:
            answer = client.request(method, path, **kw)
        assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text}"
        body = answer.json()
        assert isinstance(body, dict)
        return body

    def push_image(self, tag: str, labels: dict[str, str] | None = None) -> str:
        """Build an image (its own labels make its own digest), push it with skopeo, and
        return its digest reference in the build repository."""
        wanted = {"git.commit": COMMIT, "ci.run": "42", **(labels or {})}
        image = build_image(self.team.root / "images" / tag, tag=tag, labels=wanted)
        target = f"{self.build.host}/app-build:{tag}"
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            f"oci:{image.layout}:{tag}",
            f"docker://{target}",
        )
        return f"{self.build.host}/app-build@{image.digest}"

    def record_build(self, ref: str) -> None:
        self.api(
            "POST", "/api/v1/builds", json={"reference": ref, "commit": COMMIT, "run_id": "42"}
        )

    def ready_for_staging(self, tag: str, labels: dict[str, str] | None = None) -> str:
        ref = self.push_image(tag, labels)
        self.record_build(ref)
        files = [("files", ("junit.xml", PASSING_JUNIT.encode(), "application/xml"))]
        self.api("POST", "/api/v1/tests", data={"reference": ref}, files=files)
        report = json.dumps(trivy_report()).encode()
        scan = [("file", ("trivy.json", report, "application/json"))]
        self.api("POST", "/api/v1/scans", data={"reference": ref}, files=scan)
        return ref

    def in_staging(self, tag: str, labels: dict[str, str] | None = None) -> str:
        """An artifact promoted to staging and smoke-tested there: what production waits for
        is two approvals. Returns its digest."""
        ref = self.ready_for_staging(tag, labels)
        body = {"reference": ref, "environment": "staging"}
        staged = self.api("POST", "/api/v1/promotions", identity="release", json=body)
        smoke = {
            "reference": f"{self.staging_repository}@{staged['digest']}",
            "environment": "staging",
            "passed": True,
        }
        self.api("POST", "/api/v1/smoke", json=smoke)
        return str(staged["digest"])

    def in_production(self, tag: str) -> str:
        """An artifact that went the whole way through the API; returns its digest."""
        digest = self.in_staging(tag)
        staged = f"{self.staging_repository}@{digest}"
        for approver in ("alice", "bob"):
            body = {"reference": staged, "environment": "production"}
            self.api("POST", "/api/v1/approvals", identity=approver, json=body)
        body = {"reference": staged, "environment": "production"}
        self.api("POST", "/api/v1/promotions", identity="deployer", json=body)
        return digest

    def events(self, digest: str) -> list[dict[str, Any]]:
        """The verified reader's account of a digest (``conveyor trace`` through the API)."""
        trace = self.api(
            "GET", "/api/v1/trace", params={"query": f"{self.build.host}/app-build@{digest}"}
        )
        return list(trace["events"])


def _start(team: BrowserTeam, port: int) -> RunningServer:
    log = team.root / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=team.root,
            env=team.env(),
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log, team)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"conveyor serve did not start: {log.read_text(errors='replace')[-2000:]}")


# One server for the whole browser package (per xdist worker): each test makes its own
# digests and judges only those, so they share it safely, and startup is paid once.
@pytest.fixture(scope="package")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RunningRegistry,
    registry_b: RunningRegistry,
) -> Iterator[Site]:
    provider_module = pytest.importorskip(
        "oidc_provider_mock", reason="oidc-provider-mock is not installed (make venv)"
    )
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (make test installs it)")
    root = tmp_path_factory.mktemp("browser-team")
    with provider_module.run_server_in_thread(port=0) as provider:
        login = f"http://localhost:{provider.server_port}"
        for sub, email in PEOPLE.items():
            put = httpx.put(f"{login}/users/{sub}", json={"email": email, "email_verified": True})
            assert put.status_code == 204, put.text
        base = make_team(root)
        team = BrowserTeam(base.root, base.config)
        team.extra_env = {
            "CONVEYOR_LOGIN_SECRET": LOGIN_SECRET,
            "CONVEYOR_INSECURE_REGISTRIES": f"{registry.host},{registry_b.host}",
        }
        port = free_port()
        team.config.write_text(
            CONFIG.format(
                url=f"http://127.0.0.1:{port}",
                login=login,
                staging=f"{registry.host}/app-staging",
                production=f"{registry_b.host}/app",
                build=f"{registry.host}/app-build",
            )
        )
        tokens = {"root": team.token("root-token", "root")}
        server = _start(team, port)
        try:
            yield Site(team, server, registry, registry_b, login, tokens)
        finally:
            server.stop()


# --- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make test installs the Debian chromium package)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (make venv)"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# Collected in every page before its own scripts run; a violation of the page's CSP lands here.
_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclass
class Problems:
    """What went wrong in the browser, on conveyor's own pages (the provider's page loads a
    stylesheet from a CDN, which fails here by design and is none of our business)."""

    server_url: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def ours(self, url: str) -> bool:
        return url.startswith(self.server_url)

    def assert_none(self, *pages: Any) -> None:
        violations: list[str] = []
        for page in pages:
            if self.ours(page.url):
                violations += page.evaluate("window.__cspViolations || []")
        assert not self.console, self.console
        assert not self.errors, self.errors
        assert not violations, violations
        assert not self.dialogs, self.dialogs


@dataclass
class Person:
    """One person's own browser context, signed in (or not) through the provider."""

    context: Any
    page: Any
    problems: Problems
    site: Site

    def sign_in(self, sub: str, *, next_path: str = "/login/session") -> dict[str, Any]:
        """The real flow in Chromium: /login → the provider's form → its redirect to
        /login/callback → ``next_path``. Returns the session (identity, CSRF token)."""
        page = self.page
        page.goto(f"{self.site.url}/login?next={next_path}")
        assert page.url.startswith(self.site.login), page.url  # on the provider's page
        page.locator("input[name=sub]").fill(sub)
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(f"{self.site.url}{next_path}")
        answer = self.context.request.get(f"{self.site.url}/login/session")
        assert answer.status == 200, answer.text()
        session = answer.json()
        assert isinstance(session, dict)
        return session

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.site.url + path)
        assert response is not None
        return response


@pytest.fixture
def people(browser: Any, site: Site) -> Iterator[Any]:
    """A factory of fresh browser contexts (``people()`` → a signed-out Person); each one's
    console errors, page errors, CSP violations and dialogs are collected."""
    made: list[Person] = []

    def new(*, width: int = 1280, height: int = 900, javascript: bool = True) -> Person:
        context = browser.new_context(
            viewport={"width": width, "height": height}, java_script_enabled=javascript
        )
        context.add_init_script(_WATCH_CSP)
        problems = Problems(site.url)
        page = context.new_page()

        def on_console(message: Any) -> None:
            # The browser's own favicon probe is not the page's doing.
            source = str(message.location.get("url", ""))
            if source.endswith("/favicon.ico"):
                return
            # A 404 page (a search that matched nothing) makes Chromium log its own status.
            if source == page.url and message.text.startswith("Failed to load resource"):
                return
            if message.type == "error" and problems.ours(page.url):
                problems.console.append(f"{page.url}: {message.text} ({source})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.errors.append(f"{page.url}: {error}"))

        def on_dialog(dialog: Any) -> None:
            problems.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        person = Person(context, page, problems, site)
        made.append(person)
        return person

    yield new
    for person in made:
        person.context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots go: ``$CONVEYOR_TEST_ARTIFACTS`` or build/test-artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def environment(page: Any, name: str) -> Any:
    """The board's column for one environment, by the contract's accessible structure."""
    return page.locator(f'section.environment[aria-labelledby="env-{name}"]')
