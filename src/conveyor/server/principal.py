"""Who is asking: the authenticated principal, and the statement field that names it.

When the server records evidence it signs with its own key **on behalf of** the principal,
and names the principal in one extension field of the predicate (``PRINCIPAL_V1``, a URI,
as the in-toto parsing rules allow). docs/server.md documents the field and the exact rule
by which the verified reader trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"
API_TOKEN = "api-token"  # noqa: S105 - the name of an authentication method, not a secret


@dataclass(frozen=True)
class Principal:
    """An identity of conveyor.yaml, and how this request proved it (never the secret)."""

    identity: str
    roles: frozenset[str]
    method: str  # "api-token" now; "oidc" and "login" in issue 13
    credential: str  # the token's NAME
    request_id: str | None = None

    @property
    def authenticated(self) -> dict[str, str]:
        return {"method": self.method, "token": self.credential}

    def statement_field(self) -> dict[str, Any]:
        """The value of ``PRINCIPAL_V1`` in a predicate the server signs for this principal."""
        field: dict[str, Any] = {"identity": self.identity, "authenticated": self.authenticated}
        if self.request_id:
            field["request_id"] = self.request_id
        return field

    def describe(self) -> str:
        return f"{self.identity} (API token {self.credential})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "roles": sorted(self.roles),
            "authenticated": self.authenticated,
        }
