"""Dead letters in the database: every rejected row, item or file, listable and replayable.

Durability: the dead-letter topic is the source of truth; the ``deadletters`` agent
(:mod:`streams.agents.deadletters`) writes each record it reads here before its offset is
committed, under the deterministic :func:`~streams.deadletters.dead_letter_id`, so a kill at any
point redelivers the records and the insert ignores those already stored: none is lost, none is
doubled. The ingest API also writes its rejected items here directly (same id), so they are
listed as soon as the request is answered.

A dead letter is ``open`` until a replay lets it through (``replayed``: when, by whom, the new
delivery); a replay that fails again keeps it open with the new reason (see
:mod:`streams.control.replay`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams.control.errors import NotFoundError
from streams.control.listing import Key, before, page, utc
from streams.db import insert_ignore, metadata
from streams.deadletters import dead_letter_id

DeadLetterStatus = Literal["open", "replayed"]

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("connector", String(64), nullable=False),
    Column("file_id", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("row", BigInteger),
    Column("line", BigInteger),
    Column("column", String(200)),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("excerpt", Text),
    Column("stage", String(16)),
    Column("raw", LargeBinary),
    Column("raw_ref", String(1024)),
    Column("raw_size", BigInteger),
    Column("header", Text),
    Column("header_ref", String(1024)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("replay_attempts", Integer, nullable=False),
    Column("last_replay_at", DateTime(timezone=True)),
    Column("replayed_at", DateTime(timezone=True)),
    Column("replayed_by", String(100)),
    Column("replay_delivery", String(200)),  # the delivery key of the conversation it became
    Column("replay_case_id", String(32)),
    Index("ix_dead_letters_tenant_time", "tenant", "occurred_at", "id"),
    Index("ix_dead_letters_tenant_file", "tenant", "file_id"),
    Index("ix_dead_letters_tenant_reason", "tenant", "reason"),
)


class DeadLetter(BaseModel):
    """A rejected row, API item or file (the raw input itself is kept for replay, not shown)."""

    id: str = Field(description="Deterministic id (dl_...): the same rejection has the same id.")
    connector: str = Field(description="Connector name, or 'api' for an ingest API item.")
    file_id: str = Field(description="The file version, or the API request id (req_...).")
    path: str
    row: int | None = Field(None, description="1-based row (or API item); null: the whole file.")
    line: int | None = None
    column: str | None = Field(None, description="The column or field at fault, when known.")
    reason: str = Field(description="Reason code, e.g. missing_id, bad_timestamp.")
    message: str
    excerpt: str | None = Field(None, description="Up to 512 characters of the raw input.")
    stage: str | None = None
    raw_size: int | None = Field(None, description="Size of the kept raw input in bytes.")
    occurred_at: dt.datetime
    status: DeadLetterStatus
    replay_attempts: int
    last_replay_at: dt.datetime | None = None
    replayed_at: dt.datetime | None = None
    replayed_by: str | None = Field(None, description="Who replayed it (key:<id>, operator).")
    replay_delivery: str | None = Field(None, description="Delivery key of the new record.")
    replay_case_id: str | None = Field(None, description="The case the replay fed.")


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


_TEXT = ("connector", "file_id", "path", "column", "reason", "message", "excerpt", "header")


def storable(value: Any) -> Any:
    """Text as every database stores it: PostgreSQL refuses NUL, kept as U+FFFD here."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def row_of(record: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """The ``dead_letters`` row of a decoded DeadLetter record (id from the record as is)."""
    row = {
        "id": dead_letter_id(record),
        **{
            k: record.get(k)
            for k in (
                "tenant",
                "connector",
                "file_id",
                "path",
                "row",
                "line",
                "column",
                "reason",
                "message",
                "excerpt",
                "stage",
                "raw",
                "raw_ref",
                "raw_size",
                "header",
                "header_ref",
                "occurred_at",
            )
        },
        "recorded_at": now or utcnow(),
        "status": "open",
        "replay_attempts": 0,
    }
    for name in _TEXT:
        row[name] = storable(row[name])
    return row


async def record(engine: AsyncEngine, records: Sequence[dict[str, Any]]) -> None:
    """Store decoded DeadLetter records; those stored before (same id) are left as they are."""
    if not records:
        return
    now = utcnow()
    rows = list({r["id"]: r for r in (row_of(rec, now) for rec in records)}.values())
    async with engine.begin() as conn:
        await conn.execute(insert_ignore(engine, dead_letters, ["id"]), rows)


def listed(row: Any) -> DeadLetter:
    """The API view of a ``dead_letters`` row."""
    m = dict(row._mapping)
    for name in ("occurred_at", "last_replay_at", "replayed_at"):
        if m.get(name) is not None:
            m[name] = utc(m[name])
    return DeadLetter.model_validate(m)


async def get(conn: AsyncConnection, tenant: str, ident: str) -> Any:
    """Return one of ``tenant``'s dead-letter rows; :class:`NotFoundError` otherwise."""
    row = (
        await conn.execute(
            select(dead_letters).where(dead_letters.c.id == ident, dead_letters.c.tenant == tenant)
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no dead letter {ident!r}")
    return row


def filtered(
    tenant: str,
    *,
    file_id: str | None = None,
    reason: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Any:
    """SELECT of ``tenant``'s dead letters matching the filters (newest first)."""
    t = dead_letters.c
    stmt = select(dead_letters).where(t.tenant == tenant)
    if file_id is not None:
        stmt = stmt.where(t.file_id == file_id)
    if reason is not None:
        stmt = stmt.where(t.reason == reason)
    if status is not None:
        stmt = stmt.where(t.status == status)
    if since is not None:
        stmt = stmt.where(t.occurred_at >= utc(since))
    if until is not None:
        stmt = stmt.where(t.occurred_at < utc(until))
    return stmt.order_by(t.occurred_at.desc(), t.id.desc())


async def list_page(
    engine: AsyncEngine, tenant: str, limit: int, after: Key | None, **filters: Any
) -> tuple[list[DeadLetter], list[Any] | None]:
    """One page of ``tenant``'s dead letters, newest first, and the next cursor key."""
    stmt = filtered(tenant, **filters)
    cond = before(dead_letters.c.occurred_at, dead_letters.c.id, after)
    if cond is not None:
        stmt = stmt.where(cond)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.limit(limit + 1))).all()
    items, nxt = page(rows, limit, lambda r: (r.occurred_at, r.id))
    return [listed(r) for r in items], nxt
