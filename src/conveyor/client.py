"""The client of ``conveyor serve``: the CLI's remote mode (``CONVEYOR_SERVER``/``CONVEYOR_TOKEN``).

Every method is one HTTP call and returns the server's JSON, which is the CLI's ``--json``
document for the same operation. A problem+json answer becomes the same ``ConveyorError``
class the operation raises in-process, so the CLI prints the same line and exits with the
same code (401 → 2 "bad or missing credentials", 403 → 1 "not allowed", 409 → 1 with the
gate lines in ``.gates``). Imports only httpx and ``conveyor.errors``: no SQLAlchemy, no
policy models, no cryptography.

Plain ``http://`` is refused except for loopback hosts or with ``insecure=True``; TLS is
verified otherwise. The token travels only in the ``Authorization`` header.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from conveyor import errors
from conveyor.errors import ConveyorError, ExternalError, InputError, PolicyDenied

SERVER_ENV = "CONVEYOR_SERVER"
TOKEN_ENV = "CONVEYOR_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_TIMEOUT = 120.0  # a promotion copies an image: minutes are possible, hours are not
MAX_PROBLEM_BYTES = 256 * 1024


class NotAuthenticated(InputError):
    """401 from the server: no token, or a bad, expired or revoked one (exit 2)."""


class NotAllowed(PolicyDenied):
    """403 from the server: the token's identity lacks the role (exit 1)."""


class Denied(PolicyDenied):
    """409 from a gate: ``gates`` holds every gate's decision, as ``check --json`` does;
    ``decision`` the whole decision (``Decision.to_dict()``) when the server sent it."""

    def __init__(
        self,
        message: str,
        gates: Sequence[Mapping[str, Any]] = (),
        decision: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.gates = [dict(g) for g in gates]
        self.decision = dict(decision) if decision is not None else {"gates": self.gates}


class ServerError(ExternalError):
    """The server failed or answered something that is not conveyor's (exit 3)."""


# Class names the server sends (``error``) that the client can rebuild without importing
# the modules they live in; anything else falls back on its exit code.
_CLASSES: dict[str, type[ConveyorError]] = {
    name: getattr(errors, name)
    for name in (
        "InputError",
        "InvalidReferenceError",
        "DigestError",
        "ConfigError",
        "ExternalError",
        "RegistryError",
        "AuthenticationError",
        "NotFoundError",
        "ManifestError",
        "StorageError",
        "LedgerError",
        "VerificationError",
        "PolicyDenied",
    )
}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_server_url(url: str, *, insecure: bool = False) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{SERVER_ENV}: {url!r} is not an http(s) URL of a conveyor server")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InputError(
            f"{SERVER_ENV}: give the server URL without credentials, query or fragment; "
            f"the token goes in {TOKEN_ENV}"
        )
    if parts.scheme == "http" and not insecure and not _is_loopback(parts.hostname):
        raise InputError(
            f"{SERVER_ENV}: plain http:// to {parts.hostname} would send the token in clear; "
            "use https:// (or --insecure-server for a test server)"
        )
    return url.rstrip("/")


def error_from_problem(status: int, body: Any) -> ConveyorError:
    """The ``ConveyorError`` a problem+json answer stands for."""
    detail = body.get("detail") if isinstance(body, dict) else None
    message = detail if isinstance(detail, str) and detail else f"the server answered {status}"
    name = body.get("error") if isinstance(body, dict) else None
    if status == 401:
        return NotAuthenticated(message)
    if status == 403:
        return NotAllowed(message)
    if status == 409 and isinstance(body, dict) and isinstance(body.get("gates"), list):
        decision = body.get("decision")
        return Denied(
            message,
            [g for g in body["gates"] if isinstance(g, dict)],
            decision if isinstance(decision, dict) else None,
        )
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is errors.ConfigError:
        problems = body.get("problems") if isinstance(body, dict) else None
        listed = [p for p in problems if isinstance(p, str)] if isinstance(problems, list) else []
        return errors.ConfigError(message, listed)
    if cls is not None:
        return cls(message)
    if 400 <= status < 500:
        return InputError(message) if status != 409 else PolicyDenied(message)
    return ServerError(message)


class ConveyorClient:
    """One server, one token; a context manager (closes its connections)."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        transport: Any = None,
        verify: Any = True,
    ) -> None:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        import httpx

        self.server = check_server_url(server, insecure=insecure)
        headers = {"User-Agent": "conveyor-cli", "Accept": "application/json"}
        if token:
            if any(c in token for c in "\r\n ") or len(token) > 4096:
                raise InputError(f"{TOKEN_ENV} is not a token (whitespace or too long)")
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # a redirect would carry the token elsewhere
            # Plain http (loopback or --insecure-server) has no TLS to verify: not loading
            # the CA bundle saves ~35 ms a command.
            verify=verify if self.server.startswith("https://") else False,
        )

    @classmethod
    def from_environment(
        cls,
        *,
        server: str | None = None,
        environ: Mapping[str, str] | None = None,
        insecure: bool = False,
    ) -> ConveyorClient:
        env = os.environ if environ is None else environ
        url = server or env.get(SERVER_ENV)
        if not url:
            raise InputError(f"no server: pass --server URL or set {SERVER_ENV}")
        from conveyor.ci_token import discover  # CONVEYOR_TOKEN, a CI OIDC token, a login

        url = check_server_url(url, insecure=insecure)
        return cls(url, discover(url, env), insecure=insecure)

    def __enter__(self) -> ConveyorClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the one request path ------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, "/api/v1" + path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServerError(f"conveyor server {self.server} timed out") from exc
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot reach the conveyor server {self.server}: {type(exc).__name__}"
            ) from exc
        kind = response.headers.get("content-type", "")
        if response.status_code >= 400:
            body: Any = None
            if "json" in kind and len(response.content) <= MAX_PROBLEM_BYTES:
                try:
                    body = response.json()
                except ValueError:
                    body = None
            raise error_from_problem(response.status_code, body)
        if "application/json" not in kind:
            raise ServerError(f"{self.server} did not answer JSON; is it a conveyor server?")
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{self.server} answered malformed JSON") from exc

    # --- operations (same inputs as the CLI; results are its --json documents) ----------

    def whoami(self) -> dict[str, Any]:
        return dict(self.request("GET", "/whoami"))

    def resolve(self, ref: str) -> dict[str, Any]:
        return dict(self.request("GET", "/resolve", params={"ref": ref}))

    def inspect(self, ref: str) -> dict[str, Any]:
        return dict(self.request("GET", "/inspect", params={"ref": ref}))

    def record_build(
        self,
        ref: str,
        *,
        commit: str,
        run_id: str | None = None,
        run_url: str | None = None,
        builder_id: str | None = None,
    ) -> dict[str, Any]:
        body = {"reference": ref, "commit": commit, "run_id": run_id, "run_url": run_url}
        if builder_id is not None:
            body["builder_id"] = builder_id
        return dict(self.request("POST", "/builds", json=body))

    def attest_tests(
        self, ref: str, files: Sequence[str | Path], *, url: str | None = None
    ) -> dict[str, Any]:
        uploads = [("files", (Path(f).name, _read(f), "application/xml")) for f in files]
        data = {"reference": ref, **({"url": url} if url else {})}
        return dict(self.request("POST", "/tests", data=data, files=uploads))

    def attest_scan(self, ref: str, file: str | Path) -> dict[str, Any]:
        upload = [("file", (Path(file).name, _read(file), "application/json"))]
        return dict(self.request("POST", "/scans", data={"reference": ref}, files=upload))

    def attest_smoke(
        self, ref: str, *, environment: str, passed: bool, url: str | None = None
    ) -> dict[str, Any]:
        body = {"reference": ref, "environment": environment, "passed": passed, "url": url}
        return dict(self.request("POST", "/smoke", json=body))

    def approve(self, ref: str, *, environment: str, comment: str | None = None) -> dict[str, Any]:
        body = {"reference": ref, "environment": environment, "comment": comment}
        return dict(self.request("POST", "/approvals", json=body))

    def record_envelope(self, ref: str, envelope: bytes) -> dict[str, Any]:
        """A DSSE envelope signed with the token's identity's own key, recorded as it is."""
        import base64

        body = {"reference": ref, "envelope": base64.b64encode(envelope).decode("ascii")}
        return dict(self.request("POST", "/envelopes", json=body))

    def check(
        self, ref: str, *, environment: str, break_glass: str | None = None
    ) -> dict[str, Any]:
        body = {"reference": ref, "environment": environment, "break_glass": break_glass}
        return dict(self.request("POST", "/check", json=body))

    def promote(
        self, ref: str, *, environment: str, break_glass: str | None = None
    ) -> dict[str, Any]:
        body = {"reference": ref, "environment": environment, "break_glass": break_glass}
        return dict(self.request("POST", "/promotions", json=body))

    def rollback(self, environment: str, *, to: str | None = None) -> dict[str, Any]:
        return dict(self.request("POST", "/rollbacks", json={"environment": environment, "to": to}))

    def status(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/status")["environments"])

    def history(self, environment: str) -> list[dict[str, Any]]:
        return list(
            self.request("GET", f"/environments/{_segment(environment)}/history")["history"]
        )

    def promoted_digests(self, environment: str) -> set[str]:
        answer = self.request("GET", f"/environments/{_segment(environment)}/promoted-digests")
        return {str(d) for d in answer["digests"]}

    def promoted_repositories(self, environment: str) -> dict[str, Any]:
        """``{environment, repositories: {name: digest}, ignored}``: what ``pin --env`` pins to
        (``service.Promoted.to_dict()``)."""
        answer = self.request("GET", f"/environments/{_segment(environment)}/promoted-digests")
        return {
            "environment": str(answer["environment"]),
            "repositories": {str(k): str(v) for k, v in dict(answer["repositories"]).items()},
            "ignored": int(answer["ignored"]),
        }

    def trace(self, query: str) -> dict[str, Any]:
        return dict(self.request("GET", "/trace", params={"query": query}))

    def attestations(self, ref: str) -> dict[str, Any]:
        return dict(self.request("GET", "/attestations", params={"ref": ref}))

    def audit_verify(
        self, checkpoint: str | Path | None = None, *, full: bool = False
    ) -> dict[str, Any]:
        text = _read(checkpoint).decode("utf-8", "replace") if checkpoint is not None else None
        body = {"checkpoint": text, "full": full}
        return dict(self.request("POST", "/audit/verify", json=body))

    def audit_checkpoint(self) -> dict[str, Any]:
        return dict(self.request("POST", "/audit/checkpoints"))

    def create_token(
        self, name: str, *, identity: str, expires: str | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "identity": identity, "expires": expires}
        return dict(self.request("POST", "/tokens", json=body))

    def list_tokens(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/tokens")["tokens"])

    def revoke_token(self, name: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/tokens/{_segment(name)}"))


def _segment(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
