"""The execution history: every run of a job (and of the system's own daily jobs).

A run is claimed by inserting its row: ``executions`` is unique on ``(tenant, job_id,
scheduled_for)``, so however many workers see an occurrence fall due, and however often one
restarts, one of them inserts the row and only that one runs it (:func:`claim` returns None to
the others). A manual trigger is a run scheduled for the moment it was asked.

Statuses (seed 001 §6.4.6): ``pending`` (claimed, not started), ``processing`` (fetching and
processing; an import run stays here until every file it announced is judged), ``delivering``
(exports: pushing to destinations; imports pass through it as they complete), then one of
``success``, ``partial_success`` (some destinations, or some files or rows, failed),
``handler_failed`` (the processing itself failed: source unreachable, report not built, every
file rejected), ``delivery_failed`` (processed, but every destination failed).

While a worker holds a run it keeps ``lease_until`` in the future; a run whose lease ran out
(its worker was killed) is failed by the next scheduler tick with a message saying so, never
silently left "processing". An import run waiting for its files' verdicts has no lease: any
worker may complete it.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets as random
import time
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    case,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.cases.store import applied_deliveries, case_versions, file_outcomes
from streams.control.errors import NotFoundError
from streams.control.listing import Key, before, page, utc
from streams.db import insert_ignore, metadata
from streams.ingest.sourcestore import source_files

Status = Literal[
    "pending",
    "processing",
    "delivering",
    "success",
    "partial_success",
    "handler_failed",
    "delivery_failed",
]
FINAL: frozenset[str] = frozenset(
    {"success", "partial_success", "handler_failed", "delivery_failed"}
)
RunType = Literal["data_import", "data_export", "retention"]
Trigger = Literal["schedule", "manual"]
ID_PREFIX = "exe_"

executions = Table(
    "executions",
    metadata,
    Column("id", String(32), primary_key=True),  # see new_execution_id
    Column("tenant", String(64), nullable=False),
    Column("job_id", String(40), nullable=False),  # job_... or sys_<name>
    Column("job_name", String(100), nullable=False),
    Column("type", String(16), nullable=False),
    Column("connectors", Text, nullable=False),  # JSON list of connector ids
    Column("trigger", String(16), nullable=False),
    Column("scheduled_for", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False),
    Column("counts", Text),  # JSON Counts
    Column("deliveries", Text),  # JSON list of Delivery
    Column("error", Text),
    Column("worker", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    UniqueConstraint("tenant", "job_id", "scheduled_for", name="uq_executions_run"),
    Index("ix_executions_tenant_created", "tenant", "created_at", "id"),
    Index("ix_executions_status", "status"),
)

#: The file versions an import run announced (its files link to their outcome and cases).
execution_files = Table(
    "execution_files",
    metadata,
    Column("execution_id", String(32), primary_key=True),
    Column("file_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("connector", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Index("ix_execution_files_tenant_file", "tenant", "file_id"),
)


class Counts(BaseModel):
    """What a run did."""

    files: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    cases_opened: int = 0
    cases_updated: int = 0
    rows_exported: int = 0
    files_purged: int = 0
    files_archived: int = 0


class Delivery(BaseModel):
    """How one destination of an export run fared."""

    connector_id: str
    name: str
    type: str
    ok: bool
    error: str | None = None
    delivered: list[str] = Field(default_factory=list, description="File names delivered.")


class RunFile(BaseModel):
    """A file version an import run announced, with its verdict so far."""

    file_id: str
    connector: str
    path: str
    outcome: str = Field(description="pending until the processors judge it.")
    rows_accepted: int | None = None
    rows_rejected: int | None = None
    reason: str | None = None


class ReportLink(BaseModel):
    """A report file an export run produced, downloadable until ``expires_at``."""

    report_id: str
    name: str
    rows: int
    url: str | None = Field(None, description="Signed link; null once expired.")
    expires_at: dt.datetime


class Execution(BaseModel):
    """One run."""

    id: str
    job_id: str
    job_name: str
    type: RunType
    connectors: list[str]
    trigger: Trigger
    scheduled_for: dt.datetime
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    status: Status
    counts: Counts
    deliveries: list[Delivery] = Field(default_factory=list)
    error: str | None = None
    reports: list[ReportLink] = Field(default_factory=list)
    files: list[RunFile] | None = Field(
        None, description="Import runs, on GET /v1/executions/{id}: the files it processed."
    )


def execution_out(row: Any, reports: list[ReportLink] | None = None) -> Execution:
    """The API view of an ``executions`` row."""
    return Execution(
        id=row.id,
        job_id=row.job_id,
        job_name=row.job_name,
        type=row.type,
        connectors=json.loads(row.connectors),
        trigger=row.trigger,
        scheduled_for=utc(row.scheduled_for),
        created_at=utc(row.created_at),
        started_at=utc(row.started_at) if row.started_at else None,
        finished_at=utc(row.finished_at) if row.finished_at else None,
        status=row.status,
        counts=Counts.model_validate_json(row.counts) if row.counts else Counts(),
        deliveries=[Delivery.model_validate(d) for d in json.loads(row.deliveries or "[]")],
        error=row.error,
        reports=reports or [],
    )


async def claim(
    engine: AsyncEngine,
    *,
    tenant: str,
    job_id: str,
    job_name: str,
    run_type: RunType,
    connectors: list[str],
    scheduled_for: dt.datetime,
    trigger: Trigger,
    now: dt.datetime,
    worker: str,
    lease: dt.timedelta,
) -> str | None:
    """Insert the run of ``job_id`` at ``scheduled_for``; its id, or None when another worker
    (or an earlier life of this one) already has it."""
    ident = new_execution_id()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                executions.insert().values(
                    id=ident,
                    tenant=tenant,
                    job_id=job_id,
                    job_name=job_name,
                    type=run_type,
                    connectors=json.dumps(connectors),
                    trigger=trigger,
                    scheduled_for=scheduled_for,
                    created_at=now,
                    status="pending",
                    worker=worker,
                    lease_until=now + lease,
                )
            )
    except IntegrityError:
        return None
    return ident


def new_execution_id() -> str:
    """``exe_`` + 13 hex digits of wall-clock microseconds + 6 random: ids sort by creation,
    so runs created at the same scheduler instant (a frozen or coarse clock) still list in
    the order they were made."""
    return f"{ID_PREFIX}{time.time_ns() // 1000:013x}{random.token_hex(3)}"


async def update_run(engine: AsyncEngine, execution_id: str, **values: Any) -> None:
    """Change columns of a run (``counts``/``deliveries`` as models are stored as JSON)."""
    if isinstance(values.get("counts"), Counts):
        values["counts"] = values["counts"].model_dump_json()
    if "deliveries" in values and not isinstance(values["deliveries"], str | None):
        values["deliveries"] = json.dumps([d.model_dump() for d in values["deliveries"]])
    async with engine.begin() as conn:
        await conn.execute(update(executions).where(executions.c.id == execution_id).values(values))


async def add_files(
    engine: AsyncEngine, execution_id: str, tenant: str, files: list[tuple[str, str, str]]
) -> None:
    """Link (file_id, connector, path) versions to an import run (batched; a version linked
    before stays as it is: a run handed over mid-way links its files from two workers)."""
    if not files:
        return
    async with engine.begin() as conn:
        await conn.execute(
            insert_ignore(engine, execution_files, ["execution_id", "file_id"]),
            [
                {
                    "execution_id": execution_id,
                    "file_id": f,
                    "tenant": tenant,
                    "connector": c,
                    "path": p,
                }
                for f, c, p in files
            ],
        )


HANDOFF = "handoff"
"""The ``worker`` of an import run waiting for the worker that owns its connector."""


async def hand_off(engine: AsyncEngine, execution_id: str, lease_until: dt.datetime) -> None:
    """Leave an import run to the worker that owns its connector (:func:`take`); a run nobody
    takes before ``lease_until`` is failed as abandoned."""
    await update_run(engine, execution_id, worker=HANDOFF, lease_until=lease_until)


async def handed_off(conn: AsyncConnection) -> list[Any]:
    """The unfinished import runs waiting for their connector's owner."""
    ex = executions.c
    stmt = select(executions).where(ex.worker == HANDOFF, ex.status.notin_(FINAL))
    return list(await conn.execute(stmt))


async def take(
    engine: AsyncEngine, execution_id: str, worker: str, lease_until: dt.datetime
) -> bool:
    """Claim a handed-off run for ``worker``; False when another worker took it first."""
    ex = executions.c
    async with engine.begin() as conn:
        result = await conn.execute(
            update(executions)
            .where(ex.id == execution_id, ex.worker == HANDOFF, ex.status.notin_(FINAL))
            .values(worker=worker, lease_until=lease_until)
        )
    return result.rowcount == 1


async def fail_abandoned(engine: AsyncEngine, now: dt.datetime) -> list[Any]:
    """Fail every unfinished run whose lease ran out; return their rows (for notices)."""
    ex = executions.c
    stale = and_(ex.status.notin_(FINAL), ex.lease_until.is_not(None), ex.lease_until < now)
    async with engine.begin() as conn:
        rows = list(await conn.execute(select(executions).where(stale)))
        if rows:
            await conn.execute(
                update(executions)
                .where(stale)
                .values(
                    status="handler_failed",
                    finished_at=now,
                    lease_until=None,
                    error="interrupted: the worker running it stopped (killed or restarted) "
                    "before it finished; trigger the job again to re-run it",
                )
            )
    return rows


async def waiting_imports(conn: AsyncConnection) -> list[Any]:
    """Import runs waiting for their files' verdicts (no lease)."""
    ex = executions.c
    return list(
        await conn.execute(
            select(executions).where(
                ex.type == "data_import", ex.status == "processing", ex.lease_until.is_(None)
            )
        )
    )


async def run_files(conn: AsyncConnection, tenant: str, execution_id: str) -> list[RunFile]:
    """The files an import run announced, with their verdicts so far."""
    ef, fo = execution_files.c, file_outcomes.c
    rows = await conn.execute(
        select(
            ef.file_id,
            ef.connector,
            ef.path,
            fo.outcome,
            fo.rows_accepted,
            fo.rows_rejected,
            fo.reason,
            fo.rejected_by_reason,
        )
        .select_from(
            execution_files.outerjoin(
                file_outcomes, and_(fo.file_id == ef.file_id, fo.tenant == ef.tenant)
            )
        )
        .where(ef.execution_id == execution_id, ef.tenant == tenant)
        .order_by(ef.path)
    )
    return [
        RunFile(
            file_id=r.file_id,
            connector=r.connector,
            path=r.path,
            outcome=r.outcome or "pending",
            rows_accepted=r.rows_accepted,
            rows_rejected=r.rows_rejected,
            reason=r.reason,
        )
        for r in rows
    ]


async def import_counts(conn: AsyncConnection, tenant: str, execution_id: str) -> Counts:
    """Files, rows accepted/rejected (by reason) and cases opened/updated of an import run."""
    ef, fo, cv = execution_files.c, file_outcomes.c, case_versions.c
    rows = await conn.execute(
        select(fo.rows_accepted, fo.rows_rejected, fo.rejected_by_reason)
        .select_from(
            execution_files.join(
                file_outcomes, and_(fo.file_id == ef.file_id, fo.tenant == ef.tenant)
            )
        )
        .where(ef.execution_id == execution_id, ef.tenant == tenant)
    )
    counts = Counts()
    reasons: Counter[str] = Counter()
    for r in rows:
        counts.rows_accepted += r.rows_accepted
        counts.rows_rejected += r.rows_rejected
        reasons.update(json.loads(r.rejected_by_reason or "{}"))
    counts.rejected_by_reason = dict(reasons)
    files = (
        await conn.execute(
            select(func.count())
            .select_from(execution_files)
            .where(ef.execution_id == execution_id, ef.tenant == tenant)
        )
    ).scalar_one()
    counts.files = int(files)
    linked = select(ef.file_id).where(ef.execution_id == execution_id, ef.tenant == tenant)
    opened, updated = (
        await conn.execute(
            select(
                func.coalesce(func.sum(case((cv.version == 1, 1), else_=0)), 0),
                func.coalesce(func.sum(case((cv.version > 1, 1), else_=0)), 0),
            ).where(cv.tenant == tenant, cv.file_id.in_(linked))
        )
    ).one()
    counts.cases_opened, counts.cases_updated = int(opened), int(updated)
    return counts


async def cases_settled(
    conn: AsyncConnection, tenant: str, execution_id: str, now: dt.datetime, grace: dt.timedelta
) -> bool:
    """Whether every conversation row an import run's files published has reached the case
    store (one ``applied_deliveries`` row per delivered row, duplicates included), so its case
    counts are final. Rows of source files (CRM data, seed 002) open no case and are not
    waited for; after ``grace`` from the last verdict the run completes anyway (a row the case
    stage dead-lettered never arrives)."""
    ef, fo, ad = execution_files.c, file_outcomes.c, applied_deliveries.c
    linked = and_(ef.execution_id == execution_id, ef.tenant == tenant)
    judged = execution_files.join(
        file_outcomes, and_(fo.file_id == ef.file_id, fo.tenant == ef.tenant)
    )
    expected, last = (
        await conn.execute(
            select(func.coalesce(func.sum(fo.rows_accepted), 0), func.max(fo.decided_at))
            .select_from(judged)
            .where(linked, ef.file_id.notin_(select(source_files.c.file_id)))
        )
    ).one()
    if not expected:
        return True
    if last is not None and utc(last) + grace <= now:
        return True
    applied = (
        await conn.execute(
            select(func.count())
            .select_from(
                execution_files.join(
                    applied_deliveries,
                    and_(
                        ad.tenant == ef.tenant,
                        ad.delivery_key.like(literal("file:").concat(ef.file_id).concat(":%")),
                    ),
                )
            )
            .where(linked)
        )
    ).scalar_one()
    return int(applied) >= int(expected)


async def get_row(conn: AsyncConnection, tenant: str, execution_id: str) -> Any:
    """The row of one of ``tenant``'s runs; :class:`NotFoundError` otherwise."""
    row = (
        await conn.execute(
            select(executions).where(executions.c.id == execution_id, executions.c.tenant == tenant)
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no execution {execution_id[:40]!r}")
    return row


async def list_rows(
    conn: AsyncConnection,
    tenant: str,
    limit: int,
    after: Key | None,
    *,
    run_type: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    job_id: str | None = None,
) -> tuple[list[Any], list[Any] | None]:
    """One page of ``tenant``'s runs, newest first, and the next cursor key."""
    ex = executions.c
    stmt = select(executions).where(ex.tenant == tenant)
    for column, value in ((ex.type, run_type), (ex.status, status), (ex.job_id, job_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(ex.created_at >= since)
    if until is not None:
        stmt = stmt.where(ex.created_at < until)
    cond = before(ex.created_at, ex.id, after)
    if cond is not None:
        stmt = stmt.where(cond)
    rows = list(
        await conn.execute(stmt.order_by(ex.created_at.desc(), ex.id.desc()).limit(limit + 1))
    )
    return page(rows, limit, lambda r: (r.created_at, r.id))


async def last_runs(conn: AsyncConnection, tenant: str, job_ids: list[str]) -> dict[str, Any]:
    """The newest run of each of ``job_ids`` (by scheduled time)."""
    if not job_ids:
        return {}
    ex = executions.c
    newest = (
        select(ex.job_id, func.max(ex.scheduled_for).label("at"))
        .where(ex.tenant == tenant, ex.job_id.in_(job_ids))
        .group_by(ex.job_id)
        .subquery()
    )
    rows = await conn.execute(
        select(executions).join(
            newest, and_(ex.job_id == newest.c.job_id, ex.scheduled_for == newest.c.at)
        )
    )
    return {r.job_id: r for r in rows if r.tenant == tenant}


async def job_of_file(conn: AsyncConnection, tenant: str, file_id: str) -> tuple[str, str] | None:
    """(job id, execution id) of the import run that announced ``file_id``, if any."""
    ef, ex = execution_files.c, executions.c
    row = (
        await conn.execute(
            select(ex.job_id, ex.id)
            .select_from(execution_files.join(executions, ex.id == ef.execution_id))
            .where(ef.tenant == tenant, ef.file_id == file_id)
            .order_by(ex.created_at.desc())
            .limit(1)
        )
    ).first()
    return (row.job_id, row.id) if row is not None else None
