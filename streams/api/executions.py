"""``/v1/executions``: the execution history (every run of every job, newest first)."""

from __future__ import annotations

from pydantic import Field

from streams.api.pagination import Page, PageQuery
from streams.api.reports import report_store
from streams.api.results import next_cursor, page_key
from streams.api.routing import ApiRoutes, Call
from streams.control import executions as runs
from streams.control.executions import Execution, ReportLink, RunType, Status
from streams.control.listing import UtcDateTime
from streams.exports import storage

routes = ApiRoutes(
    "executions",
    "Every run of a job with its status, counts, errors, deliveries and report links.",
)


class ExecutionsQuery(PageQuery):
    """Filters of the execution history (newest first)."""

    type: RunType | None = Field(None, description="data_import, data_export or retention.")
    status: Status | None = None
    since: UtcDateTime | None = Field(None, description="Created at or after (ISO 8601).")
    until: UtcDateTime | None = Field(None, description="Created before (ISO 8601).")
    job_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Runs of one job."
    )


@routes.get(
    "/v1/executions",
    summary="List runs",
    query=ExecutionsQuery,
    response=Page[Execution],
    errors=(400, 422),
)
async def list_executions(call: Call) -> Page[Execution]:
    """The tenant's runs, newest first."""
    q: ExecutionsQuery = call.query
    async with call.ctx.engine.connect() as conn:
        rows, nxt = await runs.list_rows(
            conn,
            call.tenant,
            min(q.limit, call.ctx.settings.api.max_page_size),
            page_key(q.cursor),
            run_type=q.type,
            status=q.status,
            since=q.since,
            until=q.until,
            job_id=q.job_id,
        )
    items = [runs.execution_out(r) for r in rows]
    await _with_reports(call, items)
    return Page[Execution](items=items, next_cursor=next_cursor(nxt))


async def _with_reports(call: Call, items: list[Execution]) -> None:
    """Attach each export run's report files with fresh signed links (null once expired)."""
    exports = [e.id for e in items if e.type == "data_export"]
    if not exports:
        return
    store = report_store(call)
    found = await storage.reports_of_runs(
        call.ctx.engine,
        store.links,
        store.base_url,
        call.tenant,
        exports,
        now=call.ctx.clock.now(),
    )
    for e in items:
        e.reports = [
            ReportLink(report_id=r.id, name=r.name, rows=r.rows, url=r.url, expires_at=r.expires_at)
            for r in found.get(e.id, [])
        ]


@routes.get(
    "/v1/executions/{execution_id}",
    summary="Get a run",
    response=Execution,
    errors=(404,),
    description="Import runs list the file versions they processed, with each verdict.",
)
async def get_execution(call: Call) -> Execution:
    """One of the tenant's runs."""
    async with call.ctx.engine.connect() as conn:
        row = await runs.get_row(conn, call.tenant, call.params["execution_id"])
        out = runs.execution_out(row)
        if row.type == "data_import":
            out.files = await runs.run_files(conn, call.tenant, row.id)
    await _with_reports(call, [out])
    return out
