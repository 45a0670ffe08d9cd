"""Stored analysis reports: the signed download route and the tenant's list of report files.

``GET /v1/reports/{report_id}?expires=&signature=`` needs no API key: the signed link is the
grant (mailed, or shown in the execution history). Its signature and expiry are checked first
(403 when missing, tampered or past, by the service clock), the report is looked up only then
(404), so ids cannot be probed. Links are based at ``http.public_url``, else at this listener's
address.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from aiohttp import web
from pydantic import BaseModel, Field

from streams import mail
from streams.api.context import ApiContext
from streams.api.pagination import Page, PageQuery
from streams.api.problems import Conflict, Forbidden, NotFound
from streams.api.results import next_cursor, page_key
from streams.api.routing import ApiRoutes, Call
from streams.api.users import public_base
from streams.control import tenants, users
from streams.control.listing import utc
from streams.control.text import Line
from streams.exports import storage
from streams.exports.deliver import mail_text
from streams.exports.links import LinkError
from streams.exports.report import ReportParams
from streams.exports.run import delivery_links
from streams.exports.storage import ReportStore, StoredReport

routes = ApiRoutes("reports", "Stored analysis report files and their signed download links.")


class LinkQuery(BaseModel):
    """The signed part of a download link (as it was sent; anything else is refused)."""

    expires: str | None = Field(None, description="Unix seconds the link expires at.")
    signature: str | None = Field(None, description="Hex HMAC-SHA256 of the id and expiry.")


class ReportsQuery(PageQuery):
    """Filters of the report files list (newest first)."""

    execution_id: Line | None = Field(
        None, max_length=32, description="Only the files of one export run."
    )


def report_store(call: Call) -> ReportStore:
    """The report store of the running service, links based at ``http.public_url`` or this
    listener's address (never the request's Host header)."""
    ctx: ApiContext = call.ctx
    if ctx.secrets is None:
        raise RuntimeError("report links need the service's secret keys")
    return ReportStore.from_settings(ctx.settings, ctx.secrets, public_base(call), ctx.media)


@routes.get(
    "/v1/reports/{report_id}",
    summary="Download a report file by its signed link",
    auth="public",
    query=LinkQuery,
    errors=(403, 404),
    content_type="application/octet-stream",
    patterns=(("report_id", "rpt_[0-9a-f]+"),),
    description="The link as it was mailed or listed: 403 when its signature is missing or "
    "wrong or it has expired; 404 when the file is gone. The body is the CSV or Excel file.",
)
async def download_report(call: Call) -> web.StreamResponse:
    """Stream a stored report file to whoever holds a valid signed link."""
    ident = call.params["report_id"]
    store = report_store(call)
    q: LinkQuery = call.query
    now = call.ctx.clock.now()
    try:
        store.links.verify(ident, q.expires, q.signature, now)
    except LinkError as exc:
        raise Forbidden(str(exc)) from None
    row = await storage.find_report(call.ctx.engine, ident)
    if row is None:
        raise NotFound(f"no report {ident[:40]!r}")
    if utc(row.expires_at) <= now:
        raise Forbidden("the link has expired")
    try:
        chunks = await store.open(row.storage_key)
    except FileNotFoundError:
        raise NotFound(f"report {ident!r} is no longer stored") from None
    response = web.StreamResponse(
        headers={
            "Content-Type": row.content_type,
            "Content-Disposition": f'attachment; filename="{row.name}"',
            "Cache-Control": "private, no-store",
        }
    )
    response.content_length = row.bytes
    await response.prepare(call.request)
    async with contextlib.aclosing(chunks):  # a client gone mid-way closes the file too
        async for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


@routes.get(
    "/v1/reports",
    summary="List report files",
    query=ReportsQuery,
    response=Page[StoredReport],
    errors=(400, 422),
    description="Newest first; each with a fresh signed link that expires with the file "
    "(null once expired); cursor pagination.",
)
async def list_reports(call: Call) -> Page[StoredReport]:
    """List the tenant's report files, newest first."""
    q: ReportsQuery = call.query
    store = report_store(call)
    items, nxt = await storage.list_reports(
        call.ctx.engine,
        store.links,
        store.base_url,
        call.tenant,
        min(q.limit, call.ctx.settings.api.max_page_size),
        page_key(q.cursor),
        now=call.ctx.clock.now(),
        execution_id=q.execution_id,
    )
    return Page[StoredReport](items=items, next_cursor=next_cursor(nxt))


@routes.get(
    "/v1/reports/{report_id}/link",
    summary="Get a report file with a fresh signed link",
    response=StoredReport,
    errors=(404,),
)
async def get_report_link(call: Call) -> StoredReport:
    """Return one of the tenant's report files with a fresh link."""
    store = report_store(call)
    return await storage.get_report(
        call.ctx.engine,
        store.links,
        store.base_url,
        call.tenant,
        call.params["report_id"],
        now=call.ctx.clock.now(),
    )


class EmailMeAnswer(BaseModel):
    """What "email me" did: the report it built and where the links went."""

    sent_to: str = Field(description="The calling user's verified address (the only one).")
    mail_sent: bool = Field(description="false: the relay refused or is off (see mail_error).")
    mail_error: str | None = None
    rows: int = Field(description="Data rows in the report.")
    reports: list[StoredReport] = Field(
        description="The report's files (exports.rows_per_email_file rows each) and their "
        "signed links, also listed under GET /v1/reports."
    )


@routes.post(
    "/v1/reports/email-me",
    summary="E-mail a report to my own verified address",
    body=ReportParams,
    response=EmailMeAnswer,
    status=202,
    errors=(403, 409, 422),
    description="Seed 001 §6.4.7: the report goes only to the verified e-mail address of the "
    "user the API key acts for (a key created with user_id); no other destination can be "
    "named (an unknown body field is 422). The mail carries download links, never files.",
)
async def email_me(call: Call) -> EmailMeAnswer:
    """Build the report, store it, mail its links to the caller's verified address."""
    ctx: ApiContext = call.ctx
    user_id = call.principal.user_id
    if user_id is None:
        raise Forbidden(
            "this API key does not act for a user: create a key with user_id for a user whose "
            "address is verified"
        )
    async with ctx.engine.connect() as conn:
        address = await users.verified_email(conn, call.tenant, user_id)
        zone = await tenants.tenant_zone(conn, call.tenant)
    if address is None:
        raise Forbidden("the calling user's e-mail address is not verified yet")
    builder = ctx.reports
    if builder is None:
        raise Conflict("reports are not built in this process (scheduler.enabled is off)")
    now = ctx.clock.now()
    per_mail = ctx.settings.exports.rows_per_email_file
    work = builder.workdir()
    try:
        built = await builder.build(
            call.tenant,
            call.body,
            now=now,
            tz=zone,
            out_dir=work,
            base_name=f"report-{now.astimezone(zone):%Y%m%d-%H%M%S}",
            layouts=[per_mail],
        )
        stored = await builder.keep(call.tenant, built.layouts[per_mail], None, now)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    message = mail.compose(
        ctx.settings.mail,
        [address],
        f"Your callstream report: {built.rows} row(s) in {len(stored)} file(s)",
        mail_text(delivery_links(stored)),
    )
    error = None
    try:
        await mail.send(ctx.settings.mail, message)
    except mail.MailError as exc:
        error = f"the links could not be mailed: {exc}"
    return EmailMeAnswer(
        sent_to=address,
        mail_sent=error is None,
        mail_error=error,
        rows=built.rows,
        reports=stored,
    )
