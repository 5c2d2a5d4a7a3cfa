"""``conveyor login``'s flows, from a terminal: the provider's device flow, else the browser.

**Device flow** (RFC 8628, when the provider offers it; the server says so at
``/api/v1/authentication``): the server starts it (``POST /login/device``, it holds the client
secret), the person opens the verification URL anywhere and enters the code, the CLI polls
``POST /login/device/token`` until the server hands it the session token.

**Browser flow** with a loopback redirect:
The CLI listens on ``127.0.0.1`` (an ephemeral port), opens (or prints) the server's
``/login?cli_port=…&cli_challenge=…``; after the person signs in with the team's provider
the server redirects the browser to ``http://127.0.0.1:PORT/callback?code=…``. The code is
worth nothing without the verifier behind the challenge, which never leaves this process:
``POST /login/token`` with both gives the session token. Imports httpx and errors only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from conveyor.errors import ExternalError, InputError

_DONE_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>conveyor</title>"
    b"<p>Signed in. You can close this tab and return to the terminal.</p>"
)


@dataclass(frozen=True)
class LoginResult:
    token: str
    identity: str
    expires_in: int


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _Catcher(http.server.BaseHTTPRequestHandler):
    code: str | None = None
    got = threading.Event()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        codes = parse_qs(parts.query).get("code", [])
        if parts.path != "/callback" or len(codes) != 1:
            self.send_error(404)
            return
        type(self).code = codes[0]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_DONE_PAGE)))
        self.end_headers()
        self.wfile.write(_DONE_PAGE)
        type(self).got.set()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return  # the request line holds the code: never logged


def browser_login(
    server: str, *, show: Any, timeout: float = 300.0, open_browser: bool = True
) -> LoginResult:
    """Sign in through the browser; ``show(url)`` tells the person where to go."""
    import httpx

    verifier = secrets.token_urlsafe(48)
    handler: type[_Catcher] = type("Catcher", (_Catcher,), {"code": None, "got": threading.Event()})
    listener = http.server.HTTPServer(("127.0.0.1", 0), handler)
    port = listener.server_address[1]
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        query = urlencode({"cli_port": port, "cli_challenge": _challenge(verifier)})
        url = f"{server.rstrip('/')}/login?{query}"
        show(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        if not handler.got.wait(timeout):
            raise InputError(f"no sign-in within {int(timeout)} s; run conveyor login again")
    finally:
        listener.shutdown()
        listener.server_close()
    try:
        answer = httpx.post(
            f"{server.rstrip('/')}/login/token",
            json={"code": handler.code, "verifier": verifier},
            timeout=30,
            follow_redirects=False,
        )
    except httpx.HTTPError as error:
        raise ExternalError(f"cannot reach {server}: {type(error).__name__}") from error
    if answer.status_code != 200:
        raise InputError(f"login refused ({answer.status_code}): {_refusal(answer)}")
    body = answer.json()
    return LoginResult(str(body["token"]), str(body["identity"]), int(body["expires_in"]))


def _post(server: str, path: str, body: dict[str, Any]) -> Any:
    import httpx

    try:
        return httpx.post(f"{server.rstrip('/')}{path}", json=body, timeout=30)
    except httpx.HTTPError as error:
        raise ExternalError(f"cannot reach {server}: {type(error).__name__}") from error


def _refusal(answer: Any) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(answer.json().get("detail", ""))[:300]
    return ""


def offers_device_flow(server: str) -> bool:
    import httpx

    try:
        answer = httpx.get(f"{server.rstrip('/')}/api/v1/authentication", timeout=30)
        return answer.status_code == 200 and answer.json().get("device") is True
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def device_login(
    server: str,
    *,
    show: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = 900.0,
) -> LoginResult:
    """Sign in with the provider's device flow; ``show`` tells the person where to go."""
    started = _post(server, "/login/device", {})
    if started.status_code != 200:
        raise InputError(
            f"the device login did not start ({started.status_code}): {_refusal(started)}"
        )
    device = started.json()
    where = device.get("verification_uri_complete") or device["verification_uri"]
    show(f"Open {where} and enter the code {device['user_code']}")
    interval = float(device.get("interval") or 5)
    deadline = time.monotonic() + min(timeout, float(device.get("expires_in") or timeout))
    while time.monotonic() < deadline:
        sleep(interval)
        answer = _post(server, "/login/device/token", {"handle": device["handle"]})
        if answer.status_code == 202:
            if answer.json().get("slow_down"):
                interval += 5  # RFC 8628 3.5
            continue
        if answer.status_code != 200:
            raise InputError(f"login refused ({answer.status_code}): {_refusal(answer)}")
        body = answer.json()
        return LoginResult(str(body["token"]), str(body["identity"]), int(body["expires_in"]))
    raise InputError(
        "the device code expired before the sign-in finished; run conveyor login again"
    )
