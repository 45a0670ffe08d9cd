"""The audit trail: who changed what in the control plane, and when.

Every change made through the API or the CLI is recorded in ``audit_log`` in the same
transaction as the change itself, so the trail never misses a change nor records one that was
rolled back. ``detail`` is JSON and never holds a secret (connector secrets are recorded as
"changed", not as values).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.db import metadata

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", String(64)),  # null: an operator action on no tenant
    Column("actor", String(100), nullable=False),  # "operator", "key:<id>", "cli"
    Column("action", String(64), nullable=False),  # "create", "update", "delete", "revoke", ...
    Column("resource", String(64), nullable=False),  # "tenant", "api_key", "connector", ...
    Column("resource_id", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("detail", Text),
    Index("ix_audit_log_tenant_resource", "tenant", "resource", "resource_id"),
)


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


async def record(
    conn: AsyncConnection,
    *,
    tenant: str | None,
    actor: str,
    action: str,
    resource: str,
    resource_id: str,
    detail: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Add one entry to the trail, inside the caller's transaction."""
    await conn.execute(
        audit_log.insert().values(
            tenant=tenant,
            actor=actor,
            action=action,
            resource=resource,
            resource_id=resource_id,
            at=at or utcnow(),
            detail=json.dumps(detail, sort_keys=True, default=str) if detail else None,
        )
    )


async def entries(
    conn: AsyncConnection, tenant: str, resource: str, resource_id: str
) -> list[dict[str, Any]]:
    """Return one resource's trail, oldest first."""
    rows = await conn.execute(
        select(audit_log)
        .where(
            audit_log.c.tenant == tenant,
            audit_log.c.resource == resource,
            audit_log.c.resource_id == resource_id,
        )
        .order_by(audit_log.c.id)
    )
    return [
        {**row._mapping, "detail": json.loads(row.detail) if row.detail else None} for row in rows
    ]
