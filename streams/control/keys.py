"""Per-tenant API keys: high-entropy, stored only as a hash, compared in constant time.

A key reads ``csk_<key_id>_<secret>``: ``key_id`` (12 hex characters) is public and finds the
row; ``secret`` is 32 random bytes (URL-safe base64). Only SHA-256 of the whole key is stored:
with 256 bits of entropy a fast hash is as safe as a slow one and keeps every request cheap.
The full key is returned once, at creation.

At most :data:`MAX_ACTIVE_KEYS` keys per tenant are active. The limit holds under concurrent
creations without locks: an active key holds a slot (1 or 2) that is unique per tenant, and
a revoked key gives its slot up (NULL), so a third concurrent insert fails on the constraint.

:func:`authenticate` refuses unknown, malformed and revoked keys and keys of disabled tenants
alike (the caller answers 401 without saying which). ``last_used_at`` is written at most once a
minute per key, so authentication is not a write per request.

A key may belong to a user of its tenant (``user_id``, :mod:`streams.control.users`): calls made
with it act for that user (mail "to me" goes to the user's verified address).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field
from sqlalchemy import Column, DateTime, Integer, String, Table, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.control import audit, users
from streams.control.errors import ConflictError, NotFoundError
from streams.control.tenants import get as get_tenant
from streams.control.tenants import tenants
from streams.control.text import Line
from streams.db import metadata

MAX_ACTIVE_KEYS = 2
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
_KEY = re.compile(r"^csk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(12), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("hint", String(4), nullable=False),  # the key's last 4 characters, for the mask
    Column("status", String(16), nullable=False),
    Column("slot", Integer),  # 1..MAX_ACTIVE_KEYS while active, NULL once revoked
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("user_id", String(20)),  # the user the key acts for (streams.control.users)
    UniqueConstraint("tenant", "slot", name="uq_api_keys_active_slot"),
)


class ApiKeyIn(BaseModel):
    """A key to create."""

    name: Line = Field(max_length=100, description="What the key is for.")
    user_id: str | None = Field(
        None,
        max_length=20,
        description="The user of this tenant the key acts for (404 when there is none).",
        examples=["usr_0123456789abcdef"],
    )


class ApiKey(BaseModel):
    """An API key as listed: never the key itself."""

    key_id: str = Field(description="Public id of the key.")
    name: str
    status: Literal["active", "revoked"]
    masked_key: str = Field(description="The key with its secret hidden, e.g. csk_1a2b…_****wXyZ.")
    masked_account_id: str = Field(description="The tenant id, partly hidden.")
    user_id: str | None = Field(None, description="The user the key acts for.")
    created_at: dt.datetime
    last_used_at: dt.datetime | None = Field(None, description="Last authenticated call (±1 min).")
    revoked_at: dt.datetime | None = None


class ApiKeyCreated(ApiKey):
    """A new key: ``key`` is shown this once and cannot be retrieved again."""

    key: str = Field(description="The full key: send it as 'Authorization: Bearer <key>'.")


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def hash_key(key: str) -> str:
    """Return the stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def mask_account(tenant: str) -> str:
    """Hide most of a tenant id: ``acme-corp`` -> ``ac*****rp``."""
    if len(tenant) <= 4:
        return tenant[0] + "*" * (len(tenant) - 1)
    return tenant[:2] + "*" * (len(tenant) - 4) + tenant[-2:]


def _listed(row: object) -> ApiKey:
    m = row._mapping  # type: ignore[attr-defined]
    return ApiKey(
        key_id=m["key_id"],
        name=m["name"],
        status=m["status"],
        masked_key=f"csk_{m['key_id']}_****{m['hint']}",
        masked_account_id=mask_account(m["tenant"]),
        user_id=m.get("user_id"),
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


def new_key() -> tuple[str, str]:
    """Return (key_id, full key) for a fresh key."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key_id, f"csk_{key_id}_{secret}"


async def create(engine: AsyncEngine, tenant: str, data: ApiKeyIn, actor: str) -> ApiKeyCreated:
    """Create an active key for ``tenant``; :class:`ConflictError` when it has 2 active keys."""
    key_id, key = new_key()
    now = utcnow()
    for slot in range(1, MAX_ACTIVE_KEYS + 1):
        values = {
            "key_id": key_id,
            "tenant": tenant,
            "name": data.name,
            "key_hash": hash_key(key),
            "hint": key[-4:],
            "status": "active",
            "slot": slot,
            "created_at": now,
            "created_by": actor,
            "user_id": data.user_id,
        }
        try:
            async with engine.begin() as conn:
                await get_tenant(conn, tenant)
                if data.user_id is not None:
                    await users.get(conn, tenant, data.user_id)
                await conn.execute(api_keys.insert().values(**values))
                await audit.record(
                    conn,
                    tenant=tenant,
                    actor=actor,
                    action="create",
                    resource="api_key",
                    resource_id=key_id,
                    detail={"name": data.name},
                    at=now,
                )
        except IntegrityError:
            continue  # that slot is held by an active key: try the next
        listed = _listed(_Row({**values, "last_used_at": None, "revoked_at": None}))
        return ApiKeyCreated(**listed.model_dump(), key=key)
    raise ConflictError(
        f"tenant {tenant!r} already has {MAX_ACTIVE_KEYS} active API keys: revoke one "
        "before creating another"
    )


class _Row:
    """A mapping dressed as a result row, for :func:`_listed`."""

    def __init__(self, mapping: dict[str, object]) -> None:
        self._mapping = mapping


async def list_keys(conn: AsyncConnection, tenant: str) -> list[ApiKey]:
    """Return a tenant's keys, newest first (active and revoked)."""
    rows = await conn.execute(
        select(api_keys)
        .where(api_keys.c.tenant == tenant)
        .order_by(api_keys.c.created_at.desc(), api_keys.c.key_id)
    )
    return [_listed(r) for r in rows]


async def revoke(engine: AsyncEngine, tenant: str, key_id: str, actor: str) -> ApiKey:
    """Revoke a tenant's key (idempotent); :class:`NotFoundError` for another tenant's key."""
    now = utcnow()
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.tenant == tenant)
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}")
        if row.status == "active":
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(status="revoked", slot=None, revoked_at=now)
            )
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="revoke",
                resource="api_key",
                resource_id=key_id,
                at=now,
            )
        row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).one()
        return _listed(row)


class KeyOwner(NamedTuple):
    """Who an authenticated key belongs to."""

    tenant: str
    key_id: str
    user_id: str | None


async def active_keys_of(conn: AsyncConnection, tenant: str, user_id: str) -> list[str]:
    """Return the ids of the active keys acting for ``user_id``."""
    rows = await conn.execute(
        select(api_keys.c.key_id).where(
            api_keys.c.tenant == tenant,
            api_keys.c.user_id == user_id,
            api_keys.c.status == "active",
        )
    )
    return sorted(r.key_id for r in rows)


async def authenticate(engine: AsyncEngine, key: str) -> KeyOwner | None:
    """Return the owner of an active key of an active tenant, else None.

    The stored hash is compared in constant time; a malformed key is refused before any query.
    """
    match = _KEY.match(key)
    if match is None:
        return None
    key_id = match.group(1)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(api_keys, tenants.c.status.label("tenant_status"))
                .join(tenants, tenants.c.id == api_keys.c.tenant)
                .where(api_keys.c.key_id == key_id)
            )
        ).first()
    if row is None:
        hmac.compare_digest(hash_key(key), hash_key(""))  # same work for unknown ids
        return None
    if not hmac.compare_digest(hash_key(key), row.key_hash):
        return None
    if row.status != "active" or row.tenant_status != "active":
        return None
    now = utcnow()
    if row.last_used_at is None or now - _aware(row.last_used_at) >= LAST_USED_RESOLUTION:
        async with engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.key_id == key_id).values(last_used_at=now)
            )
    return KeyOwner(row.tenant, key_id, row.user_id)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
