"""Who is asking: the authenticated principal of a request.

When the server records evidence it signs with its own key **on behalf of** the principal;
``acting()`` is what the operations get (``conveyor.service.Principal``): the identity and
the record of how it authenticated, which the statement names in its ``PRINCIPAL_V1``
field. docs/server.md documents the field and the rule by which the verified reader trusts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor import service

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"  # = conveyor.attest.PRINCIPAL_V1
API_TOKEN = "api-token"  # noqa: S105 - the name of an authentication method, not a secret
OIDC = "oidc"  # a CI job's OIDC ID token (issue 13)
LOGIN = "login"  # a person's OpenID Connect login session (issue 13)


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
        """What the statement records of the proof: the token's name, OIDC issuer and claims,
        or the login's issuer and email."""
        if self.details is None:
            return {"method": self.method, "token": self.credential}
        return {"method": self.method, **self.details}

    def acting(self) -> service.Principal:
        """The principal as the operations take it (``principal=``)."""
        from conveyor import service

        return service.Principal(self.identity, self.authenticated, self.request_id)

    def statement_field(self) -> dict[str, Any]:
        """The value of ``PRINCIPAL_V1`` in a predicate the server signs for this principal."""
        return self.acting().to_dict()

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
    from conveyor.service import describe_via

    if authenticated.get("method") in (OIDC, LOGIN):
        return f"{identity} via {describe_via(authenticated)}"
    return f"{identity} ({describe_via(authenticated)})"
