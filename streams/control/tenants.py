"""Tenants: the customers every file, record, key and connector belongs to.

A tenant is created by the operator (API or ``callstream tenants create``) or comes from the
config file (``origin = "config"``, recorded at start by :func:`sync_config_tenants`). Disabling
a tenant stops its connectors (the runner reads :func:`enabled_ids`) and makes its API keys fail
(:mod:`streams.control.keys` checks the tenant's status on every call). Nothing is deleted: a
disabled tenant keeps its data and can be enabled again.

Settings of a tenant (``PATCH /v1/tenant``): ``timezone``, the IANA zone its jobs default to,
``notification_emails``, who gets failure notices (:mod:`streams.notify`), and ``redaction``,
how card numbers, e-mails and phone numbers in its turns are protected
(:class:`~streams.redact.RedactionSettings`, stored as JSON). The columns are nullable so a
database from before them needs no rewrite: NULL reads as "UTC", "nobody" and the default
redaction (``redact``).

A config-file tenant's redaction is the config file's: :func:`update_settings` refuses to change
it (:class:`ConflictError` naming ``redaction``) and :func:`shown` reports the configured one,
whatever the column holds. The running service applies a change at once in the process that
made it (:meth:`Redactors.use <streams.redact.Redactors.use>`) and in every other within
``runner.reconcile_interval_seconds`` (the connector catalog reloads :func:`redaction_settings`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, EmailStr, Field, ValidationError
from sqlalchemy import Column, DateTime, String, Table, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.clock import known_zone
from streams.control import audit
from streams.control.errors import ConflictError, NotFoundError
from streams.control.text import Line
from streams.db import insert_ignore, metadata
from streams.redact import RedactionSettings, Redactors

log = logging.getLogger(__name__)
_unreadable: set[tuple[str, str]] = set()  # (tenant, stored value) already logged

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
    Column("timezone", String(64)),  # IANA name; NULL: UTC
    Column("notification_emails", Text),  # JSON list of addresses; NULL: none
    Column("redaction", Text),  # JSON RedactionSettings; NULL: the default (redact)
)

DEFAULT_TIMEZONE = "UTC"
MAX_NOTIFICATION_EMAILS = 20


TimeZoneName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="IANA time zone name; the default of the tenant's jobs.",
        examples=["Asia/Kolkata"],
    ),
    AfterValidator(known_zone),
]


class TenantIn(BaseModel):
    """A tenant to create."""

    id: TenantId
    name: Line = Field(max_length=200, description="Display name.")


class TenantPatch(BaseModel):
    """Tenant settings to change; fields left out keep their value."""

    timezone: TimeZoneName | None = None
    notification_emails: list[EmailStr] | None = Field(
        None,
        max_length=MAX_NOTIFICATION_EMAILS,
        description="Who gets failure notices (at most 20 addresses; [] for nobody).",
        examples=[["ops@example.com"]],
    )
    redaction: RedactionSettings | None = Field(
        None,
        description="How card numbers, e-mails and phone numbers in the tenant's turns are "
        "protected; fields left out keep their value. A config-file tenant's is the config "
        "file's: changing it here is refused (409).",
        examples=[{"policy": "hash"}],
    )


class Tenant(BaseModel):
    """A tenant."""

    id: str = Field(description="Tenant id.")
    name: str = Field(description="Display name.")
    status: TenantStatus = Field(description="disabled: connectors stopped, API keys refused.")
    origin: Literal["api", "config"] = Field(description="Where the tenant was defined.")
    created_at: dt.datetime
    updated_at: dt.datetime
    timezone: str = Field(DEFAULT_TIMEZONE, description="IANA time zone, default of its jobs.")
    notification_emails: list[str] = Field(
        default_factory=list, description="Who gets failure notices."
    )
    redaction: RedactionSettings = Field(
        default_factory=RedactionSettings,
        description="How card numbers, e-mails and phone numbers in the tenant's turns are "
        "protected before publishing (a config-file tenant: as the config file says).",
    )


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def _tenant(row: object) -> Tenant:
    m = dict(row._mapping)  # type: ignore[attr-defined]
    m["timezone"] = m.get("timezone") or DEFAULT_TIMEZONE
    m["notification_emails"] = _emails(m.get("notification_emails"))
    m["redaction"] = _redaction(m["id"], m.get("redaction")) or RedactionSettings()
    return Tenant.model_validate(m)


def _redaction(tenant: str, stored: str | None) -> RedactionSettings | None:
    """Read a stored redaction column; an unreadable one (edited by hand) is logged and read as
    unset, so the tenant gets the default policy (redact), never less."""
    if not stored:
        return None
    try:
        return RedactionSettings.model_validate_json(stored)
    except ValidationError as exc:
        if (tenant, stored) not in _unreadable:
            _unreadable.add((tenant, stored))
            log.error(
                "tenant %s: the stored redaction settings are invalid, using the default: %s",
                tenant,
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_url=False, include_input=False)
                ),
            )
        return None


def shown(tenant: Tenant, redactors: Redactors) -> Tenant:
    """Return ``tenant`` with the config file's redaction when it is a config-file tenant."""
    configured = redactors.configured(tenant.id)
    if configured is None:
        return tenant
    return tenant.model_copy(update={"redaction": configured})


def _emails(stored: str | None) -> list[str]:
    return [str(e) for e in json.loads(stored)] if stored else []


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


async def update_settings(
    engine: AsyncEngine,
    tenant_id: str,
    patch: TenantPatch,
    actor: str,
    now: dt.datetime,
    redactors: Redactors | None = None,
) -> Tenant:
    """Change a tenant's settings (fields set in ``patch``); :class:`NotFoundError` if none.

    Addresses are stored lowercased and without duplicates, in the order given. ``redaction``
    is merged into the stored settings (fields left out keep their value) and applied to
    ``redactors`` once committed; :class:`ConflictError` when ``redactors`` holds the config
    file's settings of the tenant.
    """
    if (
        patch.redaction is not None
        and redactors is not None
        and redactors.configured(tenant_id) is not None
    ):
        raise ConflictError(
            f"tenant {tenant_id!r} takes its redaction from the config file: edit "
            "tenants[].redaction there (and restart callstream) to change it",
            field="redaction",
        )
    values: dict[str, object] = {}
    changed: dict[str, object] = {}
    if patch.timezone is not None:
        values["timezone"] = changed["timezone"] = patch.timezone
    if patch.notification_emails is not None:
        emails = list(dict.fromkeys(str(e).lower() for e in patch.notification_emails))
        values["notification_emails"] = json.dumps(emails)
        changed["notification_emails"] = emails
    async with engine.begin() as conn:
        redaction = None
        if patch.redaction is not None:
            redaction = await _merged_redaction(conn, tenant_id, patch.redaction)
            values["redaction"] = redaction.model_dump_json()
            changed["redaction"] = redaction.model_dump()
        result = await conn.execute(
            update(tenants).where(tenants.c.id == tenant_id).values(**values, updated_at=now)
        )
        if result.rowcount == 0:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        await audit.record(
            conn,
            tenant=tenant_id,
            actor=actor,
            action="update",
            resource="tenant",
            resource_id=tenant_id,
            detail=changed,
            at=now,
        )
        tenant = await get(conn, tenant_id)
    if redaction is not None and redactors is not None:
        redactors.use(tenant_id, redaction)
    return tenant


async def _merged_redaction(
    conn: AsyncConnection, tenant_id: str, patch: RedactionSettings
) -> RedactionSettings:
    """Return the stored settings with the fields given in ``patch`` replaced (row locked)."""
    stored = (
        await conn.execute(
            select(tenants.c.redaction).where(tenants.c.id == tenant_id).with_for_update()
        )
    ).scalar_one_or_none()
    current = _redaction(tenant_id, stored) or RedactionSettings()
    given = {name: getattr(patch, name) for name in patch.model_fields_set}
    return RedactionSettings.model_validate({**current.model_dump(), **given})


async def redaction_settings(conn: AsyncConnection) -> dict[str, RedactionSettings]:
    """Return the redaction settings stored through the API, by tenant (unset ones left out)."""
    rows = await conn.execute(
        select(tenants.c.id, tenants.c.redaction).where(tenants.c.redaction.is_not(None))
    )
    out = {}
    for row in rows:
        found = _redaction(row.id, row.redaction)
        if found is not None:
            out[row.id] = found
    return out


async def tenant_zone(conn: AsyncConnection, tenant: str) -> zoneinfo.ZoneInfo:
    """Return the tenant's time zone (UTC when unset or when the tenant does not exist)."""
    name = (
        await conn.execute(select(tenants.c.timezone).where(tenants.c.id == tenant))
    ).scalar_one_or_none()
    return zoneinfo.ZoneInfo(name or DEFAULT_TIMEZONE)


async def notification_emails(conn: AsyncConnection, tenant: str) -> list[str]:
    """Return the addresses that get the tenant's failure notices (empty: nobody)."""
    stored = (
        await conn.execute(select(tenants.c.notification_emails).where(tenants.c.id == tenant))
    ).scalar_one_or_none()
    return _emails(stored)


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
