"""The token the CLI sends to ``conveyor serve``, found by itself (issue 13).

In order: ``CONVEYOR_TOKEN`` (an API token, or a session token); in GitHub Actions an OIDC
ID token requested from ``ACTIONS_ID_TOKEN_REQUEST_URL`` with
``ACTIONS_ID_TOKEN_REQUEST_TOKEN`` and the server's audience (``CONVEYOR_OIDC_AUDIENCE``, else
the server says it at ``/api/v1/authentication``); in GitLab CI ``CONVEYOR_ID_TOKEN`` (declared
with ``id_tokens:``); else the session ``conveyor login`` stored for that server.

No token ever appears in a message: errors name the variable, never its value. Imports only
httpx and ``conveyor.errors`` (the client's own rule).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from conveyor.errors import ExternalError, InputError

TOKEN_ENV = "CONVEYOR_TOKEN"  # noqa: S105 - a variable name
GITLAB_ENV = "CONVEYOR_ID_TOKEN"
AUDIENCE_ENV = "CONVEYOR_OIDC_AUDIENCE"
GITHUB_URL_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN_ENV = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105 - a variable name
MAX_ANSWER_BYTES = 64 * 1024
SESSIONS_FILE = "sessions.json"


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's conveyor config directory (``$XDG_CONFIG_HOME/conveyor``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "conveyor"


def _is_loopback(host: str | None) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def _get_json(url: str, *, what: str, headers: Mapping[str, str] | None = None) -> Any:
    import httpx

    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise InputError(f"{what}: not an https URL; refusing to send credentials in clear")
    try:
        response = httpx.get(url, headers=dict(headers or {}), timeout=30, follow_redirects=False)
    except httpx.HTTPError as error:
        raise ExternalError(f"{what} failed: {type(error).__name__}") from error
    if response.status_code != 200 or len(response.content) > MAX_ANSWER_BYTES:
        raise ExternalError(f"{what} answered {response.status_code}")
    try:
        return response.json()
    except ValueError as error:
        raise ExternalError(f"{what} did not answer JSON") from error


def server_audience(server: str) -> str:
    """The ``aud`` the server wants in CI tokens (asked without credentials)."""
    answer = _get_json(server.rstrip("/") + "/api/v1/authentication", what="the server")
    audience = answer.get("oidc_audience") if isinstance(answer, dict) else None
    if not isinstance(audience, str) or not audience:
        raise InputError(
            f"the server {server} accepts no OIDC tokens (no server.oidc); set {TOKEN_ENV}"
        )
    return audience


def github_token(env: Mapping[str, str], audience: str) -> str:
    """An ID token from GitHub Actions' token service (``permissions: id-token: write``)."""
    url = env[GITHUB_URL_ENV]
    target = f"{url}{'&' if '?' in url else '?'}audience={quote(audience, safe='')}"
    answer = _get_json(
        target,
        what=f"GitHub's OIDC token request ({GITHUB_URL_ENV})",
        headers={"Authorization": f"bearer {env.get(GITHUB_TOKEN_ENV, '')}"},
    )
    value = answer.get("value") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise ExternalError(f"GitHub's OIDC token request ({GITHUB_URL_ENV}) gave no token")
    return value


def discover(server: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token to send to ``server``, or ``None`` (then the server answers 401)."""
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    if env.get(GITHUB_URL_ENV) and env.get(GITHUB_TOKEN_ENV):
        return github_token(env, env.get(AUDIENCE_ENV) or server_audience(server))
    if env.get(GITLAB_ENV):
        return env[GITLAB_ENV]
    return stored_session(server, env)


# --- sessions stored by ``conveyor login`` ------------------------------------------------------


def _sessions_path(environ: Mapping[str, str] | None) -> Path:
    return config_dir(environ) / SESSIONS_FILE


def _read_sessions(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stored_session(server: str, environ: Mapping[str, str] | None = None) -> str | None:
    entry = _read_sessions(_sessions_path(environ)).get(server.rstrip("/"))
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def store_session(
    server: str, token: str, identity: str, environ: Mapping[str, str] | None = None
) -> Path:
    """Keep ``token`` for ``server`` in the user's config dir, readable by the user only."""
    path = _sessions_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sessions = _read_sessions(path)
    sessions[server.rstrip("/")] = {"token": token, "identity": identity}
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".sessions-")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(sessions, out, indent=2)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path
