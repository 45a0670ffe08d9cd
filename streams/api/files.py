"""``GET /v1/files``: announced file versions with their outcome and counts."""

from __future__ import annotations

from pydantic import Field

from streams.api.pagination import Page, PageQuery
from streams.api.results import next_cursor, page_key
from streams.api.routing import ApiRoutes, Call
from streams.control import files
from streams.control.files import FileOutcome
from streams.control.listing import UtcDateTime
from streams.control.text import Line

routes = ApiRoutes("files", "File versions the connectors announced, and what became of them.")


class FilesQuery(PageQuery):
    """Filters of the files list (newest first)."""

    connector: Line | None = Field(None, max_length=64, description="Connector name.")
    outcome: FileOutcome | None = Field(None, description="pending: not judged yet.")
    since: UtcDateTime | None = Field(None, description="Announced at or after (ISO 8601).")


@routes.get(
    "/v1/files",
    summary="List announced file versions",
    query=FilesQuery,
    response=Page[files.AnnouncedFile],
    errors=(400, 422),
    description="Newest first (announced, then file id); cursor pagination.",
)
async def list_files(call: Call) -> Page[files.AnnouncedFile]:
    """List the tenant's file versions, newest first."""
    q: FilesQuery = call.query
    items, nxt = await files.list_files(
        call.ctx.engine,
        call.tenant,
        min(q.limit, call.ctx.settings.api.max_page_size),
        page_key(q.cursor),
        connector=q.connector,
        outcome=q.outcome,
        since=q.since,
    )
    return Page[files.AnnouncedFile](items=items, next_cursor=next_cursor(nxt))
