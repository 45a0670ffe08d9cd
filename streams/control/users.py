"""Users of a tenant: a name and an e-mail address that must be verified before mail goes to it.

A user is created by a tenant's API key; creating one (or asking again) issues a verification
link ``<public base>/v1/email-verification?token=<token>`` mailed to the address. The token reads
``<user_id>.<secret>`` (``secret``: 32 random bytes, URL-safe base64): the user id finds the row,
and only SHA-256 of the whole token is stored with its expiry (24 hours by the service clock), so
a token verifies only its own user and is compared in constant time. A link works once; asking
for a new one replaces the previous token.

An API key may belong to a user (:mod:`streams.control.keys`): :func:`verified_email` is the
address mail "to the caller" may go to. A user whose active keys still point at it cannot be
deleted (revoke them first).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, EmailStr, Field
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    String,
    Table,
    UniqueConstraint,
    and_,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.control import audit
from streams.control.errors import ConflictError, NotFoundError
from streams.control.listing import utc
from streams.control.tenants import get as get_tenant
from streams.control.text import Line
from streams.db import metadata

TOKEN_LIFETIME = dt.timedelta(hours=24)
_USER_ID = re.compile(r"^usr_[0-9a-f]{16}$")
_TOKEN = re.compile(r"^(usr_[0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")

users = Table(
    "users",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False),  # lowercased
    Column("verified_at", DateTime(timezone=True)),
    Column("token_hash", String(64)),  # SHA-256 of the pending verification token
    Column("token_expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
    UniqueConstraint("tenant", "email", name="uq_users_tenant_email"),
    Index("ix_users_tenant_created", "tenant", "created_at", "id"),
)


class UserIn(BaseModel):
    """A user to create: a verification link is mailed to ``email``."""

    name: Line = Field(max_length=200, description="Display name.", examples=["Priya Shah"])
    email: EmailStr = Field(description="Address to verify (unique in the tenant).")


class User(BaseModel):
    """A user of the tenant."""

    id: str = Field(description="User id (usr_...).")
    name: str
    email: str = Field(description="Lowercased address.")
    verified: bool = Field(description="The address was confirmed through its link.")
    verified_at: dt.datetime | None = None
    verification_expires_at: dt.datetime | None = Field(
        None, description="When the pending link expires (null: none pending)."
    )
    created_at: dt.datetime
    created_by: str


class TokenRefused(Exception):
    """A verification token is unknown, used or expired; ``expired`` tells which."""

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Link:
    """A fresh verification token for ``user`` (mail it; it is not stored)."""

    user: User
    token: str


def hash_token(token: str) -> str:
    """Return the stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(user_id: str) -> str:
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return f"{user_id}.{secret}"


def _user(row: Any) -> User:
    m = row._mapping
    return User(
        id=m["id"],
        name=m["name"],
        email=m["email"],
        verified=m["verified_at"] is not None,
        verified_at=utc(m["verified_at"]) if m["verified_at"] else None,
        verification_expires_at=(
            utc(m["token_expires_at"]) if m["token_hash"] and m["token_expires_at"] else None
        ),
        created_at=utc(m["created_at"]),
        created_by=m["created_by"],
    )


async def create(
    engine: AsyncEngine, tenant: str, data: UserIn, actor: str, now: dt.datetime
) -> Link:
    """Create an unverified user with a fresh token; :class:`ConflictError` when the address is
    taken in the tenant."""
    user_id = f"usr_{secrets.token_hex(8)}"
    token = _new_token(user_id)
    email = str(data.email).lower()
    values = {
        "id": user_id,
        "tenant": tenant,
        "name": data.name,
        "email": email,
        "verified_at": None,
        "token_hash": hash_token(token),
        "token_expires_at": now + TOKEN_LIFETIME,
        "created_at": now,
        "created_by": actor,
    }
    try:
        async with engine.begin() as conn:
            await get_tenant(conn, tenant)
            await conn.execute(users.insert().values(**values))
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="create",
                resource="user",
                resource_id=user_id,
                detail={"name": data.name, "email": email},
                at=now,
            )
    except IntegrityError as exc:
        raise ConflictError(f"a user with the address {email!r} already exists") from exc
    return Link(_user(_Row(values)), token)


class _Row:
    """A mapping dressed as a result row, for :func:`_user`."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping


async def _row(conn: AsyncConnection, tenant: str, user_id: str) -> Any:
    row = (
        await conn.execute(select(users).where(users.c.id == user_id, users.c.tenant == tenant))
    ).first()
    if row is None:
        raise NotFoundError(f"no user {user_id!r}")
    return row


async def get(conn: AsyncConnection, tenant: str, user_id: str) -> User:
    """Return one of ``tenant``'s users; :class:`NotFoundError` otherwise."""
    return _user(await _row(conn, tenant, user_id))


async def list_page(
    conn: AsyncConnection, tenant: str, limit: int, after: tuple[dt.datetime, str] | None
) -> tuple[list[User], list[Any] | None]:
    """One page of ``tenant``'s users, oldest first, and the next cursor key."""
    t = users.c
    stmt = select(users).where(t.tenant == tenant)
    if after is not None:
        stmt = stmt.where(
            or_(t.created_at > after[0], and_(t.created_at == after[0], t.id > after[1]))
        )
    rows = (await conn.execute(stmt.order_by(t.created_at, t.id).limit(limit + 1))).all()
    items = [_user(r) for r in rows[:limit]]
    more = len(rows) > limit
    return items, ([items[-1].created_at.isoformat(), items[-1].id] if more else None)


async def new_link(
    engine: AsyncEngine, tenant: str, user_id: str, actor: str, now: dt.datetime
) -> Link:
    """Issue a new token for a user (the previous one stops working)."""
    token = _new_token(user_id)
    async with engine.begin() as conn:
        await _row(conn, tenant, user_id)
        await conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(token_hash=hash_token(token), token_expires_at=now + TOKEN_LIFETIME)
        )
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="send_verification",
            resource="user",
            resource_id=user_id,
            at=now,
        )
        return Link(await get(conn, tenant, user_id), token)


async def verify(engine: AsyncEngine, token: str, now: dt.datetime) -> User:
    """Mark the address of the token's user verified; :class:`TokenRefused` otherwise.

    The stored hash is compared in constant time; a used token is unknown (it was cleared).
    """
    unknown = TokenRefused(
        "unknown or already used verification link: ask for a new one", expired=False
    )
    match = _TOKEN.match(token)
    if match is None:
        raise unknown
    user_id = match.group(1)
    async with engine.begin() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        stored = row.token_hash if row is not None and row.token_hash else hash_token("")
        if not hmac.compare_digest(hash_token(token), stored) or row is None:
            raise unknown
        if row.token_expires_at is None or utc(row.token_expires_at) <= now:
            raise TokenRefused(
                "this verification link has expired: ask for a new one", expired=True
            )
        used = await conn.execute(
            update(users)
            .where(users.c.id == user_id, users.c.token_hash == row.token_hash)
            .values(verified_at=now, token_hash=None, token_expires_at=None)
        )
        if used.rowcount != 1:  # a concurrent click used it first
            raise unknown
        await audit.record(
            conn,
            tenant=row.tenant,
            actor=f"user:{user_id}",
            action="verify",
            resource="user",
            resource_id=user_id,
            detail={"email": row.email},
            at=now,
        )
        return await get(conn, row.tenant, user_id)


async def delete(engine: AsyncEngine, tenant: str, user_id: str, actor: str) -> None:
    """Delete a user; :class:`ConflictError` while active API keys belong to it."""
    from streams.control.keys import active_keys_of  # keys import this module

    async with engine.begin() as conn:
        row = await _row(conn, tenant, user_id)
        held = await active_keys_of(conn, tenant, user_id)
        if held:
            raise ConflictError(
                f"user {user_id!r} still has active API keys {held}: revoke them first"
            )
        await conn.execute(users.delete().where(users.c.id == user_id))
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="delete",
            resource="user",
            resource_id=user_id,
            detail={"email": row.email},
        )


async def verified_email(conn: AsyncConnection, tenant: str, user_id: str) -> str | None:
    """Return the user's address if it is verified, else None (also for no such user)."""
    if not _USER_ID.match(user_id):
        return None
    row = (
        await conn.execute(
            select(users.c.email, users.c.verified_at).where(
                users.c.id == user_id, users.c.tenant == tenant
            )
        )
    ).first()
    return str(row.email) if row is not None and row.verified_at is not None else None
