"""Jobs: a schedule that links connectors to a recurring data import or report export.

A ``data_import`` job names one import connector (``conn_...`` or a config file's ``cfg_...``):
while the job is enabled, that connector no longer announces files as they arrive but at the
job's times (files uploaded after a run's pick-up time wait for the next run; seed 002). A
``data_export`` job names one to ten export connectors (``exp_...``) and the report to build
(:class:`~streams.exports.report.ReportParams`). Only connectors of the matching direction and
of the caller's tenant are accepted (anyone else's is "no such connector").

Times follow :mod:`streams.schedule`; the time zone defaults to the tenant's. ``armed_at`` is
when the job was created or last enabled: occurrences before it never run (a job created at
10:00 with a daily 02:30 first runs tomorrow; a job disabled for a week does not catch up).
Runs are claimed by :mod:`streams.scheduler` in ``executions``; deleting a job keeps its
execution history.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets as random
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    Time,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.clock import known_zone
from streams.control import audit, destinations
from streams.control import connectors as import_connectors
from streams.control.errors import ConflictError, NotFoundError
from streams.control.listing import utc
from streams.control.text import Line
from streams.db import metadata
from streams.exports.report import ReportParams
from streams.schedule import Frequency, Schedule, Weekday, following
from streams.settings import Settings

JobType = Literal["data_import", "data_export"]
ConnectorId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{1,80}$",
        description="conn_..., cfg_<name> or exp_...",
        examples=["conn_9f2c4e1a7b3d5f60"],
    ),
]
ID_PREFIX = "job_"
EXPORT_PREFIX = "exp_"

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),  # job_<16 hex>
    Column("tenant", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("type", String(16), nullable=False),
    Column("connectors", Text, nullable=False),  # JSON list of connector ids
    Column("frequency", String(16), nullable=False),
    Column("time_of_day", Time, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("weekday", String(9)),
    Column("day_of_month", Integer),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date),
    Column("report", Text),  # JSON ReportParams (exports)
    Column("enabled", Boolean, nullable=False),
    Column("armed_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(100), nullable=False),
    UniqueConstraint("tenant", "name", name="uq_jobs_tenant_name"),
    Index("ix_jobs_enabled", "enabled"),
)


class JobIn(BaseModel):
    """A job to create."""

    model_config = {"extra": "forbid"}

    name: Line = Field(min_length=1, max_length=100, examples=["nightly import"])
    type: JobType = Field(description="data_import or data_export.")
    connectors: list[ConnectorId] = Field(
        min_length=1,
        max_length=10,
        description="data_import: exactly one import connector id (conn_... or cfg_...); "
        "data_export: one to ten export connector ids (exp_...).",
    )
    frequency: Frequency = Field(description="one_time, daily, weekly or monthly.")
    time: str = Field(
        "02:30",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time of day (HH:MM, 24-hour) in `timezone`.",
        examples=["02:30"],
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone. Unset: the tenant's (UTC unless set).",
        examples=["Asia/Kolkata"],
    )
    weekday: Weekday | None = Field(None, description="weekly: the day it runs.")
    day_of_month: int | None = Field(
        None, ge=1, le=31, description="monthly: the day (29-31: the last day of shorter months)."
    )
    start_date: dt.date | None = Field(None, description="First day. Unset: today (job's zone).")
    end_date: dt.date | None = Field(None, description="Last day. Unset: never ends.")
    enabled: bool = True
    report: ReportParams | None = Field(
        None, description="data_export: the report to build (required); data_import: none."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return known_zone(value) if value is not None else None

    @property
    def local_time(self) -> dt.time:
        """``time`` as a time of day."""
        hh, mm = self.time.split(":")
        return dt.time(int(hh), int(mm))

    @field_validator("connectors")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a connector is named twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobIn:
        if self.type == "data_import" and len(self.connectors) != 1:
            raise ValueError("a data_import job names exactly one import connector")
        if self.type == "data_export" and self.report is None:
            raise ValueError("a data_export job needs `report` (what to export)")
        if self.type == "data_import" and self.report is not None:
            raise ValueError("`report` is for data_export jobs only")
        if self.frequency == "weekly" and self.weekday is None:
            raise ValueError("a weekly job needs `weekday`")
        if self.frequency != "weekly" and self.weekday is not None:
            raise ValueError("`weekday` is for weekly jobs only")
        if self.frequency == "monthly" and self.day_of_month is None:
            raise ValueError("a monthly job needs `day_of_month`")
        if self.frequency != "monthly" and self.day_of_month is not None:
            raise ValueError("`day_of_month` is for monthly jobs only")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class LastRun(BaseModel):
    """The newest execution of a job."""

    execution_id: str
    status: str
    scheduled_for: dt.datetime


class Job(BaseModel):
    """A job."""

    id: str
    name: str
    type: JobType
    connectors: list[str]
    frequency: Frequency
    time: str = Field(description="Local time of day, HH:MM.")
    timezone: str
    weekday: Weekday | None = None
    day_of_month: int | None = None
    start_date: dt.date
    end_date: dt.date | None = Field(None, description="null: never ends.")
    enabled: bool
    report: ReportParams | None = None
    next_run_at: dt.datetime | None = Field(None, description="null: disabled or no more runs.")
    last_run: LastRun | None = None
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime


def schedule_of(row: Any) -> Schedule:
    """The :class:`~streams.schedule.Schedule` of a ``jobs`` row."""
    return Schedule(
        frequency=row.frequency,
        time=row.time_of_day,
        timezone=row.timezone,
        start_date=row.start_date,
        end_date=row.end_date,
        weekday=row.weekday,
        day_of_month=row.day_of_month,
    )


def next_run(row: Any, now: dt.datetime) -> dt.datetime | None:
    """When an enabled job runs next (None: disabled, or no occurrence left)."""
    if not row.enabled:
        return None
    return following(schedule_of(row), max(now, utc(row.armed_at)))


def job_out(row: Any, now: dt.datetime, last: LastRun | None = None) -> Job:
    """The API view of a ``jobs`` row."""
    return Job(
        id=row.id,
        name=row.name,
        type=row.type,
        connectors=json.loads(row.connectors),
        frequency=row.frequency,
        time=f"{row.time_of_day:%H:%M}",
        timezone=row.timezone,
        weekday=row.weekday,
        day_of_month=row.day_of_month,
        start_date=row.start_date,
        end_date=row.end_date,
        enabled=row.enabled,
        report=ReportParams.model_validate_json(row.report) if row.report else None,
        next_run_at=next_run(row, now),
        last_run=last,
        created_at=utc(row.created_at),
        created_by=row.created_by,
        updated_at=utc(row.updated_at),
    )


async def _check_connectors(
    conn: AsyncConnection, settings: Settings, tenant: str, body: JobIn
) -> None:
    for i, ident in enumerate(body.connectors):
        if body.type == "data_import":
            try:
                if ident.startswith(EXPORT_PREFIX):
                    raise NotFoundError("an export connector")
                await import_connectors.get_in(conn, settings, tenant, ident)
            except NotFoundError:
                raise NotFoundError(f"connectors[{i}]: no such import connector") from None
        elif not ident.startswith(EXPORT_PREFIX) or not await destinations.exists(
            conn, tenant, ident
        ):
            raise NotFoundError(f"connectors[{i}]: no such export connector")


async def create(
    engine: AsyncEngine,
    settings: Settings,
    tenant: str,
    zone: str,
    body: JobIn,
    actor: str,
    now: dt.datetime,
) -> Job:
    """Create a job of ``tenant`` (``zone``: the tenant's time zone, the default); 404 for a
    connector that is not the tenant's or not of the job's direction, 409 for a taken name."""
    tz = body.timezone or zone
    start = body.start_date or now.astimezone(ZoneInfo(tz)).date()
    if body.end_date is not None and body.end_date < start:
        raise ConflictError(f"end_date {body.end_date} is before the start date {start}")
    job_id = ID_PREFIX + random.token_hex(8)
    values: dict[str, Any] = {
        "id": job_id,
        "tenant": tenant,
        "name": body.name,
        "type": body.type,
        "connectors": json.dumps(body.connectors),
        "frequency": body.frequency,
        "time_of_day": body.local_time,
        "timezone": tz,
        "weekday": body.weekday,
        "day_of_month": body.day_of_month,
        "start_date": start,
        "end_date": body.end_date,
        "report": body.report.model_dump_json() if body.report else None,
        "enabled": body.enabled,
        "armed_at": now,
        "created_at": now,
        "created_by": actor,
        "updated_at": now,
        "updated_by": actor,
    }
    try:
        async with engine.begin() as conn:
            await _check_connectors(conn, settings, tenant, body)
            await conn.execute(jobs.insert().values(**values))
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="create",
                resource="job",
                resource_id=job_id,
                detail={"name": body.name, "type": body.type, "frequency": body.frequency},
                at=now,
            )
    except IntegrityError as exc:
        raise ConflictError(f"a job named {body.name!r} exists") from exc
    return job_out(_Row(values), now)


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def row_of(conn: AsyncConnection, tenant: str, job_id: str) -> Any:
    """The ``jobs`` row of one of ``tenant``'s jobs; :class:`NotFoundError` otherwise."""
    row = (
        await conn.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.tenant == tenant))
    ).first()
    if row is None:
        raise NotFoundError(f"no job {job_id[:40]!r}")
    return row


async def list_page(
    conn: AsyncConnection, tenant: str, after: str | None, limit: int
) -> tuple[list[Any], bool]:
    """``tenant``'s job rows by name after ``after``, and whether more follow."""
    stmt = select(jobs).where(jobs.c.tenant == tenant)
    if after is not None:
        stmt = stmt.where(jobs.c.name > after)
    rows = list(await conn.execute(stmt.order_by(jobs.c.name).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


async def set_enabled(
    engine: AsyncEngine, tenant: str, job_id: str, enabled: bool, actor: str, now: dt.datetime
) -> Any:
    """Enable or disable a job (idempotent); enabling re-arms it at ``now`` (no catch-up)."""
    async with engine.begin() as conn:
        row = await row_of(conn, tenant, job_id)
        if row.enabled != enabled:
            values: dict[str, Any] = {"enabled": enabled, "updated_at": now, "updated_by": actor}
            if enabled:
                values["armed_at"] = now
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="enable" if enabled else "disable",
                resource="job",
                resource_id=job_id,
                at=now,
            )
        return await row_of(conn, tenant, job_id)


async def remove(
    engine: AsyncEngine, tenant: str, job_id: str, actor: str, now: dt.datetime
) -> None:
    """Delete a job (its executions stay in the history)."""
    async with engine.begin() as conn:
        row = await row_of(conn, tenant, job_id)
        await conn.execute(jobs.delete().where(jobs.c.id == job_id))
        await audit.record(
            conn,
            tenant=tenant,
            actor=actor,
            action="delete",
            resource="job",
            resource_id=job_id,
            detail={"name": row.name},
            at=now,
        )


async def enabled_rows(conn: AsyncConnection) -> list[Any]:
    """Every enabled job of every tenant (the scheduler's view)."""
    return list(await conn.execute(select(jobs).where(jobs.c.enabled.is_(True))))


async def scheduled_import_connectors(conn: AsyncConnection) -> set[tuple[str, str]]:
    """(tenant, connector id) of every connector an enabled data_import job drives."""
    rows = await conn.execute(
        select(jobs.c.tenant, jobs.c.connectors).where(
            jobs.c.enabled.is_(True), jobs.c.type == "data_import"
        )
    )
    return {(r.tenant, ident) for r in rows for ident in json.loads(r.connectors)}
