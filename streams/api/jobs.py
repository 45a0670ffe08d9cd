"""``/v1/jobs``: scheduled imports and report exports (create, list, trigger, disable, delete)."""

from __future__ import annotations

from typing import Any

from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.problems import Conflict
from streams.api.routing import ApiRoutes, Call
from streams.control import executions as runs
from streams.control import jobs, tenants
from streams.control.jobs import Job, JobIn, LastRun
from streams.control.listing import utc

routes = ApiRoutes(
    "jobs",
    "Jobs link connectors to a schedule: data_import jobs pick files up at their times, "
    "data_export jobs build and deliver reports.",
)


async def _tenant_zone(call: Call) -> str:
    async with call.ctx.engine.connect() as conn:
        return (await tenants.tenant_zone(conn, call.tenant)).key


async def _out(call: Call, rows: list[Any]) -> list[Job]:
    now = call.ctx.clock.now()
    async with call.ctx.engine.connect() as conn:
        last = await runs.last_runs(conn, call.tenant, [r.id for r in rows])
    out = []
    for r in rows:
        run = last.get(r.id)
        lr = (
            LastRun(execution_id=run.id, status=run.status, scheduled_for=utc(run.scheduled_for))
            if run is not None
            else None
        )
        out.append(jobs.job_out(r, now, lr))
    return out


@routes.post(
    "/v1/jobs",
    summary="Create a job",
    body=JobIn,
    response=Job,
    status=201,
    errors=(404, 409, 422),
    description="data_import: one import connector of the tenant; data_export: one to ten "
    "export connectors and the report. The time zone defaults to the tenant's.",
)
async def create_job(call: Call) -> Job:
    """Create a job; 404 when a connector is not the tenant's or of the other direction."""
    return await jobs.create(
        call.ctx.engine,
        call.ctx.settings,
        call.tenant,
        await _tenant_zone(call),
        call.body,
        call.principal.actor,
        call.ctx.clock.now(),
    )


@routes.get("/v1/jobs", summary="List jobs", query=PageQuery, response=Page[Job])
async def list_jobs(call: Call) -> Page[Job]:
    """The tenant's jobs by name, with their next and last run."""
    after = decode_cursor(call.query.cursor, 1)
    limit = min(call.query.limit, call.ctx.settings.api.max_page_size)
    async with call.ctx.engine.connect() as conn:
        rows, more = await jobs.list_page(conn, call.tenant, after[0] if after else None, limit)
    items = await _out(call, rows)
    return Page[Job](items=items, next_cursor=encode_cursor([items[-1].name]) if more else None)


@routes.get("/v1/jobs/{job_id}", summary="Get a job", response=Job, errors=(404,))
async def get_job(call: Call) -> Job:
    """One of the tenant's jobs."""
    async with call.ctx.engine.connect() as conn:
        row = await jobs.row_of(conn, call.tenant, call.params["job_id"])
    return (await _out(call, [row]))[0]


@routes.post(
    "/v1/jobs/{job_id}/trigger",
    summary="Run a job now",
    response=runs.Execution,
    status=202,
    errors=(404, 409),
    description="Runs at once, whatever the schedule (also a disabled job). The run is in "
    "the execution history; poll GET /v1/executions/{id} for its status.",
)
async def trigger_job(call: Call) -> runs.Execution:
    """Start a run of the job now."""
    scheduler = call.ctx.scheduler
    if scheduler is None:
        raise Conflict("jobs do not run in this process (scheduler.enabled is off)")
    ident = await scheduler.trigger(call.tenant, call.params["job_id"])
    async with call.ctx.engine.connect() as conn:
        return runs.execution_out(await runs.get_row(conn, call.tenant, ident))


async def _set_enabled(call: Call, enabled: bool) -> Job:
    row = await jobs.set_enabled(
        call.ctx.engine,
        call.tenant,
        call.params["job_id"],
        enabled,
        call.principal.actor,
        call.ctx.clock.now(),
    )
    return (await _out(call, [row]))[0]


@routes.post("/v1/jobs/{job_id}/disable", summary="Pause a job", response=Job, errors=(404,))
async def disable_job(call: Call) -> Job:
    """Disable a job (idempotent): it does not run until enabled; a data_import job's connector
    goes back to announcing files as they arrive."""
    return await _set_enabled(call, False)


@routes.post(
    "/v1/jobs/{job_id}/enable",
    summary="Resume a job",
    response=Job,
    errors=(404,),
    description="Runs missed while disabled are not caught up: the next run is the next "
    "occurrence from now.",
)
async def enable_job(call: Call) -> Job:
    """Enable a job (idempotent)."""
    return await _set_enabled(call, True)


@routes.delete("/v1/jobs/{job_id}", summary="Delete a job", status=204, errors=(404,))
async def delete_job(call: Call) -> None:
    """Delete a job; its runs stay in the execution history."""
    await jobs.remove(
        call.ctx.engine,
        call.tenant,
        call.params["job_id"],
        call.principal.actor,
        call.ctx.clock.now(),
    )
