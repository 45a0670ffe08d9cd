"""Tenants: the customers every file, record, key and connector belongs to.

A tenant is created by the operator (API or ``callstream tenants create``) or comes from the
config file (``origin = "config"``, recorded at start by :func:`sync_config_tenants`). Disabling
a tenant stops its connectors (the runner reads :func:`enabled_ids`) and makes its API keys fail
(:mod:`streams.control.keys` checks the tenant's status on every call). Nothing is deleted: a
disabled tenant keeps its data and can be enabled again.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Column, DateTime, String, Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.control import audit
from streams.control.errors import ConflictError, NotFoundError
from streams.control.text import Line
from streams.db import insert_ignore, metadata

TenantId = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Lowercase letters, digits, '_' and '-'; used in keys and folder names.",
        examples=["acme"],
    ),
]
TenantStatus = Literal["active", "disabled"]

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("origin", String(16), nullable=False),  # "api" or "config"
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class TenantIn(BaseModel):
    """A tenant to create."""

    id: TenantId
    name: Line = Field(max_length=200, description="Display name.")


class Tenant(BaseModel):
    """A tenant."""

    id: str = Field(description="Tenant id.")
    name: str = Field(description="Display name.")
    status: TenantStatus = Field(description="disabled: connectors stopped, API keys refused.")
    origin: Literal["api", "config"] = Field(description="Where the tenant was defined.")
    created_at: dt.datetime
    updated_at: dt.datetime


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def _tenant(row: object) -> Tenant:
    return Tenant.model_validate(row, from_attributes=True)


async def create(engine: AsyncEngine, data: TenantIn, actor: str) -> Tenant:
    """Create an active tenant; :class:`ConflictError` when the id is taken."""
    now = utcnow()
    values = {
        "id": data.id,
        "name": data.name,
        "status": "active",
        "origin": "api",
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with engine.begin() as conn:
            await conn.execute(tenants.insert().values(**values))
            await audit.record(
                conn,
                tenant=data.id,
                actor=actor,
                action="create",
                resource="tenant",
                resource_id=data.id,
                detail={"name": data.name},
                at=now,
            )
    except IntegrityError as exc:
        raise ConflictError(f"tenant {data.id!r} already exists") from exc
    return Tenant.model_validate(values)


async def get(conn: AsyncConnection, tenant_id: str) -> Tenant:
    """Return a tenant; :class:`NotFoundError` when there is none."""
    row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
    if row is None:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    return _tenant(row)


async def list_all(
    conn: AsyncConnection, after: str | None = None, limit: int = 100
) -> list[Tenant]:
    """Return tenants ordered by id, after ``after``."""
    stmt = select(tenants).order_by(tenants.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(tenants.c.id > after)
    return [_tenant(r) for r in await conn.execute(stmt)]


async def set_status(
    engine: AsyncEngine, tenant_id: str, status: TenantStatus, actor: str
) -> Tenant:
    """Enable or disable a tenant (recorded in the audit trail)."""
    now = utcnow()
    async with engine.begin() as conn:
        result = await conn.execute(
            update(tenants).where(tenants.c.id == tenant_id).values(status=status, updated_at=now)
        )
        if result.rowcount == 0:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        await audit.record(
            conn,
            tenant=tenant_id,
            actor=actor,
            action="enable" if status == "active" else "disable",
            resource="tenant",
            resource_id=tenant_id,
            at=now,
        )
        return await get(conn, tenant_id)


async def sync_config_tenants(engine: AsyncEngine, ids: list[str]) -> None:
    """Record the config file's tenants (active) when they are not in the table yet."""
    if not ids:
        return
    now = utcnow()
    stmt = insert_ignore(engine, tenants, ["id"])
    async with engine.begin() as conn:
        await conn.execute(
            stmt,
            [
                {
                    "id": i,
                    "name": i,
                    "status": "active",
                    "origin": "config",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in ids
            ],
        )


async def enabled_ids(conn: AsyncConnection) -> set[str]:
    """Return the ids of the active tenants."""
    rows = await conn.execute(select(tenants.c.id).where(tenants.c.status == "active"))
    return {r.id for r in rows}
