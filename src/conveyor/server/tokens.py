"""API tokens: 256 random bits, stored as their SHA-256, expiring, revocable, one identity each.

The table (``api_tokens``) lives in the ledger's database, created by the Alembic migration
``0003_api_tokens``; opening the ledger migrates it. This module reads and writes only that
table, with SQLAlchemy Core on its own engine for the same URL, so ``conveyor token create``
works against the database directly (an admin's bootstrap) exactly as the server does.

A token never appears in a log, an error or the table: only its name and hash do.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Engine

from conveyor.errors import ConveyorError, InputError

if TYPE_CHECKING:
    from conveyor.ledger import Database

TOKEN_PREFIX = "cvt_"  # noqa: S105 - a prefix, recognisable by secret scanners
TOKEN_BYTES = 32  # 256 bits
DEFAULT_LIFETIME = timedelta(days=30)
MAX_LIFETIME = timedelta(days=366)
MAX_TOKEN_LENGTH = 128  # anything longer is refused before it is hashed
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_TOKEN = re.compile(r"^cvt_[A-Za-z0-9_-]{43}$")

_metadata = sa.MetaData()
tokens_table = sa.Table(
    "api_tokens",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("token_sha256", sa.String(64)),
    sa.Column("identity", sa.String(64)),
    sa.Column("created_at", sa.String(32)),
    sa.Column("expires_at", sa.String(32)),
    sa.Column("revoked_at", sa.String(32)),
    sa.Column("created_by", sa.String(256)),
)


class TokenRefused(ConveyorError):
    """No token, or one that is unknown, expired, revoked or malformed (HTTP 401)."""

    exit_code = 2


@dataclass(frozen=True)
class TokenInfo:
    """What the store knows about a token; never the token itself."""

    name: str
    identity: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    created_by: str

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        moment = now or datetime.now(UTC)
        return {
            "name": self.name,
            "identity": self.identity,
            "created_at": _text(self.created_at),
            "expires_at": _text(self.expires_at),
            "revoked_at": _text(self.revoked_at) if self.revoked_at else None,
            "created_by": self.created_by,
            "state": self.state(moment),
        }


@dataclass(frozen=True)
class CreatedToken:
    token: str  # shown once, to the creator
    info: TokenInfo


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _moment(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def check_token_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            "a token name is lowercase letters, digits, '.', '_' or '-' (at most 63), "
            "starting with a letter or digit"
        )
    return name


def parse_lifetime(text: str | None) -> timedelta:
    """``--expires``: a duration such as 30d, 12h or P7D; default 30 days, at most 366."""
    from conveyor.policy.duration import parse_duration

    if text is None:
        return DEFAULT_LIFETIME
    try:
        lifetime = parse_duration(text)
    except ValueError as error:
        raise InputError(f"--expires: {error}") from error
    if lifetime <= timedelta(0):
        raise InputError("--expires: a token must live for some time (e.g. 30d)")
    if lifetime > MAX_LIFETIME:
        raise InputError("--expires: at most 366d; create a new token when it runs out")
    return lifetime


_CHECK_COLUMNS = "name, token_sha256, identity, created_at, expires_at, revoked_at, created_by"


def _check_engine(engine: Engine) -> Engine:
    """A second pool on the same database for token checks, the one statement every
    authenticated request runs: autocommit (no BEGIN before it, no ROLLBACK after it) and no
    pre-ping (a connection the database dropped fails the check, which is tried once more on
    a fresh one: the lookup only reads). The ledger's engine keeps its pre-ping and
    transactions for everything else here."""
    from conveyor.ledger.rows import BUSY_TIMEOUT_SECONDS

    postgres = engine.dialect.name == "postgresql"
    return sa.create_engine(
        engine.url,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=False,
        connect_args={"connect_timeout": 10} if postgres else {"timeout": BUSY_TIMEOUT_SECONDS},
    )


class TokenStore:
    """The ``api_tokens`` table behind a SQLAlchemy engine (SQLite or PostgreSQL).

    Nothing is remembered between checks: each reads the token's row, so a revocation or an
    expiry holds on the very next request, on every replica."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._engine = database.engine
        self._check_pool: Engine | None = None  # made by the first check (not for token list)
        self._check_lock = threading.Lock()
        # Only our own column names are interpolated; the hash travels as a parameter.
        marker = "%(digest)s" if self._engine.dialect.name == "postgresql" else ":digest"
        self._lookup_sql = f"SELECT {_CHECK_COLUMNS} FROM api_tokens WHERE token_sha256 = {marker}"  # noqa: S608

    @classmethod
    def open(cls, url: str) -> TokenStore:
        """Open the store of the ledger at ``url``; the ledger's opening creates the table."""
        from conveyor.ledger import open_database

        return cls(open_database(url))

    def close(self) -> None:
        with self._check_lock:
            if self._check_pool is not None:
                self._check_pool.dispose()
        self._engine.dispose()

    def _seam(self) -> AbstractContextManager[None]:
        return self._database.seam()

    def _check(self) -> Engine:
        with self._check_lock:
            if self._check_pool is None:
                self._check_pool = _check_engine(self._engine)
            return self._check_pool

    def ping(self) -> None:
        with self._seam(), self._engine.connect() as conn:
            conn.execute(sa.select(sa.func.count()).select_from(tokens_table)).scalar_one()

    def create(
        self,
        name: str,
        *,
        identity: str,
        lifetime: timedelta = DEFAULT_LIFETIME,
        created_by: str,
        now: datetime | None = None,
    ) -> CreatedToken:
        check_token_name(name)
        moment = now or datetime.now(UTC)
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        info = TokenInfo(name, identity, moment, moment + lifetime, None, created_by[:256])
        row = {
            "name": name,
            "token_sha256": token_hash(token),
            "identity": identity,
            "created_at": _text(info.created_at),
            "expires_at": _text(info.expires_at),
            "revoked_at": None,
            "created_by": info.created_by,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(tokens_table.insert().values(**row))
        except exc.IntegrityError as error:
            raise InputError(
                f"a token named {name!r} exists already (revoked tokens keep their name); "
                "choose another name"
            ) from error
        except exc.SQLAlchemyError:
            with self._seam():
                raise
        return CreatedToken(token, info)

    def list(self) -> list[TokenInfo]:
        with self._seam(), self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(tokens_table).order_by(tokens_table.c.created_at, tokens_table.c.name)
            ).all()
        return [self._info(row) for row in rows]

    def revoke(self, name: str, *, now: datetime | None = None) -> TokenInfo:
        check_token_name(name)
        moment = now or datetime.now(UTC)
        with self._seam(), self._engine.begin() as conn:
            row = conn.execute(
                sa.select(tokens_table).where(tokens_table.c.name == name)
            ).one_or_none()
            if row is None:
                raise InputError(f"no token named {name!r} (see conveyor token list)")
            if row.revoked_at is None:
                conn.execute(
                    tokens_table.update()
                    .where(tokens_table.c.name == name)
                    .values(revoked_at=_text(moment))
                )
        return replace_revoked(self._info(row), moment)

    def authenticate(self, token: str, *, now: datetime | None = None) -> TokenInfo:
        """The active token's record, or ``TokenRefused`` naming why (never the token)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _TOKEN.match(token):
            raise TokenRefused("bad or missing credentials: not a conveyor API token")
        digest = token_hash(token)
        with self._seam():
            row = self._lookup(digest)
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            raise TokenRefused("bad or missing credentials: unknown token")
        info = self._info(row)
        state = info.state(now or datetime.now(UTC))
        if state != "active":
            raise TokenRefused(f"bad or missing credentials: token {info.name!r} is {state}")
        return info

    def _lookup(self, digest: str) -> Any:
        """The row of the token hashed ``digest``: one statement, one round trip."""
        for attempt in (1, 2):
            try:
                with self._check().connect() as conn:
                    return conn.exec_driver_sql(self._lookup_sql, {"digest": digest}).one_or_none()
            except exc.DBAPIError as error:
                # A pooled connection the database dropped: SQLAlchemy has invalidated the
                # pool's older connections, so the second try opens a fresh one.
                if attempt == 2 or not error.connection_invalidated:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _info(row: Any) -> TokenInfo:
        return TokenInfo(
            row.name,
            row.identity,
            _moment(row.created_at),
            _moment(row.expires_at),
            _moment(row.revoked_at) if row.revoked_at else None,
            row.created_by,
        )


def replace_revoked(info: TokenInfo, moment: datetime) -> TokenInfo:
    if info.revoked_at is not None:
        return info
    return TokenInfo(
        info.name, info.identity, info.created_at, info.expires_at, moment, info.created_by
    )


def check_bindable(config: Any, identity: str) -> None:
    """A token is bound to one identity of conveyor.yaml that is not the server."""
    found = config.identities.get(identity)
    if found is None:
        known = ", ".join(sorted(config.identities))
        raise InputError(f"unknown identity {identity!r}; {config.path.name} defines: {known}")
    if any(str(role) == "server" for role in found.roles):
        raise InputError(f"{identity!r} is the server's identity; a token cannot act as it")


# --- an admin's bootstrap: the ledger database directly (conveyor token …, no --server) -------


@contextmanager
def direct_store(config_path: str | Path | None) -> Iterator[tuple[TokenStore, Any]]:
    """The token store of the ledger conveyor.yaml (or CONVEYOR_DB) names, and the config."""
    from conveyor.policy.config import find_config, load_config

    config = load_config(find_config(config_path))
    store = TokenStore.open(config.ledger_url)
    try:
        yield store, config
    finally:
        store.close()


def create_direct(
    config_path: str | Path | None, name: str, *, identity: str, expires: str | None
) -> CreatedToken:
    lifetime = parse_lifetime(expires)
    with direct_store(config_path) as (store, config):
        check_bindable(config, identity)
        return store.create(
            name, identity=identity, lifetime=lifetime, created_by="conveyor token create"
        )


def list_direct(config_path: str | Path | None) -> list[dict[str, Any]]:
    with direct_store(config_path) as (store, _config):
        return [info.to_dict() for info in store.list()]


def revoke_direct(config_path: str | Path | None, name: str) -> None:
    with direct_store(config_path) as (store, _config):
        store.revoke(name)
