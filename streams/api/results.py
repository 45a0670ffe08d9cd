"""``GET /v1/results``, ``GET /v1/cases/{case_id}`` and its lineage (read-only, tenant-scoped)."""

from __future__ import annotations

from pydantic import Field

from streams.api.pagination import Page, PageQuery, decode_cursor, encode_cursor
from streams.api.problems import BadRequest, NotFound
from streams.api.routing import ApiRoutes, Call
from streams.control import results
from streams.control.listing import Key, UtcDateTime, cursor_key
from streams.control.text import Line

routes = ApiRoutes("results", "Analysis results, cases and their lineage.")


def page_key(cursor: str | None) -> Key | None:
    """Decode a ``[time, id]`` cursor of the data lists (400 when it is not one)."""
    try:
        return cursor_key(decode_cursor(cursor, 2))
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest("invalid cursor: pass next_cursor of the previous page") from exc


def next_cursor(key: list[object] | None) -> str | None:
    """Encode the next page's cursor (None on the last page)."""
    return encode_cursor(key) if key is not None else None


class ResultsQuery(PageQuery):
    """Filters of the results list (newest first)."""

    since: UtcDateTime | None = Field(None, description="Analysed at or after (ISO 8601).")
    profile: Line | None = Field(None, max_length=64, description="Quality profile id.")
    passed: bool | None = Field(None, description="true: passed only; false: failed only.")
    agent: Line | None = Field(None, max_length=512, description="Agent id of the conversation.")
    team: Line | None = Field(None, max_length=512)
    campaign: Line | None = Field(None, max_length=512)
    case_id: Line | None = Field(None, max_length=32, description="Results of one case.")


def case_param(call: Call) -> str:
    """The ``{case_id}`` of the path; 404 at once for what no case id can be."""
    ident = call.params["case_id"]
    if not 1 <= len(ident) <= 32 or not ident.isalnum() or not ident.isascii():
        raise NotFound(f"no case {ident[:40]!r}")
    return ident


@routes.get(
    "/v1/results",
    summary="List analysis results",
    query=ResultsQuery,
    response=Page[results.Result],
    errors=(400, 422),
    description="Newest first (analysed_at, then idempotency key); cursor pagination.",
)
async def list_results(call: Call) -> Page[results.Result]:
    """List the tenant's analysis results, newest first."""
    q: ResultsQuery = call.query
    items, nxt = await results.list_results(
        call.ctx.engine,
        call.ctx.codec,
        call.tenant,
        min(q.limit, call.ctx.settings.api.max_page_size),
        page_key(q.cursor),
        since=q.since,
        profile=q.profile,
        passed=q.passed,
        agent=q.agent,
        team=q.team,
        campaign=q.campaign,
        case_id=q.case_id,
    )
    return Page[results.Result](items=items, next_cursor=next_cursor(nxt))


@routes.get(
    "/v1/cases/{case_id}",
    summary="Get a case with its versions and results",
    response=results.Case,
    errors=(404,),
)
async def get_case(call: Call) -> results.Case:
    """Return one case of the tenant."""
    return await results.get_case(call.ctx.engine, call.ctx.codec, call.tenant, case_param(call))


@routes.get(
    "/v1/cases/{case_id}/lineage",
    summary="Trace a case back to its files or API requests",
    response=results.Lineage,
    errors=(404,),
    description="For each case version: the file version (or API request), the row (or "
    "item), the content hash and the results it got.",
)
async def get_case_lineage(call: Call) -> results.Lineage:
    """Return the lineage of one case of the tenant."""
    return await results.lineage(call.ctx.engine, call.ctx.codec, call.tenant, case_param(call))
