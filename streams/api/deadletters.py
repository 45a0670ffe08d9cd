"""``GET /v1/dead-letters`` and ``POST /v1/dead-letters/replay``."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from streams.api.context import ApiContext
from streams.api.conversations import ServiceUnavailable
from streams.api.pagination import Page, PageQuery
from streams.api.results import next_cursor, page_key
from streams.api.routing import ApiRoutes, Call
from streams.control import connectors as connector_ops
from streams.control import deadletters, replay
from streams.control.deadletters import DeadLetterStatus
from streams.control.listing import IsoDate, UtcDateTime
from streams.control.text import Line
from streams.errors import PublishError
from streams.ingest.parse import ParseSettings
from streams.media_s3 import open_media_store

routes = ApiRoutes("dead-letters", "Rejected rows, items and files: list, fix, replay.")


class DeadLettersQuery(PageQuery):
    """Filters of the dead-letter list (newest first)."""

    file_id: Line | None = Field(None, max_length=64, description="File version or request id.")
    reason: Line | None = Field(None, max_length=64, description="Reason code.")
    status: DeadLetterStatus | None = Field(None, description="open or replayed.")
    date: IsoDate | None = Field(None, description="Occurred on this day (UTC), YYYY-MM-DD.")
    since: UtcDateTime | None = Field(None, description="Occurred at or after (ISO 8601).")


@routes.get(
    "/v1/dead-letters",
    summary="List dead letters",
    query=DeadLettersQuery,
    response=Page[deadletters.DeadLetter],
    errors=(400, 422),
    description="Newest first (occurred_at, then id); cursor pagination.",
)
async def list_dead_letters(call: Call) -> Page[deadletters.DeadLetter]:
    """List the tenant's dead letters, newest first."""
    q: DeadLettersQuery = call.query
    since, until = q.since, None
    if q.date is not None:
        day = dt.datetime.combine(q.date, dt.time(), dt.UTC)
        since = max(since, day) if since is not None else day
        until = day + dt.timedelta(days=1) if q.date < dt.date.max else None
    items, nxt = await deadletters.list_page(
        call.ctx.engine,
        call.tenant,
        min(q.limit, call.ctx.settings.api.max_page_size),
        page_key(q.cursor),
        file_id=q.file_id,
        reason=q.reason,
        status=q.status,
        since=since,
        until=until,
    )
    return Page[deadletters.DeadLetter](items=items, next_cursor=next_cursor(nxt))


async def settings_of(ctx: ApiContext, caller: str) -> replay.ParseSettingsOf:
    """Look the ``caller`` tenant's connectors' current ingest settings up: the running
    connector's, else the configuration's, else the stored API connector's (one another worker
    may run)."""
    stored = await connector_ops.parse_settings(ctx.engine, caller)

    def lookup(tenant: str, connector: str) -> ParseSettings | None:
        if ctx.runner is not None:
            running = ctx.runner.contexts.get((tenant, connector))
            if running is not None:
                return running.settings.ingest
        for t in ctx.settings.tenants:
            for c in t.connectors:
                if t.id == tenant and c.name == connector:
                    return c.ingest
        return stored.get(connector) if tenant == caller else None

    return lookup


@routes.post(
    "/v1/dead-letters/replay",
    summary="Replay dead letters",
    body=replay.ReplayIn,
    response=replay.ReplayResult,
    errors=(404, 422, 503),
    description="Validates each selected dead letter's kept input again with the connector's "
    "current settings; what passes is published and marked replayed, what fails stays open "
    "with its new reason. Replaying a replayed dead letter does nothing. Select by ids (any "
    "unknown id: 404, nothing replayed) or by filters (open ones only; no filter: every open "
    "one, up to limit).",
)
async def replay_dead_letters(call: Call) -> replay.ReplayResult:
    """Replay the selected dead letters of the tenant."""
    body: replay.ReplayIn = call.body
    ctx = call.ctx
    if ctx.producer is None:
        raise ServiceUnavailable("this process does not publish to Kafka")
    parts = replay.ReplayParts(
        ctx.engine,
        ctx.codec,
        ctx.topics,
        ctx.producer,
        ctx.media or open_media_store(ctx.settings),
        ctx.settings.kafka.message_max_bytes,
        await settings_of(ctx, call.tenant),
        ctx.redactors(),
    )
    try:
        return await replay.replay(parts, call.tenant, body, call.principal.actor)
    except PublishError as exc:
        raise ServiceUnavailable(
            f"Kafka did not acknowledge the records ({exc.code or 'error'}); replay again"
        ) from exc
