"""Evidence a server signs on behalf of someone: the principal, and whom such evidence counts for.

``conveyor serve`` signs what it records with its own key (an identity holding the role
``server``, and only it) and names the principal it acted for in one extension field of the
predicate, ``PRINCIPAL_V1`` (a URI; in-toto consumers ignore fields they do not know). The
rule below is the one place that field is believed (docs/server.md, "the reader's rule").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.policy.config import Identity
from conveyor.policy.roles import Role

PRINCIPAL_V1 = "https://conveyor.dev/principal/v1"  # = conveyor.attest.PRINCIPAL_V1
# Issuers named by their CI product in ``trace`` (others: by host).
_PROVIDERS = {"token.actions.githubusercontent.com": "GitHub"}


@dataclass(frozen=True)
class Principal:
    """Who a server acts for: an identity of conveyor.yaml and how it proved it.

    ``authenticated`` is what the statement records of the proof, never a secret:
    ``{"method": "api-token", "token": NAME}`` (issue 13 adds ``oidc`` with issuer and
    claims, ``login`` with issuer and email). Used only with a ``signer=`` of a ``server``
    identity: the role check, the ledger's signer column and the promoter are the principal.
    """

    identity: str
    authenticated: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The value of ``PRINCIPAL_V1`` in a predicate signed for this principal."""
        out: dict[str, Any] = {"identity": self.identity, "authenticated": dict(self.authenticated)}
        if self.request_id:
            out["request_id"] = self.request_id
        return out


@dataclass(frozen=True)
class Counted:
    """Whom a verified statement counts for: ``identity`` with its roles now; ``via`` is the
    ``authenticated`` record when a server signed it for them (``server``: its name)."""

    identity: Identity
    via: Mapping[str, Any] | None = None
    server: str | None = None

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(str(role) for role in self.identity.roles)

    def describe(self) -> str:
        """``alice`` or ``alice via API token alice-laptop (signed by server)``."""
        via = via_of(self)
        return self.identity.name if via is None else f"{self.identity.name} via {via}"


def via_of(counted: Counted) -> str | None:
    """``API token alice-laptop (signed by server)``; None for evidence its signer counts for."""
    if counted.server is None:
        return None
    return f"{describe_via(counted.via or {})} (signed by {counted.server})"


def describe_via(authenticated: Mapping[str, Any]) -> str:
    """How a principal authenticated, in words: ``API token alice-laptop``, ``GitHub OIDC
    (acme/app, refs/heads/main, run 123)``, ``login alice@example.com``."""
    method = str(authenticated.get("method", "?"))
    if method == "api-token":
        return f"API token {authenticated.get('token', '?')}"
    if method == "oidc":
        issuer = str(authenticated.get("issuer", ""))
        host = issuer.split("://", 1)[-1].split("/", 1)[0]
        provider = _PROVIDERS.get(host) or ("GitLab" if "gitlab" in host else host or "CI")
        found = authenticated.get("claims")
        claims: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        parts = [
            str(claims[name])
            for name in ("repository", "project_path", "ref", "environment")
            if name in claims
        ]
        for name, word in (("run_id", "run"), ("pipeline_id", "pipeline")):
            if name in claims:
                parts.append(f"{word} {claims[name]}")
        return f"{provider} OIDC ({', '.join(parts) or claims.get('sub', '?')})"
    if method == "login":
        return f"login {authenticated.get('email', '?')}"
    return method


def count_as(
    predicate: Mapping[str, Any],
    signer: Identity,
    identities: Mapping[str, Identity],
    *,
    recorded_for: str | None = None,
) -> Counted | str:
    """Whom a statement verified against ``signer``'s key counts for, or why it is ignored.

    1. No ``PRINCIPAL_V1`` field: its signer (a server as itself holds only ``server``,
       which satisfies no gate).
    2. The field, but the signer does not hold ``server``: ignored.
    3. The field and a ``server`` signer: the named identity P, with P's roles now; P must be
       an identity, not the signer, not a server; ``recorded_for`` (the ledger row's signer
       column, when there is a row) must be P.
    """
    found = predicate.get(PRINCIPAL_V1)
    if found is None:
        return Counted(signer)
    if Role.SERVER not in signer.roles:
        return f"names a principal but {signer.name} is not a server identity"
    name = found.get("identity") if isinstance(found, Mapping) else None
    if not isinstance(name, str) or not name:
        return "a server-signed statement without a principal identity"
    principal = identities.get(name)
    if principal is None:
        return f"names the principal {name!r}, which is not an identity in conveyor.yaml"
    if name == signer.name or Role.SERVER in principal.roles:
        return f"names the server identity {name!r} as its principal"
    if recorded_for is not None and recorded_for != name:
        return f"recorded for {recorded_for!r} but the statement names {name!r}"
    via = found.get("authenticated")
    return Counted(principal, via if isinstance(via, Mapping) else {}, signer.name)
