"""``conveyor login``'s flow: the browser login with a loopback redirect, from a terminal.

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
    handler = type("Catcher", (_Catcher,), {"code": None, "got": threading.Event()})
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
        detail = ""
        with contextlib.suppress(ValueError):
            detail = str(answer.json().get("detail", ""))
        raise InputError(f"login refused ({answer.status_code}): {detail[:300]}")
    body = answer.json()
    return LoginResult(str(body["token"]), str(body["identity"]), int(body["expires_in"]))
