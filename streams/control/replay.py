"""Replay dead letters: validate the kept raw input again, under today's settings.

Contract of :func:`replay` (``POST /v1/dead-letters/replay``), per selected dead letter of the
caller's tenant:

- ``replayed`` already: nothing happens (``already_replayed``): replaying twice has no second
  effect. Even two replays racing each other publish the same delivery (the original file
  version and row, or API request and item), which the case store applies once;
- a rejected CSV/TSV row is parsed again under its file's header with the connector's *current*
  ``ingest`` settings (mapping, time zone, limits); a chat transcript as a document; an API item
  by the ingest API's rules; a conversation the case store could not take (stage ``cases``) is
  decoded and sent again as it was, and so is the waiting conversation of a recording that
  could not be fetched (stage ``fetch``: its fetch is queued again). What passes is published
  to ``conversations.v1`` (answered after Kafka's acknowledgement) and the dead letter is
  marked ``replayed`` with when, by whom, the delivery key and the case; what fails again
  stays ``open`` with its new reason;
- whole-file rejections (no row) and recording bundles cannot be replayed from here
  (``not_replayable``: upload the file again, which is a new version).

Raw input kept in the media store (``raw_ref``, ``header_ref``) is read back, bounded by the
connector's ``max_row_bytes`` / ``max_document_bytes``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.cases.store import case_id, delivery_key
from streams.codec import AvroCodec
from streams.control import audit
from streams.control.deadletters import dead_letters, filtered, storable
from streams.control.errors import NotFoundError
from streams.control.ingest import Source, check_item
from streams.control.listing import UtcDateTime, utc
from streams.control.text import Line
from streams.errors import SchemaError
from streams.ingest.parse import (
    FileRejected,
    ParseSettings,
    RowInvalid,
    detect_format,
    parse,
)
from streams.ingest.records import CONVERSATION, conversation_record
from streams.kafka import Producer, Record
from streams.media import MediaRejected, MediaStore
from streams.redact import Redactors
from streams.topics import Topics

MAX_REPLAY = 1000
Outcome = Literal["replayed", "failed", "already_replayed", "not_replayable"]


class ReplayIn(BaseModel):
    """Which dead letters to replay: by ``ids``, or every open one matching the filters (no
    filter: every open one, up to ``limit``)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[Line, Field(max_length=32)]] | None = Field(
        None, min_length=1, max_length=MAX_REPLAY, description="Dead-letter ids (dl_...)."
    )
    file_id: Line | None = Field(None, max_length=64, description="Of this file version.")
    reason: Line | None = Field(None, max_length=64, description="With this reason code.")
    since: UtcDateTime | None = Field(None, description="Occurred at or after.")
    until: UtcDateTime | None = Field(None, description="Occurred before.")
    limit: int = Field(MAX_REPLAY, ge=1, le=MAX_REPLAY, description="Most to replay by filter.")


class ReplayItem(BaseModel):
    """What a replay did with one dead letter."""

    id: str
    outcome: Outcome
    reason: str | None = Field(None, description="Why it failed again (the new reason).")
    message: str | None = None
    delivery: str | None = Field(None, description="Delivery key of the published record.")
    case_id: str | None = None


class ReplayResult(BaseModel):
    """Counts and one entry per selected dead letter."""

    replayed: int
    failed: int
    skipped: int
    items: list[ReplayItem]


ParseSettingsOf = Callable[[str, str], ParseSettings | None]
"""(tenant, connector) -> the connector's current ``ingest`` settings, or None if it is gone."""


@dataclass
class ReplayParts:
    """What a replay needs from the running service."""

    engine: AsyncEngine
    codec: AvroCodec
    topics: Topics
    producer: Producer
    media: MediaStore
    max_record_bytes: int
    settings_of: ParseSettingsOf
    redactors: Redactors


class _Failed(Exception):
    def __init__(self, reason: str, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.column = reason, message, column


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


#: Most bytes of a kept API item read back from the media store (items arrive in one request
#: body, bounded by api.max_body_bytes; redacting tenants keep every item there).
API_ITEM_LIMIT = 64 * 1024 * 1024


def _raw(parts: ReplayParts, inline: bytes | None, ref: str | None, limit: int) -> bytes:
    if inline is not None:
        return bytes(inline)
    if ref is None:
        raise _Failed("not_replayable", "the raw input was not kept")
    try:
        return parts.media.get_bytes(ref, limit)
    except MediaRejected as exc:
        raise _Failed("row_too_large", str(exc)) from exc


def _row_record(parts: ReplayParts, dl: Any, now: dt.datetime) -> Record:
    """Parse a dead file row or document again under the connector's settings (thread)."""
    settings = parts.settings_of(dl.tenant, dl.connector)
    if settings is None:
        raise _Failed("connector_gone", f"connector {dl.connector!r} no longer exists")
    try:
        fmt = detect_format(dl.path, settings)
    except FileRejected as exc:
        raise _Failed(exc.reason, str(exc)) from exc
    limit = settings.max_document_bytes if fmt == "chat_json" else settings.max_row_bytes
    raw = _raw(parts, dl.raw, dl.raw_ref, limit)
    if fmt not in ("csv", "tsv", "chat_json"):
        raise _Failed("not_replayable", f"{fmt} files are not parsed")
    if fmt != "chat_json":
        if dl.header is None and dl.header_ref is None:
            raise _Failed("not_replayable", "the file's header was not kept with this row")
        header = dl.header.encode("utf-8", "surrogateescape") if dl.header is not None else None
        raw = _raw(parts, header, dl.header_ref, settings.max_row_bytes) + raw
    try:
        rows = list(parse(io.BytesIO(raw), dl.path, settings))
    except FileRejected as exc:
        raise _Failed(exc.reason, str(exc)) from exc
    for row in rows:
        if row.raw_spool is not None:
            row.raw_spool.close()
    if not rows:
        raise _Failed("missing_row", "the kept raw input holds no row")
    first = rows[0]
    if first.conversation is None or len(rows) > 1:
        error = first.error
        if error is None:  # more than one row: the kept text is not one row any more
            raise _Failed("malformed_row", f"the kept raw input parses as {len(rows)} rows")
        raise _Failed(error.reason, error.message, error.column)
    conv = {
        **first.conversation,
        "tenant": dl.tenant,
        "source_system": settings.source_system,
        "source": {
            "file_id": dl.file_id,
            "connector": dl.connector,
            "path": dl.path,
            "row": dl.row,
            "announced_at": now,
        },
    }
    try:
        return conversation_record(
            parts.codec, parts.topics, conv, parts.max_record_bytes, parts.redactors
        )
    except RowInvalid as bad:
        raise _Failed(bad.error.reason, bad.error.message) from bad


def _api_record(parts: ReplayParts, dl: Any) -> Record:
    """Validate a dead API item again by the ingest API's rules."""

    try:
        item = json.loads(_raw(parts, dl.raw, dl.raw_ref, API_ITEM_LIMIT))
    except ValueError as exc:
        raise _Failed("invalid_json", f"the kept item is not JSON: {exc}") from exc
    source = Source(dl.file_id, utc(dl.occurred_at))
    index = int(dl.row) - 1
    checked = check_item(
        item,
        index,
        "items.",
        dl.tenant,
        source,
        parts.codec,
        parts.topics,
        parts.max_record_bytes,
        parts.redactors,
    )
    if checked.record is None:
        first = checked.errors[0]
        raise _Failed(first.reason, first.message, first.field)
    return checked.record


def _cases_record(parts: ReplayParts, dl: Any) -> Record:
    """Send a conversation the case store could not take again, as it was."""
    raw = bytes(dl.raw or b"")
    try:
        conv = parts.codec.decode(CONVERSATION, raw)
    except SchemaError as exc:
        raise _Failed("undecodable_record", str(exc)) from exc
    if conv["tenant"] != dl.tenant:
        raise _Failed("tenant_mismatch", "the record names another tenant")
    try:
        return conversation_record(
            parts.codec, parts.topics, conv, parts.max_record_bytes, parts.redactors
        )
    except RowInvalid as bad:
        raise _Failed(bad.error.reason, bad.error.message) from bad


def record_for(parts: ReplayParts, dl: Any, now: dt.datetime) -> Record:
    """Build the conversation record a dead letter replays into; raise _Failed (thread)."""
    if dl.stage == "api":
        return _api_record(parts, dl)
    if dl.stage in ("cases", "fetch") and dl.raw is not None:
        return _cases_record(parts, dl)
    if dl.stage in ("parse", "validate") and dl.row is not None:
        return _row_record(parts, dl, now)
    raise _Failed("not_replayable", "a whole file or bundle: upload the file again")


async def _select(engine: AsyncEngine, tenant: str, body: ReplayIn) -> list[Any]:
    t = dead_letters.c
    async with engine.connect() as conn:
        if body.ids is not None:
            ids = list(dict.fromkeys(body.ids))
            stmt = select(dead_letters).where(t.tenant == tenant, t.id.in_(ids))
            rows = {r.id: r for r in (await conn.execute(stmt)).all()}
            missing = [n for n, i in enumerate(body.ids) if i not in rows]
            if missing:  # the id itself is not echoed: it names no resource of the caller's
                raise NotFoundError(f"ids.{missing[0]}: no such dead letter; nothing replayed")
            return [rows[i] for i in ids]
        stmt = filtered(
            tenant,
            file_id=body.file_id,
            reason=body.reason,
            status="open",
            since=body.since,
            until=body.until,
        )
        return list((await conn.execute(stmt.limit(body.limit))).all())


async def replay(parts: ReplayParts, tenant: str, body: ReplayIn, actor: str) -> ReplayResult:
    """Replay the selected dead letters of ``tenant`` (see the module doc)."""
    selected = await _select(parts.engine, tenant, body)
    now = utcnow()
    items: list[ReplayItem] = []
    records: list[Record] = []
    passed: list[tuple[ReplayItem, Any]] = []
    failed: list[tuple[ReplayItem, Any, str | None]] = []
    for dl in selected:
        if dl.status == "replayed":
            items.append(ReplayItem(id=dl.id, outcome="already_replayed"))
            continue
        try:
            record = await asyncio.to_thread(record_for, parts, dl, now)
        except _Failed as exc:
            outcome: Outcome = "not_replayable" if exc.reason == "not_replayable" else "failed"
            item = ReplayItem(id=dl.id, outcome=outcome, reason=exc.reason, message=exc.message)
            items.append(item)
            if outcome == "failed":
                failed.append((item, dl, exc.column))
            continue
        conv = parts.codec.decode(CONVERSATION, record[2])
        item = ReplayItem(
            id=dl.id,
            outcome="replayed",
            delivery=delivery_key(conv),
            case_id=case_id(conv["tenant"], conv["source_system"], conv["external_interaction_id"]),
        )
        items.append(item)
        records.append(record)
        passed.append((item, dl))
    await parts.producer.send_batch(records)
    t = dead_letters.c
    async with parts.engine.begin() as conn:
        for item, dl in passed:
            done = await conn.execute(
                update(dead_letters)
                .where(t.id == dl.id, t.status == "open")
                .values(
                    status="replayed",
                    replayed_at=now,
                    replayed_by=actor,
                    replay_delivery=item.delivery,
                    replay_case_id=item.case_id,
                    replay_attempts=t.replay_attempts + 1,
                    last_replay_at=now,
                )
            )
            if not done.rowcount:  # a concurrent replay marked it first (same delivery)
                item.outcome, item.delivery, item.case_id = "already_replayed", None, None
        for item, dl, column in failed:
            await conn.execute(
                update(dead_letters)
                .where(t.id == dl.id, t.status == "open")
                .values(
                    reason=storable((item.reason or dl.reason)[:64]),
                    message=storable((item.message or "")[:2000]),
                    column=storable(column[:200]) if column else None,
                    replay_attempts=t.replay_attempts + 1,
                    last_replay_at=now,
                )
            )
        result = ReplayResult(
            replayed=sum(1 for i in items if i.outcome == "replayed"),
            failed=sum(1 for i in items if i.outcome == "failed"),
            skipped=sum(1 for i in items if i.outcome in ("already_replayed", "not_replayable")),
            items=items,
        )
        if selected:
            await audit.record(
                conn,
                tenant=tenant,
                actor=actor,
                action="replay",
                resource="dead_letters",
                resource_id=selected[0].id if len(selected) == 1 else f"{len(selected)} selected",
                detail={
                    "replayed": [i.id for i in items if i.outcome == "replayed"],
                    "failed": result.failed,
                    "skipped": result.skipped,
                },
                at=now,
            )
    return result
