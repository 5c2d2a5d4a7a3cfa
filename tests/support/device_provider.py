"""A minimal OpenID provider with the device-authorization grant (RFC 8628), for the tests.

oidc-provider-mock, the real provider the login tests use, has no device flow; this one
speaks just enough of it over real HTTP on loopback: discovery, JWKS, the device
authorization endpoint, and the token endpoint's device-code grant (``authorization_pending``
until ``approve`` — the person entering the code on the provider's page — then an RS256 ID
token). Client authentication is HTTP Basic with the configured secret.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class DeviceProvider:
    client_id: str
    client_secret: str
    url: str = ""
    key: Any = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # device_code -> state
    audience: str | None = None  # None: the client id (a test may break it)

    def approve(self, user_code: str, email: str, *, verified: bool = True) -> None:
        for state in self.pending.values():
            if state["user_code"] == user_code:
                state["claims"] = {"email": email, "email_verified": verified}
                return
        raise KeyError(user_code)

    def id_token(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "sub": claims["email"],
            "aud": self.audience or self.client_id,
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "device-1"})


@contextmanager
def device_provider(client_id: str, client_secret: str) -> Iterator[DeviceProvider]:
    provider = DeviceProvider(client_id, client_secret)
    basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._answer(
                    200,
                    {
                        "issuer": provider.url,
                        "authorization_endpoint": provider.url + "/authorize",
                        "token_endpoint": provider.url + "/token",
                        "jwks_uri": provider.url + "/jwks",
                        "device_authorization_endpoint": provider.url + "/device",
                    },
                )
            elif self.path == "/jwks":
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key()))
                self._answer(200, {"keys": [{**jwk, "kid": "device-1", "use": "sig"}]})
            else:
                self._answer(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if self.headers.get("Authorization") != basic:
                self._answer(401, {"error": "invalid_client"})
                return
            if self.path == "/device":
                device_code = secrets.token_urlsafe(24)
                user_code = secrets.token_hex(4).upper()
                provider.pending[device_code] = {"user_code": user_code, "claims": None}
                self._answer(
                    200,
                    {
                        "device_code": device_code,
                        "user_code": user_code,
                        "verification_uri": provider.url + "/activate",
                        "expires_in": 600,
                        "interval": 1,
                    },
                )
            elif self.path == "/token":
                if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code":
                    self._answer(400, {"error": "unsupported_grant_type"})
                    return
                state = provider.pending.get(form.get("device_code", ""))
                if state is None:
                    self._answer(400, {"error": "invalid_grant"})
                elif state["claims"] is None:
                    self._answer(400, {"error": "authorization_pending"})
                else:
                    provider.pending.pop(form["device_code"])
                    token = provider.id_token(state["claims"])
                    self._answer(
                        200, {"access_token": "at", "token_type": "Bearer", "id_token": token}
                    )
            else:
                self._answer(404, {"error": "not_found"})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
