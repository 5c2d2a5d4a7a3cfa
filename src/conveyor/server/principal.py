"""Who is asking: the authenticated principal of a request.

When the server records evidence it signs with its own key **on behalf of** the principal;
``acting()`` is what the operations get (``conveyor.service.Principal``): the identity and
the record of how it authenticated, which the statement names in its ``PRINCIPAL_V1``
field. docs/server.md documents the field and the rule by which the verified reader trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor import service

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"  # = conveyor.attest.PRINCIPAL_V1
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
    def authenticated(self) -> dict[str, Any]:
        """What the statement records of the proof (issue 13: OIDC issuer and claims)."""
        return {"method": self.method, "token": self.credential}

    def acting(self) -> service.Principal:
        """The principal as the operations take it (``principal=``)."""
        from conveyor import service

        return service.Principal(self.identity, self.authenticated, self.request_id)

    def statement_field(self) -> dict[str, Any]:
        """The value of ``PRINCIPAL_V1`` in a predicate the server signs for this principal."""
        return self.acting().to_dict()

    def describe(self) -> str:
        return f"{self.identity} (API token {self.credential})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "roles": sorted(self.roles),
            "authenticated": self.authenticated,
        }
