"""Who is asking: the authenticated principal, and the statement field that names it.

When the server records evidence it signs with its own key **on behalf of** the principal,
and names the principal in one extension field of the predicate (``PRINCIPAL_V1``, a URI,
as the in-toto parsing rules allow). docs/server.md documents the field and the exact rule
by which the verified reader trusts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"
API_TOKEN = "api-token"  # noqa: S105 - the name of an authentication method, not a secret
OIDC = "oidc"  # a CI job's OIDC ID token (issue 13)
LOGIN = "login"  # a person's OpenID Connect login session (issue 13)
_PROVIDERS = {"token.actions.githubusercontent.com": "GitHub"}


@dataclass(frozen=True)
class Principal:
    """An identity of conveyor.yaml, and how this request proved it (never the secret)."""

    identity: str
    roles: frozenset[str]
    method: str  # API_TOKEN, OIDC or LOGIN
    credential: str  # the token's NAME; OIDC: the issuer's name; LOGIN: the email
    request_id: str | None = None
    # OIDC: {issuer, provider, claims}; LOGIN: {issuer, email}. Never a secret.
    details: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def authenticated(self) -> dict[str, Any]:
        if self.details is None:
            return {"method": self.method, "token": self.credential}
        return {"method": self.method, **self.details}

    def statement_field(self) -> dict[str, Any]:
        """The value of ``PRINCIPAL_V1`` in a predicate the server signs for this principal."""
        field: dict[str, Any] = {"identity": self.identity, "authenticated": self.authenticated}
        if self.request_id:
            field["request_id"] = self.request_id
        return field

    def describe(self) -> str:
        return describe_authenticated(self.identity, self.authenticated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "roles": sorted(self.roles),
            "authenticated": self.authenticated,
        }


def describe_authenticated(identity: str, authenticated: Mapping[str, Any]) -> str:
    """How ``trace`` says who recorded an entry: "ci via GitHub OIDC (acme/app, refs/heads/main,
    run 123)", "alice via login alice@example.com", "alice (API token alice-laptop)"."""
    method = authenticated.get("method")
    if method == OIDC:
        issuer = str(authenticated.get("issuer", ""))
        host = issuer.split("://", 1)[-1].split("/", 1)[0]
        provider = _PROVIDERS.get(host) or ("GitLab" if "gitlab" in host else host or "CI")
        claims = authenticated.get("claims")
        claims = claims if isinstance(claims, Mapping) else {}
        parts = [
            str(claims[name])
            for name in ("repository", "project_path", "ref", "environment")
            if name in claims
        ]
        for name, word in (("run_id", "run"), ("pipeline_id", "pipeline")):
            if name in claims:
                parts.append(f"{word} {claims[name]}")
        return f"{identity} via {provider} OIDC ({', '.join(parts) or claims.get('sub', '?')})"
    if method == LOGIN:
        return f"{identity} via login {authenticated.get('email', '?')}"
    return f"{identity} (API token {authenticated.get('token', '?')})"
