"""A CI OIDC issuer the tests run themselves: keys generated here, a JWKS served on loopback.

``CiIssuer`` serves ``/.well-known/openid-configuration`` and ``/jwks`` over plain http on
127.0.0.1 (an ephemeral port) and signs ID tokens with PyJWT, shaped as GitHub Actions and
GitLab CI document them. Its keys can be rotated while a server uses it; ``fetches``
counts JWKS downloads.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

GITHUB_REPO = "acme/payment-api"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class CiIssuer:
    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    fetches: int = 0
    _server: Any = None

    def add_key(self, kid: str, kind: str = "RSA") -> Any:
        key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.keys[kid] = key
        return key

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            algorithm = (
                jwt.algorithms.RSAAlgorithm
                if isinstance(key, rsa.RSAPrivateKey)
                else (jwt.algorithms.ECAlgorithm)
            )
            jwk = json.loads(algorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig"})
            out.append(jwk)
        return {"keys": out}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        alg: str | None = None,
        key: Any = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        kid = kid or next(iter(self.keys))
        chosen = key if key is not None else self.keys[kid]
        if alg is None:
            alg = "RS256" if isinstance(chosen, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(claims, chosen, algorithm=alg, headers={"kid": kid, **(headers or {})})

    def github_claims(
        self,
        audience: str = "conveyor",
        *,
        repo: str = GITHUB_REPO,
        ref: str = "refs/heads/main",
        environment: str | None = None,
        run_id: str = "123",
        sha: str = COMMIT,
        lifetime: int = 300,
        now: int | None = None,
    ) -> dict[str, Any]:
        """The claims GitHub Actions puts in a job's ID token (docs.github.com, "About
        security hardening with OpenID Connect")."""
        issued = int(time.time()) if now is None else now
        sub = f"repo:{repo}:environment:{environment}" if environment else f"repo:{repo}:ref:{ref}"
        claims: dict[str, Any] = {
            "jti": f"jti-{issued}-{run_id}",
            "sub": sub,
            "aud": audience,
            "ref": ref,
            "sha": sha,
            "repository": repo,
            "repository_owner": repo.split("/")[0],
            "repository_id": "74",
            "run_id": run_id,
            "run_number": "10",
            "run_attempt": "1",
            "actor": "octocat",
            "workflow": "promote",
            "workflow_ref": f"{repo}/.github/workflows/promote.yml@{ref}",
            "event_name": "push",
            "ref_type": "branch",
            "job_workflow_ref": f"{repo}/.github/workflows/promote.yml@{ref}",
            "runner_environment": "github-hosted",
            "iss": self.url,
            "nbf": issued - 5,
            "exp": issued + lifetime,
            "iat": issued,
        }
        if environment:
            claims["environment"] = environment
        return claims

    def gitlab_claims(
        self, audience: str = "conveyor", *, project: str = "acme/payment-api", ref: str = "main"
    ) -> dict[str, Any]:
        """The claims GitLab CI puts in an ``id_tokens:`` token (docs.gitlab.com, "OpenID
        Connect (OIDC) Authentication Using ID Tokens")."""
        now = int(time.time())
        return {
            "namespace_id": "72",
            "namespace_path": project.split("/")[0],
            "project_id": "20",
            "project_path": project,
            "user_id": "1",
            "user_login": "sample-user",
            "pipeline_id": "574",
            "pipeline_source": "push",
            "job_id": "302",
            "ref": ref,
            "ref_type": "branch",
            "ref_path": f"refs/heads/{ref}",
            "ref_protected": "true",
            "sha": COMMIT,
            "runner_environment": "gitlab-hosted",
            "jti": f"gl-{now}",
            "iss": self.url,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "sub": f"project_path:{project}:ref_type:branch:ref:{ref}",
            "aud": audience,
        }


@contextmanager
def ci_issuer(*kids: str) -> Iterator[CiIssuer]:
    issuer = CiIssuer()
    for kid in kids or ("key-1",):
        issuer.add_key(kid)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/jwks":
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
            elif self.path == "/.well-known/openid-configuration":
                body = json.dumps({"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    issuer._server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
