"""``conveyor.yaml``: the schema, and loading it with every problem reported at once.

Found in the current directory, or named by ``--config`` / ``CONVEYOR_CONFIG``. Paths inside
it (key files, the ledger) are relative to the file itself.
"""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from conveyor.errors import ConfigError, InputError, InvalidReferenceError
from conveyor.oci.name import LayoutReference, Reference, parse_target
from conveyor.policy.duration import parse_duration
from conveyor.policy.roles import Role
from conveyor.policy.windows import parse_clock, parse_instant, parse_interval, weekly, zone
from conveyor.severity import Severity as Severity  # the one vocabulary; re-exported here
from conveyor.yamlsource import YamlDocument, load_yaml

CONFIG_FILE_NAME = "conveyor.yaml"
DEFAULT_LEDGER_PATH = Path(".conveyor") / "conveyor.db"
SCHEMA_ID = "https://conveyor.dev/schemas/conveyor.schema.json"
_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
IdentityName = Annotated[str, StringConstraints(pattern=_NAME_PATTERN)]
EnvironmentName = Annotated[str, StringConstraints(pattern=_NAME_PATTERN)]
_BUILTIN_ROLES = frozenset(role.value for role in Role)


def _builtin_role(name: str) -> str:
    # A built-in role reads back as its enum member; a declared one stays a plain name.
    return Role(name) if name in _BUILTIN_ROLES else name


# A role: one of those built in (``Role``), or one declared under ``roles:`` (checked on load).
RoleName = Annotated[str, StringConstraints(pattern=_NAME_PATTERN), AfterValidator(_builtin_role)]


PROMOTER = "promoter"
# In ``distinct_from``, "builder" means the identity that signed the build record,
# "promoter" the identity promoting; any other role excludes every identity holding it.
DistinctFrom = RoleName
GATE_NAMES = ("provenance", "tests", "scan", "after", "approvals", "freeze")


class UnknownEnvironmentError(InputError):
    """An environment name that conveyor.yaml does not define."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _schema_without_null(schema: dict[str, Any]) -> None:
    # Optional keys are left out, never written as null (which is refused), so the
    # published schema does not offer null.
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            prop.pop("anyOf")
            if len(rest) == 1:
                prop.update(rest[0])
            else:
                prop["anyOf"] = rest
        if prop.get("default", 0) is None:
            prop.pop("default")


class _Spec(_Strict):
    """Base of the environment and gate models: an explicit null is refused, because YAML's
    ``key:`` with nothing after it would otherwise silently mean "not set"."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_schema_without_null)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("empty value; give one or leave the key out")
        return value


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        raise ValueError("a duration needs a unit: write 24h, 30m, 7d or PT24H")
    if not isinstance(value, str):
        raise ValueError("a duration is text such as 24h, 30m, 7d or PT24H")
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(?:(?:\d+[smhdw])+|[Pp](?:\d+[Ww])?(?:\d+[Dd])?"
            r"(?:[Tt](?:\d+[Hh])?(?:\d+[Mm])?(?:\d+[Ss])?)?)$",
            "description": "a duration: 30s, 30m, 24h, 7d, 2w, 1h30m, or ISO 8601 (PT24H, P7D)",
            "examples": ["24h", "7d", "PT24H"],
        }
    ),
]


def _moment(value: object) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a date-time needs a time zone; add Z or an offset such as +01:00")
        # ruamel's TimeStamp is a datetime subclass; keep a plain one.
        plain = datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=value.tzinfo,
        )
        return plain.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return parse_instant(value)
    raise ValueError("expected an ISO-8601 date (2026-12-31) or date-time (2026-12-31T12:00:00Z)")


Moment = Annotated[
    datetime,
    BeforeValidator(_moment),
    WithJsonSchema(
        {
            "type": "string",
            "anyOf": [{"format": "date"}, {"format": "date-time"}],
            "description": "ISO 8601 date (00:00 UTC that day) or date-time with Z or offset",
        }
    ),
]


def _interval(value: str) -> str:
    parse_interval(value)
    return value


FreezeInterval = Annotated[
    str,
    AfterValidator(_interval),
    Field(
        description="ISO 8601 interval START/END, START/DURATION or DURATION/END; frozen from "
        "START up to END",
        examples=["2026-12-20T00:00:00Z/2027-01-02T00:00:00Z"],
    ),
]
TagName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]


_URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
HttpUrl = Annotated[str, StringConstraints(pattern=_URL_PATTERN, max_length=2048)]
ClaimName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")]
ClaimValue = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class OidcBindingSpec(_Spec):
    """A CI job's OIDC ID token that acts as this identity (issue 13)."""

    issuer: IdentityName = Field(description="a name under server.oidc.issuers")
    claims: dict[ClaimName, ClaimValue] = Field(
        min_length=1,
        description="every claim must match: exactly, or as a glob (* ? [..]; * crosses /)",
        examples=[{"sub": "repo:acme/payment-api:environment:production"}],
    )
    without: list[ClaimName] = Field(
        default_factory=list,
        description="claims the token must NOT carry (GitLab: 'environment' keeps deploy "
        "jobs of the same branch out)",
    )


class LoginBindingSpec(_Spec):
    """A person signing in through server.login whose verified email is this one."""

    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]


class IdentityKeySpec(_Strict):
    """One public key of an identity; a retired key still vouches for what it signed before."""

    key: str = Field(min_length=1, description="public key file (PEM), relative to conveyor.yaml")
    retired: Moment | None = Field(
        default=None,
        description="when the key was retired: evidence it signed counts only when both its "
        "ledger record time and its signed time are before this; it signs nothing new",
    )


class IdentitySpec(_Strict):
    key: str | None = Field(
        default=None,
        min_length=1,
        description="public key file (PEM), relative to conveyor.yaml (or list them under "
        "'keys'); without any the identity acts only through conveyor serve",
    )
    keys: list[IdentityKeySpec] | None = Field(
        default=None,
        min_length=1,
        description="the identity's keys, current and retired (conveyor keys rotate writes this)",
    )
    roles: list[RoleName] = Field(
        min_length=1, description="built-in roles, or roles declared under 'roles:'"
    )
    oidc: OidcBindingSpec | None = Field(
        default=None, description="conveyor serve: a CI job's OIDC token acts as this identity"
    )
    login: LoginBindingSpec | None = Field(
        default=None, description="conveyor serve: a person's login (server.login) acts as it"
    )
    environments: list[EnvironmentName] | None = Field(
        default=None,
        min_length=1,
        description="the only environments it may approve, promote, roll back or attest smoke "
        "tests for (default: all); evidence it signs for any other does not count",
    )

    @field_validator("environments")
    @classmethod
    def _distinct_environments(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError("environments are listed more than once")
        return names

    @field_validator("roles")
    @classmethod
    def _distinct(cls, roles: list[str]) -> list[str]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles are listed more than once")
        if Role.SERVER in roles and len(roles) > 1:
            # A server-signed statement counts only for the principal it names; a server
            # with roles of its own would count for itself as well.
            raise ValueError("the role 'server' stands alone: list no other role with it")
        return roles

    @model_validator(mode="after")
    def _one_key_form(self) -> Self:
        if self.key is not None and self.keys is not None:
            raise ValueError("give the public key as 'key: FILE' or list 'keys:', not both")
        files = [item.key for item in self.keys or ()]
        if len(set(files)) != len(files):
            raise ValueError("a key file is listed more than once under 'keys'")
        return self

    def key_specs(self) -> list[IdentityKeySpec]:
        """Every key of the identity, in the order written (the single form: one, current)."""
        if self.keys is not None:
            return list(self.keys)
        return [IdentityKeySpec(key=self.key)] if self.key is not None else []

    @model_validator(mode="after")
    def _server_has_key(self) -> Self:
        if Role.SERVER in self.roles and self.key is None and self.keys is None:
            raise ValueError("a 'server' identity needs its public key ('key:')")
        if Role.SERVER in self.roles and (self.oidc or self.login):
            raise ValueError("the 'server' identity cannot be reached by an OIDC token or a login")
        return self


class OidcIssuerSpec(_Spec):
    """One CI provider whose ID tokens the server accepts."""

    issuer: HttpUrl = Field(description="the tokens' exact 'iss'")
    jwks_uri: HttpUrl | None = Field(
        default=None, description="its JWKS; default: from the issuer's OIDC discovery"
    )
    jwks_file: str | None = Field(
        default=None,
        min_length=1,
        description="a JWKS file (air-gapped servers), relative to conveyor.yaml",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.jwks_uri and self.jwks_file:
            raise ValueError("give jwks_uri or jwks_file, not both")
        return self


class OidcSpec(_Spec):
    """CI jobs authenticate with their provider's short-lived OIDC ID token."""

    audience: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="the 'aud' every CI token must carry"
    )
    issuers: dict[IdentityName, OidcIssuerSpec] = Field(min_length=1)


class LoginSpec(_Spec):
    """People sign in with the team's OpenID Connect provider."""

    issuer: HttpUrl = Field(description="OIDC discovery at /.well-known/openid-configuration")
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    client_secret_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = (
        Field(description="the environment variable holding the client secret (never the file)")
    )


def registry_location(text: str) -> tuple[str, str]:
    """``host[:port][/prefix]`` (an entry of ``server.registries``) as (registry, repository
    prefix, "" for the whole registry), normalised as references are (``index.docker.io``,
    ``library/``)."""
    host, _, prefix = text.partition("/")
    if text.startswith(("oci:", "docker://")) or (prefix == "" and text.endswith("/")):
        raise ValueError(f"{text[:80]!r} is not host[:port] or host[:port]/prefix")
    try:
        # A repository is needed to check the host; "x" stands in for "the whole registry".
        checked = Reference(host, prefix or "x")
    except InvalidReferenceError as exc:
        raise ValueError(str(exc)) from exc
    return checked.registry, checked.repository if prefix else ""


class ServerSpec(_Strict):
    """``conveyor serve``: how the server signs what it records for a principal."""

    signing_key: str | None = Field(
        default=None,
        min_length=1,
        description="private key (PEM) the server signs with, relative to conveyor.yaml; its "
        "public key is an identity with role 'server'",
    )
    url: HttpUrl | None = Field(
        default=None, description="the server's external URL (login redirect)"
    )
    oidc: OidcSpec | None = Field(default=None, description="CI jobs' OIDC ID tokens")
    login: LoginSpec | None = Field(default=None, description="people's OpenID Connect login")
    # What the server may open besides the environments' repositories (build sources).
    registries: list[Annotated[str, StringConstraints(min_length=1, max_length=300)]] = Field(
        default_factory=list,
        description="registries the server may open besides the environments' repositories: "
        "host[:port] (every repository on it) or host[:port]/prefix (that repository and those "
        "under it); written as references spell them",
    )
    layouts: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        default_factory=list,
        description="directories, relative to conveyor.yaml, whose OCI layouts (at or under "
        "them, symlinks resolved) the server may open besides the environments' layouts",
    )

    @field_validator("registries")
    @classmethod
    def _registry_locations(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            registry_location(entry)
        return entries

    @field_validator("layouts")
    @classmethod
    def _layout_directories(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if not entry.isprintable():
                raise ValueError(f"layout directory {entry[:80]!r} contains control characters")
        return entries

    @model_validator(mode="after")
    def _login_needs_url(self) -> Self:
        if self.login is not None and not self.url:
            raise ValueError("server.login needs server.url (the login redirects back to it)")
        return self


NamespaceName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
]  # a Kubernetes namespace: an RFC 1123 label


class AdmissionSpec(_Spec):
    """``POST /admission/validate``: which Kubernetes namespaces run which environment."""

    namespaces: dict[NamespaceName, EnvironmentName] = Field(
        default_factory=dict,
        description="namespace -> environment whose promoted digests alone may run there",
    )
    exempt_namespaces: list[NamespaceName] = Field(
        default_factory=list, description="namespaces admitted without a check, no warning"
    )
    default: Literal["allow", "deny"] = Field(
        default="allow", description="namespaces neither listed nor exempt: allow (warned) or deny"
    )
    previous: int = Field(
        default=1,
        ge=0,
        le=100,
        strict=True,
        description="earlier promotions still admitted (rollback)",
    )

    @model_validator(mode="after")
    def _exempt_not_governed(self) -> Self:
        both = sorted(set(self.exempt_namespaces) & set(self.namespaces))
        if both:
            raise ValueError(f"namespaces both governed and exempt: {', '.join(both)}")
        return self


_NON_EVIDENCE_ROLES = (Role.READER, Role.ADMIN, Role.SERVER, Role.DRIFT)


def _evidence_role(role: str) -> str:
    if role in _NON_EVIDENCE_ROLES:
        raise ValueError(f"the role {str(role)!r} signs no evidence; name a role that does")
    return role


class LedgerSpec(_Strict):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite at .conveyor/conveyor.db beside conveyor.yaml",
    )
    key: str | None = Field(
        default=None, description="private key that signs ledger checkpoints (PEM)"
    )
    public_key: str | None = Field(default=None, description="its public key, to verify them")


class ProvenanceSpec(_Spec):
    """A build record by a ``builder`` whose labels name the same commit and CI run."""

    builder_id: str | None = Field(
        default=None,
        min_length=1,
        description="glob pattern the build record's builder id must match "
        "(e.g. https://github.com/acme/*)",
    )


class TestsSpec(_Spec):
    """The most recent test attestation by a ``tester``; errored tests count as failed."""

    __test__ = False  # not a pytest test class

    min_passed: StrictInt = Field(default=1, ge=0, description="at least this many passed tests")
    max_failed: StrictInt = Field(
        default=0, ge=0, description="at most this many failed + errored tests"
    )


class ScanExceptionSpec(_Spec):
    id: str = Field(min_length=1, description="finding id, e.g. CVE-2024-1234")
    reason: str = Field(min_length=1, description="why the finding is accepted")
    expires: Moment = Field(description="the exception stops counting at this moment")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, reason: str) -> str:
        if not reason.strip():
            raise ValueError("a reason must say something")
        return reason


class ScanSpec(_Spec):
    """The most recent scan by a ``scanner``; unlisted severities are not limited."""

    max: dict[Severity, Annotated[StrictInt, Field(ge=0)]] = Field(
        default_factory=dict, description="highest allowed count per severity"
    )
    max_age: Duration | None = Field(default=None, description="the scan must be at most this old")
    exceptions: list[ScanExceptionSpec] = Field(
        default_factory=list, description="accepted findings, each until it expires"
    )

    @field_validator("exceptions")
    @classmethod
    def _distinct_ids(cls, exceptions: list[ScanExceptionSpec]) -> list[ScanExceptionSpec]:
        ids = [item.id.casefold() for item in exceptions]
        if len(set(ids)) != len(ids):
            raise ValueError("an exception id is listed more than once")
        return exceptions


class AfterSpec(_Spec):
    """The digest is or was in ``environment``."""

    environment: EnvironmentName = Field(description="an environment defined in this file")
    soak: Duration | None = Field(default=None, description="minimum time since it arrived there")
    smoke: StrictBool = Field(
        default=False,
        description="require a passed smoke test for that environment, by a tester, "
        "recorded after the digest arrived there",
    )


def _after_shorthand(value: object) -> object:
    return {"environment": value} if isinstance(value, str) else value


def _default_distinct_from() -> list[DistinctFrom]:
    return ["builder", "promoter"]


class ApprovalsSpec(_Spec):
    """Approvals bind digest and environment; one identity counts once."""

    count: StrictInt = Field(ge=1, le=100, description="distinct approving identities needed")
    role: RoleName = Field(
        default=Role.APPROVER,
        description="role an approver must hold; only its holders may record approvals for "
        "this environment",
    )

    @field_validator("role")
    @classmethod
    def _signing_role(cls, role: str) -> str:
        return _evidence_role(role)

    distinct_from: list[DistinctFrom] = Field(
        default_factory=_default_distinct_from,
        description="identities that do not count: 'builder' is whoever signed the build "
        "record, 'promoter' whoever promotes, any other role excludes its holders",
    )
    max_age: Duration | None = Field(
        default=None, description="approvals older than this do not count"
    )

    @model_validator(mode="after")
    def _role_not_excluded(self) -> Self:
        if self.role in self.distinct_from:
            raise ValueError(
                f"distinct_from excludes the approving role {self.role!r}; "
                "no approval could ever count"
            )
        return self


def _clock(value: str) -> str:
    parse_clock(value)
    return value


Clock = Annotated[str, AfterValidator(_clock), Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class WeeklyWindowSpec(_Spec):
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        min_length=1, description="weekdays the window starts on"
    )
    from_: Clock = Field(alias="from", description="start, HH:MM local time", examples=["16:00"])
    to: Clock = Field(
        description="last minute, HH:MM local time (earlier than 'from' runs past midnight)",
        examples=["23:59"],
    )
    timezone: str = Field(description="IANA time zone, e.g. Europe/Berlin")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone(name)
        return name

    @model_validator(mode="after")
    def _window(self) -> Self:
        weekly(list(self.days), self.from_, self.to, self.timezone)
        return self


class WeeklySpec(_Spec):
    weekly: WeeklyWindowSpec


def _window_kind(value: object) -> str:
    return "weekly" if isinstance(value, dict | WeeklySpec) else "interval"


def _approvals_shape(value: object) -> str:
    return "list" if isinstance(value, list | tuple) else "one"


# One shape per input type, so a wrong value gets one error, not one per shape.
ApprovalsRequirements = Annotated[
    Annotated[ApprovalsSpec, Tag("one")]
    | Annotated[list[ApprovalsSpec], Field(min_length=1), Tag("list")],
    Discriminator(_approvals_shape),
]


FreezeWindowSpec = Annotated[
    Annotated[FreezeInterval, Tag("interval")] | Annotated[WeeklySpec, Tag("weekly")],
    Discriminator(_window_kind),
]


class BreakGlassSpec(_Spec):
    approvals: StrictInt = Field(
        ge=1, le=100, description="approvals a --break-glass promotion needs during a freeze"
    )
    role: RoleName = Field(
        default=Role.APPROVER,
        description="role those approvers hold; its holders may record approvals here",
    )

    @field_validator("role")
    @classmethod
    def _signing_role(cls, role: str) -> str:
        return _evidence_role(role)


class FreezeSpec(_Spec):
    windows: list[FreezeWindowSpec] = Field(min_length=1, description="when promotion is frozen")
    break_glass: BreakGlassSpec | None = Field(
        default=None, description="without it, nothing passes a freeze"
    )


class GlobalFreezeSpec(FreezeSpec):
    environments: list[EnvironmentName] | None = Field(
        default=None, description="environments the freeze applies to; default: all"
    )


class RequiresSpec(_Spec):
    """The gates of an environment. A build record is always required besides these."""

    provenance: ProvenanceSpec | None = None
    tests: TestsSpec | None = None
    scan: ScanSpec | None = None
    after: (
        Annotated[
            AfterSpec,
            BeforeValidator(_after_shorthand, json_schema_input_type=AfterSpec | EnvironmentName),
        ]
        | None
    ) = None
    approvals: ApprovalsRequirements | None = Field(
        default=None,
        description="one requirement, or a list of them that must all hold (e.g. two "
        "approvers and one security sign-off); an identity counts once per requirement",
    )
    freeze: FreezeSpec | None = None

    @property
    def approval_requirements(self) -> tuple[ApprovalsSpec, ...]:
        """The approvals requirements, all of which must hold (none: no approvals gate)."""
        if self.approvals is None:
            return ()
        if isinstance(self.approvals, ApprovalsSpec):
            return (self.approvals,)
        return tuple(self.approvals)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # YAML's "provenance:" is null; reading it as "no gate" would fail open.
        if value is None:
            raise ValueError("a gate needs a mapping; write '{}' for its defaults")
        return value


class EnvironmentSpec(_Spec):
    repository: str = Field(
        min_length=1,
        description="where promoted digests are placed: registry/repository or oci:PATH, "
        "with no tag and no digest",
    )
    tags: list[TagName] = Field(
        default_factory=list,
        description="moving convenience tags applied on promotion; deploys still use the digest",
    )
    requires: RequiresSpec = Field(
        description="the gates; an environment without gates says 'requires: {}'"
    )

    @field_validator("repository")
    @classmethod
    def _plain_repository(cls, text: str) -> str:
        try:
            target = parse_target(text, strict=False)
        except InvalidReferenceError as exc:
            raise ValueError(str(exc)) from exc
        if target.tag is not None or target.digest is not None:
            raise ValueError("a repository carries no tag or digest; list tags under 'tags:'")
        return text

    @model_validator(mode="after")
    def _tags_fit_repository(self) -> Self:
        target = self.target
        for tag in self.tags:
            try:
                target.with_tag(tag)
            except InvalidReferenceError as exc:
                raise ValueError(str(exc)) from exc
        if len(set(self.tags)) != len(self.tags):
            raise ValueError("a tag is listed more than once")
        return self

    @property
    def target(self) -> Reference | LayoutReference:
        return parse_target(self.repository, strict=False)

    @property
    def after_environment(self) -> str | None:
        """The environment this one comes after (``requires.after``), if any."""
        after = self.requires.after
        return after.environment if after is not None else None


LintRuleId = Annotated[str, StringConstraints(pattern=r"^CV[0-9]{3}$")]


class LintSpec(_Spec):
    """``conveyor lint`` settings: severity per rule and paths not to lint."""

    rules: dict[LintRuleId, Literal["error", "warning", "info", "off"]] = Field(
        default_factory=dict,
        description="severity per rule id (CV001 …); 'off' turns a rule off",
    )
    exclude: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list,
        description="glob patterns of paths lint skips (e.g. charts/*/templates/**)",
    )


def _whole_number(value: object) -> object:
    # Literal[1] alone takes true and 1.0 (both == 1); a config says what it means.
    if type(value) is not int:
        raise ValueError(f"expected the whole number 1, not {_kind_of(value)}")
    return value


def _kind_of(value: object) -> str:
    """How a YAML value that has the wrong type reads to the person who wrote it."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {value[:40]!r} (quoted, so it is text)"
    if isinstance(value, float):
        return f"the fraction {value}"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _top_level_schema(schema: dict[str, Any]) -> None:
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    _schema_without_null(schema)


class ConfigModel(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="conveyor.yaml",
        json_schema_extra=_top_level_schema,
    )

    version: Annotated[Literal[1], BeforeValidator(_whole_number)]
    roles: list[IdentityName] = Field(
        default_factory=list,
        description="roles besides the nine built in (builder, tester, scanner, approver, "
        "deployer, reader, admin, server, drift), for approvals gates and break_glass to name",
    )
    identities: dict[IdentityName, IdentitySpec] = Field(min_length=1)
    ledger: LedgerSpec = LedgerSpec()
    environments: dict[EnvironmentName, EnvironmentSpec] = Field(
        default_factory=dict, description="named stages a digest is promoted through"
    )
    freeze: GlobalFreezeSpec | None = Field(
        default=None, description="a freeze for every environment (or those listed)"
    )
    lint: LintSpec | None = Field(
        default=None, description="conveyor lint: rule severities and excluded paths"
    )
    server: ServerSpec | None = Field(
        default=None, description="conveyor serve: the server's signing key and URL"
    )
    admission: AdmissionSpec | None = Field(
        default=None, description="the Kubernetes admission webhook: namespaces -> environments"
    )

    @model_validator(mode="after")
    def _bindings_name_issuers(self) -> Self:
        oidc = self.server.oidc if self.server else None
        login = self.server.login if self.server else None
        for name, spec in self.identities.items():
            if spec.oidc is not None and (oidc is None or spec.oidc.issuer not in oidc.issuers):
                known = ", ".join(oidc.issuers) if oidc else "none (no server.oidc)"
                raise ValueError(
                    f"identities.{name}.oidc.issuer: {spec.oidc.issuer!r} is not under "
                    f"server.oidc.issuers (defined: {known})"
                )
            if spec.login is not None and login is None:
                raise ValueError(f"identities.{name}.login needs server.login")
        return self

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("freeze needs a mapping with 'windows:'")
        return value

    @field_validator("admission", mode="before")
    @classmethod
    def _admission_not_null(cls, value: object) -> object:
        if value is None:  # "admission:" alone would otherwise govern nothing, silently
            raise ValueError("admission needs a mapping with 'namespaces:'")
        return value

    def environment(self, name: str) -> EnvironmentSpec:
        spec = self.environments.get(name)
        if spec is None:
            known = ", ".join(self.environments) or "none"
            raise UnknownEnvironmentError(
                f"unknown environment {name!r}; conveyor.yaml defines: {known}"
            )
        return spec

    def break_glass_for(self, name: str) -> BreakGlassSpec | None:
        """The break-glass rule of environment ``name``: its own freeze's, else the global's."""
        return next(
            (f.break_glass for f in self.freezes_for(name) if f.break_glass is not None), None
        )

    def approval_roles(self, name: str | None) -> frozenset[str]:
        """The roles whose approvals count for environment ``name`` (the roles its approvals
        requirements and its break-glass name). Empty: none named, ``approver`` applies."""
        if name is None or name not in self.environments:
            return frozenset()
        roles = {str(r.role) for r in self.environment(name).requires.approval_requirements}
        glass = self.break_glass_for(name)
        if glass is not None:
            roles.add(str(glass.role))
        return frozenset(roles)

    def freezes_for(self, name: str) -> tuple[FreezeSpec, ...]:
        """The freezes that apply to environment ``name``: its own, then the global one."""
        found: list[FreezeSpec] = []
        own = self.environment(name).requires.freeze
        if own is not None:
            found.append(own)
        shared = self.freeze
        if shared is not None and (shared.environments is None or name in shared.environments):
            found.append(shared)
        return tuple(found)


@dataclass(frozen=True)
class IdentityKey:
    path: Path
    retired: datetime | None  # None: current


@dataclass(frozen=True)
class Identity:
    name: str
    key_path: Path | None  # the current key (first not retired, else first); None: keyless
    roles: frozenset[str]  # built-in roles as ``Role`` members, declared ones as names
    keys: tuple[IdentityKey, ...] = ()  # every key, current and retired; () = (key_path,)
    environments: frozenset[str] | None = None  # the only ones it may act in; None: all

    @property
    def all_keys(self) -> tuple[IdentityKey, ...]:
        if self.keys:
            return self.keys
        return (IdentityKey(self.key_path, None),) if self.key_path is not None else ()


@dataclass(frozen=True)
class Config:
    path: Path
    model: ConfigModel
    identities: dict[str, Identity]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def ledger_url(self) -> str:
        """``CONVEYOR_DB``, else ``configured_ledger_url``."""
        return os.environ.get("CONVEYOR_DB") or self.configured_ledger_url

    @property
    def configured_ledger_url(self) -> str:
        """The ledger this file names (default: SQLite beside it); no environment read."""
        if self.model.ledger.url:
            return self.model.ledger.url
        return f"sqlite:///{self.base_dir / DEFAULT_LEDGER_PATH}"

    def environment_target(self, name: str) -> Reference | LayoutReference:
        """Environment ``name``'s repository; an ``oci:`` layout path is relative to this
        file, like every other path in it."""
        target = self.model.environment(name).target
        if isinstance(target, LayoutReference) and not Path(target.path).is_absolute():
            return LayoutReference(str(self.base_dir / target.path))
        return target

    def require_environment(self, name: str, *, defined: bool = True) -> None:
        """Refuse an unknown environment (exit 2). ``defined=False``: while the file
        defines no environments at all, any well-formed name is accepted (evidence may be
        recorded before the stages are written down)."""
        if defined or self.model.environments:
            self.model.environment(name)
        if not re.fullmatch(_NAME_PATTERN, name):
            raise InputError(f"invalid environment name {name!r}")

    def resolve_path(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def find_config(
    explicit: str | Path | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The config file to use: ``explicit``, then ``CONVEYOR_CONFIG`` (of ``environ``,
    default the process's), then ./conveyor.yaml (of ``cwd``)."""
    chosen = explicit or (os.environ if environ is None else environ).get("CONVEYOR_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path.resolve()
    here = (cwd or Path.cwd()) / CONFIG_FILE_NAME
    if here.is_file():
        return here.resolve()
    raise ConfigError(
        f"no {CONFIG_FILE_NAME} in {cwd or Path.cwd()}; run 'conveyor init' or pass --config"
    )


def load_config(path: Path) -> Config:
    document = load_yaml(path)
    if not isinstance(document.data, dict):
        raise ConfigError(f"{path}:1:1: the config must be a mapping with 'version: 1'")
    problems: list[str] = []
    model: ConfigModel | None = None
    try:
        model = ConfigModel.model_validate(document.data)
    except ValidationError as exc:
        problems.extend(_describe(document, error) for error in exc.errors())
    # Files and cross-references are checked even when the schema failed, so one run
    # reports everything.
    problems.extend(_missing_key_files(document, path.parent))
    problems.extend(_environment_references(document))
    problems.extend(_role_references(document))
    if problems or model is None:
        problems.sort(key=_line_of)
        raise ConfigError(_summary(path, problems), problems)
    config = Config(path=path, model=model, identities={})
    for name, spec in model.identities.items():
        keys = tuple(
            IdentityKey(config.resolve_path(item.key), item.retired) for item in spec.key_specs()
        )
        current = next((k for k in keys if k.retired is None), keys[0]) if keys else None
        config.identities[name] = Identity(
            name,
            current.path if current else None,
            frozenset(spec.roles),
            keys,
            frozenset(spec.environments) if spec.environments is not None else None,
        )
    return config


def _missing_key_files(document: YamlDocument, base_dir: Path) -> list[str]:
    identities = document.data.get("identities")
    if not isinstance(identities, dict):
        return []
    problems = []
    for name, spec in identities.items():
        if not isinstance(spec, dict):
            continue
        places: list[tuple[object, tuple[str | int, ...]]] = [
            (spec.get("key"), ("identities", name, "key"))
        ]
        listed = spec.get("keys")
        for index, item in enumerate(listed if isinstance(listed, list) else ()):
            if isinstance(item, dict):
                places.append((item.get("key"), ("identities", name, "keys", index, "key")))
        for key, loc in places:
            if not isinstance(key, str) or not key:
                continue
            key_path = Path(key).expanduser()
            key_path = key_path if key_path.is_absolute() else base_dir / key_path
            if not key_path.is_file():
                problems.append(
                    f"{document.where(loc)}: "
                    f"{'.'.join(map(str, loc))}: key file {key_path} does not exist"
                )
    return problems


def _environment_references(document: YamlDocument) -> list[str]:
    """Names that must refer to a defined environment, and cycles in ``after``."""
    environments = document.data.get("environments")
    if not isinstance(environments, dict):
        environments = {}
    names = list(environments)
    problems = []
    follows: dict[str, str] = {}
    for name, spec in environments.items():
        requires = spec.get("requires") if isinstance(spec, dict) else None
        after = requires.get("after") if isinstance(requires, dict) else None
        loc: tuple[str, ...] = ("environments", name, "requires", "after")
        if isinstance(after, dict):
            after, loc = after.get("environment"), (*loc, "environment")
        if not isinstance(after, str):
            continue
        if after in environments:
            follows[name] = after
        else:
            problems.append(
                f"{document.where(loc)}: {'.'.join(loc)}: unknown environment {after!r}; "
                f"defined: {', '.join(names) or 'none'}"
            )
    reported: set[str] = set()
    for start in names:
        path = [start]
        while path[-1] in follows and follows[path[-1]] not in path:
            path.append(follows[path[-1]])
        if path[-1] not in follows:
            continue
        cycle = path[path.index(follows[path[-1]]) :]
        if reported & set(cycle):
            continue
        reported.update(cycle)
        first = min(cycle, key=names.index)
        at = cycle.index(first)
        ordered = [*cycle[at:], *cycle[:at], first]
        loc = ("environments", first, "requires", "after")
        problems.append(
            f"{document.where(loc)}: {'.'.join(loc)}: cycle in 'after': "
            f"{' -> '.join(ordered)}; an environment cannot come after itself"
        )
    freeze = document.data.get("freeze")
    listed = freeze.get("environments") if isinstance(freeze, dict) else None
    if isinstance(listed, list):
        for index, name in enumerate(listed):
            if isinstance(name, str) and name not in environments:
                problems.append(
                    f"{document.where(('freeze', 'environments', index))}: "
                    f"freeze.environments.{index}: unknown environment {name!r}; "
                    f"defined: {', '.join(names) or 'none'}"
                )
    identities = document.data.get("identities")
    for identity, spec in identities.items() if isinstance(identities, dict) else ():
        allowed = spec.get("environments") if isinstance(spec, dict) else None
        for index, name in enumerate(allowed if isinstance(allowed, list) else ()):
            if isinstance(name, str) and name not in environments:
                place: tuple[str | int, ...] = ("identities", identity, "environments", index)
                problems.append(
                    f"{document.where(place)}: {'.'.join(map(str, place))}: unknown environment "
                    f"{name!r}; defined: {', '.join(names) or 'none'}"
                )
    admission = document.data.get("admission")
    governed = admission.get("namespaces") if isinstance(admission, dict) else None
    for namespace, name in governed.items() if isinstance(governed, dict) else ():
        if isinstance(name, str) and name not in environments:
            problems.append(
                f"{document.where(('admission', 'namespaces', namespace))}: "
                f"admission.namespaces.{namespace}: unknown environment {name!r}; "
                f"defined: {', '.join(names) or 'none'}"
            )
    return problems


def _role_references(document: YamlDocument) -> list[str]:
    """Every role named must be built in or declared under ``roles:``, once."""
    data = document.data
    declared = data.get("roles")
    problems = []
    builtin = {role.value for role in Role}
    known = set(builtin)
    if isinstance(declared, list):
        for index, name in enumerate(declared):
            if not isinstance(name, str):
                continue
            where = f"{document.where(('roles', index))}: roles.{index}"
            if name in builtin:
                problems.append(f"{where}: {name!r} is built in; declare only other roles")
            elif name in (PROMOTER, "builder"):
                problems.append(f"{where}: {name!r} is reserved (it means an identity)")
            elif name in known:
                problems.append(f"{where}: {name!r} is declared more than once")
            known.add(name)
    hint = "declare it under 'roles:' or use a built-in role (" + ", ".join(builtin) + ")"

    def check(name: object, loc: tuple[str | int, ...], *, extra: tuple[str, ...] = ()) -> None:
        if isinstance(name, str) and name not in known and name not in extra:
            dotted = ".".join(map(str, loc))
            problems.append(f"{document.where(loc)}: {dotted}: unknown role {name!r}; {hint}")

    identities = data.get("identities")
    for ident, spec in identities.items() if isinstance(identities, dict) else ():
        roles = spec.get("roles") if isinstance(spec, dict) else None
        for index, name in enumerate(roles if isinstance(roles, list) else ()):
            check(name, ("identities", ident, "roles", index))
    places: list[tuple[object, tuple[str | int, ...]]] = []
    freeze = data.get("freeze")
    if isinstance(freeze, dict):
        places.append((freeze, ("freeze",)))
    environments = data.get("environments")
    for env, spec in environments.items() if isinstance(environments, dict) else ():
        requires = spec.get("requires") if isinstance(spec, dict) else None
        if not isinstance(requires, dict):
            continue
        approvals = requires.get("approvals")
        base: tuple[str | int, ...] = ("environments", env, "requires", "approvals")
        listed = approvals if isinstance(approvals, list) else [approvals]
        for index, item in enumerate(listed):
            loc = (*base, index) if isinstance(approvals, list) else base
            if isinstance(item, dict):
                check(item.get("role"), (*loc, "role"))
                others = item.get("distinct_from")
                for at, name in enumerate(others if isinstance(others, list) else ()):
                    check(name, (*loc, "distinct_from", at), extra=(PROMOTER,))
        if isinstance(requires.get("freeze"), dict):
            places.append((requires["freeze"], ("environments", env, "requires", "freeze")))
    for spec, loc in places:
        glass = spec.get("break_glass") if isinstance(spec, dict) else None
        if isinstance(glass, dict):
            check(glass.get("role"), (*loc, "break_glass", "role"))
    return problems


_UNION_TAGS = ("interval", "weekly")


def _describe(document: YamlDocument, error: Any) -> str:
    raw_loc = tuple(error.get("loc", ()))
    loc = tuple(
        part
        for index, part in enumerate(raw_loc)
        if part != "[key]" and not _is_union_tag(raw_loc, index)
    )
    dotted = ".".join(str(part) for part in loc) or "(top level)"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if "[key]" in raw_loc and len(loc) >= 2 and loc[-2] == "max":
        message = f"unknown severity {loc[-1]!r}; use {', '.join(s.value for s in Severity)}"
    elif "[key]" in raw_loc:
        message = "names must be lowercase letters, digits, '.', '_' or '-' (at most 63)"
    elif error.get("type") == "extra_forbidden" and len(loc) >= 2 and loc[-2] == "requires":
        message = f"unknown gate {loc[-1]!r}; gates are {', '.join(GATE_NAMES)}"
    elif error.get("type") == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif error.get("type") == "missing" and loc and loc[-1] == "requires":
        message = "required key is missing; an environment without gates says 'requires: {}'"
    elif error.get("type") == "missing":
        message = "required key is missing"
    elif error.get("type") in ("int_type", "bool_type"):
        wanted = "a whole number" if error["type"] == "int_type" else "true or false"
        message = f"expected {wanted}, not {_kind_of(error.get('input'))}"
    elif error.get("type") == "string_pattern_mismatch" and len(loc) >= 2 and loc[-2] == "tags":
        message = (
            f"invalid tag {error.get('input')!r}: letters, digits, '_', '.' or '-', "
            "at most 128, not starting with '.' or '-'"
        )
    return f"{document.where(loc)}: {dotted}: {message}"


def _is_union_tag(loc: tuple[Any, ...], index: int) -> bool:
    # Pydantic puts the tagged-union member's tag into the location; users never wrote it.
    if loc[index] in ("one", "list") and index >= 1 and loc[index - 1] == "approvals":
        return True
    return (
        loc[index] in _UNION_TAGS
        and index >= 2
        and loc[index - 2] == "windows"
        and isinstance(loc[index - 1], int)
    )


def _line_of(problem: str) -> tuple[int, int]:
    match = re.search(r":(\d+):(\d+): ", problem)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _summary(path: Path, problems: list[str]) -> str:
    count = len(problems)
    first = problems[0] if problems else ""
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{path}: {count} problem{'s' if count != 1 else ''}: {first}{more}"


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of conveyor.yaml (what ``docs/conveyor.schema.json`` holds)."""
    schema = ConfigModel.model_json_schema(mode="validation", by_alias=True)
    # Identification first, as readers expect.
    return {"$schema": schema.pop("$schema"), "$id": schema.pop("$id"), **schema}


def render_config_json_schema() -> str:
    return json.dumps(config_json_schema(), indent=2, ensure_ascii=False) + "\n"
