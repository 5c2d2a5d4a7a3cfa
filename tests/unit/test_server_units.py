"""The server's pure parts: the principal rule, the token store, strict JSON, error classes."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.errors import (
    ConfigError,
    InputError,
    LedgerError,
    NotFoundError,
    PolicyDenied,
    RegistryError,
    VerificationError,
)
from conveyor.policy.config import Identity, Role
from conveyor.server.auth import ACTS, NotAllowed, authorise
from conveyor.server.principal import Principal
from conveyor.server.problems import BodyTooLarge, problem, status_of
from conveyor.server.strict import StrictJsonError, strict_loads
from conveyor.server.tokens import TokenRefused, TokenStore, parse_lifetime
from conveyor.service._principal import PRINCIPAL_V1, count_as

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _identity(name: str, *roles: str) -> Identity:
    return Identity(name, None, frozenset(Role(r) for r in roles))


IDENTITIES = {
    "alice": _identity("alice", "approver"),
    "server": _identity("server", "server"),
    "other-server": _identity("other-server", "server"),
    "ci": _identity("ci", "builder", "tester"),
}


def _field(identity: object) -> dict[str, object]:
    return {PRINCIPAL_V1: {"identity": identity, "authenticated": {"method": "api-token"}}}


@pytest.mark.parametrize(
    ("predicate", "signer", "recorded_for", "expected"),
    [
        ({}, "ci", "ci", ("ci", None)),  # client-signed, no field: today's rule
        ({}, "server", "server", ("server", None)),  # the server as itself: 'server' only
        (_field("alice"), "server", "alice", ("alice", "server")),
        (_field("alice"), "server", "server", "recorded for 'server'"),  # row names another
        (_field("alice"), "ci", "alice", "not a server identity"),  # a client claiming another
        (_field("mallory"), "server", "mallory", "not an identity"),
        (_field("server"), "server", "server", "server identity"),
        (_field("other-server"), "server", "other-server", "server identity"),
        (_field(None), "server", "server", "without a principal"),
        ({PRINCIPAL_V1: "alice"}, "server", "alice", "without a principal"),
        (_field(""), "server", "", "without a principal"),
    ],
)
def test_the_principal_rule(
    predicate: dict[str, object], signer: str, recorded_for: str, expected: object
) -> None:
    outcome = count_as(predicate, IDENTITIES[signer], IDENTITIES, recorded_for=recorded_for)
    if isinstance(expected, str):
        assert isinstance(outcome, str)
        assert expected in outcome
    else:
        assert not isinstance(outcome, str)
        assert (outcome.identity.name, outcome.server) == expected
        assert outcome.roles == IDENTITIES[outcome.identity.name].roles


def test_a_server_signed_statement_is_described_with_the_principal() -> None:
    counted = count_as(
        {PRINCIPAL_V1: {"identity": "alice", "authenticated": {"method": "api-token",
                                                               "token": "alice-laptop"}}},
        IDENTITIES["server"],
        IDENTITIES,
    )  # fmt: skip
    assert not isinstance(counted, str)
    assert counted.describe() == "alice via API token alice-laptop (signed by server)"


def test_one_field_name_everywhere() -> None:
    from conveyor.attest import PRINCIPAL_V1 as in_attest
    from conveyor.server.principal import PRINCIPAL_V1 as in_server

    assert PRINCIPAL_V1 == in_attest == in_server == "https://conveyor.dev/principal/v1"


def test_the_statement_field_names_the_principal_and_never_the_token() -> None:
    who = Principal("alice", frozenset({"approver"}), "api-token", "alice-laptop", "rid-1")
    assert who.statement_field() == {
        "identity": "alice",
        "authenticated": {"method": "api-token", "token": "alice-laptop"},
        "request_id": "rid-1",
    }


def test_authorisation_names_the_principal_and_the_role() -> None:
    reader = Principal("viewer", frozenset({"reader"}), "api-token", "t")
    authorise(reader, ACTS["read"])
    with pytest.raises(NotAllowed, match=r"viewer may not promote in production: it needs"):
        authorise(reader, ACTS["promote"], environment="production")
    deployer = Principal("d", frozenset({"deployer"}), "api-token", "t")
    authorise(deployer, ACTS["promote"], environment="production")
    with pytest.raises(NotAllowed):
        authorise(deployer, ACTS["tokens"])


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    opened = TokenStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield opened  # type: ignore[misc]
    opened.close()


def test_tokens_are_random_hashed_expiring_and_revocable(store: TokenStore, tmp_path: Path) -> None:
    made = store.create("ci", identity="ci", lifetime=timedelta(hours=1), created_by="t", now=NOW)
    other = store.create("ci-2", identity="ci", created_by="t", now=NOW)
    assert made.token != other.token
    assert made.token.startswith("cvt_")
    assert len(made.token) == 47
    assert store.authenticate(made.token, now=NOW).name == "ci"
    # only the hash is stored
    rows = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT * FROM api_tokens").fetchall()
    flat = repr(rows)
    assert made.token not in flat
    assert hashlib.sha256(made.token.encode()).hexdigest() in flat
    with pytest.raises(TokenRefused, match="expired"):
        store.authenticate(made.token, now=NOW + timedelta(hours=1))
    store.revoke("ci", now=NOW)
    with pytest.raises(TokenRefused, match="revoked"):
        store.authenticate(made.token, now=NOW)
    with pytest.raises(InputError, match="exists already"):
        store.create("ci", identity="ci", created_by="t")
    with pytest.raises(InputError, match="no token named"):
        store.revoke("never")


@pytest.mark.parametrize(
    "token",
    ["", "cvt_", "cvt_" + "A" * 42, "cvt_" + "A" * 44, "x" * 10_000, "cvt_" + "A" * 42 + "\n",
     "Bearer cvt_" + "A" * 43, "cvt_" + "A" * 42 + "="],
)  # fmt: skip
def test_malformed_tokens_are_refused_before_any_lookup(store: TokenStore, token: str) -> None:
    with pytest.raises(TokenRefused, match="not a conveyor API token"):
        store.authenticate(token)


def test_unknown_token_and_bad_names(store: TokenStore) -> None:
    with pytest.raises(TokenRefused, match="unknown token"):
        store.authenticate("cvt_" + "A" * 43)
    for name in ("", "UPPER", "a b", "../x", "x" * 64):
        with pytest.raises(InputError, match="token name"):
            store.create(name, identity="ci", created_by="t")


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, timedelta(days=30)), ("12h", timedelta(hours=12)), ("P7D", timedelta(days=7))],
)
def test_token_lifetimes(text: str | None, expected: timedelta) -> None:
    assert parse_lifetime(text) == expected


@pytest.mark.parametrize("text", ["0s", "400d", "forever", "30", ""])
def test_bad_token_lifetimes(text: str) -> None:
    with pytest.raises(InputError, match="--expires"):
        parse_lifetime(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": 1, "a": 2}', "duplicate JSON key 'a'"),
        (b'{"a": {"b": 1, "b": 1}}', "duplicate JSON key 'b'"),
        (b'{"a": NaN}', "non-finite number NaN"),
        (b'{"a": -Infinity}', "non-finite number -Infinity"),
        (b"[" * 40 + b"]" * 40, "nests deeper"),
        (b"\xff", "not UTF-8"),
        (b"{", "not valid JSON"),
    ],
)
def test_strict_json_refuses(data: bytes, message: str) -> None:
    with pytest.raises(StrictJsonError) as info:
        strict_loads(data)
    assert message in str(info.value.detail)


def test_strict_json_reads_ordinary_json() -> None:
    assert strict_loads(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InputError("x"), 400),
        (ConfigError("x", ["a", "b"]), 400),
        (TokenRefused("x"), 401),
        (NotAllowed("x"), 403),
        (NotFoundError("x"), 404),
        (BodyTooLarge("x"), 413),
        (PolicyDenied("x"), 409),
        (VerificationError("x"), 409),
        (RegistryError("x"), 502),
        (LedgerError("x"), 503),
    ],
)
def test_error_classes_map_to_statuses(error: Exception, status: int) -> None:
    assert status_of(error) == status  # type: ignore[arg-type]
    response = problem(error, request_id="r")  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.media_type == "application/problem+json"


def test_a_ledger_of_schema_0001_migrates_through_0002_to_the_token_and_drift_tables(
    tmp_path: Path,
) -> None:
    import shutil

    from conveyor.ledger import open_ledger
    from conveyor.ledger.sql import SCHEMA_HEAD

    fixture = Path(__file__).resolve().parent.parent / "assets/ledger/v0001-with-replays.db"
    copy = tmp_path / "old.db"
    shutil.copyfile(fixture, copy)
    url = f"sqlite:///{copy}"
    # 0001 -> v0002 (replays marked) -> 0003 (api_tokens) -> 0004 (drift_snapshots)
    opened = TokenStore.open(url)
    try:
        created = opened.create("ci", identity="ci", lifetime=timedelta(days=1), created_by="test")
        assert opened.authenticate(created.token).identity == "ci"
    finally:
        opened.close()
    with sqlite3.connect(copy) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        drift = conn.execute("SELECT count(*) FROM drift_snapshots").fetchone()
    assert versions == [(SCHEMA_HEAD,)] == [("0004_drift_snapshots",)]
    assert drift == (0,)
    ledger = open_ledger(url)
    try:
        assert [e.occurrence for e in ledger.entries()] == [0, 0, 0, 0, 1, 1, 2, 0]
    finally:
        ledger.close()
