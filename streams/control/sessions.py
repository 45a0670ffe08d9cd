"""Web console sessions, kept server side: the cookie holds a random id, the table its hash.

A session acts for one API key (its tenant) or for the operator. It ends on sign-out, after
``console.session_idle_minutes`` without a request, ``console.session_max_hours`` after sign-in,
and at once when its key is revoked, its tenant disabled or the operator token changed: every
request checks the credential again (:func:`load`). The CSRF token is per session and compared
in constant time. A flash message (one line shown on the next page) rides on the row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.control.keys import api_keys
from streams.control.tenants import tenants
from streams.db import metadata

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("tenant", String(64)),
    Column("key_id", String(12)),
    Column("operator", Boolean, nullable=False),
    Column("operator_hash", String(64)),  # sha256 of the operator token signed in with
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("flash", Text),
)


@dataclass(frozen=True, slots=True)
class Session:
    """A live console session."""

    session_hash: str
    tenant: str | None
    """The tenant it acts for (an operator session: the tenant opened, if any)."""
    key_id: str | None
    operator: bool
    csrf_token: str
    flash: str | None
    user_id: str | None = None
    """The user the session's API key acts for (None: a key of no user, or the operator)."""

    def csrf_ok(self, token: str | None) -> bool:
        """True when ``token`` is this session's CSRF token (constant-time comparison)."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token.encode())


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def create(
    engine: AsyncEngine,
    *,
    now: dt.datetime,
    max_age: dt.timedelta,
    tenant: str | None,
    key_id: str | None,
    operator_token: str | None = None,
) -> str:
    """Store a new session and return the cookie value (stored hashed).

    ``operator_token``: set for an operator session (only its hash is kept).
    """
    cookie = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))
        await conn.execute(
            insert(console_sessions).values(
                session_hash=_hash(cookie),
                tenant=tenant,
                key_id=key_id,
                operator=operator_token is not None,
                operator_hash=None if operator_token is None else _hash(operator_token),
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                last_seen_at=now,
                expires_at=now + max_age,
            )
        )
    return cookie


def _credential_holds(row: Any, operator_token: str | None) -> bool:
    """Whether the session's credential still holds (``row``: :data:`_WITH_CREDENTIAL`)."""
    if row.operator:
        stored = row.operator_hash or ""
        return operator_token is not None and hmac.compare_digest(stored, _hash(operator_token))
    return bool(row.key_status == "active" and row.tenant_status == "active")


_WITH_CREDENTIAL = select(
    console_sessions,
    api_keys.c.status.label("key_status"),
    api_keys.c.user_id,
    tenants.c.status.label("tenant_status"),
).select_from(
    console_sessions.outerjoin(api_keys, api_keys.c.key_id == console_sessions.c.key_id).outerjoin(
        tenants, tenants.c.id == api_keys.c.tenant
    )
)
"""A session with its key's and tenant's status, in one query."""


async def load(
    engine: AsyncEngine,
    cookie: str | None,
    *,
    now: dt.datetime,
    idle: dt.timedelta,
    operator_token: str | None,
) -> Session | None:
    """Return the live session of ``cookie`` and mark it used, else None (and forget it).

    ``operator_token``: the current one (None: unset); an operator session lives only while
    it is the token the session signed in with.
    """
    if not cookie:
        return None
    key = _hash(cookie)
    async with engine.connect() as conn:
        query = _WITH_CREDENTIAL.where(console_sessions.c.session_hash == key)
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    expired = _aware(row.expires_at) <= now or _aware(row.last_seen_at) + idle <= now
    if expired or not _credential_holds(row, operator_token):
        await end(engine, cookie)
        return None
    async with engine.begin() as conn:
        await conn.execute(
            update(console_sessions)
            .where(console_sessions.c.session_hash == key)
            .values(last_seen_at=now, flash=None)
        )
    user_id = None if row.operator else row.user_id
    return Session(key, row.tenant, row.key_id, row.operator, row.csrf_token, row.flash, user_id)


async def set_flash(engine: AsyncEngine, session: Session, message: str) -> None:
    """Keep ``message`` for the next page this session shows."""
    async with engine.begin() as conn:
        await conn.execute(
            update(console_sessions)
            .where(console_sessions.c.session_hash == session.session_hash)
            .values(flash=message[:500])
        )


async def open_tenant(engine: AsyncEngine, session: Session, tenant: str | None) -> None:
    """Point an operator session at ``tenant`` (None: back to the tenants list)."""
    if not session.operator:
        raise PermissionError("only operator sessions choose a tenant")
    async with engine.begin() as conn:
        await conn.execute(
            update(console_sessions)
            .where(console_sessions.c.session_hash == session.session_hash)
            .values(tenant=tenant)
        )


async def end(engine: AsyncEngine, cookie: str) -> None:
    """Forget the session of ``cookie`` (sign-out)."""
    async with engine.begin() as conn:
        await conn.execute(
            delete(console_sessions).where(console_sessions.c.session_hash == _hash(cookie))
        )
